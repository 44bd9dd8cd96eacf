"""End to end with the real Claude Code CLI, offline: a fake API in a network namespace with only loopback.

What the CLI writes (transcripts, OTLP) must carry exactly the ids and usage the fake served, priced at list price.
They skip loudly without the CLI (`npm install --prefix tests/node`) or user namespaces; under CI=true they fail.
"""

from __future__ import annotations

import http.client
import json
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.support.claude_cli import (
    Telemetry,
    Workspace,
    claude_step,
    otlp_events,
    otlp_points,
    otlp_sink,
    read_jsonl,
    result_message,
    stream_json_prompt,
)
from tests.support.fakeapi import SUBAGENT_MARKER, FakeApi, Usage
from tests.support.netns import ROOT, FakeSettings, Plan, Process, Result, Step, run_plan

pytestmark = pytest.mark.slow  # the Claude Code CLI in a namespace

# Sonnet 4.5 list prices, USD per million tokens.
SONNET_45 = {"input": 3.0, "5m": 3.75, "1h": 6.0, "read": 0.30, "output": 15.0}
PROMPT = "Look at notes.txt and append a line to it."
# The api_request event's token attributes and the usage fields they copy.
EVENT_TOKENS = {
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cache_read_tokens": "cache_read_input_tokens",
    "cache_creation_tokens": "cache_creation_input_tokens",
}
Json = dict[str, Any]


def pinned_version() -> str:
    pinned = json.loads((ROOT / "tests/node/package.json").read_text())["dependencies"]
    return str(pinned["@anthropic-ai/claude-code"])


def list_price(usage: Json, prices: dict[str, float] = SONNET_45) -> float:
    written = usage["cache_creation"]
    tokens = {
        "input": usage["input_tokens"],
        "5m": written["ephemeral_5m_input_tokens"],
        "1h": written["ephemeral_1h_input_tokens"],
        "read": usage["cache_read_input_tokens"],
        "output": usage["output_tokens"],
    }
    return sum(float(tokens[k]) * prices[k] for k in tokens) / 1e6


def run(tmp_path: Path, *steps: Step, background: tuple[Process, ...] = (), **fake: Any) -> Result:
    return run_plan(Plan(steps=list(steps), background=list(background), fake=FakeSettings(**fake)), tmp_path / "out")


def succeeded(result: Result, name: str = "claude") -> Json:
    step = result.step(name)
    assert step.exit_code == 0, f"{name} exited with {step.exit_code}:\n{step.stderr[-3000:]}\n{step.stdout[-3000:]}"
    return result_message(step.stdout)


def assistant_lines(lines: list[Json]) -> dict[str, list[Json]]:
    """Assistant lines by requestId, in order of first appearance."""
    found: dict[str, list[Json]] = defaultdict(list)
    for line in lines:
        if line.get("type") == "assistant":
            found[line["requestId"]].append(line)
    return dict(found)


def assert_recorded_as_served(lines: dict[str, list[Json]], served: list[Json]) -> None:
    """Each served request is written with its request and message ids and the usage the fake returned."""
    assert list(lines) == [e["request_id"] for e in served]
    for exchange in served:
        for line in lines[exchange["request_id"]]:
            assert line["message"]["id"] == exchange["message_id"]
            usage = line["message"]["usage"]
            assert {k: usage.get(k) for k in exchange["usage"]} == exchange["usage"], exchange["request_id"]


