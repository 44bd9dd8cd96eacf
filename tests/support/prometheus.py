"""A real Prometheus server for tests: it scrapes `serve` over loopback and answers PromQL.

Without the Debian package `prometheus`, its tests skip loudly (tools.require), and fail under CI=true.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import yaml

from tests.support.loopback import answers_ok, free_port
from tests.support.tools import require
from tests.support.waiting import WAIT, eventually

PROMETHEUS = "/usr/bin/prometheus"
PROMTOOL = "/usr/bin/promtool"
JOB = "claude-usage"
Sample = tuple[dict[str, str], float]


def _seconds(rfc3339: str) -> float:
    """Prometheus' RFC 3339 time (nanoseconds, `Z`) in seconds since the epoch; 0 for its zero time."""
    moment = datetime.fromisoformat(rfc3339)
    return max(0.0, moment.timestamp())


class Prometheus:
    """`prometheus` in `workdir`, scraping `target` (host:port) every second as job `claude-usage`,
    and evaluating `rule_files` every second."""

    def __init__(
        self,
        workdir: Path,
        target: str,
        binary: str = PROMETHEUS,
        rule_files: tuple[Path, ...] = (),
        config: dict[str, Any] | None = None,
        flags: tuple[str, ...] = (),
    ) -> None:
        """`config`, when given, replaces the configuration described above; `flags` are added."""
        self.workdir = workdir
        self.target = target
        if config is None:
            config = {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(path) for path in rule_files],
                "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
            }
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.url = f"http://127.0.0.1:{free_port()}"
        command = [
            binary,
            f"--config.file={path}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={self.url.removeprefix('http://')}",
            "--log.level=info",
            *flags,
        ]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=workdir, start_new_session=True
            )
        eventually(
            lambda: answers_ok(f"{self.url}/-/ready", self.process, self.log), what=f"{self.url}/-/ready answers 200"
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful answer of the HTTP API (`/api/v1/...`)."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=WAIT) as answer:
                body = orjson.loads(answer.read())
        except urllib.error.HTTPError as err:
            raise AssertionError(f"GET {url}: {err.code} {err.read().decode(errors='replace')}") from None
        assert body["status"] == "success", body
        return body["data"]

    def query(self, promql: str) -> list[Sample]:
        """An instant query's vector, as `(labels, value)` pairs sorted by labels."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", f"{promql} gives a {data['resultType']}, not a vector"
        found = [(dict(r["metric"]), float(r["value"][1])) for r in data["result"]]
        return sorted(found, key=lambda sample: sorted(sample[0].items()))

    def scalar(self, promql: str) -> float:
        """The value of a query that gives exactly one sample."""
        found = self.query(promql)
        assert len(found) == 1, f"{promql} gives {found}, not one sample"
        return found[0][1]

    def target_state(self) -> dict[str, Any] | None:
        """The job's one active target as `/api/v1/targets` describes it; None until it is discovered."""
        active = [t for t in self.api("targets", state="active")["activeTargets"] if t["labels"]["job"] == JOB]
        assert len(active) <= 1, active
        return active[0] if active else None

    def wait_scraped(self, after: float, timeout: float = WAIT) -> dict[str, Any]:
        """Waits for a successful scrape that started after `after` (epoch seconds) and is queryable.

        `lastScrape` changes before the scrape's samples are committed; its samples, `up` among them,
        are committed together and are stamped with the scrape's start (aligned by up to 2 ms).
        """

        def scraped() -> dict[str, Any] | None:
            target = self.target_state()
            if target is None or target["health"] != "up" or _seconds(target["lastScrape"]) <= after:
                return None
            stamps = self.query(f'timestamp(up{{job="{JOB}"}})')
            return target if stamps and stamps[0][1] > after + 0.005 else None

        return eventually(
            scraped, timeout, lambda: f"{JOB} scraped after {after:.3f}: {self.target_state()}; log:\n{self.log()}"
        )

    def wait_rates_defined(self) -> None:
        """Waits for two successful scrapes after the first, so every rate() over the tests' intervals is defined."""
        first = self.wait_scraped(time.time())
        self.wait_scraped(datetime.fromisoformat(first["lastScrape"]).timestamp() + 0.5)

    def stop(self, timeout: float = 30.0) -> int:
        """Terminates Prometheus (it flushes and exits), killing it if it does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=timeout)


@contextmanager
def prometheus(workdir: Path, target: str, rule_files: tuple[Path, ...] = ()) -> Iterator[Prometheus]:
    """A ready Prometheus scraping `target`; stopped after the block."""
    require(PROMETHEUS, "a real Prometheus scraping the exporter (Debian package `prometheus`)")
    server = Prometheus(workdir, target, rule_files=rule_files)
    try:
        yield server
    finally:
        server.stop()


def promtool_check_metrics(exposition: bytes) -> subprocess.CompletedProcess[str]:
    """`promtool check metrics` on an exposition in the text format (its lint rules included)."""
    require(PROMTOOL, "the exposition passing `promtool check metrics` (Debian package `prometheus`)")
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition.decode(), capture_output=True, text=True, timeout=WAIT
    )
