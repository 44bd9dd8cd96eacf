"""`serve`: settings → the daemon's loop, the HTTP server, the OTLP receiver and push; signals and logging."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.daemon.loop import Daemon, Options, options_from
from exporter.daemon.team import Team, bearer_tokens
from exporter.daemon.watch import watch
from exporter.pipeline import Setup

if TYPE_CHECKING:
    from exporter.config import Settings
    from exporter.metrics.push import Pusher
    from exporter.web.otlp import OtlpServer

log = logging.getLogger("claude_usage_exporter")


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


def billing_poller(settings: Settings, daemon: Daemon, stop: threading.Event) -> threading.Thread | None:
    """The Admin API poller's thread, when `sources.anthropic_admin` is enabled; a key file that cannot be read
    is one error line and the source down, not a daemon that will not start."""
    from exporter.daemon import billing
    from exporter.sources.anthropic_admin import AdminApiError, AdminClient

    admin = settings.sources.anthropic_admin
    if not admin.enabled or admin.key_file is None:
        return None
    try:
        client = AdminClient(admin.key_file, admin.base_url)
    except AdminApiError as err:
        log.error("Admin API source not started: %s", err)
        daemon.health.source_up[billing.SOURCE] = 0
        return None
    kwargs = {
        "interval": admin.interval.total_seconds(),
        "stop": stop,
        "source_up": daemon.health.source_up,
        "changed": daemon.waker.wake,
        "users": settings.labels.user,
    }
    return threading.Thread(
        target=billing.run, args=(client, daemon.core.state_dir), kwargs=kwargs, name="billing", daemon=True
    )


def _answers(stats: dict[str, Any]) -> dict[str, int]:
    refused: dict[int, int] = stats["refused"]
    return {"200": stats["requests"] - sum(refused.values()), **{str(code): n for code, n in refused.items()}}


def serve(load: Callable[[], Settings], env: Mapping[str, str], once: bool = False, output: Path | None = None) -> int:
    """Runs the daemon until SIGTERM or SIGINT (exit 0; a second one ends it at once, see `stop_now`);
    SIGHUP reloads the configuration.

    `load` gives the settings (flags > environment > file), again at each reload. With `once`, one
    ingest to the end of the files, the exposition on stdout (or in `output`, replaced atomically), and exit.
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
        try:
            daemon.step()
            text = daemon.exposition.render(TEXT, process=False)
            if output is None:
                sys.stdout.buffer.write(text)
            else:
                write_atomically(output, text)
        finally:
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
    polling_bill = billing_poller(settings, daemon, stop_watching)
    if polling_bill is not None:
        polling_bill.start()
        log.info(
            "reading the Admin API at %s every %s",
            settings.sources.anthropic_admin.base_url,
            settings.sources.anthropic_admin.interval,
        )
    if not daemon.options.poll:
        args = (daemon, stop_watching, daemon.options.poll_interval, daemon.options.rescan)
        threading.Thread(target=watch, args=args, name="watch", daemon=True).start()
    try:
        daemon.run()
    finally:
        stop_watching.set()
        if pushing is not None:
            pushing.join(timeout=15)  # its last push, with the final values
        if polling_bill is not None:
            # Between polls it ends at once; a read in progress is dropped (its days are read again at the
            # next start), so a hung Admin API never holds up the 5 s a stop may take.
            polling_bill.join(timeout=2)
        if otlp is not None:
            otlp.shutdown()
            otlp.server_close()
        server.shutdown()
        server.server_close()
        daemon.close()
        log.info("stopped")
    return 0


def write_atomically(path: Path, data: bytes) -> None:
    """Replaces `path` with `data` in one step, so node_exporter's textfile collector never reads half a
    file: a temporary file in the same folder (a rename does not cross file systems), then a rename. Its
    name does not end in `.prom`, so the collector skips it while it is written."""
    import tempfile

    try:
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OSError(f"cannot write {path}: {err.strerror or err}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes it 0600: node_exporter usually runs as another user, who must read it
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        if isinstance(err, OSError):
            raise OSError(f"cannot write {path}: {err.strerror or err}") from None
        raise


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
