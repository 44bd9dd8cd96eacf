"""Claude Code's own OTLP telemetry, decoded: `api_request` log events become usage events, `tool_result`
events tool calls, and its engineering counters running totals. Pure: bytes in, values out (I/O is in
`otlp_http`); OTLP/JSON is walked as plain dicts, protobuf through opentelemetry.proto.

Strings and times are bounded as `exporter.events` says: a record whose model, request id or session id
is longer than MAX_CHARS, or whose time is more than FUTURE_TOLERANCE after the wall clock (`now`,
injected), is rejected (partial success); project, tool, speed, query_source and identity are shortened.
A metric point later than that is dropped like a point without a value; metric names and attributes
are shortened (they key the series Engineering remembers).
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, NamedTuple

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from exporter.events import MAX_CHARS, Tokens, UsageEvent, latest, project_name, shorten, tool_label

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
SOURCE = "otlp"
MAX_TOKENS = 10**9  # per field and request: more is a broken or hostile sender, not usage
MAX_COST_USD = Decimal(10**6)  # per request, likewise
MAX_SERIES = 10_000  # cumulative series Engineering remembers (see there)

_NANO = Decimal("1e-9")  # the ledger keeps costs in nano-dollars
_MAX_COST_FLOAT = float(MAX_COST_USD)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_PREFIX = "claude_code."
_NO_TOOLS: frozenset[str] = frozenset()
_CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_CUMULATIVE_NAME = "AGGREGATION_TEMPORALITY_CUMULATIVE"  # proto3 JSON also allows the enum's name


class OtlpError(ValueError):
    """A body we cannot take as a whole; `status` is the HTTP answer (400 malformed, 415 unsupported)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


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


class Point(NamedTuple):
    name: str
    attributes: tuple[tuple[str, str], ...]  # sorted by key
    value: float
    start_ns: int
    time_ns: int
    cumulative: bool
    monotonic: bool


class _Unusable(ValueError):
    pass


# --- content types and responses -----------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    """`application/json` or `application/x-protobuf` (parameters ignored); else OtlpError with status 415."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != JSON and media != PROTOBUF:
        raise OtlpError(f"unsupported content type {content_type!r}: send {JSON} or {PROTOBUF}", 415)
    return media


def response(kind: Literal["logs", "metrics"], content_type: str, rejected: int, message: str) -> bytes:
    """The Export*ServiceResponse body, in the request's encoding; partial success only if rejected > 0."""
    if media_type(content_type) == JSON:
        if rejected <= 0:
            return b"{}"
        field = "rejectedLogRecords" if kind == "logs" else "rejectedDataPoints"
        # int64 is a decimal string in proto3 JSON; OTLP decoders take strings and numbers alike.
        return orjson.dumps({"partialSuccess": {field: str(rejected), "errorMessage": message}})
    if kind == "logs":
        logs = logs_pb.ExportLogsServiceResponse()
        if rejected > 0:
            logs.partial_success.rejected_log_records = rejected
            logs.partial_success.error_message = message
        encoded: bytes = logs.SerializeToString()
        return encoded
    metrics = metrics_pb.ExportMetricsServiceResponse()
    if rejected > 0:
        metrics.partial_success.rejected_data_points = rejected
        metrics.partial_success.error_message = message
    encoded = metrics.SerializeToString()
    return encoded


