"""`report reconcile`: a real ledger with known requests and a known bill give known differences, to the cent, and
each explanation; the command's table and JSON; the bill read by the poller from the fake Admin API."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.daemon.billing import poll_once
from exporter.events import Tokens
from exporter.ledger.billing import mark_read, replace_days
from exporter.ledger.store import Ledger
from exporter.reports.reconcile import model_key, reconcile, usd
from exporter.sources.anthropic_admin import AdminClient, ClaudeCodeDay, ClaudeCodeModel, CostDay, MessagesDay
from tests.support.cli import Run, cli, folders
from tests.support.fakeadmin import (
    claude_code_record,
    cost_result,
    fake_admin,
    key_file,
    message_bucket,
    message_result,
)
from tests.support.lines import assistant_line, at, write
from tests.test_cli import GOLDEN, STYLES

TODAY = date(2026, 11, 10)
MONDAY, TUESDAY = date(2026, 11, 2), date(2026, 11, 3)
SONNET, HAIKU = "claude-sonnet-4-5-20250929", "claude-haiku-4-5-20251001"


def sonnet(when: str) -> Any:
    """$1.80 by our estimate: 100,000 in and 100,000 out at $3 and $15 per million."""
    return at(when, model=SONNET, tokens=Tokens(100_000, 100_000))


def haiku(when: str) -> Any:
    """$1.00 by our estimate: a million in at $1 per million."""
    return at(when, model=HAIKU, tokens=Tokens(1_000_000))


def usage(day: date, model: str | None, uncached: int, output: int = 0) -> MessagesDay:
    return MessagesDay(day, model, None, "apikey_01", None, "standard", "0-200k", uncached, 0, 0, 0, output, 0)


def cost(day: date, model: str | None, cents: str, token_type: str = "output_tokens") -> CostDay:
    nanos = int(Decimal(cents) * 10_000_000)
    kind = "tokens" if model else "web_search"
    return CostDay(day, None, f"{model} usage", model, kind, token_type if model else None, None, None, nanos)


def claude_code(day: date, customer: str, cents: int) -> ClaudeCodeDay:
    model = ClaudeCodeModel(SONNET, 100_000, 100_000, 0, 0, cents * 10_000_000)
    return ClaudeCodeDay(day, "user_actor", f"{customer}@example.com", customer, "vscode", 1, 10, 2, 1, 0, (model,))


def bill(db: Ledger, days: list[date], usages: list[MessagesDay], costs: list[CostDay]) -> None:
    replace_days(db.db, "usage", days, usages)
    replace_days(db.db, "cost", days, costs)


@pytest.fixture
def known(ledger: Callable[..., Ledger]) -> Ledger:
    """Monday: Sonnet $1.80 ours, $2.00 billed with more tokens; Haiku $1.00 on both sides; 1.5 cents of web
    search the bill names no model for. Tuesday: Sonnet $1.80 ours, nothing billed, Claude Code analytics shows a
    subscription user."""
    db = ledger(sonnet("2026-11-02T10:00:00+00:00"), haiku("2026-11-02T11:00:00+00:00"))
    db = ledger(sonnet("2026-11-03T10:00:00+00:00"))
    bill(
        db,
        [MONDAY, TUESDAY],
        [usage(MONDAY, "claude-sonnet-4-5-20250929", 110_000, 120_000), usage(MONDAY, HAIKU, 1_000_000)],
        [
            cost(MONDAY, "claude-sonnet-4-5", "33", "uncached_input_tokens"),
            cost(MONDAY, "claude-sonnet-4-5", "167"),
            cost(MONDAY, "claude-haiku-4-5", "100", "uncached_input_tokens"),
            cost(MONDAY, None, "1.5"),
        ],
    )
    replace_days(db.db, "claude_code", [TUESDAY], [claude_code(TUESDAY, "subscription", 180)])
    return db


def rows(data: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(day, model, ours, billed, difference, drift, explanations) per model row and per day total."""
    out = []
    for day in data["days"]:
        for row in [*day["models"], {**day, "model": "total"}]:
            billed = row["billed"]["costUSD"] if row["billed"] else None
            values = (row["ours"]["costUSD"], billed, row["differenceUSD"], row["drift"], row["explanations"])
            out.append((day["date"], row["model"], *values))
    return out


