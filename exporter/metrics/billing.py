"""The Admin API's bill as metric points: the last completed UTC day's billed cost and tokens beside our estimate
of that day, the drift between the two, and Claude Code analytics' counters per user.

Every label is bounded: model family (opus, sonnet, haiku, other; a cost line without a model is other), the
costliest workspaces (the rest `other`), and a user label only under `labels.user`, as the poller stored it
(shaped as team mode shapes it) and capped at `labels.max_users` in first-seen order. The drift is shown only
for a day whose bill was read after the day ended: a bill read while its day still ran is partial, not a drift.
The bill is clock-driven (the daemon's windows pass reads it); the Claude Code counters are the ledger's durable
ones, read at each publish.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

from exporter.events import model_family
from exporter.ledger.billing import analytics
from exporter.ledger.store import Ledger
from exporter.metrics.points import OTHER, LabelPolicy, Labels, Points

MAX_WORKSPACES = 20  # workspaces beyond the costliest this many are summed into "other"
BILLED_TOKENS = {  # token_type as in claude_usage_tokens_total -> billing_usage_day's column
    "input": "uncached_input",
    "output": "output",
    "cache_read": "cache_read",
    "cache_write_5m": "cache_write_5m",
    "cache_write_1h": "cache_write_1h",
}
CLAUDE_CODE = {  # metric -> (kind label, the analytics counter's column)
    "claude_usage_analytics_sessions_total": (("", "sessions"),),
    "claude_usage_analytics_lines_of_code_total": (("added", "lines_added"), ("removed", "lines_removed")),
    "claude_usage_analytics_commits_total": (("", "commits"),),
    "claude_usage_analytics_pull_requests_total": (("", "pull_requests"),),
}


def _family(model: str) -> str:
    return model_family(model) if model else OTHER


def _midnight_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)


def read_bill(ledger: Ledger, now: float) -> Points:
    """The bill for the last completed UTC day beside our estimate of it, and the drift: clock-driven (which day
    that is), and a scan of a day's requests, so the daemon reads it in its windows pass, not at each publish."""
    today = datetime.fromtimestamp(now, UTC).date()
    yesterday = today - timedelta(days=1)
    points = _cost(ledger, yesterday) | _tokens(ledger, yesterday)
    read_at = read_time(ledger)
    billed = sum(points.get("claude_usage_billed_cost_usd", {}).values())
    if read_at is not None and read_at * 1000 >= _midnight_ms(today) and billed > 0:
        ours = sum(points["claude_usage_bill_estimate_usd"].values())
        points["claude_usage_bill_drift_ratio"] = {(): ours / billed - 1}
    return points


def read_time(ledger: Ledger) -> float | None:
    """When the Admin API was last read in full (epoch seconds), if ever."""
    row = ledger.db.execute("SELECT value FROM meta WHERE key = 'billing.read_at'").fetchone()
    return None if row is None else float(row[0])


def _cost(ledger: Ledger, day: date) -> Points:
    """The day's billed cost by workspace and model family, and our estimate of the same day by model family."""
    rows = ledger.db.execute(
        "SELECT workspace, model, sum(cost_nanos) FROM billing_cost_day WHERE day = ? GROUP BY workspace, model",
        (day.isoformat(),),
    ).fetchall()
    if not rows:
        return {}
    totals: defaultdict[str, int] = defaultdict(int)
    for workspace, _, nanos in rows:
        totals[workspace] += nanos
    kept = sorted(totals, key=lambda w: (-totals[w], w))[:MAX_WORKSPACES]
    billed: defaultdict[Labels, float] = defaultdict(float)
    for workspace, model, nanos in rows:
        shown = (workspace or "default") if workspace in kept else OTHER
        billed[(("model_family", _family(model)), ("workspace", shown))] += nanos / 1e9
    start = _midnight_ms(day)
    ours = ledger.db.execute(
        "SELECT model_family, sum(cost) FROM requests WHERE ts >= ? AND ts < ? GROUP BY model_family",
        (start, start + 86_400_000),
    ).fetchall()
    estimate: dict[Labels, float] = {(("model_family", family),): (nanos or 0) / 1e9 for family, nanos in ours}
    estimate = estimate or {(("model_family", OTHER),): 0.0}  # nothing of ours that day: an estimate of 0
    return {"claude_usage_billed_cost_usd": dict(billed), "claude_usage_bill_estimate_usd": estimate}


def _tokens(ledger: Ledger, day: date) -> Points:
    sums = ", ".join(f"sum({column})" for column in BILLED_TOKENS.values())
    rows = ledger.db.execute(
        f"SELECT model, {sums} FROM billing_usage_day WHERE day = ? GROUP BY model", (day.isoformat(),)
    ).fetchall()
    tokens: defaultdict[Labels, float] = defaultdict(float)
    for model, *counts in rows:
        for token_type, n in zip(BILLED_TOKENS, counts, strict=True):
            tokens[(("model_family", _family(model)), ("token_type", token_type))] += n
    return {"claude_usage_billed_tokens": dict(tokens)} if tokens else {}


def read_analytics(ledger: Ledger, policy: LabelPolicy) -> Points:
    """Claude Code analytics' durable counters (see ledger/billing.py); without the user label, one series per
    metric and kind, there from the start at 0 so rate() and increase() see the first rise. With it, the user is
    the actor as the poller stored it, already shaped by `labels.user` (daemon/billing.py)."""
    points: Points = {name: {} for name in CLAUDE_CODE}
    if not policy.user:
        for name, kinds in CLAUDE_CODE.items():
            points[name] = {((("kind", kind),) if kind else ()): 0.0 for kind, _ in kinds}
    metric = {column: (name, kind) for name, kinds in CLAUDE_CODE.items() for kind, column in kinds}
    ranks: dict[str, int] = {}
    for actor, column, value in analytics(ledger.db):
        if column not in metric:  # a column a later release counts
            continue
        rank = ranks.setdefault(actor, len(ranks))
        name, kind = metric[column]
        labels: Labels = (("kind", kind),) if kind else ()
        if policy.user:
            labels += (("user", (actor or "unknown") if rank < policy.max_users else OTHER),)
        points[name][labels] = points[name].get(labels, 0.0) + value
    return points
