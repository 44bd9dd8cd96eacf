"""`report reconcile`: our estimate beside what the Admin API billed and Claude Code analytics' own estimate, per
UTC day and model, with the difference explained where it can be.

Rule: days are UTC days on both sides, whatever the report's time zone, since the bill is kept per UTC day. Money
stays integer nano-dollars until it is written, as exact decimal strings. Our estimate is the cost from token
prices (the `cost` column, as the drift metric takes it). A model is named without its date suffix, the way the
cost report names it; where the cost report names a family's models in a way nothing else does, that family's
rows of the day become one row for the family.
"""

from __future__ import annotations

import re
import sqlite3
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from exporter.events import model_family
from exporter.ledger.billing import OPEN_DAYS, days_read, read_at

DAY_MS = 86_400_000
MATCH_NANOS = 10_000_000  # a difference of at most a cent, or ...
MATCH_SHARE = Decimal("0.01")  # ... of at most 1 % of the bill, is a match
TOKENS = ("input", "output", "cacheRead", "cacheWrite5m", "cacheWrite1h")
NO_MODEL = "(no model)"  # the bill's non-token costs (web search, code execution, ...), which name no model
NOTE = "Days are UTC days on both sides: the Admin API bills per UTC day, whatever the report's time zone."
HINT = (
    "No bill is stored: sources.anthropic_admin is off, or `serve` has not read it yet (its log says why a read"
    " failed). Enable it with an Admin API key file (sources: {anthropic_admin: {enabled: true, key_file: FILE}})"
    " and run `serve`; see docs/billing.md."
)
EXPLANATIONS = {
    "match": "our estimate and the bill agree (within a cent or 1 %).",
    "not_final": f"the day is not final: the Admin API may still correct it (the last {OPEN_DAYS} UTC days), or"
    " the bill stored was read before the day ended (is `serve` reading it?).",
    "not_read": "no bill is stored for this day (the source was off, or the day was never read).",
    "other_clients": "the bill is higher: other clients on the same organisation (API keys, workspaces) or"
    " requests whose transcripts are not in this ledger.",
    "not_billed_per_token": "our estimate is higher: usage never billed per token (a Claude subscription: Pro,"
    " Max, Team or Enterprise seats) or billed to another organisation.",
    "subscription": "Claude Code analytics reports subscription use this day: never billed per token.",
    "prices": "the bill has the same tokens but another cost: our prices differ from Anthropic's (a price change,"
    " batch or priority tier, long context).",
    "unpriced": "some requests are of models with no known price: left out of our estimate.",
    "no_model": "the bill names no model for these costs (web search, code execution, ...); our estimate counts"
    " web search in each model's row.",
}
_DATED = re.compile(r"[-@]\d{8}$")


def model_key(model: str) -> str:
    """A model as the cost report names it: lower case, without a date suffix (`-20250929`, Vertex's `@…`)."""
    return _DATED.sub("", model.strip().lower())


@dataclass
class Side:
    """Tokens and cost on one side of the comparison."""

    cost: int = 0  # nano-USD
    tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TOKENS, 0))
    requests: int = 0
    unpriced: int = 0  # requests with no price

    def add(self, other: Side) -> None:
        self.cost += other.cost
        for name in TOKENS:
            self.tokens[name] += other.tokens[name]
        self.requests += other.requests
        self.unpriced += other.unpriced


@dataclass
class Row:
    ours: Side = field(default_factory=Side)
    billed: Side = field(default_factory=Side)
    claude_code: int | None = None  # Claude Code analytics' estimate, nano-USD, where it gave one


def usd(nanos: int) -> str:
    """Exact USD as a decimal string: at least cents, more digits only where the amount has them."""
    amount = Decimal(nanos).scaleb(-9).normalize()
    exponent = amount.as_tuple().exponent
    return f"{amount:f}" if isinstance(exponent, int) and exponent < -2 else f"{amount.quantize(Decimal('0.01')):f}"


def _day_range(since: date, until: date) -> tuple[str, str]:
    return since.isoformat(), until.isoformat()


def _ours(db: sqlite3.Connection, since: date, until: date) -> dict[date, dict[str, Side]]:
    start = int(datetime(since.year, since.month, since.day, tzinfo=UTC).timestamp() * 1000)
    end = start + ((until - since).days + 1) * DAY_MS
    found: dict[date, dict[str, Side]] = defaultdict(dict)
    sql = (
        "SELECT ts / ? AS d, model, sum(input), sum(output), sum(cache_read), sum(cache_write_5m),"
        " sum(cache_write_1h), sum(coalesce(cost, 0)), count(*), sum(cost IS NULL)"
        " FROM requests WHERE ts >= ? AND ts < ? GROUP BY d, model"
    )
    for number, model, *tokens, cost, requests, unpriced in db.execute(sql, (DAY_MS, start, end)):
        side = Side(cost, dict(zip(TOKENS, tokens, strict=True)), requests, unpriced)
        _merge(found[date(1970, 1, 1) + timedelta(days=number)], model_key(model), side)
    return found


