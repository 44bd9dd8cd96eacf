"""Decoding Claude Code's OTLP bodies (generated like the real captures), the engineering totals, the responses."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from google.rpc.status_pb2 import Status
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse

from exporter.events import Tokens, UsageEvent, tool_label
from exporter.sources.otlp import (
    JSON,
    PROTOBUF,
    Engineering,
    Identity,
    Logs,
    OtlpError,
    Point,
    ToolResult,
    agent_of,
    decode_logs,
    decode_metrics,
    media_type,
    response,
    status_body,
)
from tests.support import otlpgen as gen

Encode = Callable[[dict[str, Any]], bytes]
ENCODINGS = [pytest.param(gen.to_json, JSON, id="json"), pytest.param(gen.to_protobuf, PROTOBUF, id="protobuf")]
RID = gen.request_id(1)


def at(ms: int) -> datetime:
    """A moment in the generated session's second, 2026-11-25T21:13:52 UTC (T0_MS is its 145th ms)."""
    return datetime(2026, 11, 25, 21, 13, 52, ms * 1000, tzinfo=UTC)


AT = at(398)  # T0_MS + 253
START, TIME = 1795641232584000000, 1795641232769000000  # of metric points


def event(**changes: Any) -> UsageEvent:
    """The usage event of `gen.api_request(T0_MS + 253, RID)`, with `changes`."""
    base = UsageEvent(
        key=RID,
        request_id=RID,
        timestamp=AT,
        session_id=gen.SESSION,
        project="unknown",
        model=gen.SONNET,
        agent="main",
        tokens=Tokens(input=1, output=43, cache_read=0, cache_write_5m=28908, cache_write_1h=0),
        web_search_requests=0,
        tools=frozenset(),
        speed="standard",
        source="otlp",
        reported_cost=Decimal("0.109053"),
    )
    return base._replace(**changes)


def one_request(**fields: Any) -> dict[str, Any]:
    return gen.api_request(gen.T0_MS + 253, RID, sequence=3, **fields)


def body_of(*records: dict[str, Any], resource: dict[str, object] | None = None) -> dict[str, Any]:
    return gen.logs_body(list(records), resource)


def set_attr(record: dict[str, Any], key: str, value: dict[str, object] | None) -> dict[str, Any]:
    """The record with attribute `key` given this OTLP/JSON value (None: removed), as a raw sender might."""
    attrs = [kv for kv in record["attributes"] if kv["key"] != key]
    if value is not None:
        attrs.append({"key": key, "value": value})
    return {**record, "attributes": attrs}


@pytest.mark.parametrize(("encode", "content_type"), ENCODINGS)
def test_an_api_request_becomes_a_usage_event_with_its_raw_query_source_and_identity(
    encode: Encode, content_type: str
) -> None:
    logs = decode_logs(encode(body_of(one_request())), content_type)
    assert logs == Logs([(event(), "sdk", Identity(user_id=gen.USER_ID))], [], 0, 0, "")


@pytest.mark.parametrize(("encode", "content_type"), ENCODINGS)
def test_a_conversation_gives_its_requests_and_tool_results_and_counts_the_other_events(
    encode: Encode, content_type: str
) -> None:
    logs = decode_logs(encode(gen.conversation_logs()), content_type)
    assert [(e.key, e.timestamp, tuple(e.tokens), e.reported_cost) for e, _, _ in logs.requests] == [
        (gen.request_id(1), at(398), (1, 43, 0, 28908, 0), Decimal("0.109053")),
        (gen.request_id(2), at(599), (1, 54, 27158, 1844, 0), Decimal("0.0158754")),
        (gen.request_id(3), at(765), (1, 31, 27158, 1973, 0), Decimal("0.01601415")),
    ]
    assert logs.tools == [
        ToolResult("Read", True, gen.SESSION, "main", at(378)),
        ToolResult("Edit", True, gen.SESSION, "main", at(584)),
    ]
    assert (logs.other, logs.rejected, logs.error) == (5, 0, "")  # prompt, 2 decisions, 2 responses


