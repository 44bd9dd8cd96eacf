"""OTLP bodies as Claude Code 2.1.197 posts them, generated: log events and metric points as OTLP/JSON
dicts (the shapes, attribute order and value types of real captures), encoded to JSON or protobuf bytes.
"""

from __future__ import annotations

from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Gauge,
    Histogram,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from exporter.reports.periods import iso

VERSION = "2.1.197"
EVENTS_SCOPE = "com.anthropic.claude_code.events"
METRICS_SCOPE = "com.anthropic.claude_code"
RESOURCE: dict[str, object] = {
    "host.arch": "amd64",
    "os.type": "linux",
    "os.version": "6.18.44-fc-v669",
    "service.name": "claude-code",
    "service.version": VERSION,
}
USER_ID = "d65dd1f5bc01cd2d4d80ae824dd6374c1178e57a8a00dd95ee95a093ab026e89"  # sha256-like, as Claude Code sends
SESSION = "0f6d8924-d2a4-43c4-bb24-bbb30da025eb"
PROMPT = "0442810a-b481-4d7a-ba12-0174f3c59aed"
READ_TOOL_USE = "toolu_01XenX9jebslE2NCmAOF6Kq1tH"
T0_MS = 1795641232145  # 2026-11-25T21:13:52.145Z
SONNET = "claude-sonnet-4-5-20250929"
DELTA, CUMULATIVE = 1, 2

# Descriptions and units as Claude Code declares them (commit / pull_request: not in the captures).
METRICS: dict[str, tuple[str, str]] = {
    "claude_code.session.count": ("Count of CLI sessions started", ""),
    "claude_code.lines_of_code.count": (
        "Count of lines of code modified, with the 'type' attribute indicating whether lines were added or removed"
        " and the 'model' attribute indicating which model made the change",
        "",
    ),
    "claude_code.cost.usage": ("Cost of the Claude Code session", "USD"),
    "claude_code.token.usage": ("Number of tokens used", "tokens"),
    "claude_code.code_edit_tool.decision": (
        "Count of code editing tool permission decisions (accept/reject) for Edit, Write, and NotebookEdit tools",
        "",
    ),
    "claude_code.active_time.total": ("Total active time in seconds", "s"),
    "claude_code.commit.count": ("Number of git commits created", ""),
    "claude_code.pull_request.count": ("Number of pull requests created", ""),
}

# --- OTLP/JSON values ------------------------------------------------------------------------------


