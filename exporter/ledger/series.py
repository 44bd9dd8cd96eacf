"""Durable counters: the label sets the metrics expose, kept in the ledger and updated in each commit.

Metrics read these tables, never the requests, so a scrape costs the same after a year of history
and a restart restores every all-time total. A request only ever *adds* to them: a later copy adds
what it brought beyond the stored merge (never less than zero), so no counter can go down.
"""

from __future__ import annotations

import sqlite3
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Iterable
from operator import attrgetter

from exporter.events import Agent, Prompt, Request, model_family, tool_label
from exporter.ledger.schema import (
    CONTEXT_BUCKETS,
    PROMPT_COST_BUCKETS,
    PROMPT_IDLE_MS,
    PROMPT_REQUEST_BUCKETS,
    USAGE_LABELS,
    USAGE_VALUES,
)

_FIRST = attrgetter(
    "model",
    "agent",
    "tokens",
    "web_search",
    "tools",
    "project",
    "user",
    "interaction",
    "category",
    "cost",
    "uncached_cost",
)


class Changes:
    """What one commit adds to the durable counters."""

    def __init__(self) -> None:
        self.usage: defaultdict[tuple[str, ...], list[int]] = defaultdict(lambda: [0] * len(USAGE_VALUES))
        self.tools: Counter[tuple[str, str, str]] = Counter()
        self.context: defaultdict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        self.new: list[Request] = []  # requests seen for the first time, for sessions and switches

    def add(self, old: Request | None, new: Request) -> None:
        """`new` is the enriched merge of `old` (the stored row, if any) with the copies just read.

        What a later copy adds goes to the series of the request as stored, even when the merge gives
        it other labels (the ledger row, and so `report`, follows the merge): a request's count never
        moves between label sets, so no series can go down.
        """
        if old is None:
            self._add_first(new)
            return
        before = old.tokens
        grown = [max(0, a - b) for a, b in zip(new.tokens, before, strict=True)]
        # Cache writes grow as one quantity: an OTLP event counted all of them as 5-minute writes, and
        # the transcript copy that replaces it must not count its 1-hour share again.
        writes = max(0, new.tokens.cache_write - before.cache_write)
        grown[4] = min(grown[4], writes)
        grown[3] = min(grown[3], writes - grown[4])
        first = old if old is not None else new
        row = self.usage[(first.model, first.agent, first.interaction, first.category, first.project, first.user)]
        for i, value in enumerate(grown):
            row[i] += value
        if new.cost is not None:
            row[5] += max(0, new.cost - ((old.cost or 0) if old is not None else 0))
        else:
            row[6] += sum(grown)
        if new.uncached_cost is not None:
            row[9] += max(0, new.uncached_cost - ((old.uncached_cost or 0) if old is not None else 0))
        row[7] += old is None
        row[8] += max(0, new.web_search - (old.web_search if old is not None else 0))
        for tool in sorted(new.tools - (old.tools if old is not None else frozenset())):
            self.tools[(tool_label(tool), first.agent, first.project)] += 1
        if old is None:  # a request is observed once, at the context its first copies show
            self.new.append(new)
            context = self.context[(new.model_family, context_bucket(new.tokens.context))]
            context[0] += 1
            context[1] += new.tokens.context

    def _add_first(self, new: Request) -> None:
        """`add` of a request not stored before: what most of a first ingest adds, so kept short
        (the fields unpacked once: a named field costs a call)."""
        model, agent, tokens, web, tools, project, user, interaction, category, cost, uncached = _FIRST(new)
        i, o, cr, c5, c1h = tokens
        if i < 0 or o < 0 or cr < 0 or c5 < 0 or c1h < 0:  # never from a source (they bound counts), but as `add`
            i, o, cr, c5, c1h = (max(0, i), max(0, o), max(0, cr), max(0, c5), max(0, c1h))
            writes = max(0, tokens.cache_write)  # as in `add`: cache writes grow as one quantity
            c1h = min(c1h, writes)
            c5 = min(c5, writes - c1h)
        row = self.usage[(model, agent, interaction, category, project, user)]
        row[0] += i
        row[1] += o
        row[2] += cr
        row[3] += c5
        row[4] += c1h
        if cost is not None:
            row[5] += cost if cost > 0 else 0
        else:
            row[6] += i + o + cr + c5 + c1h
        if uncached is not None:
            row[9] += uncached if uncached > 0 else 0
        row[7] += 1
        row[8] += web if web > 0 else 0
        if tools:
            for tool in sorted(tools):
                self.tools[(tool_label(tool), agent, project)] += 1
        self.new.append(new)
        read = tokens[0] + tokens[2] + tokens[3] + tokens[4]  # `Tokens.context`, unclamped
        context = self.context[(model_family(model), bisect_left(CONTEXT_BUCKETS, read))]
        context[0] += 1
        context[1] += read

    def write(self, db: sqlite3.Connection) -> None:
        add(db, "usage_series", USAGE_LABELS, USAGE_VALUES, [(*k, *v) for k, v in self.usage.items()])
        add(db, "tool_series", ("tool", "agent", "project"), ("calls",), [(*k, n) for k, n in self.tools.items()])
        add(
            db,
            "context_series",
            ("model_family", "bucket"),
            ("count", "sum"),
            [(*k, *v) for k, v in self.context.items()],
        )
        if self.new:
            _sessions(db, self.new)