def status_body(content_type: str | None, message: str) -> tuple[bytes, str]:
    """An error answer as OTLP/HTTP wants it: a google.rpc.Status (message only) in the request's encoding."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == JSON:
        return orjson.dumps({"message": message}), JSON
    if media == PROTOBUF:
        text = message.encode()
        return b"\x12" + _varint(len(text)) + text, PROTOBUF  # field 2 (message), length-delimited
    return message.encode() + b"\n", "text/plain; charset=utf-8"


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# --- logs ----------------------------------------------------------------------------------------


def decode_logs(body: bytes, content_type: str, now: datetime | None = None) -> Logs:
    """The usage events and tool results of an ExportLogsServiceRequest; other records are only counted.
    `now` is the wall clock future timestamps are judged by (read once when not given)."""
    out = _LogsBuilder(latest(now))
    if media_type(content_type) == JSON:
        _json_logs(_json(body), out)
    else:
        _pb_logs(body, out)
    return out.result()


def _json_logs(doc: dict[str, Any], out: _LogsBuilder) -> None:
    for resource_logs in _array(doc, "resourceLogs"):
        resource = _json_attributes(_object(resource_logs.get("resource")).get("attributes"))
        for scope_logs in _array(resource_logs, "scopeLogs"):
            for record in _array(scope_logs, "logRecords"):
                body = record.get("body")
                out.add(
                    _json_attributes(record.get("attributes")),
                    resource,
                    record.get("timeUnixNano"),
                    record.get("observedTimeUnixNano"),
                    _json_value(body) if isinstance(body, dict) else None,
                )


def _pb_logs(body: bytes, out: _LogsBuilder) -> None:
    request = logs_pb.ExportLogsServiceRequest()
    _parse(request, body)
    for resource_logs in request.resource_logs:
        resource = _pb_attributes(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                which = record.body.WhichOneof("value")
                out.add(
                    _pb_attributes(record.attributes),
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
        SOURCE,
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


def agent_of(query_source: str | None) -> str:
    """`main`, `subagent` or `auxiliary` from Claude Code's raw `query_source` (absent: main)."""
    if not query_source or query_source == "sdk" or query_source.startswith("repl_main_thread"):
        return "main"
    if query_source.startswith("agent:") or query_source == "hook_agent":
        return "subagent"
    return "auxiliary"  # title generation, prompt suggestions, compaction, …


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
                return _EPOCH + timedelta(microseconds=nanos // 1000)
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


# --- metrics -------------------------------------------------------------------------------------


def decode_metrics(body: bytes, content_type: str, now: datetime | None = None) -> list[Point]:
    """The Sum and Gauge data points of an ExportMetricsServiceRequest; histograms and the like are ignored,
    and so are points stamped more than FUTURE_TOLERANCE after `now` (the wall clock when not given)."""
    until = latest(now)
    until_ns = (until - _EPOCH) // timedelta(microseconds=1) * 1000
    points = _json_points(_json(body)) if media_type(content_type) == JSON else _pb_points(body)
    return [p for p in points if p.time_ns <= until_ns and p.start_ns <= until_ns]


def _pb_points(body: bytes) -> list[Point]:
    request = metrics_pb.ExportMetricsServiceRequest()
    _parse(request, body)
    points: list[Point] = []
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                which = metric.WhichOneof("data")
                if which == "sum":
                    data, cumulative = metric.sum.data_points, metric.sum.aggregation_temporality == _CUMULATIVE
                    monotonic = metric.sum.is_monotonic
                elif which == "gauge":
                    data, cumulative, monotonic = metric.gauge.data_points, False, False
                else:
                    continue
                for p in data:
                    kind = p.WhichOneof("value")
                    if kind is not None:
                        labels = _labels(_pb_attributes(p.attributes))
                        value = float(getattr(p, kind))
                        points.append(
                            Point(
                                shorten(metric.name),
                                labels,
                                value,
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                cumulative,
                                monotonic,
                            )
                        )
    return points


def _json_points(doc: dict[str, Any]) -> list[Point]:
    points: list[Point] = []
    for resource_metrics in _array(doc, "resourceMetrics"):
        for scope_metrics in _array(resource_metrics, "scopeMetrics"):
            for metric in _array(scope_metrics, "metrics"):
                name = metric.get("name") or ""  # absent or null: proto3's default
                if not isinstance(name, str):
                    raise OtlpError("a metric name should be a string")
                if isinstance(metric.get("sum"), dict):
                    data = metric["sum"]
                    temporality = data.get("aggregationTemporality")
                    cumulative = temporality in (_CUMULATIVE, _CUMULATIVE_NAME)
                    monotonic = data.get("isMonotonic") is True
                elif isinstance(metric.get("gauge"), dict):
                    data, cumulative, monotonic = metric["gauge"], False, False
                else:
                    continue
                for p in _array(data, "dataPoints"):
                    value = _point_value(p)
                    if value is not None:
                        labels = _labels(_json_attributes(p.get("attributes")))
                        points.append(
                            Point(
                                shorten(name),
                                labels,
                                value,
                                _nanos(p.get("startTimeUnixNano")),
                                _nanos(p.get("timeUnixNano")),
                                cumulative,
                                monotonic,
                            )
                        )
    return points


def _point_value(point: dict[str, Any]) -> float | None:
    # A point without a value has nothing to add: skipped rather than read as 0, which would look like a reset.
    value = point.get("asDouble", point.get("asInt"))
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)  # proto3 JSON writes NaN and Infinity as strings
    except ValueError:
        return None


def _nanos(value: object) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _labels(attrs: dict[str, object]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((shorten(k), shorten(_label(v))) for k, v in attrs.items()))