def test_an_oauth_login_adds_identity_beside_the_event_not_in_it() -> None:
    email, account, organization = "dev@example.com", "5d6f0c1e-3f8e", "0e5f4b0a-8a3c"
    oauth: dict[str, object] = {"user.email": email, "user.account_uuid": account, "organization.id": organization}
    logs = decode_logs(gen.to_json(body_of(one_request(identity=oauth))), JSON)
    assert logs.requests == [(event(), "sdk", Identity(gen.USER_ID, email, account, organization))]


@pytest.mark.parametrize(
    ("query_source", "agent"),
    [
        ("repl_main_thread", "main"),
        ("repl_main_thread:outputStyle:Explanatory", "main"),  # the interactive REPL with an output style
        ("sdk", "main"),  # print mode (-p), as in every real capture
        (None, "main"),  # older versions send none
        ("", "main"),
        ("agent:builtin:general-purpose", "subagent"),
        ("agent:custom:reviewer", "subagent"),
        ("hook_agent", "subagent"),
        ("prompt_suggestion", "auxiliary"),  # r7: background suggestions, OTLP only
        ("generate_session_title", "auxiliary"),
        ("compact", "auxiliary"),
        ("agent_summary", "auxiliary"),  # not "agent:": a background summary, not a subagent
    ],
)
def test_query_source_maps_to_an_agent(query_source: str | None, agent: str) -> None:
    assert agent_of(query_source) == agent


def test_the_decoded_event_carries_the_agent_and_the_raw_query_source() -> None:
    record = one_request(query_source="agent:builtin:general-purpose")
    assert decode_logs(gen.to_json(body_of(record)), JSON).requests == [
        (event(agent="subagent"), "agent:builtin:general-purpose", Identity(gen.USER_ID))
    ]
    missing = set_attr(one_request(), "query_source", None)
    assert decode_logs(gen.to_json(body_of(missing)), JSON).requests == [(event(), None, Identity(gen.USER_ID))]


def test_numbers_sent_as_strings_read_like_numbers() -> None:
    record = one_request()
    record = set_attr(record, "input_tokens", {"intValue": "1552"})  # proto3 JSON's int64 form
    record = set_attr(record, "output_tokens", {"stringValue": "43"})
    record = set_attr(record, "cache_read_tokens", {"doubleValue": 7.0})
    record = set_attr(record, "cost_usd", {"stringValue": "0.1"})
    logs = decode_logs(gen.to_json(body_of(record)), JSON)
    tokens = Tokens(input=1552, output=43, cache_read=7, cache_write_5m=28908)
    assert logs.requests == [(event(tokens=tokens, reported_cost=Decimal("0.1")), "sdk", Identity(gen.USER_ID))]


@pytest.mark.parametrize(
    ("key", "value", "error"),
    [
        ("output_tokens", {"intValue": -1}, "output_tokens out of range: -1"),
        ("output_tokens", {"intValue": 10**9 + 1}, "output_tokens out of range: 1000000001"),
        ("output_tokens", {"doubleValue": 2.5}, "output_tokens is not a whole number: 2.5"),
        ("output_tokens", {"stringValue": "NaN"}, "output_tokens is not a whole number: nan"),
        ("output_tokens", {"stringValue": "many"}, "output_tokens is not a number: 'many'"),
        ("output_tokens", {"boolValue": True}, "output_tokens is not a number"),
        ("cost_usd", {"doubleValue": -0.5}, "cost_usd out of range: -0.5"),
        ("cost_usd", {"stringValue": "Infinity"}, "cost_usd out of range: 'Infinity'"),
        ("cost_usd", {"doubleValue": 1e7}, "cost out of range: 10000000.0"),
        ("model", None, "no model"),
    ],
)
def test_an_unusable_api_request_is_rejected_and_the_rest_of_the_body_kept(
    key: str, value: dict[str, object] | None, error: str
) -> None:
    bad = set_attr(gen.api_request(gen.T0_MS, "req_bad"), key, value)
    logs = decode_logs(gen.to_json(body_of(bad, one_request())), JSON)
    assert logs == Logs(
        [(event(), "sdk", Identity(gen.USER_ID))],
        [],
        0,
        1,
        f"1 log record(s) rejected; first: api_request record: {error}",
    )


