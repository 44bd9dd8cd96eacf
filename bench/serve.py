"""Benchmark `claude-usage-exporter serve` as a real process: latency, scrape time, memory, idle CPU.

    python -m bench.serve                  # the reference figures: 1 GiB history, 50 appends, 60 s idle
    python -m bench.serve --quick          # a smoke check in a couple of minutes: 64 MiB, 20 appends, 30 s
    python -m bench.serve --backdate       # on a copy of the history with mtimes 30 days old (as a real one)
    python -m bench.serve --json out.json  # also write the results as JSON (`--json -`: to stdout)

Starts `python -m exporter serve` the way tests/daemon.py does (loopback, port 0, JSON log on stderr)
and measures, against the targets of bench/README.md:

1. append→visible: one new usage line appended to a transcript, then GET /metrics every ~5 ms until
   `claude_usage_exporter_ledger_requests` grows; with inotify (default) and with `--poll`.
2. /metrics scrape time on a corpus that exposes ≥ 10,000 series (text, OpenMetrics, OpenMetrics+gzip).
3. the daemon's own RSS after its first ingest of the history, and after a few scrapes.
4. the daemon's CPU over an idle window (nothing changes, nothing scrapes), inotify and `--poll`.

The history corpus is bench/run.py's, cached in bench/.cache/; it is never written to: appends go to a
second, private Claude dir given to the daemon as another `--claude-dir`. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import math
import os
import platform
import queue
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from bench.run import corpus, parse_size, read_everything
from tests.support.daemon import Serve
from tests.support.exposition import samples
from tests.support.lines import assistant_line, line, user_line

REPO = Path(__file__).resolve().parent.parent

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
LEDGER_REQUESTS = "claude_usage_exporter_ledger_requests"
READY_WAIT = 1800.0  # seconds a first ingest may take before the benchmark gives up
VISIBLE_WAIT = 30.0  # seconds an append may take to show before the benchmark gives up
SERIES_MODELS = ("claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Plan:
    size: int
    appends: int
    idle: float  # seconds per idle window
    scrapes: int
    projects: int  # of the series corpus
    settle: float = 3.0  # seconds after ready before an idle window: workers exit, pages settle


@dataclass(frozen=True)
class Check:
    name: str
    value: float
    limit: float
    unit: str
    at_least: bool = False  # the limit is a floor, not a ceiling

    @property
    def ok(self) -> bool:
        return self.value >= self.limit if self.at_least else self.value <= self.limit

    @property
    def target(self) -> str:
        return f"{'≥' if self.at_least else '≤'} {self.limit:,g}{self.unit}"


@dataclass
class Results:
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # everything measured, for the JSON


# ---------------------------------------------------------------------------------------------
# The daemon and what can be read of it


@contextmanager
def daemon(state: Path, roots: list[Path], *args: str) -> Iterator[tuple[Serve, float]]:
    """A running `serve` whose first ingest is done, and the seconds from start to "ready"."""
    started = time.perf_counter()
    d = Serve(state, roots, "--log.level", "info", *args)
    try:
        d.wait_for(r"ready: ", timeout=READY_WAIT)
        yield d, time.perf_counter() - started
    finally:
        d.stop()


class Scraper:
    """GET on one kept-alive connection, as Prometheus scrapes."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        assert parts.hostname and parts.port
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def get(self, path: str = "/metrics", headers: dict[str, str] | None = None) -> bytes:
        self.connection.request("GET", path, headers=headers or {})
        answer = self.connection.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"GET {path}: {answer.status}")
        return gzip.decompress(body) if answer.getheader("Content-Encoding") == "gzip" else body

    def close(self) -> None:
        self.connection.close()


def logged_ingests(d: Serve) -> list[float]:
    """The seconds of every "ingested …" log line not read yet: the daemon's own share of a latency."""
    found: list[float] = []
    while True:
        try:
            entry = d.lines.get_nowait()
        except queue.Empty:
            return found
        d.log.append(entry)
        if took := re.search(r"ingested \d+ new request\(s\) from \d+ byte\(s\) in ([0-9.]+) s", entry):
            found.append(float(took[1]))