def _label(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # JSON may write a double 1 as 1: the same label as protobuf's 1.0
    return value if isinstance(value, str) else str(value)


# Claude Code metric -> (our name, the values of its `type` attribute kept as kinds).
ENGINEERING: dict[str, tuple[str, frozenset[str]]] = {
    "claude_code.lines_of_code.count": ("lines_of_code", frozenset({"added", "removed"})),
    "claude_code.commit.count": ("commits", frozenset()),
    "claude_code.pull_request.count": ("pull_requests", frozenset()),
    "claude_code.active_time.total": ("active_time_seconds", frozenset({"user", "cli"})),
}


class Engineering:
    """Claude Code's engineering counters as running totals, whatever temporality it sends.

    Totals are keyed (metric, kind): kind is `added`/`removed` for lines_of_code, `user`/`cli` for
    active_time_seconds (kept apart: the two are different clocks), "" for commits and pull requests,
    and `other` for an unknown `type`. Its token and cost metrics are ignored: the events are the usage.

    A delta point adds its value. A cumulative point adds its increase over the last point of its series
    (name, attributes, start time); a first point, or a lower value, counts from zero (a reset). Series
    carry `session.id`, so a team exporter would see them grow without end: at most `max_series` are
    remembered, the longest idle forgotten first. A forgotten series that comes back counts its whole
    value again, which only happens to a session idle while `max_series` newer ones were active.
    """

    def __init__(self, max_series: int = MAX_SERIES, totals: Mapping[tuple[str, str], float] | None = None) -> None:
        self.max_series = max_series
        self._series: dict[tuple[str, tuple[tuple[str, str], ...], int], tuple[float, int]] = {}
        self._totals: dict[tuple[str, str], float] = dict(totals or {})
        self._lock = threading.Lock()

    def add(self, points: Iterable[Point]) -> None:
        with self._lock:
            for point in points:
                spec = ENGINEERING.get(point.name)
                # Gauges and up-down sums are no counts to total; a negative or NaN count is garbage.
                if spec is None or not point.monotonic or not (math.isfinite(point.value) and point.value >= 0):
                    continue
                key = (spec[0], _kind(spec[1], point.attributes))
                increase = self._increase(point) if point.cumulative else point.value
                self._totals[key] = self._totals.get(key, 0.0) + increase

    @property
    def totals(self) -> dict[tuple[str, str], float]:
        with self._lock:
            return dict(self._totals)

    def _increase(self, point: Point) -> float:
        series = (point.name, point.attributes, point.start_ns)
        last = self._series.pop(series, None)  # re-inserted below: dict order is then least recently seen
        if last is not None and point.time_ns <= last[1]:
            self._series[series] = last  # a resent or out-of-order point: already counted
            return 0.0
        self._series[series] = (point.value, point.time_ns)
        if len(self._series) > self.max_series:
            del self._series[next(iter(self._series))]
        if last is None or point.value < last[0]:
            return point.value
        return point.value - last[0]


def _kind(kinds: frozenset[str], attributes: tuple[tuple[str, str], ...]) -> str:
    if not kinds:
        return ""
    value = next((v for k, v in attributes if k == "type"), None)
    return "" if value is None else value if value in kinds else "other"


# --- OTLP/JSON and protobuf plumbing -------------------------------------------------------------


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise OtlpError(f"invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise OtlpError("the body should be a JSON object")
    return doc


def _parse(message: logs_pb.ExportLogsServiceRequest | metrics_pb.ExportMetricsServiceRequest, body: bytes) -> None:
    try:
        message.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as e:  # upb reports some failures as RuntimeError
        raise OtlpError(f"invalid protobuf: {e}") from None


def _array(parent: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """`parent[key]`, a list of objects; absent or null is empty (proto3 JSON), anything else is malformed."""
    items = parent.get(key)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise OtlpError(f"{key} should be an array of objects")
    return items


def _object(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OtlpError("resource should be an object")
    return value


def _json_value(value: dict[str, Any]) -> object:
    for item in value.values():  # an AnyValue has one member, whatever its type
        return item
    return None


def _json_attributes(items: object) -> dict[str, object]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise OtlpError("attributes should be an array")
    found: dict[str, object] = {}
    try:
        for kv in items:  # the hot loop of JSON decoding: _json_value inlined
            key, value, item = kv["key"], kv.get("value"), None
            if type(key) is not str:
                raise TypeError
            if value:
                for item in value.values():  # noqa: B007 - the first (only) member is the value
                    break
            found[key] = item
    except (AttributeError, KeyError, TypeError):
        raise OtlpError("an attribute should be an object with a string key and a value") from None
    return found


def _pb_attributes(items: Iterable[KeyValue]) -> dict[str, object]:
    found: dict[str, object] = {}
    for kv in items:
        value = kv.value
        which = value.WhichOneof("value")
        found[kv.key] = getattr(value, which) if which else None
    return found
