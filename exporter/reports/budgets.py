"""Budgets: calendar windows (day, week, month) in the user's zone, the spend in each, and a projection.

Projection rule: the window's spend so far, scaled to the whole window by the time elapsed, but the
time elapsed counts as at least a tenth of the window (2.4 h of a day, 16.8 h of a week, about 3 days
of a month). So one $2 request at 00:05 projects $20 for the day, not $576; after the first tenth of a
window the projection is the plain linear one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from exporter.ledger.store import Ledger
from exporter.reports.periods import iso, local_midnight_ms, usd

WINDOWS = ("day", "week", "month")
MIN_RATE_SPAN = 10  # the burn rate is taken over at least 1/MIN_RATE_SPAN of the window
FILTERS = ("project", "model_family", "category", "agent")  # requests columns a budget may filter on


@dataclass(frozen=True)
class BudgetSpec:
    name: str
    window: str  # day | week | month
    limit_usd: Decimal
    filter: tuple[tuple[str, str], ...] = ()  # (column, value) pairs, all of which must match

    def __post_init__(self) -> None:
        # Filter columns become SQL: only the known names may pass.
        if self.window not in WINDOWS or any(column not in FILTERS for column, _ in self.filter):
            raise ValueError(f"budget {self.name!r}: unknown window or filter")


@dataclass(frozen=True)
class BudgetState:
    spec: BudgetSpec
    start_ms: int
    end_ms: int
    spend_nanos: int
    now_ms: int

    @property
    def spend(self) -> float:
        return usd(self.spend_nanos)

    @property
    def limit(self) -> float:
        return float(self.spec.limit_usd)

    @property
    def projected(self) -> float:
        length = self.end_ms - self.start_ms
        elapsed = min(max(self.now_ms - self.start_ms, 0), length)
        return self.spend * length / max(elapsed, length / MIN_RATE_SPAN)

    @property
    def status(self) -> str:
        if self.spend >= self.limit:
            return "exceeded"
        return "warning" if self.spend >= 0.8 * self.limit or self.projected >= self.limit else "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "window": self.spec.window,
            "filter": dict(self.spec.filter),
            "windowStart": iso(self.start_ms),
            "windowEnd": iso(self.end_ms),
            "limitUSD": self.limit,
            "spendUSD": self.spend,
            "remainingUSD": max(self.limit - self.spend, 0.0),
            "percentUsed": round(100 * self.spend / self.limit, 2),
            "projectedSpendUSD": round(self.projected, 6),
            "status": self.status,
        }


def window_bounds(window: str, now_ms: int, zone: ZoneInfo, week_start: int = 0) -> tuple[int, int]:
    """The calendar window holding `now_ms`, as UTC milliseconds [start, end). `week_start`: 0 Monday."""
    today = datetime.fromtimestamp(now_ms / 1000, zone).date()
    if window == "day":
        first, after = today, today + timedelta(days=1)
    elif window == "week":
        first = today - timedelta(days=(today.weekday() - week_start) % 7)
        after = first + timedelta(days=7)
    else:
        first = today.replace(day=1)
        after = (first + timedelta(days=32)).replace(day=1)
    return local_midnight_ms(first, zone), local_midnight_ms(after, zone)


def spend_nanos(
    ledger: Ledger, start_ms: int, end_ms: int, where: tuple[tuple[str, str], ...] = (), cost: str = "cost"
) -> int:
    """Nano-dollars spent in [start, end) by the requests matching every (column, value) pair."""
    clauses = "".join(f" AND {column} = ?" for column, _ in where)
    (nanos,) = ledger.db.execute(
        f"SELECT coalesce(sum({cost}), 0) FROM requests WHERE ts >= ? AND ts < ?{clauses}",
        (start_ms, end_ms, *(value for _, value in where)),
    ).fetchone()
    return int(nanos)


PROFILE_DAYS = 7  # the calendar projections learn the pace from this many days before now


def projected_nanos(
    ledger: Ledger, window: str, start_ms: int, end_ms: int, now_ms: int, spent: int, zone: ZoneInfo, cost: str = "cost"
) -> int:
    """Spend at the window's end: what is spent, plus what the last 7 days spent in the time still to come.

    A day is not uniform (a working day's afternoon pace does not run through the night), so the rest of
    a day is the average of the same clock hours on each of the 7 days before. The rest of a week or a
    month is its length times the average pace of the last 7 days, nights and weekends included.
    """
    now_ms = min(max(now_ms, start_ms), end_ms)
    if window == "day":
        local_now = datetime.fromtimestamp(now_ms / 1000, zone)
        local_end = datetime.fromtimestamp(end_ms / 1000, zone)
        earlier = [
            spend_nanos(
                ledger,
                int((local_now - timedelta(days=d)).timestamp() * 1000),
                int((local_end - timedelta(days=d)).timestamp() * 1000),
                (),
                cost,
            )
            for d in range(1, PROFILE_DAYS + 1)
        ]
        return spent + sum(earlier) // PROFILE_DAYS
    span = PROFILE_DAYS * 86_400_000
    recent = spend_nanos(ledger, now_ms - span, now_ms, (), cost)
    return spent + recent * (end_ms - now_ms) // span


def evaluate(
    ledger: Ledger, specs: tuple[BudgetSpec, ...], now_ms: int, zone: ZoneInfo, week_start: int = 0, cost: str = "cost"
) -> list[BudgetState]:
    states = []
    for spec in specs:
        start, end = window_bounds(spec.window, now_ms, zone, week_start)
        # Requests stamped later than now (a skewed clock) belong to the window all the same.
        states.append(BudgetState(spec, start, end, spend_nanos(ledger, start, end, spec.filter, cost), now_ms))
    return states


def report(states: list[BudgetState], zone: ZoneInfo) -> dict[str, Any]:
    """`report budgets` as JSON data."""
    return {"timezone": zone.key, "budgets": [s.to_json() for s in states]}
