"""Ingest end to end: transcript files tailed into the ledger, as mtail tests its tailer.

Growth, partial lines, truncation, replacement, deletion, garbage, two processes at once and kill -9
each have their own test; a property test checks that reading in arbitrary pieces changes nothing.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import signal
import sqlite3
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import exporter
from exporter.events import Prompt, Tokens, UsageEvent
from exporter.ledger import ingest as ingest_module
from exporter.ledger.ingest import IngestResult
from exporter.ledger.schema import MIGRATIONS
from exporter.ledger.store import Ledger
from exporter.pipeline import Pipeline, Setup
from exporter.sources import files as fs
from exporter.sources import transcripts
from exporter.sources.transcripts import parse_chunk
from tests.support.lines import SESSION, assistant_line, snapshot_line, user_line

REQUEST_TOTALS = (
    "SELECT count(*), sum(input), sum(output), sum(cache_read), sum(cache_write_5m), sum(cache_write_1h),"
    " sum(cost), sum(copies) FROM requests"
)


def make_app(state: Path, root: Path) -> Pipeline:
    return Pipeline(Setup(state_dir=state, roots=(root,), timezone="UTC"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "claude/projects").mkdir(parents=True)
    return tmp_path / "claude"


@pytest.fixture
def app(tmp_path: Path, root: Path) -> Iterator[Pipeline]:
    app = make_app(tmp_path / "state", root)
    yield app
    app.ledger.close()


def append(path: Path, *lines: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        f.write(b"".join(lines))
    return path


def totals(ledger: Ledger) -> tuple[int, ...]:
    """Request count, each token column, cost (nano-USD) and copies, summed over the ledger."""
    return tuple(v or 0 for v in ledger.db.execute(REQUEST_TOTALS).fetchone())


def tokens_by_key(ledger: Ledger) -> dict[str, Tokens]:
    return {r.key: r.tokens for r in ledger.requests()}


def line_counters(ledger: Ledger) -> dict[str, int]:
    return {k: v for k, v in ledger.counters().items() if k.startswith("lines.")}


def outcomes(result: IngestResult) -> dict[str, int]:
    return {k: v for k, v in result.outcomes.items() if v}


A = assistant_line("msg_A", "req_A", "2026-11-25T21:13:52.256Z", input=3, output=120, cache_1h=15732)
B = assistant_line("msg_B", "req_B", "2026-11-25T21:14:10.000Z", input=5, output=80, cache_read=15732)
C = assistant_line("msg_C", "req_C", "2026-11-25T21:14:30.000Z", input=7, output=60, cache_read=16000)
D = assistant_line("msg_D", "req_D", "2026-11-25T21:15:00.000Z", input=11, output=40, cache_5m=900)
# Same request as A, its line longer than the fingerprinted head: only sizes and inodes tell files apart.
BIG_A = assistant_line(
    "msg_A", "req_A", "2026-11-25T21:13:52.256Z", input=3, output=120, cache_1h=15732, text="notes " * 300
)
TOKENS = {
    "msg_A": Tokens(input=3, output=120, cache_write_1h=15732),
    "msg_B": Tokens(input=5, output=80, cache_read=15732),
    "msg_C": Tokens(input=7, output=60, cache_read=16000),
    "msg_D": Tokens(input=11, output=40, cache_write_5m=900),
}


# --- growth and partial lines ----------------------------------------------------------------------


def test_a_second_ingest_reads_only_the_bytes_appended_since_the_first(
    app: Pipeline, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[bytes] = []
    real = parse_chunk

    def spy(
        buf: bytes, counts: Counter[str], prompts: list[Prompt] | None = None, slow: Counter[str] | None = None
    ) -> list[UsageEvent]:
        parsed.append(bytes(buf))
        return real(buf, counts, prompts, slow=slow)

    monkeypatch.setattr(transcripts, "parse_chunk", spy)  # imported from there at each unit
    path = append(root / "projects/p/s1.jsonl", user_line(), A, B)
    first = app.refresh()
    assert (first.files, first.bytes_read, outcomes(first)) == (1, len(user_line() + A + B), {"usage": 2, "skipped": 1})

    parsed.clear()
    append(path, C)
    second = app.refresh()
    assert parsed == [C]
    assert (second.bytes_read, outcomes(second)) == (len(C), {"usage": 1})
    assert app.ledger.counters()["bytes.transcripts"] == path.stat().st_size
    assert tokens_by_key(app.ledger) == {k: TOKENS[k] for k in ("msg_A", "msg_B", "msg_C")}


def test_an_ingest_with_nothing_new_reads_nothing(app: Pipeline, root: Path) -> None:
    append(root / "projects/p/s1.jsonl", A, B)
    app.refresh()
    before = app.ledger.counters()
    again = app.refresh()
    assert (again.files, again.bytes_read, outcomes(again), again.errors) == (1, 0, {}, [])
    assert app.ledger.counters() == before


def test_a_line_still_being_written_is_read_once_its_newline_arrives(app: Pipeline, root: Path) -> None:
    path = append(root / "projects/p/s1.jsonl", A, B[:300])
    first = app.refresh()
    assert (first.bytes_read, outcomes(first)) == (len(A), {"usage": 1})
    append(path, B[300:-1])  # a whole JSON object now, but the file was modified just now: still held back
    assert app.refresh(now_ms=path.stat().st_mtime_ns // 1_000_000).bytes_read == 0
    append(path, B[-1:])
    third = app.refresh()
    assert (third.bytes_read, outcomes(third)) == (len(B), {"usage": 1})
    assert tokens_by_key(app.ledger) == {"msg_A": TOKENS["msg_A"], "msg_B": TOKENS["msg_B"]}
    assert line_counters(app.ledger) == {"lines.transcripts.usage": 2}


def test_provisional_usage_read_first_gives_way_to_the_final_usage_appended_later(app: Pipeline, root: Path) -> None:
    path = append(
        root / "projects/p/s1.jsonl",
        assistant_line("msg_A", "req_A", input=3, output=1, cache_1h=15732, final=False),
    )
    app.refresh()
    assert tokens_by_key(app.ledger) == {"msg_A": Tokens(input=3, output=1, cache_write_1h=15732)}
    append(path, assistant_line("msg_A", "req_A", input=3, output=120, cache_1h=15732, tools=["Read"]))
    second = app.refresh()
    assert outcomes(second) == {"duplicate": 1}
    [request] = app.ledger.requests()
    assert (request.tokens, request.tools, request.copies) == (TOKENS["msg_A"], frozenset({"Read"}), 2)
    assert totals(app.ledger)[:6] == (1, 3, 120, 0, 0, 15732)


def test_a_later_provisional_copy_never_lowers_the_final_usage(app: Pipeline, root: Path) -> None:
    path = append(root / "projects/p/s1.jsonl", A)
    app.refresh()
    append(path, assistant_line("msg_A", "req_A", input=1, output=1, final=False))
    app.refresh()
    assert tokens_by_key(app.ledger) == {"msg_A": TOKENS["msg_A"]}


# --- what one pass reads ---------------------------------------------------------------------------


def test_a_pass_reads_to_the_last_complete_line_as_found_not_the_lines_appended_while_it_reads(root: Path) -> None:
    path = append(root / "projects/p/s1.jsonl", A, B[:300])
    units = ingest_module.plan(fs.discover([root]), {}, [])
    append(path, B[300:], C)  # the writer finishes B and adds C while the pass reads
    parsed = [ingest_module.parse_unit(unit) for unit in units]
    assert [(sorted(r.key for r in p.requests), p.ends) for p in parsed] == [
        (["msg_A"], [(len(A), fs.head_of(str(path), len(A)))])
    ]


def test_a_file_whose_new_bytes_are_one_line_still_being_written_is_not_read(app: Pipeline, root: Path) -> None:
    path = append(root / "projects/p/s1.jsonl", A)
    app.refresh()
    append(path, B[:300])
    assert ingest_module.plan(fs.discover([root]), app.ledger.file_states(), []) == []


def test_a_long_unfinished_line_is_counted_once_and_no_later_pass_reads_it_again(
    app: Pipeline, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fs, "MAX_LINE", 4096)  # A is shorter, the unfinished line longer
    path = append(root / "projects/p/s1.jsonl", A, b"x" * 10_000)
    assert outcomes(app.refresh()) == {"usage": 1, "skipped": 1}
    assert app.ledger.counters()["bytes.transcripts"] == path.stat().st_size  # passed over, not held back
    assert ingest_module.plan(fs.discover([root]), app.ledger.file_states(), []) == []
    append(path, b"x" * 3000)
    assert outcomes(app.refresh()) == {}
    assert ingest_module.plan(fs.discover([root]), app.ledger.file_states(), []) == []
    append(path, b"x\n", B)
    assert outcomes(app.refresh()) == {"usage": 1}
    assert line_counters(app.ledger) == {"lines.transcripts.usage": 2, "lines.transcripts.skipped": 1}
    assert tokens_by_key(app.ledger) == {k: TOKENS[k] for k in ("msg_A", "msg_B")}


def test_with_a_fair_share_a_large_backlog_leaves_the_pass_to_another_files_new_request(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "UNIT_BYTES", 4096)
    lines = [assistant_line(f"msg_{i}", f"req_{i}") for i in range(40)]
    big = append(root / "projects/p/big.jsonl", *lines)
    append(root / "projects/q/small.jsonl", D)
    os.utime(big, ns=(1, 1))  # the older file: read first
    deferred: list[str] = []
    units = ingest_module.plan(fs.discover([root]), {}, [], share=8192, deferred=deferred)
    spans = [(Path(p.found.path).name, p.start, p.stop) for unit in units for p in unit]
    big_end = max(stop or 0 for name, _, stop in spans if name == "big.jsonl")
    assert 8192 <= big_end < 8192 + len(lines[0]) < big.stat().st_size
    assert spans[-1] == ("small.jsonl", 0, len(D))
    assert deferred == [str(big)]


def test_a_file_alone_with_new_bytes_is_read_to_its_end_whatever_the_share(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest_module, "UNIT_BYTES", 4096)
    big = append(root / "projects/p/big.jsonl", *(assistant_line(f"msg_{i}", f"req_{i}") for i in range(40)))
    deferred: list[str] = []
    units = ingest_module.plan(fs.discover([root]), {}, [], share=8192, deferred=deferred)
    assert (max(p.stop or 0 for unit in units for p in unit), deferred) == (big.stat().st_size, [])


# --- truncation, replacement, deletion -------------------------------------------------------------


def test_a_truncated_file_is_reread_from_the_start_without_double_counting(app: Pipeline, root: Path) -> None:
    path = append(root / "projects/p/s1.jsonl", BIG_A, B, C)
    app.refresh()
    inode = path.stat().st_ino
    with path.open("r+b") as f:  # the same file cut back to its first line, then a new D written
        f.truncate(len(BIG_A))
        f.seek(0, os.SEEK_END)
        f.write(D)
    assert path.stat().st_ino == inode and path.stat().st_size < len(BIG_A + B + C)
    second = app.refresh()
    assert (second.bytes_read, outcomes(second)) == (len(BIG_A + D), {"usage": 1, "duplicate": 1})
    assert tokens_by_key(app.ledger) == TOKENS
    [state] = app.ledger.file_states().values()
    assert (state.ino, state.offset) == (inode, len(BIG_A + D))


def test_a_file_replaced_under_the_same_name_is_reread_from_the_start_without_double_counting(
    app: Pipeline, root: Path
) -> None:
    path = append(root / "projects/p/s1.jsonl", BIG_A, B)
    app.refresh()
    old = path.stat().st_ino
    # An atomic rewrite with the same first kilobyte: only the new inode tells it apart.
    os.replace(append(root / "s1.tmp", BIG_A, D, B), path)
    assert path.stat().st_ino != old and path.stat().st_size > len(BIG_A + B)
    second = app.refresh()
    assert outcomes(second) == {"usage": 1, "duplicate": 2}
    assert tokens_by_key(app.ledger) == {k: TOKENS[k] for k in ("msg_A", "msg_B", "msg_D")}
    assert [s.ino for s in app.ledger.file_states().values()] == [path.stat().st_ino]


@pytest.mark.parametrize("known", [False, True], ids=["new file", "known file"])
def test_a_file_deleted_between_discovery_and_reading_is_an_error_that_stops_nothing_else(
    app: Pipeline, root: Path, monkeypatch: pytest.MonkeyPatch, known: bool
) -> None:
    doomed = append(root / "projects/p/a-doomed.jsonl", A)
    if known:
        app.refresh()
        append(doomed, B)
    survivor = append(root / "projects/p/b-survivor.jsonl", C)
    real = fs.discover

    def discover_then_delete(roots: list[Path], errors: list[str] | None = None) -> list[fs.Found]:
        found = real(roots, errors)
        doomed.unlink()
        return found

    monkeypatch.setattr(fs, "discover", discover_then_delete)
    result = app.refresh()
    assert result.errors == [f"{doomed}: No such file or directory"]
    assert sorted(tokens_by_key(app.ledger)) == (["msg_A", "msg_C"] if known else ["msg_C"])
    assert survivor.stat().st_ino in {ino for _, ino in app.ledger.file_states()}

    monkeypatch.setattr(fs, "discover", real)
    later = app.refresh()
    assert (later.errors, later.files) == ([], 1)
    assert [ino for _, ino in app.ledger.file_states()] == [survivor.stat().st_ino]


def test_a_read_error_in_one_part_of_a_large_file_loses_none_of_its_lines(
    app: Pipeline, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = append(root / "projects/p/s1.jsonl", *(assistant_line(f"msg_{i}", f"req_{i}") for i in range(10)))
    monkeypatch.setattr(ingest_module, "UNIT_BYTES", 2500)  # the file is read in parts of ~3 lines
    real, failures = fs.read_lines, [OSError(errno.EIO, "Input/output error")]

    def flaky(
        name: str, offset: int, stop: int | None = None, chunk: int = fs.CHUNK
    ) -> Iterator[tuple[bytes, int, int]]:
        if offset == 0 and failures:  # a transient error (a network home dir) on the first part only
            raise failures.pop()
        return real(name, offset, stop, chunk=chunk)

    monkeypatch.setattr(fs, "read_lines", flaky)
    assert app.refresh().errors == [f"{path}: Input/output error"]
    app.refresh()
    assert sorted(tokens_by_key(app.ledger)) == [f"msg_{i}" for i in range(10)]


def test_files_of_a_subagent_are_ingested_with_their_session(app: Pipeline, root: Path) -> None:
    append(root / f"projects/p/{SESSION}.jsonl", A)
    append(
        root / f"projects/p/{SESSION}/subagents/agent-a46e.jsonl",
        assistant_line("msg_S", "req_S", agent_id="a46e", output=7),
    )
    app.refresh()
    assert sorted((r.key, r.agent, r.session_id) for r in app.ledger.requests()) == [
        ("msg_A", "main", SESSION),
        ("msg_S", "subagent", SESSION),
    ]


# --- bad bytes -------------------------------------------------------------------------------------

GLUED = A[:-1] + B  # two writes glued together without a newline: two records on one line
GARBAGE_LINES: list[tuple[bytes, str]] = [
    (b"\x00" * 64 + C, "usage"),  # NUL padding from a crash while the file was extended
    (b"\x00" * 32 + b"\n", "skipped"),
    (bytes(range(11, 256)) + b"\n", "skipped"),  # binary garbage
    (b'\xff\xfe"usage"\x80\x81{}{\n', "skipped"),  # garbage with the usage mark, not an assistant line
    (A.replace(b"I'll read", b"\xff\xfe\xfd"), "malformed"),  # invalid UTF-8 inside an assistant line
    (D[:400] + b"\n", "malformed"),  # a line cut short by a crash, the next write after it
    (b"\n", "skipped"),
    (b"[1, 2, 3]\n", "skipped"),
    (b'"usage"\n', "skipped"),
    (user_line(), "skipped"),
    (snapshot_line(5000), "skipped"),
]


def test_garbage_lines_are_counted_and_never_stop_the_file(app: Pipeline, root: Path) -> None:
    path = append(root / "projects/p/s1.jsonl", *(raw for raw, _ in GARBAGE_LINES), GLUED)
    result = app.refresh()
    expected = Counter(outcome for _, outcome in GARBAGE_LINES) + Counter(usage=2)
    assert (outcomes(result), result.errors, result.bytes_read) == (dict(expected), [], path.stat().st_size)
    assert line_counters(app.ledger) == {f"lines.transcripts.{k}": v for k, v in expected.items()}
    assert tokens_by_key(app.ledger) == {k: TOKENS[k] for k in ("msg_A", "msg_B", "msg_C")}
    append(path, D)
    assert outcomes(app.refresh()) == {"usage": 1}


def test_nul_padding_left_at_the_end_by_a_crash_is_dropped_when_the_next_line_arrives(
    app: Pipeline, root: Path
) -> None:
    path = append(root / "projects/p/s1.jsonl", A, b"\x00" * 512)
    assert outcomes(app.refresh()) == {"usage": 1}
    append(path, B)
    assert outcomes(app.refresh()) == {"usage": 1}
    assert tokens_by_key(app.ledger) == {"msg_A": TOKENS["msg_A"], "msg_B": TOKENS["msg_B"]}


def test_every_record_ends_in_exactly_one_outcome(app: Pipeline, root: Path) -> None:
    records = 0
    for n, (raw, _) in enumerate(GARBAGE_LINES):
        append(root / f"projects/p/s{n % 3}.jsonl", raw, A, B)  # A and B repeat: duplicates
        records += 3
    append(root / "projects/p/s0.jsonl", GLUED)
    records += 2
    result = app.refresh()
    assert sum(result.outcomes.values()) == records
    assert sum(line_counters(app.ledger).values()) == records
    assert result.outcomes["usage"] == 3  # msg_A, msg_B, msg_C


# --- two processes ---------------------------------------------------------------------------------


def write_corpus(root: Path, sessions: int = 6, requests: int = 20) -> None:
    """Sessions with multi-block responses, a subagent file each and a fork copying the first one."""
    for s in range(sessions):
        sid = f"{s:08d}-0000-0000-0000-000000000000"
        lines = []
        for r in range(requests):
            msg, ts = f"msg_{s}_{r}", f"2026-11-{20 + s % 5}T{10 + r // 60:02d}:{r % 60:02d}:00.000Z"
            lines += [
                user_line(ts=ts),
                assistant_line(msg, f"req_{s}_{r}", ts, output=1, cache_read=100 * r, final=False, session=sid),
                assistant_line(msg, f"req_{s}_{r}", ts, output=10 + r, cache_read=100 * r, tools=["Read"], session=sid),
            ]
        append(root / f"projects/-home-dev-p{s % 2}/{sid}.jsonl", *lines)
        append(
            root / f"projects/-home-dev-p{s % 2}/{sid}/subagents/agent-{s}.jsonl",
            *(
                assistant_line(f"msg_sub_{s}_{r}", f"req_sub_{s}_{r}", agent_id=str(s), output=r, session=sid)
                for r in range(5)
            ),
        )
        if s == 0:
            append(root / "projects/-home-dev-p0/ffffffff-fork.jsonl", *lines)


def cli(state: Path, root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "exporter",
        "report",
        "daily",
        "--json",
        "--state-dir",
        str(state),
        "--claude-dir",
        str(root),
        "--timezone",
        "UTC",
    ]


def child_env(home: Path) -> dict[str, str]:
    """A clean environment (no CLAUDE_* variables) importing the same `exporter` as this process."""
    source = str(Path(exporter.__file__).parent.parent)
    return {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "LANG": "C.UTF-8", "PYTHONPATH": source}


@pytest.mark.slow
def test_processes_ingesting_the_same_roots_at_once_count_everything_once(tmp_path: Path, root: Path) -> None:
    write_corpus(root)
    env = child_env(tmp_path)
    clean = subprocess.run(cli(tmp_path / "clean", root), env=env, capture_output=True, check=True)
    procs = [
        subprocess.Popen(cli(tmp_path / "shared", root), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(3)
    ]
    results = [(p.communicate(timeout=120), p.returncode) for p in procs]
    assert [(out, err, code) for (out, err), code in results] == [(clean.stdout, b"", 0)] * 3
    shared, alone = Ledger(tmp_path / "shared"), Ledger(tmp_path / "clean")
    assert totals(shared) == totals(alone)
    assert shared.counters() == alone.counters()


@pytest.mark.slow
def test_processes_opening_a_fresh_state_dir_at_once_all_get_a_ledger(tmp_path: Path) -> None:
    # Hold the migration lock so both children queue on it, then let them go together: each must
    # see the schema the other created instead of migrating twice.
    state = tmp_path / "state"
    state.mkdir()
    opener = "import sys; from pathlib import Path; from exporter.ledger.store import Ledger; Ledger(Path(sys.argv[1]))"
    env = child_env(tmp_path)
    with (state / "migrate.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        children = [
            subprocess.Popen([sys.executable, "-c", opener, str(state)], env=env, stderr=subprocess.PIPE)
            for _ in range(2)
        ]
        for _ in range(2000):  # bounded: until both wait on the lock (/proc/locks marks waiters "->")
            if Path("/proc/locks").read_text().count("->") >= 2:
                break
            os.sched_yield()
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert [(c.wait(timeout=60), c.stderr.read() if c.stderr else b"") for c in children] == [(0, b"")] * 2
    assert Ledger(state).db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


# --- kill -9 -------------------------------------------------------------------------------------

CHILD = r"""
import sys
from pathlib import Path
from exporter.ledger import store as L
from exporter.pipeline import Pipeline, Setup
from exporter.ledger import ingest as I
from exporter.ledger.ingest import ingest

