"""Claude Code's OTLP log events, decoded: `api_request` events become usage events (with the sender's
identity kept beside them), `tool_result` events tool calls; other records are only counted. Pure."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb

from exporter.events import (
    MAX_CHARS,
    MAX_TOKENS,
    Agent,
    Source,
    Tokens,
    UsageEvent,
    latest,
    project_name,
    shorten,
    tool_label,
)
from exporter.sources.otlp.wire import (
    EPOCH,
    JSON,
    array,
    json_attributes,
    json_object,
    json_value,
    media_type,
    parse_protobuf,
    pb_attributes,
    resource_object,
)

MAX_COST_USD = Decimal(10**6)  # per request: more is a broken or hostile sender, not usage

_NANO = Decimal("1e-9")  # the ledger keeps costs in nano-dollars
_MAX_COST_FLOAT = float(MAX_COST_USD)
_PREFIX = "claude_code."
_NO_TOOLS: frozenset[str] = frozenset()


class Identity(NamedTuple):
    """Who sent a request (OAuth logins add all but `user_id`); kept off the usage event on purpose."""

    user_id: str | None = None
    email: str | None = None
    account_uuid: str | None = None
    organization_id: str | None = None


class ToolResult(NamedTuple):
    tool: str  # MCP tools collapsed to mcp__<server>
    success: bool | None
    session_id: str
    agent: str
    timestamp: datetime
    project: str = "unknown"  # the tool counters carry a project label, like the usage ones


class Logs(NamedTuple):
    requests: list[tuple[UsageEvent, str | None, Identity]]  # (event, raw query_source, identity)
    tools: list[ToolResult]
    other: int  # records of other events: skipped
    rejected: int  # api_request / tool_result records we could not use: OTLP partial success
    error: str  # the first rejection's reason, "" if none


class _Unusable(ValueError):
    pass


def decode_logs(body: bytes, content_type: str, now: datetime | None = None) -> Logs:
    """The usage events and tool results of an ExportLogsServiceRequest; other records are only counted.
    `now` is the wall clock future timestamps are judged by (read once when not given)."""
    out = _LogsBuilder(latest(now))
    if media_type(content_type) == JSON:
        _json_logs(json_object(body), out)
    else:
        _pb_logs(body, out)
    return out.result()


def _json_logs(doc: dict[str, Any], out: _LogsBuilder) -> None:
    for resource_logs in array(doc, "resourceLogs"):
        resource = json_attributes(resource_object(resource_logs.get("resource")).get("attributes"))
        for scope_logs in array(resource_logs, "scopeLogs"):
            for record in array(scope_logs, "logRecords"):
                body = record.get("body")
                out.add(
                    json_attributes(record.get("attributes")),
                    resource,
                    record.get("timeUnixNano"),
                    record.get("observedTimeUnixNano"),
                    json_value(body) if isinstance(body, dict) else None,
                )


def _pb_logs(body: bytes, out: _LogsBuilder) -> None:
    request = logs_pb.ExportLogsServiceRequest()
    parse_protobuf(request, body)
    for resource_logs in request.resource_logs:
        resource = pb_attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                which = record.body.WhichOneof("value")
                out.add(
                    pb_attributes(record.attributes),
                    resource,
                    record.time_unix_nano,
                    record.observed_time_unix_nano,
                    getattr(record.body, which) if which else None,
                )


class _LogsBuilder:
    def __init__(self, until: datetime) -> None:
        self.until = until
        self.requests: list[tuple[UsageEvent, str | None, Identity]] = []
        self.tools: list[ToolResult] = []
        self.other = self.rejected = 0
        self.error = ""

    def add(
        self, attrs: dict[str, object], resource: dict[str, object], time: object, observed: object, body: object
    ) -> None:
        name = attrs.get("event.name")
        if not isinstance(name, str) or not name:
            name = body if isinstance(body, str) else ""
        if name.startswith(_PREFIX):
            name = name[len(_PREFIX) :]
        try:
            if name == "api_request":
                self.requests.append(_request(attrs, resource, (time, observed, self.until)))
            elif name == "tool_result":
                self.tools.append(_tool_result(attrs, resource, (time, observed, self.until)))
            else:
                self.other += 1
        except _Unusable as e:
            self.rejected += 1
            self.error = self.error or f"{name} record: {e}"

    def result(self) -> Logs:
        message = f"{self.rejected} log record(s) rejected; first: {self.error}" if self.rejected else ""
        return Logs(self.requests, self.tools, self.other, self.rejected, message)


_When = tuple[object, object, datetime]  # a record's time and observed time, and the latest time accepted


def _request(
    attrs: dict[str, object], resource: dict[str, object], when: _When
) -> tuple[UsageEvent, str | None, Identity]:
    model = _id(attrs, "model")
    if model is None:
        raise _Unusable("no model")
    request_id = _id(attrs, "request_id")
    session = _id(attrs, "session.id") or "unknown"
    moment = _moment(attrs, *when)
    query_source = _label_text(attrs.get("query_source"))
    tokens = Tokens(
        _count(attrs, "input_tokens"),
        _count(attrs, "output_tokens"),
        _count(attrs, "cache_read_tokens"),
        _count(attrs, "cache_creation_tokens"),  # all 5-minute: the event has no TTL split
        0,
    )
    event = UsageEvent(  # positional: the fields in order, as the transcript parser builds them
        request_id or _fallback_key(attrs, session, moment),
        request_id,
        moment,
        session,
        _project(attrs, resource),
        model,
        agent_of(query_source),
        tokens,
        0,
        _NO_TOOLS,
        _speed(attrs.get("speed")),
        Source.OTLP,
        _cost(attrs),
    )
    return event, query_source, _identity(attrs, resource)


def _tool_result(attrs: dict[str, object], resource: dict[str, object], when: _When) -> ToolResult:
    tool = _text(attrs.get("tool_name"))
    if tool is None:
        raise _Unusable("no tool_name")
    return ToolResult(
        shorten(tool_label(tool)),
        _success(attrs.get("success")),
        _id(attrs, "session.id") or "unknown",
        agent_of(_text(attrs.get("query_source"))),
        _moment(attrs, *when),
        _project(attrs, resource),
    )


def agent_of(query_source: str | None) -> Agent:
    """`main`, `subagent` or `auxiliary` from Claude Code's raw `query_source` (absent: main)."""
    if not query_source or query_source == "sdk" or query_source.startswith("repl_main_thread"):
        return Agent.MAIN
    if query_source.startswith("agent:") or query_source == "hook_agent":
        return Agent.SUBAGENT
    return Agent.AUXILIARY  # title generation, prompt suggestions, compaction, …


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _label_text(value: object) -> str | None:
    return shorten(value) if isinstance(value, str) and value else None


