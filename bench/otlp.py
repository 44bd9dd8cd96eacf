"""OTLP ingest throughput over loopback: batched api_request exports, posted on kept-alive connections from
separate client processes to an OtlpServer whose sink only counts; JSON (chunked, as Claude Code sends it)
and protobuf, plain and gzip. Then decoding alone, without HTTP. Never part of the test suite.

    python bench/otlp.py                          # 100 records a body, 300 bodies an encoding, 1 connection
    python bench/otlp.py --bodies 1000 --connections 2
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import multiprocessing
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a script: make `exporter` and `tests` importable

from exporter.otlp import JSON, PROTOBUF, Logs, Point, decode_logs  # noqa: E402
from exporter.otlp_http import OtlpServer  # noqa: E402
from tests import otlpgen  # noqa: E402

AIM = 20_000  # events/s for receiving and decoding alone; the whole path's target is 5,000
DISTINCT = 10  # different bodies per encoding, posted in turn
CHUNK = 64 * 1024  # bytes per chunk of a chunked body


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


def client(port: int, case: Case, payloads: list[bytes], count: int, ready: Event, go: Event) -> None:
    """Posts `count` bodies on one kept-alive connection, as one Claude Code process would."""
    headers = {"Content-Type": case.content_type, **({"Content-Encoding": "gzip"} if case.gzip else {})}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    connection.connect()
    ready.set()
    go.wait()
    for i in range(count):
        payload = payloads[i % len(payloads)]
        body: bytes | Iterator[bytes] = _chunks(payload) if case.chunked else payload
        connection.request("POST", "/v1/logs", body=body, headers=headers)
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            raise SystemExit(f"HTTP {answer.status}")
    connection.close()


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
        if not sink.done.wait(timeout=600):
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=100, help="api_request records per body (default 100)")
    parser.add_argument("--bodies", type=int, default=300, help="bodies per connection and encoding (default 300)")
    parser.add_argument("--connections", type=int, default=1, help="client processes, one connection each")
    args = parser.parse_args(argv)
    print(
        f"OTLP ingest over loopback: {args.records} api_request records a body, {args.bodies} bodies on each of "
        f"{args.connections} kept-alive connection(s); sink only counts"
    )
    for case in CASES:
        result = run(case, args.records, args.bodies, args.connections)
        verdict = "meets" if result.rate >= AIM else "MISSES"
        print(
            f"  {case.name:<20} {result.events:>8,} events in {result.seconds:6.2f} s: {result.rate:>8,.0f} events/s "
            f"({verdict} the {AIM:,}/s aim; server CPU {result.cpu_seconds:.2f} s)"
        )
    rounds = max(1, args.bodies // 3)
    for content_type in (JSON, PROTOBUF):
        rate = decode_only(content_type, args.records, rounds)
        print(f"  decode only, {content_type:<22} {rate:>8,.0f} events/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
