"""Faults `serve` meets in the field: each one is counted, the daemon stays up, and later lines still count.

Every test runs `serve` as a real process (tests/support/daemon.py), brings about one fault, then writes a good
line after it and waits for the log line of its ingest: lines of one file are read in order, so the
fault has been read by then. Counter deltas are asserted whole (`Counts`).

A fault that lasts (an unreadable file, a symlink to itself) is met again by every pass, and every
pass counts and logs it again; how many passes an inotify wake-up gives is not fixed. So these tests
bring the fault in before the start (one pass, one error), and take it away before the last good
line: then the error counter must equal the "read error" lines logged, exactly.

Root reads through any chmod, so the permission tests run `serve` as nobody (`setpriv`).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import astuple, dataclass
from pathlib import Path

import pytest

from tests.support.corpus import generate
from tests.support.daemon import Serve, serving
from tests.support.exposition import by_label, samples
from tests.support.lines import USAGE, line, request, write
from tests.support.tools import require

pytestmark = pytest.mark.slow  # a real `serve` per test

LINES = "claude_usage_exporter_lines_total"
READ_ERRORS = "claude_usage_exporter_read_errors_total"
BYTES_READ = "claude_usage_exporter_bytes_read_total"
SOURCE_UP = "claude_usage_exporter_source_up"
FILES = "claude_usage_exporter_files_watched"
REQUESTS = "claude_usage_requests_total"
USAGE_COUNTERS = ("claude_usage_cost_usd_total", "claude_usage_tokens_total", REQUESTS)
TRANSCRIPTS = '{source="transcripts"}'
NOBODY = 65534
# The watcher wakes the loop within milliseconds of a write; without it, only the rescan every 60 s
# would. A limit between the two tells them apart.
PROMPTLY = 10.0
MB = 1 << 20


# --- what a scrape shows --------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """Lines by outcome, read errors and requests counted, as one scrape shows them."""

    usage: float = 0
    duplicate: float = 0
    skipped: float = 0
    malformed: float = 0
    read_errors: float = 0
    requests: float = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(*(a + b for a, b in zip(astuple(self), astuple(other), strict=True)))

    def __sub__(self, other: Counts) -> Counts:
        return Counts(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


def counts(daemon: Serve) -> Counts:
    exposition = daemon.metrics()
    lines = by_label(exposition, LINES, "outcome")
    return Counts(
        usage=lines.get("usage", 0.0),
        duplicate=lines.get("duplicate", 0.0),
        skipped=lines.get("skipped", 0.0),
        malformed=lines.get("malformed", 0.0),
        read_errors=samples(exposition, READ_ERRORS).get(TRANSCRIPTS, 0.0),
        requests=sum(samples(exposition, REQUESTS).values()),
    )


def files_watched(daemon: Serve) -> float:
    return samples(daemon.metrics(), FILES)[""]


def assert_up(daemon: Serve) -> None:
    """Alive, and its transcript source working."""
    assert daemon.process.poll() is None
    assert daemon.get("/healthz")[0] == 200
    assert samples(daemon.metrics(), SOURCE_UP) == {TRANSCRIPTS: 1.0}


def messages(daemon: Serve) -> list[str]:
    """The messages of the JSON log lines read so far."""
    return [json.loads(raw)["msg"] for raw in daemon.log if raw.startswith("{")]


def append_raw(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


# --- serve as nobody ------------------------------------------------------------------------------


def drop_root() -> list[str]:
    """The command prefix that takes root's power to read through file modes away from `serve`."""
    if os.geteuid() != 0:
        return []  # an ordinary user already
    require("/usr/bin/setpriv", "root's power over file modes dropped for the permission tests (util-linux)")
    return ["/usr/bin/setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def unprivileged(home: Path, state: Path, roots: list[Path], ready: bool = True) -> AbstractContextManager[Serve]:
    """A running `serve` as nobody, ready (its first ingest done) unless `ready` is False; killed after."""
    env = {"HOME": str(home), "PYTHONDONTWRITEBYTECODE": "1"}  # nobody may not read root's home
    return serving(state, roots, env=env, prefix=tuple(drop_root()), ready=ready)


def writable_state(base: Path) -> Path:
    state = base / "state"
    state.mkdir()
    state.chmod(0o777)  # whoever `serve` runs as
    return state


def barrier(daemon: Serve) -> None:
    """Waits until the loop has finished the pass under way.

    The loop does one thing at a time, and a SIGHUP's reload comes after the pass that was running.
    A failed pass logs its error before it sets /readyz and source_up and publishes the last good
    state, so its log line alone does not say that these are done.
    """
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for(r"configuration reloaded")


# --- permissions ----------------------------------------------------------------------------------


def test_a_transcript_it_may_not_read_is_a_read_error_and_is_read_once_it_may(shared: Path) -> None:
    root = shared / "claude"
    good = write(root / "projects/p/good.jsonl", request(1))
    secret = write(root / "projects/p/secret.jsonl", request(2))
    secret.chmod(0)
    denied = f"read error: {secret}: Permission denied"
    with unprivileged(shared, writable_state(shared), [root]) as daemon:
        assert messages(daemon).count(denied) == 1  # the first pass met it once
        assert counts(daemon) == Counts(usage=1, read_errors=1, requests=1)
        assert_up(daemon)

        write(good, request(3))  # while it lasts, later lines still count
        daemon.wait_for_requests(1)
        now = counts(daemon)
        assert (now.usage, now.requests) == (2, 2)
        assert_up(daemon)

        secret.chmod(0o644)
        write(good, request(4))
        daemon.wait_for_requests(2)  # the secret's request, and the good one
        assert counts(daemon) == Counts(usage=4, read_errors=1, requests=4)
        assert messages(daemon).count(denied) == 1  # a lasting fault is logged and counted once
        assert files_watched(daemon) == 2
        assert_up(daemon)


def test_a_project_folder_it_may_not_enter_is_a_read_error_and_the_rest_is_still_followed(shared: Path) -> None:
    root = shared / "claude"
    good = write(root / "projects/p/good.jsonl", request(1))
    locked = root / "projects/locked"
    hidden = write(locked / "s.jsonl", request(2))
    locked.chmod(0)
    denied = f"read error: {locked}: Permission denied"
    with unprivileged(shared, writable_state(shared), [root]) as daemon:
        assert messages(daemon).count(denied) == 1
        assert counts(daemon) == Counts(usage=1, read_errors=1, requests=1)
        assert files_watched(daemon) == 1
        assert_up(daemon)

        write(good, request(3))  # beside the locked folder, lines are still followed
        daemon.wait_for_requests(1, PROMPTLY)
        now = counts(daemon)
        assert (now.usage, now.requests) == (2, 2)

        locked.chmod(0o755)
        write(good, request(4))
        daemon.wait_for_requests(2)  # the folder's request, and the good one
        assert counts(daemon) == Counts(usage=4, read_errors=messages(daemon).count(denied), requests=4)
        assert files_watched(daemon) == 2

        write(hidden, request(5))  # the folder, open now, is followed too
        daemon.wait_for_requests(1, PROMPTLY)
        now = counts(daemon)
        assert (now.usage, now.requests) == (5, 5)
        assert_up(daemon)


def test_a_state_dir_it_cannot_write_leaves_it_up_but_not_ready_and_says_why(shared: Path) -> None:
    root = shared / "claude"
    write(root / "projects/p/s.jsonl", request(1))
    state = shared / "state"
    state.mkdir()
    state.chmod(0o555)
    with unprivileged(shared, state, [root], ready=False) as daemon:
        daemon.wait_for(r'"level":"error"')
        error = messages(daemon)[-1]
        barrier(daemon)
        assert error.startswith(f"cannot update the ledger in {state}: ")
        assert "Permission denied" in error
        status, _, body = daemon.get("/readyz")
        assert (status, body.decode()) == (503, f"not ready: {error}\n")
        assert daemon.get("/healthz")[0] == 200
        exposition = daemon.metrics()
        assert samples(exposition, SOURCE_UP) == {TRANSCRIPTS: 0.0}
        assert samples(exposition, REQUESTS) == {}  # no ledger, nothing to show
        assert daemon.process.poll() is None
    assert sorted(os.listdir(state)) == []


@pytest.mark.parametrize(
    "ended",
    [
        pytest.param(signal.SIGTERM, id="stopped"),
        pytest.param(
            signal.SIGKILL,
            id="killed",
        ),
    ],
)
def test_a_state_dir_it_cannot_write_still_serves_the_last_good_state_of_its_ledger(
    shared: Path, ended: signal.Signals
) -> None:
    root = shared / "claude"
    generate(root, seed=5, days=2)
    state = writable_state(shared)
    with unprivileged(shared, state, [root]) as daemon:
        good = daemon.metrics()
        assert daemon.stop(ended) == (0 if ended == signal.SIGTERM else -signal.SIGKILL)
    for path in state.iterdir():  # read-only from now on, as on a read-only mount
        path.chmod(0o444)
    state.chmod(0o555)
    with unprivileged(shared, state, [root], ready=False) as daemon:
        daemon.wait_for(r'"level":"error"')
        error = messages(daemon)[-1]
        barrier(daemon)
        assert error.startswith(f"cannot update the ledger in {state}: ")
        exposition = daemon.metrics()
        assert {name: samples(exposition, name) for name in USAGE_COUNTERS} == {
            name: samples(good, name) for name in USAGE_COUNTERS
        }
        assert len(samples(good, REQUESTS)) > 10  # a state worth keeping
        assert samples(exposition, SOURCE_UP) == {TRANSCRIPTS: 0.0}
        status, _, body = daemon.get("/readyz")
        assert (status, body.decode()) == (503, f"not ready: {error}\n")
        assert daemon.get("/healthz")[0] == 200


# --- files that change under it -------------------------------------------------------------------


def test_a_transcript_deleted_between_two_writes_keeps_its_requests_and_errs_nothing(tmp_path: Path) -> None:
    project = tmp_path / "claude/projects/p"
    doomed = write(project / "doomed.jsonl", request(1))
    survivor = write(project / "survivor.jsonl", request(2))
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        before = counts(daemon)
        append_raw(doomed, request(3)[:300])  # a line half written when the file goes
        doomed.unlink()
        write(survivor, request(4))
        daemon.wait_for_requests(1)
        assert counts(daemon) - before == Counts(usage=1, requests=1)
        assert counts(daemon).requests == 3  # the deleted file's request stays counted
        assert files_watched(daemon) == 1
        assert_up(daemon)


def truncate_and_regrow(path: Path, tmp_path: Path) -> None:
    inode = path.stat().st_ino
    with path.open("r+b") as f:
        f.truncate(0)
    append_raw(path, request(3) + b"\n" + request(1) + b"\n" + request(2) + b"\n")  # a new first line
    assert path.stat().st_ino == inode


def replace_under_the_same_name(path: Path, tmp_path: Path) -> None:
    inode = path.stat().st_ino
    staged = write(tmp_path / "staging/s.jsonl", request(1), request(3), request(2))  # out of the tree
    os.replace(staged, path)  # an atomic rewrite: a new inode under the old name
    assert path.stat().st_ino != inode


@pytest.mark.parametrize(
    "rewrite",
    [
        pytest.param(truncate_and_regrow, id="truncated-then-regrown-past-its-old-size"),
        pytest.param(replace_under_the_same_name, id="replaced-under-the-same-name"),
    ],
)
def test_a_transcript_rewritten_under_the_same_name_is_reread_and_counted_once(
    tmp_path: Path, rewrite: Callable[[Path, Path], None]
) -> None:
    path = write(tmp_path / "claude/projects/p/s.jsonl", request(1), request(2))
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        before = counts(daemon)
        rewrite(path, tmp_path)  # requests 1 and 2 again, and request 3
        daemon.wait_for_requests(1)  # request 3
        write(path, request(4))
        daemon.wait_for_requests(1)
        assert counts(daemon) - before == Counts(usage=2, duplicate=2, requests=2)
        assert files_watched(daemon) == 1
        assert_up(daemon)


def test_symlink_loops_in_the_projects_tree_end_and_each_transcript_counts_once(tmp_path: Path) -> None:
    projects = tmp_path / "claude/projects"
    first = write(projects / "p/s.jsonl", request(1))
    write(projects / "q/t.jsonl", request(2))
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        before = counts(daemon)
        (projects / "p/up").symlink_to("..")  # back to projects: a loop through the parent
        (projects / "q/here").symlink_to(".")  # a folder inside itself
        write(first, request(3))
        daemon.wait_for_requests(1)
        assert counts(daemon) - before == Counts(usage=1, requests=1)
        assert files_watched(daemon) == 2
        assert_up(daemon)


def test_a_transcript_symlinked_to_itself_is_a_read_error_and_stops_nothing(tmp_path: Path) -> None:
    project = tmp_path / "claude/projects/p"
    good = write(project / "s.jsonl", request(1))
    loop = project / "loop.jsonl"
    loop.symlink_to(loop.name)
    looped = f"read error: {loop}: Too many levels of symbolic links"
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        assert messages(daemon).count(looped) == 1
        assert counts(daemon) == Counts(usage=1, read_errors=1, requests=1)
        write(good, request(2))
        daemon.wait_for_requests(1)
        now = counts(daemon)
        assert (now.usage, now.requests) == (2, 2)

        loop.unlink()
        write(good, request(3))
        daemon.wait_for_requests(1)
        assert counts(daemon) == Counts(usage=3, read_errors=messages(daemon).count(looped), requests=3)
        assert_up(daemon)


# --- bad bytes ------------------------------------------------------------------------------------


def test_a_100_mb_line_written_slowly_is_skipped_without_ever_being_held_in_memory(tmp_path: Path) -> None:
    path = tmp_path / "claude/projects/p/s.jsonl"
    write(path, request(1))
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        before = counts(daemon)
        bytes_before = samples(daemon.metrics(), BYTES_READ)[TRANSCRIPTS]
        resident = []
        with path.open("ab") as f:  # a file-history snapshot, no newline for a while
            f.write(b'{"type":"file-history-snapshot","messageId":"m","snapshot":{"blob":"')
            for _ in range(25):
                f.write(b"x" * (4 * MB))
                f.flush()  # each write wakes the loop, which reads the unfinished line again
                resident.append(samples(daemon.metrics(), "process_resident_memory_bytes")[""])
            f.write(b'"}}\n')
        write(path, request(2))
        daemon.wait_for_requests(1)
        assert counts(daemon) - before == Counts(skipped=1, usage=1, requests=1)
        assert samples(daemon.metrics(), BYTES_READ)[TRANSCRIPTS] - bytes_before == path.stat().st_size - len(
            request(1) + b"\n"
        )
        status = Path(f"/proc/{daemon.process.pid}/status").read_text()
        peak = int(re.findall(r"VmHWM:\s+(\d+) kB", status)[0]) * 1024
        assert max(resident) < 200 * MB
        assert peak < 200 * MB, f"peak resident memory {peak / MB:.0f} MB"
        assert_up(daemon)
    path.unlink()


def binary_garbage() -> bytes:
    return random.Random(7).randbytes(64 << 10)


MALFORMED = Counts(malformed=1)


def usage_with(**fields: object) -> bytes:
    """A usage line of a request of its own, some usage fields changed."""
    return line(m_id="msg_900", requestId="req_900", m_usage={**USAGE, **fields})


BAD_LINES = [
    pytest.param(bytes(range(11, 256)), Counts(skipped=1), id="binary garbage"),
    pytest.param(binary_garbage(), Counts(skipped=binary_garbage().count(b"\n") + 1), id="random bytes"),
    pytest.param(b"\x00" * 4096, Counts(skipped=1), id="NUL bytes"),
    pytest.param(request(900).replace(b"pytest", b"py\xff\xfe\xfdtest"), MALFORMED, id="invalid UTF-8 in a usage line"),
    pytest.param(request(900)[:600], MALFORMED, id="a usage line cut short"),
    pytest.param(usage_with(input_tokens="ten"), MALFORMED, id="input_tokens is a string"),
    pytest.param(usage_with(output_tokens=True), MALFORMED, id="output_tokens is a boolean"),
    pytest.param(usage_with(cache_read_input_tokens=[1]), MALFORMED, id="cache_read_input_tokens is a list"),
    pytest.param(line(m_id="msg_900", m_usage="lots"), MALFORMED, id="usage is a string"),
    pytest.param(line(m_id="msg_900", m_model=42), MALFORMED, id="model is a number"),
    pytest.param(line(m_id="msg_900", timestamp=1766000000), MALFORMED, id="timestamp is a number"),
]


@pytest.mark.parametrize(("bad", "outcome"), BAD_LINES)
def test_a_bad_line_is_counted_by_its_outcome_and_the_next_line_still_counts(
    tmp_path: Path, bad: bytes, outcome: Counts
) -> None:
    path = write(tmp_path / "claude/projects/p/s.jsonl", request(1))
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        before = counts(daemon)
        write(path, bad)
        write(path, request(2))
        daemon.wait_for_requests(1)
        assert counts(daemon) - before == outcome + Counts(usage=1, requests=1)
        assert_up(daemon)
