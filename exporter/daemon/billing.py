"""The Admin API poller: every interval, the billing reports from the first day not yet final to today, into the
ledger through a connection of its own (SQLite's WAL lets it and the loop write in turn).

Runs on its own thread only when `sources.anthropic_admin.enabled`; a failed poll logs one line (the client's
errors never hold the key) and marks the source down until a poll succeeds. Claude Code analytics names each user
by e-mail address: only what `labels.user` asks for (nothing, a short hash, the address) reaches the ledger.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from exporter.ledger.billing import first_unfinished_day, mark_read, replace_days
from exporter.ledger.store import Ledger, LedgerError
from exporter.metrics.points import user_label
from exporter.sources.anthropic_admin import AdminApiError, AdminClient, ClaudeCodeDay

SOURCE = "anthropic_admin"
log = logging.getLogger("claude_usage_exporter")


def _days(start: date, today: date) -> list[date]:
    return [start + timedelta(days=n) for n in range((today - start).days + 1)]


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def private(rows: list[ClaudeCodeDay], users: str) -> list[ClaudeCodeDay]:
    """The rows with each actor as `labels.user` shapes it: "" when off (the day's users summed), else its label."""
    return [replace(row, actor="" if users == "off" else user_label(users, row.actor)) for row in rows]


def poll_once(client: AdminClient, ledger: Ledger, now: datetime, users: str = "off") -> None:
    """One read of every report, each from its own first unfinished day to today (UTC); raises on any failure,
    having replaced only the reports read in full before it. Buckets and rows not shaped as documented are skipped,
    logged and counted (`claude_usage_exporter_lines_total{source="anthropic_admin"}`), once per read."""
    today = now.astimezone(UTC).date()
    end = _midnight(today + timedelta(days=1))
    start = first_unfinished_day(ledger.db, "usage", today)
    usage = client.messages(_midnight(start), end)
    replace_days(ledger.db, "usage", _days(start, today), usage.rows)
    start = first_unfinished_day(ledger.db, "cost", today)
    cost = client.costs(_midnight(start), end)
    replace_days(ledger.db, "cost", _days(start, today), cost.rows)
    skipped = usage.skipped + cost.skipped
    for day in _days(first_unfinished_day(ledger.db, "claude_code", today), today):
        claude_code = client.claude_code(day)
        replace_days(ledger.db, "claude_code", [day], private(claude_code.rows, users))
        skipped += claude_code.skipped
    mark_read(ledger.db, now.timestamp())
    if skipped:
        log.warning("Admin API read: skipped %s", ", ".join(f"{n} {why}" for why, n in sorted(skipped.items())))
        not_usd = skipped.pop("not USD", 0)
        counts = {f"lines.{SOURCE}.malformed": skipped.total(), f"lines.{SOURCE}.skipped": not_usd}
        ledger.add_counters({name: n for name, n in counts.items() if n})


def run(
    client: AdminClient,
    state_dir: Path,
    *,
    interval: float,
    stop: threading.Event,
    source_up: dict[str, int],
    changed: Callable[[], None],
    users: str = "off",
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    wait: Callable[[float], object] | None = None,
) -> None:
    """Polls until `stop` is set: a poll, then `wait(interval)` (the stop event's own wait unless injected)."""
    pause = wait or stop.wait
    while not stop.is_set():
        try:
            ledger = Ledger(state_dir)
            try:
                poll_once(client, ledger, now(), users)
            finally:
                ledger.close()
        except (AdminApiError, LedgerError, sqlite3.Error, OSError, ValueError) as err:
            log.error("Admin API poll failed: %s", err)
            source_up[SOURCE] = 0
        except Exception as err:  # a thread that dies stops polling in silence: log, mark down, try again
            log.error("Admin API poll failed: %r", err)
            source_up[SOURCE] = 0
        else:
            if source_up.get(SOURCE) != 1:
                log.info("Admin API read: billing data stored")
            source_up[SOURCE] = 1
            changed()
        pause(interval)
