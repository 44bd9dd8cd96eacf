"""5-hour usage blocks, as ccusage defines them.

A block starts at its first request's time floored to the UTC hour; a request more than 5 h after
the block start, or more than 5 h after the previous request, starts a new block. A silence longer
than 5 h between blocks is shown as a gap block.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from exporter.ledger.store import Ledger
from exporter.reports.periods import BLOCK_MS, HOUR_MS, Group, Query, iso, usd


@dataclass
class Block:
    start: int
    group: Group = field(default_factory=Group)
    times: list[int] = field(default_factory=list)

    @property
    def end(self) -> int:
        return self.start + BLOCK_MS


Row = tuple[int, str, str, str, str, tuple[int | None, ...]]  # ts, model, category, label, speed, sums


def split_blocks(times_and_rows: Iterable[Row]) -> list[Block]:
    """Groups time-ordered requests into blocks (gaps are not materialised here)."""
    blocks: list[Block] = []
    for ts, model, category, label, speed, values in times_and_rows:
        current = blocks[-1] if blocks else None
        if current is None or ts - current.start > BLOCK_MS or ts - current.times[-1] > BLOCK_MS:
            current = Block(start=ts - ts % HOUR_MS)
            blocks.append(current)
        current.times.append(ts)
        current.group.add(model, category, label, values, speed)
    return blocks


def block_rows(ledger: Ledger, q: Query) -> list[Block]:
    return _blocks(ledger, *q.bounds(), q.cost, q.by)


def _blocks(ledger: Ledger, start: int, end: int, cost: str = "cost", by: str = "model") -> list[Block]:
    rows = ledger.db.execute(
        f"SELECT ts, model, category, {by}, speed, input, output, cache_write_5m + cache_write_1h,"
        f" cache_read, {cost}, 1, CASE WHEN {cost} IS NULL THEN input + output + cache_read"
        " + cache_write_5m + cache_write_1h ELSE 0 END"
        " FROM requests WHERE ts >= ? AND ts < ? ORDER BY ts",
        (start, end),
    )
    return split_blocks((r[0], r[1], r[2], str(r[3]), r[4], tuple(r[5:])) for r in rows)


def chain_start(ledger: Ledger, now_ms: int, lookback_ms: int = 7 * 24 * HOUR_MS) -> int | None:
    """Where block boundaries can be worked out from without reading all history: a request after a
    silence longer than a block always starts a block, so the latest such request anchors the chain
    (looked for in the last week first, then everywhere; with none, the first request of all)."""
    gaps = (
        "SELECT max(ts) FROM (SELECT ts, ts - lag(ts) OVER (ORDER BY ts) AS gap FROM requests"
        " WHERE ts >= coalesce((SELECT max(ts) FROM requests WHERE ts < ?), 0)) WHERE gap > ?"
    )
    for since in (now_ms - lookback_ms, 0):
        (anchor,) = ledger.db.execute(gaps, (since, BLOCK_MS)).fetchone()
        if anchor is not None:
            return int(anchor)
    (first,) = ledger.db.execute("SELECT min(ts) FROM requests").fetchone()
    return None if first is None else int(first)


def active_block(ledger: Ledger, now_ms: int, cost: str = "cost") -> Block | None:
    """The block in progress at `now_ms`, as `report blocks` shows it; None between blocks."""
    anchor = chain_start(ledger, now_ms)
    if anchor is None:
        return None
    found = _blocks(ledger, anchor, 2**62, cost)
    return found[-1] if found and is_active(found[-1], now_ms) else None


def report(ledger: Ledger, q: Query, now_ms: int) -> dict[str, Any]:
    """`report blocks` as JSON data, in ccusage's shape plus our own fields."""
    out: list[dict[str, Any]] = []
    previous: Block | None = None
    for block in block_rows(ledger, q):
        if previous is not None and block.times[0] - previous.times[-1] > BLOCK_MS:
            out.append(_gap(previous.times[-1] + BLOCK_MS, block.times[0]))
        out.append(_block_json(block, now_ms, q.by))
        previous = block
    # As ccusage: by start time. After a silence of 5 to 6 hours, the gap starts after the next block,
    # whose start is its first request's time floored to the hour.
    out.sort(key=lambda b: b["startTime"])
    return {"blocks": out}


def _gap(start: int, end: int) -> dict[str, Any]:
    zero = {"inputTokens": 0, "outputTokens": 0, "cacheCreationInputTokens": 0, "cacheReadInputTokens": 0}
    return {
        "id": f"gap-{iso(start)}",
        "startTime": iso(start),
        "endTime": iso(end),
        "actualEndTime": None,
        "isActive": False,
        "isGap": True,
        "entries": 0,
        "tokenCounts": zero,
        "totalTokens": 0,
        "costUSD": 0.0,
        "models": [],
        "burnRate": None,
        "projection": None,
    }


def burn(block: Block, now_ms: int) -> tuple[dict[str, float] | None, dict[str, Any] | None]:
    """Burn rate over the block's active span and the projection to its end, for an active block."""
    s = block.group.sums
    minutes = (block.times[-1] - block.times[0]) / 60_000
    if not is_active(block, now_ms) or minutes <= 0:
        return None, None
    per_hour, projected = cost_rate(block, now_ms)
    rate = {
        "tokensPerMinute": s.total_tokens / minutes,
        "tokensPerMinuteForIndicator": (s.input + s.output) / minutes,
        "costPerHour": per_hour,
    }
    remaining = max(0.0, (block.end - now_ms) / 60_000)
    projection = {
        "totalTokens": round(s.total_tokens + rate["tokensPerMinute"] * remaining),
        "totalCost": round(projected, 2),
        "remainingMinutes": round(remaining),
    }
    return rate, projection


def cost_rate(block: Block, now_ms: int) -> tuple[float, float]:
    """USD per hour over the block's active span (first to last request, as ccusage), and the cost the
    block reaches at its end at that rate."""
    minutes = (block.times[-1] - block.times[0]) / 60_000
    cost = usd(block.group.sums.cost)
    if minutes <= 0:
        return 0.0, cost
    rate = cost / minutes * 60
    return rate, cost + rate * max(0.0, (block.end - now_ms) / 3_600_000)


def is_active(block: Block, now_ms: int) -> bool:
    return now_ms - block.times[-1] < BLOCK_MS and now_ms < block.end


def _block_json(block: Block, now_ms: int, by: str) -> dict[str, Any]:
    s = block.group.sums
    rate, projection = burn(block, now_ms)
    body = block.group.to_json(by)
    return {
        "id": iso(block.start),
        "startTime": iso(block.start),
        "endTime": iso(block.end),
        "actualEndTime": iso(block.times[-1]),
        "isActive": is_active(block, now_ms),
        "isGap": False,
        "entries": s.requests,
        "tokenCounts": {
            "inputTokens": s.input,
            "outputTokens": s.output,
            "cacheCreationInputTokens": s.cache_creation,
            "cacheReadInputTokens": s.cache_read,
        },
        "totalTokens": s.total_tokens,
        "costUSD": usd(s.cost),
        "models": sorted(block.group.models),
        "burnRate": rate,
        "projection": projection,
        **{
            k: v
            for k, v in body.items()
            if k
            in (
                "requests",
                "costByCategory",
                "costBySpeed",
                "unpricedTokens",
                "modelBreakdowns",
                "breakdownBy",
                "breakdowns",
            )
        },
    }
