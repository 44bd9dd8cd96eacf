"""`serve` as a real process for tests: started on a free loopback port, followed through its log.

Tests wait on log lines ("ready", "ingested …") rather than sleeping: each line is an event.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

WAIT = 60.0  # seconds before a test gives up on an event (a limit, never a pause)


class Serve:
    def __init__(self, state: Path, roots: list[Path], *args: str, env: dict[str, str] | None = None,
                 prefix: tuple[str, ...] = ()) -> None:  # fmt: skip
        """`prefix` runs the command through another, e.g. setpriv to drop root's powers."""
        command = [*prefix, sys.executable, "-m", "exporter", "serve", "--state-dir", str(state),
                   "--web.listen-address", "127.0.0.1:0", "--log.format", "json", *args]  # fmt: skip
        for root in roots:
            command += ["--claude-dir", str(root)]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGE_EXPORTER_")}
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env={**clean, "TZ": "UTC", **(env or {})}, cwd=Path(__file__).parent.parent,
        )  # fmt: skip
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


@contextmanager
def serving(state: Path, roots: list[Path], *args: str, env: dict[str, str] | None = None,
            prefix: tuple[str, ...] = (), ready: bool = True) -> Iterator[Serve]:  # fmt: skip
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


def samples(exposition: str, name: str) -> dict[str, float]:
    """`{labels: value}` of one metric in a text exposition, labels as written (`{a="b",…}` or "")."""
    found = {}
    for line in exposition.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line[len(name) :].rpartition(" ")
            found[labels] = float(value)
    return found
