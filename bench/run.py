"""Benchmark `claude-usage-exporter report daily --json` against ccusage 20.0.24 on one generated corpus.

    python -m bench.run --size 1GiB            # see bench/README.md for what each figure means

Generates (or reuses, from bench/.cache/) a corpus with tests/support/corpus.py, then measures cold (empty
ledger), warm (nothing new) and incremental (+~1 MiB) reports, ccusage on the same files, and checks
the targets. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.measure import CommandFailed, Sample, Stats, launcher_floor_mib, measure, summarize
from tests.support.corpus import append_activity, generate

REPO = Path(__file__).resolve().parent.parent

CCUSAGE_VERSION = "20.0.24"
START, DAYS, SEED = date(2026, 9, 1), 60, 0
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}
FIELDS = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens")
Phases = dict[str, dict[str, Stats]]  # phase -> tool -> stats


def parse_size(text: str) -> int:
    found = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", text)
    if not found or found.group(2).upper() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 50MiB or 1GiB)")
    return int(float(found.group(1)) * _UNITS[found.group(2).upper()])


# ---------------------------------------------------------------------------------------------
# The corpus, cached


@dataclass(frozen=True)
class Corpus:
    root: Path
    info: dict[str, Any]  # bytes, files, requests, totals (truth), generation seconds


def corpus(size: int, cache: Path) -> Corpus:
    """The corpus for `size`, generated once per generator version (a hash of tests/support/corpus.py)."""
    version = hashlib.sha256((REPO / "tests/support/corpus.py").read_bytes()).hexdigest()[:12]
    root = cache / f"corpus-{size}-seed{SEED}-{version}"
    if not (root / "truth.json").is_file():
        for stale in cache.glob(f"corpus-{size}-seed{SEED}-*"):  # older generator versions: GBs each
            shutil.rmtree(stale)
        building = Path(tempfile.mkdtemp(prefix="building-", dir=cache))
        try:
            info = _build(building, size, version)
        except BaseException:
            shutil.rmtree(building)
            raise
        (building / "truth.json").write_bytes(orjson.dumps(info))
        building.rename(root)  # only a complete corpus ever gets the final name
    return Corpus(root, orjson.loads((root / "truth.json").read_bytes()))


def _build(root: Path, size: int, version: str) -> dict[str, Any]:
    started = time.perf_counter()
    truth = generate(root, seed=SEED, days=DAYS, start=START, target_bytes=size)
    return {
        "bytes": truth.bytes,
        "files": sum(truth.files.values()),
        "requests": len(truth.requests),
        "totals": dict(zip(FIELDS, _fields(truth.totals()), strict=True)),
        "generated_in_s": round(time.perf_counter() - started, 2),
        "generator": version,
    }


def _fields(tokens: tuple[int, int, int, int, int]) -> tuple[int, int, int, int]:
    inp, out, read, w5, w1h = tokens
    return inp, out, w5 + w1h, read


def read_everything(root: Path) -> None:
    # Both tools are measured with the corpus in the page cache: the first one must not pay for disk.
    for path in root.rglob("*.jsonl"):
        with path.open("rb") as f:
            while f.read(1 << 24):
                pass


# ---------------------------------------------------------------------------------------------
# The tools


@dataclass(frozen=True)
class Tool:
    name: str
    command: Callable[[Path, Path], list[str]]  # (corpus root, state dir) -> argv
    env: Callable[[Path, Path], dict[str, str]]  # (corpus root, home) -> environment
    version: list[str]  # argv of `--version`: the start-up cost alone


def ours(executable: str | None) -> Tool:
    found = executable or str(Path(sys.executable).parent / "claude-usage-exporter")
    prefix = [found] if Path(found).is_file() else [sys.executable, "-m", "exporter"]

    def command(root: Path, state: Path) -> list[str]:
        flags = ["--json", "--claude-dir", str(root), "--state-dir", str(state), "--timezone", "UTC"]
        return [*prefix, "report", "daily", *flags]

    return Tool("ours", command, lambda root, home: _env(home), [*prefix, "--version"])


def ccusage_tools(explicit: str | None) -> list[Tool]:
    """ccusage as installed (node shim + native binary) and, if found, the native binary alone."""
    candidates = [
        explicit,
        os.environ.get("CCUSAGE_BIN"),
        str(REPO / "tests/node/node_modules/.bin/ccusage"),
        shutil.which("ccusage"),
    ]
    found = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
    if found is None:
        sys.exit("ccusage not found: npm install --prefix tests/node, or pass --ccusage / set CCUSAGE_BIN")
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout.split()[-1]
    if version != CCUSAGE_VERSION:
        print(f"warning: {found} is ccusage {version}, not {CCUSAGE_VERSION}", file=sys.stderr)
    tools = [_ccusage("ccusage", found)]
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())
    native = found.parent.parent / f"@ccusage/ccusage-{sys.platform}-{arch}/bin/ccusage"  # npm's layout
    if native.is_file():
        tools.append(_ccusage("ccusage-native", native))
    return tools


def _ccusage(name: str, binary: Path) -> Tool:
    return Tool(
        name,
        lambda root, state: [str(binary), "claude", "daily", "--json", "--offline", "-z", "UTC"],
        lambda root, home: {**_env(home), "CLAUDE_CONFIG_DIR": str(root)},
        [str(binary), "--version"],
    )


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"}
    return {**env, "HOME": str(home)}  # never the real ~/.claude


# ---------------------------------------------------------------------------------------------
# The phases


@dataclass
class Bench:
    corpus: Corpus
    work: Path
    repeat: int
    increment: int
    reports: dict[str, Any]  # tool -> its last report

    def run(self, tool: Tool, state: Path, label: str) -> Sample:
        out = self.work / f"{label}-{tool.name}.json"
        sample = measure(tool.command(self.corpus.root, state), env=tool.env(self.corpus.root, self.work), stdout=out)
        self.reports[tool.name] = orjson.loads(out.read_bytes())
        return sample

    def phase(self, tools: Sequence[Tool], state: Path, label: str, prepare: Callable[[], None]) -> dict[str, Stats]:
        """`repeat` rounds; each round prepares the state, then runs every tool once (interleaved, so
        that background load on the machine hits every tool alike)."""
        samples: dict[str, list[Sample]] = {t.name: [] for t in tools}
        for _ in range(self.repeat):
            prepare()
            for tool in tools:
                samples[tool.name].append(self.run(tool, state, label))
        return {name: summarize(s) for name, s in samples.items()}

    def startup(self, tools: Sequence[Tool]) -> dict[str, Stats]:
        """`--version`: what every run pays before reading anything (interpreter, imports, node)."""
        samples: dict[str, list[Sample]] = {t.name: [] for t in tools}
        for _ in range(self.repeat):
            for tool in tools:
                out = self.work / f"version-{tool.name}.txt"
                samples[tool.name].append(measure(tool.version, env=_env(self.work), stdout=out))
        return {name: summarize(s) for name, s in samples.items()}

    def cold(self, tools: Sequence[Tool]) -> tuple[dict[str, Stats], Path]:
        state = self.work / "cold"
        stats = self.phase(tools, state, "cold", lambda: shutil.rmtree(state, ignore_errors=True))
        return stats, state  # a complete ledger, from the last round

    def warm(self, tools: Sequence[Tool], state: Path) -> dict[str, Stats]:
        return self.phase(tools, state, "warm", lambda: None)

    def incremental(self, tools: Sequence[Tool], warm_state: Path) -> dict[str, Stats]:
        """Every round: the same warm ledger, and the corpus plus the same appended activity."""
        at = datetime.combine(START + timedelta(days=DAYS + 5), datetime.min.time(), tzinfo=UTC)
        state = self.work / "incremental"
        undo: list[Callable[[], None]] = []

        def prepare() -> None:
            while undo:
                undo.pop()()
            shutil.rmtree(state, ignore_errors=True)
            shutil.copytree(warm_state, state)
            undo.append(append_activity(self.corpus.root, seed=SEED, target_bytes=self.increment, at=at).undo)

        try:
            return self.phase(tools, state, "incremental", prepare)
        finally:
            while undo:
                undo.pop()()


def run_all(bench: Bench, tools: list[Tool]) -> tuple[Phases, dict[str, bool]]:
    """ccusage keeps no state: in every phase it reads everything, which is what ours is compared with."""
    cold, ledger = bench.cold(tools)
    checks = check_against_truth(bench)
    warm = bench.warm(tools, ledger)
    incremental = bench.incremental(tools, ledger)
    return {"startup": bench.startup(tools), "cold": cold, "warm": warm, "incremental": incremental}, checks


def check_against_truth(bench: Bench) -> dict[str, bool]:
    """Speed means nothing if the numbers are wrong: each tool's cold totals against the generator's."""
    expected = bench.corpus.info["totals"]
    return {name: {f: report["totals"][f] for f in FIELDS} == expected for name, report in bench.reports.items()}


# ---------------------------------------------------------------------------------------------
# Targets and output


@dataclass(frozen=True)
class Target:
    name: str
    value: float
    limit: float
    unit: str

    @property
    def ok(self) -> bool:
        return self.value <= self.limit


def ratio(by_tool: dict[str, Stats]) -> float:
    """Ours over the fastest ccusage of the same phase (the native binary when found): the stricter."""
    return by_tool["ours"].median / min(s.median for name, s in by_tool.items() if name != "ours")


def targets(phases: Phases) -> list[Target]:
    cold, warm, incr = phases["cold"], phases["warm"], phases["incremental"]
    return [
        Target("cold ≤ 1.5× ccusage", ratio(cold), 1.5, "×"),
        Target("cold ≤ 1.0× ccusage (aim)", ratio(cold), 1.0, "×"),
        Target("cold peak RSS ≤ 200 MiB", cold["ours"].peak_rss_mib, 200, " MiB"),
        Target("warm ≤ 0.1× ccusage", ratio(warm), 0.1, "×"),
        Target("incremental ≤ warm + 0.15 s", incr["ours"].median, warm["ours"].median + 0.15, " s"),
    ]


def render(c: Corpus, phases: Phases, checks: dict[str, bool], size_label: str) -> str:
    info = c.info
    lines = [
        f"corpus {c.root} ({size_label}): {info['bytes'] / (1 << 20):,.0f} MiB, {info['files']:,} files, "
        f"{info['requests']:,} requests; generated in {info['generated_in_s']} s",
        "",
    ]
    lines.append(f"{'phase':<13}{'tool':<16}{'median':>9}{'min':>9}{'max':>9}{'peak RSS':>12}{'÷ ccusage':>11}")
    for phase, by_tool in phases.items():
        for name, s in by_tool.items():
            shown = f"{ratio(by_tool):.2f}×" if name == "ours" and phase != "startup" else ""
            lines.append(
                f"{phase:<13}{name:<16}{s.median:>8.2f}s{s.min:>8.2f}s{s.max:>8.2f}s"
                f"{s.peak_rss_mib:>8.0f} MiB{shown:>11}"
            )
    lines += [
        "",
        "÷ ccusage: our median / the fastest ccusage median of the same phase",
        f"peak RSS: the largest over the runs; a command doing nothing shows {launcher_floor_mib():.0f} MiB",
        "",
        "targets",
    ]
    for t in targets(phases):
        lines.append(
            f"  {'PASS' if t.ok else 'FAIL'}  {t.name:<30} {t.value:.2f}{t.unit} (limit {t.limit:.2f}{t.unit})"
        )
    agree = ", ".join(f"{name}: {'yes' if ok else 'NO'}" for name, ok in checks.items())
    lines += ["", f"cold report totals equal the generator's truth — {agree}"]
    return "\n".join(lines)


def as_json(c: Corpus, phases: Phases, checks: dict[str, bool]) -> bytes:
    return orjson.dumps(
        {
            "corpus": {"path": str(c.root), **c.info},
            "phases": {p: {n: s.as_dict() for n, s in by.items()} for p, by in phases.items()},
            "targets": [
                {"name": t.name, "value": round(t.value, 4), "limit": t.limit, "ok": t.ok} for t in targets(phases)
            ],
            "totals_match_truth": checks,
        },
        option=orjson.OPT_INDENT_2,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB", help="corpus size, e.g. 50MiB (default 1GiB)")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (default 5)")
    parser.add_argument("--increment", type=parse_size, default=parse_size("1MiB"), help="bytes appended (1MiB)")
    parser.add_argument("--cache", type=Path, default=REPO / "bench/.cache", help="where corpora are kept")
    parser.add_argument("--exporter", help="claude-usage-exporter to run (default: next to this Python)")
    parser.add_argument("--ccusage", help="ccusage to run (default: $CCUSAGE_BIN, tests/node, PATH)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    try:
        size = parse_size(args.size)
    except argparse.ArgumentTypeError as bad:
        parser.error(str(bad))
    args.cache.mkdir(parents=True, exist_ok=True)
    tools = [*ccusage_tools(args.ccusage), ours(args.exporter)]
    print(f"preparing the {args.size} corpus under {args.cache} ...", file=sys.stderr)
    c = corpus(size, args.cache)
    read_everything(c.root)
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        bench = Bench(c, Path(work), args.repeat, args.increment, {})
        try:
            phases, checks = run_all(bench, tools)
        except CommandFailed as failed:
            sys.exit(str(failed))
    output = as_json(c, phases, checks).decode() if args.json else render(c, phases, checks, args.size)
    print(output)
    return 0 if all(t.ok for t in targets(phases) if "aim" not in t.name) and all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