def _billed_tokens(db: sqlite3.Connection, since: date, until: date) -> dict[date, dict[str, Side]]:
    found: dict[date, dict[str, Side]] = defaultdict(dict)
    sql = (
        "SELECT day, model, sum(uncached_input), sum(output), sum(cache_read), sum(cache_write_5m),"
        " sum(cache_write_1h) FROM billing_usage_day WHERE day BETWEEN ? AND ? GROUP BY day, model"
    )
    for day, model, *tokens in db.execute(sql, _day_range(since, until)):
        side = Side(tokens=dict(zip(TOKENS, tokens, strict=True)))
        _merge(found[date.fromisoformat(day)], _model_row(model), side)
    return found


def _model_row(model: str) -> str:
    return model_key(model) or NO_MODEL


def _customer(kind: str) -> str:
    return kind or "unknown"


def _amounts(
    db: sqlite3.Connection, table: str, by: str, amount: str, key: Callable[[str], str], since: date, until: date
) -> dict[date, dict[str, int]]:
    """A money column of a billing table (nano-USD) summed per UTC day and `key(by)`; the names are constants."""
    found: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    sql = f"SELECT day, {by}, sum({amount}) FROM {table} WHERE day BETWEEN ? AND ? GROUP BY day, {by}"
    for day, name, nanos in db.execute(sql, _day_range(since, until)):
        found[date.fromisoformat(day)][key(name)] += nanos
    return found


def _merge(rows: dict[str, Side], key: str, side: Side) -> None:
    rows.setdefault(key, Side()).add(side)


def _keys(named: set[str], costs: dict[str, int]) -> dict[str, str]:
    """Each model key of the day → its row: itself, or its family's where the cost report names one of the
    family's models unlike anything else does."""
    unmatched = {model_family(k) for k in costs if k != NO_MODEL and k not in named}
    return {
        k: f"{model_family(k)} (family)" if k != NO_MODEL and model_family(k) in unmatched else k
        for k in named | set(costs)
    }


def _rows(
    ours: dict[str, Side], tokens: dict[str, Side], costs: dict[str, int], estimates: dict[str, int]
) -> dict[str, Row]:
    keys = _keys(set(ours) | set(tokens) | set(estimates), costs)
    rows: dict[str, Row] = defaultdict(Row)
    for key, nanos in estimates.items():
        rows[keys[key]].claude_code = (rows[keys[key]].claude_code or 0) + nanos
    for key, side in ours.items():
        rows[keys[key]].ours.add(side)
    for key, side in tokens.items():
        rows[keys[key]].billed.add(side)
    for key, nanos in costs.items():
        rows[keys[key]].billed.cost += nanos
    return dict(sorted(rows.items(), key=lambda kv: (kv[0] == NO_MODEL, kv[0])))


def explain(row: Row, model: str, read: bool, final: bool, subscription: int = 0) -> list[str]:
    """The codes (keys of EXPLANATIONS) that account for a row's difference, most telling first."""
    codes = _cause(row, model, read, subscription)
    if row.ours.unpriced and "unpriced" not in codes:
        codes.append("unpriced")
    return codes if final else [*codes, "not_final"]


def _cause(row: Row, model: str, read: bool, subscription: int) -> list[str]:
    difference = row.ours.cost - row.billed.cost
    if not read:
        return ["not_read"]
    if abs(difference) <= max(Decimal(MATCH_NANOS), MATCH_SHARE * row.billed.cost):
        return ["match"]
    if model == NO_MODEL:
        return ["no_model"]
    if row.ours.requests and row.ours.tokens == row.billed.tokens:
        return ["prices"]
    if difference < 0:  # a bill above an estimate that left requests unpriced needs no other client
        return ["unpriced" if row.ours.unpriced else "other_clients"]
    return ["not_billed_per_token", *(["subscription"] if subscription else [])]


def _side_json(side: Side, ours: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"costUSD": usd(side.cost), "tokens": dict(side.tokens)}
    if ours:
        out |= {"requests": side.requests, "unpricedRequests": side.unpriced}
    return out


def _compare(row: Row, read: bool) -> dict[str, Any]:
    billed = row.billed.cost
    drift = None
    if read and billed > 0:
        drift = f"{(Decimal(row.ours.cost) / Decimal(billed) - 1).quantize(Decimal('0.0001')):f}"
    return {
        "ours": _side_json(row.ours, True),
        "billed": _side_json(row.billed, False) if read else None,
        "differenceUSD": usd(row.ours.cost - billed) if read else None,
        "drift": drift,
    }


