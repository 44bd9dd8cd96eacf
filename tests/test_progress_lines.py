"""Subagent requests Claude Code 2.1.x writes only inside `progress` lines, end to end through the CLI.

While a subagent runs, the parent's transcript gets `progress` lines whose `data` (`agent_progress`) nests
the subagent's assistant record, usage included. When the subagent's own transcript is missing (copied
histories, partial backups) those copies are all there is: each counts once, as a subagent request of the
parent's session. When the subagent transcript is there too, a nested copy merges with its copy of the
same message: nothing counts twice, and a nested copy's provisional usage never raises the final figure.
The fixtures are shaped like the lines Claude Code writes; nothing is read from real histories.

Also here: lines with no "type" at all (issue 16, item 4), counted as ccusage counts them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.cli import Run
from tests.support.cli import cli as run_in
from tests.test_ccusage_parity import ccusage_report, find_ccusage

SESSION = "7d3a0c1e-5b2f-4e8a-9c61-2f0d4b8e7a15"
AGENT = "a46e908f1c2d3b4e5"
CWD = "/home/dev/notes-app"
PROJECT = "-home-dev-notes-app"
MODEL = "claude-haiku-4-5-20251001"  # $1 input, $1.25 5m write, $2 1h write, $0.10 cache read, $5 output / MTok


def usage(input: int, output: int, cache_read: int, cache_1h: int) -> dict[str, Any]:
    return {
        "input_tokens": input,
        "cache_creation_input_tokens": cache_1h,
        "cache_read_input_tokens": cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": cache_1h},
        "output_tokens": output,
        "service_tier": "standard",
    }


# Final usage of each request: (input, output, cache read, 1 h cache write).
MAIN = ("msg_01Main", "2026-02-09T03:18:40.000Z", (3, 120, 15_000, 2_000))
SUB = [
    ("msg_01SubA", "2026-02-09T03:18:49.880Z", (5, 300, 9_000, 4_000)),
    ("msg_01SubB", "2026-02-09T03:18:55.120Z", (7, 450, 13_000, 1_000)),
]


def cost(tokens: tuple[int, int, int, int]) -> float:
    input, output, cache_read, cache_1h = tokens
    return (input * 1 + output * 5 + cache_read * 0.1 + cache_1h * 2) / 1_000_000


def message(msg: str, tokens: tuple[int, int, int, int], *, final: bool = True) -> dict[str, Any]:
    return {
        "model": MODEL,
        "id": msg,
        "type": "message",
        "role": "assistant",
        "content": [{"type": "tool_use", "id": f"toolu_{msg}", "name": "Read", "input": {"file_path": "notes.txt"}}],
        "stop_reason": "tool_use" if final else None,
        "stop_sequence": None,
        "usage": usage(*tokens),
    }


def assistant(msg: str, ts: str, tokens: tuple[int, int, int, int], *, agent: bool = False) -> bytes:
    """A top-level assistant line: the parent's own (main) or one in the subagent's transcript."""
    record = {
        "parentUuid": f"parent-{msg}",
        "isSidechain": agent,
        **({"agentId": AGENT} if agent else {}),
        "userType": "external",
        "cwd": CWD,
        "sessionId": SESSION,
        "version": "2.1.19",
        "gitBranch": "main",
        "message": message(msg, tokens),
        "requestId": f"req_{msg}",
        "type": "assistant",
        "uuid": f"uuid-{msg}",
        "timestamp": ts,
    }
    return orjson.dumps(record) + b"\n"


def progress(msg: str, ts: str, tokens: tuple[int, int, int, int], *, final: bool = True) -> bytes:
    """The parent's progress line for one subagent response: the subagent's record in `data.message`, its
    own time inside; the line's own time a little later."""
    record = {
        "parentUuid": "parent-msg_01Main",
        "isSidechain": False,
        "userType": "external",
        "cwd": CWD,
        "sessionId": SESSION,
        "version": "2.1.19",
        "gitBranch": "main",
        "type": "progress",
        "data": {
            "message": {
                "type": "assistant",
                "timestamp": ts,
                "message": message(msg, tokens, final=final),
                "requestId": f"req_{msg}",
                "uuid": f"uuid-{msg}",
            },
            "normalizedMessages": [],
            "type": "agent_progress",
            "prompt": "Summarise notes.txt",
            "agentId": AGENT,
        },
        "toolUseID": f"agent_msg_{msg}",
        "parentToolUseID": "toolu_msg_01Main",
        "uuid": f"progress-{msg}",
        "timestamp": ts[:-5] + "999Z",
    }
    return orjson.dumps(record) + b"\n"


