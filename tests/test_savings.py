"""What caching saved: each request priced again with every cached token as uncached input, counted
durably beside its cost, restored for a version-3 ledger, exposed and pushed with the cost's labels."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
from opentelemetry.sdk.metrics.export import NumberDataPoint, Sum

from exporter.events import Request, Tokens, UsageEvent
from exporter.ledger.schema import MIGRATIONS
from exporter.ledger.store import Ledger, _row
from exporter.metrics.contract import CONTRACT
from exporter.metrics.exposition import Exposition, Health, read_snapshot
from exporter.metrics.points import LabelPolicy, read_points
from exporter.metrics.push import Pusher
from exporter.pipeline import Pipeline
from tests.support.lines import assistant_line, at, write

SONNET = "claude-sonnet-4-5-20250929"  # $3 input, $15 output, $0.30 cache read, $3.75 / $6 writes per MTok
BUILD = {"version": "test", "pricing_source": "genai-prices", "pricing_version": "0"}


def event(tokens: Tokens, model: str = SONNET, web_search: int = 0, key: str = "msg_1") -> UsageEvent:
    return at("2026-11-26T10:00:00+00:00", model=model, tokens=tokens, web_search_requests=web_search)._replace(key=key)


def costs(ledger: Ledger) -> tuple[list[tuple[int | None, int | None]], tuple[int, int]]:
    """Each request's (cost, uncached cost), and the durable counters' sums, all in nano-USD."""
    stored = [(r.cost, r.uncached_cost) for r in ledger.requests()]
    return stored, ledger.db.execute("SELECT sum(cost), sum(uncached_cost) FROM usage_series").fetchone()


def test_a_request_with_cache_reads_and_writes_is_priced_again_as_all_uncached_input(
    ledger: Callable[..., Ledger],
) -> None:
    tokens = Tokens(input=100, output=200, cache_read=10_000, cache_write_5m=2_000, cache_write_1h=1_000)
    filled = ledger(event(tokens, web_search=2))
    # cost: 100 × $3 + 200 × $15 + 10,000 × $0.30 + 2,000 × $3.75 + 1,000 × $6 per MTok, + 2 × $0.01 searches
    # uncached: (100 + 10,000 + 2,000 + 1,000) × $3 + 200 × $15 per MTok, + the same searches
    assert costs(filled) == ([(39_800_000, 62_300_000)], (39_800_000, 62_300_000))


def test_the_long_context_tier_is_decided_on_the_same_context(ledger: Callable[..., Ledger]) -> None:
    filled = ledger(event(Tokens(input=1_000, output=1_000, cache_read=250_000)))  # 251,000 > 200,000
    # above the tier Sonnet 4.5 bills $6 input, $22.50 output, $0.60 cache read per MTok
    assert costs(filled)[0] == [(1_000 * 6_000 + 1_000 * 22_500 + 250_000 * 600, 251_000 * 6_000 + 1_000 * 22_500)]


def test_cache_writes_never_read_back_cost_more_than_uncached_input(ledger: Callable[..., Ledger]) -> None:
    filled = ledger(event(Tokens(cache_write_5m=1_000, cache_write_1h=1_000)))
    assert costs(filled)[0] == [(1_000 * 3_750 + 1_000 * 6_000, 2_000 * 3_000)]


def test_an_unpriced_model_adds_nothing(ledger: Callable[..., Ledger]) -> None:
    filled = ledger(event(Tokens(input=5, output=6, cache_read=1_000), model="claude-future-9"))
    assert costs(filled) == ([(None, None)], (0, 0))


def test_claude_codes_own_price_keeps_our_uncached_price_or_claims_no_saving(ledger: Callable[..., Ledger]) -> None:
    def sent(e: UsageEvent) -> UsageEvent:
        return e._replace(source="otlp", reported_cost=Decimal("0.5"))

    known = sent(event(Tokens(input=100, cache_read=10_000)))
    unknown = sent(event(Tokens(input=100, cache_read=10_000), model="claude-future-9", key="msg_2"))
    assert costs(ledger(known, unknown))[0] == [(500_000_000, 10_100 * 3_000), (500_000_000, 500_000_000)]


def test_a_later_copy_with_more_tokens_adds_only_the_difference(ledger: Callable[..., Ledger]) -> None:
    provisional = event(Tokens(input=100, output=1, cache_read=10_000))
    assert costs(ledger(provisional))[1][1] == 10_100 * 3_000 + 1 * 15_000
    final = event(Tokens(input=100, output=200, cache_read=10_000, cache_write_5m=2_000, cache_write_1h=1_000))
    assert costs(ledger(final))[1][1] == 13_100 * 3_000 + 200 * 15_000  # not that plus 30,315,000
    assert costs(ledger(provisional))[1][1] == 13_100 * 3_000 + 200 * 15_000  # a copy read late adds nothing


def test_a_version_3_ledger_gets_the_uncached_costs_a_fresh_ingest_counts(
    make_app: Callable[..., Pipeline], claude_dir: Path, tmp_path: Path
) -> None:
    write(
        claude_dir / "projects" / "p" / "s.jsonl",
        assistant_line("msg_1", "req_1", input=10, output=100, cache_read=2_000, cache_5m=300, cache_1h=40),
        assistant_line("msg_2", "req_2", "2026-11-25T21:14:00.000Z", "claude-future-9", cache_read=50),
    )
    fresh = make_app()
    fresh.refresh()
    # The same ledger as version 3 stored it: no uncached cost anywhere, its fingerprint current.
    old = tmp_path / "old"
    old.mkdir()
    db = sqlite3.connect(old / Ledger.FILE)
    db.executescript("".join(MIGRATIONS[:3]) + "; PRAGMA user_version = 3;")
    db.execute(f"ATTACH '{fresh.ledger.path}' AS fresh")
    for table in ("requests", "usage_series", "meta", "files"):
        columns = ", ".join(row[1] for row in db.execute(f"PRAGMA table_info({table})"))  # version 3's
        db.execute(f"INSERT INTO {table} SELECT {columns} FROM fresh.{table} ORDER BY rowid")
    otlp = Request.from_event(at("2026-11-26T10:00:00+00:00", request_id="req_9", source="otlp")._replace(key="req_9"))
    db.execute("INSERT INTO pending VALUES ('req_9', 0, ?)", (orjson.dumps(_row(otlp)[:-1]),))  # version 3's row
    db.commit()
    db.close()
    migrated = make_app(state_dir=old)
    migrated.refresh()
    for table in ("requests", "usage_series"):
        query = f"SELECT * FROM {table} ORDER BY rowid"
        assert list(migrated.ledger.db.execute(query)) == list(fresh.ledger.db.execute(query))
    cost = 10 * 3_000 + 100 * 15_000 + 2_000 * 300 + 300 * 3_750 + 40 * 6_000  # nano-USD per token: $ per MTok × 1,000
    uncached = 2_350 * 3_000 + 100 * 15_000
    assert costs(migrated.ledger) == ([(cost, uncached), (None, None)], (cost, uncached))
    now_ms = int(datetime(2026, 11, 27, tzinfo=UTC).timestamp() * 1000)
    assert migrated.ledger.settle(migrated.enrich, 0, now_ms)["usage"] == 1  # the pending event survived
    assert costs(migrated.ledger)[1] == (cost + 10**9, uncached + 10**9)  # $1 of Haiku 4.5 input, nothing cached


def test_the_counter_is_exposed_and_pushed_with_the_cost_labels(ledger: Callable[..., Ledger]) -> None:
    filled = ledger(
        event(Tokens(input=100, output=200, cache_read=10_000)),
        event(Tokens(5, 6), model="claude-future-9", key="msg_2"),
    )
    specs = {s.name: s for s in CONTRACT}
    name, cost = "claude_usage_uncached_cost_usd_total", specs["claude_usage_cost_usd_total"]
    assert (specs[name].kind, specs[name].unit, specs[name].labels) == ("counter", "usd", cost.labels)
    for policy in (LabelPolicy(), LabelPolicy(user=True)):
        points = read_points(filled, policy)
        assert points[name].keys() == points[cost.name].keys()
    exposition = Exposition(Health(), BUILD, push=True)
    exposition.update(read_snapshot(filled, LabelPolicy(), BUILD))
    pushed = {
        m.name: m
        for r in Pusher(exposition, "http://127.0.0.1:9", {}, 60).collect().resource_metrics
        for s in r.scope_metrics
        for m in s.metrics
    }
    exposition.close()
    data = pushed[name].data
    assert isinstance(data, Sum) and data.is_monotonic
    values = sorted(
        (dict(p.attributes or {})["model"], p.value) for p in data.data_points if isinstance(p, NumberDataPoint)
    )
    assert values == [("claude-future-9", 0.0), (SONNET, 0.0333)]