state, root, point = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
if sys.argv[4] == "fast":
    I.PARALLEL_BYTES = 0  # parse workers, secondary indexes dropped until the end
commits = 0

def pause():
    print("paused", flush=True)
    sys.stdin.read()  # the parent kills this process here

real_commit, real_exit = L.Ledger.commit, L._Transaction.__exit__

def commit(self, *args, **kwargs):
    global commits
    commits += 1
    if point == "between batches" and commits == 3:
        pause()
    return real_commit(self, *args, **kwargs)

def exit_(self, kind, value, tb):
    if point == "inside a batch transaction" and commits == 2 and kind is None:
        pause()
    return real_exit(self, kind, value, tb)

L.Ledger.commit, L._Transaction.__exit__ = commit, exit_
I.UNIT_BYTES = 4096  # small units, so that batch_bytes=1 commits many batches
app = Pipeline(Setup(state_dir=state, roots=(root,), timezone="UTC"))
app.ledger.reprice(app.fingerprint, app.enrich)
ingest(app.ledger, [root], app, batch_bytes=1)
print("finished", flush=True)
"""

KILL_POINTS = ["between batches", "inside a batch transaction"]


def killed_then_rerun(tmp_path: Path, root: Path, point: str, path: str = "plain") -> tuple[Ledger, Ledger]:
    """(ledger of a run killed at `point` and then run to the end, ledger of one clean run); `path`
    "fast": the killed run is a first ingest's fast path."""
    write_corpus(root, sessions=4, requests=5)
    state = tmp_path / "crashed"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(state), str(root), point, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=child_env(tmp_path),
    )
    try:
        assert child.stdout is not None
        ready, _, _ = select.select([child.stdout], [], [], 60)  # bounded wait for the pause, no sleep
        assert ready and child.stdout.readline() == b"paused\n"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    make_app(state, root).refresh()
    clean = make_app(tmp_path / "clean", root)
    clean.refresh()
    return Ledger(state), clean.ledger


