"""Anthropic's Admin API, read as a billing source: what the organisation was billed, per day.

Nothing here runs unless `sources.anthropic_admin.enabled` is set; this module is the client and the parsers only
(no daemon wiring, no ledger tables yet). Every schema below was read in Anthropic's API reference; none of it has
been checked against a real admin key, only against tests/support/fakeadmin.py, which follows the same reading.

Where the schemas come from:

- Messages usage, `GET /v1/organizations/usage_report/messages`:
  https://platform.claude.com/docs/en/api/admin/usage_report/retrieve_messages and
  https://platform.claude.com/docs/en/api/admin-api/usage-cost/get-messages-usage-report.
  Query: `starting_at` (RFC 3339, required; buckets snap to the minute, hour or day in UTC), `ending_at`,
  `bucket_width` (`1d` default, `1h`, `1m`), `group_by[]` (`api_key_id`, `workspace_id`, `model`, `service_tier`,
  `context_window`; newer versions add `account_id`, `service_account_id`, `inference_geo`, `speed`), filters
  (`models[]`, `api_key_ids[]`, `workspace_ids[]`, ...), `limit` (buckets per page: 1d up to 31, 1h up to 168,
  1m up to 1440) and `page` (the previous answer's `next_page`). The reference marks this endpoint "legacy" in
  favour of `/v1/organizations/analytics/usage`; it still documents it, and so do we.
  Answer: `{"data": [{"starting_at", "ending_at", "results": [...]}], "has_more", "next_page"}`; each result has
  `uncached_input_tokens`, `cache_creation: {ephemeral_5m_input_tokens, ephemeral_1h_input_tokens}`,
  `cache_read_input_tokens`, `output_tokens`, `server_tool_use: {web_search_requests}` and the grouped
  dimensions (`model`, `workspace_id`, `api_key_id`, `service_tier`, `context_window`), null when not grouped.
  Cache writes are their own fields, never part of `uncached_input_tokens`.
- Cost, `GET /v1/organizations/cost_report`: https://platform.claude.com/docs/en/api/admin/cost_report/retrieve.
  Query: `starting_at`, `ending_at`, `bucket_width` (`1d` only), `group_by[]` (`workspace_id`, `description`),
  `limit` (1 to 31), `page`. Each result: `amount` is a *decimal string in the lowest currency unit*: "123.45" in
  "USD" is $1.23 (cents, with fractions of a cent); `currency` ("currently always USD"), and with `description`
  grouping `model`, `cost_type` (`tokens`, `web_search`, `code_execution`, `session_usage`), `token_type`,
  `service_tier`, `context_window`; `workspace_id` is null for the default workspace.
- Claude Code analytics, `GET /v1/organizations/usage_report/claude_code`:
  https://platform.claude.com/docs/en/api/admin/usage_report/retrieve_claude_code and
  https://docs.anthropic.com/en/api/claude-code-analytics-api. Query: `starting_at` (a UTC date `YYYY-MM-DD`: one
  day per call), `limit` (records per page, default 20, max 1000), `page`. Each record is one actor on one day:
  `actor` (`{"type": "user_actor", "email_address"}` or `{"type": "api_actor", "api_key_name"}`), `date`,
  `customer_type` (`api` or `subscription`), `terminal_type`, `core_metrics: {num_sessions,
  lines_of_code: {added, removed}, commits_by_claude_code, pull_requests_by_claude_code}` and `model_breakdown:
  [{model, tokens: {input, output, cache_read, cache_creation}, estimated_cost: {amount, currency}}]` where
  `amount` is a *number in minor units* (cents for USD).
- Every call sends `x-api-key` (an `sk-ant-admin…` key) and `anthropic-version: 2023-06-01`.

Money leaves this module as integer nano-dollars, like the ledger's: one cent is 10**7 nano-dollars, so the
documented fractional cents stay exact.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Generic, TypeVar

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
MESSAGES = "/v1/organizations/usage_report/messages"
COST = "/v1/organizations/cost_report"
CLAUDE_CODE = "/v1/organizations/usage_report/claude_code"
MESSAGES_GROUP_BY = ("model", "workspace_id", "api_key_id", "service_tier", "context_window")
NANO_PER_CENT = 10_000_000
MAX_PAGES = 10_000  # a server that never says has_more=false must not keep us paging forever
log = logging.getLogger(__name__)
Json = dict[str, Any]
Sleep = Callable[[float], None]
T = TypeVar("T")


class AdminApiError(Exception):
    """The Admin API could not be read; the message names the endpoint and the status, never the key."""


class AdminAuthError(AdminApiError):
    """401 or 403: the key is missing, wrong, or not an admin key."""


@dataclass(frozen=True)
class MessagesDay:
    """Billed tokens of one UTC day for one combination of the API's dimensions, summed over its buckets."""

    day: date
    model: str | None
    workspace_id: str | None
    api_key_id: str | None
    account_id: str | None  # the actor, when the API groups by it
    service_tier: str | None
    context_window: str | None
    uncached_input_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0
    cache_read_tokens: int = 0
    output_tokens: int = 0
    web_search_requests: int = 0


