"""A warm `report daily --json` (the ledger already up to date) against ccusage 20.0.24's native binary.

    python -m bench.warm --size 1GiB --repeat 20

The corpus is bench/run.py's, the runs and their measure bench/cold.py's: one cold run fills a state dir,
then each round runs, pinned to the same CPUs, ccusage, ours warm and a bare `python -c pass` (the
interpreter's own start-up, in what ours costs). Ours runs as `python -m exporter` from this checkout, as
bench/cold.py does; with the project installed editable, that start-up includes the editable finder's
imports, which an installed wheel does not pay. Every warm report must equal the cold one, byte for byte.
Never part of the test suite.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bench.cold import Run, _env, find_ccusage_native, measure
from bench.run import REPO, corpus, parse_size, read_everything

CPUS = "0,1"  # as bench/cold.py pins its runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB", help="corpus size, as bench.cold takes it (default 1GiB)")
    parser.add_argument("--repeat", type=int, default=20, help="rounds (default 20)")
    parser.add_argument("--ccusage", help="ccusage's native binary (default: tests/node's install)")
    args = parser.parse_args(argv)
    (REPO / "bench/.cache").mkdir(parents=True, exist_ok=True)
    native = find_ccusage_native(args.ccusage)
    c = corpus(parse_size(args.size), REPO / "bench/.cache")
    read_everything(c.root)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "exporter")], check=True, capture_output=True)
    pin = ["taskset", "-c", CPUS]
    with tempfile.TemporaryDirectory(prefix="bench-warm-") as tmp:
        work = Path(tmp)
        (work / "home").mkdir()
        ours = [*pin, sys.executable, "-m", "exporter", "report", "daily", "--json", "--timezone", "UTC"]
        ours += ["--claude-dir", str(c.root), "--state-dir", str(work / "state")]
        env = _env(work / "home", PYTHONPATH=str(REPO))
        measure(ours, env=env, stdout=work / "cold.json", cwd=REPO)
        commands = {
            "ccusage": (
                [*pin, str(native), "claude", "daily", "--json", "--offline", "-z", "UTC"],
                _env(work / "home", CLAUDE_CONFIG_DIR=str(c.root)),
            ),
            "ours warm": (ours, env),
            "python -c pass": ([*pin, sys.executable, "-c", "pass"], env),
        }
        runs: dict[str, list[Run]] = {name: [] for name in commands}
        for _ in range(args.repeat):
            for name, (command, command_env) in commands.items():
                runs[name].append(measure(command, env=command_env, stdout=work / "out.json", cwd=REPO))
                if name == "ours warm" and (work / "out.json").read_bytes() != (work / "cold.json").read_bytes():
                    sys.exit("ours warm differs from ours cold")
    info = c.info
    print(
        f"corpus {c.root}: {info['bytes'] / (1 << 20):,.0f} MiB, {info['files']:,} files; {args.repeat} rounds,"
        f" each pinned to CPUs {CPUS}"
    )
    base = statistics.median(r.wall_s for r in runs["ccusage"])
    print(f"{'':<16}{'wall':>10}{'min':>10}{'CPU-s':>9}{'peak RSS':>11}{'wall ÷ ccusage':>16}")
    for name, rs in runs.items():
        wall = statistics.median(r.wall_s for r in rs)
        cpu = statistics.median(r.cpu_s for r in rs)
        low = min(r.wall_s for r in rs)
        rss = max(r.peak_tree_rss_mib for r in rs)
        print(f"{name:<16}{wall * 1000:>8.1f}ms{low * 1000:>8.1f}ms{cpu:>8.3f}s{rss:>7.0f} MiB{wall / base:>15.3f}×")
    print("medians of wall and CPU-s, the lowest wall; peak RSS: the largest over the runs (short runs: rough)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