@pytest.mark.parametrize("path", ["plain", "fast"])
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_run_killed_mid_ingest_and_run_again_counts_every_request_and_line_once(
    tmp_path: Path, root: Path, point: str, path: str
) -> None:
    crashed, clean = killed_then_rerun(tmp_path, root, point, path)
    assert totals(crashed) == totals(clean)
    assert sorted(crashed.requests(), key=lambda r: r.key) == sorted(clean.requests(), key=lambda r: r.key)
    assert crashed.counters() == clean.counters()  # lines and bytes: nothing counted twice or lost
    assert crashed.file_states() == clean.file_states()
    schema = "SELECT type, name, sql FROM sqlite_master ORDER BY name"
    assert crashed.db.execute(schema).fetchall() == clean.db.execute(schema).fetchall()  # every index back


ARBITRARY = """
import sys
from pathlib import Path
from exporter.ledger import ingest as I
from exporter.pipeline import Pipeline, Setup

I.UNIT_BYTES = 4096  # small units, so that batch_bytes=1 commits many batches
if sys.argv[3] == "fast":
    I.PARALLEL_BYTES = 0  # parse workers, secondary indexes dropped until the end
app = Pipeline(Setup(state_dir=Path(sys.argv[1]), roots=(Path(sys.argv[2]),), timezone="UTC"))
I.ingest(app.ledger, [Path(sys.argv[2])], app, batch_bytes=1)
"""


