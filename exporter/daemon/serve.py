"""The daemon: follows the transcripts, keeps the ledger current, and serves the metrics.

One loop thread owns the ledger and runs every ingest; it sleeps on a `Waker` that the file watcher
(or the poll interval, or a signal) sets. HTTP threads only read what the loop last rendered.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson

from exporter import __version__
from exporter.daemon.gauges import Windows, plan_points, read_windows
from exporter.daemon.team import Inbox, Team, bearer_tokens
from exporter.daemon.watch import Hot, watch
from exporter.ledger.store import Ledger, LedgerError
from exporter.metrics.exposition import Exposition, Health, read_snapshot
from exporter.metrics.points import LabelPolicy
from exporter.pipeline import Pipeline, Setup
from exporter.reports.periods import Query
from exporter.sources.statusline import SUMMARY, write_atomic
from exporter.web.page import PageData, read_page

if TYPE_CHECKING:
    from exporter.config import Settings
    from exporter.metrics.push import Pusher
    from exporter.web.otlp import OtlpServer

log = logging.getLogger("claude_usage_exporter")
SOURCE = "transcripts"
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
    sources: tuple[str, ...] = ("transcripts",)
    push: bool = False  # an OTLP pusher reads the metrics too


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
            result = self.app.refresh(stop=lambda: self.stopping, share=share)
        except (LedgerError, OSError, sqlite3.Error) as err:
            self._failed(f"cannot update the ledger in {self.core.state_dir}: {err}")
            return
        except Exception as err:  # e.g. a parse worker killed by the OOM killer: try again next pass
            log.exception("ingest failed")
            self._failed(f"ingest failed: {err!r}")
            return
        if SOURCE in self.options.sources:
            self.health.source_up[SOURCE] = 1
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
            self.app.ledger.add_counters({f"errors.{SOURCE}": len(new_errors)})
        self._errors = set(result.errors)
        # Another process (`report`) may have ingested first: what it stored counts as a change too.
        version = self._version(self.app.ledger)
        changed = version != self._published or new_errors or not self.status.ingested or self._new_day()
        self.status.error = None
        if changed:
            self._publish(self.app.ledger)
            new = result.outcomes["usage"]
            if new or not self.status.ingested:
                log.info(
                    "ingested %d new request(s) from %d byte(s) in %.3f s",
                    new,
                    result.bytes_read,
                    self.clock() - started,
                )
        if self._windows_due():
            self._windows(self.app.ledger)
        if not self.status.ingested and not self.stopping:  # a stopped ingest did not reach the end
            self.status.started = self.status.ingested = True
            log.info("ready: %d transcript file(s) found", result.files)

    def _failed(self, message: str) -> None:
        repeated, self.status.error = self.status.error == message, message
        for source in self.options.sources:
            self.health.source_up[source] = 0
        if self.health.pending_since is None:
            self.health.pending_since = self.clock()
        if not self.exposition.snapshot.points:  # nothing shown yet: show the last good state, if any
            self._publish_last_good()
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
        self.exposition.update(read_snapshot(ledger, self.options.policy, self.build, self.options.sources))
        self.page = read_page(self.exposition.snapshot, self.core.zone, self.windows)
        self._windows_stale = True

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
        blocks = "transcripts" in self.options.sources  # a central team exporter has no one account's block
        now_ms = int(time.time() * 1000)
        self.windows = windows = read_windows(ledger, c.budgets, now_ms, c.zone, c.week_start, cost, blocks)
        self.health.windows = windows.points()
        self.page = read_page(self.exposition.snapshot, c.zone, windows)
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
            if self.health.source_up.get("otlp") != 0:
                log.error("cannot store OTLP data in %s: %s", self.core.state_dir, err)
            self.health.source_up["otlp"] = 0
            return False
        self.health.source_up["otlp"] = 1
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
    sources = (*(["transcripts"] if t.enabled else []), *(["otlp"] if settings.sources.otlp.enabled else []))
    return Options(
        poll=t.poll,
        poll_interval=t.poll_interval.total_seconds(),
        policy=policy,
        sources=sources,
        push=settings.export.otlp_push.endpoint is not None,
    )


def pusher(settings: Settings, daemon: Daemon) -> Pusher | None:
    from exporter.metrics.push import Pusher

    push = settings.export.otlp_push
    if push.endpoint is None:
        return None
    found = Pusher(daemon.exposition, push.endpoint, push.headers, push.interval.total_seconds())
    daemon.health.pushes = found.answers
    return found


def receiver(settings: Settings, daemon: Daemon) -> OtlpServer | None:
    """The OTLP receiver of team mode, when configured; the daemon's loop commits what it takes."""
    from exporter.config import split_host_port
    from exporter.web.otlp import OtlpServer

    o, transcripts = settings.sources.otlp, settings.sources.transcripts.enabled
    if not o.enabled:
        return None
    # With no transcripts to wait for (a central exporter), an event is stored at once.
    grace_ms = int(o.grace.total_seconds() * 1000) if transcripts else 0
    daemon.team = Team(grace_ms=grace_ms, tools_from_otlp=not transcripts, users=settings.labels.user)
    try:
        tokens = bearer_tokens(o.bearer_tokens_file)
    except OSError as err:
        path = o.bearer_tokens_file
        raise OSError(f"cannot read sources.otlp.bearer_tokens_file {path}: {err.strerror or err}") from None
    try:
        server = OtlpServer(
            split_host_port(o.listen), daemon.inbox.sink, tokens=tokens, max_body_bytes=o.max_body_bytes
        )
    except OSError as err:
        raise OSError(f"cannot listen for OTLP on {o.listen}: {err.strerror or err}") from None
    daemon.health.otlp = lambda: _answers(server.stats.snapshot())
    return server


