"""Budgets: calendar windows in the configured zone (midnights, DST, month ends, leap days), filters,
stacked budgets, projections; and the block in progress as the gauges and `report blocks` see it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from exporter.daemon.gauges import Windows, read_windows
from exporter.events import Tokens
from exporter.ledger.store import Ledger
from exporter.reports import blocks
from exporter.reports import periods as reports
from exporter.reports.budgets import BudgetSpec, BudgetState, evaluate, window_bounds
from tests.support.lines import at, ms

HOUR = 3_600_000
SONNET = Tokens(input=100_000)  # $0.30 at Sonnet 4.5's $3 per million (under the 200 k long-context tier)


def utc(moment_ms: int) -> str:
    return datetime.fromtimestamp(moment_ms / 1000, UTC).isoformat()


@pytest.mark.parametrize(
    ("zone", "window", "now", "start", "end"),
    [
        # Just after midnight in Berlin is still the previous day in UTC.
        ("Europe/Berlin", "day", "2026-11-26T00:30:00+01:00", "2026-11-25T23:00:00+00:00", "2026-11-26T23:00:00+00:00"),
        ("Europe/Berlin", "day", "2026-11-25T23:59:59+01:00", "2026-11-24T23:00:00+00:00", "2026-11-25T23:00:00+00:00"),
        # Spring forward: the day has 23 hours; fall back: 25.
        ("Europe/Berlin", "day", "2026-03-29T12:00:00+02:00", "2026-03-28T23:00:00+00:00", "2026-03-29T22:00:00+00:00"),
        ("Europe/Berlin", "day", "2026-10-25T12:00:00+01:00", "2026-10-24T22:00:00+00:00", "2026-10-25T23:00:00+00:00"),
        (
            "America/New_York",
            "day",
            "2026-03-08T01:59:00-05:00",
            "2026-03-08T05:00:00+00:00",
            "2026-03-09T04:00:00+00:00",
        ),
        (
            "America/New_York",
            "day",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T04:00:00+00:00",
            "2026-11-02T05:00:00+00:00",
        ),
        # Santiago springs forward at midnight: 00:00 never happens, the day starts at 01:00 (-03).
        (
            "America/Santiago",
            "day",
            "2026-09-06T12:00:00-03:00",
            "2026-09-06T04:00:00+00:00",
            "2026-09-07T03:00:00+00:00",
        ),
        # A week holding a DST change has 167 hours.
        (
            "Europe/Berlin",
            "week",
            "2026-03-29T12:00:00+02:00",
            "2026-03-22T23:00:00+00:00",
            "2026-03-29T22:00:00+00:00",
        ),
        # Month ends, the year's end, and a leap day.
        (
            "Europe/Berlin",
            "month",
            "2026-01-31T23:30:00+01:00",
            "2025-12-31T23:00:00+00:00",
            "2026-01-31T23:00:00+00:00",
        ),
        (
            "Europe/Berlin",
            "month",
            "2026-12-31T23:59:00+01:00",
            "2026-11-30T23:00:00+00:00",
            "2026-12-31T23:00:00+00:00",
        ),
        ("UTC", "month", "2028-02-29T18:00:00+00:00", "2028-02-01T00:00:00+00:00", "2028-03-01T00:00:00+00:00"),
        ("UTC", "day", "2028-02-29T18:00:00+00:00", "2028-02-29T00:00:00+00:00", "2028-03-01T00:00:00+00:00"),
        (
            "Asia/Kathmandu",
            "day",
            "2026-06-02T00:10:00+05:45",
            "2026-06-01T18:15:00+00:00",
            "2026-06-02T18:15:00+00:00",
        ),
    ],
)
def test_windows_are_calendar_windows_of_the_zone(zone: str, window: str, now: str, start: str, end: str) -> None:
    first, after = window_bounds(window, ms(now), ZoneInfo(zone))
    assert (utc(first), utc(after)) == (start, end)


def test_a_week_starts_on_the_configured_day() -> None:
    thursday = ms("2026-11-26T12:00:00+00:00")
    zone = ZoneInfo("UTC")
    assert utc(window_bounds("week", thursday, zone, week_start=0)[0]) == "2026-11-23T00:00:00+00:00"  # Monday
    assert utc(window_bounds("week", thursday, zone, week_start=6)[0]) == "2026-11-22T00:00:00+00:00"  # Sunday
    monday = ms("2026-11-23T00:00:00+00:00")
    assert utc(window_bounds("week", monday, zone, week_start=0)[0]) == "2026-11-23T00:00:00+00:00"


def spec(name: str, window: str = "day", limit: str = "10", **filters: str) -> BudgetSpec:
    return BudgetSpec(name, window, Decimal(limit), tuple(filters.items()))


def test_stacked_budgets_with_filters_each_count_their_own_requests(ledger: Callable[..., Ledger]) -> None:
    db = ledger(
        at("2026-11-26T09:00:00+00:00"),  # $1 each (Haiku 4.5, 1 M input tokens)
        at("2026-11-26T10:00:00+00:00", project="other"),
        at("2026-11-26T11:00:00+00:00", agent="subagent"),
        at("2026-11-25T11:00:00+00:00", model="claude-sonnet-4-5-20250929", tokens=SONNET),  # $0.30, yesterday
        at("2026-10-31T23:00:00+00:00"),  # last month
    )
    specs = (
        spec("all-day"),
        spec("acme-day", project="acme"),
        spec("main-acme", project="acme", agent="main"),
        spec("sonnet-month", "month", "100", model_family="sonnet"),
        spec("month", "month", "100"),
        spec("direct", "week", category="direct_interaction"),
    )
    states = evaluate(db, specs, ms("2026-11-26T12:00:00+00:00"), ZoneInfo("UTC"))
    assert {s.spec.name: s.spend for s in states} == {
        "all-day": 3.0,
        "acme-day": 2.0,
        "main-acme": 1.0,
        "sonnet-month": 0.3,
        "month": 3.3,
        "direct": 3.3,
    }


def state(spend: float, now: str, window: str = "day", limit: str = "10") -> BudgetState:
    start, end = window_bounds(window, ms(now), ZoneInfo("UTC"))
    return BudgetState(spec("b", window, limit), start, end, int(spend * 1e9), ms(now))


@pytest.mark.parametrize(
    ("spend", "now", "window", "projected"),
    [
        (6.0, "2026-11-26T12:00:00+00:00", "day", 12.0),  # half the day gone: linear
        (2.0, "2026-11-26T00:05:00+00:00", "day", 20.0),  # five minutes in: the rate over a tenth of the day
        (2.4, "2026-11-26T02:24:00+00:00", "day", 24.0),  # exactly a tenth in: both rules agree
        (0.0, "2026-11-26T20:00:00+00:00", "day", 0.0),
        (30.0, "2026-11-16T00:00:00+00:00", "month", 60.0),  # 15 of 30 days
        (7.0, "2026-11-26T23:59:59.999+00:00", "day", 7.0),  # the window's last moment
    ],
)
def test_projection_is_linear_after_the_first_tenth_of_the_window(
    spend: float, now: str, window: str, projected: float
) -> None:
    assert state(spend, now, window).projected == pytest.approx(projected, abs=1e-6)


@pytest.mark.parametrize(
    ("spend", "now", "status"),
    [
        (1.0, "2026-11-26T20:00:00+00:00", "ok"),
        (8.0, "2026-11-26T23:00:00+00:00", "warning"),  # 80 % used
        (6.0, "2026-11-26T12:00:00+00:00", "warning"),  # heading for 12 of 10
        (10.0, "2026-11-26T23:00:00+00:00", "exceeded"),
    ],
)
def test_status_warns_at_80_percent_or_a_projection_over_the_limit(spend: float, now: str, status: str) -> None:
    assert state(spend, now).status == status


def test_budget_json_for_report_budgets() -> None:
    assert state(6.0, "2026-11-26T12:00:00+00:00").to_json() == {
        "name": "b",
        "window": "day",
        "filter": {},
        "windowStart": "2026-11-26T00:00:00.000Z",
        "windowEnd": "2026-11-27T00:00:00.000Z",
        "limitUSD": 10.0,
        "spendUSD": 6.0,
        "remainingUSD": 4.0,
        "percentUsed": 60.0,
        "projectedSpendUSD": 12.0,
        "status": "warning",
    }


def test_the_block_gauges_equal_the_active_block_of_report_blocks(ledger: Callable[..., Ledger]) -> None:
    db = ledger(
        at("2026-11-25T08:10:00+00:00"),  # an old block
        at("2026-11-26T09:20:00+00:00"),  # the block in progress starts at 09:00
        at("2026-11-26T10:20:00+00:00"),
        at("2026-11-26T11:20:00+00:00", model="claude-sonnet-4-5-20250929", tokens=SONNET),
    )
    now = ms("2026-11-26T12:20:00+00:00")
    windows = read_windows(db, (), now, ZoneInfo("UTC"))
    active = [b for b in blocks.report(db, reports.Query(ZoneInfo("UTC")), now)["blocks"] if b["isActive"]]
    (block,) = active
    points = windows.points()
    assert {name: points[name][()] for name in points if name.startswith("claude_usage_block_")} == {
        "claude_usage_block_cost_usd": block["costUSD"],
        "claude_usage_block_tokens": block["totalTokens"],
        "claude_usage_block_start_timestamp_seconds": ms(block["startTime"].replace("Z", "+00:00")) / 1000,
        "claude_usage_block_end_timestamp_seconds": ms(block["endTime"].replace("Z", "+00:00")) / 1000,
        "claude_usage_block_burn_rate_usd_per_hour": block["burnRate"]["costPerHour"],
        "claude_usage_block_projected_cost_usd": pytest.approx(block["projection"]["totalCost"], abs=0.005),
    }
    assert (block["costUSD"], block["startTime"]) == (2.3, "2026-11-26T09:00:00.000Z")
    assert points["claude_usage_block_burn_rate_usd_per_hour"][()] == pytest.approx(1.15)  # $2.30 over 2 h


def test_a_block_minutes_old_projects_at_its_rate_over_half_an_hour_not_its_first_seconds(
    ledger: Callable[..., Ledger],
) -> None:
    db = ledger(at("2026-11-26T09:00:00+00:00"), at("2026-11-26T09:00:20+00:00"))  # $2 in 20 s
    now = ms("2026-11-26T09:00:30+00:00")
    points = read_windows(db, (), now, ZoneInfo("UTC")).points()
    (block,) = blocks.report(db, reports.Query(ZoneInfo("UTC")), now)["blocks"]
    assert block["projection"]["totalCost"] > 1000  # `report blocks` keeps ccusage's figure: $360 an hour
    assert points["claude_usage_block_burn_rate_usd_per_hour"][()] == block["burnRate"]["costPerHour"]
    left = (ms("2026-11-26T14:00:00+00:00") - now) / 3_600_000
    assert points["claude_usage_block_projected_cost_usd"][()] == pytest.approx(2 + 4 * left)  # $2 per 30 min


def test_between_blocks_the_money_gauges_read_zero_and_the_times_are_absent(ledger: Callable[..., Ledger]) -> None:
    db = ledger(at("2026-11-26T01:00:00+00:00"))
    points = read_windows(db, (), ms("2026-11-26T07:00:00+00:00"), ZoneInfo("UTC")).points()
    assert "claude_usage_block_start_timestamp_seconds" not in points
    assert (points["claude_usage_block_cost_usd"], points["claude_usage_block_tokens"]) == ({(): 0.0}, {(): 0.0})


def test_the_block_chain_is_anchored_at_the_last_long_silence(ledger: Callable[..., Ledger]) -> None:
    # Ten days of requests every 4 hours never leave a 5-hour silence: the chain starts at the first.
    hourly = [
        at(datetime.fromtimestamp((ms("2026-11-16T00:30:00+00:00") + i * 4 * HOUR) / 1000, UTC).isoformat())
        for i in range(61)
    ]
    db = ledger(*hourly)
    now = ms("2026-11-26T01:00:00+00:00")
    assert blocks.chain_start(db, now) == ms("2026-11-16T00:30:00+00:00")
    expected = [b for b in blocks.report(db, reports.Query(ZoneInfo("UTC")), now)["blocks"] if b["isActive"]]
    found = blocks.active_block(db, now)
    assert found is not None and reports.iso(found.start) == expected[0]["startTime"]


def test_the_summary_for_the_status_line(ledger: Callable[..., Ledger]) -> None:
    db = ledger(at("2026-11-26T09:20:00+00:00"), at("2026-11-26T11:20:00+00:00"))
    now = ms("2026-11-26T12:20:00+00:00")
    windows = read_windows(db, (spec("daily", limit="20"), spec("acme", project="x")), now, ZoneInfo("Europe/Berlin"))
    assert windows.summary(ZoneInfo("Europe/Berlin")) == {
        "version": 1,
        "timezone": "Europe/Berlin",
        "today": {
            "start": ms("2026-11-26T00:00:00+01:00") / 1000,
            "end": ms("2026-11-27T00:00:00+01:00") / 1000,
            "cost_usd": 2.0,
        },
        "budgets": [
            {
                "name": "daily",
                "window": "day",
                "limit_usd": 20.0,
                "spend_usd": 2.0,
                "projected_spend_usd": 3.6,
                "end": ms("2026-11-27T00:00:00+01:00") / 1000,
                "filtered": False,
            },
            {
                "name": "acme",
                "window": "day",
                "limit_usd": 10.0,
                "spend_usd": 0.0,
                "projected_spend_usd": 0.0,
                "end": ms("2026-11-27T00:00:00+01:00") / 1000,
                "filtered": True,
            },
        ],
        "block": {
            "start": ms("2026-11-26T09:00:00+00:00") / 1000,
            "end": ms("2026-11-26T14:00:00+00:00") / 1000,
            "cost_usd": 2.0,
            "burn_rate_usd_per_hour": 1.0,
            "projected_cost_usd": pytest.approx(2 + 100 / 60),
        },
    }
    assert isinstance(windows, Windows)


def test_the_calendar_gauges_show_spend_and_an_hour_of_day_projection_without_any_budget(
    ledger: Callable[..., Ledger],
) -> None:
    # On each of the 7 days before, $1 at 16:00 and $3 at 03:00 (Berlin); today $1 at 10:00 so far.
    days = [f"2026-11-{d:02}" for d in range(19, 26)]
    db = ledger(
        *[at(f"{d}T16:00:00+01:00") for d in days],
        *[at(f"{d}T03:0{i}:00+01:00") for d in days for i in range(3)],
        at("2026-11-26T10:00:00+01:00"),
    )
    points = read_windows(db, (), ms("2026-11-26T15:00:00+01:00"), ZoneInfo("Europe/Berlin")).points()
    day, week, month = ((("window", w),) for w in ("day", "week", "month"))
    spend, projected = points["claude_usage_window_spend_usd"], points["claude_usage_window_projected_spend_usd"]
    assert spend == {day: 1.0, week: 1.0 + 3 * 4.0, month: 1.0 + 7 * 4.0}  # the week began on Monday the 23rd
    # The rest of the day (15:00 to midnight) spent $1 on each day before: the night's $3 is not to come.
    assert projected[day] == 2.0
    # The rest of the week and month at the last 7 days' pace: $26 since Thursday the 19th, 15:00.
    assert projected[week] == pytest.approx(spend[week] + 26 * (81 / 168))  # 81 h from Thursday 15:00
    assert projected[month] == pytest.approx(spend[month] + 26 * ((4 * 24 + 9) / 168))