@pytest.mark.slow
@pytest.mark.parametrize("path", ["plain", "fast"])
@pytest.mark.parametrize("lines_before_kill", [1, 300, 700])
def test_a_run_killed_at_an_arbitrary_moment_and_run_again_counts_everything_once(
    tmp_path: Path, root: Path, lines_before_kill: int, path: str
) -> None:
    write_corpus(root, sessions=30, requests=10)  # 1080 lines
    state = tmp_path / "crashed"
    command = [sys.executable, "-c", ARBITRARY, str(state), str(root), path]
    child = subprocess.Popen(command, env=child_env(tmp_path))
    try:
        # Polls the ledger, never sleeps; if the child wins the race the rerun below simply reads nothing.
        while child.poll() is None and committed_lines(state / Ledger.FILE) < lines_before_kill:
            pass
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()
    make_app(state, root).refresh()
    clean = make_app(tmp_path / "clean", root)
    clean.refresh()
    crashed = Ledger(state)
    assert totals(crashed) == totals(clean.ledger)
    assert crashed.counters() == clean.ledger.counters()


def committed_lines(path: Path) -> int:
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT sum(value) FROM counters WHERE name LIKE 'lines.%'").fetchone()
    except sqlite3.Error:
        return 0  # not created or not migrated yet
    return int(row[0] or 0)


