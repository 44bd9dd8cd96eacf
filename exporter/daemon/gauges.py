"""Clock-dependent views for the daemon: budgets, the 5-hour block in progress, and the plan usage that
`statusline` recorded. They change with time alone, so the loop recomputes them every half minute (and
within seconds of a change), and writes the summary `statusline` shows (it never opens the ledger).
The landing page's figures come from them and the metrics' snapshot."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from exporter.events import Outcome
from exporter.ledger.store import Ledger
from exporter.metrics.exposition import Snapshot
from exporter.metrics.points import Labels, Points
from exporter.reports.blocks import Block, active_block, cost_rate
from exporter.reports.budgets import (
    WINDOWS,
    BudgetSpec,
    BudgetState,
    evaluate,
    projected_nanos,
    spend_nanos,
    window_bounds,
)
from exporter.reports.periods import local_midnight_ms, usd
from exporter.sources.statusline import SNAPSHOT, load_json, number
from exporter.web.page import PageData

PLAN_WINDOWS = {"five_hour": 5 * 3600, "seven_day": 7 * 86400}  # seconds each plan window lasts
# The projection's shortest rate span: ccusage's rate over the first to the last request made $36 in 20 s a
# block "projected" at $29,940. `report blocks` keeps ccusage's figure; the gauges and the status line use this.
MIN_RATE_SPAN_MS = 30 * 60_000


def block_projection(block: Block, now_ms: int) -> tuple[float, float]:
    """The block's burn rate (USD per hour, as `report blocks`) and the cost it reaches at its end, at the
    rate over at least MIN_RATE_SPAN_MS; a lone request projects nothing beyond itself (ccusage: no rate)."""
    rate, projected = cost_rate(block, now_ms)
    span = block.times[-1] - block.times[0]
    if 0 < span < MIN_RATE_SPAN_MS:
        cost = usd(block.group.sums.cost)
        projected = cost + cost / MIN_RATE_SPAN_MS * max(0, block.end - now_ms)
    return rate, projected


@dataclass(frozen=True)
class Windows:
    now_ms: int
    today: tuple[int, int, int] = (0, 0, 0)  # start ms, end ms, spend nano-USD
    budgets: list[BudgetState] = field(default_factory=list)
    block: Block | None = None
    month: int = 0  # this calendar month's spend, nano-USD
    # window (day, week, month) -> (spend nano-USD, projected nano-USD), budgets or none
    calendar: dict[str, tuple[int, int]] = field(default_factory=dict)

    def points(self) -> Points:
        budget: dict[str, dict[Labels, float]] = {name: {} for name in _BUDGET_GAUGES}
        for s in self.budgets:
            key = (("budget", s.spec.name), ("window", s.spec.window))
            for name, value in zip(_BUDGET_GAUGES, (s.limit, s.spend, s.projected, s.end_ms / 1000), strict=True):
                budget[name][key] = value
        # Between blocks the money gauges read 0 (an alert on them stays quiet) and the times are absent.
        cost = tokens = rate = projected = 0.0
        times: dict[str, dict[Labels, float]] = {}
        if (b := self.block) is not None:
            cost, tokens = usd(b.group.sums.cost), float(b.group.sums.total_tokens)
            rate, projected = block_projection(b, self.now_ms)
            times = {
                "claude_usage_block_start_timestamp_seconds": {(): b.start / 1000},
                "claude_usage_block_end_timestamp_seconds": {(): b.end / 1000},
            }
        calendar: dict[str, dict[Labels, float]] = {name: {} for name in _CALENDAR_GAUGES}
        for window, values in self.calendar.items():
            for name, value in zip(_CALENDAR_GAUGES, (usd(values[0]), usd(values[1])), strict=True):
                calendar[name][(("window", window),)] = value
        return {
            **budget,
            **times,
            **calendar,
            "claude_usage_block_cost_usd": {(): cost},
            "claude_usage_block_tokens": {(): tokens},
            "claude_usage_block_burn_rate_usd_per_hour": {(): rate},
            "claude_usage_block_projected_cost_usd": {(): projected},
        }

    def summary(self, zone: ZoneInfo) -> dict[str, Any]:
        """What `statusline` reads (see exporter/sources/statusline.py); times in epoch seconds."""
        start, end, nanos = self.today
        block = None
        if (b := self.block) is not None:
            rate, projected = block_projection(b, self.now_ms)
            block = {
                "start": b.start / 1000,
                "end": b.end / 1000,
                "cost_usd": usd(b.group.sums.cost),
                "burn_rate_usd_per_hour": rate,
                "projected_cost_usd": projected,
            }
        budgets = [
            {
                "name": s.spec.name,
                "window": s.spec.window,
                "limit_usd": s.limit,
                "spend_usd": s.spend,
                "projected_spend_usd": s.projected,
                "end": s.end_ms / 1000,
                "filtered": bool(s.spec.filter),
            }
            for s in self.budgets
        ]
        return {
            "version": 1,
            "timezone": zone.key,
            "today": {"start": start / 1000, "end": end / 1000, "cost_usd": usd(nanos)},
            "budgets": budgets,
            "block": block,
        }


_CALENDAR_GAUGES = (
    "claude_usage_window_spend_usd",
    "claude_usage_window_projected_spend_usd",
)
_BUDGET_GAUGES = (
    "claude_usage_budget_limit_usd",
    "claude_usage_budget_spend_usd",
    "claude_usage_budget_projected_spend_usd",
    "claude_usage_budget_window_end_timestamp_seconds",
)


def read_windows(
    ledger: Ledger,
    specs: tuple[BudgetSpec, ...],
    now_ms: int,
    zone: ZoneInfo,
    week_start: int = 0,
    cost: str = "cost",
    blocks: bool = True,
) -> Windows:
    """`blocks=False` leaves the 5-hour block out: it is one account's window, meaningless for a team."""
    calendar = {}
    for window in WINDOWS:
        start, end = window_bounds(window, now_ms, zone, week_start)
        spent = spend_nanos(ledger, start, end, (), cost)
        calendar[window] = (spent, projected_nanos(ledger, window, start, end, now_ms, spent, zone, cost))
    today = (*window_bounds("day", now_ms, zone), calendar["day"][0])
    block = active_block(ledger, now_ms, cost) if blocks else None
    budgets = evaluate(ledger, specs, now_ms, zone, week_start, cost)
    return Windows(now_ms, today, budgets, block, calendar["month"][0], calendar)


