"""Metric views: the ledger's durable counters turned into labelled points, with bounded labels.

Pure reads of the ledger; the label policy (project as name, hash or off; caps with overflow to
`other`) is applied here, so the stored counters never depend on configuration.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from exporter.events import TOKEN_TYPES, model_family
from exporter.ledger import Ledger
from exporter.series import (
    CONTEXT_BUCKETS,
    PROMPT_COST_BUCKETS,
    PROMPT_REQUEST_BUCKETS,
    USAGE_LABELS,
    USAGE_VALUES,
)

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


@dataclass
class Capped:
    """Keeps the first `limit` values seen (in the order given, which is first-seen order in the
    ledger) and maps every later one to `other`, so a value never changes series once exposed."""

    limit: int
    kept: set[str] = field(default_factory=set)

    def __call__(self, value: str) -> str:
        if value not in self.kept and len(self.kept) < self.limit:
            self.kept.add(value)
        return value if value in self.kept else OTHER


def project_label(policy: LabelPolicy, name: str) -> str:
    if policy.project == "off":
        return ""
    if policy.project == "hash" and name not in ("unknown", OTHER):
        return hashlib.sha256(name.encode()).hexdigest()[:12]
    return name


def _first_seen(ledger: Ledger, column: str) -> Iterable[str]:
    """Values of a usage_series column in the order they first appeared (rowids only grow)."""
    query = f"SELECT {column} FROM usage_series GROUP BY {column} ORDER BY min(rowid)"
    return (value for (value,) in ledger.db.execute(query))


def read_points(ledger: Ledger, policy: LabelPolicy) -> Points:
    """Every usage metric's points, summed over the label sets the policy folds together."""
    projects, models = Capped(policy.max_projects), Capped(policy.max_models)
    for name in _first_seen(ledger, "project"):
        projects(name)
    for name in _first_seen(ledger, "model"):
        models(name)

    def project(name: str) -> str:
        return project_label(policy, projects(name))

    users = Capped(policy.max_users)
    points: Points = defaultdict(lambda: defaultdict(float))
    rows = ledger.db.execute(f"SELECT {', '.join(USAGE_LABELS + USAGE_VALUES)} FROM usage_series ORDER BY rowid")
    for model, agent, interaction, category, proj, user, *values in rows:
        model = models(model)
        family = model_family(model) if model != OTHER else OTHER
        base: Labels = (("agent", agent), ("category", category), ("interaction", interaction), ("model", model),
                        ("model_family", family), ("project", project(proj)))  # fmt: skip
        if policy.user:
            base += (("user", users(user) or "unknown"),)
        for token_type, value in zip(TOKEN_TYPES, values, strict=False):
            points["claude_usage_tokens_total"][(*base, ("token_type", token_type))] += value
        cost, unpriced, requests, web_search, uncached = values[5:]
        points["claude_usage_cost_usd_total"][base] += cost / 1e9
        points["claude_usage_uncached_cost_usd_total"][base] += uncached / 1e9
        points["claude_usage_requests_total"][base] += requests
        points["claude_usage_web_search_requests_total"][(("model", model), ("project", project(proj)))] += web_search
        points["claude_usage_unpriced_tokens_total"][(("model", model),)] += unpriced
    tools = Capped(policy.max_tools)
    for tool, agent, proj, calls in ledger.db.execute(
        "SELECT tool, agent, project, calls FROM tool_series ORDER BY rowid"
    ):
        key = (("agent", agent), ("project", project(proj)), ("tool", tools(tool)))
        points["claude_usage_tool_calls_total"][key] += calls
    for source, target, count in ledger.db.execute("SELECT * FROM switch_series"):
        points["claude_usage_model_switches_total"][(("from_family", source), ("to_family", target))] += count
    for table, name in (("sessions", "claude_usage_sessions_total"), ("prompts", "claude_usage_prompts_total")):
        for proj, count in ledger.db.execute(f"SELECT project, count(*) FROM {table} GROUP BY project"):
            points[name][(("project", project(proj)),)] += count
    return {name: dict(values) for name, values in points.items()}


HISTOGRAMS: dict[str, tuple[tuple[float, ...], str, int]] = {  # name -> bounds, query, unit of the sums
    "claude_usage_request_context_tokens": (CONTEXT_BUCKETS, "SELECT * FROM context_series", 1),
    "claude_usage_prompt_requests": (
        PROMPT_REQUEST_BUCKETS, "SELECT '', bucket, count, sum FROM prompt_series WHERE kind = 'requests'", 1),
    "claude_usage_prompt_cost_usd": (
        PROMPT_COST_BUCKETS, "SELECT '', bucket, count, sum FROM prompt_series WHERE kind = 'cost'", 10**9),
}  # fmt: skip

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
