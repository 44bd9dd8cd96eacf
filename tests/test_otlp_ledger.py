"""OTLP api_request events in the ledger: the grace period, joining transcripts by request id, and
every order in which the two sources can see one request."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from exporter.events import Request, Tokens
from exporter.ledger.store import Ledger
from exporter.pipeline import Pipeline
from tests.support.lines import at

GRACE = 30_000
NOW = 1_800_000_000_000
TRANSCRIPT = at("2026-11-26T10:00:00+00:00", tokens=Tokens(10, 100, 1000, 200, 800))._replace(
    key="msg_1", request_id="req_1"
)
# The same request as Claude Code's event reports it: cache writes without their TTL split, its own price.
EVENT = TRANSCRIPT._replace(
    key="req_1", tokens=Tokens(10, 100, 1000, 1000, 0), source="otlp", reported_cost=Decimal("0.0123")
)


@pytest.fixture
def app(make_app: Callable[..., Pipeline]) -> Pipeline:
    return make_app()


def rows(ledger: Ledger) -> list[tuple[str, str, Tokens, int | None]]:
    return [(r.key, r.source, r.tokens, r.cost) for r in ledger.requests()]


def lines(ledger: Ledger) -> dict[str, int]:
    return {k: v for k, v in ledger.counters().items() if k.startswith("lines.otlp.")}


def test_an_event_waits_in_pending_then_is_stored_from_the_event_after_the_grace(app: Pipeline) -> None:
    app.ledger.receive([Request.from_event(EVENT)], app.enrich, GRACE, NOW)
    assert rows(app.ledger) == []
    assert not app.ledger.settle(app.enrich, GRACE, NOW + GRACE - 1)
    app.ledger.settle(app.enrich, GRACE, NOW + GRACE)
    # Its cost is Claude Code's: the tokens alone cannot tell 5-minute from 1-hour cache writes.
    assert rows(app.ledger) == [("req_1", "otlp", EVENT.tokens, 12_300_000)]
    assert lines(app.ledger) == {"lines.otlp.usage": 1}


def test_an_event_whose_transcript_line_came_within_the_grace_counts_once(app: Pipeline) -> None:
    app.ledger.receive([Request.from_event(EVENT)], app.enrich, GRACE, NOW)
    app.ledger.commit([Request.from_event(TRANSCRIPT)], app.enrich)
    app.ledger.settle(app.enrich, GRACE, NOW + GRACE)
    assert [(key, source, tokens) for key, source, tokens, _ in rows(app.ledger)] == [
        ("msg_1", "transcripts", TRANSCRIPT.tokens)
    ]
    assert lines(app.ledger) == {"lines.otlp.duplicate": 1}
    assert app.ledger.db.execute("SELECT count(*) FROM pending").fetchone() == (0,)


def test_an_event_for_a_request_the_transcript_gave_first_is_a_duplicate_at_once(app: Pipeline) -> None:
    app.ledger.commit([Request.from_event(TRANSCRIPT)], app.enrich)
    assert app.ledger.receive([Request.from_event(EVENT)], app.enrich, GRACE, NOW) == {"duplicate": 1}
    assert app.ledger.db.execute("SELECT count(*) FROM pending").fetchone() == (0,)


def test_without_a_grace_an_event_is_stored_at_once_and_a_redelivery_is_a_duplicate(app: Pipeline) -> None:
    assert +app.ledger.receive([Request.from_event(EVENT)], app.enrich, 0, NOW) == {"usage": 1}
    assert +app.ledger.receive([Request.from_event(EVENT)] * 2, app.enrich, 0, NOW) == {"duplicate": 2}
    assert [key for key, *_ in rows(app.ledger)] == ["req_1"]
    assert lines(app.ledger) == {"lines.otlp.usage": 1, "lines.otlp.duplicate": 2}


def test_a_transcript_line_after_the_event_was_stored_replaces_it_in_the_same_row(app: Pipeline) -> None:
    app.ledger.receive([Request.from_event(EVENT)], app.enrich, 0, NOW)
    app.ledger.commit([Request.from_event(TRANSCRIPT)], app.enrich)
    app.ledger.commit([Request.from_event(TRANSCRIPT)], app.enrich)  # a fork's copy, later
    (row,) = app.ledger.requests()
    assert (row.key, row.source, row.tokens, row.copies) == ("req_1", "transcripts", TRANSCRIPT.tokens, 3)
    requests, writes_5m, writes_1h = app.ledger.db.execute(
        "SELECT sum(requests), sum(cache_write_5m), sum(cache_write_1h) FROM usage_series"
    ).fetchone()
    # The event counted all 1,000 cache writes as 5-minute ones; the transcript's split adds none again.
    assert (requests, writes_5m + writes_1h) == (1, 1000)