def plan_points(state_dir: Path, now: float) -> Points:
    """The plan usage `statusline` recorded. A window whose reset time has passed, or recorded longer
    ago than the window lasts, is stale: its age and staleness are shown, its old figures are not."""
    snapshot = load_json(os.path.join(state_dir, SNAPSHOT))
    limits = snapshot.get("rate_limits") if snapshot else None
    points: Points = {name: {} for name in _PLAN_GAUGES}
    for window, length in PLAN_WINDOWS.items():
        entry = limits.get(window) if isinstance(limits, dict) else None
        if not isinstance(entry, dict):
            continue
        used, resets, recorded = (number(entry.get(k)) for k in ("used_percentage", "resets_at", "recorded_at"))
        if used is None or resets is None or recorded is None:  # garbled by hand: skipped, like a missing one
            continue
        key = (("window", window),)
        stale = now >= resets or now - recorded > length
        points["claude_usage_plan_snapshot_age_seconds"][key] = max(0.0, now - recorded)
        points["claude_usage_plan_snapshot_stale"][key] = float(stale)
        if not stale:
            points["claude_usage_plan_utilization_ratio"][key] = used / 100
            points["claude_usage_plan_reset_timestamp_seconds"][key] = resets
    return points


_PLAN_GAUGES = (
    "claude_usage_plan_utilization_ratio",
    "claude_usage_plan_reset_timestamp_seconds",
    "claude_usage_plan_snapshot_age_seconds",
    "claude_usage_plan_snapshot_stale",
)