def test_each_model_and_day_is_ours_beside_the_bill_with_its_explanation(known: Ledger) -> None:
    data = reconcile(known.db, MONDAY, TUESDAY, TODAY, "Europe/Berlin")
    assert rows(data) == [
        ("2026-11-02", "claude-haiku-4-5", "1.00", "1.00", "0.00", "0.0000", ["match"]),
        ("2026-11-02", "claude-sonnet-4-5", "1.80", "2.00", "-0.20", "-0.1000", ["other_clients"]),
        ("2026-11-02", "(no model)", "0.00", "0.015", "-0.015", "-1.0000", ["no_model"]),
        ("2026-11-02", "total", "2.80", "3.015", "-0.215", "-0.0713", ["other_clients"]),
        ("2026-11-03", "claude-sonnet-4-5", "1.80", "0.00", "1.80", None, ["not_billed_per_token"]),
        ("2026-11-03", "total", "1.80", "0.00", "1.80", None, ["not_billed_per_token", "subscription"]),
    ]
    monday = data["days"][0]
    assert monday["models"][1]["ours"]["tokens"] == {
        "input": 100_000,
        "output": 100_000,
        "cacheRead": 0,
        "cacheWrite5m": 0,
        "cacheWrite1h": 0,
    }
    assert monday["models"][1]["billed"]["tokens"]["output"] == 120_000
    assert (monday["final"], monday["billRead"], monday["claudeCode"]) == (True, True, None)
    assert data["days"][1]["claudeCode"] == {"estimatedCostUSD": "1.80", "byCustomerType": {"subscription": "1.80"}}
    assert [row["claudeCode"] for row in monday["models"]] == [None, None, None]
    assert data["days"][1]["models"][0]["claudeCode"] == {"estimatedCostUSD": "1.80"}
    assert (data["timezone"], data["reportTimezone"]) == ("UTC", "Europe/Berlin")
    assert data["totals"]["readDays"]["differenceUSD"] == "1.585"
    assert set(data["explanations"]) == {"match", "other_clients", "no_model", "not_billed_per_token", "subscription"}


def test_the_document_keeps_its_documented_keys(known: Ledger) -> None:
    data = reconcile(known.db, MONDAY, TUESDAY, TODAY, "UTC")
    assert list(data) == [
        "since",
        "until",
        "timezone",
        "reportTimezone",
        "note",
        "billing",
        "days",
        "totals",
        "explanations",
    ]
    assert list(data["billing"]) == ["read", "readAt", "firstDay", "billedThrough", "openDays", "hint"]
    day_keys = ["date", "final", "billRead", "models", "ours", "billed", "differenceUSD", "drift", "explanations"]
    assert list(data["days"][0]) == [*day_keys, "claudeCode"]
    assert list(data["days"][0]["models"][0]) == ["model", *day_keys[4:], "claudeCode"]
    assert list(data["totals"]) == ["ours", "readDays"]


def test_money_stays_exact_in_fractions_of_a_cent(ledger: Callable[..., Ledger]) -> None:
    db = ledger(haiku("2026-11-02T10:00:00+00:00"))
    # 0.1 + 0.2 cents, a thousand times: floats would drift, nano-dollars do not
    costs = [cost(MONDAY, "claude-haiku-4-5", "0.1", f"t{n}") for n in range(1000)]
    costs += [cost(MONDAY, "claude-haiku-4-5", "0.2", f"u{n}") for n in range(1000)]
    bill(db, [MONDAY], [usage(MONDAY, HAIKU, 1_000_000)], costs)
    [row] = reconcile(db.db, MONDAY, MONDAY, TODAY, "UTC")["days"][0]["models"]
    assert (row["billed"]["costUSD"], row["differenceUSD"], row["explanations"]) == ("3.00", "-2.00", ["prices"])
    assert [usd(n) for n in (0, 1, 10_000_000, 1_234_567_891, -5_000_000_000)] == [
        "0.00",
        "0.000000001",
        "0.01",
        "1.234567891",
        "-5.00",
    ]


def test_days_within_the_open_days_are_not_final(ledger: Callable[..., Ledger]) -> None:
    db = ledger(haiku("2026-11-07T12:00:00+00:00"), haiku("2026-11-08T12:00:00+00:00"))
    days = [date(2026, 11, 7), date(2026, 11, 8)]
    bill(db, days, [], [cost(day, "claude-haiku-4-5", "100") for day in days])
    data = reconcile(db.db, days[0], days[1], TODAY, "UTC")  # open: the 8th, 9th and 10th
    assert [(d["date"], d["final"], d["explanations"]) for d in data["days"]] == [
        ("2026-11-07", True, ["match"]),
        ("2026-11-08", False, ["match", "not_final"]),
    ]


