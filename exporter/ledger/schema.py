"""Every table of the ledger, and the migrations that made them: the one place the schema is written.

A ledger's `user_version` is the number of migrations applied; released migrations never change, so
an old ledger reaches today's schema by running the ones it lacks, in order. The durable series'
label and value columns, and the bucket bounds their histograms are kept in, are defined here too.
"""

from __future__ import annotations

import sqlite3

import orjson

from exporter.events import MAX_CHARS, add_tools, shorten

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
SCHEMA_2 = f"""
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


# Migration 6: a request's owner among copies at one time is the copy whose file started first (a fork's
# file starts when the fork was made), no longer the copy read first (files were read oldest-mtime first,
# so continuing a session after forking it handed its requests to the fork). A negative offset has every
# transcript read again up to where it was read (see `files.counted_until`) to re-derive that, without
# counting a line or a copy twice: the merge keeps token maxima, so only the sessions' split changes and
# the durable counters only grow. Pending OTLP rows gain the new column.
SCHEMA_6 = """
ALTER TABLE requests ADD COLUMN origin INTEGER;  -- epoch ms: when the owning copy's file starts
UPDATE pending SET request = with_origin(request);
UPDATE files SET offset = -offset WHERE offset > 0;
"""


# Migration 7: what the Admin API billed (sources/anthropic_admin.py), one row per UTC day and combination of the
# API's own dimensions, '' for a dimension the API left null. A day is replaced whole when read again (see
# ledger/billing.py), so late corrections win. Empty unless `sources.anthropic_admin` is enabled.
SCHEMA_7 = """
CREATE TABLE billing_usage_day (
    day TEXT NOT NULL,                  -- YYYY-MM-DD, UTC
    model TEXT NOT NULL, workspace TEXT NOT NULL, api_key TEXT NOT NULL, account TEXT NOT NULL,
    service_tier TEXT NOT NULL, context_window TEXT NOT NULL,
    uncached_input INTEGER NOT NULL, cache_write_5m INTEGER NOT NULL, cache_write_1h INTEGER NOT NULL,
    cache_read INTEGER NOT NULL, output INTEGER NOT NULL, web_search INTEGER NOT NULL,
    PRIMARY KEY (day, model, workspace, api_key, account, service_tier, context_window)
);
CREATE TABLE billing_cost_day (
    day TEXT NOT NULL,
    workspace TEXT NOT NULL, description TEXT NOT NULL, model TEXT NOT NULL, cost_type TEXT NOT NULL,
    token_type TEXT NOT NULL, service_tier TEXT NOT NULL, context_window TEXT NOT NULL,
    cost_nanos INTEGER NOT NULL,        -- nano-USD
    PRIMARY KEY (day, workspace, description, model, cost_type, token_type, service_tier, context_window)
);
CREATE TABLE claude_code_day (
    day TEXT NOT NULL,
    actor_type TEXT NOT NULL, actor TEXT NOT NULL, customer_type TEXT NOT NULL, terminal_type TEXT NOT NULL,
    sessions INTEGER NOT NULL, lines_added INTEGER NOT NULL, lines_removed INTEGER NOT NULL,
    commits INTEGER NOT NULL, pull_requests INTEGER NOT NULL,
    est_cost_nanos INTEGER NOT NULL,    -- Claude Code analytics' own estimate, nano-USD
    PRIMARY KEY (day, actor_type, actor, customer_type, terminal_type)
);
"""


# Migration 8: Claude Code analytics' own estimate per UTC day, customer type and model, beside its per-actor rows
# (`report reconcile` compares it per model; no actor is kept here). Days read before this migration have none.
SCHEMA_8 = """
CREATE TABLE claude_code_model_day (
    day TEXT NOT NULL, customer_type TEXT NOT NULL, model TEXT NOT NULL,
    input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL, cache_write INTEGER NOT NULL,
    est_cost_nanos INTEGER NOT NULL,    -- nano-USD
    PRIMARY KEY (day, customer_type, model)
);
"""


# Migration 9: closing prompts (series.close_prompts) sums each prompt's requests' cost by session and time: the
# session index carries the cost too, so that sum reads the index alone (a third of the time on a large ledger).
SCHEMA_9 = """
DROP INDEX requests_session;
CREATE INDEX requests_session ON requests (session_id, ts, cost);
"""


# Each entry migrates the schema from version i to i + 1; released entries never change.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE requests (
        key TEXT PRIMARY KEY,
        request_id TEXT,
        ts INTEGER NOT NULL,            -- epoch milliseconds, UTC, earliest copy
        session_id TEXT NOT NULL,
        project TEXT NOT NULL,
        model TEXT NOT NULL,
        model_family TEXT NOT NULL,
        agent TEXT NOT NULL,
        input INTEGER NOT NULL, output INTEGER NOT NULL, cache_read INTEGER NOT NULL,
        cache_write_5m INTEGER NOT NULL, cache_write_1h INTEGER NOT NULL,
        web_search INTEGER NOT NULL,
        tools TEXT NOT NULL,            -- sorted tool names, comma-separated
        speed TEXT NOT NULL,
        source TEXT NOT NULL,
        compaction INTEGER NOT NULL,
        interaction TEXT NOT NULL,
        category TEXT NOT NULL,
        cost INTEGER,                   -- nano-USD from token prices; NULL = unpriced model
        reported_cost INTEGER,          -- nano-USD as the source reported it, if it did
        copies INTEGER NOT NULL         -- lines merged into this request
    );                                  -- a rowid table: inserts append, only the key index is random
    CREATE INDEX requests_ts ON requests (ts);
    CREATE TABLE files (
        dev INTEGER NOT NULL, ino INTEGER NOT NULL, offset INTEGER NOT NULL, head TEXT NOT NULL,
        mtime INTEGER NOT NULL,         -- ns, when the offset was stored
        PRIMARY KEY (dev, ino)
    );
    CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    -- report documents, valid while the requests are at the same generation
    CREATE TABLE reports (key TEXT PRIMARY KEY, generation INTEGER NOT NULL, body BLOB NOT NULL);
    """,
    SCHEMA_2,
    SCHEMA_3,
    SCHEMA_4,
    SCHEMA_5,
    SCHEMA_6,
    SCHEMA_7,
    SCHEMA_8,
    SCHEMA_9,
)


