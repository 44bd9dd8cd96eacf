"""OTLP ingest throughput over loopback, in two parts. Never part of the test suite.

1. Receiver only: batched api_request exports, posted on kept-alive connections from separate client
   processes to an OtlpServer whose sink only counts; JSON (chunked, as Claude Code sends it) and
   protobuf, plain and gzip. Then decoding alone, without HTTP.
2. The whole path: a real `python -m exporter serve` (central mode: transcripts off, so events are
   stored at once; a fresh state dir) receives the same exports, every request id new; a POST is
   answered 200 only once the daemon's loop committed its batch to the ledger and published the metrics.
   Batches of 100 and 512 records, 1 and 4 client connections, ≥ 50,000 events a case; the ledger must
   hold exactly the events sent. Target: 5,000 events/s; the exit status is 1 when a case misses it.

    python -m bench.otlp                          # both parts
    python -m bench.otlp --quick                  # a smoke run: ~5,000 events a case, fewer bodies
    python -m bench.otlp --only whole --events 100000 --batch 512 --clients 4
    python -m bench.otlp --only receiver --bodies 1000 --connections 2
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import math
import multiprocessing
import os
import queue
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import NamedTuple

from exporter.sources.otlp import JSON, PROTOBUF, Logs, Point, decode_logs
from exporter.web.otlp import OtlpServer
from tests.support import otlpgen
from tests.support.daemon import Serve, serving
from tests.support.exposition import samples

REPO = Path(__file__).resolve().parent.parent

TARGET = 5_000  # events/s for the whole path: received, committed to the ledger, published
DISTINCT = 10  # different bodies per encoding, posted in turn (receiver only)
CHUNK = 64 * 1024  # bytes per chunk of a chunked body
CENTRAL = "sources: {transcripts: {enabled: false}}\n"
WARM_UP = 10  # records of the one body posted before timing (the first batch loads the classifier)
WARM_UP_FIRST = 10**12  # its request ids, apart from the timed ones
SPACING_MS = 150  # between the timed events' times, as otlpgen spaces the records of a body
WAIT = 600.0  # seconds a case may take before the benchmark gives up
TICKS = os.sysconf("SC_CLK_TCK")


class Case(NamedTuple):
    name: str
    content_type: str
    gzip: bool
    chunked: bool


CASES = (
    Case("json, chunked", JSON, False, True),
    Case("json, chunked, gzip", JSON, True, True),
    Case("protobuf", PROTOBUF, False, False),
    Case("protobuf, gzip", PROTOBUF, True, False),
)
WHOLE = (CASES[0], CASES[2])  # as Claude Code sends them: http/json (chunked) and http/protobuf, no gzip


class Result(NamedTuple):
    events: int
    seconds: float
    cpu_seconds: float  # the server process's (its threads'), clients excluded

    @property
    def rate(self) -> float:
        return self.events / self.seconds


class Counter:
    """The sink: counts usage events and signals when `target` have arrived."""

    def __init__(self, target: int) -> None:
        self.target, self.events = target, 0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, kind: str, decoded: Logs | list[Point]) -> None:
        if isinstance(decoded, Logs):
            with self._lock:
                self.events += len(decoded.requests)
                if self.events >= self.target:
                    self.done.set()


def bodies(case: Case, records: int) -> list[bytes]:
    encode = otlpgen.to_json if case.content_type == JSON else otlpgen.to_protobuf
    made = [encode(otlpgen.api_request_logs(records, first=i * records)) for i in range(DISTINCT)]
    return [gzip.compress(b, compresslevel=6) for b in made] if case.gzip else made


# The end of a client's posting: when it got its last answer (perf_counter, one clock for all processes
# on Linux) and each POST's latency in seconds; or what went wrong.
Report = tuple[float, list[float]] | str


def client(
    port: int,
    case: Case,
    payloads: list[bytes],
    count: int,
    ready: Event,
    go: Event,
    report: Queue[Report] | None = None,
) -> None:
    """Posts `count` bodies on one kept-alive connection, as one Claude Code process would."""
    headers = {"Content-Type": case.content_type, **({"Content-Encoding": "gzip"} if case.gzip else {})}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.connect()
    ready.set()
    go.wait()
    latencies = []
    try:
        for i in range(count):
            payload = payloads[i % len(payloads)]
            body: bytes | Iterator[bytes] = _chunks(payload) if case.chunked else payload
            sent = time.perf_counter()
            connection.request("POST", "/v1/logs", body=body, headers=headers)
            answer = connection.getresponse()
            text = answer.read()
            latencies.append(time.perf_counter() - sent)
            if answer.status != 200:
                raise RuntimeError(f"HTTP {answer.status} for body {i}: {text[:200]!r}")
    except Exception as err:
        if report is None:
            raise SystemExit(str(err)) from None
        report.put(f"{type(err).__name__}: {err}")
        return
    finally:
        connection.close()
    if report is not None:
        report.put((time.perf_counter(), latencies))


def _chunks(body: bytes) -> Iterator[bytes]:
    return iter([body[i : i + CHUNK] for i in range(0, len(body), CHUNK)])


def run(case: Case, records: int, count: int, connections: int) -> Result:
    payloads = bodies(case, records)
    sink = Counter(records * count * connections)
    server = OtlpServer(("127.0.0.1", 0), sink)
    server.start()
    spawn = multiprocessing.get_context("spawn")  # the clients get their own interpreter (and GIL)
    go = spawn.Event()
    readies = [spawn.Event() for _ in range(connections)]
    clients = [
        spawn.Process(target=client, args=(server.server_address[1], case, payloads, count, ready, go))
        for ready in readies
    ]
    try:
        for process in clients:
            process.start()
        for ready in readies:
            ready.wait()
        started, cpu = time.perf_counter(), time.process_time()
        go.set()
        if not sink.done.wait(timeout=WAIT):
            raise SystemExit(f"{case.name}: only {sink.events} events arrived")
        result = Result(sink.events, time.perf_counter() - started, time.process_time() - cpu)
    finally:
        for process in clients:
            process.join(timeout=60)
        server.shutdown()
        server.server_close()
    return result


def decode_only(content_type: str, records: int, rounds: int) -> float:
    """Events per second of `decode_logs` alone, in this process."""
    encode = otlpgen.to_json if content_type == JSON else otlpgen.to_protobuf
    payload = encode(otlpgen.api_request_logs(records))
    started = time.perf_counter()
    for _ in range(rounds):
        decode_logs(payload, content_type)
    return records * rounds / (time.perf_counter() - started)


# --- the whole path: a real serve -----------------------------------------------------------------


class Whole(NamedTuple):
    case: Case
    records: int  # a body
    connections: int
    events: int  # sent while timed, the warm-up body excluded
    seconds: float  # from go to the last 200
    latencies: list[float]  # seconds, every POST of every connection
    daemon_cpu: float  # seconds of the serve process (all its threads) while timed
    exposed: float  # sum of claude_usage_requests_total on /metrics after the run
    duplicates: float  # otlp lines counted as duplicates
    stored: int  # rows of the ledger's requests table, read after the daemon stopped

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def expected(self) -> int:
        return self.events + WARM_UP

    @property
    def exact(self) -> bool:
        return self.exposed == self.expected == self.stored and self.duplicates == 0


def whole_bodies(case: Case, records: int, count: int) -> list[bytes]:
    """`count` bodies of `records` api_request events each, every request id new; their times 150 ms apart
    and ending now, as a central exporter receives them (today's and this month's sums cover them)."""
    encode = otlpgen.to_json if case.content_type == JSON else otlpgen.to_protobuf
    start = int(time.time() * 1000) - SPACING_MS * records * count
    return [
        encode(otlpgen.api_request_logs(records, first=i * records, start_ms=start + SPACING_MS * i * records))
        for i in range(count)
    ]


def cpu_seconds(pid: int) -> float:
    """utime + stime of every thread of the process (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def otlp_port(daemon: Serve) -> int:
    for line in daemon.log:
        if "receiving OTLP on " in line:
            return int(line.split("receiving OTLP on ")[1].split("/v1/logs")[0].rpartition(":")[2])
    return int(daemon.wait_for(r"receiving OTLP on http://[^ ]+:(\d+)/v1/logs")[1])


def post_once(port: int, case: Case, body: bytes) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("POST", "/v1/logs", body, {"Content-Type": case.content_type})
        answer = connection.getresponse()
        if answer.status != 200:
            raise SystemExit(f"warm-up: HTTP {answer.status}: {answer.read()[:200]!r}")
        answer.read()
    finally:
        connection.close()


def whole(case: Case, payloads: list[bytes], records: int, connections: int) -> Whole:
    """Posts `payloads`, shared out in turn among `connections` client processes, to a fresh serve."""
    shares = [payloads[c::connections] for c in range(connections)]
    warm = otlpgen.api_request_logs(WARM_UP, first=WARM_UP_FIRST, start_ms=int(time.time() * 1000))
    warm_body = otlpgen.to_json(warm) if case.content_type == JSON else otlpgen.to_protobuf(warm)
    with tempfile.TemporaryDirectory(prefix="bench-otlp-") as tmp:
        config, state = Path(tmp) / "config.yaml", Path(tmp) / "state"
        config.write_text(CENTRAL)
        with serving(state, [], "--config", str(config), "--otlp.listen", "127.0.0.1:0") as d:
            port = otlp_port(d)
            post_once(port, case, warm_body)
            spawn = multiprocessing.get_context("spawn")  # the clients get their own interpreter (and GIL)
            go = spawn.Event()
            report: Queue[Report] = spawn.Queue()
            readies = [spawn.Event() for _ in shares]
            clients = [
                spawn.Process(target=client, args=(port, case, share, len(share), ready, go, report))
                for share, ready in zip(shares, readies, strict=True)
            ]
            try:
                for process in clients:
                    process.start()
                for ready in readies:
                    if not ready.wait(timeout=WAIT):
                        raise SystemExit(f"{case.name}: a client did not start")
                cpu = cpu_seconds(d.process.pid)
                started = time.perf_counter()
                go.set()
                ends, latencies = [], []
                for _ in clients:
                    got = _report(report, clients)
                    if isinstance(got, str):
                        raise SystemExit(f"{case.name}, {records} records, {connections} connection(s): {got}")
                    ends.append(got[0])
                    latencies += got[1]
                seconds = max(ends) - started
                cpu = cpu_seconds(d.process.pid) - cpu
            finally:
                for process in clients:
                    process.join(timeout=60)
                    if process.is_alive():
                        process.kill()
            text = d.metrics()
            exposed = sum(samples(text, "claude_usage_requests_total").values())
            duplicates = samples(text, "claude_usage_exporter_lines_total").get(
                '{outcome="duplicate",source="otlp"}', 0.0
            )
            if d.stop() != 0:
                raise SystemExit(f"serve exited with an error; log:\n{''.join(d.log)}")
        stored = _stored(state)
    events = sum(len(share) for share in shares) * records
    return Whole(case, records, connections, events, seconds, latencies, cpu, exposed, duplicates, stored)


def _report(report: Queue[Report], clients: Sequence[multiprocessing.process.BaseProcess]) -> Report:
    """The next client's report; a client that died without one fails the case."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            return report.get(timeout=1.0)
        except queue.Empty:
            dead = [p.exitcode for p in clients if p.exitcode not in (None, 0)]
            if dead:
                return f"a client exited with {dead[0]}"
    return f"no answer within {WAIT:g} s"


def _stored(state: Path) -> int:
    """Rows in the ledger's requests table, read-only."""
    db = sqlite3.connect(f"file:{state / 'ledger.sqlite3'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM requests").fetchone()[0])
    finally:
        db.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def whole_path(batches: Sequence[int], clients: Sequence[int], events: int) -> list[Whole]:
    # One set of bodies per encoding and batch size, shared by every connection count (each case has
    # a fresh state dir): as many bodies as reach `events` and divide among every connection count.
    step = math.lcm(*clients)
    results = []
    print(
        f"\nWhole path: `serve` in central mode (fresh state dir each case), api_request events over loopback "
        f"until committed; ≥ {events:,} events a case, every request id new; target {TARGET:,} events/s"
    )
    print(
        f"  {'encoding':<14} {'batch':>5} {'conns':>5} {'events':>7} {'seconds':>7} {'events/s':>9} "
        f"{'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'serve CPU':>9}  {'ledger: /metrics, sqlite, dup':<30} verdict"
    )
    for case in WHOLE:
        for records in batches:
            count = math.ceil(events / (records * step)) * step
            made = time.perf_counter()
            payloads = whole_bodies(case, records, count)
            generated = time.perf_counter() - made
            size = sum(map(len, payloads)) / len(payloads)
            print(f"  ({count} bodies of {records} records, {size / 1024:,.0f} KiB each, made in {generated:.1f} s)")
            for connections in clients:
                r = whole(case, payloads, records, connections)
                results.append(r)
                ms = [x * 1000 for x in r.latencies]
                ledger = f"{r.exposed:,.0f}, {r.stored:,}, {r.duplicates:,.0f}" + (
                    " = sent" if r.exact else f" ≠ {r.expected:,} sent"
                )
                verdict = "meets" if r.rate >= TARGET and r.exact else "MISSES" if r.exact else "WRONG COUNT"
                print(
                    f"  {case.name:<14} {records:>5} {connections:>5} {r.events:>7,} {r.seconds:>7.2f} "
                    f"{r.rate:>9,.0f} {percentile(ms, 50):>7.0f} {percentile(ms, 95):>7.0f} {max(ms):>7.0f} "
                    f"{r.daemon_cpu / r.seconds:>8.0%}  {ledger:<30} {verdict}",
                    flush=True,
                )
    print(
        f"  (ledger: claude_usage_requests_total on /metrics, rows in the ledger after the daemon stopped, "
        f"otlp lines counted duplicate; each must be the events sent plus the {WARM_UP}-record warm-up body; "
        f"serve CPU: % of one core, all threads)"
    )
    return results