def ledger_requests(exposition: bytes) -> float:
    return samples(exposition.decode(), LEDGER_REQUESTS)[""]


def status_kib(pid: int) -> dict[str, int]:
    """The memory lines of /proc/<pid>/status (VmRSS, VmHWM, RssAnon, RssFile …), in KiB."""
    found = {}
    for entry in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = entry.partition(":")
        if value.strip().endswith(" kB"):
            found[name] = int(value.split()[0])
    return found


def children(pid: int) -> list[int]:
    """The daemon's child processes (the forkserver and any parse workers left)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(p) for p in (task / "children").read_text().split()]
    return found


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of the process (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # field 3 (state) onwards; comm may hold spaces
    return int(fields[11]) + int(fields[12])


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """Nearest-rank p50, p95 and the max."""
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"p50": rank(0.50), "p95": rank(0.95), "max": ordered[-1], "n": len(ordered)}


def mib(kib: int) -> float:
    return kib / 1024


# ---------------------------------------------------------------------------------------------
# The measurements


def rss(d: Serve, scrapes: int) -> dict[str, Any]:
    """The daemon's own memory now, and after `scrapes` more scrapes; its children's beside it."""
    pid = d.process.pid
    after_ingest = status_kib(pid)
    scraper = Scraper(d.url)
    for _ in range(scrapes):
        body = scraper.get()
    scraper.close()
    after_scrapes = status_kib(pid)
    reported = samples(body.decode(), "process_resident_memory_bytes")[""]
    return {
        "ledger_requests": ledger_requests(body),
        "after_ingest_mib": round(mib(after_ingest["VmRSS"]), 1),
        "after_scrapes_mib": round(mib(after_scrapes["VmRSS"]), 1),
        "process_resident_memory_mib": round(reported / (1 << 20), 1),
        "peak_mib": round(mib(after_scrapes["VmHWM"]), 1),
        "anon_mib": round(mib(after_scrapes["RssAnon"]), 1),
        "file_mib": round(mib(after_scrapes["RssFile"]), 1),
        "children_mib": {str(c): round(mib(status_kib(c).get("VmRSS", 0)), 1) for c in children(pid)},
    }


def idle_cpu(d: Serve, seconds: float, settle: float) -> dict[str, float]:
    """% of one core the daemon uses over `seconds` when nothing changes and nothing scrapes; and
    its busiest second (a periodic rescan shows there)."""
    time.sleep(settle)
    pid = d.process.pid
    started = time.perf_counter()
    marks = [cpu_ticks(pid)]
    while (elapsed := time.perf_counter() - started) < seconds:
        time.sleep(min(1.0, seconds - elapsed))
        marks.append(cpu_ticks(pid))
    elapsed = time.perf_counter() - started
    per_second = [b - a for a, b in pairwise(marks)]
    busiest = max(range(len(per_second)), key=per_second.__getitem__)
    return {
        "percent": round(100 * (marks[-1] - marks[0]) / TICKS / elapsed, 3),
        "ticks": marks[-1] - marks[0],
        "seconds": round(elapsed, 1),
        "busiest_second": busiest,
        "busiest_second_ticks": per_second[busiest],
    }


def append_latency(d: Serve, transcript: Path, appends: int, rng: random.Random) -> dict[str, float]:
    """Seconds from the write of a new usage line to the first scrape whose ledger count shows it."""
    scraper = Scraper(d.url)
    seen = ledger_requests(scraper.get())
    waits = []
    for _ in range(appends):
        time.sleep(rng.uniform(0.2, 0.6))  # lands anywhere in a poll interval; no coalesced appends
        new = _usage_line()
        started = time.perf_counter()
        with transcript.open("ab") as f:
            f.write(new)
        while (now := ledger_requests(scraper.get())) <= seen:
            if time.perf_counter() - started > VISIBLE_WAIT:
                raise RuntimeError(f"an append was not visible after {VISIBLE_WAIT} s")
            time.sleep(0.005)
        waits.append(time.perf_counter() - started)
        seen = now
    scraper.close()
    return {k: round(v, 4) for k, v in percentiles(waits).items()}


def _usage_line() -> bytes:
    msg = f"msg_bench{uuid.uuid4().hex[:20]}"
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return assistant_line(msg, f"req_bench{msg[9:]}", ts)


def scrape_times(d: Serve, scrapes: int) -> dict[str, dict[str, float]]:
    """`scrapes` timed GET /metrics per format, milliseconds, request sent to body read."""
    variants = {
        "text": {},
        "openmetrics": {"Accept": OPENMETRICS},
        "openmetrics+gzip": {"Accept": OPENMETRICS, "Accept-Encoding": "gzip"},  # what Prometheus sends
    }
    found = {}
    for name, headers in variants.items():
        scraper = Scraper(d.url)
        times = []
        for _ in range(scrapes):
            started = time.perf_counter()
            scraper.get(headers=headers)
            times.append((time.perf_counter() - started) * 1000)
        scraper.close()
        found[name] = {k: round(v, 2) for k, v in percentiles(times).items()}
    return found


def count_series(exposition: bytes) -> dict[str, int]:
    """Samples in a text exposition: all of them, and those of usage metrics (`claude_usage_*`
    other than the exporter's own health)."""
    lines = [x for x in exposition.decode().splitlines() if x and not x.startswith("#")]
    usage = [x for x in lines if x.startswith("claude_usage_") and not x.startswith("claude_usage_exporter_")]
    return {"series": len(lines), "usage_series": len(usage), "bytes": len(exposition)}


# ---------------------------------------------------------------------------------------------
# Corpora


def live_root(work: Path) -> tuple[Path, Path]:
    """A private Claude dir with one session file to append to: (root, transcript)."""
    root = work / "live"
    transcript = root / "projects/-home-dev-notes-app/bench-live.jsonl"
    transcript.parent.mkdir(parents=True)
    transcript.write_bytes(user_line())
    return root, transcript


def backdated_copy(root: Path, work: Path, days: int = 30) -> Path:
    """A copy of a history with every mtime `days` back: sessions long over, as in a real history
    (a generated corpus was written just now, so all its files look recently active)."""
    copy = work / "history"
    shutil.copytree(root / "projects", copy / "projects")
    when = time.time() - days * 86_400
    for path in (copy / "projects").rglob("*"):
        os.utime(path, (when, when))
    return copy


def series_corpus(work: Path, projects: int) -> tuple[Path, Path]:
    """One session per project, one request per model in it: (root, config file capping projects above)."""
    root = work / "series"
    for p in range(projects):
        folder = root / f"projects/-home-dev-proj-{p:05d}"
        folder.mkdir(parents=True)
        session = str(uuid.UUID(int=p))
        lines = [
            line(
                id=f"msg_{p:05d}_{m}",
                requestId=f"req_{p:05d}_{m}",
                model=model,
                cwd=f"/home/dev/proj-{p:05d}",
                sessionId=session,
                uuid=f"u{p}-{m}",
            )
            for m, model in enumerate(SERIES_MODELS)
        ]
        (folder / f"{session}.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
    config = work / "series.yaml"
    config.write_text(f"labels:\n  max_projects: {max(5000, projects)}\n")
    return root, config


# ---------------------------------------------------------------------------------------------
# The phases


def history_phase(plan: Plan, cache: Path, work: Path, rng: random.Random, out: Results, backdate: bool) -> None:
    """RSS after the first ingest, then idle CPU and append latency with inotify; then the same
    ledger served with `--poll`: idle CPU and latency again."""
    log(f"preparing the {plan.size / (1 << 20):,.0f} MiB history under {cache} ...")
    c = corpus(plan.size, cache)
    history = backdated_copy(c.root, work) if backdate else c.root
    read_everything(history)
    out.figures["history"] = {"path": str(c.root), "backdated": backdate}
    out.figures["history"] |= {k: v for k, v in c.info.items() if k != "totals"}
    live, transcript = live_root(work)
    state = work / "state-history"
    for mode, args in (("inotify", ()), ("poll", ("--poll",))):
        log(f"serve ({mode}) on the history ...")
        with daemon(state, [history, live], *args) as (d, ready):
            figures: dict[str, Any] = {"ready_s": round(ready, 2)}
            if mode == "inotify":  # the first ingest: the ledger was empty
                figures["rss"] = memory = rss(d, scrapes=5)
                out.checks.append(Check("steady RSS after first ingest", memory["after_scrapes_mib"], 150, " MiB"))
            log(f"idle CPU ({mode}) over {plan.idle:.0f} s ...")
            figures["idle_cpu"] = cpu = idle_cpu(d, plan.idle, plan.settle)
            out.checks.append(Check(f"idle CPU, {mode}", cpu["percent"], 1.0, " %"))
            log(f"append→visible latency ({mode}), {plan.appends} appends ...")
            logged_ingests(d)
            figures["latency_s"] = wait = append_latency(d, transcript, plan.appends, rng)
            figures["logged_ingest_s"] = {k: round(v, 4) for k, v in percentiles(logged_ingests(d)).items()}
            limit = 1.0 if mode == "inotify" else 2.0
            out.checks.append(Check(f"append→visible p95, {mode}", wait["p95"], limit, " s"))
            figures["rss_at_end_mib"] = round(mib(status_kib(d.process.pid)["VmRSS"]), 1)
        out.figures[mode] = figures


def series_phase(plan: Plan, work: Path, out: Results) -> None:
    root, config = series_corpus(work, plan.projects)
    log(f"serve on {plan.projects} projects × {len(SERIES_MODELS)} models; {plan.scrapes} scrapes per format ...")
    with daemon(work / "state-series", [root], "--config", str(config)) as (d, _):
        scraper = Scraper(d.url)
        counted = count_series(scraper.get())
        scraper.close()
        times = scrape_times(d, plan.scrapes)
    out.figures["scrape"] = {**counted, "ms": times}
    out.checks.append(Check("series exposed", counted["series"], 10_000, "", at_least=True))
    for name, t in times.items():
        out.checks.append(Check(f"scrape p95, {name}", t["p95"], 50, " ms"))


# ---------------------------------------------------------------------------------------------
# Output


def render(out: Results) -> str:
    f = out.figures
    lines = [f"machine: {f['machine']}; code: {f['code']}"]
    if "history" in f:
        h = f["history"]
        lines.append(
            f"history: {h['bytes'] / (1 << 20):,.0f} MiB, {h['files']:,} files, {h['requests']:,} requests"
            + (" (a copy, mtimes 30 days back)" if h["backdated"] else " (mtimes: when it was generated)")
        )
        if "inotify" in f:
            lines.append(f"ledger after the first ingest: {f['inotify']['rss']['ledger_requests']:,.0f} requests")
    if "scrape" in f:
        s = f["scrape"]
        lines.append(
            f"series corpus: {s['series']:,} series exposed ({s['usage_series']:,} usage), "
            f"{s['bytes'] / 1024:,.0f} KiB of text"
        )
        for name, t in s["ms"].items():
            lines.append(f"  scrape {name:<17} p50 {t['p50']:6.2f} ms  p95 {t['p95']:6.2f} ms  max {t['max']:6.2f} ms")
    for mode in ("inotify", "poll"):
        if mode in f:
            m = f[mode]
            w, own, cpu = m["latency_s"], m["logged_ingest_s"], m["idle_cpu"]
            lines.append(
                f"{mode:<8} ready in {m['ready_s']:.1f} s; append→visible p50 {w['p50'] * 1000:.0f} ms, "
                f"p95 {w['p95'] * 1000:.0f} ms, max {w['max'] * 1000:.0f} ms (n={w['n']}; the daemon's "
                f"logged ingest p50 {own['p50'] * 1000:.0f} ms); idle CPU {cpu['percent']:.2f} % "
                f"({cpu['ticks']} ticks in {cpu['seconds']} s, {cpu['busiest_second_ticks']} in its busiest second); "
                f"RSS at end {m['rss_at_end_mib']:.0f} MiB"
            )
    if "inotify" in f:
        r = f["inotify"]["rss"]
        lines.append(
            f"RSS after first ingest {r['after_ingest_mib']:.0f} MiB, "
            f"after scrapes {r['after_scrapes_mib']:.0f} MiB "
            f"(process_resident_memory_bytes {r['process_resident_memory_mib']:.0f} MiB; "
            f"anon {r['anon_mib']:.0f}, file {r['file_mib']:.0f}); peak {r['peak_mib']:.0f} MiB; "
            f"children {r['children_mib']}"
        )
    lines += ["", f"{'measurement':<36}{'value':>14}{'target':>14}  result"]
    for c in out.checks:
        value = f"{c.value:,.0f}" if c.at_least else f"{c.value:.2f}{c.unit}"
        lines.append(f"{c.name:<36}{value:>14}{c.target:>14}  {'pass' if c.ok else 'FAIL'}")
    return "\n".join(lines)


def as_json(out: Results) -> bytes:
    checks = [{**asdict(c), "ok": c.ok} for c in out.checks]
    return orjson.dumps({"figures": out.figures, "checks": checks}, option=orjson.OPT_INDENT_2)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def machine() -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load {load}"


def code_version() -> str:
    """HEAD and a hash of exporter/ as it is on disk: the code under test may be uncommitted work."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True)
    digest = hashlib.sha256()
    for path in sorted((REPO / "exporter").rglob("*.py")):
        digest.update(path.read_bytes())
    return f"{head.stdout.strip() or '?'} + exporter/ {digest.hexdigest()[:12]}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="64 MiB, 20 appends, 30 s idle windows")
    parser.add_argument("--size", type=parse_size, help="history size (default 1GiB; 64MiB with --quick)")
    parser.add_argument("--appends", type=int, help="appends per watch mode (default 50; 20 with --quick)")
    parser.add_argument("--idle", type=float, help="seconds per idle window (default 60; 30 with --quick)")
    parser.add_argument("--scrapes", type=int, default=200, help="timed scrapes per format (default 200)")
    parser.add_argument("--projects", type=int, default=600, help="projects of the series corpus (default 600)")
    parser.add_argument("--backdate", action="store_true", help="serve a copy of the history, mtimes 30 days back")
    parser.add_argument("--only", choices=("history", "series"), help="run one phase only")
    parser.add_argument("--cache", type=Path, default=REPO / "bench/.cache", help="where corpora are kept")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE ('-': stdout)")
    args = parser.parse_args(argv)
    plan = Plan(
        size=args.size or parse_size("64MiB" if args.quick else "1GiB"),
        appends=args.appends or (20 if args.quick else 50),
        idle=args.idle or (30.0 if args.quick else 60.0),
        scrapes=args.scrapes,
        projects=args.projects,
    )
    out = Results(figures={"machine": machine(), "code": code_version(), "plan": asdict(plan)})
    args.cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        work = Path(tmp)
        if args.only != "history":
            series_phase(plan, work, out)
        if args.only != "series":
            history_phase(plan, args.cache, work, random.Random(0), out, args.backdate)
    table = render(out)
    print(table, file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json == "-":
        sys.stdout.buffer.write(as_json(out))
    elif args.json:
        Path(args.json).write_bytes(as_json(out))
    return 0 if all(c.ok for c in out.checks) else 1


if __name__ == "__main__":
    sys.exit(main())
