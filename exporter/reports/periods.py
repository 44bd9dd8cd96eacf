"""Reports: ledger rows summed into local calendar periods, sessions and 5-hour blocks.

The JSON keeps ccusage's shapes (so scripts written for ccusage keep working) and adds our own
fields: requests, cost per category and per speed (fast mode), unpriced tokens, and a breakdown by any label.
Periods are computed in SQL from the zone's UTC offsets, so a warm report reads few rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from exporter.classify.rules import CATEGORIES
from exporter.ledger.store import Ledger

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
BLOCK_MS = 5 * HOUR_MS
DIMENSIONS = ("model", "category", "interaction", "project", "agent", "speed")
SPEEDS = ("standard", "fast")  # always listed in costBySpeed; any other speed seen is listed too
# The cost each pricing mode reports, as SQL over the requests table (`cost` is always the one from tokens).
COSTS = {"auto": "COALESCE(reported_cost, cost)", "calculate": "cost", "reported": "reported_cost"}
PERIODS = {"daily": "date", "weekly": "week", "monthly": "month"}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SUMS = (
    "SUM(input), SUM(output), SUM(cache_write_5m + cache_write_1h), SUM(cache_read), SUM({cost}),"
    " COUNT(*), SUM(CASE WHEN {cost} IS NULL THEN input + output + cache_read + cache_write_5m"
    " + cache_write_1h ELSE 0 END)"
)


@dataclass
class Sums:
    input: int = 0
    output: int = 0
    cache_creation: int = 0
    cache_read: int = 0
    cost: int = 0  # nano-USD
    requests: int = 0
    unpriced_tokens: int = 0

    def add(self, values: Iterable[int | None]) -> None:
        i, o, cc, cr, cost, n, unpriced = values
        self.input += i or 0
        self.output += o or 0
        self.cache_creation += cc or 0
        self.cache_read += cr or 0
        self.cost += cost or 0
        self.requests += n or 0
        self.unpriced_tokens += unpriced or 0

    def values(self) -> tuple[int, ...]:
        return (
            self.input,
            self.output,
            self.cache_creation,
            self.cache_read,
            self.cost,
            self.requests,
            self.unpriced_tokens,
        )

    @property
    def total_tokens(self) -> int:
        return self.input + self.output + self.cache_creation + self.cache_read

    def tokens_json(self) -> dict[str, Any]:
        return {
            "inputTokens": self.input,
            "outputTokens": self.output,
            "cacheCreationTokens": self.cache_creation,
            "cacheReadTokens": self.cache_read,
        }


@dataclass
class Group:
    """One row of a report: its sums, and the same split by model, category and a chosen label."""

    sums: Sums = field(default_factory=Sums)
    models: dict[str, Sums] = field(default_factory=lambda: defaultdict(Sums))
    categories: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    speeds: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by: dict[str, Sums] = field(default_factory=lambda: defaultdict(Sums))
    first: int = 0
    last: int = 0
    project: str = "unknown"

    def add(
        self, model: str, category: str, label: str, values: tuple[int | None, ...], speed: str = "standard"
    ) -> None:
        self.sums.add(values)
        self.models[model].add(values)
        self.categories[category] += values[4] or 0
        self.speeds[speed] += values[4] or 0
        self.by[label].add(values)

    def to_json(self, by: str) -> dict[str, Any]:
        models = sorted(self.models.items(), key=lambda kv: (-kv[1].cost, kv[0]))
        out: dict[str, Any] = {
            **self.sums.tokens_json(),
            "totalTokens": self.sums.total_tokens,
            "totalCost": usd(self.sums.cost),
            "modelsUsed": [m for m, _ in models],
            "modelBreakdowns": [{"modelName": m, **s.tokens_json(), "cost": usd(s.cost)} for m, s in models],
            "requests": self.sums.requests,
            "costByCategory": {c: usd(self.categories.get(c, 0)) for c in CATEGORIES},
            "costBySpeed": by_speed(self.speeds),
            "unpricedTokens": self.sums.unpriced_tokens,
        }
        if by != "model":
            ranked = sorted(self.by.items(), key=lambda kv: (-kv[1].cost, kv[0]))
            out["breakdownBy"] = by
            out["breakdowns"] = [
                {
                    "name": k,
                    **s.tokens_json(),
                    "totalTokens": s.total_tokens,
                    "cost": usd(s.cost),
                    "requests": s.requests,
                }
                for k, s in ranked
            ]
        return out


@dataclass(frozen=True)
class Query:
    tz: ZoneInfo
    since: date | None = None
    until: date | None = None
    by: str = "model"
    mode: str = "auto"  # a key of COSTS
    week_start: int = 6  # ccusage's default week starts on Sunday

    def __post_init__(self) -> None:
        # `by` and `mode` become SQL: only the known names may pass.
        if self.by not in DIMENSIONS or self.mode not in COSTS:
            raise ValueError(f"unknown breakdown {self.by!r} or cost mode {self.mode!r}")

    @property
    def key(self) -> str:
        """Identifies the query, for the report cache."""
        return f"{self.tz.key} {self.since} {self.until} {self.by} {self.mode} {self.week_start}"

    @property
    def cost(self) -> str:
        return COSTS[self.mode]

    def bounds(self) -> tuple[int, int]:
        """UTC milliseconds [start, end) covering the local days since..until."""
        start = local_midnight_ms(self.since, self.tz) if self.since else 0
        end = local_midnight_ms(self.until + timedelta(days=1), self.tz) if self.until else 2**62
        return start, end


def usd(nanos: int) -> float:
    return nanos / 1_000_000_000


def by_speed(speeds: dict[str, int]) -> dict[str, float]:
    """Cost per speed: standard and fast always, then any other speed a source reported."""
    return {s: usd(speeds.get(s, 0)) for s in (*SPEEDS, *sorted(set(speeds) - set(SPEEDS)))}


def local_midnight_ms(day: date, tz: ZoneInfo) -> int:
    """The first instant of a local day. Where midnight falls in a DST gap, fold=0 gives the instant
    the day really starts (01:00 after the jump); where midnight repeats, the first of the two."""
    return int(datetime(day.year, day.month, day.day, tzinfo=tz).timestamp() * 1000)


def utc_offsets(tz: ZoneInfo, start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """[(until_ms, offset_ms)]: the zone's UTC offset over [start, end], changing at each `until`."""

    def offset(ms: int) -> int:
        moment = datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz)
        delta = moment.utcoffset()
        return int(delta.total_seconds() * 1000) if delta else 0

    spans: list[tuple[int, int]] = []
    current = offset(start_ms)
    step = start_ms
    while step < end_ms:
        nxt = min(step + DAY_MS, end_ms)
        if offset(nxt) != current:
            lo, hi = step, nxt  # bisect to the millisecond of the change
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == current else (lo, mid)
            spans.append((hi, current))
            current = offset(hi)
            nxt = hi
        step = nxt
    spans.append((2**62, current))
    return spans


