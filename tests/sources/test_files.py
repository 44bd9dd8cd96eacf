"""Finding transcript files and tailing them: one test per file-system situation, as mtail does."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.defaults import default_roots
from exporter.sources import files
from exporter.sources.files import (
    FileState,
    Found,
    discover,
    head_of,
    line_start_after,
    read_lines,
    start_offset,
)

AS_ROOT = os.geteuid() == 0


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def found(path: Path) -> Found:
    st = path.stat()
    return Found(path=str(path), dev=st.st_dev, ino=st.st_ino, size=st.st_size, mtime=st.st_mtime_ns)


def consumed(path: Path) -> FileState:
    """The state stored after reading the whole file."""
    st = path.stat()
    return FileState(st.st_dev, st.st_ino, st.st_size, head_of(str(path), st.st_size), mtime=st.st_mtime_ns)


def listed(roots: list[Path], base: Path, errors: list[str] | None = None) -> list[str]:
    """Paths found, relative to `base`, sorted: discovery order is not part of the contract."""
    return sorted(str(Path(f.path).relative_to(base)) for f in discover(roots, errors))


def listed_real(roots: list[Path], base: Path, errors: list[str] | None = None) -> list[str]:
    """Like `listed`, with symlinks resolved: through an alias, any one of a file's paths may be found."""
    return sorted(str(Path(os.path.realpath(f.path)).relative_to(base)) for f in discover(roots, errors))


def read_all(
    path: Path, offset: int = 0, chunk: int = files.CHUNK, stop: int | None = None
) -> list[tuple[bytes, int, int]]:
    return list(read_lines(str(path), offset, stop, chunk=chunk))


# --- default_roots ---------------------------------------------------------------------------------


def test_claude_config_dir_is_a_comma_separated_list_of_roots() -> None:
    env = {"CLAUDE_CONFIG_DIR": " /a/one, /b/two ,, ", "HOME": "/home/dev"}
    assert default_roots(env) == (Path("/a/one"), Path("/b/two"))


@pytest.mark.parametrize("config_dir", [None, "", "  "])
def test_without_claude_config_dir_both_default_folders_are_roots(config_dir: str | None) -> None:
    env = {"HOME": "/home/dev"} | ({} if config_dir is None else {"CLAUDE_CONFIG_DIR": config_dir})
    assert default_roots(env) == (Path("/home/dev/.config/claude"), Path("/home/dev/.claude"))


def test_a_tilde_in_claude_config_dir_means_the_given_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/somewhere/else")
    assert default_roots({"CLAUDE_CONFIG_DIR": "~/cfg", "HOME": "/home/dev"}) == (Path("/home/dev/cfg"),)


# --- discover --------------------------------------------------------------------------------------


def test_discover_finds_session_and_subagent_files_and_nothing_else(tmp_path: Path) -> None:
    root = tmp_path / "claude"
    write(root / "projects/-home-dev-a/s1.jsonl", b"{}\n")
    write(root / "projects/-home-dev-a/s1/subagents/agent-a46e.jsonl", b"{}\n{}\n")
    write(root / "projects/-home-dev-a/s1/subagents/agent-a46e.meta.json", b"{}")
    write(root / "projects/-home-dev-a/notes.txt", b"")
    write(root / "projects/-home-dev-a/s0.jsonl.bak", b"")
    write(root / "projects/-home-dev-b/deep/er/s2.jsonl", b"")  # deeper than Claude Code's layout
    write(root / "history.jsonl", b"{}\n")  # outside projects/
    write(root / "todos/t.jsonl", b"{}\n")
    errors: list[str] = []
    result = discover([root], errors)
    assert sorted((str(Path(f.path).relative_to(root)), f.size) for f in result) == [
        ("projects/-home-dev-a/s1.jsonl", 3),
        ("projects/-home-dev-a/s1/subagents/agent-a46e.jsonl", 6),
    ]
    assert errors == []