TOP = 5  # models and categories the page lists
DAYS = 30  # days of spend the page draws, today included
Daily = Sequence[tuple[str, dict[str, int]]]  # (local day, family -> nano-USD), oldest first


def read_daily(ledger: Ledger, now_ms: int, zone: ZoneInfo, cost: str = "cost", days: int = DAYS) -> Daily:
    """Spend per local day and model family over the last `days` days, oldest first, in nano-USD. One
    range scan of the ts index per day (the zone's midnights are computed here, where DST is known),
    so the loop's windows pass stays cheap; unpriced requests add nothing."""
    today = datetime.fromtimestamp(now_ms / 1000, zone).date()
    dates = [today - timedelta(days=days - 1 - i) for i in range(days + 1)]
    edges = [local_midnight_ms(d, zone) for d in dates]
    values = ", ".join("(?, ?, ?)" for _ in range(days))
    rows = ledger.db.execute(
        f"WITH days(i, lo, hi) AS (VALUES {values})"
        f" SELECT i, model_family, coalesce(sum({cost}), 0) FROM days JOIN requests ON ts >= lo AND ts < hi"
        " GROUP BY i, model_family",
        [v for i in range(days) for v in (i, edges[i], edges[i + 1])],
    ).fetchall()
    spend: list[dict[str, int]] = [{} for _ in range(days)]
    for i, family, nanos in rows:
        if nanos:
            spend[i][family] = int(nanos)
    return [(dates[i].isoformat(), spend[i]) for i in range(days)]


def malformed_lines(counters: dict[str, int]) -> int:
    """Malformed lines and records of every source, from the ledger's counters (`lines.SOURCE.OUTCOME`)."""
    suffix = f".{Outcome.MALFORMED}"
    return sum(v for name, v in counters.items() if name.startswith("lines.") and name.endswith(suffix))


def _malformed_shown(snapshot: Snapshot) -> int:
    lines = snapshot.points.get("claude_usage_exporter_lines_total", {})
    return int(sum(v for labels, v in lines.items() if dict(labels).get("outcome") == Outcome.MALFORMED))


def _top(snapshot: Snapshot, label: str) -> list[tuple[str, float]]:
    sums: defaultdict[str, float] = defaultdict(float)
    for labels, value in snapshot.points.get("claude_usage_cost_usd_total", {}).items():
        sums[dict(labels)[label]] += value
    return sorted(sums.items(), key=lambda item: (-item[1], item[0]))[:TOP]


def read_page(
    snapshot: Snapshot,
    zone: ZoneInfo,
    windows: Windows,
    daily: Daily = (),
    down: tuple[str, ...] = (),
    malformed_before: int = 0,
) -> PageData:
    """The page's figures: all-time ones from the metrics' snapshot, today's, this month's and the last
    30 days' from the windows pass the loop runs (so a page costs no scan of the ledger). `down`: the
    sources whose last ingest failed; `malformed_before`: the malformed lines counted before the daemon
    started (the page says how many came since)."""
    now = datetime.now(zone)
    costs = snapshot.points.get("claude_usage_cost_usd_total", {})
    requests = snapshot.points.get("claude_usage_requests_total", {})
    last = snapshot.points.get("claude_usage_last_request_timestamp_seconds", {}).get(())
    return PageData(
        today=windows.today[2] / 1e9,
        month=windows.month / 1e9,
        total=sum(costs.values()),
        requests=int(sum(requests.values())),
        models=_top(snapshot, "model"),
        categories=_top(snapshot, "category"),
        as_of=now.strftime("%Y-%m-%d %H:%M:%S %Z"),
        zone=str(zone),
        budgets=windows.budgets,
        last_request=None if last is None else datetime.fromtimestamp(last, zone),
        now=now,
        down=down,
        malformed=_malformed_shown(snapshot) - malformed_before,
        daily=[(day, {family: usd(nanos) for family, nanos in spend.items()}) for day, spend in daily],
    )