def local_day_sql(ledger: Ledger, q: Query, start: int, end: int) -> tuple[str, list[int]]:
    """An SQL expression giving each row's local day number (days since 1970-01-01)."""
    lo, hi = ledger.db.execute(
        "SELECT MIN(ts), MAX(ts) FROM requests WHERE ts >= ? AND ts < ?", (start, end)
    ).fetchone()
    spans = utc_offsets(q.tz, lo or 0, (hi or 0) + 1)
    params: list[int] = []
    cases = []
    for until, off in spans[:-1]:
        cases.append("WHEN ts < ? THEN ?")
        params += [until, off]
    params.append(spans[-1][1])
    shift = f"CASE {' '.join(cases)} ELSE ? END" if cases else "?"
    return f"((ts + {shift}) / {DAY_MS})", params


def _rows(ledger: Ledger, q: Query, key_sql: str, key_params: list[Any]) -> Any:
    start, end = q.bounds()
    # All the history is read faster in the table's order than through the time index (a look-up per row):
    # `+ts` keeps SQLite off the index.
    ts = "+ts" if q.since is None and q.until is None else "ts"
    sql = (
        f"SELECT {key_sql} AS k, model, category, {q.by}, speed, {_SUMS.format(cost=q.cost)}"
        f" FROM requests WHERE {ts} >= ? AND {ts} < ? GROUP BY k, model, category, {q.by}, speed"
    )
    return ledger.db.execute(sql, [*key_params, start, end])


def periods(ledger: Ledger, kind: str, q: Query) -> dict[str, Any]:
    """`report daily|weekly|monthly` as JSON data."""
    start, end = q.bounds()
    day_sql, params = local_day_sql(ledger, q, start, end)
    groups: dict[str, Group] = defaultdict(Group)
    for day_number, model, category, label, speed, *values in _rows(ledger, q, day_sql, params):
        day = date(1970, 1, 1) + timedelta(days=int(day_number))
        groups[_period_key(kind, day, q.week_start)].add(model, category, str(label), tuple(values), speed)
    return _document(PERIODS[kind], kind, groups, q.by)


def _period_key(kind: str, day: date, week_start: int) -> str:
    if kind == "weekly":
        return (day - timedelta(days=(day.weekday() - week_start) % 7)).isoformat()
    if kind == "monthly":
        return day.isoformat()[:7]
    return day.isoformat()


def sessions(ledger: Ledger, q: Query) -> dict[str, Any]:
    """`report session`: one row per Claude Code session, ordered by last activity."""
    groups: dict[str, Group] = defaultdict(Group)
    for session, model, category, label, speed, *values in _rows(ledger, q, "session_id", []):
        groups[session].add(model, category, str(label), tuple(values), speed)
    start, end = q.bounds()
    spans = ledger.db.execute(
        "SELECT session_id, MIN(ts), MAX(ts), MIN(project) FROM requests WHERE ts >= ? AND ts < ? GROUP BY session_id",
        (start, end),
    )
    for session, first, last, project in spans:
        g = groups[session]
        g.first, g.last, g.project = first, last, project
    ordered = dict(sorted(groups.items(), key=lambda kv: (kv[1].last, kv[0])))
    rows = []
    for session, g in ordered.items():
        rows.append(
            {
                "sessionId": session,
                "projectPath": g.project,
                "firstActivity": iso(g.first),
                "lastActivity": iso(g.last),
                **g.to_json(q.by),
            }
        )
    return {"sessions": rows, "totals": _totals(ordered.values())}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def _document(name: str, kind: str, groups: dict[str, Group], by: str) -> dict[str, Any]:
    rows = [{name: key, **g.to_json(by)} for key, g in sorted(groups.items())]
    return {kind: rows, "totals": _totals(groups.values())}


def _totals(groups: Iterable[Group]) -> dict[str, Any]:
    total = Sums()
    categories: dict[str, int] = defaultdict(int)
    speeds: dict[str, int] = defaultdict(int)
    for g in groups:
        total.add(g.sums.values())
        for c, v in g.categories.items():
            categories[c] += v
        for s, v in g.speeds.items():
            speeds[s] += v
    return {
        **total.tokens_json(),
        "totalTokens": total.total_tokens,
        "totalCost": usd(total.cost),
        "requests": total.requests,
        "costByCategory": {c: usd(categories.get(c, 0)) for c in CATEGORIES},
        "costBySpeed": by_speed(speeds),
        "unpricedTokens": total.unpriced_tokens,
    }
