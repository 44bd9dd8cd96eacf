"""Benchmark basic auth under a wrong-password flood: legit scrape latency of a real `serve`.

    python -m bench.auth                   # 32 flooding clients, bcrypt cost 10, 200 scrapes a phase
    python -m bench.auth --quick           # a smoke check: 50 scrapes a phase
    python -m bench.auth --json out.json   # also write the figures as JSON (`--json -`: to stdout)

Starts `python -m exporter serve` on 127.0.0.1:0 with a web config holding bcrypt hashes, then GETs
/metrics as a legit scraper (a user whose good credentials were checked before, as Prometheus's are
after its first scrape) and as first logins (users never seen, so bcrypt runs), quietly and while
`--clients` threads send wrong passwords as fast as they are answered: for the scraper's own user,
and for made-up user names. Stops by itself, and kills the daemon on the way out whatever happens.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import http.client
import math
import os
import platform
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bcrypt
import orjson

from tests.support.loopback import basic

REPO = Path(__file__).resolve().parent.parent
PASSWORD = "legit password"
START_WAIT = 60.0  # seconds the daemon may take to listen and be ready
HTTP_WAIT = 60.0  # seconds any one request may take before the benchmark gives up


@contextmanager
def daemon(work: Path, users: list[str], cost: int) -> Iterator[tuple[str, int]]:
    """A running `serve` with basic auth; (host, port). Killed on the way out."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=cost)).decode()
    config = work / "web-config.yml"
    config.write_text("basic_auth_users:\n" + "".join(f"  {user}: '{hashed}'\n" for user in users))
    (work / "claude" / "projects").mkdir(parents=True)
    command = [
        sys.executable,
        "-m",
        "exporter",
        "serve",
        "--state-dir",
        str(work / "state"),
        "--claude-dir",
        str(work / "claude"),
        "--web.listen-address",
        "127.0.0.1:0",
        "--web.config.file",
        str(config),
        "--log.format",
        "json",
    ]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGE_EXPORTER_")}
    process = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**clean, "TZ": "UTC"},
        cwd=REPO,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            lines.put(raw.decode(errors="replace"))
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    try:
        url = wait_for(lines, r"listening on http://([^;\s]+);")[1]
        wait_for(lines, r"ready: ")
        host, _, port = url.rstrip("/").rpartition(":")
        yield host, int(port)
    finally:
        process.kill()
        process.wait(timeout=START_WAIT)


def wait_for(lines: queue.Queue[str], pattern: str) -> re.Match[str]:
    deadline = time.monotonic() + START_WAIT
    while True:
        line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        if not line:
            raise RuntimeError(f"serve exited before logging {pattern!r}")
        if found := re.search(pattern, line):
            return found


def get(connection: http.client.HTTPConnection, authorization: str) -> int:
    connection.request("GET", "/metrics", headers={"Authorization": authorization})
    answer = connection.getresponse()
    answer.read()
    return answer.status


def timed_gets(address: tuple[str, int], headers: Sequence[str], expected: int = 200) -> list[float]:
    """Seconds per GET, each on a new connection (so nothing is kept from one to the next)."""
    seconds = []
    for header in headers:
        connection = http.client.HTTPConnection(*address, timeout=HTTP_WAIT)
        started = time.perf_counter()
        status = get(connection, header)
        seconds.append(time.perf_counter() - started)
        connection.close()
        if status != expected:
            raise RuntimeError(f"a legit GET /metrics answered {status}")
    return seconds


@contextmanager
def flood(address: tuple[str, int], clients: int, header: Callable[[int], str]) -> Iterator[list[int]]:
    """`clients` threads sending wrong credentials on kept-alive connections until the block ends;
    yields the count of answers (401 expected), read after the block."""
    stop = threading.Event()
    answered = [0] * clients
    started = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        connection = http.client.HTTPConnection(*address, timeout=HTTP_WAIT)
        started.wait()
        n = 0
        while not stop.is_set():
            try:
                get(connection, header(i * 1_000_000 + n))
                answered[i] += 1
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection(*address, timeout=HTTP_WAIT)
            n += 1
        connection.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    started.wait()
    try:
        yield answered
    finally:
        stop.set()
        for thread in threads:
            thread.join(HTTP_WAIT)


def percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000

    return {"n": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": ordered[-1] * 1000}


def run(scrapes: int, clients: int, cost: int) -> dict[str, Any]:
    firsts = iter(f"first-{i}" for i in range(4 * scrapes))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp:
        users = ["prometheus", *(f"first-{i}" for i in range(4 * scrapes))]
        with daemon(Path(tmp), users, cost) as address:
            scraper = basic("prometheus", PASSWORD)
            timed_gets(address, [scraper])  # its good credentials are checked once, then remembered
            floods: dict[str, Callable[[int], str] | None] = {
                "quiet": None,
                "wrong passwords for the scraper's user": lambda n: basic("prometheus", f"guess {n}"),
                "wrong passwords for made-up users": lambda n: basic(f"nobody-{n}", "guess"),
            }
            for name, header in floods.items():
                phase: dict[str, Any] = {}
                with flood(address, clients if header else 0, header or (lambda n: "")) as answered:
                    started = time.perf_counter()
                    phase["scrape"] = percentiles(timed_gets(address, [scraper] * scrapes))
                    logins = [basic(next(firsts), PASSWORD) for _ in range(max(1, scrapes // 4))]
                    phase["first login"] = percentiles(timed_gets(address, logins))
                    elapsed = time.perf_counter() - started
                phase["flood answers/s"] = sum(answered) / elapsed
                results[name] = phase
    return results


def render(results: dict[str, Any], clients: int, cost: int) -> str:
    out = [f"bcrypt cost {cost}, {clients} flooding clients; {machine()}", ""]
    out.append(f"| {'phase':<40} | {'GET':<12} | {'n':>4} | {'p50 ms':>8} | {'p99 ms':>8} | {'max ms':>8} | flood/s |")
    out.append(f"|{'-' * 42}|{'-' * 14}|{'-' * 6}|{'-' * 10}|{'-' * 10}|{'-' * 10}|---------|")
    for name, phase in results.items():
        for kind in ("scrape", "first login"):
            p = phase[kind]
            out.append(
                f"| {name:<40} | {kind:<12} | {p['n']:>4} | {p['p50_ms']:>8.1f} | {p['p99_ms']:>8.1f} |"
                f" {p['max_ms']:>8.1f} | {phase['flood answers/s']:>7.0f} |"
            )
    return "\n".join(out)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--scrapes", type=int, default=200, help="timed scrapes a phase (first logins: a quarter)")
    parser.add_argument("--clients", type=int, default=32, help="flooding client threads")
    parser.add_argument("--cost", type=int, default=10, help="bcrypt cost of the configured hashes")
    parser.add_argument("--quick", action="store_true", help="50 scrapes a phase")
    parser.add_argument("--json", help="also write the figures as JSON to this file (- for stdout)")
    args = parser.parse_args(argv)
    scrapes = 50 if args.quick else args.scrapes
    results = run(scrapes, args.clients, args.cost)
    print(render(results, args.clients, args.cost))
    if args.json:
        data = orjson.dumps({"cost": args.cost, "clients": args.clients, "phases": results}, option=orjson.OPT_INDENT_2)
        sys.stdout.buffer.write(data + b"\n") if args.json == "-" else Path(args.json).write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
