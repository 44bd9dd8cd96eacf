"""Fuzzing the parsers that take bytes from outside (issue 13, items 2 and 7): the OTLP decoders (JSON
and protobuf, logs and metrics) and the transcript line parser. Whatever comes in, they raise nothing
but OtlpError (the transcript parser nothing at all), every string they hand on is within its bound, and
every time they hand on is within the tolerance ahead of the clock they are given.

Runs are bounded and derandomized, so CI sees the same examples every time. (Hypothesis also draws
constants from the modules loaded, so another selection of tests may see other examples: every example
a strategy can draw must hold, which is the point.)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.events import FUTURE_TOLERANCE, MAX_CHARS, SHORTENED_CHARS, Prompt, UsageEvent
from exporter.sources.otlp import JSON, PROTOBUF, Logs, OtlpError, Point, ToolResult, decode_logs, decode_metrics
from exporter.sources.transcripts import parse_chunk
from tests.support import otlpgen

pytestmark = pytest.mark.slow  # hundreds of generated inputs a test: a few seconds each

NOW = datetime(2026, 11, 26, tzinfo=UTC)
LATEST = NOW + FUTURE_TOLERANCE
LATEST_NS = int(LATEST.timestamp()) * 1_000_000_000
FUZZ = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)

# --- values a hostile or broken sender may put anywhere -------------------------------------------

long_text = st.builds(lambda part, n: part * n, st.text(min_size=1, max_size=3), st.integers(30, 200))
texts = st.one_of(
    st.text(max_size=12),
    long_text,
    st.sampled_from(["claude-sonnet-4-5", "sdk", "agent:builtin:x", "mcp__a__b", "normal", "fast", "/home/dev/x"]),
)
int64 = st.integers(-(2**63), 2**63 - 1)
scalars = st.one_of(texts, int64, st.floats(), st.booleans())
moments = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=1)), timezone(timedelta(hours=-14))]),
)
near = st.builds(lambda s: NOW + timedelta(seconds=s), st.integers(-86_400 * 3, 86_400 * 3))
iso_times = st.one_of(moments.map(datetime.isoformat), near.map(datetime.isoformat), texts)
nanos = st.one_of(st.integers(0, 2**64 - 1), near.map(lambda m: int(m.timestamp()) * 1_000_000_000))

ATTRIBUTE_KEYS = [
    "model",
    "request_id",
    "session.id",
    "query_source",
    "speed",
    "project",
    "tool_name",
    "success",
    "user.id",
    "user.email",
    "user.account_uuid",
    "organization.id",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_creation_tokens",
    "cost_usd",
    "cost_usd_micros",
    "type",
    "event.timestamp",
    "event.name",
]
EVENTS = ["api_request", "claude_code.api_request", "tool_result", "claude_code.tool_result", "user_prompt", ""]


def attribute_value(key: str) -> st.SearchStrategy[object]:
    return iso_times if key == "event.timestamp" else st.sampled_from(EVENTS) if key == "event.name" else scalars


attribute_maps = st.dictionaries(st.one_of(st.sampled_from(ATTRIBUTE_KEYS), texts), st.none(), max_size=12).flatmap(
    lambda keys: st.fixed_dictionaries({k: attribute_value(k) for k in keys})
)
log_records = st.builds(
    lambda attrs, name, time, observed: {
        "timeUnixNano": str(time),
        "observedTimeUnixNano": str(observed),
        "body": {"stringValue": name},
        "attributes": otlpgen.attributes(attrs),
    },
    attribute_maps,
    st.sampled_from(EVENTS),
    nanos,
    nanos,
)
log_bodies = st.builds(
    lambda records, resource: otlpgen.logs_body(records, resource),
    st.lists(log_records, max_size=6),
    attribute_maps,
)
data_points = st.builds(
    lambda attrs, amount, start, time: {
        "attributes": otlpgen.attributes(attrs),
        "startTimeUnixNano": str(start),
        "timeUnixNano": str(time),
        "asDouble": amount,
    },
    attribute_maps,
    st.floats(),
    nanos,
    nanos,
)
metric_names = st.one_of(st.sampled_from(list(otlpgen.METRICS)), texts)
metric_bodies = st.builds(
    lambda metrics, resource: otlpgen.metrics_body(metrics, resource),
    st.lists(
        st.builds(otlpgen.sum_metric, metric_names, st.lists(data_points, max_size=4), st.sampled_from([1, 2])),
        max_size=4,
    ),
    attribute_maps,
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), int64, st.floats(allow_nan=False), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=20,
)


# --- what the output may hold --------------------------------------------------------------------


def walk(value: object) -> Iterator[object]:
    yield value
    if isinstance(value, tuple | list | frozenset | set):
        for item in value:
            yield from walk(item)


def assert_bounded(output: object) -> None:
    for item in walk(output):
        if isinstance(item, str):
            assert len(item) <= SHORTENED_CHARS, len(item)
        if isinstance(item, datetime):
            assert item <= LATEST, item
    for item in walk(output):
        if isinstance(item, UsageEvent):
            ids = (item.key, item.request_id or "", item.session_id, item.model)
            assert max(map(len, ids)) <= MAX_CHARS, ids
        if isinstance(item, ToolResult):
            assert len(item.session_id) <= MAX_CHARS
        if isinstance(item, Point):
            assert item.time_ns <= LATEST_NS and item.start_ns <= LATEST_NS, item
        if isinstance(item, Prompt):
            assert max(len(item.key), len(item.session_id)) <= MAX_CHARS
            assert item.ts <= LATEST.timestamp() * 1000


def decoded(decode: Any, body: bytes, content_type: str) -> object:
    """The decoder's output, or None for the one error it may raise."""
    try:
        return decode(body, content_type, now=NOW)
    except OtlpError:
        return None


