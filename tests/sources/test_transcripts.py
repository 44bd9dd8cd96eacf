"""Parsing of Claude Code transcript lines: one case per real-world quirk."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from exporter.events import Tokens, UsageEvent
from exporter.sources import transcripts
from exporter.sources.transcripts import candidates, parse_chunk, parse_line, split_merged
from tests.support.corpus import generate
from tests.support.lines import USAGE, line


def test_an_assistant_line_becomes_one_usage_event() -> None:
    event = parse_line(line())
    assert event == UsageEvent(
        key="msg_011CeDq",
        request_id="req_011CeDq",
        timestamp=datetime(2026, 8, 20, 10, 21, 56, 612000, tzinfo=UTC),
        session_id="9c42ba52",
        project="acme-api",
        model="claude-haiku-4-5-20251001",
        agent="main",
        tokens=Tokens(input=10, output=135, cache_read=22820, cache_write_5m=0, cache_write_1h=9907),
        web_search_requests=0,
        tools=frozenset({"Bash"}),
        speed="standard",
        source="transcripts",
    )


def _tokens(raw: bytes) -> Tokens:
    event = parse_line(raw)
    assert isinstance(event, UsageEvent)
    return event.tokens


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        # Before the split object existed, every cache write was a 5-minute write.
        (
            {"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 50},
            Tokens(3, 4, 0, 50, 0),
        ),
        # A split that does not add up leaves the remainder at the 5-minute rate.
        (
            {"cache_creation_input_tokens": 50, "cache_creation": {"ephemeral_1h_input_tokens": 20}},
            Tokens(0, 0, 0, 30, 20),
        ),
        # Missing fields are zero; integral floats are accepted.
        ({"output_tokens": 7.0}, Tokens(0, 7, 0, 0, 0)),
    ],
)
def test_token_fields_are_read_leniently(usage: dict[str, object], expected: Tokens) -> None:
    assert _tokens(line(m_usage=usage)) == expected


@pytest.mark.parametrize(
    ("raw", "outcome"),
    [
        # Only assistant lines carry usage; tool results repeat a subagent's usage (trap 5).
        (orjson.dumps({"type": "user", "toolUseResult": {"usage": USAGE}, "message": {"role": "user"}}), "skipped"),
        (orjson.dumps({"type": "summary", "summary": "usage notes"}), "skipped"),
        # Locally generated API-error lines (trap 6 of FORMATS §1 says model <synthetic>).
        (line(m_model="<synthetic>", m_usage={"input_tokens": 0, "output_tokens": 0}), "skipped"),
        (line(m_usage=None), "skipped"),
        # Wrong types, negative and absurd numbers: corruption, not usage.
        (line(m_usage="lots"), "malformed"),
        (line(m_usage={**USAGE, "output_tokens": "135"}), "malformed"),
        (line(m_usage={**USAGE, "output_tokens": -1}), "malformed"),
        (line(m_usage={**USAGE, "output_tokens": 1.5}), "malformed"),
        (line(m_usage={**USAGE, "output_tokens": True}), "malformed"),
        (line(m_usage={**USAGE, "input_tokens": 10**12}), "malformed"),
        (line(m_model=None), "malformed"),
        (line(m_model=42), "malformed"),
        (line(timestamp=None), "malformed"),
        (line(timestamp="yesterday"), "malformed"),
        # A line cut off mid-write, and a NaN (not JSON at all).
        (line()[:80], "malformed"),
        (line().replace(b'"output_tokens":135', b'"output_tokens":NaN'), "malformed"),
        (b"\xff\xfe\x00garbage usage", "skipped"),
        (b"[1, 2, 3]", "skipped"),
    ],
)
def test_lines_that_are_not_usable_usage_get_an_outcome(raw: bytes, outcome: str) -> None:
    assert parse_line(raw) == outcome


def test_a_subagent_line_is_attributed_to_the_subagent() -> None:
    event = parse_line(line(isSidechain=True, agentId="a46e908f"))
    assert isinstance(event, UsageEvent)
    assert event.agent == "subagent"


def test_without_message_id_the_request_id_is_the_key() -> None:
    event = parse_line(line(m_id=None))
    assert isinstance(event, UsageEvent)
    assert event.key == "req_011CeDq"


def test_without_any_id_only_an_identical_line_shares_the_key() -> None:
    # Claude Code before 1.0.9: no requestId, a top-level costUSD.
    old = line(m_id=None, requestId=None, costUSD=0.0123)
    first, again = parse_line(old), parse_line(old)
    other = parse_line(line(m_id=None, requestId=None, costUSD=0.0123, timestamp="2026-08-20T10:22:00Z"))
    assert isinstance(first, UsageEvent) and isinstance(again, UsageEvent) and isinstance(other, UsageEvent)
    assert first.key == again.key != other.key
    assert first.reported_cost == Decimal("0.0123")


def test_web_searches_and_speed_are_read() -> None:
    usage = {**USAGE, "server_tool_use": {"web_search_requests": 3}, "speed": "fast"}
    event = parse_line(line(m_usage=usage))
    assert isinstance(event, UsageEvent)
    assert (event.web_search_requests, event.speed) == (3, "fast")


def test_a_missing_working_directory_gives_an_unknown_project() -> None:
    event = parse_line(line(cwd=None))
    assert isinstance(event, UsageEvent)
    assert event.project == "unknown"


def test_two_records_glued_on_one_line_are_both_read() -> None:
    glued = line() + line(m_id="msg_2", requestId="req_2")
    assert [orjson.loads(part)["requestId"] for part in split_merged(glued)] == ["req_011CeDq", "req_2"]
    counts: Counter[str] = Counter()
    assert [e.key for e in parse_chunk(glued + b"\n", counts)] == ["msg_011CeDq", "msg_2"]


def test_nul_padding_before_a_line_is_ignored() -> None:
    counts: Counter[str] = Counter()
    events = parse_chunk(b"\x00" * 64 + line() + b"\n", counts)
    assert [e.key for e in events] == ["msg_011CeDq"]
    assert counts == Counter()


def test_every_line_of_a_chunk_gets_counted() -> None:
    chunk = (
        b"\n".join(
            [
                orjson.dumps({"type": "file-history-snapshot", "snapshot": {"x": "y" * 1000}}),
                line(),
                line(m_content=[{"type": "text", "text": "hi"}]),  # the same response's next block
                line()[:-20],  # cut off mid-write
                b"",
                line(m_model="<synthetic>"),
            ]
        )
        + b"\n"
    )
    counts: Counter[str] = Counter()
    events = parse_chunk(chunk, counts)
    # The text block repeats the tool_use block's usage: one event standing for both lines.
    assert [(e.key, e.lines, e.tools) for e in events] == [("msg_011CeDq", 2, frozenset({"Bash"}))]
    assert counts == Counter({"skipped": 3, "malformed": 1})


def test_a_later_block_with_different_usage_is_its_own_event_for_the_merge() -> None:
    provisional = line(m_usage={**USAGE, "output_tokens": 1})
    events = parse_chunk(provisional + b"\n" + line() + b"\n", Counter())
    assert [(e.key, e.tokens.output, e.lines) for e in events] == [("msg_011CeDq", 1, 1), ("msg_011CeDq", 135, 1)]


def test_an_assistant_line_whose_tool_input_looks_like_a_user_record_still_counts() -> None:
    # The head pre-filter drops user lines unread; an assistant line shows "assistant" in its head.
    blocks = [{"type": "tool_use", "id": "t", "name": "mcp__x__y", "input": {"type": "user"}}]
    counts: Counter[str] = Counter()
    assert [e.tools for e in parse_chunk(line(m_content=blocks) + b"\n", counts)] == [frozenset({"mcp__x__y"})]
    user = orjson.dumps({"type": "user", "message": {"role": "user", "content": "usage"}, "toolUseResult": USAGE})
    assert parse_chunk(user + b"\n", counts) == []
    assert counts == Counter({"skipped": 1})


# A progress line as Claude Code 2.1.x writes it while a subagent runs: the subagent's assistant record
# (one content block, usage included) nested in `data.message`; session and cwd only on the outer line.
PROGRESS = (
    b'{"parentUuid":"5d1c","isSidechain":false,"userType":"external","cwd":"/home/dev/notes-app",'
    b'"sessionId":"52cfe79f","version":"2.1.19","gitBranch":"main","type":"progress",'
    b'"data":{"message":{"type":"assistant","timestamp":"2026-02-09T03:18:49.880Z",'
    b'"message":{"model":"claude-haiku-4-5-20251001","id":"msg_01Sub","type":"message","role":"assistant",'
    b'"content":[{"type":"tool_use","id":"toolu_01R","name":"Read","input":{"file_path":"notes.txt"}}],'
    b'"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":1200,'
    b'"cache_read_input_tokens":9000,"cache_creation":{"ephemeral_5m_input_tokens":1200,'
    b'"ephemeral_1h_input_tokens":0},"output_tokens":57,"service_tier":"standard"}},'
    b'"requestId":"req_01Sub","uuid":"ddf80b77"},"normalizedMessages":[],"type":"agent_progress",'
    b'"prompt":"Summarise notes.txt","agentId":"a46e908f"},"toolUseID":"agent_msg_01Task",'
    b'"parentToolUseID":"toolu_01Task","uuid":"c4a6829e","timestamp":"2026-02-09T03:18:50.118Z"}'
)


def test_a_subagent_request_nested_in_a_progress_line_is_a_subagent_event() -> None:
    event = parse_line(PROGRESS)
    assert event == UsageEvent(
        key="msg_01Sub",  # the message id: it merges with the subagent transcript's copy
        request_id="req_01Sub",
        timestamp=datetime(2026, 2, 9, 3, 18, 49, 880000, tzinfo=UTC),  # the nested record's own time
        session_id="52cfe79f",  # the progress line's session: the parent's, as on subagent lines
        project="notes-app",
        model="claude-haiku-4-5-20251001",
        agent="subagent",
        tokens=Tokens(input=3, output=57, cache_read=9000, cache_write_5m=1200, cache_write_1h=0),
        tools=frozenset({"Read"}),
    )


def test_a_progress_line_without_its_own_time_in_the_nested_record_takes_the_lines() -> None:
    event = parse_line(PROGRESS.replace(b'"timestamp":"2026-02-09T03:18:49.880Z",', b""))
    assert isinstance(event, UsageEvent)
    assert event.timestamp == datetime(2026, 2, 9, 3, 18, 50, 118000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "outcome"),
    [
        # Progress of other kinds, and agent progress whose nested record is not an assistant response.
        (PROGRESS.replace(b'"type":"agent_progress"', b'"type":"bash_progress"'), "skipped"),
        (PROGRESS.replace(b'"message":{"type":"assistant"', b'"message":{"type":"user"'), "skipped"),
        (PROGRESS.replace(b'"data":{"message":{', b'"data":{"m":{'), "skipped"),
        (b'{"type":"progress","data":"usage assistant"}', "skipped"),
        (b'{"type":"progress","data":{"type":"agent_progress","message":"assistant usage"}}', "skipped"),
        # A nested response with bad usage is as malformed as a top-level one.
        (PROGRESS.replace(b'"output_tokens":57', b'"output_tokens":-57'), "malformed"),
        (PROGRESS.replace(b'"timestamp":"2026-02-09T03:18:49.880Z"', b'"timestamp":"soon"'), "malformed"),
    ],
)
def test_progress_lines_without_a_usable_nested_response_get_an_outcome(raw: bytes, outcome: str) -> None:
    assert parse_line(raw) == outcome


def test_consecutive_progress_lines_of_one_response_are_one_event_with_every_tool() -> None:
    text = PROGRESS.replace(b'"name":"Read"', b'"name":"Grep"')
    counts: Counter[str] = Counter()
    events = parse_chunk(PROGRESS + b"\n" + text + b"\n", counts)
    assert [(e.key, e.agent, e.lines, e.tools) for e in events] == [
        ("msg_01Sub", "subagent", 2, frozenset({"Read", "Grep"}))
    ]
    assert counts == Counter()


# Lines with no "type", as other tools write them; ccusage counts any line whose message carries usage.
TYPELESS = (
    b'{"sessionId":"9c42ba52","timestamp":"2026-08-20T10:21:56.612Z","requestId":"req_01T","cwd":"/home/dev/acme-api",'
    b'"message":{"id":"msg_01T","role":"assistant","model":"claude-sonnet-4-5-20250929",'
    b'"usage":{"input_tokens":100,"output_tokens":50,"cache_read_input_tokens":2000}}}'
)
BARE = (
    b'{"timestamp":"2026-08-20T11:00:00Z","message":{"model":"claude-sonnet-4-5-20250929","usage":{"input_tokens":7}}}'
)


def test_a_line_without_a_type_whose_assistant_message_has_usage_and_a_model_is_a_usage_event() -> None:
    event = parse_line(TYPELESS)
    assert event == UsageEvent(
        key="msg_01T",
        request_id="req_01T",
        timestamp=datetime(2026, 8, 20, 10, 21, 56, 612000, tzinfo=UTC),
        session_id="9c42ba52",
        project="acme-api",
        model="claude-sonnet-4-5-20250929",
        agent="main",
        tokens=Tokens(input=100, output=50, cache_read=2000),
    )


@pytest.mark.parametrize(
    ("raw", "outcome"),
    [
        # No role and not a word of "assistant" (ccusage's own fixtures look like this): still usage.
        (BARE, "usage"),
        (TYPELESS.replace(b'"role":"assistant",', b""), "usage"),
        (TYPELESS.replace(b'{"sessionId"', b'{"type":null,"sessionId"'), "usage"),
        # Usage without a model cannot be priced or told apart: malformed, counted, never silent.
        (TYPELESS.replace(b'"model":"claude-sonnet-4-5-20250929",', b""), "malformed"),
        (BARE.replace(b'"model":"claude-sonnet-4-5-20250929",', b""), "malformed"),
        (TYPELESS.replace(b'"output_tokens":50', b'"output_tokens":"50"'), "malformed"),
        # Without usage, or with a type other than assistant, it is no request.
        (TYPELESS.replace(b'"usage"', b'"stats"'), "skipped"),
        (TYPELESS.replace(b'{"sessionId"', b'{"type":"system","sessionId"'), "skipped"),
        # Cut short by a crash it is broken usage; garbage that merely says "usage" is not.
        (TYPELESS[:-12], "malformed"),
        (b'\xff"usage"\x80{}{', "skipped"),
    ],
    ids=[
        "bare",
        "no role",
        "null type",
        "no model",
        "bare no model",
        "bad tokens",
        "no usage",
        "system",
        "cut short",
        "garbage",
    ],
)
def test_lines_without_a_type_are_read_like_assistant_lines(raw: bytes, outcome: str) -> None:
    counts: Counter[str] = Counter()
    events = parse_chunk(raw + b"\n", counts)
    assert (Counter({"usage": len(events)}) + counts) == Counter({outcome: 1})
    single = parse_line(raw)
    assert (single if isinstance(single, str) else "usage") == outcome


def test_a_line_with_usage_but_neither_a_type_nor_assistant_reaches_the_parser() -> None:
    snapshot = b'{"type":"file-history-snapshot","snapshot":{"notes.txt":"usage: run it"}}'
    found, lines = candidates(BARE + b"\n" + snapshot + b"\n")
    assert (found, lines) == ([BARE], 2)


# Lines the fast decoder (msgspec) must read exactly as orjson and `from_record` do, or leave to them.
ODD_LINES = [
    line(),
    b"\x00" * 8 + line(),  # NUL padding: msgspec refuses it, the full parser strips it
    line() + line(),  # two records glued on one line
    line(m_content="just text"),  # content as a string: no tools
    line(m_content=["text block", {"type": "tool_use", "name": "Read"}]),  # a block that is no object
    line(m_content=[{"type": "tool_use", "name": 7}, {"type": "tool_use", "name": "Bash"}]),
    line().replace(b'{"parentUuid"', b'{"costUSD":10000000000000000000000001,"parentUuid"'),  # orjson: a float
    line(costUSD=True),
    line().replace(b'{"parentUuid"', b'{"agentId":null,"parentUuid"'),  # present, even null: a subagent
    line(isSidechain="true"),
    line(m_id=None, requestId="req_only"),
    line(m_id=None, requestId=None),
    line(m_id="x" * 200),
    line(m_usage={**USAGE, "output_tokens": 1.0e0}),
    line(type=None),
    line(type="user"),
    line(type="progress"),
    line().replace(b"I'll read", b"\xff\xfe\xfd"),  # invalid UTF-8 in a field neither decoder keeps
    line().replace(b'"type":"assistant"', b'"type":"assistant","type":"assistant"'),  # a duplicate key
    line().replace(b'{"type"', b'{"message":null,"type"'),
]


def _usage(**changes: object) -> bytes:
    return line(m_usage={**USAGE, **changes})


def _null(name: bytes) -> bytes:
    """A line whose usage field `name` (a count) is null."""
    raw = line()
    at = raw.index(b'"' + name + b'":', raw.index(b'"usage"'))
    end = at + len(name) + 3
    while raw[end : end + 1].isdigit():
        end += 1
    return raw[: at + len(name) + 3] + b"null" + raw[end:]


# Usage the typed decoder refuses: read as a dict, exactly as before (valid, malformed or skipped).
ODD_USAGE = [
    *(_null(name) for name in (b"input_tokens", b"output_tokens", b"cache_read_input_tokens")),
    _null(b"ephemeral_1h_input_tokens"),
    _usage(output_tokens=5.0),
    _usage(output_tokens=5.5),
    _usage(output_tokens=-1),
    _usage(output_tokens=-0.0),
    _usage(input_tokens=100_000_001),
    _usage(input_tokens=100_000_000),
    _usage(input_tokens=123456789).replace(b"123456789", b"1" + b"0" * 30),  # past 64 bits
    _usage(input_tokens=True),
    _usage(input_tokens=False),
    _usage(input_tokens="7"),
    _usage(input_tokens=[7]),
    _usage(cache_read_input_tokens={"n": 7}),
    line(m_usage={}),
    line(m_usage={"output_tokens": 3}),
    line(m_usage={"cache_creation_input_tokens": 50, "cache_creation": {"ephemeral_1h_input_tokens": 20}}),
    _usage(cache_creation=[1, 2]),
    _usage(cache_creation="split"),
    _usage(cache_creation={"ephemeral_5m_input_tokens": 2.0, "ephemeral_1h_input_tokens": 9905}),
    _usage(cache_creation={"ephemeral_5m_input_tokens": -2, "ephemeral_1h_input_tokens": 9907}),
    _usage(cache_creation={"ephemeral_5m_input_tokens": 9000, "ephemeral_1h_input_tokens": 9000}),
    _usage(server_tool_use=[]),
    _usage(server_tool_use=3),
    _usage(server_tool_use={"web_search_requests": 2}),
    _usage(server_tool_use={"web_search_requests": 2.0}),
    _usage(server_tool_use={"web_search_requests": "2"}),
    _usage(server_tool_use={"web_search_requests": 10**9}),
    _usage(speed=7),
    _usage(speed=""),
    _usage(speed="fast"),
    _usage(speed="x" * 300),
    _usage(speed={"mode": "fast"}),
    line(m_usage=[1, 2]),
    line(m_usage="usage"),
    line(m_usage=7),
    line(m_content=[]).replace(b'"usage":{', b'"usage":null,"x":{'),
    line().replace(b'"usage":{', b'"usage":{"input_tokens":"x",'),  # a duplicate key: the last one counts
    line().replace(b'"usage":{', b'"usage":{"input_tokens":99,'),
    line().replace(b'"usage":{', b'"usage":{"input_tokens":null,"input_tokens":3,'),
    line().replace(b'"usage":{', b'"usage":{"output_tokens":1.5,"output_tokens":3,'),
    b'{"type":"assistant","message":null,"usage":{}}',  # no message: no mark to compare
    b'{"usage":{},"message":{"id":"msg_011CeDq"}}',
    line(m_model=7),
    line(m_model="m" * 200),
    line(m_model="<synthetic>"),
    line(timestamp="yesterday"),
    line(timestamp=None),
    line(sessionId="s" * 200),
    line(cwd=["/home"]),
    line(requestId="r" * 200),
]


def test_usage_the_typed_decoder_refuses_gives_the_events_and_counts_of_the_dict_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    # Alone, twice (the shortcut), and after a plain copy of the same response (usage compared as dicts).
    chunks = [odd + b"\n" for odd in ODD_USAGE] + [odd + b"\n" + odd + b"\n" for odd in ODD_USAGE]
    chunks += [line() + b"\n" + odd + b"\n" for odd in ODD_USAGE] + [odd + b"\n" + line() + b"\n" for odd in ODD_USAGE]

    def parse(chunk: bytes) -> tuple[list[UsageEvent], Counter[str], Counter[str]]:
        counts, slow = Counter[str](), Counter[str]()
        return parse_chunk(chunk, counts, now=now, slow=slow), counts, slow

    fast = [parse(chunk) for chunk in chunks]
    assert all(not slow for _, _, slow in fast)  # every one is read by the fast decoder, as before
    monkeypatch.setattr(transcripts, "_decode", lambda line, slow: None)  # orjson for every line
    assert [(events, counts) for events, counts, _ in fast] == [parse(chunk)[:2] for chunk in chunks]
    outcomes = Counter(outcome for _, counts, _ in fast[: len(ODD_USAGE)] for outcome in counts)
    assert outcomes.keys() == {"malformed", "skipped"}
    assert sum(1 for events, _, _ in fast[: len(ODD_USAGE)] if events) > 15


def _in_usage(member: bytes) -> bytes:
    return line().replace(b'"usage":{', b'"usage":{' + member + b",")


# Numbers msgspec cannot read as a dict: the fast decoder refused these lines when it read usage as one.
HUGE_NUMBERS = [
    _in_usage(b'"iterations":1e400'),
    _in_usage(b'"x":[-1e400]'),
    _in_usage(b'"output_tokens":2e308,"output_tokens":5'),
    _in_usage(b'"x":1' + b"0" * 400 + b".0"),
    _in_usage(b'"x":1' + b"0" * 250 + b"e99"),
    _in_usage(b'"x":1' + b"0" * 5000),
    line().replace(b'"cache_creation":{', b'"cache_creation":{"x":1e400,'),
]


def test_a_number_msgspec_cannot_hold_in_usage_leaves_the_line_to_the_full_parser_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    # Alone, twice, after and before a plain copy of the same response (usage compared as dicts).
    cases = [(odd, shape) for odd in HUGE_NUMBERS for shape in ([odd], [odd, odd], [line(), odd], [odd, line()])]
    chunks = [b"".join(part + b"\n" for part in shape) for _, shape in cases]

    def parse(chunk: bytes) -> tuple[list[UsageEvent], Counter[str], Counter[str]]:
        counts, slow = Counter[str](), Counter[str]()
        return parse_chunk(chunk, counts, now=now, slow=slow), counts, slow

    fast = [parse(chunk) for chunk in chunks]
    assert [slow[transcripts.SLOW] for _, _, slow in fast] == [shape.count(odd) for odd, shape in cases]
    monkeypatch.setattr(transcripts, "_decode", lambda line, slow: None)  # orjson for every line
    assert [(events, counts) for events, counts, _ in fast] == [parse(chunk)[:2] for chunk in chunks]


def test_a_whole_number_past_64_bits_in_usage_is_still_read_by_the_fast_decoder() -> None:
    # msgspec holds it, orjson does not: the one difference the module's docstring names, as before.
    slow: Counter[str] = Counter()
    events = parse_chunk(_in_usage(b'"iterations":1' + b"0" * 400) + b"\n", Counter(), slow=slow)
    assert (len(events), slow) == (1, Counter())


@pytest.mark.parametrize(
    "new",
    [
        _in_usage(b'"cache_tier":"gold"'),
        line().replace(b'"cache_creation":{', b'"cache_creation":{"ephemeral_24h_input_tokens":0,'),
        line().replace(b'"server_tool_use":{', b'"server_tool_use":{"code_execution_requests":1,'),
    ],
    ids=["usage", "cache_creation", "server_tool_use"],
)
def test_a_usage_field_claude_code_did_not_write_before_is_read_and_counted_as_slow(
    new: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A format change: every line then takes the dict path, which must show on the slow lines' metric.
    chunk = new + b"\n" + new + b"\n" + line(m_id="msg_other") + b"\n"
    counts, slow = Counter[str](), Counter[str]()
    events = parse_chunk(chunk, counts, slow=slow)
    assert slow == Counter({transcripts.SLOW: 1})  # the second line is the first's next block: not decoded again
    assert len(events) == 2
    monkeypatch.setattr(transcripts, "_decode", lambda line, slow: None)  # the full parser: the same events
    full = Counter[str]()
    assert (events, counts) == (parse_chunk(chunk, full), full)


def test_usage_written_in_another_order_is_the_same_usage() -> None:
    reordered = line(m_usage=dict(reversed(USAGE.items())), m_content=[{"type": "tool_use", "name": "Read"}])
    assert reordered != line()
    events = parse_chunk(line() + b"\n" + reordered + b"\n", Counter())
    assert [(e.lines, e.tools) for e in events] == [(2, frozenset({"Bash", "Read"}))]


@pytest.mark.parametrize("depth", range(850, 1010, 2))
def test_usage_nested_near_the_recursion_limit_neither_crashes_nor_reads_otherwise_than_the_full_parser(
    depth: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = line().replace(b'"usage":{', b'"usage":{"iterations":' + b"[" * depth + b"]" * depth + b",")
    chunk = line() + b"\n" + deep + b"\n" + deep + b"\n"
    counts: Counter[str] = Counter()
    fast = parse_chunk(chunk, counts)
    monkeypatch.setattr(transcripts, "_decode", lambda line, slow: None)
    slow: Counter[str] = Counter()
    assert (fast, counts) == (parse_chunk(chunk, slow), slow)


def test_the_fast_decoder_gives_every_event_and_count_the_full_parser_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate(tmp_path, seed=9, days=3)  # every duplicate trap, progress lines and line shapes the generator knows
    chunks = [p.read_bytes() for p in sorted(tmp_path.rglob("*.jsonl"))]
    chunks.append(b"\n".join(ODD_LINES) + b"\n")
    chunks += [odd + b"\n" + odd + b"\n" for odd in ODD_LINES]  # the same response twice: the shortcut
    now = datetime(2030, 1, 1, tzinfo=UTC)

    def parse(chunk: bytes) -> tuple[list[UsageEvent], Counter[str]]:
        counts: Counter[str] = Counter()
        return parse_chunk(chunk, counts, now=now), counts

    fast = [parse(chunk) for chunk in chunks]
    monkeypatch.setattr(transcripts, "_decode", lambda line, slow: None)  # orjson for every line
    assert fast == [parse(chunk) for chunk in chunks]
    assert sum(len(events) for events, _ in fast) > 300


def test_a_line_the_fast_decoder_cannot_take_is_counted_as_slow() -> None:
    slow: Counter[str] = Counter()
    odd = line(m_content=["text block", {"type": "tool_use", "name": "Read"}])
    events = parse_chunk(line() + b"\n" + odd + b"\n" + line(type="user") + b"\n", Counter(), slow=slow)
    assert len(events) == 1  # one response: the odd line is a later block of it
    assert slow == Counter({transcripts.SLOW: 1})  # the user line is another type, not a slow one