def test_a_record_without_any_usable_time_is_rejected_and_the_first_reason_is_kept() -> None:
    timeless = set_attr(one_request(), "event.timestamp", None) | {"timeUnixNano": "0", "observedTimeUnixNano": "0"}
    nameless_tool = set_attr(gen.tool_result(gen.T0_MS), "tool_name", None)
    logs = decode_logs(gen.to_json(body_of(timeless, nameless_tool)), JSON)
    assert (logs.requests, logs.tools, logs.other, logs.rejected) == ([], [], 0, 2)
    assert logs.error == "2 log record(s) rejected; first: api_request record: no usable timestamp"


def test_the_time_is_the_event_timestamp_else_the_record_time_else_the_observed_time() -> None:
    record = one_request() | {"timeUnixNano": "1795641232400000000", "observedTimeUnixNano": "1795641232500000000"}
    assert decode_logs(gen.to_json(body_of(record)), JSON).requests[0][0].timestamp == AT
    record = set_attr(record, "event.timestamp", None)
    at_time = at(400)
    assert decode_logs(gen.to_json(body_of(record)), JSON).requests[0][0].timestamp == at_time
    record = {k: v for k, v in record.items() if k != "timeUnixNano"}
    at_observed = at(500)
    assert decode_logs(gen.to_json(body_of(record)), JSON).requests[0][0].timestamp == at_observed
    for unusable in ("yesterday", "0001-01-01T00:00:00+01:00"):  # the second is out of range in UTC
        record = set_attr(record, "event.timestamp", {"stringValue": unusable})
        assert decode_logs(gen.to_json(body_of(record)), JSON).requests[0][0].timestamp == at_observed


@pytest.mark.parametrize(("encode", "content_type"), ENCODINGS)
def test_the_event_name_comes_from_the_attribute_else_from_the_body(encode: Encode, content_type: str) -> None:
    from_body = set_attr(one_request(), "event.name", None)
    from_attribute = {k: v for k, v in one_request().items() if k != "body"}
    prefixed = set_attr(from_attribute, "event.name", {"stringValue": "claude_code.api_request"})
    other = set_attr(one_request(), "event.name", {"stringValue": "api_error"})  # the attribute wins
    logs = decode_logs(encode(body_of(from_body, from_attribute, prefixed, other)), content_type)
    assert [e for e, _, _ in logs.requests] == [event(), event(), event()]
    assert (logs.other, logs.rejected) == (1, 0)


@pytest.mark.parametrize(
    ("tool", "label"),
    [
        ("Read", "Read"),
        ("mcp__github__create_pull_request", "mcp__github"),
        ("mcp__claude_ai_Gmail__search", "mcp__claude_ai_Gmail"),  # single underscores belong to the server name
        ("mcp__solo", "mcp__solo"),
        ("mcp__", "mcp__"),
    ],
)
def test_mcp_tools_collapse_to_their_server(tool: str, label: str) -> None:
    assert tool_label(tool) == label


@pytest.mark.parametrize(("encode", "content_type"), ENCODINGS)
def test_tool_results_give_the_tool_its_success_and_agent(encode: Encode, content_type: str) -> None:
    records = [
        gen.tool_result(gen.T0_MS, "mcp__github__create_pull_request"),
        gen.tool_result(gen.T0_MS, "Bash", success="false"),
        set_attr(gen.tool_result(gen.T0_MS, "Edit"), "success", {"boolValue": True}),
        set_attr(gen.tool_result(gen.T0_MS, "Glob"), "success", None),
        set_attr(gen.tool_result(gen.T0_MS, "Grep"), "query_source", {"stringValue": "agent:builtin:Explore"}),
    ]
    logs = decode_logs(encode(body_of(*records, resource={**gen.RESOURCE, "project": "acme-api"})), content_type)
    moment = at(145)
    assert logs.tools == [
        ToolResult("mcp__github", True, gen.SESSION, "main", moment, "acme-api"),
        ToolResult("Bash", False, gen.SESSION, "main", moment, "acme-api"),
        ToolResult("Edit", True, gen.SESSION, "main", moment, "acme-api"),
        ToolResult("Glob", None, gen.SESSION, "main", moment, "acme-api"),
        ToolResult("Grep", True, gen.SESSION, "subagent", moment, "acme-api"),
    ]


