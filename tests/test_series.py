"""Durable counters: equal to the requests they count, restored from a version-1 ledger, never lower."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from exporter.ledger.schema import CONTEXT_BUCKETS, MIGRATIONS
from exporter.ledger.series import context_bucket
from exporter.ledger.store import Ledger
from exporter.pipeline import Pipeline
from tests.support.corpus import generate
from tests.support.lines import assistant_line, write

SERIES = ("usage_series", "tool_series", "switch_series", "sessions", "context_series")


def usage_totals(ledger: Ledger) -> tuple[int, ...]:
    row = ledger.db.execute(
        "SELECT sum(input), sum(output), sum(cache_read), sum(cache_write_5m), sum(cache_write_1h), sum(cost),"
        " sum(uncached_cost), sum(requests) FROM usage_series"
    ).fetchone()
    return tuple(row)


def request_totals(ledger: Ledger) -> tuple[int, ...]:
    row = ledger.db.execute(
        "SELECT sum(input), sum(output), sum(cache_read), sum(cache_write_5m), sum(cache_write_1h),"
        " sum(coalesce(cost, 0)), sum(coalesce(uncached_cost, 0)), count(*) FROM requests"
    ).fetchone()
    return tuple(row)


def dump(ledger: Ledger) -> dict[str, list[tuple[object, ...]]]:
    return {table: sorted(ledger.db.execute(f"SELECT * FROM {table}")) for table in SERIES}


def test_the_durable_counters_add_up_to_the_requests_of_a_corpus(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    truth = generate(claude_dir, seed=3, days=4)
    app = make_app()
    app.refresh()
    assert usage_totals(app.ledger) == request_totals(app.ledger)
    assert usage_totals(app.ledger)[-1] == len(truth.requests)
    (sessions,) = app.ledger.db.execute("SELECT count(DISTINCT session_id) FROM requests").fetchone()
    assert app.ledger.db.execute("SELECT count(*) FROM sessions").fetchone() == (sessions,)
    (context,) = app.ledger.db.execute("SELECT sum(count) FROM context_series").fetchone()
    assert context == len(truth.requests)


def test_a_version_1_ledger_migrates_to_the_counters_a_fresh_ingest_builds(
    make_app: Callable[..., Pipeline], claude_dir: Path, tmp_path: Path
) -> None:
    generate(claude_dir, seed=4, days=3)
    fresh = make_app()
    fresh.refresh()
    # Rebuild the same requests in a version-1 ledger, then open it with this release.
    old = tmp_path / "old"
    old.mkdir()
    db = sqlite3.connect(old / Ledger.FILE)
    db.executescript(MIGRATIONS[0] + "; PRAGMA user_version = 1;")
    db.execute(f"ATTACH '{fresh.ledger.path}' AS fresh")
    columns = ", ".join(row[1] for row in db.execute("PRAGMA table_info(requests)"))  # version 1's
    db.execute(f"INSERT INTO requests SELECT {columns} FROM fresh.requests ORDER BY rowid")
    db.commit()
    db.close()
    migrated = Ledger(old)
    migrated.reprice(fresh.fingerprint, fresh.enrich)  # uncached costs need prices: the first refresh reprices
    assert dump(migrated) == dump(fresh.ledger)


def test_a_provisional_copy_then_the_final_one_only_ever_raises_the_counters(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    path = claude_dir / "projects" / "p" / "s.jsonl"
    write(path, assistant_line("msg_1", "req_1", output=1, final=False))
    app = make_app()
    app.refresh()
    before = usage_totals(app.ledger)
    with path.open("ab") as f:
        f.write(assistant_line("msg_1", "req_1", output=500, tools=["Edit"]))
    app.refresh()
    after = usage_totals(app.ledger)
    assert after[1] - before[1] == 499  # output grew by what the final copy added
    assert after[-1] == before[-1] == 1  # still one request
    assert all(b <= a for a, b in zip(after, before, strict=True))
    assert usage_totals(app.ledger) == request_totals(app.ledger)


def test_a_lower_price_after_repricing_never_lowers_the_cost_counter(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    write(claude_dir / "projects" / "p" / "s.jsonl", assistant_line("msg_1", "req_1", input=1000, output=1000))
    app = make_app()
    app.refresh()
    counted = usage_totals(app.ledger)[5:7]
    cheap = {
        "model": "claude-sonnet-4-5*",
        "input": 0,
        "output": 0,
        "cache_read": 0,
        "cache_write_5m": 0,
        "cache_write_1h": 0,
    }
    repriced = make_app(pricing__overrides=[cheap])
    repriced.refresh()
    assert request_totals(repriced.ledger)[5:7] == (0, 0)  # the ledger holds the new price ...
    assert usage_totals(repriced.ledger)[5:7] == counted  # ... the counters what they already counted
    assert min(counted) > 0


def test_a_main_thread_change_of_model_family_is_one_switch_and_one_session(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    write(
        claude_dir / "projects" / "p" / "s.jsonl",
        assistant_line("msg_1", "req_1", "2026-11-25T21:00:00.000Z", "claude-sonnet-4-5-20250929"),
        assistant_line("msg_2", "req_2", "2026-11-25T21:01:00.000Z", "claude-opus-4-1-20250805"),
        assistant_line("msg_3", "req_3", "2026-11-25T21:02:00.000Z", "claude-opus-4-1-20250805"),
        assistant_line("msg_4", "req_4", "2026-11-25T21:03:00.000Z", "claude-haiku-4-5", agent_id="a1"),
    )
    app = make_app()
    app.refresh()
    assert list(app.ledger.db.execute("SELECT * FROM switch_series")) == [("sonnet", "opus", 1)]
    assert list(app.ledger.db.execute("SELECT project, last_family FROM sessions")) == [("notes-app", "opus")]


def test_context_buckets_hold_their_upper_bound_and_overflow_to_inf() -> None:
    assert [context_bucket(n) for n in (0, 1_000, 1_001, 1_000_000, 1_000_001)] == [0, 0, 1, 9, len(CONTEXT_BUCKETS)]


def test_a_later_copy_that_changes_the_labels_adds_to_the_series_already_counted(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    path = write(claude_dir / "projects" / "p" / "s.jsonl", assistant_line("msg_1", "req_1", output=10))
    app = make_app()
    app.refresh()
    [(interaction, requests)] = app.ledger.db.execute("SELECT interaction, requests FROM usage_series")
    write(path, assistant_line("msg_1", "req_1", output=500, tools=["Edit"]))  # the same response, now an edit
    app.refresh()
    assert list(app.ledger.db.execute("SELECT interaction, requests, output FROM usage_series")) == [
        (interaction, requests, 500)
    ]
    assert [r.interaction for r in app.ledger.requests()] == ["code_change"] != [interaction]