def write(path: Path, *lines: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def parent(tmp_path: Path, *, provisional: bool = False) -> Path:
    """The parent's transcript: its own request, then the progress lines of the subagent's two."""
    lines = [assistant(MAIN[0], MAIN[1], MAIN[2])]
    for msg, ts, tokens in SUB:
        if provisional:  # the first block's copy, written before the response ended: 1 output token
            lines.append(progress(msg, ts, (tokens[0], 1, tokens[2], tokens[3]), final=False))
        lines.append(progress(msg, ts, tokens))
    return write(tmp_path / "claude/projects" / PROJECT / f"{SESSION}.jsonl", *lines)


def subagent(tmp_path: Path) -> Path:
    lines = [assistant(msg, ts, tokens, agent=True) for msg, ts, tokens in SUB]
    return write(tmp_path / "claude/projects" / PROJECT / SESSION / "subagents" / f"agent-{AGENT}.jsonl", *lines)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    return run_in(tmp_path, monkeypatch, in_folders=True)


def totals(cli: Run) -> dict[str, Any]:
    """What `report daily --json` and `report session --json` say, checked to agree on every figure."""
    [day] = orjson.loads(cli("report", "daily", "--json"))["daily"]
    [session] = orjson.loads(cli("report", "session", "--json"))["sessions"]
    fields = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens", "totalTokens", "requests")
    assert {f: session[f] for f in fields} == {f: day[f] for f in fields}
    assert session["totalCost"] == pytest.approx(day["totalCost"], abs=1e-12)
    assert session["sessionId"] == SESSION
    [by_agent] = orjson.loads(cli("report", "session", "--json", "--by", "agent"))["sessions"]
    agents = {b["name"]: (b["requests"], b["totalTokens"]) for b in by_agent["breakdowns"]}
    return {f: day[f] for f in fields} | {"date": day["date"], "cost": day["totalCost"], "agents": agents}


ALL = [MAIN[2], *(tokens for _, _, tokens in SUB)]
EXPECTED: dict[str, Any] = {
    "inputTokens": sum(t[0] for t in ALL),
    "outputTokens": sum(t[1] for t in ALL),
    "cacheCreationTokens": sum(t[3] for t in ALL),
    "cacheReadTokens": sum(t[2] for t in ALL),
    "totalTokens": sum(sum(t) for t in ALL),
    "requests": 3,
    "date": "2026-02-09",
    "cost": pytest.approx(sum(cost(t) for t in ALL), abs=1e-9),
    "agents": {"main": (1, sum(MAIN[2])), "subagent": (2, sum(sum(t) for _, _, t in SUB))},
}


def test_subagent_requests_only_in_progress_lines_count_once_each_as_the_parents_subagent(
    cli: Run, tmp_path: Path
) -> None:
    parent(tmp_path)
    assert totals(cli) == EXPECTED


def test_provisional_and_final_progress_copies_of_one_response_count_its_final_usage_once(
    cli: Run, tmp_path: Path
) -> None:
    parent(tmp_path, provisional=True)
    assert totals(cli) == EXPECTED


@pytest.mark.parametrize("newer", ["parent", "subagent"])
@pytest.mark.parametrize("provisional", [False, True], ids=["same usage", "provisional nested copies"])
def test_with_the_subagent_transcript_too_each_request_counts_once_with_its_transcripts_usage(
    cli: Run, tmp_path: Path, newer: str, provisional: bool
) -> None:
    # Files are read oldest first: both orders, so neither copy's place in the reading decides anything.
    files = {"parent": parent(tmp_path, provisional=provisional), "subagent": subagent(tmp_path)}
    older = files["subagent" if newer == "parent" else "parent"]
    os.utime(older, (1_700_000_000, 1_700_000_000))
    os.utime(files[newer], (1_700_000_100, 1_700_000_100))
    assert totals(cli) == EXPECTED


def test_a_nested_copy_read_after_the_subagent_transcript_changes_nothing(cli: Run, tmp_path: Path) -> None:
    # The daemon's order: the subagent's transcript is ingested first, the parent's progress lines later.
    subagent(tmp_path)
    before = totals(cli)
    parent(tmp_path)
    assert before["agents"] == {"subagent": EXPECTED["agents"]["subagent"]}
    assert totals(cli) == EXPECTED


def test_progress_only_requests_give_the_daily_tokens_ccusage_gives(tmp_path: Path) -> None:
    # ccusage 20.0.24's daily report counts nested copies too (its session report does not).
    found = find_ccusage()
    if found is None:
        pytest.skip("ccusage is not installed: see tests/test_ccusage_parity.py")
    parent(tmp_path, provisional=True)
    theirs = ccusage_report(found, "daily", tmp_path / "claude", tmp_path / "home")["totals"]
    fields = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens", "totalTokens")
    assert {f: theirs[f] for f in fields} == {f: EXPECTED[f] for f in fields}


# --- lines without "type" (issue 16, item 4) ------------------------------------------------------------
# Other tools write usage lines with no "type"; ccusage counts any line whose message carries usage, so
# they are counted here too (before, they were skipped and the report said "No usage in this range").
TYPELESS = [
    # (line, tokens it counts: input, output, cache read)
    (
        {
            "sessionId": "typeless",
            "timestamp": "2026-03-01T09:00:00.000Z",
            "requestId": "req_01T1",
            "cwd": CWD,
            "message": {"id": "msg_01T1", "role": "assistant", "model": MODEL, "usage": usage(100, 40, 3_000, 0)},
        },
        (100, 40, 3_000),
    ),
    (  # the barest: no role, no ids, no session (ccusage's own fixtures look like this)
        {"timestamp": "2026-03-01T09:05:00.000Z", "message": {"model": MODEL, "usage": usage(20, 10, 0, 0)}},
        (20, 10, 0),
    ),
]


def typeless(tmp_path: Path) -> Path:
    return write(
        tmp_path / "claude/projects" / PROJECT / "typeless.jsonl", *(orjson.dumps(r) + b"\n" for r, _ in TYPELESS)
    )


def test_lines_without_a_type_count_in_the_daily_and_session_reports(cli: Run, tmp_path: Path) -> None:
    typeless(tmp_path)
    [day] = orjson.loads(cli("report", "daily", "--json"))["daily"]
    want = [sum(t[i] for _, t in TYPELESS) for i in range(3)]
    assert [day[f] for f in ("inputTokens", "outputTokens", "cacheReadTokens", "requests")] == [*want, 2]
    assert day["totalCost"] == pytest.approx((want[0] * 1 + want[1] * 5 + want[2] * 0.1) / 1_000_000, abs=1e-12)
    sessions = orjson.loads(cli("report", "session", "--json"))["sessions"]
    # A line with no session is the "unknown" session's.
    assert sorted((s["sessionId"], s["requests"], s["outputTokens"]) for s in sessions) == [
        ("typeless", 1, 40),
        ("unknown", 1, 10),
    ]
    assert "No usage in this range" not in cli("report", "daily")


def test_lines_without_a_type_give_the_tokens_ccusage_gives(tmp_path: Path) -> None:
    found = find_ccusage()
    if found is None:
        pytest.skip("ccusage is not installed: see tests/test_ccusage_parity.py")
    typeless(tmp_path)
    theirs = ccusage_report(found, "daily", tmp_path / "claude", tmp_path / "home")["totals"]
    want = [sum(t[i] for _, t in TYPELESS) for i in range(3)]
    assert [theirs[f] for f in ("inputTokens", "outputTokens", "cacheReadTokens")] == want