def test_a_day_whose_bill_was_last_read_while_it_ran_is_not_final(ledger: Callable[..., Ledger]) -> None:
    db = ledger(haiku("2026-11-02T10:00:00+00:00"))
    bill(db, [MONDAY], [], [cost(MONDAY, "claude-haiku-4-5", "40")])
    mark_read(db.db, datetime(2026, 11, 2, 12, tzinfo=UTC).timestamp())  # serve stopped at noon, and stays stopped
    [day] = reconcile(db.db, MONDAY, MONDAY, TODAY, "UTC")["days"]
    assert (day["final"], day["explanations"]) == (False, ["not_billed_per_token", "not_final"])


def test_with_no_bill_stored_every_day_says_so_and_how_to_enable_the_source(ledger: Callable[..., Ledger]) -> None:
    db = ledger(sonnet("2026-11-02T10:00:00+00:00"))
    data = reconcile(db.db, MONDAY, MONDAY, TODAY, "UTC")
    assert rows(data) == [
        ("2026-11-02", "claude-sonnet-4-5", "1.80", None, None, None, ["not_read"]),
        ("2026-11-02", "total", "1.80", None, None, None, ["not_read"]),
    ]
    assert data["billing"]["read"] is False
    assert "sources.anthropic_admin is off" in data["billing"]["hint"]
    assert "key_file" in data["billing"]["hint"]


def test_a_day_read_empty_is_billed_nothing_and_a_day_before_the_first_read_is_not_read(
    ledger: Callable[..., Ledger],
) -> None:
    db = ledger(haiku("2026-11-01T10:00:00+00:00"), haiku("2026-11-02T10:00:00+00:00"))
    bill(db, [MONDAY], [], [])  # read, and nothing billed
    data = reconcile(db.db, date(2026, 11, 1), MONDAY, TODAY, "UTC")
    assert [(d["date"], d["billRead"], d["explanations"]) for d in data["days"]] == [
        ("2026-11-01", False, ["not_read"]),
        ("2026-11-02", True, ["not_billed_per_token"]),
    ]
    assert data["billing"]["hint"] is None


def test_the_same_tokens_at_another_cost_point_at_our_prices(ledger: Callable[..., Ledger]) -> None:
    db = ledger(haiku("2026-11-02T10:00:00+00:00"))
    bill(db, [MONDAY], [usage(MONDAY, HAIKU, 1_000_000)], [cost(MONDAY, "claude-haiku-4-5", "125")])
    [row] = reconcile(db.db, MONDAY, MONDAY, TODAY, "UTC")["days"][0]["models"]
    assert (row["differenceUSD"], row["explanations"]) == ("-0.25", ["prices"])


def test_requests_of_an_unpriced_model_account_for_a_higher_bill(ledger: Callable[..., Ledger]) -> None:
    db = ledger(haiku("2026-11-02T10:00:00+00:00"), at("2026-11-02T11:00:00+00:00", model="claude-mystery-9"))
    bill(db, [MONDAY], [], [cost(MONDAY, "claude-haiku-4-5", "100"), cost(MONDAY, "claude-mystery-9", "50")])
    data = reconcile(db.db, MONDAY, MONDAY, TODAY, "UTC")
    assert rows(data) == [
        ("2026-11-02", "claude-haiku-4-5", "1.00", "1.00", "0.00", "0.0000", ["match"]),
        ("2026-11-02", "claude-mystery-9", "0.00", "0.50", "-0.50", "-1.0000", ["unpriced"]),
        ("2026-11-02", "total", "1.00", "1.50", "-0.50", "-0.3333", ["unpriced"]),
    ]
    assert data["days"][0]["ours"]["unpricedRequests"] == 1


def test_a_model_the_cost_report_names_unlike_anything_else_is_compared_by_family(
    ledger: Callable[..., Ledger],
) -> None:
    db = ledger(sonnet("2026-11-02T10:00:00+00:00"), haiku("2026-11-02T11:00:00+00:00"))
    bill(db, [MONDAY], [], [cost(MONDAY, "Claude Sonnet 4.5", "180"), cost(MONDAY, "claude-haiku-4-5", "100")])
    data = reconcile(db.db, MONDAY, MONDAY, TODAY, "UTC")
    assert [(r["model"], r["ours"]["costUSD"], r["billed"]["costUSD"]) for r in data["days"][0]["models"]] == [
        ("claude-haiku-4-5", "1.00", "1.00"),
        ("sonnet (family)", "1.80", "1.80"),
    ]