@dataclass(frozen=True)
class Billing:
    """What the ledger holds of the bill: the days a read covered, and when the last full read was."""

    first: date | None
    through: date | None
    read_at: float | None

    @classmethod
    def of(cls, db: sqlite3.Connection) -> Billing:
        days = days_read(db, "cost")  # the money decides: a read that failed at the cost report is not a bill
        return cls(days[0] if days else None, days[1] if days else None, read_at(db))

    def covers(self, day: date) -> bool:
        return self.first is not None and self.through is not None and self.first <= day <= self.through

    def final(self, day: date, today: date) -> bool:
        """Past the days the Admin API may still correct, and not read last while it ran (a stopped `serve`)."""
        read_on = datetime.fromtimestamp(self.read_at, UTC).date() if self.read_at is not None else None
        return day <= today - timedelta(days=OPEN_DAYS) and (read_on is None or day < read_on)

    def to_json(self) -> dict[str, Any]:
        read = self.through is not None
        return {
            "read": read,
            "readAt": datetime.fromtimestamp(self.read_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            if self.read_at
            else None,
            "firstDay": self.first.isoformat() if self.first else None,
            "billedThrough": self.through.isoformat() if self.through else None,
            "openDays": OPEN_DAYS,
            "hint": None if read else HINT,
        }


def default_since(db: sqlite3.Connection, until: date) -> date:
    """The first day with a stored bill, else the 31 days the source reads back on its first read."""
    first = Billing.of(db).first
    return first if first is not None and first <= until else until - timedelta(days=30)


def reconcile(db: sqlite3.Connection, since: date, until: date, today: date, zone: str) -> dict[str, Any]:
    """The report as a JSON document; `today` is the UTC day that decides which days are final."""
    billing = Billing.of(db)
    ours, tokens = _ours(db, since, until), _billed_tokens(db, since, until)
    costs = _amounts(db, "billing_cost_day", "model", "cost_nanos", _model_row, since, until)
    claude_code = _amounts(db, "claude_code_day", "customer_type", "est_cost_nanos", _customer, since, until)
    per_model = _amounts(db, "claude_code_model_day", "model", "est_cost_nanos", _model_row, since, until)
    days, total, read_total = [], Row(), Row()
    for day in sorted(set(ours) | set(tokens) | set(costs) | set(claude_code)):
        rows = _rows(ours.get(day, {}), tokens.get(day, {}), costs.get(day, {}), per_model.get(day, {}))
        read = billing.covers(day)
        entry, day_total = _day(day, rows, read, billing.final(day, today), claude_code.get(day, {}))
        days.append(entry)
        total.ours.add(day_total.ours)
        if read:
            read_total.ours.add(day_total.ours)
            read_total.billed.add(day_total.billed)
    used = {code for entry in days for row in [entry, *entry["models"]] for code in row["explanations"]}
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "timezone": "UTC",
        "reportTimezone": zone,
        "note": NOTE,
        "billing": billing.to_json(),
        "days": days,
        "totals": {
            "ours": _side_json(total.ours, True),
            "readDays": _compare(read_total, any(entry["billRead"] for entry in days)),
        },
        "explanations": {code: text for code, text in EXPLANATIONS.items() if code in used},
    }


def _day(
    day: date, rows: dict[str, Row], read: bool, final: bool, estimates: dict[str, int]
) -> tuple[dict[str, Any], Row]:
    """One day's entry: its model rows, its total and Claude Code analytics' estimate; and the day's total."""
    day_total, models = Row(), []
    for model, row in rows.items():
        estimate = None if row.claude_code is None else {"estimatedCostUSD": usd(row.claude_code)}
        codes = explain(row, model, read, final)
        models.append({"model": model, **_compare(row, read), "explanations": codes, "claudeCode": estimate})
        day_total.ours.add(row.ours)
        day_total.billed.add(row.billed)
    entry = {
        "date": day.isoformat(),
        "final": final,
        "billRead": read,
        "models": models,
        **_compare(day_total, read),
        "explanations": explain(day_total, "", read, final, estimates.get("subscription", 0)),
        "claudeCode": _claude_code_json(estimates) if estimates else None,
    }
    return entry, day_total


def _claude_code_json(estimates: dict[str, int]) -> dict[str, Any]:
    return {
        "estimatedCostUSD": usd(sum(estimates.values())),
        "byCustomerType": {kind: usd(nanos) for kind, nanos in sorted(estimates.items())},
    }
