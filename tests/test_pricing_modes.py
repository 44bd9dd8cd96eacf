"""Pricing modes end to end through the CLI: `auto` (the default, as ccusage's: a line's own costUSD where
it has one, else the cost from tokens), `calculate` (always from tokens) and `reported` (only the source's
own cost), on transcript lines shaped as Claude Code 1.0.x and 2.1.x write them.

Claude Code before 1.0.9 wrote a top-level `costUSD` and no 5 m / 1 h cache-write split: from tokens, every
cache write is priced at the 5 m rate, so on histories that used the 1 h cache the calculated cost is low.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from exporter.cli.commands import main
from tests.support.cli import Run, cli

# The 1.0.x request: Sonnet 4 (3 / 15 / 0.30 / 3.75 per MTok), 4 input, 250 output, 18,000 cache reads,
# 12,000 cache writes with no TTL split, so priced as 5 m writes:
# 4*3 + 250*15 + 18000*0.3 + 12000*3.75 = 12+3750+5400+45000 = 54,162 -> $0.054162.
# Its own costUSD says $0.081162 (the writes went to the 1 h cache, 12000*6 = 72,000).
LEGACY_CALCULATED = 0.054162
LEGACY_COST_USD = 0.081162
LEGACY_TOKENS = 4 + 250 + 18_000 + 12_000
# The 2.1.x request: Haiku 4.5 (1 / 5 / 0.10 / 1.25 / 2): 10*1 + 135*5 + 22820*0.1 + 9907*2 = 22,781 -> $0.022781
MODERN_COST = 0.022781
MODERN_TOKENS = 10 + 135 + 22_820 + 9_907


def legacy_line(msg: str = "msg_01LegacyA", ts: str = "2025-06-03T09:15:02.113Z") -> bytes:
    """A Claude Code 1.0.3 assistant line: one line per response, top-level costUSD, no requestId."""
    record = {
        "parentUuid": "3f0c2a1e-8d1b-4f43-9d7e-0b5f6c1a2e11",
        "isSidechain": False,
        "userType": "external",
        "cwd": "/home/dev/acme-api",
        "sessionId": "legacy-session",
        "version": "1.0.3",
        "type": "assistant",
        "message": {
            "id": msg,
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-20250514",
            "content": [{"type": "text", "text": "Done."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": 4,
                "cache_creation_input_tokens": 12_000,
                "cache_read_input_tokens": 18_000,
                "output_tokens": 250,
                "service_tier": "standard",
            },
        },
        "costUSD": LEGACY_COST_USD,
        "durationMs": 5123,
        "uuid": "9a7d6c5b-4e3f-4a2b-8c1d-0e9f8a7b6c5d",
        "timestamp": ts,
    }
    return orjson.dumps(record) + b"\n"


def modern_line(ts: str = "2025-06-03T11:00:00.000Z") -> bytes:
    """A Claude Code 2.1.x assistant line: cache-write split, speed, no costUSD."""
    record = {
        "parentUuid": "8acc0000-0000-0000-0000-000000000001",
        "isSidechain": False,
        "type": "assistant",
        "uuid": "dc350000-0000-0000-0000-000000000001",
        "timestamp": ts,
        "sessionId": "modern-session",
        "requestId": "req_011CeDqModern",
        "version": "2.1.197",
        "cwd": "/home/dev/acme-api",
        "userType": "external",
        "entrypoint": "cli",
        "message": {
            "id": "msg_011CeDqModern",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [{"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "pytest -q"}}],
            "stop_reason": "tool_use",
            "usage": {
                "input_tokens": 10,
                "cache_creation_input_tokens": 9_907,
                "cache_read_input_tokens": 22_820,
                "output_tokens": 135,
                "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 9_907},
                "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                "service_tier": "standard",
                "speed": "standard",
            },
        },
    }
    return orjson.dumps(record) + b"\n"


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    folder = tmp_path / "claude/projects/-home-dev-acme-api"
    folder.mkdir(parents=True)
    (folder / "legacy-session.jsonl").write_bytes(legacy_line())
    (folder / "modern-session.jsonl").write_bytes(modern_line())

    return cli(tmp_path, monkeypatch, in_folders=True)


def costs(run: Run, *flags: str) -> tuple[float, dict[str, float]]:
    """The day's total cost and each session's, from `report daily --json` and `report session --json`."""
    [day] = orjson.loads(run("report", "daily", "--json", *flags))["daily"]
    sessions = orjson.loads(run("report", "session", "--json", *flags))["sessions"]
    return day["totalCost"], {s["sessionId"]: s["totalCost"] for s in sessions}


def test_by_default_a_legacy_line_is_costed_from_its_own_cost_usd_and_a_modern_one_from_tokens(run: Run) -> None:
    total, sessions = costs(run)
    assert total == pytest.approx(LEGACY_COST_USD + MODERN_COST, abs=1e-9)
    assert sessions == {
        "legacy-session": pytest.approx(LEGACY_COST_USD, abs=1e-9),
        "modern-session": pytest.approx(MODERN_COST, abs=1e-9),
    }
    assert costs(run, "--mode", "auto") == (total, sessions)


def test_calculate_mode_costs_the_legacy_line_from_its_tokens(run: Run) -> None:
    total, sessions = costs(run, "--mode", "calculate")
    assert total == pytest.approx(LEGACY_CALCULATED + MODERN_COST, abs=1e-9)
    assert sessions == {
        "legacy-session": pytest.approx(LEGACY_CALCULATED, abs=1e-9),
        "modern-session": pytest.approx(MODERN_COST, abs=1e-9),
    }


def test_the_environment_and_the_config_file_choose_the_mode_too(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_USAGE_EXPORTER_PRICING_MODE", "calculate")
    assert costs(run)[1]["legacy-session"] == pytest.approx(LEGACY_CALCULATED, abs=1e-9)
    monkeypatch.delenv("CLAUDE_USAGE_EXPORTER_PRICING_MODE")
    config = tmp_path / "config.yaml"
    config.write_text("pricing: {mode: calculate}\n")
    assert costs(run, "--config", str(config))[1]["legacy-session"] == pytest.approx(LEGACY_CALCULATED, abs=1e-9)
    config.write_text("timezone: UTC\n")
    assert costs(run, "--config", str(config))[1]["legacy-session"] == pytest.approx(LEGACY_COST_USD, abs=1e-9)


def test_reported_mode_counts_only_the_sources_own_costs_and_the_rest_as_unpriced(run: Run) -> None:
    [day] = orjson.loads(run("report", "daily", "--json", "--mode", "reported"))["daily"]
    assert (day["totalCost"], day["unpricedTokens"], day["totalTokens"]) == (
        pytest.approx(LEGACY_COST_USD, abs=1e-9),
        MODERN_TOKENS,
        LEGACY_TOKENS + MODERN_TOKENS,
    )


def test_explain_shows_the_legacy_lines_cost_usd_beside_the_cost_from_tokens(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "claude/projects/-home-dev-acme-api/legacy-session.jsonl"
    [row] = orjson.loads(run("explain", str(path), "--json"))
    assert (row["cost"], row["reportedCost"], row["speed"]) == (
        pytest.approx(LEGACY_CALCULATED, abs=1e-9),
        LEGACY_COST_USD,
        "standard",
    )


def test_check_config_names_auto_as_the_default_mode(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("timezone: UTC\n")
    result = CliRunner().invoke(main, ["check-config", str(config)])
    assert result.exit_code == 0, result.output
    assert "; pricing auto, 0 override(s);" in result.output


def test_a_config_override_with_a_fast_multiplier_prices_fast_requests(run: Run, tmp_path: Path) -> None:
    folder = tmp_path / "claude/projects/-home-dev-acme-api"
    fast = modern_line("2025-06-03T12:00:00.000Z").replace(b'"speed":"standard"', b'"speed":"fast"')
    (folder / "fast-session.jsonl").write_bytes(
        fast.replace(b"modern-session", b"fast-session")
        .replace(b"msg_011CeDqModern", b"msg_011CeDqFast")
        .replace(b"req_011CeDqModern", b"req_011CeDqFast")
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        "pricing: {overrides: [{model: 'claude-haiku-4-5*', input: 1, output: 5, cache_read: 0.1,"
        " cache_write_5m: 1.25, cache_write_1h: 2, fast_multiplier: 3}]}\n"
    )
    assert costs(run, "--config", str(config))[1]["fast-session"] == pytest.approx(3 * MODERN_COST, abs=1e-9)
