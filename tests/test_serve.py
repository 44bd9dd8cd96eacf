"""The daemon's loop with an injected clock and waker: readiness, lag, failures, reloads, watching."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.daemon.loop import Daemon, Options, Waker
from exporter.daemon.watch import watch
from exporter.ledger.store import Ledger
from exporter.metrics.points import LabelPolicy
from exporter.pipeline import Pipeline, Setup
from tests.support.lines import assistant_line, write


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def core(tmp_path: Path, root: Path) -> Setup:
    return Setup(state_dir=tmp_path / "state", roots=(root,), timezone="UTC")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def daemon(tmp_path: Path, claude_dir: Path, clock: Clock) -> Iterator[Daemon]:
    running = Daemon(core(tmp_path, claude_dir), Options(), clock=clock)
    yield running
    running.close()


def requests(daemon: Daemon) -> float:
    return daemon.exposition.snapshot.points["claude_usage_exporter_ledger_requests"][()]


def test_a_step_ingests_new_lines_and_publishes_them(daemon: Daemon, claude_dir: Path) -> None:
    path = write(claude_dir / "projects" / "p" / "s.jsonl", assistant_line("msg_1", "req_1"))
    daemon.step()
    assert (daemon.status.ready, requests(daemon), daemon.health.files_watched) == (True, 1, 1)
    write(path, assistant_line("msg_2", "req_2"))
    daemon.step()
    assert requests(daemon) == 2


def test_the_lag_counts_from_the_first_unread_change_until_a_step_reads_it(daemon: Daemon, clock: Clock) -> None:
    daemon.step()
    daemon.changed()
    clock.now += 3
    daemon.changed()  # a second change does not restart the count
    clock.now += 2
    assert daemon.health.lag() == 5
    daemon.step()
    assert daemon.health.lag() == 0


def test_a_ledger_that_cannot_be_written_makes_the_source_down_and_not_ready(
    tmp_path: Path, claude_dir: Path, clock: Clock
) -> None:
    (tmp_path / "state").write_text("a file where the state dir should be")
    daemon = Daemon(core(tmp_path, claude_dir), Options(), clock=clock)
    daemon.step()
    assert daemon.status.ready is False
    assert daemon.status.error is not None and daemon.status.error.startswith(
        f"cannot update the ledger in {tmp_path / 'state'}: cannot open the ledger at"
    )
    assert daemon.health.source_up == {"transcripts": 0}
    clock.now += 7
    assert daemon.health.lag() == 7  # a stalled exporter shows a growing lag


def test_the_last_good_state_is_served_while_the_ledger_cannot_be_written(
    tmp_path: Path, claude_dir: Path, clock: Clock
) -> None:
    path = write(claude_dir / "projects" / "p" / "s.jsonl", assistant_line("msg_1", "req_1"))
    good = Daemon(core(tmp_path, claude_dir), Options(), clock=clock)
    good.step()
    good.close()
    write(path, assistant_line("msg_2", "req_2"))
    broken = Daemon(core(tmp_path, claude_dir), Options(), clock=clock)
    # Writes now fail as they do on a read-only file (root ignores file modes, so open it read-only).
    broken.app.__dict__["ledger"] = Ledger.read_only(tmp_path / "state")
    broken.step()
    assert (broken.status.ready, broken.health.source_up, requests(broken)) == (False, {"transcripts": 0}, 1)


def test_run_steps_on_each_wake_and_stop_ends_it(daemon: Daemon, claude_dir: Path) -> None:
    woken: list[int] = []

    class CountingWaker(Waker):
        def wait(self, timeout: float | None) -> bool:
            woken.append(1)
            if len(woken) == 2:
                write(claude_dir / "projects" / "p" / "s.jsonl", assistant_line("msg_1", "req_1"))
            if len(woken) == 3:
                daemon.stop()
            return True

    daemon.waker = CountingWaker()
    daemon.run()
    assert (len(woken), requests(daemon)) == (3, 1)


def test_a_reload_applies_new_settings_and_a_failed_one_keeps_the_old(daemon: Daemon, tmp_path: Path) -> None:
    new = Options(policy=LabelPolicy(project="hash"))
    loaded: list[tuple[Setup, Options] | None] = [None, (daemon.core, new)]
    daemon.reload = loaded.pop
    daemon.step()
    daemon.request_reload()
    daemon._reload()
    assert (daemon.options, daemon.status.ingested) == (new, False)
    daemon.step()
    daemon.request_reload()
    daemon._reload()  # the loader failed (returned None): nothing changes
    assert (daemon.options, daemon.status.ready) == (new, True)


def test_a_stop_during_an_ingest_ends_it_after_the_unit_being_read(daemon: Daemon, claude_dir: Path) -> None:
    for n in range(3):
        write(claude_dir / "projects" / "p" / f"s{n}.jsonl", assistant_line(f"msg_{n}", f"req_{n}"))
    daemon.stopping = True
    daemon.step()
    assert requests(daemon) == 3  # small files are one unit: read, committed, then the stop is seen


def wait_woken(daemon: Daemon, touch: object) -> bool:
    """Touch files until the watcher wakes the daemon: its inotify watch starts asynchronously."""
    for _ in range(100):
        assert callable(touch)
        touch()
        if daemon.waker.wait(0.1):
            return True
    return False


def test_the_watcher_wakes_the_loop_when_a_transcript_grows(daemon: Daemon, claude_dir: Path) -> None:
    path = write(claude_dir / "projects" / "p" / "s.jsonl", assistant_line("msg_0", "req_0"))
    stop = threading.Event()
    thread = threading.Thread(
        target=watch, args=(daemon, stop, daemon.options.poll_interval, daemon.options.rescan), daemon=True
    )
    thread.start()
    try:
        assert wait_woken(daemon, lambda: write(path, assistant_line("msg_1", "req_1")))
        assert daemon.health.pending_since is not None
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_the_watcher_picks_up_a_root_that_appears_after_the_start(tmp_path: Path, clock: Clock) -> None:
    root = tmp_path / "later"
    daemon = Daemon(core(tmp_path, root), Options(poll_interval=0.05), clock=clock)
    stop = threading.Event()
    thread = threading.Thread(
        target=watch, args=(daemon, stop, daemon.options.poll_interval, daemon.options.rescan), daemon=True
    )
    thread.start()
    counter = iter(range(10_000))
    try:
        assert wait_woken(
            daemon, lambda: write(root / "projects" / "p" / "s.jsonl", assistant_line(f"msg_{next(counter)}", "r"))
        )
    finally:
        stop.set()
        thread.join(10)
        daemon.close()


def test_polling_checks_recent_files_and_project_folders_between_full_passes(
    tmp_path: Path, claude_dir: Path, clock: Clock
) -> None:
    project = claude_dir / "projects" / "p"
    recent = write(project / "recent.jsonl", assistant_line("msg_1", "req_1"))
    old = write(project / "old.jsonl", assistant_line("msg_2", "req_2"))
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(old, (two_days_ago, two_days_ago))
    daemon = Daemon(core(tmp_path, claude_dir), Options(poll=True), clock=clock)
    daemon.step()
    assert daemon.hot is not None and not daemon.hot.changed()
    checked = {path for path, _, _ in daemon.hot.stats}
    assert checked == {str(claude_dir / "projects"), str(project), str(recent), str(recent)[:-6] + "/subagents"}
    write(old, assistant_line("msg_3", "req_3"))
    assert not daemon.hot.changed()  # an old session resumed waits for the next full pass ...
    write(project / "new.jsonl", assistant_line("msg_4", "req_4"))
    assert daemon.hot.changed()  # ... a new session changes its project folder
    daemon.step()
    write(recent, assistant_line("msg_5", "req_5"))
    assert daemon.hot.changed()
    daemon.close()


def test_polling_runs_a_pass_when_a_likely_place_changed_or_after_the_full_interval(
    tmp_path: Path, claude_dir: Path, clock: Clock
) -> None:
    path = write(claude_dir / "projects" / "p" / "s.jsonl", assistant_line("msg_0", "req_0"))
    daemon = Daemon(core(tmp_path, claude_dir), Options(poll=True, full_poll_every=3), clock=clock)
    steps: list[int] = []
    real_step = daemon.step

    def step() -> None:
        steps.append(len(waits))
        real_step()

    waits: list[int] = []

    class Interval(Waker):  # each wait is one poll interval passing with no wake
        def wait(self, timeout: float | None) -> bool:
            waits.append(1)
            if len(waits) == 2:
                write(path, assistant_line("msg_1", "req_1"))
            if len(waits) == 7:
                daemon.stop()
            return False

    daemon.step = step  # type: ignore[method-assign]
    daemon.waker = Interval()
    daemon.run()
    daemon.close()
    assert steps == [0, 2, 5]  # the start; the append seen at once; a full pass three intervals later


def test_what_another_process_ingested_is_published_at_the_next_pass(daemon: Daemon, claude_dir: Path) -> None:
    daemon.step()
    write(claude_dir / "projects" / "p" / "s.jsonl", assistant_line("msg_1", "req_1"))
    Pipeline(daemon.core).refresh()  # `report` ingests first ...
    daemon.step()  # ... this pass reads nothing new, yet shows it
    assert requests(daemon) == 1


def test_a_pass_with_nothing_new_renders_nothing(daemon: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    daemon.step()
    renders: list[object] = []
    monkeypatch.setattr(daemon.exposition, "update", renders.append)
    daemon.step()
    daemon.step()
    assert renders == []


def test_a_reload_cannot_switch_between_polling_and_inotify(daemon: Daemon) -> None:
    daemon.reload = lambda: (daemon.core, Options(poll=True, poll_interval=5))
    daemon.request_reload()
    daemon._reload()
    assert (daemon.options, daemon.polling) == (Options(poll=False, poll_interval=5), False)


def test_a_reload_with_new_roots_keeps_parse_workers_off_fork(tmp_path: Path, claude_dir: Path, clock: Clock) -> None:
    daemon = Daemon(core(tmp_path, claude_dir), Options(), clock=clock, start_method="forkserver")
    moved = core(tmp_path, tmp_path / "elsewhere")
    daemon.reload = lambda: (moved, Options())
    daemon.request_reload()
    daemon._reload()
    assert (daemon.core, daemon.app.core, daemon.app.start_method) == (moved, moved, "forkserver")
    daemon.close()


def test_when_the_kernel_runs_out_of_inotify_watches_the_daemon_polls(
    daemon: Daemon, claude_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import watchfiles

    stop = threading.Event()

    def exhausted(*paths: object, **options: object) -> object:
        stop.set()  # one attempt is enough for the test: the next one waits a rescan period
        raise OSError(28, "OS file watch limit reached")

    monkeypatch.setattr(watchfiles, "watch", exhausted)  # the kernel's limit cannot be lowered for one test
    watch(daemon, stop, daemon.options.poll_interval, daemon.options.rescan)
    assert daemon.polling is True
    assert daemon.waker.wait(0) is True  # the loop is woken to start polling
