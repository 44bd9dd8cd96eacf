"""What the Admin API billed, kept per UTC day: each read replaces the days it covered, whole.

A day's figures can change for a while after it ends (late usage, corrections), so a read never merges into a
stored day; it deletes the day's rows and inserts what it read, in one transaction. Days older than `OPEN_DAYS`
are taken as final: a restart reads from `first_unfinished_day` on, never a final day it already has.

Claude Code analytics also feed durable counters (`analytics.<column>.<actor>` in `counters`), in the same
transaction: a read adds what it brought beyond the stored days it replaces, so the counters only grow (a day
corrected downwards keeps what was counted), as the usage counters do.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Literal

from exporter.sources.anthropic_admin import ClaudeCodeDay, ClaudeCodeModel, CostDay, MessagesDay

Kind = Literal["usage", "cost", "claude_code"]
Row = MessagesDay | CostDay | ClaudeCodeDay
OPEN_DAYS = 3  # today and the two days before it may still change
TABLES: dict[Kind, str] = {"usage": "billing_usage_day", "cost": "billing_cost_day", "claude_code": "claude_code_day"}
_INSERT: dict[Kind, str] = {
    "usage": "INSERT INTO billing_usage_day VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT DO UPDATE SET uncached_input = uncached_input + excluded.uncached_input,"
    " cache_write_5m = cache_write_5m + excluded.cache_write_5m,"
    " cache_write_1h = cache_write_1h + excluded.cache_write_1h,"
    " cache_read = cache_read + excluded.cache_read, output = output + excluded.output,"
    " web_search = web_search + excluded.web_search",
    "cost": "INSERT INTO billing_cost_day VALUES (?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT DO UPDATE SET cost_nanos = cost_nanos + excluded.cost_nanos",
    "claude_code": "INSERT INTO claude_code_day VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT DO UPDATE SET sessions = sessions + excluded.sessions,"
    " lines_added = lines_added + excluded.lines_added, lines_removed = lines_removed + excluded.lines_removed,"
    " commits = commits + excluded.commits, pull_requests = pull_requests + excluded.pull_requests,"
    " est_cost_nanos = est_cost_nanos + excluded.est_cost_nanos",
}


def _values(row: Row) -> tuple[str | int, ...]:
    # Null dimensions become '' (SQLite's primary keys treat NULLs as distinct); two rows that differ only in a
    # null and a '' are summed by the insert's ON CONFLICT rather than one of them lost.
    d = row.day.isoformat()
    if isinstance(row, MessagesDay):
        dims = (row.model, row.workspace_id, row.api_key_id, row.account_id, row.service_tier, row.context_window)
        counts = (
            row.uncached_input_tokens,
            row.cache_write_5m_tokens,
            row.cache_write_1h_tokens,
            row.cache_read_tokens,
            row.output_tokens,
            row.web_search_requests,
        )
        return (d, *(v or "" for v in dims), *counts)
    if isinstance(row, CostDay):
        cost_dims = (
            row.workspace_id,
            row.description,
            row.model,
            row.cost_type,
            row.token_type,
            row.service_tier,
            row.context_window,
        )
        return (d, *(v or "" for v in cost_dims), row.cost_nano_usd)
    return (
        d,
        row.actor_type,
        row.actor,
        row.customer_type or "",
        row.terminal_type or "",
        row.sessions,
        row.lines_added,
        row.lines_removed,
        row.commits,
        row.pull_requests,
        sum(m.estimated_cost_nano_usd for m in row.models),
    )


def replace_days(db: sqlite3.Connection, kind: Kind, days: Iterable[date], rows: Sequence[Row]) -> None:
    """Replace each of `days` with the `rows` read for it (none: the day is emptied), in one transaction.

    `days` are the days the read covered; a row outside them is an error, since it would be added to a day
    that is not cleared first. `db` is in autocommit mode (isolation_level=None), as the ledger's connection is.
    """
    covered = {day.isoformat() for day in days}
    if not covered:
        return
    values = [_values(row) for row in rows]
    stray = sorted({str(v[0]) for v in values} - covered)
    if stray:
        raise ValueError(f"rows for days the read did not cover: {', '.join(stray)}")
    table = TABLES[kind]
    db.execute("BEGIN IMMEDIATE")
    try:
        before = _analytics(db, covered) if kind == "claude_code" else {}
        db.executemany(f"DELETE FROM {table} WHERE day = ?", [(day,) for day in sorted(covered)])
        db.executemany(_INSERT[kind], values)
        if kind == "claude_code":
            _count_analytics(db, before, _analytics(db, covered))
        # A day read empty leaves no row behind: noted here, so a restart does not read it again.
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO UPDATE SET value = max(value, excluded.value)",
            (f"billing.read_until.{kind}", max(covered)),
        )
        # ... and the first day read, so that a report tells a day billed nothing from a day never read.
        db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT DO UPDATE SET value = min(value, excluded.value)",
            (f"billing.read_from.{kind}", min(covered)),
        )
        if kind == "claude_code":
            _replace_models(db, sorted(covered), [row for row in rows if isinstance(row, ClaudeCodeDay)])
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


ANALYTICS = ("sessions", "lines_added", "lines_removed", "commits", "pull_requests")  # claude_code_day's counts


def _analytics(db: sqlite3.Connection, days: set[str]) -> dict[tuple[str, str], int]:
    """(actor, column) -> the sum over `days`, actors in the order first seen (their first day, then by name)."""
    sums = ", ".join(f"sum({column})" for column in ANALYTICS)
    rows = db.execute(
        f"SELECT actor, {sums} FROM claude_code_day WHERE day IN ({','.join('?' * len(days))})"
        " GROUP BY actor ORDER BY min(day), actor",
        sorted(days),
    )
    return {(actor, column): n for actor, *counts in rows for column, n in zip(ANALYTICS, counts, strict=True)}


def _count_analytics(
    db: sqlite3.Connection, before: dict[tuple[str, str], int], after: dict[tuple[str, str], int]
) -> None:
    grown = [
        (f"analytics.{column}.{actor}", n - before.get((actor, column), 0)) for (actor, column), n in after.items()
    ]
    db.executemany(
        "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT DO UPDATE SET value = value + excluded.value",
        [(name, n) for name, n in grown if n > 0],
    )


def analytics(db: sqlite3.Connection) -> list[tuple[str, str, int]]:
    """The Claude Code counters as (actor, column, value), actors in the order their first count came."""
    rows = db.execute("SELECT name, value FROM counters WHERE name LIKE 'analytics.%' ORDER BY rowid")
    found = []
    for name, value in rows:
        column, _, actor = name.removeprefix("analytics.").partition(".")
        found.append((actor, column, int(value)))
    return found


def newest_day(db: sqlite3.Connection, kind: Kind) -> date | None:
    """The newest day a read covered (with rows or without)."""
    (day,) = db.execute(
        f"SELECT max(day) FROM (SELECT max(day) AS day FROM {TABLES[kind]}"
        " UNION ALL SELECT value FROM meta WHERE key = ?)",
        (f"billing.read_until.{kind}",),
    ).fetchone()
    return date.fromisoformat(day) if day else None


def days_read(db: sqlite3.Connection, kind: Kind) -> tuple[date, date] | None:
    """The first and the last day reads covered (with rows or without), or None before any read; a ledger read
    before the first day was noted gives its first stored day."""
    (first,) = db.execute(
        f"SELECT min(day) FROM (SELECT min(day) AS day FROM {TABLES[kind]}"
        " UNION ALL SELECT value FROM meta WHERE key = ?)",
        (f"billing.read_from.{kind}",),
    ).fetchone()
    through = newest_day(db, kind)
    if first is None or through is None:
        return None
    return date.fromisoformat(first), through


def _replace_models(db: sqlite3.Connection, days: list[str], rows: Sequence[ClaudeCodeDay]) -> None:
    """Claude Code analytics' per-model estimates of `days`, summed over actors (none is kept)."""
    db.executemany("DELETE FROM claude_code_model_day WHERE day = ?", [(day,) for day in days])
    db.executemany(
        "INSERT INTO claude_code_model_day VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO UPDATE SET"
        " input = input + excluded.input, output = output + excluded.output,"
        " cache_read = cache_read + excluded.cache_read, cache_write = cache_write + excluded.cache_write,"
        " est_cost_nanos = est_cost_nanos + excluded.est_cost_nanos",
        [(row.day.isoformat(), row.customer_type or "", *_model_values(m)) for row in rows for m in row.models],
    )


