"""Transcript trees that would cost the daemon dearly: a line that never ends, a symlink out of the tree.

The daemon tests run `serve` as a real process (tests/support/daemon.py); how much it reads is what the kernel
counted for it (`rchar` in /proc/<pid>/io), not a timing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from exporter.daemon.watch import watch_targets
from exporter.sources.files import discover, read_lines
from tests.support.daemon import Serve, serving
from tests.support.exposition import by_label, samples
from tests.support.lines import request, write

pytestmark = pytest.mark.slow  # a real `serve` per test

LINES = "claude_usage_exporter_lines_total"
REQUESTS = "claude_usage_requests_total"
FILES = "claude_usage_exporter_files_watched"
MB = 1 << 20
# The watcher wakes the loop within milliseconds of a write; without it, only the rescan every 60 s
# would. A limit between the two tells them apart.
PROMPTLY = 10.0


def bytes_read(daemon: Serve) -> int:
    """What the daemon's process has read so far, files and sockets alike (its parse workers apart)."""
    io = Path(f"/proc/{daemon.process.pid}/io").read_text()
    found = re.search(r"^rchar: (\d+)$", io, re.MULTILINE)
    assert found is not None
    return int(found[1])


def lines_by_outcome(daemon: Serve) -> dict[str, float]:
    return {k: v for k, v in by_label(daemon.metrics(), LINES, "outcome").items() if v}


# --- a line that never ends ------------------------------------------------------------------------


def test_a_long_line_still_unfinished_is_read_by_one_pass_and_not_by_the_next(tmp_path: Path) -> None:
    # 20 MiB without a newline (a sparse file: no disk, no time to write) after one good line: over
    # the 16 MiB line limit, and under the size at which parse workers would read it in their own
    # processes, where this process's counter would not see it.
    hostile = write(tmp_path / "claude/projects/p/s.jsonl", request(1))
    with hostile.open("r+b") as f:
        f.truncate(hostile.stat().st_size + 20 * MB)
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        before = bytes_read(daemon)
        write(tmp_path / "claude/projects/q/t.jsonl", request(2))  # wakes a pass over every file
        daemon.wait_for_requests(1)
        assert bytes_read(daemon) - before < 2 * MB  # the 20 MiB again would be 10 times this
        assert lines_by_outcome(daemon) == {"usage": 2, "skipped": 1}


def test_a_long_unfinished_line_is_counted_once_however_often_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"short\n" + b"x" * 100)
    assert list(read_lines(str(path), 0, max_line=16)) == [(b"short\n", 6, 0), (b"", 106, 1)]
    assert list(read_lines(str(path), 106, max_line=16)) == []  # nothing new: nothing read
    with path.open("ab") as f:
        f.write(b"x" * 50)
    assert list(read_lines(str(path), 106, max_line=16)) == [(b"", 156, 0)]  # already counted
    with path.open("ab") as f:
        f.write(b"x\nafter\n")
    assert list(read_lines(str(path), 156, max_line=16)) == [(b"", 158, 0), (b"after\n", 164, 0)]


def test_an_offset_inside_a_line_shorter_than_the_limit_is_still_a_line_start(tmp_path: Path) -> None:
    # Only an offset a long line's skip left can lie inside a line; ingest stores no other kind.
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"abcdef\nghi\n")
    assert list(read_lines(str(path), 3, max_line=16)) == [(b"def\nghi\n", 11, 0)]


def test_a_long_line_finished_while_it_was_skipped_is_counted_once_and_reading_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"x" * 40)
    assert list(read_lines(str(path), 0, chunk=7, max_line=16)) == [(b"", 40, 1)]
    with path.open("ab") as f:
        f.write(b"xx\nok\n")
    assert list(read_lines(str(path), 40, chunk=7, max_line=16)) == [(b"", 43, 0), (b"ok\n", 46, 0)]


# --- a symlink out of the tree ---------------------------------------------------------------------


def foreign_tree(base: Path) -> Path:
    """Somebody else's folders, full of JSONL lines that look like Claude Code's usage, deeper than
    Claude Code's layout ever goes; and a loop back to its own top."""
    for n, place in enumerate(["a/b/c/log.jsonl", "a/b/c/d/e/f/g.jsonl", "x/y/subagents/z/agent-1.jsonl"]):
        write(base / place, request(100 + n))
    (base / "a/b/up").symlink_to(base)
    return base


