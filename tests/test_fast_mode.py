"""Fast mode (`usage.speed: "fast"`, Claude Code's /fast) end to end: transcript lines shaped as Claude Code
2.1.x writes them, through `report daily|session --json`, `explain` and `pricing`, via the CLI.

Opus 4.6 in fast mode costs 6x its standard rates (Anthropic's fast-mode page,
https://platform.claude.com/docs/en/build-with-claude/fast-mode); genai-prices 0.2.3 has no fast variant
for it, and a fast request whose fast price is unknown is unpriced, never priced as standard.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from tests.support.cli import Run
from tests.support.cli import cli as run_in

FAST_PAGE = "https://platform.claude.com/docs/en/build-with-claude/fast-mode"
# One request's usage: 10 uncached input, 500 output, 20,000 cache reads, 3,000 written to the 1 h cache.
# Opus 4.6 standard (5 / 25 / 0.5 / 10 per MTok): 10*5 + 500*25 + 20000*0.5 + 3000*10 = 52,550 -> $0.05255
# Opus 4.6 fast, 6x (30 / 150 / 3 / 60):         10*30 + 500*150 + 20000*3 + 3000*60 = 315,300 -> $0.3153
STANDARD_COST = 0.05255
FAST_COST = 0.3153
TOKENS = 10 + 500 + 20_000 + 3_000


def assistant(msg: str, session: str, ts: str, *, model: str = "claude-opus-4-6", speed: str = "fast") -> bytes:
    """One content block of a Claude Code 2.1.x response, as written after /fast (speed in usage)."""
    record = {
        "parentUuid": f"parent-{msg}",
        "isSidechain": False,
        "userType": "external",
        "cwd": "/home/dev/acme-api",
        "sessionId": session,
        "version": "2.1.47",
        "gitBranch": "main",
        "message": {
            "id": msg,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "Done."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 3_000,
                "cache_read_input_tokens": 20_000,
                "output_tokens": 500,
                "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                "service_tier": "standard",
                "cache_creation": {"ephemeral_1h_input_tokens": 3_000, "ephemeral_5m_input_tokens": 0},
                "speed": speed,
            },
        },
        "requestId": f"req_{msg}",
        "type": "assistant",
        "uuid": f"uuid-{msg}",
        "timestamp": ts,
    }
    return orjson.dumps(record) + b"\n"


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    return run_in(tmp_path, monkeypatch, in_folders=True)


def transcript(tmp_path: Path, name: str, *lines: bytes) -> Path:
    path = tmp_path / "claude/projects/-home-dev-acme-api" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(lines))
    return path


def test_a_fast_opus_46_request_costs_six_times_the_same_request_at_standard_speed(cli: Run, tmp_path: Path) -> None:
    transcript(tmp_path, "fast", assistant("msg_fast", "fast", "2026-04-02T10:00:00.000Z"))
    transcript(tmp_path, "std", assistant("msg_std", "std", "2026-04-02T11:00:00.000Z", speed="standard"))

    daily = orjson.loads(cli("report", "daily", "--json"))
    [day] = daily["daily"]
    assert (day["totalCost"], day["costBySpeed"], day["unpricedTokens"]) == (
        pytest.approx(FAST_COST + STANDARD_COST, abs=1e-9),
        {"standard": pytest.approx(STANDARD_COST, abs=1e-9), "fast": pytest.approx(FAST_COST, abs=1e-9)},
        0,
    )
    sessions = {s["sessionId"]: s for s in orjson.loads(cli("report", "session", "--json"))["sessions"]}
    assert {sid: round(s["totalCost"], 2) for sid, s in sessions.items()} == {"fast": 0.32, "std": 0.05}
    assert sessions["fast"]["totalCost"] == pytest.approx(6 * sessions["std"]["totalCost"], abs=1e-9)
    assert sessions["fast"]["totalCost"] == pytest.approx(FAST_COST, abs=1e-9)


def test_a_fast_request_on_a_model_with_no_known_fast_price_is_unpriced(cli: Run, tmp_path: Path) -> None:
    # Opus 4.7 had fast mode, but no price for it was published where we could cite it; Sonnet never had it.
    transcript(
        tmp_path,
        "s",
        assistant("msg_47", "s", "2026-05-20T10:00:00.000Z", model="claude-opus-4-7"),
        assistant("msg_45", "s", "2026-05-20T10:01:00.000Z", model="claude-sonnet-4-5-20250929"),
    )
    for kind, rows in (("daily", "daily"), ("session", "sessions")):
        [row] = orjson.loads(cli("report", kind, "--json"))[rows]
        assert (row["totalCost"], row["unpricedTokens"], row["requests"], row["costBySpeed"]) == (
            0.0,
            2 * TOKENS,
            2,
            {"standard": 0.0, "fast": 0.0},
        )


def test_report_by_speed_breaks_each_day_down_into_standard_and_fast(cli: Run, tmp_path: Path) -> None:
    transcript(
        tmp_path,
        "s",
        assistant("msg_1", "s", "2026-04-02T10:00:00.000Z"),
        assistant("msg_2", "s", "2026-04-02T10:05:00.000Z", speed="standard"),
    )
    [day] = orjson.loads(cli("report", "daily", "--json", "--by", "speed"))["daily"]
    assert [(b["name"], b["requests"], b["totalTokens"], round(b["cost"], 6)) for b in day["breakdowns"]] == [
        ("fast", 1, TOKENS, FAST_COST),
        ("standard", 1, TOKENS, STANDARD_COST),
    ]
    table = cli("report", "daily")
    assert "Fast mode: $0.32 (86%)" in table.splitlines()


def test_explain_shows_each_requests_speed_and_its_fast_price(cli: Run, tmp_path: Path) -> None:
    path = transcript(
        tmp_path,
        "s",
        assistant("msg_1", "s", "2026-04-02T10:00:00.000Z"),
        assistant("msg_2", "s", "2026-04-02T10:05:00.000Z", speed="standard"),
    )
    rows = orjson.loads(cli("explain", str(path), "--json"))
    assert [(r["key"], r["speed"], r["cost"], r["reportedCost"]) for r in rows] == [
        ("msg_1", "fast", pytest.approx(FAST_COST, abs=1e-9), None),
        ("msg_2", "standard", pytest.approx(STANDARD_COST, abs=1e-9), None),
    ]
    assert "claude-opus-4-6 (fast)" in cli("explain", str(path))


def test_pricing_shows_fast_rates_where_known_and_none_elsewhere(cli: Run) -> None:
    [opus] = orjson.loads(cli("pricing", "claude-opus-4-6", "--json"))
    assert opus["fast"] == {
        "source": f"genai-prices 0.2.3 × 6 fast mode ({FAST_PAGE})",
        "rates": {
            "input": "30",
            "output": "150",
            "cache_read": "3",
            "cache_write_5m": "37.5",
            "cache_write_1h": "60",
            "web_search_per_1k": "10",
        },
    }
    [sonnet] = orjson.loads(cli("pricing", "claude-sonnet-4-5-20250929", "--json"))
    assert sonnet["fast"] is None
    listed = {q["model"]: q["fast"] and q["fast"]["rates"]["input"] for q in orjson.loads(cli("pricing", "--json"))}
    assert (listed["claude-opus-4-6"], listed["claude-opus-4-8"], listed["claude-opus-4-7"]) == ("30", "10", None)
    assert "  fast mode" in cli("pricing", "claude-opus-4-6")
