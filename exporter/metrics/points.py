"""Metric views: the ledger's durable counters turned into labelled points, with bounded labels.

Pure reads of the ledger; the label policy (project as name, hash or off; caps with overflow to
`other`) is applied here, so the stored counters never depend on configuration.

A publish must cost what the exposed (capped) series cost, not what the distinct values stored cost:
100,000 hostile model names must not make each publish scan 100,000 rows. So the capped totals are
kept folded in TEMP tables of the ledger's connection, and TEMP triggers on the series tables log
what each commit adds; a publish folds only that log. The state lives and dies with the connection,
and is rebuilt (one scan, in SQL) when it is new, the policy changed or another connection wrote.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections import defaultdict
from dataclasses import dataclass

from exporter.events import TOKEN_TYPES, model_family, shorten
from exporter.ledger.schema import (
    CONTEXT_BUCKETS,
    PROMPT_COST_BUCKETS,
    PROMPT_REQUEST_BUCKETS,
    USAGE_LABELS,
    USAGE_VALUES,
)
from exporter.ledger.store import Ledger

OTHER = "other"

Labels = tuple[tuple[str, str], ...]
Points = dict[str, dict[Labels, float]]  # metric name -> labels -> value


@dataclass(frozen=True)
class LabelPolicy:
    project: str = "name"  # name | hash | off
    max_projects: int = 100
    max_models: int = 50
    max_tools: int = 100
    user: bool = False  # team mode: usage metrics carry a `user` label
    max_users: int = 200


def user_label(shape: str, person: str) -> str:
    """The user label `labels.user` asks for: a short hash of the e-mail (or user id), or the e-mail itself,
    shortened so the label stays bounded; the same in team mode's usage and in Claude Code analytics."""
    return shorten(person) if shape == "email" else hashlib.sha256(person.encode()).hexdigest()[:12]


def project_label(policy: LabelPolicy, name: str) -> str:
    if policy.project == "off":
        return ""
    if policy.project == "hash" and name not in ("unknown", OTHER):
        return hashlib.sha256(name.encode()).hexdigest()[:12]
    return name


_LABELS = ", ".join(USAGE_LABELS)
_VALUES = ", ".join(USAGE_VALUES)
_TOOL = "tool, agent, project"


def _log(table: str, columns: str, values: str, sign: str, row: str) -> str:
    return (
        f"INSERT INTO {table} ({columns}, {values}) VALUES ("
        + ", ".join(
            [
                *(f"{row}.{c.strip()}" for c in columns.split(",")),
                *(f"{sign}{row}.{v.strip()}" for v in values.split(",")),
            ]
        )
        + ");"
    )


