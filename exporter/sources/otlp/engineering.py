"""Claude Code's engineering counters (lines of code, commits, pull requests, active time) as running
totals, whatever temporality it sends them in."""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable, Mapping

from exporter.sources.otlp.metrics import Point

MAX_SERIES = 10_000  # cumulative series Engineering remembers (see there)

# Claude Code metric -> (our name, the values of its `type` attribute kept as kinds).
CLAUDE_CODE_COUNTERS: dict[str, tuple[str, frozenset[str]]] = {
    "claude_code.lines_of_code.count": ("lines_of_code", frozenset({"added", "removed"})),
    "claude_code.commit.count": ("commits", frozenset()),
    "claude_code.pull_request.count": ("pull_requests", frozenset()),
    "claude_code.active_time.total": ("active_time_seconds", frozenset({"user", "cli"})),
}


class Engineering:
    """Claude Code's engineering counters as running totals, whatever temporality it sends.

    Totals are keyed (metric, kind): kind is `added`/`removed` for lines_of_code, `user`/`cli` for
    active_time_seconds (kept apart: the two are different clocks), "" for commits and pull requests,
    and `other` for an unknown `type`. Its token and cost metrics are ignored: the events are the usage.

    A delta point adds its value. A cumulative point adds its increase over the last point of its series
    (name, attributes, start time); a first point, or a lower value, counts from zero (a reset). Series
    carry `session.id`, so a team exporter would see them grow without end: at most `max_series` are
    remembered, the longest idle forgotten first. A forgotten series that comes back counts its whole
    value again, which only happens to a session idle while `max_series` newer ones were active.
    """

    def __init__(self, max_series: int = MAX_SERIES, totals: Mapping[tuple[str, str], float] | None = None) -> None:
        self.max_series = max_series
        self._series: dict[tuple[str, tuple[tuple[str, str], ...], int], tuple[float, int]] = {}
        self._totals: dict[tuple[str, str], float] = dict(totals or {})
        self._lock = threading.Lock()

    def add(self, points: Iterable[Point]) -> None:
        with self._lock:
            for point in points:
                spec = CLAUDE_CODE_COUNTERS.get(point.name)
                # Gauges and up-down sums are no counts to total; a negative or NaN count is garbage.
                if spec is None or not point.monotonic or not (math.isfinite(point.value) and point.value >= 0):
                    continue
                key = (spec[0], _kind(spec[1], point.attributes))
                increase = self._increase(point) if point.cumulative else point.value
                self._totals[key] = self._totals.get(key, 0.0) + increase

    @property
    def totals(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._totals)

    def _increase(self, point: Point) -> float:
        series = (point.name, point.attributes, point.start_ns)
        last = self._series.pop(series, None)  # re-inserted below: dict order is then least recently seen
        if last is not None and point.time_ns <= last[1]:
            self._series[series] = last  # a resent or out-of-order point: already counted
            return 0.0
        self._series[series] = (point.value, point.time_ns)
        if len(self._series) > self.max_series:
            del self._series[next(iter(self._series))]
        if last is None or point.value < last[0]:
            return point.value
        return point.value - last[0]


def _kind(kinds: frozenset[str], attributes: tuple[tuple[str, str], ...]) -> str:
    if not kinds:
        return ""
    value = next((v for k, v in attributes if k == "type"), None)
    return "" if value is None else value if value in kinds else "other"
