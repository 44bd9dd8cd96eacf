"""Benchmark publishing under cardinality pressure: one legit event's publish on a hostile ledger.

    python -m bench.cardinality                    # 100,000 distinct hostile values of each capped label
    python -m bench.cardinality --distinct 10000   # a quick check
    python -m bench.cardinality --json out.json    # also write the figures as JSON (`--json -`: to stdout)

What `serve` does after each commit, in process: the ledger's counters read into a snapshot
(`read_snapshot`) and handed to the exposition (`Exposition.update`), with team mode's label policy
(project, model, tool and user labels capped). Timed for one legit event at a time, first on a clean
ledger, then after `--distinct` hostile requests (each a new model, project, user and tool, committed
in batches of `--batch` like OTLP exports) flooded it. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from exporter.events import Request, Tokens
from exporter.ledger.store import Ledger
from exporter.metrics.exposition import Exposition, Health, read_snapshot
from exporter.metrics.points import LabelPolicy

REPO = Path(__file__).resolve().parent.parent

POLICY = LabelPolicy(user=True)  # the default caps, with team mode's user label
BUILD = {"version": "bench", "pricing_source": "bench", "pricing_version": "0"}
SOURCES = ("transcripts", "otlp")


def request(key: str, model: str, project: str, user: str, tool: str) -> Request:
    tokens = Tokens(input=10, output=100)
    return Request(
        key,
        f"req_{key}",
        1_760_000_000_000,
        f"session-{key}",
        project,
        model,
        "main",
        tokens,
        0,
        frozenset({tool}),
        "standard",
        "otlp",
        False,
        None,
        user,
    )


def enrich(r: Request) -> Request:
    return r._replace(interaction="main", category="coding", cost=1000, uncached_cost=2000)


def publish(ledger: Ledger, exposition: Exposition, reads: list[float] | None = None) -> float:
    """Seconds of the whole publish; the ledger read alone (`read_snapshot`) appended to `reads`."""
    started = time.perf_counter()
    snapshot = read_snapshot(ledger, POLICY, BUILD, SOURCES)
    read = time.perf_counter()
    exposition.update(snapshot)
    if reads is not None:
        reads.append(read - started)
    return time.perf_counter() - started


def legit_publishes(ledger: Ledger, exposition: Exposition, events: int, tag: str) -> dict[str, Any]:
    seconds: list[float] = []
    reads: list[float] = []
    for i in range(events):
        ledger.commit([request(f"legit-{tag}-{i}", "claude-sonnet-4-5", "acme", "ada", "Read")], enrich)
        seconds.append(publish(ledger, exposition, reads))
    return {"publish": percentiles(seconds), "read": percentiles(reads), "series": series_count(exposition)}


def percentiles(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] * 1000

    return {"n": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": ordered[-1] * 1000}


def vm_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def series_count(exposition: Exposition) -> int:
    return sum(1 for line in exposition.render("text/plain", process=False).splitlines() if not line.startswith(b"#"))


def run(distinct: int, batch: int, events: int) -> dict[str, Any]:
    out: dict[str, Any] = {"distinct": distinct, "batch": batch}
    with tempfile.TemporaryDirectory(prefix="bench-cardinality-") as tmp:
        ledger = Ledger(Path(tmp) / "state")
        exposition = Exposition(Health(), dict(BUILD))
        try:
            publish(ledger, exposition)
            out["clean"] = legit_publishes(ledger, exposition, events, "clean")
            started, flood_publishes = time.perf_counter(), []
            for start in range(0, distinct, batch):
                ledger.commit(
                    [
                        request(f"hostile-{i}", f"model-{i}", f"project-{i}", f"user-{i}", f"tool-{i}")
                        for i in range(start, min(distinct, start + batch))
                    ],
                    enrich,
                )
                if start + batch >= distinct or (start // batch) % 10 == 0:  # every tenth batch: keep it short
                    flood_publishes.append(publish(ledger, exposition))
            out["flood_seconds"] = time.perf_counter() - started
            out["flood_publish"] = percentiles(flood_publishes)
            out["hostile"] = legit_publishes(ledger, exposition, events, "hostile")
            out["rss_mib"] = vm_rss_mib()
            out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        finally:
            exposition.close()
            ledger.close()
    return out


def render(out: dict[str, Any]) -> str:
    lines = [f"{out['distinct']:,} distinct hostile values, batches of {out['batch']}; {machine()}", ""]
    lines.append("| publish of | series | n | p50 ms | p99 ms | max ms | of which the ledger read: p50 ms | p99 ms |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for key, name in (("clean", "one legit event, clean ledger"), ("hostile", "one legit event, after the flood")):
        p, r = out[key]["publish"], out[key]["read"]
        lines.append(
            f"| {name} | {out[key]['series']:,} | {p['n']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} |"
            f" {p['max_ms']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
        )
    p = out["flood_publish"]
    lines.append(
        f"| a hostile batch (every tenth) | | {p['n']} | {p['p50_ms']:.1f} | {p['p99_ms']:.1f} |"
        f" {p['max_ms']:.1f} | | |"
    )
    lines.append("")
    lines.append(
        f"flood committed and published in {out['flood_seconds']:.1f} s;"
        f" RSS {out['rss_mib']:.0f} MiB (peak {out['peak_rss_mib']:.0f} MiB)"
    )
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--distinct", type=int, default=100_000, help="hostile requests, each with new label values")
    parser.add_argument("--batch", type=int, default=1000, help="hostile requests per commit")
    parser.add_argument("--events", type=int, default=20, help="legit events timed, before and after the flood")
    parser.add_argument("--json", help="also write the figures as JSON to this file (- for stdout)")
    args = parser.parse_args(argv)
    out = run(args.distinct, args.batch, args.events)
    print(render(out))
    if args.json:
        data = orjson.dumps(out, option=orjson.OPT_INDENT_2)
        sys.stdout.buffer.write(data + b"\n") if args.json == "-" else Path(args.json).write_bytes(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
