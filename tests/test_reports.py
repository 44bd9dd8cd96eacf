"""Reports from the ledger: local calendar periods (time zones, DST), sessions, blocks, breakdowns."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from exporter.events import Tokens
from exporter.ledger.store import Ledger
from exporter.reports import blocks
from exporter.reports import periods as reports
from tests.support.lines import at, ms


def daily(ledger: Ledger, tz: str = "UTC", **q: Any) -> dict[str, float]:
    data = reports.periods(ledger, "daily", reports.Query(ZoneInfo(tz), **q))
    return {row["date"]: row["totalCost"] for row in data["daily"]}


def test_days_are_local_days_of_the_chosen_zone(ledger: Callable[..., Ledger]) -> None:
    db = ledger(at("2026-06-01T23:30:00+00:00"), at("2026-06-02T00:30:00+00:00"))
    assert daily(db) == {"2026-06-01": 1.0, "2026-06-02": 1.0}
    assert daily(db, "Europe/Berlin") == {"2026-06-02": 2.0}
    assert daily(db, "America/Los_Angeles") == {"2026-06-01": 2.0}
    assert daily(db, "Asia/Kathmandu") == {"2026-06-02": 2.0}  # UTC+5:45


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # New York springs forward on 2026-03-08 and falls back on 2026-11-01.
        ("2026-03-08T00:30:00-05:00", "2026-03-08T23:30:00-04:00"),
        ("2026-11-01T00:30:00-04:00", "2026-11-01T23:30:00-05:00"),
    ],
)
def test_a_day_with_a_dst_change_holds_exactly_its_own_requests(
    ledger: Callable[..., Ledger], first: str, second: str
) -> None:
    before = (datetime.fromisoformat(first) - timedelta(hours=1)).isoformat()
    after = (datetime.fromisoformat(second) + timedelta(hours=1)).isoformat()
    db = ledger(at(before), at(first), at(second), at(after))
    day = first[:10]
    previous = (date.fromisoformat(day) - timedelta(days=1)).isoformat()
    following = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    assert daily(db, "America/New_York") == {previous: 1.0, day: 2.0, following: 1.0}


def test_utc_offsets_change_at_the_transition_minute() -> None:
    tz = ZoneInfo("Europe/Berlin")
    start = int(datetime(2026, 3, 28, tzinfo=UTC).timestamp() * 1000)
    spans = reports.utc_offsets(tz, start, start + 3 * reports.DAY_MS)
    change = int(datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp() * 1000)
    assert spans == [(change, 3_600_000), (2**62, 7_200_000)]


def test_since_and_until_are_inclusive_local_days(ledger: Callable[..., Ledger]) -> None:
    db = ledger(*(at(f"2026-02-{d:02d}T12:00:00+00:00") for d in range(1, 6)))
    assert list(daily(db, since=date(2026, 2, 2), until=date(2026, 2, 4))) == ["2026-02-02", "2026-02-03", "2026-02-04"]


def test_weeks_start_on_sunday_like_ccusage_or_on_monday(ledger: Callable[..., Ledger]) -> None:
    db = ledger(at("2026-11-21T12:00:00+00:00"), at("2026-11-22T12:00:00+00:00"), at("2026-11-23T12:00:00+00:00"))

    def weeks(start: int) -> dict[str, float]:
        data = reports.periods(db, "weekly", reports.Query(ZoneInfo("UTC"), week_start=start))
        return {row["week"]: row["totalCost"] for row in data["weekly"]}

    assert weeks(6) == {"2026-11-15": 1.0, "2026-11-22": 2.0}
    assert weeks(0) == {"2026-11-16": 2.0, "2026-11-23": 1.0}


def test_months_and_a_leap_day(ledger: Callable[..., Ledger]) -> None:
    db = ledger(at("2028-02-29T23:00:00+00:00"), at("2028-03-01T01:00:00+00:00"))
    data = reports.periods(db, "monthly", reports.Query(ZoneInfo("UTC")))
    assert {row["month"]: row["totalCost"] for row in data["monthly"]} == {"2028-02": 1.0, "2028-03": 1.0}


def test_the_daily_document_keeps_ccusages_shape_and_adds_our_fields(ledger: Callable[..., Ledger]) -> None:
    db = ledger(
        at("2026-05-01T10:00:00+00:00", tokens=Tokens(10, 20, 30, 40, 50), tools=frozenset({"Read"})),
        at("2026-05-01T11:00:00+00:00", model="claude-mystery-9", tokens=Tokens(1, 2, 3, 4, 5)),
    )
    data = reports.periods(db, "daily", reports.Query(ZoneInfo("UTC")))
    [row] = data["daily"]
    haiku = (10 * 1 + 20 * 5 + 30 * Decimal("0.1") + 40 * Decimal("1.25") + 50 * 2) / 1_000_000
    assert row == {
        "date": "2026-05-01",
        "inputTokens": 11,
        "outputTokens": 22,
        "cacheCreationTokens": 99,
        "cacheReadTokens": 33,
        "totalTokens": 165,
        "totalCost": float(haiku),
        "modelsUsed": ["claude-haiku-4-5-20251001", "claude-mystery-9"],
        "modelBreakdowns": [
            {
                "modelName": "claude-haiku-4-5-20251001",
                "inputTokens": 10,
                "outputTokens": 20,
                "cacheCreationTokens": 90,
                "cacheReadTokens": 30,
                "cost": float(haiku),
            },
            {
                "modelName": "claude-mystery-9",
                "inputTokens": 1,
                "outputTokens": 2,
                "cacheCreationTokens": 9,
                "cacheReadTokens": 3,
                "cost": 0.0,
            },
        ],
        "requests": 2,
        "costByCategory": {"direct_interaction": 0.0, "context_processing": float(haiku), "model_operation": 0.0},
        "costBySpeed": {"standard": float(haiku), "fast": 0.0},
        "unpricedTokens": 15,
    }
    assert data["totals"]["totalCost"] == float(haiku)


def test_a_breakdown_by_project_lists_each_project(ledger: Callable[..., Ledger]) -> None:
    db = ledger(
        at("2026-05-01T10:00:00+00:00"),
        at("2026-05-01T11:00:00+00:00", project="web"),
        at("2026-05-01T12:00:00+00:00", project="web"),
    )
    [row] = reports.periods(db, "daily", reports.Query(ZoneInfo("UTC"), by="project"))["daily"]
    assert row["breakdownBy"] == "project"
    assert [(b["name"], b["cost"], b["requests"]) for b in row["breakdowns"]] == [("web", 2.0, 2), ("acme", 1.0, 1)]


def test_auto_mode_uses_the_sources_cost_where_it_has_one_and_reported_mode_only_that(
    ledger: Callable[..., Ledger],
) -> None:
    db = ledger(at("2026-05-01T10:00:00+00:00", reported_cost=Decimal("0.25")), at("2026-05-01T11:00:00+00:00"))
    assert daily(db) == daily(db, mode="auto") == {"2026-05-01": 1.25}  # auto is the default, as in ccusage
    assert daily(db, mode="calculate") == {"2026-05-01": 2.0}
    assert daily(db, mode="reported") == {"2026-05-01": 0.25}
    [row] = reports.periods(db, "daily", reports.Query(ZoneInfo("UTC"), mode="reported"))["daily"]
    assert row["unpricedTokens"] == 1_000_000  # the request without a cost of its own


def test_fast_mode_cost_is_split_out_per_row_and_in_the_totals_and_by_speed(ledger: Callable[..., Ledger]) -> None:
    fast = Tokens(input=1_000_000)  # Opus 4.6: $5 per MTok standard, $30 fast
    db = ledger(
        at("2026-05-01T10:00:00+00:00"),
        at("2026-05-01T11:00:00+00:00", model="claude-opus-4-6", tokens=fast, speed="fast"),
        at("2026-05-01T12:00:00+00:00", model="claude-opus-4-6", tokens=fast),
    )
    data = reports.periods(db, "daily", reports.Query(ZoneInfo("UTC"), by="speed"))
    [row] = data["daily"]
    assert row["costBySpeed"] == data["totals"]["costBySpeed"] == {"standard": 6.0, "fast": 30.0}
    assert [(b["name"], b["cost"], b["requests"]) for b in row["breakdowns"]] == [
        ("fast", 30.0, 1),
        ("standard", 6.0, 2),
    ]
    [block] = blocks.report(db, reports.Query(ZoneInfo("UTC")), now_ms=ms("2026-05-02T12:00:00+00:00"))["blocks"]
    assert block["costBySpeed"] == {"standard": 6.0, "fast": 30.0}


def test_sessions_report_first_and_last_activity(ledger: Callable[..., Ledger]) -> None:
    db = ledger(
        at("2026-05-01T10:00:00+00:00"),
        at("2026-05-01T12:00:00+00:00"),
        at("2026-05-01T11:00:00+00:00", session_id="s0", project="web"),
    )
    data = reports.sessions(db, reports.Query(ZoneInfo("UTC")))
    assert [
        (s["sessionId"], s["projectPath"], s["firstActivity"], s["lastActivity"], s["totalCost"])
        for s in data["sessions"]
    ] == [
        ("s0", "web", "2026-05-01T11:00:00.000Z", "2026-05-01T11:00:00.000Z", 1.0),
        ("s1", "acme", "2026-05-01T10:00:00.000Z", "2026-05-01T12:00:00.000Z", 2.0),
    ]
    assert data["totals"]["totalCost"] == 3.0


def test_blocks_follow_ccusages_five_hour_rule(ledger: Callable[..., Ledger]) -> None:
    db = ledger(
        at("2026-05-01T10:17:00+00:00"),
        at("2026-05-01T14:59:00+00:00"),  # within 5 h of the block start (10:00)
        at("2026-05-01T15:01:00+00:00"),  # more than 5 h after the block start: a new block at 15:00
        at("2026-05-01T22:00:00+00:00"),  # more than 5 h after the last request: a gap, then a block
    )
    data = blocks.report(db, reports.Query(ZoneInfo("UTC")), now_ms=ms("2026-05-01T23:00:00+00:00"))
    assert [(b["id"], b["entries"], b["costUSD"], b["isActive"], b["isGap"]) for b in data["blocks"]] == [
        ("2026-05-01T10:00:00.000Z", 2, 2.0, False, False),
        ("2026-05-01T15:00:00.000Z", 1, 1.0, False, False),
        ("gap-2026-05-01T20:01:00.000Z", 0, 0.0, False, True),
        ("2026-05-01T22:00:00.000Z", 1, 1.0, True, False),
    ]


def test_an_active_block_has_a_burn_rate_and_a_projection(ledger: Callable[..., Ledger]) -> None:
    db = ledger(at("2026-05-01T10:00:00+00:00"), at("2026-05-01T11:00:00+00:00"))
    [block] = blocks.report(db, reports.Query(ZoneInfo("UTC")), now_ms=ms("2026-05-01T12:00:00+00:00"))["blocks"]
    assert block["burnRate"]["costPerHour"] == 2.0
    assert block["projection"] == {"totalTokens": 8_000_000, "totalCost": 8.0, "remainingMinutes": 180}
    assert block["endTime"] == "2026-05-01T15:00:00.000Z"