# --- property: reading in pieces changes nothing ---------------------------------------------------


@dataclass(frozen=True)
class Corpus:
    files: dict[str, bytes]  # path under the root -> final content
    expected: dict[str, Tokens]  # message id -> final usage
    records: int


def response_line(
    msg: str,
    ts: str,
    final_usage: Tokens,
    session: str,
    agent: str | None,
    output: int | None = None,
    final: bool = True,
    tools: tuple[str, ...] = (),
    text: str = "",
) -> bytes:
    t = final_usage
    return assistant_line(
        msg,
        f"req_{msg}",
        ts,
        input=t.input,
        output=t.output if output is None else output,
        cache_read=t.cache_read,
        cache_5m=t.cache_write_5m,
        cache_1h=t.cache_write_1h,
        tools=tools,
        final=final,
        session=session,
        agent_id=agent,
        text=text,
    )


@st.composite
def corpora(draw: st.DrawFn) -> Corpus:
    counts = st.integers(0, 40_000)
    expected: dict[str, Tokens] = {}

    def responses(prefix: str, how_many: int, agent: str | None, session: str) -> list[bytes]:
        lines: list[bytes] = []
        for r in range(how_many):
            msg, ts = f"msg_{prefix}{r}", f"2026-11-25T21:{r:02d}:00.000Z"
            i, o, cr, c5, c1 = (draw(counts) for _ in range(5))
            expected[msg] = Tokens(i, o, cr, c5, c1)
            lines.append(user_line("résumé ✓ " * draw(st.integers(0, 3)), ts))
            if draw(st.booleans()):  # provisional first block
                lines.append(response_line(msg, ts, expected[msg], session, agent, output=min(o, 1), final=False))
            for n in range(draw(st.integers(1, 3))):
                tools = ("Edit",) if n == 1 else ()
                lines.append(response_line(msg, ts, expected[msg], session, agent, tools=tools, text="é✓" * r))
            if draw(st.booleans()):
                lines.append(snapshot_line(draw(st.integers(0, 3000))))
        return lines

    main = responses("m", draw(st.integers(1, 5)), None, SESSION)
    sub = responses("s", draw(st.integers(0, 3)), "a46e", SESSION)
    fork_sid = "ffffffff-0000-0000-0000-000000000000"
    # A fork copies the conversation so far under its own session id, then goes on.
    copied = [x.replace(SESSION.encode(), fork_sid.encode()) for x in main[: draw(st.integers(0, len(main)))]]
    fork = copied + responses("f", draw(st.integers(0, 2)), None, fork_sid)
    lines = {
        f"projects/p/{SESSION}.jsonl": main,
        f"projects/p/{SESSION}/subagents/agent-a46e.jsonl": sub,
        f"projects/p/{fork_sid}.jsonl": fork,
    }
    records = sum(len(x) for x in lines.values())
    return Corpus({name: b"".join(x) for name, x in lines.items()}, expected, records)


