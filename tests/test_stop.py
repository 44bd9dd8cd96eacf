"""Stopping `serve`: SIGTERM and SIGINT, in any order and at any moment of the first ingest, end it
within 5 s with the ledger intact; a `kill -9` of the daemon takes its parse workers with it.

Each test runs `serve` as a real process (tests/support/daemon.py) on a backlog that its first ingest reads
with parse worker processes. A race hides in such patterns, so each case runs ROUNDS times: set
STOP_ROUNDS=20 in the environment to hunt one. Limits such as "within 5 s" are timeouts of a wait,
never pauses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from contextlib import closing, suppress
from pathlib import Path

import pytest

from exporter.ledger.store import Ledger
from tests.support.corpus import Truth, generate
from tests.support.daemon import Serve, process_name, process_tree, running_after, serving
from tests.support.exposition import samples
from tests.support.lines import line, write
from tests.support.waiting import WAIT

pytestmark = pytest.mark.slow  # a real `serve` per test

ROUNDS = int(os.environ.get("STOP_ROUNDS", "1"))
STOP_WITHIN = 5.0  # seconds from SIGTERM or SIGINT to the exit
CHILDREN_WITHIN = 2.0  # seconds from the daemon's end to its children's
WORKER = "ingest-worker"  # what a parse worker calls itself (`comm`, as `ps` shows it)
REQUESTS = "claude_usage_requests_total"
LINES = "claude_usage_exporter_lines_total"
BYTES_READ = "claude_usage_exporter_bytes_read_total"

# Who gets the signal, in which order, given the daemon, its parse workers and its other children (the
# multiprocessing resource tracker): `kill`, `docker stop`, systemd's KillMode=control-group, Ctrl-C
# in a terminal, and an impatient operator.
Order = Callable[[int, list[int], list[int]], list[int]]
ORDERS: dict[str, Order] = {
    "the daemon alone": lambda daemon, workers, others: [daemon],
    "the daemon, then each child": lambda daemon, workers, others: [daemon, *workers, *others],
    "each worker, then the daemon": lambda daemon, workers, others: [*workers, daemon, *others],
    "the other children, then the workers, then the daemon": lambda daemon, workers, others: [
        *others,
        *workers,
        daemon,
    ],
    "every process twice, the daemon thrice": lambda daemon, workers, others: [
        daemon,
        *workers,
        *others,
        daemon,
        *reversed(workers),
        *others,
        daemon,
    ],
}
MOMENTS = ["as its first ingest starts", "as its first child starts", "once its workers parse"]


@pytest.fixture(scope="module")
def backlog(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    """~64 MB of transcripts: a first ingest of some seconds, read by parse worker processes."""
    root = tmp_path_factory.mktemp("backlog") / "claude"
    return root, generate(root, seed=11, days=30, target_bytes=64 << 20)


def at(moment: str, daemon: Serve) -> dict[int, int]:
    """The daemon's descendants once `moment` has come (its log said "listening": the ingest starts)."""
    count = os.cpu_count() or 1
    if moment != "as its first ingest starts" and count < 2:
        pytest.skip("the first ingest has parse workers only with 2 CPUs or more")
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:  # looks, never sleeps: the first ingest lasts seconds
        tree = process_tree(daemon.process.pid)
        if moment == "as its first ingest starts" or (moment == "as its first child starts" and tree):
            return tree
        if moment == "once its workers parse" and [process_name(pid) for pid in tree].count(WORKER) == count:
            return tree
        os.sched_yield()
    pytest.fail(f"not seen within the first ingest: {moment}")


def rest_of_log(daemon: Serve) -> list[str]:
    """The whole log, once the process (and every child sharing its stderr) has closed it."""
    while raw := daemon.lines.get(timeout=WAIT):
        daemon.log.append(raw)
    return daemon.log


def message(raw: str) -> str:
    """A JSON log line's message, or the raw line of anything else (a traceback)."""
    try:
        return str(json.loads(raw)["msg"])
    except ValueError:
        return raw.rstrip("\n")


def integrity(state: Path) -> list[tuple[str]]:
    with closing(sqlite3.connect(f"file:{state / Ledger.FILE}?mode=ro", uri=True)) as db:
        return db.execute("PRAGMA integrity_check").fetchall()


