"""The metric contract: a golden exposition, promtool's approval, label policy, and the contract command."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from exporter.cli.commands import main
from exporter.metrics.contract import CONTRACT
from exporter.metrics.exposition import OPENMETRICS, TEXT, Exposition, Health, negotiate, read_snapshot
from exporter.metrics.points import OTHER, LabelPolicy, read_points
from exporter.pipeline import Pipeline
from tests.support.lines import CWD, assistant_line, line, user_line, write

GOLDEN = Path(__file__).parent / "golden" / "metrics-once.txt"
BUILD = {"version": "0.0.0", "pricing_source": "genai-prices", "pricing_version": "0.2.3"}


def small_corpus(claude_dir: Path) -> None:
    """Two projects, a subagent, a tool, an MCP tool, a model switch, an unpriced model, bad lines."""
    write(
        claude_dir / "projects" / "-home-dev-notes-app" / "s1.jsonl",
        user_line(ts="2026-11-25T20:59:00.000Z"),
        assistant_line(
            "msg_1",
            "req_1",
            "2026-11-25T21:00:00.000Z",
            input=10,
            output=100,
            cache_read=2000,
            cache_5m=300,
            cache_1h=40,
            tools=["Read"],
        ),
        assistant_line(
            "msg_1",
            "req_1",
            "2026-11-25T21:00:00.000Z",
            input=10,
            output=100,
            cache_read=2000,
            cache_5m=300,
            cache_1h=40,
            tools=["mcp__github__create_issue"],
        ),
        assistant_line("msg_2", "req_2", "2026-11-25T21:01:00.000Z", "claude-opus-4-1-20250805", output=7),
        assistant_line(
            "msg_3",
            "req_3",
            "2026-11-25T21:02:00.000Z",
            "claude-haiku-4-5",
            agent_id="a1",
            cache_read=900_000,
            cache_5m=200_000,
        ),
        b'{"type":"assistant","message":{"usage":{"input_tokens":"ten"}}}\n',
        b"\x00\xff garbage\n",
    )
    write(
        claude_dir / "projects" / "-home-dev-acme" / "s2.jsonl",
        line(
            message={"id": "msg_4", "model": "claude-future-9", "usage": {"input_tokens": 5, "output_tokens": 6}},
            cwd="/home/dev/acme",
            sessionId="s2",
        ),
    )


def once(claude_dir: Path, tmp_path: Path, *args: str) -> str:
    env = {"TZ": "UTC", "HOME": str(tmp_path)}
    result = CliRunner().invoke(
        main,
        ["serve", "--once", "--state-dir", str(tmp_path / "state"), "--claude-dir", str(claude_dir), *args],
        env=env,
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_serve_once_prints_the_golden_exposition(claude_dir: Path, tmp_path: Path) -> None:
    small_corpus(claude_dir)
    text = once(claude_dir, tmp_path)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


@pytest.mark.slow
def test_the_golden_exposition_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: .ci/run installs the Debian package prometheus")
        pytest.skip("PROMTOOL MISSING: install the Debian package prometheus to run this test")
    checked = subprocess.run([promtool, "check", "metrics"], input=GOLDEN.read_bytes(), capture_output=True)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, b"", b"")


def test_every_metric_exposed_is_in_the_contract_with_its_type_and_help() -> None:
    declared = {s.name: s for s in CONTRACT}
    exposed: dict[str, tuple[str, str]] = {}
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", GOLDEN.read_text(), re.M):
        help_text = re.search(rf"^# HELP {name} (.*)$", GOLDEN.read_text(), re.M)
        assert help_text is not None
        exposed[name] = (kind, help_text[1])
    # Shown only with budgets configured, during a 5-hour block, or after the status line recorded the
    # plan usage (tests/test_windows.py sees them exposed by a real `serve`); or in team mode, with the
    # OTLP receiver or push on (tests/test_team.py, tests/test_push.py).
    conditional = {s.name for s in CONTRACT if s.name.startswith(("claude_usage_budget_", "claude_usage_plan_"))}
    conditional |= {"claude_usage_block_start_timestamp_seconds", "claude_usage_block_end_timestamp_seconds"}
    conditional |= {
        "claude_usage_lines_of_code_total",
        "claude_usage_commits_total",
        "claude_usage_pull_requests_total",
        "claude_usage_active_time_seconds_total",
        "claude_usage_exporter_otlp_requests_total",
        "claude_usage_exporter_otlp_pushes_total",
    }
    # Only with the Admin API source enabled (tests/test_billing_e2e.py sees them exposed by a real `serve`).
    conditional |= {s.name for s in CONTRACT if s.name.startswith(("claude_usage_bill", "claude_usage_analytics_"))}
    assert exposed == {name: (s.kind, s.help) for name, s in declared.items() if name not in conditional}


def test_the_metrics_command_prints_the_contract_from_the_code() -> None:
    result = CliRunner().invoke(main, ["metrics", "--json"])
    assert result.exit_code == 0
    assert orjson.loads(result.stdout) == [
        {"name": s.name, "type": s.kind, "unit": s.unit, "labels": list(s.labels), "help": s.help} for s in CONTRACT
    ]


def test_no_label_is_named_type_and_every_usage_label_set_is_bounded() -> None:
    labels = {label for spec in CONTRACT for label in spec.labels}
    assert "type" not in labels
    assert not labels & {"session_id", "session", "path", "cwd", "email", "prompt", "user"}


def points_of(make_app: Callable[..., Pipeline], claude_dir: Path, policy: LabelPolicy) -> dict[str, float]:
    small_corpus(claude_dir)
    app = make_app()
    app.refresh()
    found: dict[str, float] = {}
    for labels, value in read_points(app.ledger, policy)["claude_usage_requests_total"].items():
        project = dict(labels)["project"]
        found[project] = found.get(project, 0) + value
    return found


def test_project_labels_are_names_by_default(make_app: Callable[..., Pipeline], claude_dir: Path) -> None:
    assert points_of(make_app, claude_dir, LabelPolicy()) == {"notes-app": 3, "acme": 1}


def test_project_labels_can_be_hashed(make_app: Callable[..., Pipeline], claude_dir: Path) -> None:
    assert points_of(make_app, claude_dir, LabelPolicy(project="hash")) == {"95f4c7fd5212": 3, "822b33ad87c1": 1}


def test_project_labels_can_be_left_out(make_app: Callable[..., Pipeline], claude_dir: Path) -> None:
    assert points_of(make_app, claude_dir, LabelPolicy(project="off")) == {"": 4}


def test_projects_past_the_cap_overflow_to_other_in_first_seen_order(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    assert points_of(make_app, claude_dir, LabelPolicy(max_projects=1)) == {"notes-app": 3, OTHER: 1}


def test_mcp_tools_collapse_to_their_server(make_app: Callable[..., Pipeline], claude_dir: Path) -> None:
    small_corpus(claude_dir)
    app = make_app()
    app.refresh()
    tools = read_points(app.ledger, LabelPolicy())["claude_usage_tool_calls_total"]
    assert {dict(k)["tool"]: v for k, v in tools.items()} == {"Read": 1, "mcp__github": 1}


def test_openmetrics_is_served_when_asked_for_with_one_eof(make_app: Callable[..., Pipeline], claude_dir: Path) -> None:
    small_corpus(claude_dir)
    app = make_app()
    app.refresh()
    exposition = Exposition(Health(source_up={"transcripts": 1}), BUILD)
    exposition.update(read_snapshot(app.ledger, LabelPolicy(), BUILD))
    body = exposition.render(negotiate("application/openmetrics-text; version=1.0.0,text/plain;q=0.5")).decode()
    assert body.endswith("\n# EOF\n") and body.count("# EOF") == 1
    assert "# UNIT claude_usage_cost_usd usd" in body.splitlines()
    assert negotiate(None) == negotiate("text/plain") == TEXT != OPENMETRICS
    exposition.close()


def test_the_project_of_the_sample_lines_is_the_last_folder_of_cwd() -> None:
    assert CWD.rsplit("/", 1)[1] == "notes-app"  # the label test above depends on it