# Rows are logged with their labels, so a label that changed or a row that went would still fold right;
# `sessions` is written with INSERT OR REPLACE, whose delete fires no trigger: the row replaced is
# taken back before the insert.
_STATE = f"""
TEMP TABLE IF NOT EXISTS views_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS views_kept (label TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (label, value));
CREATE TEMP TABLE IF NOT EXISTS usage_log ({_LABELS}, {_VALUES});
CREATE TEMP TABLE IF NOT EXISTS tool_log ({_TOOL}, calls);
CREATE TEMP TABLE IF NOT EXISTS count_log (tbl TEXT NOT NULL, project TEXT NOT NULL, n INTEGER NOT NULL);
CREATE TEMP TABLE IF NOT EXISTS usage_folded ({_LABELS}, {_VALUES}, PRIMARY KEY ({_LABELS}));
CREATE TEMP TABLE IF NOT EXISTS tool_folded ({_TOOL}, calls, PRIMARY KEY ({_TOOL}));
CREATE TEMP TABLE IF NOT EXISTS count_folded (tbl TEXT, project TEXT, n INTEGER, PRIMARY KEY (tbl, project));
CREATE TEMP TRIGGER IF NOT EXISTS usage_added AFTER INSERT ON main.usage_series BEGIN
    {_log("usage_log", _LABELS, _VALUES, "", "NEW")} END;
CREATE TEMP TRIGGER IF NOT EXISTS usage_changed AFTER UPDATE ON main.usage_series BEGIN
    {_log("usage_log", _LABELS, _VALUES, "-", "OLD")} {_log("usage_log", _LABELS, _VALUES, "", "NEW")} END;
CREATE TEMP TRIGGER IF NOT EXISTS usage_gone AFTER DELETE ON main.usage_series BEGIN
    {_log("usage_log", _LABELS, _VALUES, "-", "OLD")} END;
CREATE TEMP TRIGGER IF NOT EXISTS tool_added AFTER INSERT ON main.tool_series BEGIN
    {_log("tool_log", _TOOL, "calls", "", "NEW")} END;
CREATE TEMP TRIGGER IF NOT EXISTS tool_changed AFTER UPDATE ON main.tool_series BEGIN
    {_log("tool_log", _TOOL, "calls", "-", "OLD")} {_log("tool_log", _TOOL, "calls", "", "NEW")} END;
CREATE TEMP TRIGGER IF NOT EXISTS tool_gone AFTER DELETE ON main.tool_series BEGIN
    {_log("tool_log", _TOOL, "calls", "-", "OLD")} END;
CREATE TEMP TRIGGER IF NOT EXISTS session_replaced BEFORE INSERT ON main.sessions BEGIN
    INSERT INTO count_log SELECT 'sessions', project, -1 FROM main.sessions WHERE session_id = NEW.session_id;
END;
CREATE TEMP TRIGGER IF NOT EXISTS session_added AFTER INSERT ON main.sessions BEGIN
    INSERT INTO count_log VALUES ('sessions', NEW.project, 1); END;
CREATE TEMP TRIGGER IF NOT EXISTS prompt_added AFTER INSERT ON main.prompts BEGIN
    INSERT INTO count_log VALUES ('prompts', NEW.project, 1); END;
"""
_STATEMENTS = ["CREATE " + s.strip() for s in _STATE.split("\nCREATE ") if s.strip()]  # one by one: see _install
_TRIGGERS = _STATE.count("CREATE TEMP TRIGGER")
_LOGS = ("usage_log", "tool_log", "count_log")

# Where each capped label is first seen, in the order values take free places: a project seen first
# in a usage series ranks before one only a tool call, a session or a prompt names.
_FIRST_SEEN = {
    "model": (("usage_series", "model"),),
    "user": (("usage_series", "user"),),
    "tool": (("tool_series", "tool"),),
    "project": (
        ("usage_series", "project"),
        ("tool_series", "project"),
        ("sessions", "project"),
        ("prompts", "project"),
    ),
}
_LOGGED = {"usage_series": "usage_log", "tool_series": "tool_log", "sessions": "count_log", "prompts": "count_log"}


def _limits(policy: LabelPolicy) -> dict[str, int]:
    return {
        "model": policy.max_models,
        "project": policy.max_projects,
        "tool": policy.max_tools,
        "user": policy.max_users if policy.user else 0,
    }


def _capped(column: str, label: str | None = None) -> str:
    """SQL for a label value as exposed: itself while among the kept values, else `other`."""
    return (
        f"CASE WHEN {column} IN (SELECT value FROM temp.views_kept WHERE label = '{label or column}')"
        f" THEN {column} ELSE '{OTHER}' END"
    )


def _fold(db: sqlite3.Connection, policy: LabelPolicy, usage: str, tools: str, counts: str) -> None:
    """Adds the rows of the given sources (whole tables or the logs) to the folded totals."""
    user = _capped("user") if policy.user else "''"
    db.execute(
        f"INSERT INTO temp.usage_folded ({_LABELS}, {_VALUES})"
        f" SELECT {_capped('model')}, agent, interaction, category, {_capped('project')}, {user},"
        f" {', '.join(f'sum({v})' for v in USAGE_VALUES)} FROM {usage} WHERE true GROUP BY 1, 2, 3, 4, 5, 6"
        " ORDER BY min(rowid)"
        f" ON CONFLICT ({_LABELS}) DO UPDATE SET {', '.join(f'{v} = {v} + excluded.{v}' for v in USAGE_VALUES)}"
    )
    db.execute(
        f"INSERT INTO temp.tool_folded ({_TOOL}, calls)"
        f" SELECT {_capped('tool')}, agent, {_capped('project')}, sum(calls) FROM {tools} WHERE true"
        " GROUP BY 1, 2, 3 ORDER BY min(rowid)"
        f" ON CONFLICT ({_TOOL}) DO UPDATE SET calls = calls + excluded.calls"
    )
    db.execute(
        f"INSERT INTO temp.count_folded (tbl, project, n)"
        f" SELECT tbl, {_capped('project')}, sum(n) FROM {counts} WHERE true GROUP BY 1, 2 ORDER BY 1, 2"
        f" ON CONFLICT (tbl, project) DO UPDATE SET n = n + excluded.n"
    )


