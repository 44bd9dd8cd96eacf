"""Ledgers as an older release left them: today's ledger, its data kept, with the later migrations undone,
so that opening it replays them as an upgrade would."""

from __future__ import annotations

import sqlite3

# The version a migration leads to -> what undoes its tables and columns (data changes need no undoing:
# each migration is safe to replay on what it left).
UNDO = {
    6: "ALTER TABLE requests DROP COLUMN origin;",
    7: "DROP TABLE billing_usage_day; DROP TABLE billing_cost_day; DROP TABLE claude_code_day;",
    8: "DROP TABLE claude_code_model_day;",
}


def roll_back(db: sqlite3.Connection, version: int) -> None:
    """Takes the ledger open in `db` back to schema `version`."""
    for number in sorted((n for n in UNDO if n > version), reverse=True):
        db.executescript(UNDO[number])
    db.execute(f"PRAGMA user_version = {version}")