def value(v: object) -> dict[str, object]:
    """An AnyValue as Claude Code writes it: intValue a JSON number, not the proto3-JSON string."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": v}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": str(v)}


def attributes(pairs: dict[str, object]) -> list[dict[str, object]]:
    return [{"key": k, "value": value(v)} for k, v in pairs.items()]


def nanos(ms: int) -> str:
    return str(ms * 1_000_000)


# --- log records -----------------------------------------------------------------------------------


def record(
    name: str,
    ms: int,
    attrs: dict[str, object],
    *,
    sequence: int = 0,
    session_id: str = SESSION,
    prompt_id: str = PROMPT,
    identity: dict[str, object] | None = None,
) -> dict[str, Any]:
    """One log record: the attributes every event carries, then the event's own, in Claude Code's order.

    `identity` adds what an OAuth login adds (user.email, user.account_uuid, organization.id).
    """
    common: dict[str, object] = {
        "user.id": USER_ID,
        "session.id": session_id,
        **(identity or {}),
        "terminal.type": "dumb",
        "event.name": name,
        "event.timestamp": iso(ms),
        "event.sequence": sequence,
        "prompt.id": prompt_id,
    }
    return {
        "timeUnixNano": nanos(ms),
        "observedTimeUnixNano": nanos(ms),
        "body": {"stringValue": "claude_code." + name},
        "attributes": attributes({**common, **attrs}),
        "droppedAttributesCount": 0,
    }


def api_request(
    ms: int,
    request_id: str,
    *,
    model: str = SONNET,
    input: int = 1,
    output: int = 43,
    cache_read: int = 0,
    cache_creation: int = 28908,
    cost_usd: float = 0.109053,
    duration_ms: int = 218,
    speed: str = "normal",
    query_source: str = "sdk",
    **common: Any,
) -> dict[str, Any]:
    attrs: dict[str, object] = {
        "model": model,
        "input_tokens": input,
        "output_tokens": output,
        "cache_read_tokens": cache_read,
        "cache_creation_tokens": cache_creation,
        "cost_usd": cost_usd,
        "cost_usd_micros": round(cost_usd * 1_000_000),  # rounded: 0.0158754 USD is sent as 15875
        "duration_ms": duration_ms,
        "request_id": request_id,
        "speed": speed,
        "query_source": query_source,
    }
    return record("api_request", ms, attrs, **common)


def tool_result(
    ms: int,
    tool: str = "Read",
    *,
    success: str = "true",
    tool_use_id: str = READ_TOOL_USE,
    duration_ms: int = 6,
    **common: Any,
) -> dict[str, Any]:
    # Every value a string here, numbers included: that is how Claude Code sends this event.
    attrs: dict[str, object] = {
        "tool_name": tool,
        "tool_use_id": tool_use_id,
        "success": success,
        "duration_ms": str(duration_ms),
        "tool_input_size_bytes": "52",
        "tool_result_size_bytes": "35",
    }
    return record("tool_result", ms, attrs, **common)


def tool_decision(ms: int, tool: str = "Read", *, tool_use_id: str = READ_TOOL_USE, **common: Any) -> dict[str, Any]:
    attrs: dict[str, object] = {"decision": "accept", "source": "config", "tool_name": tool, "tool_use_id": tool_use_id}
    return record("tool_decision", ms, attrs, **common)


def user_prompt(ms: int, **common: Any) -> dict[str, Any]:
    return record("user_prompt", ms, {"prompt_length": "39", "prompt": "<REDACTED>"}, **common)


def assistant_response(
    ms: int, request_id: str, *, model: str = SONNET, query_source: str = "sdk", **common: Any
) -> dict[str, Any]:
    attrs: dict[str, object] = {
        "response_length": 26,
        "response": "<REDACTED>",
        "request_id": request_id,
        "model": model,
        "query_source": query_source,
    }
    return record("assistant_response", ms, attrs, **common)


def logs_body(records: list[dict[str, Any]], resource: dict[str, object] | None = None) -> dict[str, Any]:
    """An ExportLogsServiceRequest in OTLP/JSON: one resource, one scope, the records in order."""
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": attributes(resource or RESOURCE), "droppedAttributesCount": 0},
                "scopeLogs": [{"scope": {"name": EVENTS_SCOPE, "version": VERSION}, "logRecords": records}],
            }
        ]
    }


def request_id(i: int, prefix: str = "req_011C") -> str:
    return f"{prefix}{i:022d}"


def api_request_logs(
    n: int,
    *,
    start_ms: int = T0_MS,
    first: int = 0,
    session_id: str = SESSION,
    resource: dict[str, object] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """`n` api_request records, 150 ms apart, request ids `request_id(first)` onwards: a batched export."""
    records = [
        api_request(start_ms + 150 * i, request_id(first + i), sequence=first + i, session_id=session_id, **fields)
        for i in range(n)
    ]
    return logs_body(records, resource)


def conversation_logs(start_ms: int = T0_MS, session_id: str = SESSION) -> dict[str, Any]:
    """One prompt's events as the first export of a Read → Edit → text session sends them: 3 api_request,
    2 tool_result and 5 other records."""
    ids = [request_id(1), request_id(2), request_id(3)]
    edit = "toolu_015spjqze1xMJWnPM3UCQ1Wh0g"
    second: dict[str, Any] = {
        "output": 54,
        "cache_read": 27158,
        "cache_creation": 1844,
        "cost_usd": 0.0158754,
        "duration_ms": 191,
    }
    third: dict[str, Any] = {
        "output": 31,
        "cache_read": 27158,
        "cache_creation": 1973,
        "cost_usd": 0.01601415,
        "duration_ms": 157,
    }
    s = session_id
    records = [
        user_prompt(start_ms, sequence=0, session_id=s),
        tool_decision(start_ms + 226, "Read", sequence=1, session_id=s),
        tool_result(start_ms + 233, "Read", sequence=2, session_id=s),
        api_request(start_ms + 253, ids[0], sequence=3, session_id=s),
        assistant_response(start_ms + 253, ids[0], sequence=4, session_id=s),
        tool_decision(start_ms + 432, "Edit", tool_use_id=edit, sequence=5, session_id=s),
        tool_result(start_ms + 439, "Edit", tool_use_id=edit, duration_ms=5, sequence=6, session_id=s),
        api_request(start_ms + 454, ids[1], sequence=7, session_id=s, **second),
        api_request(start_ms + 620, ids[2], sequence=8, session_id=s, **third),
        assistant_response(start_ms + 620, ids[2], sequence=9, session_id=s),
    ]
    return logs_body(records)


# --- metrics ---------------------------------------------------------------------------------------


def data_point(
    attrs: dict[str, object], amount: float, start_ns: int, time_ns: int, *, session_id: str = SESSION
) -> dict[str, Any]:
    common: dict[str, object] = {"user.id": USER_ID, "session.id": session_id, "terminal.type": "dumb"}
    return {
        "attributes": attributes({**common, **attrs}),
        "startTimeUnixNano": str(start_ns),
        "timeUnixNano": str(time_ns),
        "asDouble": amount,
    }


def sum_metric(name: str, points: list[dict[str, Any]], temporality: int = DELTA) -> dict[str, Any]:
    description, unit = METRICS.get(name, ("", ""))
    return {
        "name": name,
        "description": description,
        "unit": unit,
        "sum": {"aggregationTemporality": temporality, "isMonotonic": True, "dataPoints": points},
    }


def metrics_body(metrics: list[dict[str, Any]], resource: dict[str, object] | None = None) -> dict[str, Any]:
    """An ExportMetricsServiceRequest in OTLP/JSON: one resource, Claude Code's meter scope."""
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": attributes(resource or RESOURCE), "droppedAttributesCount": 0},
                "scopeMetrics": [{"scope": {"name": METRICS_SCOPE, "version": VERSION}, "metrics": metrics}],
            }
        ]
    }