@pytest.mark.parametrize(
    ("record_project", "resource_project", "project"),
    [
        (None, None, "unknown"),
        (None, "acme-api", "acme-api"),  # OTEL_RESOURCE_ATTRIBUTES=project=acme-api
        ("web", "acme-api", "web"),
        ("/home/dev/acme-api/", None, "acme-api"),  # never a path: its last component
        ("C:\\Users\\dev\\acme-api", None, "acme-api"),
        ("/", None, "unknown"),
    ],
)
def test_the_project_is_a_project_attribute_never_a_path(
    record_project: str | None, resource_project: str | None, project: str
) -> None:
    record = one_request()
    if record_project is not None:
        record = set_attr(record, "project", {"stringValue": record_project})
    resource = {**gen.RESOURCE, "project": resource_project} if resource_project else None
    assert decode_logs(gen.to_json(body_of(record, resource=resource)), JSON).requests[0][0].project == project


def test_the_cost_is_cost_usd_to_the_nano_dollar_and_the_rounded_micros_only_a_fallback() -> None:
    # 0.021658499999999997 is what the real CLI sent for a request that costs 0.0216585 at list price.
    noisy = one_request(cost_usd=0.021658499999999997)
    assert decode_logs(gen.to_json(body_of(noisy)), JSON).requests[0][0].reported_cost == Decimal("0.0216585")
    micros_only = set_attr(one_request(cost_usd=0.0158754), "cost_usd", None)
    assert decode_logs(gen.to_json(body_of(micros_only)), JSON).requests[0][0].reported_cost == Decimal("0.015875")
    neither = set_attr(micros_only, "cost_usd_micros", None)
    assert decode_logs(gen.to_json(body_of(neither)), JSON).requests[0][0].reported_cost is None


@pytest.mark.parametrize(("sent", "speed"), [("normal", "standard"), ("fast", "fast"), (None, "standard")])
def test_the_event_speed_normal_is_the_standard_speed(sent: str | None, speed: str) -> None:
    record = set_attr(one_request(), "speed", None if sent is None else {"stringValue": sent})
    assert decode_logs(gen.to_json(body_of(record)), JSON).requests[0][0].speed == speed


@pytest.mark.parametrize(("encode", "content_type"), ENCODINGS)
def test_a_request_without_id_is_keyed_by_a_hash_equal_in_both_encodings(encode: Encode, content_type: str) -> None:
    first = set_attr(one_request(), "request_id", None)
    second = set_attr(gen.api_request(gen.T0_MS + 900, RID, sequence=4), "request_id", None)
    logs = decode_logs(encode(body_of(first, second, first)), content_type)
    keys = [e.key for e, _, _ in logs.requests]
    assert keys[0] == keys[2] != keys[1]
    assert keys[0].startswith("otlp:") and len(keys[0]) == len("otlp:") + 32
    assert keys == [e.key for e, _, _ in decode_logs(gen.to_json(body_of(first, second, first)), JSON).requests]
    assert logs.requests[0][0] == event(key=keys[0], request_id=None)


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", " application/json ;x=y"]
)
def test_content_type_parameters_and_case_are_ignored(content_type: str) -> None:
    assert media_type(content_type) == JSON
    assert decode_logs(b"{}", content_type) == Logs([], [], 0, 0, "")