def test_model_names_lose_their_date_suffix_only() -> None:
    assert [model_key(m) for m in (SONNET, "claude-sonnet-4-5@20250929", "Claude-Opus-4-1", "claude-3-5-haiku")] == [
        "claude-sonnet-4-5",
        "claude-sonnet-4-5",
        "claude-opus-4-1",
        "claude-3-5-haiku",
    ]


def test_days_are_utc_days_and_since_and_until_are_inclusive(ledger: Callable[..., Ledger]) -> None:
    db = ledger(
        haiku("2026-11-01T23:59:59.999+00:00"),
        haiku("2026-11-02T00:00:00+00:00"),
        haiku("2026-11-03T01:30:00+02:00"),  # 23:30 UTC on the 2nd, whatever the report's zone
        haiku("2026-11-03T23:59:59.999+00:00"),
        haiku("2026-11-04T00:00:00+00:00"),
    )
    data = reconcile(db.db, MONDAY, TUESDAY, TODAY, "Asia/Tokyo")
    assert [(d["date"], d["ours"]["requests"]) for d in data["days"]] == [("2026-11-02", 2), ("2026-11-03", 1)]
    assert data["totals"]["ours"]["costUSD"] == "3.00"


def test_an_empty_range_has_no_days(known: Ledger) -> None:
    data = reconcile(known.db, date(2026, 10, 1), date(2026, 10, 31), TODAY, "UTC")
    assert (data["days"], data["totals"]["ours"]["costUSD"], data["explanations"]) == ([], "0.00", {})


# The command


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    return cli(tmp_path, monkeypatch)


def known_folders(tmp_path: Path) -> list[str]:
    """The known ledger as the command finds it: Monday and Tuesday's requests in a transcript, the bill stored."""
    noon = "T10:00:00.000Z"
    write(
        tmp_path / "claude/projects/p/s.jsonl",
        assistant_line("msg_1", "req_1", f"{MONDAY}{noon}", SONNET, input=100_000, output=100_000),
        assistant_line("msg_2", "req_2", f"{MONDAY}T11:00:00.000Z", HAIKU, input=1_000_000, output=0),
        assistant_line("msg_3", "req_3", f"{TUESDAY}{noon}", SONNET, input=100_000, output=100_000),
    )
    db = Ledger(tmp_path / "state")
    try:
        bill(
            db,
            [MONDAY, TUESDAY],
            [usage(MONDAY, SONNET, 110_000, 120_000), usage(MONDAY, HAIKU, 1_000_000)],
            [cost(MONDAY, "claude-sonnet-4-5", "200"), cost(MONDAY, "claude-haiku-4-5", "100")],
        )
        replace_days(db.db, "claude_code", [TUESDAY], [claude_code(TUESDAY, "subscription", 180)])
    finally:
        db.close()
    return [*folders(tmp_path), "--since", str(MONDAY), "--until", str(TUESDAY)]


def test_the_command_prints_the_table_to_the_cent_with_the_explanations(run: Run, tmp_path: Path) -> None:
    out = run("report", "reconcile", *known_folders(tmp_path))
    lines = [line.split() for line in out.splitlines()]
    assert lines[2][:7] == ["2026-11-02", "$2.80", "$3.00", "-$0.20", "other", "clients", "-6.7%"]
    assert lines[4][:8] == ["└", "claude-sonnet-4-5", "$1.80", "$2.00", "-$0.20", "other", "clients", "-10.0%"]
    tuesday = next(line for line in lines if line[0] == "2026-11-03")
    assert tuesday[1:9] == ["$1.80", "$0.00", "+$1.80", "not", "billed", "per", "token,", "subscription"]
    assert tuesday[9:11] == ["-", "$1.80"]  # no drift from a bill of 0; Claude Code analytics' estimate
    assert "Days are UTC days on both sides" in out
    assert "other clients: the bill is higher" in out
    assert "subscription: Claude Code analytics reports subscription use" in out


def test_the_command_prints_json_to_the_cent(run: Run, tmp_path: Path) -> None:
    data = orjson.loads(run("report", "reconcile", "--json", *known_folders(tmp_path)))
    assert [(d["date"], d["ours"]["costUSD"], d["billed"]["costUSD"], d["explanations"]) for d in data["days"]] == [
        ("2026-11-02", "2.80", "3.00", ["other_clients"]),
        ("2026-11-03", "1.80", "0.00", ["not_billed_per_token", "subscription"]),
    ]