# --- OTLP ----------------------------------------------------------------------------------------


@FUZZ
@given(log_bodies)
def test_decoding_any_log_records_in_json_and_protobuf_hands_on_only_bounded_values(body: dict[str, Any]) -> None:
    logs = decoded(decode_logs, otlpgen.to_json(body), JSON)
    assert isinstance(logs, Logs)  # the structure is valid: only records can be rejected
    assert_bounded(logs)
    assert len(logs.requests) + len(logs.tools) + logs.other + logs.rejected == len(
        body["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    )
    assert_bounded(decoded(decode_logs, otlpgen.to_protobuf(body), PROTOBUF))


@FUZZ
@given(metric_bodies)
def test_decoding_any_metric_points_in_json_and_protobuf_hands_on_only_bounded_values(body: dict[str, Any]) -> None:
    points = decoded(decode_metrics, otlpgen.to_json(body), JSON)
    assert isinstance(points, list)
    assert_bounded(points)
    assert_bounded(decoded(decode_metrics, otlpgen.to_protobuf(body), PROTOBUF))


@FUZZ
@given(st.binary(max_size=2048), st.sampled_from([decode_logs, decode_metrics]))
def test_decoding_arbitrary_bytes_as_protobuf_raises_nothing_but_an_otlp_error(body: bytes, decode: Any) -> None:
    assert_bounded(decoded(decode, body, PROTOBUF))


@FUZZ
@given(json_values, st.sampled_from([decode_logs, decode_metrics]))
def test_decoding_arbitrary_json_raises_nothing_but_an_otlp_error(doc: object, decode: Any) -> None:
    assert_bounded(decoded(decode, orjson.dumps(doc), JSON))


@FUZZ
@given(log_bodies, st.integers(0, 4096), st.binary(min_size=1, max_size=8))
def test_decoding_corrupted_protobuf_raises_nothing_but_an_otlp_error(
    body: dict[str, Any], at: int, junk: bytes
) -> None:
    encoded = otlpgen.to_protobuf(body)
    at %= len(encoded) + 1
    assert_bounded(decoded(decode_logs, encoded[:at] + junk + encoded[at + len(junk) :], PROTOBUF))


# --- transcripts ---------------------------------------------------------------------------------

counts_ = st.one_of(st.integers(-5, 2**63 - 1), st.floats(), texts, st.none())  # orjson writes 64-bit integers only
usages = st.dictionaries(
    st.sampled_from(
        ["input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "speed"]
    ),
    counts_,
    max_size=5,
)
tool_blocks = st.lists(st.builds(lambda name: {"type": "tool_use", "id": "toolu_1", "name": name}, texts), max_size=4)
messages = st.fixed_dictionaries(
    {"usage": usages},
    optional={"id": texts, "model": texts, "content": tool_blocks, "role": st.just("assistant")},
)
assistant_records = st.fixed_dictionaries(
    {"type": st.just("assistant"), "message": messages},
    optional={
        "requestId": texts,
        "sessionId": texts,
        "timestamp": iso_times,
        "cwd": texts,
        "uuid": texts,
        "isSidechain": st.booleans(),
        "agentId": texts,
        "costUSD": counts_,
        "isCompactSummary": st.booleans(),
    },
)
user_records = st.builds(
    lambda text, uuid, session, ts, cwd: {
        "type": "user",
        "message": {"role": "user", "content": text},
        "uuid": uuid,
        "timestamp": ts,
        "sessionId": session,
        "cwd": cwd,
    },
    texts,
    texts,
    texts,
    iso_times,
    texts,
)
lines = st.one_of(
    assistant_records.map(orjson.dumps),
    user_records.map(orjson.dumps),
    st.binary(max_size=200),
    assistant_records.map(lambda r: orjson.dumps(r) + orjson.dumps(r)),  # two writes glued together
)


@FUZZ
@given(st.lists(lines, max_size=8))
def test_parsing_any_transcript_lines_raises_nothing_and_hands_on_only_bounded_values(chunk: list[bytes]) -> None:
    counts: Counter[str] = Counter()
    prompts: list[Prompt] = []
    events = parse_chunk(b"\n".join(line.replace(b"\n", b" ") for line in chunk) + b"\n", counts, prompts, now=NOW)
    assert_bounded(events)
    assert_bounded(prompts)
    assert all(e.tokens == e.tokens._replace() and min(e.tokens) >= 0 for e in events)
