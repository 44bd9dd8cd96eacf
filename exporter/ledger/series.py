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

from exporter.classify.rules import tool_label
from exporter.events import MAX_CHARS, Prompt, Tokens

if TYPE_CHECKING:
    from exporter.ledger.store import Request

PROMPT_REQUEST_BUCKETS = (1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
PROMPT_COST_BUCKETS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50)  # USD
PROMPT_IDLE_MS = 30 * 60 * 1000  # a prompt with no later prompt closes after this long without a request
CONTEXT_BUCKETS = (1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000)
_V2_LABELS = ("model", "agent", "interaction", "category", "project")  # migration 2's, never to change
USAGE_LABELS = (*_V2_LABELS, "user")
_V3_VALUES = (  # migrations 2 and 3's, never to change
    "input",
    "output",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "cost",
    "unpriced",
    "requests",
    "web_search",
)
USAGE_VALUES = (*_V3_VALUES, "uncached_cost")

_CONTEXT = "input + cache_read + cache_write_5m + cache_write_1h"
_BUCKET = " ".join(f"WHEN {_CONTEXT} <= {bound} THEN {i}" for i, bound in enumerate(CONTEXT_BUCKETS))

# Migration 2: the tables, filled from the requests a version-1 ledger already holds.
SCHEMA = f"""
CREATE TABLE usage_series (
    {", ".join(f"{name} TEXT NOT NULL" for name in _V2_LABELS)},
    {", ".join(f"{name} INTEGER NOT NULL" for name in _V3_VALUES)},  -- cost in nano-USD
    PRIMARY KEY ({", ".join(_V2_LABELS)})
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
-- typed prompts (ids and times only); requests and cost are set when the prompt closes
CREATE TABLE prompts (
    key TEXT PRIMARY KEY, session_id TEXT NOT NULL, ts INTEGER NOT NULL, project TEXT NOT NULL,
    requests INTEGER, cost INTEGER
);
CREATE INDEX prompts_session ON prompts (session_id, ts);
CREATE INDEX requests_session ON requests (session_id, ts);
-- prompt_requests and prompt_cost_usd: closed prompts per bucket (kind: requests | cost)
CREATE TABLE prompt_series (
    kind TEXT NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL, sum INTEGER NOT NULL,
    PRIMARY KEY (kind, bucket)
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


# Migration 3: the user label (team mode), pending OTLP events, and requests found by request id.
SCHEMA_3 = f"""
ALTER TABLE requests ADD COLUMN user TEXT NOT NULL DEFAULT '';
CREATE TABLE usage_series_3 (
    {", ".join(f"{name} TEXT NOT NULL" for name in USAGE_LABELS)},
    {", ".join(f"{name} INTEGER NOT NULL" for name in _V3_VALUES)},
    PRIMARY KEY ({", ".join(USAGE_LABELS)})
);
-- in rowid order: label caps keep the values seen first
INSERT INTO usage_series_3
SELECT {", ".join(_V2_LABELS)}, '', {", ".join(_V3_VALUES)} FROM usage_series ORDER BY rowid;
DROP TABLE usage_series;
ALTER TABLE usage_series_3 RENAME TO usage_series;
CREATE INDEX requests_request_id ON requests (request_id);
-- OTLP api_request events waiting up to the grace period for their transcript line
CREATE TABLE pending (
    request_id TEXT PRIMARY KEY,
    received INTEGER NOT NULL,      -- epoch milliseconds
    request BLOB NOT NULL           -- the request as a JSON row
);
"""

# Migration 4: what each request would have cost with no caching. SQL cannot price a request, so the
# stored fingerprint goes: the next refresh reprices every request (`Ledger.reprice`), which adds each
# one's uncached cost to its series and, the prices being the same, nothing to its cost.
SCHEMA_4 = """
ALTER TABLE requests ADD COLUMN uncached_cost INTEGER;  -- nano-USD; NULL = unpriced model
ALTER TABLE usage_series ADD COLUMN uncached_cost INTEGER NOT NULL DEFAULT 0;
DELETE FROM meta WHERE key = 'fingerprint';
-- a pending request is a JSON row of the request columns: it gains the new last one
UPDATE pending SET request = json_insert(CAST(request AS TEXT), '$[#]', NULL);
"""


def _long(*columns: str) -> str:
    """Rows where one of `columns` needs shortening (the length test first: it spares most rows the call)."""
    return " OR ".join(f"(length({c}) > {MAX_CHARS} AND bounded({c}) != {c})" for c in columns)


def _fold(table: str, labels: tuple[str, ...], values: tuple[str, ...]) -> str:
    """Rows with a long label added into the row of their shortened labels, then removed: every
    request stays counted once, and a series' total only grows. In rowid order, as migration 3 keeps it."""
    return f"""
INSERT INTO {table} ({", ".join(labels + values)})
SELECT {", ".join(f"bounded({c})" for c in labels)}, {", ".join(f"sum({v})" for v in values)}
FROM {table} WHERE {_long(*labels)} GROUP BY {", ".join(str(i + 1) for i in range(len(labels)))} ORDER BY min(rowid)
ON CONFLICT ({", ".join(labels)}) DO UPDATE SET {", ".join(f"{v} = {v} + excluded.{v}" for v in values)};
DELETE FROM {table} WHERE {_long(*labels)};
"""