def test_a_print_run_records_what_the_fake_served_and_prices_it_at_list_price(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    result = run(tmp_path, claude_step(ws, PROMPT))
    answer = succeeded(result)
    served = result.requests()
    assert [(e["kind"], e["tool_uses"]) for e in served] == [("main", ["Read"]), ("main", ["Edit"]), ("main", [])]
    assert "appended by the fake model" in (ws.project / "notes.txt").read_text()  # the CLI ran the Edit

    assert ws.session_file(answer["session_id"]).parent == ws.transcripts
    lines = ws.session(answer["session_id"])
    assert_recorded_as_served(assistant_lines(lines), served)
    assert {line.get("version") for line in lines if line["type"] == "assistant"} == {pinned_version()}

    written = [e["usage"]["cache_creation"] for e in served]
    assert all(sum(w[f"ephemeral_{ttl}_input_tokens"] for w in written) > 0 for ttl in ("5m", "1h"))
    assert answer["total_cost_usd"] == pytest.approx(sum(list_price(e["usage"]) for e in served), abs=1e-6)


def test_b_a_subagent_writes_its_own_transcript(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    result = run(tmp_path, claude_step(ws, f"Please {SUBAGENT_MARKER} to look at notes.txt, then append a line."))
    answer = succeeded(result)
    session = answer["session_id"]
    assert [(e["kind"], e["tool_uses"]) for e in result.requests()] == [
        ("main", ["Agent"]),
        ("subagent", ["Read"]),
        ("subagent", []),
        ("main", ["Read"]),
        ("main", ["Edit"]),
        ("main", []),
    ]

    assert_recorded_as_served(assistant_lines(ws.session(session)), result.requests("main"))
    [agent_file] = ws.subagent_files(session)
    agent_lines = read_jsonl(agent_file)
    assert_recorded_as_served(assistant_lines(agent_lines), result.requests("subagent"))
    assert {(line["isSidechain"], line["sessionId"]) for line in agent_lines} == {(True, session)}
    meta = json.loads(agent_file.with_suffix(".meta.json").read_text())
    assert meta["agentType"] == "general-purpose"
    assert answer["total_cost_usd"] == pytest.approx(sum(list_price(e["usage"]) for e in result.requests()), abs=1e-6)


@pytest.mark.parametrize(
    ("protocol", "content_type"), [("http/json", "application/json"), ("http/protobuf", "application/x-protobuf")]
)
def test_c_api_request_events_carry_the_fakes_request_ids(tmp_path: Path, protocol: str, content_type: str) -> None:
    ws, sink = Workspace(tmp_path / "ws"), tmp_path / "otlp"
    step = claude_step(ws, PROMPT, telemetry=Telemetry(protocol=protocol))
    result = run(tmp_path, step, background=(otlp_sink(sink),))
    session = succeeded(result)["session_id"]
    assert result.background == {"otlp-sink": 0}

    assert {entry["content_type"] for entry in read_jsonl(sink / "index.jsonl")} == {content_type}
    events = {e["attributes"]["request_id"]: e["attributes"] for e in otlp_events(sink) if e["name"] == "api_request"}
    served = result.requests()
    assert sorted(events) == sorted(e["request_id"] for e in served)
    for exchange in served:
        event, usage = events[exchange["request_id"]], exchange["usage"]
        assert (event["session.id"], event["query_source"]) == (session, "sdk")  # print mode's main thread
        for in_event, in_usage in EVENT_TOKENS.items():
            assert event[in_event] == usage[in_usage], (in_event, exchange["request_id"])
        assert event["cost_usd"] == pytest.approx(list_price(usage), abs=1e-9)
    cost = sum(p["value"] for p in otlp_points(sink) if p["name"] == "claude_code.cost.usage")
    assert cost == pytest.approx(sum(list_price(e["usage"]) for e in served), abs=1e-6)


def test_d_a_forked_session_copies_the_earlier_lines_with_the_same_ids(tmp_path: Path) -> None:
    ws, first = Workspace(tmp_path / "ws"), str(uuid.uuid4())
    result = run(
        tmp_path,
        claude_step(ws, PROMPT, "--session-id", first, name="first"),
        claude_step(ws, "Look at notes.txt again, add a line.", "--resume", first, "--fork-session", name="fork"),
    )
    succeeded(result, "first")
    fork = succeeded(result, "fork")["session_id"]
    assert fork != first
    by_session = {s: [e for e in result.requests() if e["session_id"] == s] for s in (first, fork)}
    assert [len(by_session[first]), len(by_session[fork])] == [3, 3]

    original, forked = assistant_lines(ws.session(first)), assistant_lines(ws.session(fork))
    assert_recorded_as_served(original, by_session[first])  # the original file is left as it was
    assert_recorded_as_served(forked, by_session[first] + by_session[fork])  # copied with the same ids and usage
    copied = [line["message"]["id"] for lines in list(forked.values())[:3] for line in lines]
    assert copied == [line["message"]["id"] for lines in original.values() for line in lines]


def test_e_background_calls_reach_otlp_but_no_transcript(tmp_path: Path) -> None:
    """A session title (needs non-essential traffic and stream-json input) and prompt suggestions."""
    ws, sink = Workspace(tmp_path / "ws"), tmp_path / "otlp"
    step = claude_step(
        ws,
        "",
        "--input-format",
        "stream-json",
        "--prompt-suggestions",
        "true",
        output_format="stream-json",
        telemetry=Telemetry(),
        nonessential=True,
        stdin=stream_json_prompt(PROMPT),
    )
    result = run(tmp_path, step, background=(otlp_sink(sink),))
    succeeded(result)
    background = {e["request_id"] for e in result.requests("background")}
    main = {e["request_id"] for e in result.requests("main")}
    assert background and len(main) == 3

    sources = {
        e["attributes"]["request_id"]: e["attributes"]["query_source"]
        for e in otlp_events(sink)
        if e["name"] == "api_request"
    }
    assert set(sources) == background | main
    assert {sources[r] for r in main} == {"sdk"}
    assert {sources[r] for r in background} == {"generate_session_title", "prompt_suggestion"}
    recorded = {line.get("requestId") for line in ws.all_lines()}
    assert main <= recorded
    assert not background & recorded


def test_an_api_error_is_written_as_a_synthetic_line(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws")
    result = run(tmp_path, claude_step(ws, PROMPT), fail_with=400)
    answer = result_message(result.step("claude").stdout)
    assert (answer["is_error"], answer["api_error_status"], answer["total_cost_usd"]) == (True, 400, 0)
    assert [(e["kind"], e["status"]) for e in result.requests()] == [("error", 400)]
    [line] = [line for line in ws.session(answer["session_id"]) if line["type"] == "assistant"]
    assert (line["message"]["model"], line.get("isApiErrorMessage")) == ("<synthetic>", True)


def test_the_namespace_has_only_loopback_and_fills_placeholders_once(tmp_path: Path) -> None:
    """No CLI needed: the driver's own promises, with the sink as a background process."""
    probe = (
        "import json, socket, sys, urllib.request as u; "
        "print(json.dumps({'interfaces': [n for _, n in socket.if_nameindex()], 'argv': sys.argv[1:], "
        "'head': u.urlopen(u.Request(sys.argv[1], method='HEAD')).status}))"
    )
    result = run(
        tmp_path,
        Step(name="probe", argv=["python3", "-c", probe, "{api}", "{port:otlp}", "{port:other}"]),
        Step(name="sink", fetch="http://127.0.0.1:{port:otlp}/", expect="otlp sink"),
        background=(otlp_sink(tmp_path / "otlp"),),
    )
    filled = [result.api_url, str(result.ports["otlp"]), str(result.ports["other"])]
    assert result.step("probe").json() == {"interfaces": ["lo"], "argv": filled, "head": 200}
    assert result.ports["otlp"] != result.ports["other"]
    assert result.step("sink").exit_code == 0
    assert result.background == {"otlp-sink": 0}
    assert [(e["method"], e["kind"]) for e in result.api] == [("HEAD", "other")]


def post(api: FakeApi, body: Json) -> tuple[int, str, bytes]:
    """Status, request-id header and body of a POST /v1/messages?beta=true to the fake on the host's loopback."""
    host, port = api.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/v1/messages?beta=true", json.dumps(body), {"Content-Type": "application/json"})
    answer = connection.getresponse()
    return answer.status, answer.getheader("request-id") or "", answer.read()


def sse(raw: bytes) -> list[tuple[str, Json]]:
    events = [chunk.split("\n", 1) for chunk in raw.decode().strip().split("\n\n")]
    return [(head.removeprefix("event: "), json.loads(data.removeprefix("data: "))) for head, data in events]


def test_the_fake_answers_json_and_sse_alike_with_seeded_usage_and_errors_on_demand() -> None:
    """No CLI needed: the wire format, including the non-streaming answer Claude Code only falls back to."""
    body: Json = {
        "model": "claude-sonnet-4-5",
        "system": " - Primary working directory: /src/app",
        "tools": [{"name": "Agent"}, {"name": "Read"}],
        "thinking": {"type": "enabled"},
        "messages": [{"role": "user", "content": "hi"}],
    }
    with FakeApi(seed=7) as api:
        status, request_id, raw = post(api, body)
        assert status == 200
        message = json.loads(raw)
        status, streamed_id, raw = post(api, {**body, "stream": True})
        events = sse(raw)
    expected = Usage(7).for_turn("main", 0)
    assert message["usage"] == expected != Usage(8).for_turn("main", 0)
    assert message["model"] == "claude-sonnet-4-5-20250929"
    assert message["content"][-1]["input"] == {"file_path": "/src/app/notes.txt"}
    assert [(e["request_id"], e["message_id"], e["stream"]) for e in api.entries()] == [
        (request_id, message["id"], False),
        (streamed_id, events[0][1]["message"]["id"], True),
    ]

    told = [e["delta"]["type"] if name == "content_block_delta" else name for name, e in events]
    assert told == [
        "message_start",
        *["content_block_start", "thinking_delta", "signature_delta", "content_block_stop"],
        *["content_block_start", "text_delta", "content_block_stop"],
        *["content_block_start", "input_json_delta", "input_json_delta", "content_block_stop"],
        *["message_delta", "message_stop"],
    ]
    deltas = [e["delta"] for _, e in events if e["type"] == "content_block_delta"]
    assert json.loads("".join(d.get("partial_json", "") for d in deltas)) == {"file_path": "/src/app/notes.txt"}
    assert events[-2][1]["usage"] == expected

    with FakeApi(fail_with=400) as failing:
        status, request_id, raw = post(failing, body)
    assert (status, json.loads(raw)["error"]["type"]) == (400, "invalid_request_error")
    assert [(e["kind"], e["request_id"]) for e in failing.entries()] == [("error", request_id)]