COLUMNS = (
    "key, request_id, ts, session_id, project, model, model_family, agent, input, output, cache_read,"
    " cache_write_5m, cache_write_1h, web_search, tools, speed, source, compaction, interaction,"
    " category, cost, reported_cost, copies, user, uncached_cost, origin"
)


MARKS = ",".join("?" * 26)


_Sql = str | bytes | int | float | None  # a value SQLite hands a function and takes back


def _bounded(value: _Sql) -> _Sql:
    return shorten(value) if isinstance(value, str) else value


def _bounded_tools(value: _Sql) -> _Sql:
    return ",".join(sorted(add_tools(frozenset(), value.split(",")) - {""})) if isinstance(value, str) else value


_TOOLS = [c.strip() for c in COLUMNS.split(",")].index("tools")


def _bounded_row(value: _Sql) -> _Sql:
    """A pending request (a JSON row, see `_row`) with its strings bounded."""
    if not isinstance(value, bytes | str):
        return value
    row = orjson.loads(value)
    return orjson.dumps([_bounded_tools(v) if i == _TOOLS else _bounded(v) for i, v in enumerate(row)])


def _with_origin(value: _Sql) -> _Sql:
    """A pending request (a JSON row) of migration 5's 25 columns with migration 6's `origin` added."""
    if not isinstance(value, bytes | str):
        return value
    row = orjson.loads(value)
    return orjson.dumps([*row, None]) if len(row) == 25 else value


def register_functions(db: sqlite3.Connection) -> None:
    """The SQL functions migrations 5 (shortening stored strings, see `SCHEMA_5`) and 6 use."""
    db.create_function("with_origin", 1, _with_origin, deterministic=True)
    db.create_function("bounded", 1, _bounded, deterministic=True)
    db.create_function("bounded_tools", 1, _bounded_tools, deterministic=True)
    db.create_function("bounded_row", 1, _bounded_row, deterministic=True)
