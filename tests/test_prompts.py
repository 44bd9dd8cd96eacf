"""Prompts: which user lines are typed prompts, and when a prompt closes with its requests and cost."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from exporter.events import Prompt
from exporter.pipeline import Pipeline
from exporter.sources.transcripts import candidates, parse_prompt
from tests.support.lines import SESSION, assistant_line, user_line, write

T0 = 1795640400000  # 2026-11-25T21:00:00Z in ms
HOUR = 3600_000


def user(content: object, **extra: object) -> bytes:
    record = {
        "parentUuid": None,
        "isSidechain": False,
        "type": "user",
        "message": {"role": "user", "content": content},
        "uuid": "u1",
        "timestamp": "2026-11-25T21:00:00.000Z",
        "cwd": "/home/dev/acme",
        "sessionId": "s1",
        **extra,
    }
    return orjson.dumps(record)


PROMPT = Prompt("u1", "s1", T0, "acme")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (user("fix the failing test"), PROMPT),
        (user([{"type": "text", "text": "what does this do?"}, {"type": "image", "source": {}}]), PROMPT),
        (user([{"type": "image", "source": {}}]), PROMPT),  # a pasted screenshot alone
        (user([{"tool_use_id": "toolu_1", "type": "tool_result", "content": "1\thello"}]), None),
        (user([{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]), None),
        (user("go", isMeta=True), None),  # injected by Claude Code, e.g. skill text
        (user("This session is being continued", isCompactSummary=True), None),  # after a compaction
        (user("look up the schema", isSidechain=True), None),  # a subagent's task, not the user's
        (user("<local-command-stdout>Set model to opus</local-command-stdout>"), None),  # a command's output
        (user([{"type": "text", "text": "[Request interrupted by user]"}]), None),
        (user("hi", uuid=None), None),
        (user("hi", timestamp="yesterday"), None),
        (b'{"type":"user","message":{"role":"user","content":"broken', None),
    ],
)
def test_a_user_line_is_a_prompt_only_when_the_user_typed_it(line: bytes, expected: Prompt | None) -> None:
    assert parse_prompt(line) == expected


def test_only_user_lines_that_may_be_typed_reach_the_prompt_parser() -> None:
    typed, tool_result = user("hi"), user([{"tool_use_id": "toolu_1", "type": "tool_result", "content": "x"}])
    found: list[bytes] = []
    usage, lines = candidates(b"\n".join([typed, tool_result, assistant_line("m", "r").rstrip()]), found)
    assert (found, len(usage), lines) == ([typed], 1, 3)


def at(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prompts(app: Pipeline) -> list[tuple[object, ...]]:
    return list(app.ledger.db.execute("SELECT ts, requests, cost IS NOT NULL FROM prompts ORDER BY ts"))


def test_a_prompt_closes_with_its_requests_when_the_next_prompt_comes(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    path = claude_dir / "projects" / "p" / f"{SESSION}.jsonl"
    write(
        path, user_line(ts=at(T0)), assistant_line("m1", "r1", at(T0 + 1000)), assistant_line("m2", "r2", at(T0 + 2000))
    )
    write(
        claude_dir / "projects" / "p" / SESSION / "subagents" / "agent-a1.jsonl",
        assistant_line("m3", "r3", at(T0 + 1500), agent_id="a1"),
    )
    app = make_app()
    app.refresh(now_ms=T0 + 3000)
    assert prompts(app) == [(T0, None, 0)]  # still going: no later prompt, not idle
    write(path, user_line("next", ts=at(T0 + 60_000), uuid="u2"), assistant_line("m4", "r4", at(T0 + 61_000)))
    app.refresh(now_ms=T0 + 62_000)
    assert prompts(app) == [(T0, 3, 1), (T0 + 60_000, None, 0)]  # the subagent's request counts
    app.refresh(now_ms=T0 + 61_000 + HOUR // 2)
    assert prompts(app) == [(T0, 3, 1), (T0 + 60_000, 1, 1)]  # idle for 30 minutes: closed
    rows = list(app.ledger.db.execute("SELECT kind, bucket, count, sum FROM prompt_series WHERE kind = 'requests'"))
    assert rows == [("requests", 0, 1, 1), ("requests", 2, 1, 3)]


def test_a_forked_copy_of_a_prompt_is_the_same_prompt(make_app: Callable[..., Pipeline], claude_dir: Path) -> None:
    write(claude_dir / "projects" / "p" / "a.jsonl", user_line(ts=at(T0)), assistant_line("m1", "r1", at(T0 + 1)))
    write(claude_dir / "projects" / "p" / "b.jsonl", user_line(ts=at(T0)), assistant_line("m1", "r1", at(T0 + 1)))
    app = make_app()
    app.refresh(now_ms=T0 + HOUR)
    assert prompts(app) == [(T0, 1, 1)]


def test_a_prompt_that_caused_no_request_is_counted_but_not_observed(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    write(claude_dir / "projects" / "p" / "a.jsonl", user_line(ts=at(T0)))
    app = make_app()
    app.refresh(now_ms=T0 + HOUR)
    assert prompts(app) == [(T0, 0, 1)]
    assert list(app.ledger.db.execute("SELECT * FROM prompt_series")) == []
