"""The billing tables: a read replaces its days whole, a restart starts at the first day not yet final."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest

from exporter.ledger.billing import days_read, first_unfinished_day, replace_days
from exporter.ledger.schema import MIGRATIONS, SCHEMA_7
from exporter.ledger.store import Ledger
from exporter.sources.anthropic_admin import ClaudeCodeDay, ClaudeCodeModel, CostDay, MessagesDay
from tests.support.ledgers import roll_back

TODAY = date(2026, 12, 7)


def usage(day: date, model: str | None, output: int, workspace: str | None = None) -> MessagesDay:
    return MessagesDay(day, model, workspace, "apikey_1", None, "standard", None, 10, 1, 2, 3, output, 0)


def cost(day: date, nanos: int, workspace: str | None = None) -> CostDay:
    return CostDay(
        day, workspace, "Claude Sonnet 4 Usage", "claude-sonnet-4", "tokens", "output_tokens", None, None, nanos
    )


def table(ledger: Ledger, sql: str) -> list[tuple[object, ...]]:
    return [tuple(row) for row in ledger.db.execute(sql)]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger(tmp_path)
    yield opened
    opened.close()


def test_a_second_read_of_a_day_replaces_it_and_leaves_other_days_alone(ledger: Ledger) -> None:
    monday, tuesday = TODAY - timedelta(days=2), TODAY - timedelta(days=1)
    replace_days(
        ledger.db,
        "usage",
        [monday, tuesday],
        [usage(monday, "m-a", 5), usage(monday, "m-b", 6), usage(tuesday, "m-a", 7)],
    )
    replace_days(ledger.db, "usage", [monday], [usage(monday, "m-a", 50)])  # a late correction: m-b is gone
    assert table(ledger, "SELECT day, model, output FROM billing_usage_day ORDER BY day, model") == [
        (monday.isoformat(), "m-a", 50),
        (tuesday.isoformat(), "m-a", 7),
    ]


def test_a_day_read_empty_is_emptied(ledger: Ledger) -> None:
    replace_days(ledger.db, "cost", [TODAY], [cost(TODAY, 100)])
    replace_days(ledger.db, "cost", [TODAY], [])
    assert table(ledger, "SELECT * FROM billing_cost_day") == []


def test_null_dimensions_are_stored_as_empty_strings_and_summed_with_them(ledger: Ledger) -> None:
    replace_days(ledger.db, "cost", [TODAY], [cost(TODAY, 100, None), cost(TODAY, 20, "")])
    assert table(ledger, "SELECT workspace, context_window, cost_nanos FROM billing_cost_day") == [("", "", 120)]


def test_claude_code_days_keep_the_actor_and_the_sum_of_the_models_estimates(ledger: Ledger) -> None:
    models = (ClaudeCodeModel("m-a", 1, 2, 3, 4, 1_000), ClaudeCodeModel("m-b", 1, 2, 3, 4, 2_000))
    row = ClaudeCodeDay(TODAY, "user_actor", "a@example.com", "api", "vscode", 3, 40, 5, 2, 1, models)
    replace_days(ledger.db, "claude_code", [TODAY], [row])
    assert table(ledger, "SELECT actor, sessions, lines_added, commits, est_cost_nanos FROM claude_code_day") == [
        ("a@example.com", 3, 40, 2, 3_000)
    ]


def test_claude_code_estimates_per_model_are_summed_over_actors_and_replaced_with_the_day(ledger: Ledger) -> None:
    def row(actor: str, customer: str, nanos: int) -> ClaudeCodeDay:
        models = (ClaudeCodeModel("m-a", 1, 2, 3, 4, nanos), ClaudeCodeModel("m-b", 10, 20, 30, 40, 5))
        return ClaudeCodeDay(TODAY, "user_actor", actor, customer, "vscode", 1, 1, 1, 1, 1, models)

    rows = [row("a@example.com", "api", 1_000), row("b@example.com", "api", 2_000), row("c", "subscription", 7)]
    replace_days(ledger.db, "claude_code", [TODAY], rows)
    assert table(ledger, "SELECT * FROM claude_code_model_day ORDER BY customer_type, model") == [
        (TODAY.isoformat(), "api", "m-a", 2, 4, 6, 8, 3_000),
        (TODAY.isoformat(), "api", "m-b", 20, 40, 60, 80, 10),
        (TODAY.isoformat(), "subscription", "m-a", 1, 2, 3, 4, 7),
        (TODAY.isoformat(), "subscription", "m-b", 10, 20, 30, 40, 5),
    ]
    replace_days(ledger.db, "claude_code", [TODAY], [])
    assert table(ledger, "SELECT * FROM claude_code_model_day") == []


def test_rows_for_a_day_the_read_did_not_cover_are_refused_and_nothing_is_written(ledger: Ledger) -> None:
    yesterday = TODAY - timedelta(days=1)
    with pytest.raises(ValueError, match=yesterday.isoformat()):
        replace_days(ledger.db, "cost", [TODAY], [cost(TODAY, 1), cost(yesterday, 2)])
    assert table(ledger, "SELECT * FROM billing_cost_day") == []


def test_a_failed_insert_rolls_the_whole_read_back(ledger: Ledger) -> None:
    replace_days(ledger.db, "cost", [TODAY], [cost(TODAY, 100)])
    bad = CostDay(TODAY, None, None, None, None, None, None, None, None)  # type: ignore[arg-type]  # NOT NULL fails
    with pytest.raises(sqlite3.IntegrityError):
        replace_days(ledger.db, "cost", [TODAY], [cost(TODAY, 5), bad])
    assert table(ledger, "SELECT cost_nanos FROM billing_cost_day") == [(100,)]


def test_an_empty_ledger_starts_the_backfill_window_back(ledger: Ledger) -> None:
    assert first_unfinished_day(ledger.db, "usage", TODAY, backfill_days=31) == TODAY - timedelta(days=30)


def test_a_restart_after_a_long_stop_reads_from_the_newest_day_read_since_it_was_read_while_it_ran(
    ledger: Ledger,
) -> None:
    old = TODAY - timedelta(days=10)
    replace_days(ledger.db, "usage", [old - timedelta(days=1), old], [usage(old, "m", 1)])
    assert first_unfinished_day(ledger.db, "usage", TODAY) == old
    assert first_unfinished_day(ledger.db, "cost", TODAY) == TODAY - timedelta(days=30)  # each kind on its own


def test_a_restart_rereads_only_the_days_not_yet_final(ledger: Ledger) -> None:
    days = [TODAY - timedelta(days=n) for n in range(10)]
    replace_days(ledger.db, "usage", days, [usage(day, "m", 1) for day in days])
    assert first_unfinished_day(ledger.db, "usage", TODAY) == TODAY - timedelta(days=2)


def test_the_migration_on_an_existing_ledger_adds_the_tables_and_keeps_every_other_one(tmp_path: Path) -> None:
    previous = MIGRATIONS.index(SCHEMA_7)
    Ledger(tmp_path).close()  # a current ledger, then taken back to the previous version with its data
    db = sqlite3.connect(tmp_path / Ledger.FILE, isolation_level=None)
    roll_back(db, previous)
    db.execute("INSERT INTO counters VALUES ('kept', 42)")
    db.execute("INSERT INTO meta VALUES ('kept', 'yes')")
    before = {
        name: db.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    db.close()
    ledger = Ledger(tmp_path)
    try:
        assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        tables = {name for (name,) in ledger.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert tables == set(before) | {
            "billing_usage_day",
            "billing_cost_day",
            "claude_code_day",
            "claude_code_model_day",
        }
        assert {name: ledger.db.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in before} == before
        assert ledger.counters()["kept"] == 42
    finally:
        ledger.close()


def test_days_read_empty_are_not_read_again_after_a_restart_but_the_newest(ledger: Ledger) -> None:
    days = [TODAY - timedelta(days=n) for n in range(10, 20)]
    replace_days(ledger.db, "claude_code", days, [])
    assert first_unfinished_day(ledger.db, "claude_code", TODAY) == TODAY - timedelta(days=10)


def test_the_days_read_span_every_read_even_days_read_empty(ledger: Ledger) -> None:
    assert days_read(ledger.db, "cost") is None
    replace_days(ledger.db, "cost", [TODAY - timedelta(days=30), TODAY - timedelta(days=29)], [])
    replace_days(ledger.db, "cost", [TODAY - timedelta(days=2), TODAY], [cost(TODAY, 100)])
    assert days_read(ledger.db, "cost") == (TODAY - timedelta(days=30), TODAY)
    assert days_read(ledger.db, "usage") is None