def test_a_folder_named_like_a_transcript_is_walked_not_listed(tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/folder.jsonl/subagents/agent-1.jsonl", b"")
    errors: list[str] = []
    assert listed([tmp_path / "claude"], tmp_path, errors) == ["claude/projects/p/folder.jsonl/subagents/agent-1.jsonl"]
    assert errors == []


def test_discover_reports_each_file_with_its_device_and_inode(tmp_path: Path) -> None:
    path = write(tmp_path / "claude/projects/p/s1.jsonl", b"{}\n")
    assert discover([tmp_path / "claude"]) == [found(path)]


def test_a_root_without_a_projects_folder_is_not_an_error(tmp_path: Path) -> None:
    errors: list[str] = []
    assert discover([tmp_path / "missing", tmp_path], errors) == []
    assert errors == []


def test_a_symlinked_project_folder_is_followed(tmp_path: Path) -> None:
    write(tmp_path / "elsewhere/project/s1.jsonl", b"{}\n")
    (tmp_path / "claude/projects").mkdir(parents=True)
    (tmp_path / "claude/projects/linked").symlink_to(tmp_path / "elsewhere/project")
    assert listed([tmp_path / "claude"], tmp_path) == ["claude/projects/linked/s1.jsonl"]


def test_a_folder_symlinked_to_its_ancestor_is_entered_once(tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", b"")
    (tmp_path / "claude/projects/p/up").symlink_to("..")
    (tmp_path / "claude/projects/p/root").symlink_to(tmp_path / "claude")
    errors: list[str] = []
    assert listed_real([tmp_path / "claude"], tmp_path, errors) == ["claude/projects/p/s1.jsonl"]
    assert errors == []


def test_two_folders_symlinked_to_each_other_are_each_entered_once(tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", b"")
    write(tmp_path / "claude/projects/q/s2.jsonl", b"")
    (tmp_path / "claude/projects/p/to-q").symlink_to("../q")
    (tmp_path / "claude/projects/q/to-p").symlink_to("../p")
    errors: list[str] = []
    assert listed_real([tmp_path / "claude"], tmp_path, errors) == [
        "claude/projects/p/s1.jsonl",
        "claude/projects/q/s2.jsonl",
    ]
    assert errors == []


def test_a_self_referencing_symlink_is_reported_and_the_walk_goes_on(tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", b"")
    (tmp_path / "claude/projects/p/loop").symlink_to("loop")
    errors: list[str] = []
    assert listed([tmp_path / "claude"], tmp_path, errors) == ["claude/projects/p/s1.jsonl"]
    assert errors == [f"{tmp_path}/claude/projects/p/loop: Too many levels of symbolic links"]


def test_a_dangling_folder_symlink_is_ignored(tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", b"")
    (tmp_path / "claude/projects/gone").symlink_to("nowhere")
    errors: list[str] = []
    assert listed([tmp_path / "claude"], tmp_path, errors) == ["claude/projects/p/s1.jsonl"]
    assert errors == []


def test_a_dangling_transcript_symlink_is_reported_and_the_walk_goes_on(tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", b"")
    (tmp_path / "claude/projects/p/gone.jsonl").symlink_to("nowhere.jsonl")
    errors: list[str] = []
    assert listed([tmp_path / "claude"], tmp_path, errors) == ["claude/projects/p/s1.jsonl"]
    assert errors == [f"{tmp_path}/claude/projects/p/gone.jsonl: No such file or directory"]


def test_overlapping_roots_list_each_file_once(tmp_path: Path) -> None:
    root = tmp_path / "claude"
    write(root / "projects/p/s1.jsonl", b"")
    write(root / "projects/p/s1/subagents/agent-1.jsonl", b"")
    (tmp_path / "alias").symlink_to(root)
    roots = [root, tmp_path / "alias", root / "projects" / "..", root]
    assert listed_real(roots, tmp_path) == [
        "claude/projects/p/s1.jsonl",
        "claude/projects/p/s1/subagents/agent-1.jsonl",
    ]


def test_files_of_every_root_are_found(tmp_path: Path) -> None:
    write(tmp_path / "a/projects/p/s1.jsonl", b"")
    write(tmp_path / "b/projects/p/s1.jsonl", b"")
    assert listed([tmp_path / "a", tmp_path / "b"], tmp_path) == ["a/projects/p/s1.jsonl", "b/projects/p/s1.jsonl"]


def test_a_hard_link_of_a_transcript_is_listed_once(tmp_path: Path) -> None:
    path = write(tmp_path / "claude/projects/p/s1.jsonl", b"{}\n")
    os.link(path, tmp_path / "claude/projects/p/s1-copy.jsonl")
    assert len(listed([tmp_path / "claude"], tmp_path)) == 1


# Root reads any folder; without its two file-access capabilities (setpriv, util-linux) it cannot.
WITHOUT_DAC = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-dac_override,-dac_read_search"]
LIST = (
    "import json, sys; from exporter.sources.files import discover; e = []; "
    "print(json.dumps([[f.path for f in discover([sys.argv[1]], e)], e]))"
)


def test_a_folder_without_read_permission_is_reported_and_the_others_are_read(tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/a/s1.jsonl", b"")
    locked = tmp_path / "claude/projects/b"
    write(locked / "s2.jsonl", b"")
    write(tmp_path / "claude/projects/c/s3.jsonl", b"")
    locked.chmod(0)
    try:
        command = [*(WITHOUT_DAC if AS_ROOT else []), sys.executable, "-c", LIST, str(tmp_path / "claude")]
        listing, errors = json.loads(subprocess.run(command, capture_output=True, check=True).stdout)
    finally:
        locked.chmod(0o755)
    assert sorted(listing) == [str(tmp_path / f"claude/projects/{p}.jsonl") for p in ("a/s1", "c/s3")]
    assert errors == [f"{locked}: Permission denied"]


def test_a_folder_that_cannot_be_listed_is_reported_and_the_others_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same failure without a real permission: listing (or opening) raises as it would on a locked folder.
    write(tmp_path / "claude/projects/a/s1.jsonl", b"")
    locked = write(tmp_path / "claude/projects/b/s2.jsonl", b"").parent
    write(tmp_path / "claude/projects/c/s3.jsonl", b"")
    real, real_open = os.scandir, os.open

    def scandir(path: Path | int) -> Iterator[os.DirEntry[str]]:
        if not isinstance(path, int) and Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    def open_folder(path: str, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        if dir_fd is None and Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "open", open_folder)
    errors: list[str] = []
    assert listed([tmp_path / "claude"], tmp_path, errors) == [
        "claude/projects/a/s1.jsonl",
        "claude/projects/c/s3.jsonl",
    ]
    assert errors == [f"{locked}: Permission denied"]


def test_a_folder_removed_during_the_walk_is_reported_and_the_others_are_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    projects = tmp_path / "claude/projects"
    write(projects / "a/s1.jsonl", b"")
    write(projects / "b/s2.jsonl", b"")
    write(projects / "c/s3.jsonl", b"")
    real = os.scandir

    class Listed(list[os.DirEntry[str]]):
        def __enter__(self) -> Listed:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    def scandir(path: str | int) -> object:
        if isinstance(path, int):  # shutil.rmtree lists by file descriptor
            return real(path)
        with real(path) as it:
            entries = Listed(it)
        if Path(path) == projects:  # Claude Code's cleanup deletes b after it was listed
            shutil.rmtree(projects / "b")
        return entries

    monkeypatch.setattr(os, "scandir", scandir)
    errors: list[str] = []
    assert listed([tmp_path / "claude"], tmp_path, errors) == [
        "claude/projects/a/s1.jsonl",
        "claude/projects/c/s3.jsonl",
    ]
    assert errors == [f"{projects / 'b'}: No such file or directory"]


# --- read_lines ------------------------------------------------------------------------------------


def test_a_trailing_partial_line_is_held_back_until_its_newline_arrives(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", b'{"a":1}\n{"b":2}\n{"c":')
    assert read_all(path) == [(b'{"a":1}\n{"b":2}\n', 16, 0)]
    assert read_all(path, 16) == []
    with path.open("ab") as f:
        f.write(b'3}\n{"d"')
    assert read_all(path, 16) == [(b'{"c":3}\n', 24, 0)]


def test_a_last_line_ending_at_stop_is_read_and_its_late_newline_passed_over(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", b'{"a":1}\n{"b":2}')
    assert files.finished_tail(str(path), 8, 15)
    assert read_all(path, 0, stop=15) == [(b'{"a":1}\n', 8, 0), (b'{"b":2}', 15, 0)]
    assert read_all(path, 15) == []
    with path.open("ab") as f:
        f.write(b'\n{"c":3}\n')
    assert read_all(path, 15) == [(b"", 16, 0), (b'{"c":3}\n', 24, 0)]


@pytest.mark.parametrize("tail", [b'{"b":', b'{"b":2', b"[1, 2]", b'"text}"', b"x}", b'{"b":2}}'])
def test_a_tail_that_is_not_one_whole_json_object_is_not_a_finished_line(tmp_path: Path, tail: bytes) -> None:
    path = write(tmp_path / "s.jsonl", b'{"a":1}\n' + tail)
    assert not files.finished_tail(str(path), 8, 8 + len(tail))


def test_a_file_without_any_newline_yields_nothing(tmp_path: Path) -> None:
    assert read_all(write(tmp_path / "s.jsonl", b'{"a":1}')) == []


def test_an_empty_file_yields_nothing(tmp_path: Path) -> None:
    assert read_all(write(tmp_path / "s.jsonl", b"")) == []


CONTENT = b"".join(b"line %d " % i + b"x" * (i * 5 % 23) + b"\n" for i in range(40)) + b"\n\n" + b"tail"


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 16, 64, 1 << 20])
@pytest.mark.parametrize("start", [0, 5, 8, 300])
def test_offsets_are_exact_whatever_the_chunk_size(tmp_path: Path, chunk: int, start: int) -> None:
    path = write(tmp_path / "s.jsonl", CONTENT)
    # `start` 5 is mid-line: reading from an offset takes it as a line start, as ingest stores them.
    got = read_all(path, start, chunk)
    position = start
    for lines, offset, too_long in got:
        assert (lines.endswith(b"\n"), too_long, offset) == (True, 0, position + len(lines))
        position = offset
    assert b"".join(lines for lines, _, _ in got) == CONTENT[start : CONTENT.rindex(b"\n") + 1]


LONG = b"x" * 100


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 17, 50])
def test_a_line_longer_than_max_line_is_skipped_and_reading_resumes_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(files, "MAX_LINE", 16)
    content = b"short\n" + LONG + b"\nafter\n" + LONG + b"\nlast\n"
    path = write(tmp_path / "s.jsonl", content)
    got = read_all(path, 0, chunk)
    assert b"".join(lines for lines, _, _ in got) == b"short\nafter\nlast\n"
    assert sum(too_long for _, _, too_long in got) == 2
    assert got[-1][1] == len(content)
    # the skip is reported at the offset just past the long line
    assert [offset for _, offset, too_long in got if too_long] == [107, 214]
    assert max(len(lines) for lines, _, _ in got) <= 16 + chunk


@pytest.mark.parametrize("chunk", [1, 7, 50])
def test_a_long_line_still_unfinished_at_the_end_is_counted_once_and_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(files, "MAX_LINE", 16)
    path = write(tmp_path / "s.jsonl", b"short\n" + LONG)
    assert read_all(path, 0, chunk) == [(b"short\n", 6, 0), (b"", 106, 1)]
    assert read_all(path, 106, chunk) == []
    with path.open("ab") as f:
        f.write(LONG + b"\nafter\n")
    assert read_all(path, 106, chunk) == [(b"", 207, 0), (b"after\n", 213, 0)]


def test_a_long_line_ending_at_the_end_of_the_file_is_skipped_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(files, "MAX_LINE", 16)
    path = write(tmp_path / "s.jsonl", b"short\n" + LONG + b"\n")
    assert read_all(path, 0, 7) == [(b"short\n", 6, 0), (b"", 107, 1)]
    assert read_all(path, 107, 7) == []


LINES = b"aaaa\nbbbb\ncccc\ndddd\n"  # lines start at 0, 5, 10 and 15


@pytest.mark.parametrize("chunk", [1, 3, 5, 7, 1 << 20])
@pytest.mark.parametrize(
    ("start", "stop", "expected"),
    [
        (0, 5, b"aaaa\n"),
        (0, 6, b"aaaa\nbbbb\n"),  # bbbb starts before 6
        (0, 10, b"aaaa\nbbbb\n"),
        (0, 11, b"aaaa\nbbbb\ncccc\n"),
        (5, 10, b"bbbb\n"),
        (10, 20, b"cccc\ndddd\n"),
        (0, 99, LINES),
        (15, None, b"dddd\n"),
    ],
)
def test_only_the_lines_that_start_before_stop_are_read(
    tmp_path: Path, chunk: int, start: int, stop: int | None, expected: bytes
) -> None:
    got = read_all(write(tmp_path / "s.jsonl", LINES), start, chunk, stop)
    assert b"".join(lines for lines, _, _ in got) == expected
    assert got[-1][1] == start + len(expected)


@pytest.mark.parametrize(("position", "expected"), [(0, 0), (1, 5), (4, 5), (5, 5), (6, 10), (19, 20), (20, 20)])
def test_a_part_boundary_is_the_first_line_start_at_or_after_a_position(
    tmp_path: Path, position: int, expected: int
) -> None:
    assert line_start_after(str(write(tmp_path / "s.jsonl", LINES)), position) == expected


def test_no_part_boundary_falls_inside_an_unfinished_last_line(tmp_path: Path) -> None:
    # A part ending there would end short of its stop, as if its file had failed.
    assert line_start_after(str(write(tmp_path / "s.jsonl", b"aaaa\nbb")), 6) is None


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_parts_cut_at_line_starts_read_every_line_exactly_once(tmp_path: Path, chunk: int) -> None:
    path = write(tmp_path / "s.jsonl", CONTENT)
    cuts = sorted({cut for at in range(0, len(CONTENT), 37) if (cut := line_start_after(str(path), at)) is not None})
    bounds: list[int | None] = [*cuts, None]
    got = b"".join(
        lines
        for start, stop in zip(cuts, bounds[1:], strict=True)
        for lines, _, _ in read_all(path, start, chunk, stop)
    )
    assert got == CONTENT[: CONTENT.rindex(b"\n") + 1]


# --- start_offset ----------------------------------------------------------------------------------


def test_a_new_file_is_read_from_the_start(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", b'{"a":1}\n')
    assert start_offset(found(path), None) == 0


def test_an_unchanged_file_resumes_at_the_stored_offset(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", b'{"a":1}\n{"b":2}\n')
    state = consumed(path)
    assert start_offset(found(path), state) == 16


def test_a_file_untouched_since_it_was_read_is_not_opened_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "s.jsonl", b'{"a":1}\n{"b":2}\n')
    state = consumed(path)

    def opened(name: str, length: int) -> str:
        raise AssertionError(f"{name} was opened")

    monkeypatch.setattr(files, "head_of", opened)
    assert start_offset(found(path), state) == 16


def test_a_grown_file_resumes_at_the_stored_offset(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", b'{"a":1}\n' + b"x" * 3000 + b"\n")
    state = consumed(path)
    with path.open("ab") as f:
        f.write(b'{"b":2}\n')
    assert start_offset(found(path), state) == 3009


def test_a_truncated_file_is_reread_from_the_start(tmp_path: Path) -> None:
    first = b'{"a":"' + b"x" * 2000 + b'"}\n'  # longer than the fingerprinted head, which stays the same
    path = write(tmp_path / "s.jsonl", first + b'{"b":2}\n')
    state = consumed(path)
    with path.open("r+b") as f:
        f.truncate(len(first))
    assert head_of(str(path), state.offset) == state.head
    assert start_offset(found(path), state) == 0


def test_a_file_truncated_to_nothing_is_reread_from_the_start(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", b'{"a":1}\n')
    state = consumed(path)
    path.write_bytes(b"")
    assert start_offset(found(path), state) == 0


def test_a_file_rewritten_in_place_with_other_first_bytes_is_reread_from_the_start(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", b'{"a":1}\n{"b":2}\n')
    state = consumed(path)
    with path.open("r+b") as f:  # same inode, same size, different content
        f.write(b'{"z":9}\n{"y":8}\n{"x":7}\n')
    assert path.stat().st_ino == state.ino
    assert start_offset(found(path), state) == 0


def test_only_the_first_bytes_up_to_the_offset_are_fingerprinted(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", b'{"a":1}\n')
    state = consumed(path)
    with path.open("ab") as f:
        f.write(b"y" * (files.FINGERPRINT_BYTES * 2) + b"\n")
    name = str(path)
    assert state.head == head_of(name, 8) != head_of(name, files.FINGERPRINT_BYTES * 2)
    assert head_of(name, files.FINGERPRINT_BYTES) == head_of(name, files.FINGERPRINT_BYTES * 2)
    assert start_offset(found(path), state) == 8


def test_a_stored_offset_of_zero_starts_at_zero(tmp_path: Path) -> None:
    path = write(tmp_path / "s.jsonl", b'{"a":1}\n')
    st = path.stat()
    assert start_offset(found(path), FileState(st.st_dev, st.st_ino, 0, head_of(str(path), 0))) == 0


def test_a_file_replaced_by_a_new_inode_with_the_same_first_bytes_is_reread_from_the_start(
    tmp_path: Path,
) -> None:
    first = b'{"a":"' + b"x" * 2000 + b'"}\n'  # longer than the fingerprinted head
    path = write(tmp_path / "s.jsonl", first + b'{"b":2}\n')
    state = consumed(path)
    replacement = write(tmp_path / "s.jsonl.tmp", first + b'{"NEW":0}\n{"b":2}\n')
    os.replace(replacement, path)  # an atomic rewrite: same path, new inode, same first bytes
    assert path.stat().st_ino != state.ino
    assert start_offset(found(path), state) == 0


def test_a_projects_folder_given_as_the_root_is_read_as_ccusage_reads_it(tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", b"")
    assert listed([tmp_path / "claude/projects"], tmp_path) == ["claude/projects/p/s1.jsonl"]


def test_a_files_origin_is_its_first_recorded_time_wherever_the_key_sits(tmp_path: Path) -> None:
    fork = b'{"type":"mode","mode":"normal"}\n{"type":"queue-operation","timestamp":"2026-11-25T21:15:40.741Z"}\n'
    copied = b'{"type":"user","message":{"content":"say \\"timestamp\\":\\"2020-01-01T00:00:00Z\\""}'
    path = write(tmp_path / "fork.jsonl", b'{"type":"ai-title","title":"' + b"x" * 9000 + b'"}\n' + fork + copied)
    assert files.origin_of(str(path)) == 1_795_641_340_741
    quoted = write(tmp_path / "quoted.jsonl", copied + b',"timestamp":"2026-11-25T21:14:55.743Z"}\n')
    assert files.origin_of(str(quoted)) == 1_795_641_295_743  # a quoted key inside a string is not one
    assert files.origin_of(str(write(tmp_path / "none.jsonl", b'{"type":"mode"}\n'))) is None


@pytest.mark.parametrize("back", [None, 1, 2, 511, 512, 513, 4607, 4608, 4609, 37376, 37377, 70000, 199_999])
@pytest.mark.parametrize("max_line", [100_000, 1 << 20])
def test_complete_lines_end_after_the_last_newline_however_far_back_it_is(
    tmp_path: Path, back: int | None, max_line: int
) -> None:
    size = 200_000
    data = bytearray(b"x" * size)
    if back is not None:
        data[size - back] = ord("\n")  # `back` bytes from the end; the read-back blocks grow from 512
    path = tmp_path / "t.jsonl"
    path.write_bytes(data)
    last = bytes(data).rfind(b"\n", max(0, size - max_line))
    expected = last + 1 if last != -1 else (0 if size <= max_line else None)
    assert files.complete_end(str(path), 0, size, max_line) == expected