def session_metrics(
    start_ns: int,
    time_ns: int,
    *,
    temporality: int = DELTA,
    lines: tuple[int, int] = (1, 0),
    commits: int = 0,
    pull_requests: int = 0,
    active_s: float = 0.75,
    model: str = SONNET,
    session_id: str = SESSION,
) -> dict[str, Any]:
    """One export of a session's metrics, as Claude Code sends them every interval.

    Cumulative exports repeat every series with its running value and its first start time; delta
    exports carry what changed since the last one. The caller gives the values for the temporality.
    """

    def point(attrs: dict[str, object], amount: float) -> dict[str, Any]:
        return data_point(attrs, amount, start_ns, time_ns, session_id=session_id)

    usage: dict[str, object] = {"model": "claude-sonnet-4-5", "query_source": "main"}
    tokens = {"input": 3, "output": 128, "cacheRead": 54316, "cacheCreation": 32725}
    added, removed = (
        point({"type": "added", "model": model}, lines[0]),
        point({"type": "removed", "model": model}, lines[1]),
    )
    edit: dict[str, object] = {"decision": "accept", "source": "config", "tool_name": "Edit", "language": "Plain text"}
    metrics = [
        sum_metric("claude_code.session.count", [point({"start_type": "fresh"}, 1)], temporality),
        sum_metric("claude_code.lines_of_code.count", [added, removed], temporality),
        sum_metric("claude_code.cost.usage", [point(usage, 0.14094255)], temporality),
        sum_metric("claude_code.token.usage", [point({**usage, "type": k}, v) for k, v in tokens.items()], temporality),
        sum_metric("claude_code.code_edit_tool.decision", [point(edit, 1)], temporality),
    ]
    if commits:
        metrics.append(sum_metric("claude_code.commit.count", [point({}, commits)], temporality))
    if pull_requests:
        metrics.append(sum_metric("claude_code.pull_request.count", [point({}, pull_requests)], temporality))
    metrics.append(sum_metric("claude_code.active_time.total", [point({"type": "cli"}, active_s)], temporality))
    return metrics_body(metrics)


