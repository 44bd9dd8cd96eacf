"""Plan usage from the status line's snapshot, the loop keeping budgets current between passes, and the
whole path with real processes: `statusline` records, `serve` exposes, `statusline` shows the summary."""

from __future__ import annotations

import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from exporter.daemon.gauges import plan_points
from exporter.daemon.loop import WINDOWS_EVERY, Daemon, Options
from exporter.pipeline import Setup
from exporter.reports.budgets import BudgetSpec
from tests.support.daemon import clean_env, serving
from tests.support.exposition import samples
from tests.support.lines import assistant_line, write
from tests.support.waiting import WAIT
from tests.test_serve import Clock

NOW = 1_800_000_000.0


def snapshot(state: Path, **windows: dict[str, float]) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "statusline.json").write_bytes(orjson.dumps({"version": 1, "rate_limits": windows}))


def test_a_current_plan_snapshot_gives_utilization_and_reset(tmp_path: Path) -> None:
    snapshot(
        tmp_path,
        five_hour={"used_percentage": 42.5, "resets_at": NOW + 600, "recorded_at": NOW - 60},
        seven_day={"used_percentage": 7, "resets_at": NOW + 86400, "recorded_at": NOW - 3600},
    )
    five, seven = (("window", "five_hour"),), (("window", "seven_day"),)
    assert plan_points(tmp_path, NOW) == {
        "claude_usage_plan_utilization_ratio": {five: 0.425, seven: 0.07},
        "claude_usage_plan_reset_timestamp_seconds": {five: NOW + 600, seven: NOW + 86400},
        "claude_usage_plan_snapshot_age_seconds": {five: 60.0, seven: 3600.0},
        "claude_usage_plan_snapshot_stale": {five: 0.0, seven: 0.0},
    }


@pytest.mark.parametrize(
    "window",
    [
        {"used_percentage": 90, "resets_at": NOW - 1, "recorded_at": NOW - 600},  # the window has reset since
        {"used_percentage": 90, "resets_at": NOW + 600, "recorded_at": NOW - 5 * 3600 - 1},  # older than 5 h
    ],
)
def test_a_stale_plan_snapshot_shows_its_age_not_its_figures(tmp_path: Path, window: dict[str, float]) -> None:
    snapshot(tmp_path, five_hour=window)
    five = (("window", "five_hour"),)
    assert plan_points(tmp_path, NOW) == {
        "claude_usage_plan_utilization_ratio": {},
        "claude_usage_plan_reset_timestamp_seconds": {},
        "claude_usage_plan_snapshot_age_seconds": {five: NOW - window["recorded_at"]},
        "claude_usage_plan_snapshot_stale": {five: 1.0},
    }


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[1, 2]",
        b'{"rate_limits": {"five_hour": "x"}}',
        b'{"rate_limits": {"five_hour": {"used_percentage": "NaN", "resets_at": 1, "recorded_at": 1}}}',
    ],
)
def test_no_or_a_garbled_snapshot_gives_no_plan_points(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "statusline.json").write_bytes(content)
    assert all(points == {} for points in plan_points(tmp_path, NOW).values())


def test_between_passes_the_loop_recomputes_budgets_only_when_they_are_due(tmp_path: Path, claude_dir: Path) -> None:
    clock = Clock()
    budget = BudgetSpec("daily", "day", Decimal(5))
    core = Setup(state_dir=tmp_path / "state", roots=(claude_dir,), timezone="UTC", budgets=(budget,))
    daemon = Daemon(core, Options(), clock=clock)
    daemon.step()
    computed = []
    real = daemon._windows

    def counting(ledger: object) -> None:
        computed.append(clock.now)
        real(daemon.app.ledger)

    daemon._windows = counting  # type: ignore[method-assign]
    daemon.tick()
    clock.now += WINDOWS_EVERY
    daemon.tick()
    daemon.close()
    assert computed == [1000.0 + WINDOWS_EVERY]
    limit = daemon.health.windows["claude_usage_budget_limit_usd"]
    assert limit == {(("budget", "daily"), ("window", "day")): 5.0}


def console_script() -> list[str]:
    script = Path(sys.executable).parent / "claude-usage-exporter"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "exporter"]


@pytest.mark.slow
def test_statusline_records_and_serve_exposes_and_the_line_shows_the_summary(tmp_path: Path, claude_dir: Path) -> None:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(now - 1))
    # Haiku 4.5: 1 M input tokens is $1.00.
    write(
        claude_dir / "projects" / "p" / "s.jsonl",
        assistant_line("msg_1", "req_1", stamp, "claude-haiku-4-5-20251001", input=1_000_000, output=0),
    )
    config = tmp_path / "config.yaml"
    config.write_text("timezone: UTC\nbudgets:\n  - {name: daily, window: day, limit_usd: 20}\n")
    state = tmp_path / "state"
    stdin = {
        "session_id": "s",
        "model": {"id": "claude-haiku-4-5-20251001", "display_name": "Haiku 4.5"},
        "cost": {"total_cost_usd": 0.5},
        "rate_limits": {"five_hour": {"used_percentage": 42, "resets_at": int(now) + 3600}},
    }
    with serving(state, [claude_dir], "--config", str(config)) as daemon:
        env = clean_env()
        line = subprocess.run(
            [*console_script(), "statusline", "--state-dir", str(state)],
            input=orjson.dumps(stdin),
            capture_output=True,
            env=env,
            timeout=WAIT,
            check=True,
        ).stdout.decode()
        text = daemon.metrics()
        page = daemon.get("/")[2].decode()
    assert samples(text, "claude_usage_plan_utilization_ratio") == {'{window="five_hour"}': 0.42}
    assert samples(text, "claude_usage_plan_reset_timestamp_seconds") == {'{window="five_hour"}': int(now) + 3600}
    assert samples(text, "claude_usage_plan_snapshot_stale") == {'{window="five_hour"}': 0.0}
    assert samples(text, "claude_usage_budget_spend_usd") == {'{budget="daily",window="day"}': 1.0}
    assert samples(text, "claude_usage_budget_limit_usd") == {'{budget="daily",window="day"}': 20.0}
    assert samples(text, "claude_usage_block_cost_usd") == {"": 1.0}
    assert (
        '<tr class="ok"><td>daily</td><td>day</td><td class="usd" data-usd="1.000000">$1.00</td>'
        '<td class="usd">$20.00</td>'
    ) in page
    assert line.startswith("Haiku 4.5 · session $0.50 · today $1.00 / $20.00 · block $1.00 (")
    assert line.endswith(" left) · 5h 42%\n")