@dataclass(frozen=True)
class CostDay:
    """Billed cost of one UTC day for one cost line (workspace, model, kind of cost)."""

    day: date
    workspace_id: str | None
    description: str | None
    model: str | None
    cost_type: str | None
    token_type: str | None
    service_tier: str | None
    context_window: str | None
    cost_nano_usd: int


@dataclass(frozen=True)
class ClaudeCodeModel:
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    estimated_cost_nano_usd: int


@dataclass(frozen=True)
class ClaudeCodeDay:
    """One actor's Claude Code activity on one UTC day, as Claude Code analytics reports it."""

    day: date
    actor_type: str  # user_actor | api_actor
    actor: str  # the e-mail address or the API key's name
    customer_type: str | None
    terminal_type: str | None
    sessions: int
    lines_added: int
    lines_removed: int
    commits: int
    pull_requests: int
    models: tuple[ClaudeCodeModel, ...]


@dataclass
class Report(Generic[T]):
    """What one read gave: the rows, and how many pieces were skipped and why."""

    rows: list[T] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)
    pages: int = 0


class _Malformed(Exception):
    """A bucket or row not shaped as documented; counted and skipped, never raised out of the module."""


def read_key(path: Path) -> str:
    """The admin key from its file; an error names the file, never what is in it."""
    try:
        key = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as err:
        raise AdminApiError(f"cannot read the admin key file {path}: {type(err).__name__}") from None
    if not key or any(c.isspace() for c in key):
        raise AdminApiError(f"the admin key file {path} does not hold one key on one line")
    return key


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Malformed
    return value


def _optional_count(obj: Mapping[str, Any], name: str) -> int:
    """A count the API may leave out (older versions) or send as null: zero; anything else must be a count."""
    value = obj.get(name)
    return 0 if value is None else _count(value)