def _model_values(m: ClaudeCodeModel) -> tuple[str, int, int, int, int, int]:
    return (
        m.model,
        m.input_tokens,
        m.output_tokens,
        m.cache_read_tokens,
        m.cache_write_tokens,
        m.estimated_cost_nano_usd,
    )


def first_unfinished_day(db: sqlite3.Connection, kind: Kind, today: date, backfill_days: int = 31) -> date:
    """The first day a read must cover: the earliest day still open (the last `OPEN_DAYS`, today included) or
    the newest day read, whichever comes first; with nothing stored, `backfill_days` back. The newest day read is
    read again: a read covers today, so that day was read while it ran, and after a long stop it is not open."""
    open_from = today - timedelta(days=OPEN_DAYS - 1)
    newest = newest_day(db, kind)
    if newest is None:
        return min(open_from, today - timedelta(days=backfill_days - 1))
    return min(open_from, newest)


def mark_read(db: sqlite3.Connection, at: float) -> None:
    """Notes a complete read at `at` (epoch seconds) and counts it: the counter changes the ledger's version, so
    the daemon's loop, reading through another connection, publishes what was read."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('billing.read_at', ?)", (repr(at),))
        db.execute(
            "INSERT INTO counters (name, value) VALUES ('billing.reads', 1) ON CONFLICT DO UPDATE SET value = value + 1"
        )
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def read_at(db: sqlite3.Connection) -> float | None:
    row = db.execute("SELECT value FROM meta WHERE key = 'billing.read_at'").fetchone()
    return float(row[0]) if row else None
