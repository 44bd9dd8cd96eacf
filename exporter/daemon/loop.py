"""The daemon's loop: follows the transcripts, keeps the ledger current, and renders what is served.

One loop thread owns the ledger and runs every ingest; it sleeps on a `Waker` that the file watcher
(or the poll interval, or a signal) sets. HTTP threads only read what the loop last rendered.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from exporter import __version__
from exporter.daemon.gauges import Daily, Windows, malformed_lines, plan_points, read_daily, read_page, read_windows
from exporter.daemon.team import Inbox, Team
from exporter.daemon.watch import Hot
from exporter.events import Outcome, Source
from exporter.ledger.store import Ledger, LedgerError
from exporter.metrics.billing import read_bill
from exporter.metrics.exposition import Exposition, Health, read_snapshot
from exporter.metrics.points import LabelPolicy
from exporter.pipeline import Pipeline, Setup
from exporter.reports.periods import Query
from exporter.sources.statusline import SUMMARY, write_atomic
from exporter.web.page import PageData

if TYPE_CHECKING:
    from exporter.config import Settings

log = logging.getLogger("claude_usage_exporter")
WINDOWS_EVERY = 30.0  # seconds: how stale budgets, projections and the block may grow without new data
WINDOWS_SOON = 5.0  # seconds: how long after a change they may wait
SHARE = 64 << 20  # bytes one file may add to a pass while other files have new bytes too


class Waker:
    """Wakes the loop: a file changed, a poll interval passed, a signal came. Tests call `wake`."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def wake(self) -> None:
        self._event.set()

    def wait(self, timeout: float | None) -> bool:
        woke = self._event.wait(timeout)
        self._event.clear()
        return woke


@dataclass(frozen=True)
class Options:
    """What the daemon needs beyond the ledger's core: how to watch, what to expose."""

    poll: bool = False
    poll_interval: float = 1.0
    rescan: float = 60.0  # a full pass even without events: inotify queues can overflow
    full_poll_every: int = 30  # polling: a full pass every this many intervals, else only likely places
    policy: LabelPolicy = field(default_factory=LabelPolicy)
    sources: tuple[str, ...] = (Source.TRANSCRIPTS,)
    push: bool = False  # an OTLP pusher reads the metrics too
    billing: bool = False  # the Admin API source is enabled: its metrics are shown


@dataclass
class Status:
    """Readiness as `/readyz` reports it; written by the loop."""

    started: bool = False  # the first ingest finished; a reload does not undo it, readiness must not flap
    ingested: bool = False  # a full pass with the current settings finished (false after a reload until then)
    error: str | None = None  # the last ingest's failure, if it failed

    @property
    def ready(self) -> bool:
        return self.started and self.error is None