def _obj(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise _Malformed
    return value


def _optional_obj(obj: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = obj.get(name)
    return {} if value is None else _obj(value)


def _dim(obj: Mapping[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is not None and not isinstance(value, str):
        raise _Malformed
    return value


def _day_of(value: Any) -> date:
    """The UTC day a bucket starts on: an hourly bucket belongs to the day of its start."""
    if not isinstance(value, str):
        raise _Malformed
    try:
        if len(value) == 10:
            return date.fromisoformat(value)
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _Malformed from None
    if moment.tzinfo is None:
        raise _Malformed
    return moment.astimezone(UTC).date()


def cents_to_nano(value: Any) -> int:
    """Minor units (cents, as a decimal string or a number, fractions allowed) as integer nano-dollars."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _Malformed
    try:
        cents = Decimal(str(value))
    except InvalidOperation:
        raise _Malformed from None
    if not cents.is_finite():
        raise _Malformed
    return int((cents * NANO_PER_CENT).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _buckets(pages: Sequence[Json], report: Report[Any]) -> Iterator[tuple[date, Mapping[str, Any]]]:
    """Every result of every well-formed bucket with the day it belongs to; the rest counted."""
    for page in pages:
        for bucket in page["data"]:
            try:
                day = _day_of(_obj(bucket).get("starting_at"))
                results = bucket.get("results")
                if not isinstance(results, list):
                    raise _Malformed
            except _Malformed:
                report.skipped["malformed bucket"] += 1
                continue
            for result in results:
                if isinstance(result, dict):
                    yield day, result
                else:
                    report.skipped["malformed row"] += 1


def parse_messages(pages: Sequence[Json]) -> Report[MessagesDay]:
    """Messages usage pages summed into one row per UTC day and combination of dimensions."""
    report: Report[MessagesDay] = Report(pages=len(pages))
    sums: dict[tuple[Any, ...], list[int]] = {}
    for day, result in _buckets(pages, report):
        try:
            key = (day, *(_dim(result, name) for name in ("model", "workspace_id", "api_key_id", "account_id")))
            key += (_dim(result, "service_tier"), _dim(result, "context_window"))
            cache = _optional_obj(result, "cache_creation")
            values = (
                _count(result.get("uncached_input_tokens")),
                _optional_count(cache, "ephemeral_5m_input_tokens"),
                _optional_count(cache, "ephemeral_1h_input_tokens"),
                _count(result.get("cache_read_input_tokens")),
                _count(result.get("output_tokens")),
                _optional_count(_optional_obj(result, "server_tool_use"), "web_search_requests"),
            )
        except _Malformed:
            report.skipped["malformed row"] += 1
            continue
        total = sums.setdefault(key, [0] * len(values))
        for i, value in enumerate(values):
            total[i] += value
    report.rows = [MessagesDay(*key, *values) for key, values in sorted(sums.items(), key=_order)]
    return report


def _order(item: tuple[tuple[Any, ...], Any]) -> tuple[Any, ...]:
    return tuple("" if part is None else part for part in item[0])


_COST_LINE = ("workspace_id", "description", "model", "cost_type", "token_type", "service_tier", "context_window")


def parse_costs(pages: Sequence[Json]) -> Report[CostDay]:
    """Cost report pages as one row per UTC day and cost line, amounts in nano-dollars."""
    report: Report[CostDay] = Report(pages=len(pages))
    sums: Counter[tuple[Any, ...]] = Counter()
    for day, result in _buckets(pages, report):
        try:
            if result.get("currency", "USD") != "USD":
                report.skipped["not USD"] += 1
                continue
            key = (day, *(_dim(result, name) for name in _COST_LINE))
            sums[key] += cents_to_nano(result.get("amount"))
        except _Malformed:
            report.skipped["malformed row"] += 1
    for (day, workspace, description, model, cost_type, token_type, tier, window), nano in sorted(
        sums.items(), key=_order
    ):
        report.rows.append(CostDay(day, workspace, description, model, cost_type, token_type, tier, window, nano))
    return report


def _claude_code_row(record: Mapping[str, Any]) -> ClaudeCodeDay:
    actor = _obj(record.get("actor"))
    actor_type = actor.get("type")
    name = actor.get("email_address" if actor_type == "user_actor" else "api_key_name")
    if actor_type not in ("user_actor", "api_actor") or not isinstance(name, str) or not name:
        raise _Malformed
    core = _obj(record.get("core_metrics"))
    lines = _obj(core.get("lines_of_code"))
    models = []
    for entry in record.get("model_breakdown") or ():
        entry = _obj(entry)
        tokens, cost, model = _obj(entry.get("tokens")), _obj(entry.get("estimated_cost")), entry.get("model")
        if not isinstance(model, str) or cost.get("currency", "USD") != "USD":
            raise _Malformed
        models.append(
            ClaudeCodeModel(
                model,
                _optional_count(tokens, "input"),
                _optional_count(tokens, "output"),
                _optional_count(tokens, "cache_read"),
                _optional_count(tokens, "cache_creation"),
                cents_to_nano(cost.get("amount")),
            )
        )
    return ClaudeCodeDay(
        day=_day_of(record.get("date")),
        actor_type=actor_type,
        actor=name,
        customer_type=_dim(record, "customer_type"),
        terminal_type=_dim(record, "terminal_type"),
        sessions=_count(core.get("num_sessions")),
        lines_added=_count(lines.get("added")),
        lines_removed=_count(lines.get("removed")),
        commits=_count(core.get("commits_by_claude_code")),
        pull_requests=_count(core.get("pull_requests_by_claude_code")),
        models=tuple(models),
    )


def parse_claude_code(pages: Sequence[Json]) -> Report[ClaudeCodeDay]:
    """Claude Code analytics pages as one row per actor and day."""
    report: Report[ClaudeCodeDay] = Report(pages=len(pages))
    for page in pages:
        for record in page["data"]:
            try:
                report.rows.append(_claude_code_row(_obj(record)))
            except _Malformed:
                report.skipped["malformed row"] += 1
    return report


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class AdminClient:
    """Reads the Admin API's reports through every page, waiting out 429s and 5xx answers with an injected sleep."""

    def __init__(
        self,
        key_file: Path,
        base_url: str = DEFAULT_BASE_URL,
        *,
        sleep: Sleep = time.sleep,
        attempts: int = 5,
        timeout_s: float = 30.0,
        max_wait_s: float = 300.0,
    ) -> None:
        self._key = read_key(key_file)
        self._base = base_url.rstrip("/")
        self._sleep = sleep
        self._attempts = attempts
        self._timeout_s = timeout_s
        self._max_wait_s = max_wait_s

    def __repr__(self) -> str:  # the key stays out of reprs, tracebacks' locals and logs
        return f"AdminClient({self._base!r})"

    def messages(self, start: datetime, end: datetime, bucket_width: str = "1d") -> Report[MessagesDay]:
        params = [("starting_at", _rfc3339(start)), ("ending_at", _rfc3339(end)), ("bucket_width", bucket_width)]
        params += [("group_by[]", name) for name in MESSAGES_GROUP_BY]
        return parse_messages(self.pages(MESSAGES, params))

    def costs(self, start: datetime, end: datetime) -> Report[CostDay]:
        params = [("starting_at", _rfc3339(start)), ("ending_at", _rfc3339(end)), ("bucket_width", "1d")]
        params += [("group_by[]", "workspace_id"), ("group_by[]", "description")]
        return parse_costs(self.pages(COST, params))

    def claude_code(self, day: date) -> Report[ClaudeCodeDay]:
        return parse_claude_code(self.pages(CLAUDE_CODE, [("starting_at", day.isoformat()), ("limit", "1000")]))

    def pages(self, endpoint: str, params: Sequence[tuple[str, str]]) -> list[Json]:
        """Every page of one report, or an AdminApiError: half a report is never returned, since a day read
        in part would later replace the whole day."""
        pages: list[Json] = []
        seen: set[str] = set()
        token: str | None = None
        while len(pages) < MAX_PAGES:
            page = self._get(endpoint, [*params, *([("page", token)] if token else [])])
            pages.append(page)
            if page.get("has_more") is not True:
                return pages
            token = page.get("next_page")
            if not isinstance(token, str) or not token or token in seen:
                raise AdminApiError(f"{endpoint}: has_more without a new next_page token (page {len(pages)})")
            seen.add(token)
        raise AdminApiError(f"{endpoint}: still has_more after {MAX_PAGES} pages")

    def _get(self, endpoint: str, params: Sequence[tuple[str, str]]) -> Json:
        url = f"{self._base}{endpoint}?{urllib.parse.urlencode(params)}"
        headers = {"x-api-key": self._key, "anthropic-version": API_VERSION, "accept": "application/json"}
        for attempt in range(1, self._attempts + 1):
            backoff = min(2.0 ** (attempt - 1), self._max_wait_s)
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=self._timeout_s) as r:
                    return _report_body(endpoint, r.read())
            except urllib.error.HTTPError as err:
                status = err.code
                retry_after = err.headers.get("retry-after") if err.headers else None
                err.close()
                if status in (401, 403):
                    raise AdminAuthError(
                        f"{endpoint}: HTTP {status}: the Admin API refused the key; sources.anthropic_admin.key_file"
                        " must hold an admin key (sk-ant-admin…) of the organisation"
                    ) from None
                if status != 429 and status < 500:
                    raise AdminApiError(f"{endpoint}: HTTP {status}") from None
                wait = _retry_after(retry_after) if status == 429 else None
                what = f"HTTP {status}"
            except (OSError, http.client.HTTPException) as err:  # refused, reset, cut short: worth another try
                wait, what = None, type(err).__name__
            if attempt == self._attempts:
                raise AdminApiError(f"{endpoint}: {what}, {self._attempts} attempts made") from None
            wait = min(backoff if wait is None else wait, self._max_wait_s)
            log.info("%s: %s, trying again in %g s", endpoint, what, wait)
            self._sleep(wait)
        raise AssertionError("unreachable")


def _retry_after(value: str | None) -> float | None:
    """The seconds a 429 asks us to wait (the delta-seconds form), or None to back off on our own."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 <= seconds < float("inf") else None


def _report_body(endpoint: str, raw: bytes) -> Json:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise AdminApiError(f"{endpoint}: the answer is not JSON ({len(raw)} bytes)") from None
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise AdminApiError(f"{endpoint}: the answer has no data list")
    return body
