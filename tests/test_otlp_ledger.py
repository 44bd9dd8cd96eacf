"""OTLP api_request events in the ledger: the grace period, joining transcripts by request id, and
every order in which the two sources can see one request."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from exporter.events import Request, Tokens
from exporter.ledger.store import Ledger
from exporter.pipeline import Pipeline
from tests.support.cli import Run, cli
from tests.support.lines import SESSION, assistant_line, at, write

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


def test_a_transcript_line_after_the_event_was_stored_merges_into_the_same_row(app: Pipeline) -> None:
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


# Claude Code 2.1.38/2.1.39 wrote at most 5 output tokens on a subagent's transcript lines; its OTLP event
# had the real figure. Sonnet 4.5 (3 / 15 / 0.30 / 6 per MTok for 1 h writes): from the transcript alone
# 3*3 + 5*15 + 20000*0.3 + 4000*6 = $0.030084; with the event's 1,200 output tokens 9 + 18000 + 6000 + 24000
# = $0.048009. The event's 4,000 cache writes are the transcript's 1 h writes, not 4,000 more.
REAL_COST, REAL_TOKENS = 48_009, 3 + 1_200 + 20_000 + 4_000
SUBAGENT_EVENT = at(
    "2026-02-10T09:00:01+00:00", tokens=Tokens(3, 1_200, 20_000, 4_000, 0), source="otlp", agent="subagent"
)._replace(key="req_sub1", request_id="req_sub1", reported_cost=Decimal("0.0335"))


def understated_subagent(claude_dir: Path) -> None:
    folder = claude_dir / "projects/-home-dev-notes-app" / SESSION / "subagents"
    folder.mkdir(parents=True)

    def understated(ts: str, final: bool = True) -> bytes:
        return assistant_line(
            "msg_sub1",
            "req_sub1",
            ts,
            input=3,
            output=5,
            cache_read=20_000,
            cache_1h=4_000,
            final=final,
            agent_id="a1b2c3",
        )

    write(
        folder / "agent-a1b2c3.jsonl",
        understated("2026-02-10T09:00:01.000Z", final=False),
        understated("2026-02-10T09:00:01.200Z"),
    )


def daily(run: Run) -> tuple[int, int, int]:
    """The day's cost in micro-dollars, its tokens and its output tokens."""
    [day] = orjson.loads(run("report", "daily", "--json"))["daily"]
    return round(day["totalCost"] * 1_000_000), day["totalTokens"], day["outputTokens"]


@pytest.mark.parametrize("grace", [0, GRACE])
def test_an_event_after_the_transcript_raises_understated_output_without_counting_cache_writes_twice(
    app: Pipeline, claude_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, grace: int
) -> None:
    understated_subagent(claude_dir)
    run = cli(tmp_path, monkeypatch, in_folders=True)
    assert daily(run) == (30_084, 3 + 5 + 20_000 + 4_000, 5)
    assert app.ledger.receive([Request.from_event(SUBAGENT_EVENT)], app.enrich, grace, NOW) == {"duplicate": 1}
    assert daily(run) == (REAL_COST, REAL_TOKENS, 1_200)
    (row,) = app.ledger.requests()
    assert (row.key, row.source, row.tokens, row.copies) == (
        "msg_sub1",
        "transcripts",
        Tokens(3, 1_200, 20_000, 0, 4_000),
        3,
    )


def test_an_event_stored_before_the_transcript_keeps_its_output_and_takes_the_transcripts_cache_split(
    app: Pipeline, claude_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.ledger.receive([Request.from_event(SUBAGENT_EVENT)], app.enrich, 0, NOW)
    understated_subagent(claude_dir)
    run = cli(tmp_path, monkeypatch, in_folders=True)
    assert daily(run) == (REAL_COST, REAL_TOKENS, 1_200)
    assert [(r.key, r.tokens) for r in app.ledger.requests()] == [("req_sub1", Tokens(3, 1_200, 20_000, 0, 4_000))]


def test_an_event_pending_when_the_transcript_came_is_merged_when_its_grace_ends(
    app: Pipeline, claude_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app.ledger.receive([Request.from_event(SUBAGENT_EVENT)], app.enrich, GRACE, NOW)
    understated_subagent(claude_dir)
    run = cli(tmp_path, monkeypatch, in_folders=True)
    assert daily(run)[2] == 5
    assert app.ledger.settle(app.enrich, GRACE, NOW + GRACE) == {"duplicate": 1}
    assert daily(run) == (REAL_COST, REAL_TOKENS, 1_200)
    assert app.ledger.db.execute("SELECT count(*) FROM pending").fetchone() == (0,)


def test_an_event_with_more_cache_writes_than_the_transcript_adds_only_the_difference_as_5m_writes() -> None:
    transcript = Request.from_event(at("2026-02-10T09:00:01+00:00", tokens=Tokens(3, 5, 20_000, 100, 4_000)))
    event = Request.from_event(SUBAGENT_EVENT._replace(tokens=Tokens(2, 900, 21_000, 4_600, 0)))
    for merged in (transcript.merge(event), event.merge(transcript)):
        assert (merged.tokens, merged.source) == (Tokens(3, 900, 21_000, 600, 4_000), "transcripts")