@pytest.mark.parametrize("content_type", ["text/plain", "application/grpc", "", "application/jsonl"])
def test_other_content_types_are_unsupported_with_status_415(content_type: str) -> None:
    with pytest.raises(OtlpError) as raised:
        decode_logs(b"{}", content_type)
    assert raised.value.status == 415
    assert str(raised.value) == (
        f"unsupported content type {content_type!r}: send application/json or application/x-protobuf"
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'{"resourceLogs": [', "invalid JSON: unexpected end of data: line 1 column 19 (char 18)"),
        (b"[]", "the body should be a JSON object"),
        (b'{"resourceLogs": 5}', "resourceLogs should be an array of objects"),
        (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [5]}]}]}', "logRecords should be an array of objects"),
        (b'{"resourceLogs": [{"resource": 1}]}', "resource should be an object"),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": {"a": 1}}]}]}]}',
            "attributes should be an array",
        ),
        (
            b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"attributes": [{"key": 1, "value": {}}]}]}]}]}',
            "an attribute should be an object with a string key and a value",
        ),
    ],
)
def test_a_malformed_json_body_is_an_error_with_status_400(body: bytes, error: str) -> None:
    with pytest.raises(OtlpError) as raised:
        decode_logs(body, JSON)
    assert (raised.value.status, str(raised.value)) == (400, error)


def test_a_malformed_protobuf_body_is_an_error_with_status_400() -> None:
    for decode in (decode_logs, decode_metrics):
        with pytest.raises(OtlpError) as raised:
            decode(b"\x0a\xff\xff\xff\xff\x0f", PROTOBUF)  # a length far past the end
        assert raised.value.status == 400
        assert str(raised.value).startswith("invalid protobuf: ")


def test_null_and_empty_members_are_empty_as_in_proto3_json() -> None:
    body = b'{"resourceLogs": [{"resource": null, "scopeLogs": [{"logRecords": null}]}, {}]}'
    assert decode_logs(body, JSON) == Logs([], [], 0, 0, "")
    assert decode_logs(b"", PROTOBUF) == Logs([], [], 0, 0, "")
    assert decode_metrics(b'{"resourceMetrics": []}', JSON) == []


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8),  # orjson's ints
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
BODIES = [
    (gen.conversation_logs, decode_logs),
    (lambda: gen.session_metrics(START, TIME), decode_metrics),
    (lambda: gen.session_metrics(START, TIME, temporality=gen.CUMULATIVE), decode_metrics),
]


def places(node: object, found: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key) of a JSON document, for putting something else there."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        found.append((node, key))
        places(child, found)
    return found


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_value_anywhere_in_a_json_body_decodes_or_is_an_otlp_error(data: st.DataObject) -> None:
    make, decode = data.draw(st.sampled_from(BODIES))
    doc = make()
    spots = places(doc, [])
    for _ in range(data.draw(st.integers(1, 3))):
        parent, key = data.draw(st.sampled_from(spots))
        parent[key] = data.draw(JSON_VALUES)
    try:
        decoded = decode(orjson.dumps(doc), JSON)
    except OtlpError as e:
        assert e.status == 400
        return
    if decode is decode_metrics:
        Engineering().add(decoded)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_damage_to_a_protobuf_body_decodes_or_is_an_otlp_error(data: st.DataObject) -> None:
    make, decode = data.draw(st.sampled_from(BODIES))
    body = bytearray(gen.to_protobuf(make()))
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    try:
        decode(bytes(body), PROTOBUF)
    except OtlpError as e:
        assert e.status == 400


# --- metrics ---------------------------------------------------------------------------------------

COMMON = (("session.id", gen.SESSION), ("terminal.type", "dumb"))
USER = (("user.id", gen.USER_ID),)


@pytest.mark.parametrize(("encode", "content_type"), ENCODINGS)
def test_metric_points_are_decoded_with_sorted_attributes(encode: Encode, content_type: str) -> None:
    points = decode_metrics(encode(gen.session_metrics(START, TIME, commits=2)), content_type)
    assert [p.name.removeprefix("claude_code.") for p in points] == [
        "session.count",
        *["lines_of_code.count"] * 2,
        "cost.usage",
        *["token.usage"] * 4,
        "code_edit_tool.decision",
        "commit.count",
        "active_time.total",
    ]
    assert points[1] == Point(
        "claude_code.lines_of_code.count",
        (("model", gen.SONNET), *COMMON, ("type", "added"), *USER),
        1.0,
        START,
        TIME,
        False,
        True,
    )
    assert points[-2:] == [
        Point("claude_code.commit.count", (*COMMON, *USER), 2.0, START, TIME, False, True),
        Point("claude_code.active_time.total", (*COMMON, ("type", "cli"), *USER), 0.75, START, TIME, False, True),
    ]


