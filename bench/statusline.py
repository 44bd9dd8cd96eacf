"""Is `claude-usage-exporter statusline` as quick to start as a bare Python? Claude Code runs it on every message.

    python -m bench.statusline --runs 200

Runs the console script's code from this checkout (`statusline < input.json`, a Claude Code 2.1.x input with the
plan windows and the context window, and a state dir holding a current summary.json, so every part of the line is
rendered) and `python -c pass`, alternately, and reports the median and p90 wall time of each. Exits 1 when the
median ratio is above 2. Never part of the test suite. `--script PATH` runs an installed console script instead
(the one next to the interpreter may be another checkout's install).

By default both run with bytecode caching on, into a temporary PYTHONPYCACHEPREFIX (as an installed package would
run, without writing into the source tree); `--as-is` keeps the environment untouched, so that with
PYTHONDONTWRITEBYTECODE=1 every run compiles exporter/sources/statusline.py from source.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INPUT = REPO / "tests" / "fixtures" / "statusline" / "2.1.x.json"
LIMIT = 2.0


def summary(now: float) -> dict[str, object]:
    """A summary as `serve` writes it, current at `now`, so every part of the line is rendered."""
    return {
        "version": 1,
        "written_at": now - 30,
        "timezone": "Europe/Berlin",
        "today": {"start": now - 8 * 3600, "end": now + 16 * 3600, "cost_usd": 4.56},
        "budgets": [
            {"name": "weekly", "window": "week", "limit_usd": 100.0, "spend_usd": 31.5, "filtered": False},
            {"name": "daily", "window": "day", "limit_usd": 20.0, "spend_usd": 4.56, "filtered": False},
        ],
        "block": {"start": now - 3600, "end": now + 4 * 3600, "cost_usd": 3.21, "burn_rate_usd_per_hour": 1.2},
    }


def environment(state_dir: Path, pycache: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLAUDE_USAGE_EXPORTER_")}
    env["CLAUDE_USAGE_EXPORTER_STATE_DIR"] = str(state_dir)
    if pycache is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(pycache)
    return env


def run_once(command: Sequence[str], env: dict[str, str]) -> float:
    with INPUT.open("rb") as stdin:
        started = time.perf_counter()
        code = subprocess.call(command, stdin=stdin, stdout=subprocess.DEVNULL, env=env)
        elapsed = time.perf_counter() - started
    if code != 0:
        sys.exit(f"{command[0]} exited with {code}")
    return elapsed


def check_output(command: Sequence[str], env: dict[str, str]) -> str:
    """One run whose line must show the summary: a fallback line would be measuring the wrong path."""
    with INPUT.open("rb") as stdin:
        line = subprocess.run(command, stdin=stdin, capture_output=True, env=env, check=True).stdout.decode().strip()
    if any(part not in line for part in ("today $4.56 / $20.00", "block $3.21", "5h 29%", "7d 18%", "ctx 8%")):
        sys.exit(f"unexpected status line: {line!r}")
    return line


def describe(name: str, times: list[float]) -> str:
    p90 = statistics.quantiles(times, n=10)[-1]
    return f"{name:<34} median {statistics.median(times) * 1000:6.1f} ms   p90 {p90 * 1000:6.1f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="runs of each command (default 200)")
    parser.add_argument("--as-is", action="store_true", help="keep the environment's bytecode settings")
    parser.add_argument("--script", type=Path, help="an installed claude-usage-exporter to run instead")
    args = parser.parse_args(argv)
    if args.runs < 2:
        parser.error("--runs must be at least 2")
    # What the console script runs, from this checkout: the same imports, one `-c` line instead of a file.
    here = [
        sys.executable,
        "-c",
        "import sys; sys.path.insert(0, sys.argv.pop(1)); from exporter.cli.entry import main; main()",
        str(REPO),
    ]
    commands = {
        "claude-usage-exporter statusline": [str(args.script), "statusline"] if args.script else [*here, "statusline"],
        "python -c pass": [sys.executable, "-c", "pass"],
    }
    with tempfile.TemporaryDirectory(prefix="bench-statusline-") as tmp:
        state_dir = Path(tmp) / "state"
        state_dir.mkdir()
        (state_dir / "summary.json").write_text(json.dumps(summary(time.time())))
        env = environment(state_dir, None if args.as_is else Path(tmp) / "pycache")
        print(check_output(commands["claude-usage-exporter statusline"], env))
        for command in commands.values():  # warm the page cache and the bytecode cache
            run_once(command, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(run_once(command, env))
    for name, measured in times.items():
        print(describe(name, measured))
    ratio = statistics.median(times["claude-usage-exporter statusline"]) / statistics.median(times["python -c pass"])
    print(f"ratio of medians {ratio:.2f} (limit {LIMIT:.0f}), {args.runs} runs each, {sys.executable}")
    return 0 if ratio <= LIMIT else 1


if __name__ == "__main__":
    sys.exit(main())
