"""Cold ingest against ccusage 20.0.24's native binary, pinned to 2 CPUs, the whole process tree measured.

    python -m bench.cold --size 256MiB --repeat 5       # see bench/README.md, "cold"

The corpus is bench/run.py's (generated once into bench/.cache/, keyed by size, seed and generator).
Each round runs, on the same CPUs (`taskset -c 0,1`): ccusage's native binary, ours cold (`report daily
--json` on a fresh state dir) and ours warm (the same again on the state dir the cold run left). Each run:
wall time, CPU seconds (user + system of the command and every descendant it reaped, from wait4) and the
peak of the tree's summed RSS (every descendant's resident pages, polled from /proc). Every report's grand
total tokens must equal the generator's truth and ours warm must equal ours cold; the days and costs that
differ from ccusage's are shown (see `check`). Never part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from bench.run import FIELDS, REPO, corpus, parse_size, read_everything

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = 0.01  # seconds between two samples of the tree's RSS
_SCAN = 10  # ticks between two searches of /proc for the tree's processes: a search costs ~1.4 ms, a sample ~0.05


@dataclass(frozen=True, slots=True)
class Run:
    wall_s: float
    cpu_s: float
    peak_tree_rss_mib: float
    samples: int  # /proc samples taken: a run shorter than a few has a rough peak


def _parents() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue  # gone meanwhile
            parents[int(entry.name)] = int(stat[stat.rindex(b")") + 2 :].split(maxsplit=2)[1])
    return parents


def descendants(root: int) -> list[int]:
    """`root` and every process whose parent chain leads to it."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _parents().items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def rss(pids: Sequence[int]) -> int:
    """Bytes resident in these processes now (shared pages counted in each)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return total


def measure(command: Sequence[str], *, env: dict[str, str], stdout: Path, cwd: Path) -> Run:
    with stdout.open("wb") as out, stdout.with_suffix(".stderr").open("wb") as err:
        started = time.perf_counter()
        child = subprocess.Popen(list(command), env=env, stdout=out, stderr=err, cwd=cwd)
        peak, samples, done = 0, 0, threading.Event()

        def poll() -> None:
            nonlocal peak, samples
            tree: list[int] = []
            while not done.wait(_TICK):
                if samples % _SCAN == 0:
                    tree = descendants(child.pid)
                peak, samples = max(peak, rss(tree)), samples + 1

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        _, status, usage = os.wait4(child.pid, 0)  # the child's times include every descendant it reaped
        wall = time.perf_counter() - started
        done.set()
        poller.join()
        child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        err_text = stdout.with_suffix(".stderr").read_text(errors="replace")
        sys.exit(f"{' '.join(command)} exited {child.returncode}:\n{err_text}")
    return Run(wall, usage.ru_utime + usage.ru_stime, peak / (1 << 20), samples)


def find_ccusage_native(explicit: str | None) -> Path:
    """ccusage's native binary: npm installs it beside the node shim, as @ccusage/ccusage-<os>-<arch>."""
    if explicit:
        return Path(explicit)
    common = subprocess.run(
        ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    checkouts = [REPO, *([Path(common).parent] if common else [])]  # a worktree: the main checkout's install too
    for checkout in checkouts:
        native = checkout / "tests/node/node_modules/@ccusage/ccusage-linux-x64/bin/ccusage"
        if native.is_file():
            return native
    sys.exit("ccusage's native binary not found: npm install --prefix tests/node, or pass --ccusage")


def _env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CLAUDE_CONFIG_DIR"}
    return {**env, "HOME": str(home), **extra}  # never the real ~/.claude


def totals(report: Any) -> tuple[int, ...]:
    return tuple(report["totals"][f] for f in FIELDS)


def by_day(report: Any) -> dict[str, tuple[tuple[int, ...], Decimal]]:
    return {d["date"]: (tuple(d[f] for f in FIELDS), Decimal(str(d["totalCost"]))) for d in report["daily"]}


def check(reports: dict[str, Any], truth: dict[str, int]) -> bool:
    """Speed means nothing if the numbers are wrong. Must hold: the grand total tokens of every report equal
    the generator's truth, and ours warm equals ours cold day by day, cost included. Shown, not required
    (test_ccusage_parity.py explains each): a response whose copies straddle midnight lands on the day of
    its earliest copy for us, of its largest copy for ccusage; and the costs differ where the pricing
    differs (web search, Sonnet past 200k tokens)."""
    expected = tuple(truth[f] for f in FIELDS)
    ok = True
    for name, report in reports.items():
        same = totals(report) == expected
        ok = ok and same
        print(f"{name}: grand total tokens {'equal' if same else 'DIFFER FROM'} the generator's truth")
    cold, warm, theirs = (by_day(reports[n]) for n in ("ours cold", "ours warm", "ccusage"))
    ok = ok and cold == warm
    print(f"ours warm {'equals' if cold == warm else 'DIFFERS FROM'} ours cold, day by day, cost included")
    moved = [d for d in sorted(cold.keys() | theirs.keys()) if cold.get(d, ((), 0))[0] != theirs.get(d, ((), 0))[0]]
    worst = max((abs(cold[d][1] - theirs[d][1]) for d in cold.keys() & theirs.keys()), default=Decimal(0))
    cost = sum(c for _, c in cold.values()) - sum(c for _, c in theirs.values())
    print(
        f"ours vs ccusage: daily tokens differ on {len(moved)} days ({', '.join(moved[:4])}); cost, largest "
        f"difference on a day ${worst:.2f}, in all ${cost:+.2f}"
    )
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1GiB", help="corpus size, e.g. 256MiB (default 1GiB)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--cpus", default="0,1", help="taskset's CPU list for every run (default 0,1)")
    parser.add_argument("--cache", type=Path, default=REPO / "bench/.cache", help="where corpora are kept")
    parser.add_argument("--ccusage", help="ccusage's native binary (default: tests/node's install)")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    args.cache.mkdir(parents=True, exist_ok=True)
    native = find_ccusage_native(args.ccusage)
    c = corpus(size, args.cache)
    read_everything(c.root)
    # As installed: pip compiles the package. Without its bytecode cached (PYTHONDONTWRITEBYTECODE, a fresh
    # checkout) every run would compile ~100 modules first, a third of a warm run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "exporter")], check=True, capture_output=True)
    pin = ["taskset", "-c", args.cpus]
    ours = [*pin, sys.executable, "-m", "exporter", "report", "daily", "--json", "--timezone", "UTC"]
    runs: dict[str, list[Run]] = {"ccusage": [], "ours cold": [], "ours warm": []}
    with tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        work = Path(tmp)
        home = work / "home"
        home.mkdir()
        for _ in range(args.repeat):
            state = work / "state"
            shutil.rmtree(state, ignore_errors=True)
            theirs_cmd = [*pin, str(native), "claude", "daily", "--json", "--offline", "-z", "UTC"]
            env = _env(home, CLAUDE_CONFIG_DIR=str(c.root))
            runs["ccusage"].append(measure(theirs_cmd, env=env, stdout=work / "ccusage.json", cwd=REPO))
            ours_cmd = [*ours, "--claude-dir", str(c.root), "--state-dir", str(state)]
            env = _env(home, PYTHONPATH=str(REPO))
            runs["ours cold"].append(measure(ours_cmd, env=env, stdout=work / "cold.json", cwd=REPO))
            runs["ours warm"].append(measure(ours_cmd, env=env, stdout=work / "warm.json", cwd=REPO))
        reports = {name: orjson.loads((work / f"{name}.json").read_bytes()) for name in ("ccusage", "cold", "warm")}
    info = c.info
    print(
        f"corpus {c.root}: {info['bytes'] / (1 << 20):,.0f} MiB, {info['files']:,} files, {info['requests']:,} "
        f"requests; {args.repeat} rounds, each pinned to CPUs {args.cpus}"
    )
    med = {
        name: (statistics.median(r.wall_s for r in rs), statistics.median(r.cpu_s for r in rs))
        for name, rs in runs.items()
    }
    base_wall, base_cpu = med["ccusage"]
    print(f"{'':<11}{'wall':>9}{'CPU-s':>9}{'peak tree RSS':>15}{'wall ÷ ccusage':>16}{'CPU ÷ ccusage':>15}")
    for name, rs in runs.items():
        wall, cpu = med[name]
        rss = max(r.peak_tree_rss_mib for r in rs)
        print(f"{name:<11}{wall:>8.2f}s{cpu:>8.2f}s{rss:>11.0f} MiB{wall / base_wall:>15.2f}×{cpu / base_cpu:>14.2f}×")
    print("medians of wall and CPU-s; peak tree RSS: the largest over the runs")
    ok = check(
        {"ccusage": reports["ccusage"], "ours cold": reports["cold"], "ours warm": reports["warm"]}, info["totals"]
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