@pytest.mark.parametrize(("encode", "content_type"), ENCODINGS)
def test_cumulative_sums_and_gauges_are_flagged_and_histograms_ignored(encode: Encode, content_type: str) -> None:
    point = gen.data_point({"flag": True, "ratio": 1.0, "n": 3}, 5, START, TIME)
    as_int = {k: v for k, v in point.items() if k != "asDouble"} | {"asInt": "7"}
    gauge = {"name": "g", "description": "", "unit": "", "gauge": {"dataPoints": [as_int]}}
    histogram = {"name": "h", "description": "", "unit": "", "histogram": {"dataPoints": []}}
    body = gen.metrics_body([gen.sum_metric("c", [point], gen.CUMULATIVE), gauge, histogram])
    labels = (("flag", "true"), ("n", "3"), ("ratio", "1"), *COMMON, *USER)
    assert decode_metrics(encode(body), content_type) == [
        Point("c", labels, 5.0, START, TIME, True, True),
        Point("g", labels, 7.0, START, TIME, False, False),
    ]


def engineering_point(
    name: str,
    value: float,
    *,
    start: int = START,
    time: int = TIME,
    cumulative: bool = True,
    kind: str | None = None,
    session: str = gen.SESSION,
) -> Point:
    labels = (("session.id", session),) + ((("type", kind),) if kind else ())
    return Point(name, labels, value, start, time, cumulative, True)


LINES, COMMITS, ACTIVE = "claude_code.lines_of_code.count", "claude_code.commit.count", "claude_code.active_time.total"


def test_delta_points_add_up() -> None:
    engineering = Engineering()
    for export in range(3):
        engineering.add(
            [
                engineering_point(LINES, 10, kind="added", cumulative=False, time=TIME + export),
                engineering_point(LINES, 2, kind="removed", cumulative=False, time=TIME + export),
                engineering_point(COMMITS, 1, cumulative=False, time=TIME + export),
            ]
        )
    assert engineering.totals == {
        ("lines_of_code", "added"): 30.0,
        ("lines_of_code", "removed"): 6.0,
        ("commits", ""): 3.0,
    }


def test_cumulative_points_add_their_increase_and_a_lower_value_or_new_start_is_a_reset() -> None:
    engineering = Engineering()
    for value, start, time in [
        (5, START, TIME),  # first sight: everything since the start
        (5, START, TIME + 1),  # an idle export repeats the running value
        (8, START, TIME + 2),
        (8, START, TIME + 2),  # a resent body: the same point again
        (3, START, TIME + 3),  # lower: the sender restarted its count without a new start time
        (4, START + 10, TIME + 4),  # a new start time: a new series
    ]:
        engineering.add([engineering_point(ACTIVE, value, start=start, time=time, kind="cli")])
    assert engineering.totals == {("active_time_seconds", "cli"): 5 + 3 + 3 + 4}


def test_series_are_capped_and_a_forgotten_series_counts_in_full_again() -> None:
    engineering = Engineering(max_series=2)
    sessions = ["a", "b", "c"]
    engineering.add([engineering_point(COMMITS, 1, session=s) for s in sessions])  # "a" is forgotten for "c"
    engineering.add([engineering_point(COMMITS, 1, session="b", time=TIME + 1)])  # still known: adds nothing
    engineering.add([engineering_point(COMMITS, 1, session="a", time=TIME + 1)])  # forgotten: its 1 counted again
    assert engineering.totals == {("commits", ""): 4.0}