def ingest_in_pieces(state: Path, root: Path, pieces: list[dict[str, bytes]]) -> Ledger:
    app = make_app(state, root)
    for piece in pieces:
        for name, data in piece.items():
            append(root / name, data)
        app.refresh()
    return app.ledger


@pytest.mark.slow
@given(corpus=corpora(), data=st.data(), unit=st.sampled_from([None, 1, 700, 5000]), parallel=st.booleans())
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_appending_in_arbitrary_pieces_and_ingesting_between_gives_the_same_ledger(
    corpus: Corpus, data: st.DataObject, unit: int | None, parallel: bool
) -> None:
    """`unit` and `parallel` also cut the files into parts and parse them in worker processes."""
    cuts = {
        name: sorted(data.draw(st.lists(st.integers(0, len(content)), max_size=6), label=f"cuts of {name}"))
        for name, content in corpus.files.items()
    }
    rounds = max(len(c) for c in cuts.values()) + 1
    bounds = {name: [0, *c] + [len(corpus.files[name])] * (rounds - len(c)) for name, c in cuts.items()}
    pieces = [
        {name: content[bounds[name][n] : bounds[name][n + 1]] for name, content in corpus.files.items()}
        for n in range(rounds)
    ]
    assert all(b"".join(p[name] for p in pieces) == content for name, content in corpus.files.items())

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        once = ingest_in_pieces(base / "once", base / "claude-once", [corpus.files])
        with pytest.MonkeyPatch.context() as patch:
            if unit is not None:
                patch.setattr(ingest_module, "UNIT_BYTES", unit)
            if parallel:
                patch.setattr(ingest_module, "PARALLEL_BYTES", 0)
            pieced = ingest_in_pieces(base / "pieces", base / "claude-pieces", pieces)
        try:
            assert totals(pieced) == totals(once)
            assert tokens_by_key(pieced) == tokens_by_key(once) == corpus.expected
            assert line_counters(pieced) == line_counters(once)
            assert sum(line_counters(once).values()) == corpus.records
            size = sum(len(c) for c in corpus.files.values())
            assert pieced.counters()["bytes.transcripts"] == once.counters()["bytes.transcripts"] == size
        finally:
            once.close()
            pieced.close()