def _rebuild(db: sqlite3.Connection, policy: LabelPolicy) -> None:
    """The folded totals from the whole tables: one scan each, in SQL."""
    for table in ("views_kept", "usage_folded", "tool_folded", "count_folded", *_LOGS):
        db.execute(f"DELETE FROM temp.{table}")
    for label, limit in _limits(policy).items():
        for table, column in _FIRST_SEEN[label]:
            db.execute(
                f"INSERT INTO temp.views_kept (label, value) SELECT ?, {column} FROM main.{table}"
                f" WHERE {column} NOT IN (SELECT value FROM temp.views_kept WHERE label = ?)"
                f" GROUP BY {column} ORDER BY min(rowid)"
                f" LIMIT max(0, ? - (SELECT count(*) FROM temp.views_kept WHERE label = ?))",
                (label, label, limit, label),
            )
    counts = "(SELECT 'sessions' AS tbl, project, 1 AS n FROM main.sessions"
    counts += " UNION ALL SELECT 'prompts', project, 1 FROM main.prompts)"
    _fold(db, policy, "main.usage_series", "main.tool_series", counts)


def _keep_new(db: sqlite3.Connection, policy: LabelPolicy) -> None:
    """Gives free places to the values the logs bring, in the order they were written. Once a cap
    is full nothing is read for it: past that, hostile values cost this publish nothing."""
    kept: dict[str, set[str]] = defaultdict(set)
    for label, value in db.execute("SELECT label, value FROM temp.views_kept"):
        kept[label].add(value)
    for label, limit in _limits(policy).items():
        values = kept[label]
        logs = dict.fromkeys((_LOGGED[table], column) for table, column in _FIRST_SEEN[label])  # sessions, prompts: one
        for log, column in logs:
            if len(values) >= limit:
                break
            for (value,) in db.execute(f"SELECT {column} FROM temp.{log} ORDER BY rowid"):
                if value not in values:
                    values.add(value)
                    db.execute("INSERT INTO temp.views_kept (label, value) VALUES (?, ?)", (label, value))
                    if len(values) >= limit:
                        break


def _fresh(db: sqlite3.Connection, policy: LabelPolicy) -> None:
    """Brings the folded totals up to date with the ledger (in the caller's transaction)."""
    version = str(db.execute("PRAGMA data_version").fetchone()[0])  # moves when another connection commits
    state = dict(db.execute("SELECT key, value FROM temp.views_state"))
    if state != {"policy": repr(policy), "data_version": version}:
        _rebuild(db, policy)
        db.executemany(
            "INSERT OR REPLACE INTO temp.views_state VALUES (?, ?)",
            [("policy", repr(policy)), ("data_version", version)],
        )
        return
    _keep_new(db, policy)
    _fold(db, policy, "temp.usage_log", "temp.tool_log", "temp.count_log")
    for table in _LOGS:
        db.execute(f"DELETE FROM temp.{table}")


def _install(db: sqlite3.Connection) -> None:
    """The TEMP tables and triggers, once per connection; statements one by one, since executescript
    would commit a caller's transaction. Without every trigger in place the state cannot be trusted."""
    (found,) = db.execute("SELECT count(*) FROM temp.sqlite_master WHERE type = 'trigger'").fetchone()
    if found != _TRIGGERS:
        for statement in _STATEMENTS:
            db.execute(statement)
        db.execute("DELETE FROM temp.views_state")