def test_other_metrics_gauges_and_garbage_values_are_ignored_and_unknown_kinds_are_other() -> None:
    engineering = Engineering(totals={("commits", ""): 7.0})
    engineering.add(
        [
            engineering_point("claude_code.token.usage", 1000, cumulative=False),  # the events are the usage
            engineering_point("claude_code.cost.usage", 1.5, cumulative=False),
            engineering_point(COMMITS, 2, cumulative=False)._replace(monotonic=False),  # a gauge
            engineering_point(COMMITS, -1, cumulative=False),
            engineering_point(COMMITS, float("nan"), cumulative=False),
            engineering_point(LINES, 4, kind="renamed", cumulative=False),
            engineering_point(LINES, 1, cumulative=False),
            engineering_point(ACTIVE, 2.5, kind="user", cumulative=False),
        ]
    )
    assert engineering.totals == {
        ("commits", ""): 7.0,
        ("lines_of_code", "other"): 4.0,
        ("lines_of_code", ""): 1.0,
        ("active_time_seconds", "user"): 2.5,
    }


def test_claude_codes_own_cumulative_exports_total_like_its_delta_exports() -> None:
    # r7's shape: every export repeats each series with its running value.
    cumulative, delta = Engineering(), Engineering()
    running = [(1, 0, 0.5), (3, 1, 2.0), (3, 1, 2.0), (6, 2, 4.25)]
    previous = (0, 0, 0.0)
    for i, (added, removed, active) in enumerate(running):
        now = TIME + i * 10**9
        body = gen.session_metrics(START, now, temporality=gen.CUMULATIVE, lines=(added, removed), active_s=active)
        cumulative.add(decode_metrics(gen.to_json(body), JSON))
        changes = (added - previous[0], removed - previous[1], active - previous[2])
        body = gen.session_metrics(now - 10**9, now, lines=changes[:2], active_s=changes[2])
        delta.add(decode_metrics(gen.to_protobuf(body), PROTOBUF))
        previous = (added, removed, active)
    expected = {
        ("lines_of_code", "added"): 6.0,
        ("lines_of_code", "removed"): 2.0,
        ("active_time_seconds", "cli"): 4.25,
    }
    assert cumulative.totals == delta.totals == expected


# --- responses -------------------------------------------------------------------------------------


def test_a_full_success_response_is_empty_in_both_encodings() -> None:
    assert response("logs", JSON, 0, "") == b"{}"
    assert response("metrics", "application/json; charset=utf-8", 0, "") == b"{}"
    assert response("logs", PROTOBUF, 0, "") == b""
    assert response("metrics", PROTOBUF, 0, "") == b""


def test_a_partial_success_response_names_the_rejected_count_and_message() -> None:
    body = response("logs", JSON, 2, "2 log record(s) rejected")
    assert orjson.loads(body) == {
        "partialSuccess": {"rejectedLogRecords": "2", "errorMessage": "2 log record(s) rejected"}
    }
    parsed = json_format.Parse(body, ExportLogsServiceResponse())  # valid OTLP/JSON
    assert (parsed.partial_success.rejected_log_records, parsed.partial_success.error_message) == (
        2,
        "2 log record(s) rejected",
    )
    body = response("metrics", JSON, 3, "bad")
    assert orjson.loads(body) == {"partialSuccess": {"rejectedDataPoints": "3", "errorMessage": "bad"}}
    logs = ExportLogsServiceResponse.FromString(response("logs", PROTOBUF, 2, "why"))
    assert (logs.partial_success.rejected_log_records, logs.partial_success.error_message) == (2, "why")
    metrics = ExportMetricsServiceResponse.FromString(response("metrics", PROTOBUF, 3, "why"))
    assert (metrics.partial_success.rejected_data_points, metrics.partial_success.error_message) == (3, "why")


def test_an_error_body_is_a_status_message_in_the_request_encoding() -> None:
    message = "invalid JSON: ünexpected"
    body, content_type = status_body(PROTOBUF, message)
    assert (Status.FromString(body).message, content_type) == (message, PROTOBUF)
    long = "x" * 300  # a two-byte length
    assert Status.FromString(status_body(PROTOBUF, long)[0]).message == long
    body, content_type = status_body("application/json; charset=utf-8", message)
    assert (json_format.Parse(body, Status()).message, content_type) == (message, JSON)
    assert status_body("text/plain", "no") == (b"no\n", "text/plain; charset=utf-8")
