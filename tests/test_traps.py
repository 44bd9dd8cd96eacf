"""Each duplicate trap of Claude Code's transcripts (docs/reports.md, "How requests are counted"), end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson

from exporter.events import Tokens
from exporter.pipeline import Pipeline
from tests.support.lines import USAGE, line, write


def ledger_rows(app: Pipeline) -> list[tuple[str, str | None, str, Tokens]]:
    app.refresh()
    return sorted((r.key, r.request_id, r.session_id, r.tokens) for r in app.ledger.requests())


FULL = Tokens(input=10, output=135, cache_read=22820, cache_write_5m=0, cache_write_1h=9907)


def test_one_response_written_as_several_lines_counts_once(claude_dir: Path, make_app: Callable[..., Pipeline]) -> None:
    blocks = [{"type": "thinking", "thinking": ""}, {"type": "text", "text": "x"}, {"type": "tool_use", "name": "Edit"}]
    write(claude_dir / "projects/p/s1.jsonl", *(line(m_content=[b]) for b in blocks))
    app = make_app()
    assert ledger_rows(app) == [("msg_011CeDq", "req_011CeDq", "9c42ba52", FULL)]
    assert app.ledger.counters()["lines.transcripts.duplicate"] == 2
    [request] = app.ledger.requests()
    assert request.interaction == "code_change"


def test_provisional_usage_on_early_lines_gives_way_to_the_final_usage(
    claude_dir: Path, make_app: Callable[..., Pipeline]
) -> None:
    provisional = {**USAGE, "output_tokens": 1}
    write(claude_dir / "projects/p/s1.jsonl", line(m_usage=provisional, m_stop_reason=None), line())
    assert ledger_rows(make_app())[0][3] == FULL


def test_a_forked_session_copying_the_conversation_adds_nothing(
    claude_dir: Path, make_app: Callable[..., Pipeline]
) -> None:
    write(claude_dir / "projects/p/s1.jsonl", line())
    app = make_app()
    before = ledger_rows(app)
    write(claude_dir / "projects/p/fork.jsonl", line(sessionId="fork-session"))
    assert ledger_rows(app) == before == [("msg_011CeDq", "req_011CeDq", "9c42ba52", FULL)]


def test_a_side_question_replay_with_a_new_request_id_is_the_same_response(
    claude_dir: Path, make_app: Callable[..., Pipeline]
) -> None:
    write(
        claude_dir / "projects/p/s1.jsonl",
        line(),
        line(requestId="req_side", isSidechain=True, timestamp="2026-08-20T10:30:00Z"),
    )
    [(key, request_id, _, tokens)] = ledger_rows(make_app())
    assert (key, request_id, tokens) == ("msg_011CeDq", "req_011CeDq", FULL)


def test_the_agent_tools_repeated_usage_is_not_counted_but_the_subagent_file_is(
    claude_dir: Path, make_app: Callable[..., Pipeline]
) -> None:
    tool_result = orjson.dumps(
        {
            "type": "user",
            "sessionId": "9c42ba52",
            "timestamp": "2026-08-20T10:22:00Z",
            "message": {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01"}]},
            "toolUseResult": {"status": "completed", "agentId": "a46e", "totalTokens": 32872, "usage": USAGE},
        }
    )
    write(claude_dir / "projects/p/s1.jsonl", line(m_content=[{"type": "tool_use", "name": "Agent"}]), tool_result)
    write(
        claude_dir / "projects/p/s1/subagents/agent-a46e.jsonl",
        line(m_id="msg_sub", requestId="req_sub", isSidechain=True, agentId="a46e"),
    )
    app = make_app()
    assert [r[0] for r in ledger_rows(app)] == ["msg_011CeDq", "msg_sub"]
    agents = {r.key: (r.agent, r.interaction) for r in app.ledger.requests()}
    assert agents == {"msg_011CeDq": ("main", "delegation"), "msg_sub": ("subagent", "command")}


def test_synthetic_error_lines_are_skipped(claude_dir: Path, make_app: Callable[..., Pipeline]) -> None:
    write(claude_dir / "projects/p/s1.jsonl", line(m_model="<synthetic>", m_id="err", isApiErrorMessage=True))
    app = make_app()
    assert ledger_rows(app) == []
    counters = app.ledger.counters()
    assert (counters["lines.transcripts.skipped"], "lines.transcripts.usage" in counters) == (1, False)


def test_old_lines_without_ids_count_once_and_keep_their_reported_cost(
    claude_dir: Path, make_app: Callable[..., Pipeline]
) -> None:
    old = line(m_id=None, requestId=None, costUSD=0.5)
    write(
        claude_dir / "projects/p/s1.jsonl",
        old,
        line(m_id=None, requestId=None, costUSD=0.25, timestamp="2026-08-20T11:00:00Z"),
    )
    write(claude_dir / "projects/p/s1-copy.jsonl", old)  # an identical line is the same request
    app = make_app(pricing__mode="reported")
    assert len(ledger_rows(app)) == 2
    assert sorted(r.reported_cost or 0 for r in app.ledger.requests()) == [250_000_000, 500_000_000]