# --- encoders --------------------------------------------------------------------------------------


def to_json(doc: dict[str, Any]) -> bytes:
    return orjson.dumps(doc)


def to_protobuf(doc: dict[str, Any]) -> bytes:
    """The same request as http/protobuf sends it, built field by field with opentelemetry.proto."""
    if "resourceLogs" in doc:
        logs = ExportLogsServiceRequest(resource_logs=[_resource_logs(r) for r in doc["resourceLogs"]])
        return bytes(logs.SerializeToString())
    metrics = ExportMetricsServiceRequest(resource_metrics=[_resource_metrics(r) for r in doc["resourceMetrics"]])
    return bytes(metrics.SerializeToString())


def _any(v: dict[str, Any]) -> AnyValue:
    ((kind, x),) = v.items()
    if kind == "stringValue":
        return AnyValue(string_value=x)
    if kind == "intValue":
        return AnyValue(int_value=int(x))
    if kind == "doubleValue":
        return AnyValue(double_value=float(x))
    if kind == "boolValue":
        return AnyValue(bool_value=x)
    raise ValueError(f"no protobuf form for {kind}")


def _key_values(items: list[dict[str, Any]]) -> list[KeyValue]:
    return [KeyValue(key=kv["key"], value=_any(kv["value"])) for kv in items]


def _scope(scope: dict[str, Any]) -> InstrumentationScope:
    return InstrumentationScope(name=scope["name"], version=scope["version"])


def _resource_logs(r: dict[str, Any]) -> ResourceLogs:
    return ResourceLogs(
        resource=Resource(attributes=_key_values(r["resource"]["attributes"])),
        scope_logs=[
            ScopeLogs(scope=_scope(s["scope"]), log_records=[_log_record(x) for x in s["logRecords"]])
            for s in r["scopeLogs"]
        ],
    )


def _log_record(r: dict[str, Any]) -> LogRecord:
    return LogRecord(
        time_unix_nano=int(r.get("timeUnixNano", 0)),
        observed_time_unix_nano=int(r.get("observedTimeUnixNano", 0)),
        body=_any(r["body"]) if "body" in r else None,
        attributes=_key_values(r.get("attributes", [])),
    )


def _resource_metrics(r: dict[str, Any]) -> ResourceMetrics:
    return ResourceMetrics(
        resource=Resource(attributes=_key_values(r["resource"]["attributes"])),
        scope_metrics=[
            ScopeMetrics(scope=_scope(s["scope"]), metrics=[_metric(m) for m in s["metrics"]])
            for s in r["scopeMetrics"]
        ],
    )


def _metric(m: dict[str, Any]) -> Metric:
    if "histogram" in m:  # only an empty one: a shape the receiver must skip
        return Metric(name=m["name"], histogram=Histogram())
    if "gauge" in m:
        gauge = Gauge(data_points=[_number_point(p) for p in m["gauge"]["dataPoints"]])
        return Metric(name=m["name"], description=m.get("description", ""), unit=m.get("unit", ""), gauge=gauge)
    total = Sum(
        aggregation_temporality=m["sum"]["aggregationTemporality"],
        is_monotonic=m["sum"]["isMonotonic"],
        data_points=[_number_point(p) for p in m["sum"]["dataPoints"]],
    )
    return Metric(name=m["name"], description=m.get("description", ""), unit=m.get("unit", ""), sum=total)


def _number_point(p: dict[str, Any]) -> NumberDataPoint:
    point = NumberDataPoint(
        attributes=_key_values(p["attributes"]),
        start_time_unix_nano=int(p["startTimeUnixNano"]),
        time_unix_nano=int(p["timeUnixNano"]),
    )
    if "asInt" in p:
        point.as_int = int(p["asInt"])
    else:
        point.as_double = float(p["asDouble"])
    return point