# Migration 5: strings longer than MAX_CHARS, stored before sources bounded them, shortened as
# `exporter.events.shorten` does (the ledger registers it as the SQL function `bounded`, and
# `bounded_tools` / `bounded_row` for the tools column and pending JSON rows). Shortened values never
# equal kept ones, nor each other, so rows only meet if a value already held the shortened form: then
# series rows add up, and of two requests (or prompts, sessions, pending events) the one that held it is
# kept, the other's counts staying in the series. Report documents and the cache of price look-ups
# (keyed by model) may hold the old values: dropped, both are rebuilt when needed.
_REQUEST_TEXT = (
    "key",
    "request_id",
    "session_id",
    "project",
    "model",
    "agent",
    "speed",
    "interaction",
    "category",
    "user",
)
SCHEMA_5 = f"""
{_fold("usage_series", USAGE_LABELS, USAGE_VALUES)}
{_fold("tool_series", ("tool", "agent", "project"), ("calls",))}
UPDATE OR IGNORE requests SET {", ".join(f"{c} = bounded({c})" for c in _REQUEST_TEXT)}, tools = bounded_tools(tools)
WHERE {_long(*_REQUEST_TEXT)} OR (length(tools) > {MAX_CHARS} AND bounded_tools(tools) != tools);
DELETE FROM requests WHERE {_long(*_REQUEST_TEXT)};
UPDATE OR IGNORE prompts SET key = bounded(key), session_id = bounded(session_id), project = bounded(project)
WHERE {_long("key", "session_id", "project")};
DELETE FROM prompts WHERE {_long("key", "session_id", "project")};
UPDATE OR IGNORE sessions SET session_id = bounded(session_id), project = bounded(project)
WHERE {_long("session_id", "project")};
DELETE FROM sessions WHERE {_long("session_id", "project")};
UPDATE OR IGNORE pending SET request_id = bounded(request_id), request = bounded_row(request);
DELETE FROM pending WHERE {_long("request_id")};
DELETE FROM reports;
DELETE FROM meta WHERE key = 'prices';
"""


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
        before = old.tokens if old is not None else Tokens()
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
    return next((i for i, bound in enumerate(bounds) if value <= bound), len(bounds))


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
        if r.agent == "main" and r.ts >= last_ts:
            if family and family != r.model_family:
                switches[(family, r.model_family)] += 1
            last_ts, family = r.ts, r.model_family
        known[r.session_id] = (project, last_ts, family)
    db.executemany(
        "INSERT OR REPLACE INTO sessions (session_id, project, last_ts, last_family) VALUES (?, ?, ?, ?)",
        [(sid, *state) for sid, state in known.items()],
    )
    add(db, "switch_series", ("from_family", "to_family"), ("count",), [(*k, n) for k, n in switches.items()])