def test_price_look_ups_made_in_parse_workers_are_kept_for_the_next_run(
    tmp_path: Path, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_corpus(root)
    monkeypatch.setattr(ingest_module, "PARALLEL_BYTES", 0)
    monkeypatch.setattr(ingest_module, "UNIT_BYTES", 4096)
    app = Pipeline(Setup(state_dir=tmp_path / "state", roots=(root,), timezone="UTC"))
    app.refresh()
    assert app.pricer._provider is None  # every unit was priced in a worker process ...
    kept = orjson.loads(app.ledger.meta("prices") or "{}")  # ... and its look-ups came back
    assert (kept["fingerprint"], list(kept["lookups"])) == (app.fingerprint, ["claude-sonnet-4-5-20250929\tstandard"])


def test_a_re_read_asked_by_a_migration_counts_nothing_twice_and_survives_being_stopped_midway(
    app: Pipeline, root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = append(root / "projects/p/s1.jsonl", A, B, C)
    app.refresh()
    before = (totals(app.ledger), app.ledger.counters())
    # What migration 6 leaves: every offset negative, the bytes before it to be read again, not counted.
    app.ledger.db.execute("UPDATE files SET offset = -offset WHERE offset > 0")
    append(path, D)  # and a line that is new
    monkeypatch.setattr(ingest_module, "UNIT_BYTES", len(A))  # one unit per line
    app.refresh(stop=lambda: True)  # stopped after the first unit
    assert (totals(app.ledger), app.ledger.counters()) == before
    assert [offset for (offset,) in app.ledger.db.execute("SELECT offset FROM files")] == [-len(A + B + C)]
    result = app.refresh()
    assert outcomes(result) == {"usage": 1}
    assert totals(app.ledger)[0] == 4 and totals(app.ledger)[-1] == 4  # four requests, one line each
    assert line_counters(app.ledger) == {"lines.transcripts.usage": 4}
    assert app.ledger.counters()["bytes.transcripts"] == before[1]["bytes.transcripts"] + len(D)
    assert [offset for (offset,) in app.ledger.db.execute("SELECT offset FROM files")] == [path.stat().st_size]