def _answers(stats: dict[str, Any]) -> dict[str, int]:
    refused: dict[int, int] = stats["refused"]
    return {"200": stats["requests"] - sum(refused.values()), **{str(code): n for code, n in refused.items()}}


def serve(load: Callable[[], Settings], env: Mapping[str, str], once: bool = False) -> int:
    """Runs the daemon until SIGTERM or SIGINT (exit 0; a second one ends it at once, see `stop_now`);
    SIGHUP reloads the configuration.

    `load` gives the settings (flags > environment > file), again at each reload. With `once`, one
    ingest to the end of the files, the exposition on stdout, and exit.
    """
    from exporter.config import ConfigError, split_host_port
    from exporter.metrics.exposition import TEXT
    from exporter.web.server import Server
    from exporter.web.webconfig import load_web_config

    settings = load()
    setup_logging(settings.log.format, settings.log.level)
    # With HTTP and watcher threads running, forking parse workers is unsafe: they are spawned. Not from
    # a forkserver: as the daemon's own children, the kernel kills them when the daemon dies.
    method = "fork" if once else "spawn"
    daemon = Daemon(Setup.from_settings(settings, env), options_from(settings), start_method=method)
    if once:
        daemon.step()
        sys.stdout.buffer.write(daemon.exposition.render(TEXT, process=False))
        daemon.close()
        return 0 if daemon.status.ready else 1
    web = load_web_config(settings.web.config_file) if settings.web.config_file else None
    try:
        server = Server(split_host_port(settings.web.listen), daemon, web)
    except OSError as err:
        daemon.close()
        raise OSError(f"cannot listen on {settings.web.listen}: {err.strerror or err}") from None
    try:
        otlp = receiver(settings, daemon)
    except OSError:
        server.server_close()
        daemon.close()
        raise

    def reload() -> tuple[Setup, Options] | None:
        try:
            fresh = load()
            if fresh.web.config_file:
                server.web = load_web_config(fresh.web.config_file)
        except ConfigError as err:  # a WebConfigError too
            log.error("configuration not reloaded: %s", err)
            return None
        if fresh.web.listen != settings.web.listen:
            log.warning("web.listen changed: it takes effect on restart")
        return Setup.from_settings(fresh, env), options_from(fresh)

    daemon.reload = reload

    def stop(signum: int, _: object) -> None:
        if daemon.stopping:
            stop_now(signum)
        daemon.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, lambda *_: daemon.request_reload())
    stop_watching = threading.Event()
    server.start()
    log.info("listening on %s; watching %s", server.url, ", ".join(str(r / "projects") for r in daemon.core.roots))
    if otlp is not None:
        otlp.start()
        log.info("receiving OTLP on %s/v1/logs and /v1/metrics", otlp.url)
    push = pusher(settings, daemon)
    pushing = None
    if push is not None:
        pushing = threading.Thread(target=push.run, args=(stop_watching,), name="push")
        pushing.start()
        log.info("pushing metrics to %s every %g s", push.url, push.interval)
    if not daemon.options.poll:
        threading.Thread(target=watch, args=(daemon, stop_watching), name="watch", daemon=True).start()
    try:
        daemon.run()
    finally:
        stop_watching.set()
        if pushing is not None:
            pushing.join(timeout=15)  # its last push, with the final values
        if otlp is not None:
            otlp.shutdown()
            otlp.server_close()
        server.shutdown()
        server.server_close()
        daemon.close()
        log.info("stopped")
    return 0


def stop_now(signum: int) -> None:
    """A second SIGTERM or SIGINT: the process ends at once, killed by that signal as if it had no
    handler. The ledger stays consistent: SQLite rolls back a transaction cut short, and the offsets of
    the transcripts are committed with what was read from them. Parse workers die with the process."""
    record = log.makeRecord(log.name, logging.WARNING, __file__, 0, "stopping at once", (), None)
    for handler in log.handlers:  # not through the handler: the signal may have come in the middle of its write
        os.write(2, (handler.format(record) + "\n").encode())
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # not reached: the signal is delivered before `kill` returns


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import orjson

        entry = {"time": self.formatTime(record), "level": record.levelname.lower(), "msg": record.getMessage()}
        return orjson.dumps(entry).decode()


def setup_logging(fmt: str, level: str) -> None:
    """One line per event on stderr: logfmt-like text, or JSON objects."""
    handler = logging.StreamHandler()
    text = "time=%(asctime)s level=%(levelname)s msg=%(message)r"
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter(text))
    root = logging.getLogger("claude_usage_exporter")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