def add(
    db: sqlite3.Connection,
    table: str,
    keys: tuple[str, ...],
    values: tuple[str, ...],
    rows: Iterable[tuple[object, ...]],
) -> None:
    """Adds each row's values to the row of `table` with the same keys (made at 0 when missing)."""
    sums = ", ".join(f"{v} = {v} + excluded.{v}" for v in values)
    db.executemany(
        f"INSERT INTO {table} ({', '.join(keys + values)}) VALUES ({','.join('?' * len(keys + values))})"
        f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {sums}",
        rows,
    )


def bucket(value: float, bounds: tuple[float, ...]) -> int:
    """Index of the first bound at or above `value`; len(bounds) is +Inf."""
    return bisect_left(bounds, value)  # the bounds ascend


def context_bucket(tokens: int) -> int:
    return bucket(tokens, CONTEXT_BUCKETS)


def add_prompts(db: sqlite3.Connection, prompts: Iterable[Prompt]) -> None:
    # A fork copies prompt lines with their uuid: the copy read first (the original) is kept.
    db.executemany("INSERT OR IGNORE INTO prompts (key, session_id, ts, project) VALUES (?, ?, ?, ?)", prompts)


_OPEN = """
WITH ordered AS (
    SELECT key, session_id, ts, requests, lead(ts) OVER (PARTITION BY session_id ORDER BY ts) AS next
    FROM prompts WHERE session_id IN (SELECT session_id FROM prompts WHERE requests IS NULL)
)
SELECT o.key, o.next, count(r.ts), coalesce(sum(r.cost), 0), max(r.ts), o.ts
FROM ordered o LEFT JOIN requests r
    ON r.session_id = o.session_id AND r.ts >= o.ts AND (o.next IS NULL OR r.ts < o.next)
WHERE o.requests IS NULL
GROUP BY o.key
"""


def close_prompts(db: sqlite3.Connection, now_ms: int, idle_ms: int = PROMPT_IDLE_MS) -> int:
    """Closes the prompts that are over: a later prompt came, or the session has been idle long enough.

    A closed prompt's requests (its session's, subagents' included, until the next prompt) and their
    cost go into the prompt histograms once; a prompt that caused no request (a local command) is
    not observed. Returns how many closed.
    """
    closed: list[tuple[int, int, str]] = []
    series: defaultdict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
    for key, following, requests, cost, last, started in db.execute(_OPEN).fetchall():
        if following is None and max(last or 0, started) > now_ms - idle_ms:
            continue
        closed.append((requests, cost, key))
        if requests:
            for kind, value, index in (
                ("requests", requests, bucket(requests, PROMPT_REQUEST_BUCKETS)),
                ("cost", cost, bucket(cost / 1e9, PROMPT_COST_BUCKETS)),
            ):
                series[(kind, index)][0] += 1
                series[(kind, index)][1] += value
    db.executemany("UPDATE prompts SET requests = ?, cost = ? WHERE key = ?", closed)
    add(db, "prompt_series", ("kind", "bucket"), ("count", "sum"), [(*k, *v) for k, v in series.items()])
    return len(closed)


def _sessions(db: sqlite3.Connection, new: Iterable[Request]) -> None:
    """New sessions, and model switches: a main-thread request whose family differs from the one
    before it in its session. A request older than the session's latest (a late file) switches nothing."""
    ordered = sorted(new, key=lambda r: r.ts)
    ids = sorted({r.session_id for r in ordered})
    known: dict[str, tuple[str, int, str]] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        rows = db.execute(f"SELECT * FROM sessions WHERE session_id IN ({','.join('?' * len(part))})", part)
        known.update((sid, (project, ts, family)) for sid, project, ts, family in rows)
    switches: Counter[tuple[str, str]] = Counter()
    for r in ordered:
        project, last_ts, family = known.get(r.session_id, (r.project, r.ts, ""))
        if r.agent == Agent.MAIN and r.ts >= last_ts:
            now = r.model_family
            if family and family != now:
                switches[(family, now)] += 1
            last_ts, family = r.ts, now
        known[r.session_id] = (project, last_ts, family)
    db.executemany(
        "INSERT OR REPLACE INTO sessions (session_id, project, last_ts, last_family) VALUES (?, ?, ?, ?)",
        [(sid, *state) for sid, state in known.items()],
    )
    add(db, "switch_series", ("from_family", "to_family"), ("count",), [(*k, n) for k, n in switches.items()])