@pytest.mark.parametrize("round", range(ROUNDS))
@pytest.mark.parametrize("moment", MOMENTS)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_or_sigint_in_any_order_at_any_moment_of_the_first_ingest_stops_it_within_5_s(
    tmp_path: Path, backlog: tuple[Path, Truth], sig: signal.Signals, order: str, moment: str, round: int
) -> None:
    """With exit code 0 and "stopped" as the last log line; a second signal may cut that short, with the
    signal's own exit status. Either way the ledger is intact, and no child of the daemon is left."""
    root, truth = backlog
    state = tmp_path / "state"
    with serving(state, [root], ready=False) as daemon:
        tree = at(moment, daemon)
        workers = [pid for pid in tree if process_name(pid) == WORKER]
        targets = ORDERS[order](daemon.process.pid, workers, [pid for pid in tree if pid not in workers])
        for pid in targets:
            with suppress(ProcessLookupError):  # a child that ended meanwhile
                os.kill(pid, sig)
        code = daemon.process.wait(timeout=STOP_WITHIN)
        log = rest_of_log(daemon)
    if code == 0 or targets.count(daemon.process.pid) == 1:
        assert (code, message(log[-1])) == (0, "stopped")
    else:  # a worker it was starting may tell on stderr that its parent is gone: the daemon's own last line
        assert (code, [message(raw) for raw in log if raw.startswith("{")][-1]) == (-sig, "stopping at once")
    assert running_after(tree, CHILDREN_WITHIN) == set()
    assert integrity(state) == [("ok",)]
    ingested = sum(int(n) for n in re.findall(r"ingested (\d+) new request", "".join(log)))
    assert ingested < len(truth.requests)  # the signal did come while there was a backlog to read


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_stop_it_idle_with_exit_code_0_and_stopped_as_the_last_log_line(
    tmp_path: Path, sig: signal.Signals
) -> None:
    write(tmp_path / "claude/projects/p/s.jsonl", line())
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        daemon.process.send_signal(sig)
        code = daemon.process.wait(timeout=STOP_WITHIN)
        assert (code, message(rest_of_log(daemon)[-1])) == (0, "stopped")


@pytest.mark.parametrize("round", range(ROUNDS))
@pytest.mark.parametrize("moment", MOMENTS[1:])
def test_a_kill_9_of_the_daemon_ends_every_child_of_it_within_2_s(
    tmp_path: Path, backlog: tuple[Path, Truth], moment: str, round: int
) -> None:
    root, _ = backlog
    before = set(process_tree(os.getpid()))
    with serving(tmp_path / "state", [root], ready=False) as daemon:
        tree = at(moment, daemon)
        daemon.process.kill()
        assert daemon.process.wait(timeout=WAIT) == -signal.SIGKILL
    # Its orphans are this process's children now (conftest made it their subreaper), those it was
    # starting as it died too.
    orphans = set(tree) | (set(process_tree(os.getpid())) - before)
    assert orphans  # at these moments it has children
    assert running_after(orphans, CHILDREN_WITHIN) == set()


def test_a_parse_worker_killed_mid_ingest_stops_nothing_and_every_line_counts_once(
    tmp_path: Path, backlog: tuple[Path, Truth]
) -> None:
    root, truth = backlog
    later = tmp_path / "claude"
    (later / "projects/p").mkdir(parents=True)
    with serving(tmp_path / "state", [root, later], ready=False) as daemon:
        workers = [pid for pid in at("once its workers parse", daemon) if process_name(pid) == WORKER]
        os.kill(workers[0], signal.SIGKILL)  # as the OOM killer would
        write(later / "projects/p/s.jsonl", line())
        seen = 0  # "ingested N new request(s)" lines, from the start: the backlog, then the new line
        while seen < len(truth.requests) + 1:
            seen += int(daemon.wait_for(r"ingested (\d+) new request")[1])
        exposition = daemon.metrics()
        assert daemon.get("/healthz")[0] == 200
        assert daemon.stop() == 0
    files = list(root.glob("projects/**/*.jsonl"))  # every line and byte of the backlog, once
    lines, size = sum(p.read_bytes().count(b"\n") for p in files), sum(p.stat().st_size for p in files)
    assert seen == len(truth.requests) + 1
    assert sum(samples(exposition, REQUESTS).values()) == len(truth.requests) + 1
    assert sum(samples(exposition, LINES).values()) == lines + 1
    assert samples(exposition, BYTES_READ) == {'{source="transcripts"}': size + len(line()) + 1}
