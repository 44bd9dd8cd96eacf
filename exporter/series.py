"""Durable counters: the label sets the metrics expose, kept in the ledger and updated in each commit.

Metrics read these tables, never the requests, so a scrape costs the same after a year of history
and a restart restores every all-time total. A request only ever *adds* to them: a later copy adds
what it brought beyond the stored merge (never less than zero), so no counter can go down.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import TYPE_CHECKING

from exporter.classify import tool_label
from exporter.events import Tokens

if TYPE_CHECKING:
    from exporter.ledger import Request

CONTEXT_BUCKETS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000)
USAGE_LABELS = ("model", "agent", "interaction", "category", "project")
USAGE_VALUES = (
    "input", "output", "cache_read", "cache_write_5m", "cache_write_1h",
    "cost", "unpriced", "requests", "web_search",
)  # fmt: skip

_CONTEXT = "input + cache_read + cache_write_5m + cache_write_1h"
_BUCKET = " ".join(f"WHEN {_CONTEXT} <= {bound} THEN {i}" for i, bound in enumerate(CONTEXT_BUCKETS))

# Migration 2: the tables, filled from the requests a version-1 ledger already holds.
SCHEMA = f"""
CREATE TABLE usage_series (
    {", ".join(f"{name} TEXT NOT NULL" for name in USAGE_LABELS)},
    {", ".join(f"{name} INTEGER NOT NULL" for name in USAGE_VALUES)},  -- cost in nano-USD
    PRIMARY KEY ({", ".join(USAGE_LABELS)})
);
CREATE TABLE tool_series (
    tool TEXT NOT NULL, agent TEXT NOT NULL, project TEXT NOT NULL, calls INTEGER NOT NULL,
    PRIMARY KEY (tool, agent, project)
);
CREATE TABLE switch_series (
    from_family TEXT NOT NULL, to_family TEXT NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (from_family, to_family)
);
-- request_context_tokens: per model family, requests per bucket (index into CONTEXT_BUCKETS, then +Inf)
CREATE TABLE context_series (
    model_family TEXT NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL, sum INTEGER NOT NULL,
    PRIMARY KEY (model_family, bucket)
);
-- one row per session: its project, and the family of its latest main-thread request
CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY, project TEXT NOT NULL, last_ts INTEGER NOT NULL, last_family TEXT NOT NULL
);
INSERT INTO usage_series
SELECT model, agent, interaction, category, project,
       sum(input), sum(output), sum(cache_read), sum(cache_write_5m), sum(cache_write_1h),
       sum(coalesce(cost, 0)),
       sum(CASE WHEN cost IS NULL THEN input + output + cache_read + cache_write_5m + cache_write_1h ELSE 0 END),
       count(*), sum(web_search)
FROM requests GROUP BY model, agent, interaction, category, project;
INSERT INTO context_series
SELECT model_family, CASE {_BUCKET} ELSE {len(CONTEXT_BUCKETS)} END, count(*), sum({_CONTEXT})
FROM requests GROUP BY 1, 2;
INSERT INTO tool_series
SELECT CASE WHEN t.value LIKE 'mcp\\_\\_%' ESCAPE '\\'
            THEN 'mcp__' || substr(t.value, 6, instr(substr(t.value, 6) || '__', '__') - 1) ELSE t.value END,
       agent, project, count(*)
FROM requests, json_each('["' || replace(tools, ',', '","') || '"]') AS t
WHERE tools != '' GROUP BY 1, 2, 3;
INSERT INTO switch_series
SELECT previous, model_family, count(*) FROM (
    SELECT model_family, lag(model_family) OVER (PARTITION BY session_id ORDER BY ts, rowid) AS previous
    FROM requests WHERE agent = 'main')
WHERE previous IS NOT NULL AND previous != model_family GROUP BY 1, 2;
INSERT INTO sessions
SELECT session_id, project, ts, coalesce(family, '') FROM (
    SELECT session_id, project, ts,
           CASE WHEN agent = 'main' THEN model_family END AS family,
           row_number() OVER (PARTITION BY session_id ORDER BY agent != 'main', ts DESC) AS n
    FROM requests)
WHERE n = 1;
"""


class Changes:
    """What one commit adds to the durable counters."""

    def __init__(self) -> None:
        self.usage: defaultdict[tuple[str, ...], list[int]] = defaultdict(lambda: [0] * len(USAGE_VALUES))
        self.tools: Counter[tuple[str, str, str]] = Counter()
        self.context: defaultdict[tuple[str, int], list[int]] = defaultdict(lambda: [0, 0])
        self.new: list[Request] = []  # requests seen for the first time, for sessions and switches

    def add(self, old: Request | None, new: Request) -> None:
        """`new` is the enriched merge of `old` (the stored row, if any) with the copies just read."""
        before = old.tokens if old is not None else Tokens()
        grown = [max(0, a - b) for a, b in zip(new.tokens, before, strict=True)]
        row = self.usage[(new.model, new.agent, new.interaction, new.category, new.project)]
        for i, value in enumerate(grown):
            row[i] += value
        if new.cost is not None:
            row[5] += max(0, new.cost - ((old.cost or 0) if old is not None else 0))
        else:
            row[6] += sum(grown)
        row[7] += old is None
        row[8] += max(0, new.web_search - (old.web_search if old is not None else 0))
        for tool in sorted(new.tools - (old.tools if old is not None else frozenset())):
            self.tools[(tool_label(tool), new.agent, new.project)] += 1
        if old is None:  # a request is observed once, at the context its first copies show
            self.new.append(new)
            context = self.context[(new.model_family, context_bucket(new.tokens.context))]
            context[0] += 1
            context[1] += new.tokens.context

    def write(self, db: sqlite3.Connection) -> None:
        names = ", ".join(USAGE_LABELS + USAGE_VALUES)
        sums = ", ".join(f"{v} = {v} + excluded.{v}" for v in USAGE_VALUES)
        db.executemany(
            f"INSERT INTO usage_series ({names}) VALUES ({','.join('?' * 14)})"
            f" ON CONFLICT ({', '.join(USAGE_LABELS)}) DO UPDATE SET {sums}",
            [(*labels, *values) for labels, values in self.usage.items()],
        )
        db.executemany(
            "INSERT INTO tool_series (tool, agent, project, calls) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (tool, agent, project) DO UPDATE SET calls = calls + excluded.calls",
            [(*key, n) for key, n in self.tools.items()],
        )
        db.executemany(
            "INSERT INTO context_series (model_family, bucket, count, sum) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (model_family, bucket)"
            " DO UPDATE SET count = count + excluded.count, sum = sum + excluded.sum",
            [(*key, n, total) for key, (n, total) in self.context.items()],
        )
        if self.new:
            _sessions(db, self.new)


def context_bucket(tokens: int) -> int:
    return next((i for i, bound in enumerate(CONTEXT_BUCKETS) if tokens <= bound), len(CONTEXT_BUCKETS))


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
        if r.agent == "main" and r.ts >= last_ts:
            if family and family != r.model_family:
                switches[(family, r.model_family)] += 1
            last_ts, family = r.ts, r.model_family
        known[r.session_id] = (project, last_ts, family)
    db.executemany(
        "INSERT OR REPLACE INTO sessions (session_id, project, last_ts, last_family) VALUES (?, ?, ?, ?)",
        [(sid, *state) for sid, state in known.items()],
    )
    db.executemany(
        "INSERT INTO switch_series (from_family, to_family, count) VALUES (?, ?, ?)"
        " ON CONFLICT (from_family, to_family) DO UPDATE SET count = count + excluded.count",
        [(*key, n) for key, n in switches.items()],
    )