def test_the_command_counts_utc_days_whatever_the_time_zone(run: Run, tmp_path: Path) -> None:
    args = known_folders(tmp_path)
    utc = orjson.loads(run("report", "reconcile", "--json", *args))
    tokyo = orjson.loads(run("report", "reconcile", "--json", *args, "-z", "Asia/Tokyo"))
    assert tokyo["days"] == utc["days"]
    assert (tokyo["timezone"], tokyo["reportTimezone"]) == ("UTC", "Asia/Tokyo")


def test_the_command_without_a_bill_says_how_to_enable_the_source(run: Run, tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s.jsonl", assistant_line("msg_1", "req_1", "2026-11-02T10:00:00.000Z"))
    out = run("report", "reconcile", "--since", "2026-11-01", *folders(tmp_path))
    assert "no bill" in out
    assert "sources.anthropic_admin is off" in " ".join(out.split())


def test_the_command_with_nothing_in_range_says_so(run: Run, tmp_path: Path) -> None:
    args = known_folders(tmp_path)[:-4]
    out = run("report", "reconcile", "--since", "2026-10-01", "--until", "2026-10-31", *args)
    assert out.startswith("No usage and no bill from 2026-10-01 to 2026-10-31 (UTC days).\nDays are UTC days")


@pytest.mark.parametrize("flag", [["--by", "project"], ["--breakdown"], ["--mode", "calculate"]])
def test_options_of_other_reports_are_refused(run: Run, tmp_path: Path, flag: list[str]) -> None:
    out = run("report", "reconcile", *flag, "--state-dir", str(tmp_path / "state"), code=2)
    assert out.splitlines()[-1] == f"Error: report reconcile does not take {flag[0]}"


def test_the_bill_read_by_the_poller_from_the_fake_admin_api_reconciles(run: Run, tmp_path: Path) -> None:
    write(
        tmp_path / "claude/projects/p/s.jsonl",
        assistant_line("msg_1", "req_1", f"{MONDAY}T10:00:00.000Z", SONNET, input=100_000, output=100_000),
    )
    start = datetime(2026, 11, 2, tzinfo=UTC)
    with fake_admin() as (base, state):
        state.messages = [message_bucket(start, timedelta(days=1), message_result(110_000, 120_000))]
        state.costs = [
            message_bucket(start, timedelta(days=1), cost_result("30", token_type="uncached_input_tokens")),
            message_bucket(start, timedelta(days=1), cost_result("170.125")),
        ]
        state.claude_code = {"2026-11-02": [claude_code_record(MONDAY, "dev@example.com", cents=175.25)]}
        state.page_size = 1  # every report over several pages
        ledger = Ledger(tmp_path / "state")
        try:
            poll_once(AdminClient(key_file(tmp_path), base), ledger, datetime(2026, 11, 10, 6, tzinfo=UTC))
        finally:
            ledger.close()
    out = run("report", "reconcile", "--json", "--until", "2026-11-10", *folders(tmp_path))
    assert "example.com" not in out  # no actor leaves the ledger
    data = orjson.loads(out)
    assert data["billing"]["firstDay"] == "2026-10-11"  # the first read reaches 31 days back
    assert data["since"] == "2026-10-11"
    [day] = data["days"]
    assert (day["date"], day["ours"]["costUSD"], day["billed"]["costUSD"], day["differenceUSD"]) == (
        "2026-11-02",
        "1.80",
        "2.00125",
        "-0.20125",
    )
    assert day["billed"]["tokens"]["input"] == 110_000
    assert day["explanations"] == ["other_clients"]
    assert day["models"][0]["claudeCode"] == {"estimatedCostUSD": "1.7525"}
    assert day["claudeCode"] == {"estimatedCostUSD": "1.7525", "byCustomerType": {"api": "1.7525"}}


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("width", [80, 120])
def test_the_table_matches_its_golden_rendering_at_80_and_120_columns(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, width: int, style: str
) -> None:
    for name, value in STYLES[style].items():
        monkeypatch.setenv(name, value)
    out = run("report", "reconcile", "--width", str(width), *known_folders(tmp_path))
    golden = GOLDEN / f"report-reconcile-{width}-{style}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":  # regenerate after a deliberate change, then read the diff
        golden.write_text(out)
    assert out == golden.read_text()
    assert max(len(row) for row in out.splitlines()) <= width