def receiver_only(records: int, count: int, connections: int) -> None:
    print(
        f"Receiver only, over loopback: {records} api_request records a body, {count} bodies on each of "
        f"{connections} kept-alive connection(s); sink only counts"
    )
    for case in CASES:
        result = run(case, records, count, connections)
        print(
            f"  {case.name:<20} {result.events:>8,} events in {result.seconds:6.2f} s: {result.rate:>8,.0f} events/s "
            f"(server CPU {result.cpu_seconds:.2f} s)",
            flush=True,
        )
    rounds = max(1, count // 3)
    for content_type in (JSON, PROTOBUF):
        rate = decode_only(content_type, records, rounds)
        print(f"  decode only, {content_type:<22} {rate:>8,.0f} events/s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", choices=("receiver", "whole"), help="run one part only")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 30 bodies, ~5,000 events a case")
    receiver = parser.add_argument_group("receiver only")
    receiver.add_argument("--records", type=int, default=100, help="api_request records per body (default 100)")
    receiver.add_argument("--bodies", type=int, help="bodies per connection and encoding (default 300)")
    receiver.add_argument("--connections", type=int, default=1, help="client processes, one connection each")
    path = parser.add_argument_group("whole path")
    path.add_argument("--batch", type=int, nargs="+", default=[100, 512], help="records per body (default 100 512)")
    path.add_argument("--clients", type=int, nargs="+", default=[1, 4], help="connections (default 1 4)")
    path.add_argument("--events", type=int, help="events per case, at least (default 50,000)")
    args = parser.parse_args(argv)
    if args.only != "whole":
        receiver_only(args.records, args.bodies or (30 if args.quick else 300), args.connections)
    if args.only == "receiver":
        return 0
    results = whole_path(args.batch, args.clients, args.events or (5_000 if args.quick else 50_000))
    failed = [r for r in results if r.rate < TARGET or not r.exact]
    if failed:
        print(f"  {len(failed)} of {len(results)} case(s) below {TARGET:,} events/s or with a wrong ledger count")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
