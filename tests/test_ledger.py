"""The ledger: merge rules, outcome counts, schema versions, file mode, repricing."""

from __future__ import annotations

import sqlite3
import stat
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from exporter.events import MAX_TOOLS, Request, Tokens, UsageEvent
from exporter.ledger.schema import MIGRATIONS
from exporter.ledger.store import Ledger, LedgerError
from exporter.sources.files import FileState

T0 = datetime(2026, 8, 20, 10, 0, tzinfo=UTC)


def event(key: str = "msg_1", **changes: Any) -> UsageEvent:
    base = UsageEvent(
        key=key,
        request_id="req_1",
        timestamp=T0,
        session_id="s1",
        project="acme",
        model="claude-sonnet-4-5-20250929",
        agent="main",
        tokens=Tokens(input=10, output=100, cache_read=1000, cache_write_5m=50, cache_write_1h=0),
        tools=frozenset({"Read"}),
    )
    return base._replace(**changes)


def requests(*events: UsageEvent) -> list[Request]:
    return [Request.from_event(e) for e in events]


def label(r: Request) -> Request:
    return r._replace(interaction="test", category="test", cost=r.tokens.total)


def rows(ledger: Ledger) -> list[Request]:
    return sorted(ledger.requests(), key=lambda r: r.key)


def test_copies_merge_to_the_maximum_of_each_field_and_the_union_of_tools(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    provisional = event(tokens=Tokens(10, 1, 1000, 50, 0), tools=frozenset())
    final = event(tokens=Tokens(10, 100, 900, 50, 7), tools=frozenset({"Edit"}))
    outcomes = ledger.commit(requests(provisional, final), label)
    [merged] = rows(ledger)
    assert merged.tokens == Tokens(10, 100, 1000, 50, 7)
    assert merged.tools == {"Edit"}
    assert merged.copies == 2
    assert outcomes == Counter({"usage": 1, "duplicate": 1})


def test_the_earliest_copy_decides_time_session_project_and_request_id(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    # A fork copies the conversation into a new session; a side question replays it with a new request id.
    ledger.commit(requests(event(session_id="fork", request_id="req_side", timestamp=T0 + timedelta(hours=1))), label)
    ledger.commit(requests(event(session_id="s1", project="acme", request_id="req_1")), label)
    [merged] = rows(ledger)
    assert (merged.session_id, merged.request_id, merged.ts) == ("s1", "req_1", int(T0.timestamp() * 1000))


def test_a_later_batch_with_copies_counts_duplicates_not_usage(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.commit(requests(event("a"), event("b")), label, counts=Counter({"skipped": 3}))
    outcomes = ledger.commit(requests(event("a"), event("a"), event("c")), label)
    assert outcomes == Counter({"usage": 1, "duplicate": 2})
    assert ledger.counters() == {
        "lines.transcripts.usage": 3,
        "lines.transcripts.duplicate": 2,
        "lines.transcripts.skipped": 3,
    }
    assert len(rows(ledger)) == 3


def test_offsets_commit_in_the_same_transaction_as_the_events(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)

    def broken(r: Request) -> Request:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        ledger.commit(requests(event()), broken, files=[FileState(1, 2, 300, "h")])
    assert ledger.file_states() == {}
    assert rows(ledger) == []
    ledger.commit(requests(event()), label, files=[FileState(1, 2, 300, "h")])
    assert ledger.file_states() == {(1, 2): FileState(1, 2, 300, "h")}


def test_the_ledger_file_is_private_and_in_wal_mode(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state")
    assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_a_new_ledger_has_8_kib_pages_and_an_older_one_keeps_its_own(tmp_path: Path) -> None:
    assert Ledger(tmp_path / "new").db.execute("PRAGMA page_size").fetchone()[0] == 8192
    (tmp_path / "old").mkdir()
    older = sqlite3.connect(tmp_path / "old" / Ledger.FILE)  # as releases before it made them
    older.executescript(f"PRAGMA page_size = 4096; PRAGMA journal_mode = WAL; {MIGRATIONS[0]}; PRAGMA user_version = 1")
    older.close()
    ledger = Ledger(tmp_path / "old")
    assert ledger.db.execute("PRAGMA page_size").fetchone()[0] == 4096
    ledger.commit(requests(event()), label)
    assert len(rows(ledger)) == 1


def test_a_ledger_from_a_newer_release_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    Ledger(tmp_path).close()
    db = sqlite3.connect(tmp_path / Ledger.FILE)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(LedgerError, match="newer than this release knows"):
        Ledger(tmp_path)


def test_an_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(LedgerError, match="cannot open the ledger"):
        Ledger(blocker / "state")


def test_reopening_keeps_everything(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.commit(requests(event(reported_cost=Decimal("0.25"))), label)
    ledger.close()
    [again] = rows(Ledger(tmp_path))
    assert again.reported_cost == 250_000_000
    assert again.cost == event().tokens.total


def test_repricing_runs_only_when_the_fingerprint_changes(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.commit(requests(event()), label)
    assert ledger.reprice("v1", lambda r: r._replace(cost=None)) == 1
    assert ledger.reprice("v1", label) == 0
    assert [r.cost for r in rows(ledger)] == [None]
    assert ledger.reprice("v2", label) == 1
    assert [r.cost for r in rows(ledger)] == [event().tokens.total]


def test_offsets_of_files_that_are_gone_are_dropped_but_their_requests_stay(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.commit(requests(event()), label, files=[FileState(1, 2, 30, "h"), FileState(1, 3, 40, "h")])
    ledger.forget_files({(1, 2)})
    assert list(ledger.file_states()) == [(1, 3)]
    assert len(rows(ledger)) == 1


def test_copies_with_more_tools_than_the_cap_keep_the_stored_ones_and_count_no_call_twice(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    first = frozenset(f"tool{i:03}" for i in range(MAX_TOOLS - 1))
    ledger.commit(requests(event(tools=first)), label)
    later = frozenset(f"extra{i:03}" for i in range(10))
    ledger.commit(requests(event(tools=later)), label)
    ledger.commit(requests(event(tools=first | later)), label)
    [merged] = rows(ledger)
    assert merged.tools == first | {"extra000"}
    assert ledger.db.execute("SELECT sum(calls) FROM tool_series").fetchone() == (MAX_TOOLS,)
