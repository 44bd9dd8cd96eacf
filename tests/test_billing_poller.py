"""The Admin API poller against the fake Admin API on loopback, and the billing metrics it leads to."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exporter.daemon.billing import SOURCE, run
from exporter.ledger.store import Ledger
from exporter.metrics.exposition import read_snapshot
from exporter.metrics.points import LabelPolicy
from exporter.sources.anthropic_admin import AdminClient
from tests.support.fakeadmin import (
    KEY,
    AdminState,
    Fault,
    claude_code_record,
    cost_result,
    fake_admin,
    key_file,
    message_bucket,
    message_result,
)

NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
YESTERDAY = datetime(2026, 12, 6, tzinfo=UTC)
DAY = timedelta(days=1)


def short_hash(person: str) -> str:
    return hashlib.sha256(person.encode()).hexdigest()[:12]


@pytest.fixture
def fake() -> Iterator[tuple[str, AdminState]]:
    with fake_admin() as running:
        yield running


@pytest.fixture
def client(fake: tuple[str, AdminState], tmp_path: Path) -> AdminClient:
    return AdminClient(key_file(tmp_path), fake[0], sleep=lambda _: None, attempts=1)


def poll(client: AdminClient, state_dir: Path, polls: int = 1, users: str = "off") -> tuple[dict[str, int], list[int]]:
    """Runs the poller for `polls` polls on this thread; its wait ends it after the last."""
    stop = threading.Event()
    source_up: dict[str, int] = {}
    changes: list[int] = []
    waits: list[float] = []

    def wait(interval: float) -> None:
        waits.append(interval)
        if len(waits) >= polls:
            stop.set()

    run(
        client,
        state_dir,
        interval=900,
        stop=stop,
        source_up=source_up,
        changed=lambda: changes.append(1),
        users=users,
        now=lambda: NOW,
        wait=wait,
    )
    assert waits == [900] * polls
    return source_up, changes


def test_a_poll_stores_every_report_per_day_and_marks_the_source_up(fake, client, tmp_path) -> None:
    _, state = fake
    state.messages = [message_bucket(YESTERDAY, DAY, message_result(100, 200, read=300))]
    state.costs = [message_bucket(YESTERDAY, DAY, cost_result("1234.5"))]
    state.claude_code = {YESTERDAY.date().isoformat(): [claude_code_record(YESTERDAY.date(), "a@example.com")]}
    source_up, changes = poll(client, tmp_path)
    assert (source_up, changes) == ({SOURCE: 1}, [1])
    ledger = Ledger(tmp_path)
    try:
        db = ledger.db
        assert db.execute("SELECT day, uncached_input, output, cache_read FROM billing_usage_day").fetchall() == [
            ("2026-12-06", 100, 200, 300)
        ]
        assert db.execute("SELECT day, cost_nanos FROM billing_cost_day").fetchall() == [("2026-12-06", 12_345 * 10**6)]
        assert db.execute("SELECT actor, est_cost_nanos FROM claude_code_day").fetchall() == [("", 1505 * 10**6)]
        # the first read backfills 31 days, from 2026-11-07, one Claude Code call per day
        first = next(s for s in state.seen if s.path.endswith("/messages"))
        assert first.query["starting_at"] == ["2026-11-07T00:00:00Z"]
        assert sum(s.path.endswith("/claude_code") for s in state.seen) == 31
    finally:
        ledger.close()


@pytest.mark.parametrize(
    ("users", "stored"),
    [
        ("off", ["", ""]),
        ("hash", sorted(short_hash(a) for a in ("a@example.com", "b@example.com"))),
        ("email", ["a@example.com", "b@example.com"]),
    ],
)
def test_only_what_labels_user_asks_for_of_an_address_reaches_the_ledger(
    fake, client, tmp_path, users: str, stored: list[str]
) -> None:
    _, state = fake
    day = YESTERDAY.date()
    state.claude_code = {day.isoformat(): [claude_code_record(day, a) for a in ("a@example.com", "b@example.com")]}
    poll(client, tmp_path, users=users)
    ledger = Ledger(tmp_path)
    try:
        rows = ledger.db.execute("SELECT actor, sessions FROM claude_code_day ORDER BY actor").fetchall()
        dump = "\n".join(ledger.db.iterdump())
    finally:
        ledger.close()
    assert rows == [(actor, 3 * stored.count(actor)) for actor in sorted(set(stored))]  # off: the users summed
    assert ("example.com" in dump) == (users == "email")


def test_a_second_poll_rereads_only_the_days_not_yet_final_and_takes_their_corrections(fake, client, tmp_path) -> None:
    _, state = fake
    state.costs = [message_bucket(YESTERDAY, DAY, cost_result("100"))]
    poll(client, tmp_path)
    state.costs = [message_bucket(YESTERDAY, DAY, cost_result("250"))]  # a late correction
    state.seen.clear()
    poll(client, tmp_path)
    codes = sorted(s.query["starting_at"][0] for s in state.seen if s.path.endswith("/claude_code"))
    assert codes == ["2026-12-05", "2026-12-06", "2026-12-07"]
    (cost,) = (s for s in state.seen if s.path.endswith("/cost_report"))
    assert cost.query["starting_at"] == ["2026-12-05T00:00:00Z"]
    ledger = Ledger(tmp_path)
    try:
        assert ledger.db.execute("SELECT cost_nanos FROM billing_cost_day").fetchall() == [(250 * 10**7,)]
    finally:
        ledger.close()


def test_a_refused_key_logs_one_line_without_the_key_and_marks_the_source_down(fake, client, tmp_path, caplog) -> None:
    _, state = fake
    state.faults = [Fault(401)]
    with caplog.at_level(logging.ERROR, logger="claude_usage_exporter"):
        source_up, changes = poll(client, tmp_path)
    assert (source_up, changes) == ({SOURCE: 0}, [])
    (record,) = caplog.records
    assert "Admin API poll failed" in record.getMessage()
    assert KEY not in caplog.text


def test_the_source_comes_back_up_at_the_next_good_poll(fake, client, tmp_path) -> None:
    _, state = fake
    state.faults = [Fault(500)]  # attempts=1: the first poll fails, the second reads
    source_up, changes = poll(client, tmp_path, polls=2)
    assert (source_up, changes) == ({SOURCE: 1}, [1])


def test_rows_not_shaped_as_documented_are_skipped_logged_and_counted_and_the_rest_is_stored(
    fake, client, tmp_path, caplog
) -> None:
    _, state = fake
    bad_cost = cost_result("1.5") | {"currency": "EUR"}
    state.costs = [message_bucket(YESTERDAY, DAY, cost_result("100"), bad_cost, {"amount": None})]
    state.messages = [message_bucket(YESTERDAY, DAY, message_result(10, 20)), {"starting_at": "never"}]
    with caplog.at_level(logging.WARNING, logger="claude_usage_exporter"):
        source_up, _ = poll(client, tmp_path)
    assert source_up == {SOURCE: 1}
    assert "Admin API read: skipped 1 malformed bucket, 1 malformed row, 1 not USD" in caplog.text
    ledger = Ledger(tmp_path)
    try:
        assert ledger.db.execute("SELECT cost_nanos FROM billing_cost_day").fetchall() == [(10**9,)]
        assert ledger.db.execute("SELECT output FROM billing_usage_day").fetchall() == [(20,)]
        points = read_snapshot(ledger, LabelPolicy(), {}, billing=True).points
    finally:
        ledger.close()
    lines = points["claude_usage_exporter_lines_total"]
    assert lines[(("outcome", "malformed"), ("source", SOURCE))] == 2
    assert lines[(("outcome", "skipped"), ("source", SOURCE))] == 1