def _id(attrs: dict[str, object], name: str) -> str | None:
    """An identifier (or the model), None when absent; longer than MAX_CHARS it is no real one."""
    value = _text(attrs.get(name))
    if value is not None and len(value) > MAX_CHARS:
        raise _Unusable(f"{name} longer than {MAX_CHARS} characters")
    return value


def _count(attrs: dict[str, object], name: str) -> int:
    value = attrs.get(name)
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the common case, checked first
        return value
    if value is None:
        return 0
    if isinstance(value, str):  # protobuf-JSON int64s are strings; some senders stringify everything
        value = _number(value, name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Unusable(f"{name} is not a number")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise _Unusable(f"{name} is not a whole number: {value!r}")
    if not 0 <= value <= MAX_TOKENS:
        raise _Unusable(f"{name} out of range: {value!r}")
    return int(value)


def _number(text: str, name: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise _Unusable(f"{name} is not a number: {text[:40]!r}") from None


def _cost(attrs: dict[str, object]) -> Decimal | None:
    # cost_usd first: cost_usd_micros is rounded to whole micro-dollars (0.0158754 arrives as 15875),
    # while cost_usd, rounded to nano-dollars, is the list price exactly (every request of the real captures).
    value = attrs.get("cost_usd")
    if type(value) is float and 0 <= value <= _MAX_COST_FLOAT:  # the common case, checked first
        return Decimal(repr(value)).quantize(_NANO)
    usd = _decimal(value, "cost_usd")
    if usd is None:
        micros = _decimal(attrs.get("cost_usd_micros"), "cost_usd_micros")
        usd = None if micros is None else micros.scaleb(-6)
    if usd is None:
        return None
    if usd > MAX_COST_USD:
        raise _Unusable(f"cost out of range: {usd}")
    return usd.quantize(_NANO)  # the ledger's unit; list prices are whole multiples of it


def _decimal(value: object, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _Unusable(f"{name} is not a number")
    try:
        # str() of a float is its shortest round-trip form: 0.109053, not the binary expansion
        amount = Decimal(value if isinstance(value, str) else str(value))
    except InvalidOperation:
        raise _Unusable(f"{name} is not a number: {str(value)[:40]!r}") from None
    if not amount.is_finite() or amount < 0:
        raise _Unusable(f"{name} out of range: {value!r}")
    return amount


def _moment(attrs: dict[str, object], time: object, observed: object, until: datetime) -> datetime:
    moment = _first_moment(attrs, time, observed)
    if moment > until:
        raise _Unusable(f"timestamp {moment.isoformat()} is in the future")
    return moment


def _first_moment(attrs: dict[str, object], time: object, observed: object) -> datetime:
    stamp = attrs.get("event.timestamp")  # milliseconds, like the transcript's, so both sources agree
    if isinstance(stamp, str):
        try:
            moment = datetime.fromisoformat(stamp)
            return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
        except (ValueError, OverflowError):  # year 1 an hour east of UTC is out of range
            pass
    for nanos in (time, observed):
        if isinstance(nanos, str) and nanos.isdigit():
            nanos = int(nanos)
        if type(nanos) is int and nanos > 0:
            try:
                return EPOCH + timedelta(microseconds=nanos // 1000)
            except OverflowError:
                break
    raise _Unusable("no usable timestamp")


def _fallback_key(attrs: dict[str, object], session: str, moment: datetime) -> str:
    # Without a request id only an identical record (same session, time, attributes) is the same request;
    # scalars only, and str() of each, so the JSON and protobuf forms of one record hash alike.
    parts = [session, moment.isoformat()]
    parts += sorted(f"{k}={v}" for k, v in attrs.items() if isinstance(v, str | int | float | bool))
    return "otlp:" + hashlib.blake2b("\n".join(parts).encode(), digest_size=16).hexdigest()


def _project(attrs: dict[str, object], resource: dict[str, object]) -> str:
    return project_name(_text(attrs.get("project")) or _text(resource.get("project")))  # never a path


def _speed(value: object) -> str:
    # The event says "normal" where transcripts and the pricer say "standard".
    if not isinstance(value, str) or value in ("", "normal"):
        return "standard"
    return shorten(value)


def _success(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


_IDENTITY = ("user.id", "user.email", "user.account_uuid", "organization.id")  # Identity's fields, in order


def _identity(attrs: dict[str, object], resource: dict[str, object]) -> Identity:
    found = [attrs.get(key) or resource.get(key) for key in _IDENTITY]
    return Identity._make([_label_text(value) for value in found])
