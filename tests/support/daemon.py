"""`serve` as a real process for tests: started on a free loopback port, followed through its log.

Tests wait on log lines ("ready", "ingested …") rather than sleeping: each line is an event.
"""

from __future__ import annotations

import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from tests.support.waiting import WAIT

# `serve` as a command, run from the repository's root (where `exporter` is)
SERVE = (sys.executable, "-m", "exporter", "serve")
REPO = Path(__file__).resolve().parents[2]


class Serve:
    def __init__(
        self,
        state: Path,
        roots: list[Path],
        *args: str,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        """`prefix` runs the command through another, e.g. setpriv to drop root's powers."""
        command = [
            *prefix,
            *SERVE,
            "--state-dir",
            str(state),
            "--web.listen-address",
            "127.0.0.1:0",
            "--log.format",
            "json",
            *args,
        ]
        for root in roots:
            command += ["--claude-dir", str(root)]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**clean_env(), "TZ": "UTC", **(env or {})},
            cwd=REPO,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.url = self.wait_for(r"listening on (\S+);")[1]
        except AssertionError:
            self.process.kill()
            self.process.wait(timeout=WAIT)
            raise

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self.lines.put(raw.decode(errors="replace"))
        self.lines.put("")  # the process closed its stderr

    def wait_for(self, pattern: str, timeout: float = WAIT) -> re.Match[str]:
        """The next log line matching `pattern`; fails the test if the process ends first."""
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no log line matched {pattern!r}; log so far:\n{''.join(self.log)}") from None
            if not line:
                raise AssertionError(f"serve exited before logging {pattern!r}; log:\n{''.join(self.log)}")
            self.log.append(line)
            found = re.search(pattern, line)
            if found:
                return found

    def wait_for_requests(self, expected: int, timeout: float = WAIT) -> None:
        """Waits for "ingested N new request(s)" lines until they add up to `expected` new requests.

        One write can wake the loop once or twice, so two new requests may come in one pass or in two.
        """
        seen = 0
        while seen < expected:
            seen += int(self.wait_for(r"ingested (\d+) new request", timeout)[1])
        assert seen == expected

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=WAIT) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), err.read()

    def metrics(self) -> str:
        status, _, body = self.get("/metrics")
        assert status == 200
        return body.decode()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=WAIT)
        if self.process.stderr:
            self.process.stderr.close()
        return code


def clean_env() -> dict[str, str]:
    """This process's environment without the exporter's own settings (a developer's shell may set them)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGE_EXPORTER_")}


@contextmanager
def serving(
    state: Path,
    roots: list[Path],
    *args: str,
    env: dict[str, str] | None = None,
    prefix: tuple[str, ...] = (),
    ready: bool = True,
) -> Iterator[Serve]:
    """A running `serve`, ready (its first ingest done, unless `ready` is False) when the block starts;
    killed after it."""
    daemon = Serve(state, roots, *args, env=env, prefix=prefix)
    try:
        if ready:
            daemon.wait_for(r"ready: ")
        yield daemon
    finally:
        if daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(timeout=WAIT)


def process_tree(pid: int) -> dict[int, int]:
    """Every descendant of `pid`, with its depth (1: a child), from /proc; ended ones (zombies) too."""
    parents = {}
    for entry in Path("/proc").iterdir():
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (ValueError, OSError):
            continue  # not a process, or one that ended meanwhile
    depths = {pid: 0}
    while True:
        more = {child: depths[ppid] + 1 for child, ppid in parents.items() if ppid in depths and child not in depths}
        if not more:
            return {p: d for p, d in depths.items() if p != pid}
        depths |= more


def running(pid: int) -> bool:
    """Whether the process exists and has not ended (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False


def process_name(pid: int) -> str:
    """The process's name (`comm`: what `ps` shows); "" once it has ended."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def command(pid: int) -> str:
    """The process's name (`comm`: what `ps` shows) and command line, for messages."""
    name = process_name(pid)
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        name = ""
    if not name:
        return "(ended)"
    return f"{name}: {args[:200]}"


def running_after(pids: Iterable[int], timeout: float) -> set[int]:
    """Those of `pids` still running once `timeout` seconds have passed (a limit: it waits on pidfds,
    never sleeps). An ended one that this process adopted (conftest makes it the subreaper) is reaped."""
    deadline = time.monotonic() + timeout
    left = set()
    for pid in pids:
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            if not select.select([pidfd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                left.add(pid)
        finally:
            os.close(pidfd)
        with suppress(ChildProcessError):  # not this process's child: its own parent reaps it
            os.waitpid(pid, os.WNOHANG)
    return left