def test_a_symlink_under_projects_to_a_foreign_tree_counts_nothing_of_it(tmp_path: Path) -> None:
    projects = tmp_path / "claude/projects"
    session = write(projects / "p/s.jsonl", request(1))
    foreign = foreign_tree(tmp_path / "foreign")
    (projects / "elsewhere").symlink_to(foreign)  # at the level of a project folder
    (projects / "p/deeper").symlink_to(foreign)  # at the level of a session folder
    (projects / "p/s/subagents").mkdir(parents=True)
    (projects / "p/s/subagents/more").symlink_to(foreign)  # at the level of a subagent file
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        exposition = daemon.metrics()
        assert (sum(samples(exposition, REQUESTS).values()), samples(exposition, FILES)) == (1, {"": 1})
        write(session, request(2))
        daemon.wait_for_requests(1)
        assert sum(samples(daemon.metrics(), REQUESTS).values()) == 2


def test_discovery_keeps_to_claude_codes_layout_and_follows_symlinked_project_folders(tmp_path: Path) -> None:
    root = tmp_path / "claude"
    for place in ["p/s1.jsonl", "p/s1/subagents/agent-a.jsonl", "p/agent-old.jsonl", "p/s1/tool-results/r.jsonl"]:
        write(root / "projects" / place, b"{}")
    write(tmp_path / "linked/s2.jsonl", b"{}")
    write(tmp_path / "linked/s2/subagents/agent-b.jsonl", b"{}")
    (root / "projects/link").symlink_to(tmp_path / "linked")
    (root / "projects/p/root").symlink_to("/")
    (root / "projects/p/s1/subagents/up").symlink_to("../../..")
    foreign_tree(tmp_path / "linked/deep")
    errors: list[str] = []
    assert sorted(os.path.relpath(f.path, root) for f in discover([root], errors)) == [
        "projects/link/s2.jsonl",
        "projects/link/s2/subagents/agent-b.jsonl",
        "projects/p/agent-old.jsonl",
        "projects/p/s1.jsonl",
        "projects/p/s1/subagents/agent-a.jsonl",
    ]
    assert errors == []


def test_a_symlink_to_the_filesystem_root_as_a_project_costs_one_listing(tmp_path: Path) -> None:
    (tmp_path / "claude/projects").mkdir(parents=True)
    (tmp_path / "claude/projects/everything").symlink_to("/")
    # `/` holds no session files; nothing under its folders but a `subagents` folder would be looked at
    assert discover([tmp_path / "claude"]) == []


def test_the_watch_covers_the_layouts_folders_and_nothing_a_symlink_leads_to_beyond_them(tmp_path: Path) -> None:
    root = tmp_path / "claude"
    write(root / "projects/p/s1.jsonl", b"{}")
    write(root / "projects/p/s1/subagents/agent-a.jsonl", b"{}")
    foreign = foreign_tree(tmp_path / "foreign")
    (root / "projects/elsewhere").symlink_to(foreign)
    projects = root / "projects"
    assert watch_targets((root,)) == [
        projects,
        projects / "elsewhere",
        projects / "elsewhere/a",
        projects / "elsewhere/x",
        projects / "p",
        projects / "p/s1",
        projects / "p/s1/subagents",
    ]


def test_without_a_projects_folder_the_root_is_watched_to_see_it_appear(tmp_path: Path) -> None:
    (tmp_path / "claude").mkdir()
    assert watch_targets((tmp_path / "claude", tmp_path / "missing")) == [tmp_path / "claude"]


def test_a_subagent_file_in_a_new_session_folder_is_seen_without_waiting_for_a_rescan(tmp_path: Path) -> None:
    # The watch is not recursive: each new folder of the layout must join it as it appears.
    write(tmp_path / "claude/projects/p/s.jsonl", request(1))
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        agent = write(tmp_path / "claude/projects/p/s/subagents/agent-1.jsonl", request(2))
        daemon.wait_for_requests(1, PROMPTLY)
        write(agent, request(3))
        daemon.wait_for_requests(1, PROMPTLY)
        write(tmp_path / "claude/projects/new/t.jsonl", request(4))
        daemon.wait_for_requests(1, PROMPTLY)
        assert sum(samples(daemon.metrics(), REQUESTS).values()) == 4


def test_a_part_that_ends_with_a_long_line_stops_there(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"x" * 40 + b"\nnext part\n")
    assert list(read_lines(str(path), 0, stop=41, chunk=7, max_line=16)) == [(b"", 41, 1)]