def read_points(ledger: Ledger, policy: LabelPolicy) -> Points:
    """Every usage metric's points, summed over the label sets the policy folds together."""
    db = ledger.db
    _install(db)
    own = not db.in_transaction  # one read snapshot for the check, the fold and the reads
    if own:
        db.execute("BEGIN")
    try:
        _fresh(db, policy)
        usage = db.execute(f"SELECT {_LABELS}, {_VALUES} FROM temp.usage_folded ORDER BY rowid").fetchall()
        tools = db.execute(f"SELECT {_TOOL}, calls FROM temp.tool_folded ORDER BY rowid").fetchall()
        counts = db.execute("SELECT tbl, project, n FROM temp.count_folded ORDER BY rowid").fetchall()
        switches = db.execute("SELECT * FROM switch_series").fetchall()  # model families: a bounded set
    except BaseException:
        if own:
            db.execute("ROLLBACK")
        raise
    if own:
        db.execute("COMMIT")
    points: Points = defaultdict(lambda: defaultdict(float))
    for model, agent, interaction, category, proj, user, *values in usage:
        family = model_family(model) if model != OTHER else OTHER
        project = project_label(policy, proj)
        base: Labels = (
            ("agent", agent),
            ("category", category),
            ("interaction", interaction),
            ("model", model),
            ("model_family", family),
            ("project", project),
        )
        if policy.user:
            base += (("user", user or "unknown"),)
        for token_type, value in zip(TOKEN_TYPES, values, strict=False):
            points["claude_usage_tokens_total"][(*base, ("token_type", token_type))] += value
        cost, unpriced, requests, web_search, uncached = values[5:]
        points["claude_usage_cost_usd_total"][base] += cost / 1e9
        points["claude_usage_uncached_cost_usd_total"][base] += uncached / 1e9
        points["claude_usage_requests_total"][base] += requests
        points["claude_usage_web_search_requests_total"][(("model", model), ("project", project))] += web_search
        points["claude_usage_unpriced_tokens_total"][(("model", model),)] += unpriced
    for tool, agent, proj, calls in tools:
        points["claude_usage_tool_calls_total"][
            (("agent", agent), ("project", project_label(policy, proj)), ("tool", tool))
        ] += calls
    for source, target, count in switches:
        points["claude_usage_model_switches_total"][(("from_family", source), ("to_family", target))] += count
    for table, proj, count in counts:
        name = "claude_usage_sessions_total" if table == "sessions" else "claude_usage_prompts_total"
        points[name][(("project", project_label(policy, proj)),)] += count
    return {name: dict(values) for name, values in points.items()}


HISTOGRAMS: dict[str, tuple[tuple[float, ...], str, int]] = {  # name -> bounds, query, unit of the sums
    "claude_usage_request_context_tokens": (CONTEXT_BUCKETS, "SELECT * FROM context_series", 1),
    "claude_usage_prompt_requests": (
        PROMPT_REQUEST_BUCKETS,
        "SELECT '', bucket, count, sum FROM prompt_series WHERE kind = 'requests'",
        1,
    ),
    "claude_usage_prompt_cost_usd": (
        PROMPT_COST_BUCKETS,
        "SELECT '', bucket, count, sum FROM prompt_series WHERE kind = 'cost'",
        10**9,
    ),
}

Histogram = dict[str, tuple[list[int], float]]  # label value ("" without a label) -> bucket counts, sum


def read_histograms(ledger: Ledger) -> dict[str, Histogram]:
    """Each histogram's bucket counts (not cumulative, +Inf last) and sum, per label value."""
    found: dict[str, Histogram] = {}
    for name, (bounds, query, unit) in HISTOGRAMS.items():
        sums: dict[str, tuple[list[int], int]] = {}
        for label, index, count, total in ledger.db.execute(query):
            counts, before = sums.get(label, ([0] * (len(bounds) + 1), 0))
            counts[index] += count
            sums[label] = (counts, before + total)
        found[name] = {label: (counts, total / unit) for label, (counts, total) in sums.items()}
    return found