class Daemon:
    def __init__(
        self,
        core: Setup,
        options: Options,
        waker: Waker | None = None,
        clock: Callable[[], float] = time.monotonic,
        start_method: str = "fork",
    ) -> None:
        self.core, self.options = core, options
        self.waker = waker or Waker()
        self.clock = clock
        self.health = Health(clock=clock)
        self.status = Status()
        self.app = Pipeline(core, start_method)
        self.build = {"version": __version__, "pricing_source": "", "pricing_version": ""}
        self.exposition = Exposition(self.health, self.build, options.push)
        self.page = PageData()
        self.stopping = False
        self.reload: Callable[[], tuple[Setup, Options] | None] | None = None
        self.reload_requested = False
        self._day = ""
        self._windows_at: float | None = None  # when the budgets and block were last computed
        self._windows_stale = False  # the ledger changed since
        self.windows = Windows(0)
        self.daily: Daily = ()  # the page's last 30 days, from the windows pass
        self._malformed_before: int | None = None  # malformed lines the ledger had counted when we started
        self._summary = b""  # the summary file's content last written
        self.health.plan = lambda: plan_points(self.core.state_dir, time.time())
        self._published: tuple[int, tuple[tuple[str, int], ...]] | None = None  # the ledger's version last shown
        self._errors: set[str] = set()  # read errors of the last pass
        self.polling = options.poll  # also when inotify cannot watch (see `watch`)
        self.hot: Hot | None = None  # polling: where a change is likely, from the last pass
        self.team: Team | None = None  # the OTLP receiver's side, in team mode
        self.inbox = Inbox(lambda: self.waker.wake())
        self._committed: list[Future[None]] = []  # OTLP batches stored, their senders not yet answered

    # --- one pass -------------------------------------------------------------------------------

    def step(self) -> None:
        """One ingest of everything new, then new values for the metrics; never raises."""
        try:
            self._step()
        finally:
            self._answer()

    def _step(self) -> None:
        started = self.clock()
        self._receive()
        try:
            # Once the backlog is read, one fast-growing file must not hold up the others' new requests.
            share = SHARE if self.status.started else None
            if self._malformed_before is None:
                self._malformed_before = malformed_lines(self.app.ledger.counters())
            result = self.app.refresh(stop=lambda: self.stopping, share=share)
        except (LedgerError, OSError, sqlite3.Error) as err:
            self._failed(f"cannot update the ledger in {self.core.state_dir}: {err}")
            return
        except Exception as err:  # e.g. a parse worker killed by the OOM killer: try again next pass
            log.exception("ingest failed")
            self._failed(f"ingest failed: {err!r}")
            return
        if Source.TRANSCRIPTS in self.options.sources:
            self.health.source_up[Source.TRANSCRIPTS] = 1
        self.health.files_watched = result.files
        if result.more:  # the rest of a large file is read in the next pass, straight away
            self.waker.wake()
        self.hot = Hot.of(result.found, self.core.roots, time.time_ns()) if self.polling else None
        if self.health.pending_since is not None and self.health.pending_since <= started:
            self.health.pending_since = None
        # A lasting fault (a file it may not read) is logged and counted once, not at every pass.
        new_errors = sorted(set(result.errors) - self._errors)
        for error in new_errors[:20]:
            log.warning("read error: %s", error)
        if new_errors:
            self.app.ledger.add_counters({f"errors.{Source.TRANSCRIPTS}": len(new_errors)})
        self._errors = set(result.errors)
        # Another process (`report`) may have ingested first: what it stored counts as a change too.
        version = self._version(self.app.ledger)
        changed = version != self._published or new_errors or not self.status.ingested or self._new_day()
        self.status.error = None
        if changed:
            self._publish(self.app.ledger)
            new = result.outcomes[Outcome.USAGE]
            if new or not self.status.ingested:
                log.info(
                    "ingested %d new request(s) from %d byte(s) in %.3f s",
                    new,
                    result.bytes_read,
                    self.clock() - started,
                )
        if malformed := result.outcomes[Outcome.MALFORMED]:
            log.warning(
                "%d line(s) malformed or unrecognised since the last pass (%d since start), not counted;"
                " `claude-usage-exporter explain TRANSCRIPT` shows what became of each line",
                malformed,
                self.page.malformed,
            )
        if self._windows_due():
            self._windows(self.app.ledger)
        if not self.status.ingested and not self.stopping:  # a stopped ingest did not reach the end
            self.status.started = self.status.ingested = True
            if result.files or Source.TRANSCRIPTS not in self.options.sources:
                log.info("ready: %d transcript file(s) found", result.files)
            else:  # not watching nothing in silence: where Claude Code's first session will appear
                where = ", ".join(str(root / "projects") for root in self.core.roots)
                log.info("ready: 0 transcript file(s) found; watching %s for Claude Code's first session", where)

    def _failed(self, message: str) -> None:
        repeated, self.status.error = self.status.error == message, message
        for source in self.options.sources:
            self.health.source_up[source] = 0
        if self.health.pending_since is None:
            self.health.pending_since = self.clock()
        if not self.exposition.snapshot.points:  # nothing shown yet: show the last good state, if any
            self._publish_last_good()
        self.page = self._page()  # says which source is down
        if not repeated:  # logged last: whoever reacts to the line sees the state it describes
            log.error("%s", message)

    def _publish_last_good(self) -> None:
        try:
            ledger = Ledger.read_only(self.core.state_dir)
        except LedgerError:
            return
        try:
            self._publish(ledger)
        except sqlite3.Error:
            pass
        finally:
            ledger.close()

    @staticmethod
    def _version(ledger: Ledger) -> tuple[int, tuple[tuple[str, int], ...]]:
        """Changes with every commit that stored a request or counted a line or byte, by any process."""
        return ledger.generation(), tuple(sorted(ledger.counters().items()))

    def _publish(self, ledger: Ledger) -> None:
        self._published = self._version(ledger)
        self._day = datetime.now(self.core.zone).date().isoformat()  # the page's "today" changes with it
        pricer = self.app.pricer
        self.build.update(pricing_source=pricer.source, pricing_version=pricer.version)
        self.exposition.update(
            read_snapshot(ledger, self.options.policy, self.build, self.options.sources, billing=self.options.billing)
        )
        self.page = self._page()
        self._windows_stale = True

    def _page(self) -> PageData:
        down = tuple(source for source, up in self.health.source_up.items() if not up)
        before = self._malformed_before or 0
        return read_page(self.exposition.snapshot, self.core.zone, self.windows, self.daily, down, before)

    def _windows_due(self) -> bool:
        """At most every WINDOWS_SOON seconds after a change (a busy team exporter commits many times a
        second, and each pass sums the month), and every WINDOWS_EVERY seconds as the clock moves."""
        if self._windows_at is None:
            return True
        since = self.clock() - self._windows_at
        return since >= WINDOWS_EVERY or (self._windows_stale and since >= WINDOWS_SOON)

    def _windows(self, ledger: Ledger) -> None:
        """Budgets and the block from the clock and the ledger; the summary `statusline` shows."""
        self._windows_at, self._windows_stale = self.clock(), False
        c = self.core
        cost = Query(c.zone, mode=c.pricing_mode).cost
        blocks = Source.TRANSCRIPTS in self.options.sources  # a central team exporter has no one account's block
        now_ms = int(time.time() * 1000)
        self.windows = windows = read_windows(ledger, c.budgets, now_ms, c.zone, c.week_start, cost, blocks)
        bill = read_bill(ledger, now_ms / 1000) if self.options.billing else {}
        self.health.windows = windows.points() | bill
        self.daily = read_daily(ledger, now_ms, c.zone, cost)
        self.page = self._page()
        summary = orjson.dumps(windows.summary(c.zone))
        if summary != self._summary:
            try:
                write_atomic(os.path.join(c.state_dir, SUMMARY), summary)
            except OSError as err:  # the ledger's state dir is the problem: `step` reports that
                log.debug("cannot write the status line summary: %s", err)
            self._summary = summary

    def tick(self) -> None:
        """Between passes: stores OTLP events whose grace is over, and keeps the budgets and block
        current as time passes; never raises."""
        if "ledger" not in self.app.__dict__:
            return
        try:
            if self._receive() and self._version(self.app.ledger) != self._published:
                self._publish(self.app.ledger)
            if self._windows_due():
                self._windows(self.app.ledger)
        except (sqlite3.Error, OSError) as err:
            log.warning("cannot update budgets: %s", err)
        finally:
            self._answer()

    def _receive(self) -> bool:
        """Commits what the OTLP receiver handed over, then the events whose grace is over."""
        if self.team is None:
            return False
        try:
            self._committed += self.team.apply(self.app, self.inbox.take(), int(time.time() * 1000))
            self.team.settle(self.app, int(time.time() * 1000))
        except (LedgerError, OSError, sqlite3.Error) as err:
            if self.health.source_up.get(Source.OTLP) != 0:
                log.error("cannot store OTLP data in %s: %s", self.core.state_dir, err)
            self.health.source_up[Source.OTLP] = 0
            return False
        self.health.source_up[Source.OTLP] = 1
        return True

    def _new_day(self) -> bool:
        return datetime.now(self.core.zone).date().isoformat() != self._day

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        """Until `stop`: a pass whenever woken, and at least every rescan period. Polling, every
        interval checks the places a change is likely, and every `full_poll_every` intervals all."""
        self.step()
        idle, last = 0, self.clock()
        while not self.stopping:
            poll = self.polling
            woken = self.waker.wait(self.options.poll_interval if poll else self._timeout())
            if self.reload_requested:
                self._reload()
            idle += 1
            if self.stopping:
                break
            if poll:
                due = idle >= self.options.full_poll_every or self.hot is None or self.hot.changed()
            else:
                due = self.clock() - last >= self.options.rescan
            if woken or due:
                self.step()
                idle, last = 0, self.clock()
            else:
                self.tick()

    def _answer(self) -> None:
        """OTLP senders get their 200 once what they sent is committed and, normally, published."""
        for done in self._committed:
            done.set_result(None)
        self._committed = []

    def _timeout(self) -> float:
        """How long the loop may sleep: OTLP events whose grace ends must not wait much longer."""
        grace = self.team.grace_ms / 1000 if self.team is not None and self.team.grace_ms else WINDOWS_EVERY
        soon = WINDOWS_SOON if self._windows_stale else WINDOWS_EVERY
        return min(self.options.rescan, soon, max(grace / 2, 0.1))

    # --- what the HTTP server and the watcher see (exporter.web.server.Shown, exporter.daemon.watch.Watched)

    def render(self, content_type: str) -> bytes:
        return self.exposition.render(content_type)

    @property
    def not_ready(self) -> str | None:
        """None when ready; else why not."""
        return None if self.status.ready else self.status.error or "the first ingest has not finished"

    @property
    def roots(self) -> tuple[Path, ...]:
        return self.core.roots

    def watching(self, up: bool) -> bool:
        polling = self.options.poll or not up
        changed, self.polling = polling != self.polling, polling
        if changed and polling:
            self.waker.wake()
        return changed

    def stop(self) -> None:
        self.stopping = True
        self.waker.wake()

    def changed(self) -> None:
        """A watched file changed: note when (for the lag gauge) and wake the loop."""
        if self.health.pending_since is None:
            self.health.pending_since = self.clock()
        self.waker.wake()

    def request_reload(self) -> None:
        self.reload_requested = True
        self.waker.wake()

    def _reload(self) -> None:
        self.reload_requested = False
        loaded = self.reload() if self.reload else None
        if loaded is None:
            return
        core, options = loaded
        if core != self.core:
            self.app.ledger.close()
            self.core, self.app = core, Pipeline(core, self.app.start_method)
            self._malformed_before = None  # perhaps another ledger
        if options.poll != self.options.poll:  # the watcher thread runs or not from the start
            log.warning("sources.transcripts.poll changed: it takes effect on restart")
            options = replace(options, poll=self.options.poll)
        self.options = options
        self.status.ingested = False  # the next pass publishes what the new settings change
        log.info("configuration reloaded")

    def close(self) -> None:
        self.exposition.close()
        if "ledger" in self.app.__dict__:
            self.app.ledger.close()


def options_from(settings: Settings) -> Options:
    t, labels = settings.sources.transcripts, settings.labels
    policy = LabelPolicy(
        labels.project, labels.max_projects, labels.max_models, labels.max_tools, labels.user != "off", labels.max_users
    )
    sources = (*([Source.TRANSCRIPTS] if t.enabled else []), *([Source.OTLP] if settings.sources.otlp.enabled else []))
    return Options(
        poll=t.poll,
        poll_interval=t.poll_interval.total_seconds(),
        policy=policy,
        sources=sources,
        push=settings.export.otlp_push.endpoint is not None,
        billing=settings.sources.anthropic_admin.enabled,
    )
