"""Run one command and measure it: wall time and peak RSS.

A tiny launcher (`python -S`) spawns the command, waits for it with wait4(2) and reports both. The
launcher exists because Linux charges a child, at exec, with the RSS high-water mark of the memory
it was forked from: spawned straight from this (large) process, every command would show at least
our own RSS. Through the launcher the floor is the launcher's ~8 MiB. wait4 covers the command's own
children too (ccusage's npm entry point is a node shim that runs the native binary).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

_LAUNCHER = """\
import os, sys, time
started = time.perf_counter()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - started
with open(sys.argv[1], "w") as f:
    f.write(f"{elapsed} {usage.ru_maxrss} {os.waitstatus_to_exitcode(status)}")
"""
# ru_maxrss is in KiB on Linux, bytes on macOS.
_RSS_UNIT = 1024 * 1024 if sys.platform == "darwin" else 1024


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    peak_rss_mib: float


@dataclass(frozen=True, slots=True)
class Stats:
    median: float
    min: float
    max: float
    peak_rss_mib: float  # the largest over the runs
    runs: int

    def as_dict(self) -> dict[str, float]:
        return {
            "median_s": round(self.median, 4),
            "min_s": round(self.min, 4),
            "max_s": round(self.max, 4),
            "peak_rss_mib": round(self.peak_rss_mib, 1),
            "runs": self.runs,
        }


class CommandFailed(RuntimeError):
    pass


def measure(command: Sequence[str], *, env: Mapping[str, str], stdout: Path) -> Sample:
    """Run `command` to completion with its output in `stdout` (a file: a pipe could fill and block)."""
    stderr = stdout.with_suffix(".stderr")
    with tempfile.NamedTemporaryFile("r", suffix=".rusage") as result:
        with stdout.open("wb") as out, stderr.open("wb") as err:
            launcher = [sys.executable, "-S", "-I", "-c", _LAUNCHER, result.name, *command]
            subprocess.run(launcher, env=dict(env), stdout=out, stderr=err, check=True)
        seconds, rss, code = Path(result.name).read_text().split()
    if int(code) != 0:
        raise CommandFailed(f"{' '.join(command)} exited {code}:\n{stderr.read_text(errors='replace')}")
    return Sample(float(seconds), int(rss) / _RSS_UNIT)


def summarize(samples: Sequence[Sample]) -> Stats:
    seconds = [s.seconds for s in samples]
    return Stats(
        statistics.median(seconds), min(seconds), max(seconds), max(s.peak_rss_mib for s in samples), len(samples)
    )


def launcher_floor_mib() -> float:
    """The smallest peak RSS a measurement can show: a command that does nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        return measure(
            [sys.executable, "-S", "-I", "-c", "pass"], env=os.environ, stdout=Path(tmp) / "out"
        ).peak_rss_mib
