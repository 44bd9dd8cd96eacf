"""The `statusline` command: the line for each Claude Code version, what it records, and that it never fails loudly."""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from exporter.sources import statusline
from exporter.sources.statusline import (
    FALLBACK,
    SNAPSHOT,
    SUMMARY,
    load_json,
    render,
    state_dir_from,
    write_atomic,
)

FIXTURES = Path(__file__).parent / "fixtures" / "statusline"
SCRIPT = Path(sys.executable).parent / "claude-usage-exporter"
# 2026-01-01T10:46:00Z: inside the summary fixture's day (Europe/Berlin) and its block, which ends at 13:00Z.
NOW = 1767264360.0
FIVE_HOUR_RESET = 1767272400.0  # 2026-01-01T13:00:00Z
SEVEN_DAY_RESET = 1767744000.0  # 2026-01-07T00:00:00Z
SPEND = "today $4.56 / $20.00 · block $3.21 (2h 14m left)"
WEEK = "7d 18% (5d 13h left)"  # 17.5% of the seven-day window, which resets 5 days 13 hours 14 minutes after NOW
CONTEXT = "ctx 8%"


def sample(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def edited(name: str, **fields: Any) -> bytes:
    payload = json.loads(sample(name))
    payload.update(fields)
    return json.dumps(payload).encode()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def with_summary(state: Path) -> Path:
    state.mkdir()
    shutil.copy(FIXTURES / "summary.json", state / SUMMARY)
    return state


def write_summary(state: Path, **changes: Any) -> None:
    summary = json.loads((FIXTURES / "summary.json").read_text())
    summary.update(changes)
    state.mkdir(exist_ok=True)
    (state / SUMMARY).write_text(json.dumps(summary))


def recorded(state: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((state / SNAPSHOT).read_text())
    return loaded


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE_USAGE_EXPORTER_", "XDG_"))}
    env["HOME"] = str(tmp_path / "home")
    return env


def run_script(stdin: bytes, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(SCRIPT), "statusline", *args], input=stdin, capture_output=True, env=env, timeout=30)


# --- the line -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("1.0.x-minimal.json", f"claude-sonnet-4-20250514 · {SPEND}"),
        ("1.0.x.json", f"Sonnet 4 · {SPEND}"),
        ("2.0.x.json", f"Sonnet 4.5 · session $1.23 · {SPEND}"),
        ("2.1.x.json", f"Opus 4.5 · session $0.87 · {SPEND} · 5h 29% · {WEEK} · {CONTEXT}"),
        ("2.1.x-strings.json", f"Opus 4.5 · session $0.87 · {SPEND} · 5h 63% · 7d 21% (5d 13h left) · {CONTEXT}"),
        ("2.1.x-new-session.json", f"Opus 4.5 · session $0.00 · {SPEND} · 5h 29% · {WEEK}"),
        ("2.0.x-context.json", f"Sonnet 4.5 · session $1.23 · {SPEND} · ctx 40%"),
    ],
)
def test_each_claude_code_version_renders_its_line_with_the_daemons_summary(
    with_summary: Path, name: str, line: str
) -> None:
    assert render(sample(name), str(with_summary), NOW) == line


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("1.0.x-minimal.json", "claude-sonnet-4-20250514"),
        ("1.0.x.json", "Sonnet 4"),
        ("2.0.x.json", "Sonnet 4.5 · session $1.23"),
        ("2.1.x.json", f"Opus 4.5 · session $0.87 · 5h 29% · {WEEK} · {CONTEXT}"),
    ],
)
def test_without_a_summary_the_line_comes_from_stdin_alone(state: Path, name: str, line: str) -> None:
    assert render(sample(name), str(state), NOW) == line


def test_a_garbled_summary_is_the_same_as_none(state: Path) -> None:
    state.mkdir()
    (state / SUMMARY).write_text('{"today": {"start": 1767222000, "end"')
    assert render(sample("2.0.x.json"), str(state), NOW) == "Sonnet 4.5 · session $1.23"


def test_a_summary_from_yesterday_shows_no_spend_for_today(state: Path) -> None:
    write_summary(state, today={"start": 1767222000 - 86400, "end": 1767222000, "cost_usd": 9.99})
    line = render(sample("2.0.x.json"), str(state), NOW)
    assert line == "Sonnet 4.5 · session $1.23 · block $3.21 (2h 14m left)"


def test_a_summary_from_tomorrow_shows_no_spend_for_today(state: Path) -> None:
    write_summary(state, today={"start": 1767308400, "end": 1767308400 + 86400, "cost_usd": 9.99})
    assert render(sample("1.0.x.json"), str(state), NOW) == "Sonnet 4 · block $3.21 (2h 14m left)"


def test_a_block_that_has_ended_is_left_out(with_summary: Path) -> None:
    line = render(sample("2.0.x.json"), str(with_summary), FIVE_HOUR_RESET)
    assert line == "Sonnet 4.5 · session $1.23 · today $4.56 / $20.00"


def test_no_block_in_the_summary_leaves_the_block_out(state: Path) -> None:
    write_summary(state, block=None)
    assert render(sample("1.0.x.json"), str(state), NOW) == "Sonnet 4 · today $4.56 / $20.00"


def test_the_time_left_in_a_block_rounds_up_to_the_minute(with_summary: Path) -> None:
    assert render(sample("1.0.x.json"), str(with_summary), FIVE_HOUR_RESET - 59.5).endswith("block $3.21 (1m left)")
    assert render(sample("1.0.x.json"), str(with_summary), FIVE_HOUR_RESET - 3600).endswith("block $3.21 (1h 0m left)")


def test_without_a_daily_budget_today_shows_the_spend_alone(state: Path) -> None:
    write_summary(state, budgets=[{"name": "weekly", "window": "week", "limit_usd": 100.0, "filtered": False}])
    assert render(sample("1.0.x.json"), str(state), NOW) == "Sonnet 4 · today $4.56 · block $3.21 (2h 14m left)"


def test_a_filtered_daily_budget_is_not_the_daily_budget(state: Path) -> None:
    write_summary(state, budgets=[{"name": "api", "window": "day", "limit_usd": 5.0, "filtered": True}])
    assert render(sample("1.0.x.json"), str(state), NOW) == "Sonnet 4 · today $4.56 · block $3.21 (2h 14m left)"


def test_a_summary_with_wrong_types_is_read_where_it_makes_sense(state: Path) -> None:
    write_summary(state, today={"start": "x", "end": None, "cost_usd": 1}, budgets="daily", block=[1, 2])
    assert render(sample("2.0.x.json"), str(state), NOW) == "Sonnet 4.5 · session $1.23"


def test_the_model_id_stands_in_for_a_missing_display_name(state: Path) -> None:
    raw = edited("1.0.x.json", model={"id": "claude-opus-4-1-20250805", "display_name": ""})
    assert render(raw, str(state), NOW) == "claude-opus-4-1-20250805"


def test_control_characters_in_the_model_name_never_reach_the_terminal(state: Path) -> None:
    raw = edited("1.0.x.json", model={"display_name": "Opus\n\x1b[31m 4.5\r"})
    assert render(raw, str(state), NOW) == "Opus[31m 4.5"


def test_an_input_with_nothing_to_show_prints_the_fallback_line(state: Path) -> None:
    assert render(b"{}", str(state), NOW) == FALLBACK


@pytest.mark.parametrize(
    ("context", "shown"),
    [
        ({"used_percentage": 73.4, "current_usage": None, "context_window_size": 200000}, "ctx 73%"),
        ({"used_percentage": "12", "context_window_size": 200000}, "ctx 12%"),
        # Only the last request's input counts: the session totals and output are not what the window holds.
        (
            {
                "total_input_tokens": 900000,
                "context_window_size": 1000000,
                "current_usage": {"input_tokens": 5, "output_tokens": 99999, "cache_read_input_tokens": 249995},
            },
            "ctx 25%",
        ),
        ({"used_percentage": None, "current_usage": {"input_tokens": 10}, "context_window_size": 0}, None),
        ({"used_percentage": -3, "current_usage": None}, None),
        ({"used_percentage": "full"}, None),
        ({"current_usage": {"input_tokens": -5}, "context_window_size": 200000}, None),
        ({"current_usage": {"input_tokens": True}, "context_window_size": 200000}, None),
        ("80%", None),
    ],
)
def test_the_context_window_fill_comes_from_its_percentage_else_the_last_requests_tokens(
    state: Path, context: object, shown: str | None
) -> None:
    raw = edited("2.0.x.json", context_window=context)
    line = "Sonnet 4.5 · session $1.23"
    assert render(raw, str(state), NOW) == (f"{line} · {shown}" if shown else line)


@pytest.mark.parametrize(
    ("template", "line"),
    [
        ("{model} · {today} · {block} · {5h} · {7d} · {context}", f"Opus 4.5 · {SPEND} · 5h 29% · {WEEK} · {CONTEXT}"),
        ("{context} | {7d}", f"{CONTEXT} | {WEEK}"),
        ("[{model}] {session}", "[Opus 4.5] session $0.87"),
        # An unknown field is empty, and so is the separator that would be left dangling by it.
        ("{model} · {weather} · {5h}", "Opus 4.5 · 5h 29%"),
        ("{weather} · {model}", "Opus 4.5"),
        ("{model} ctx: {context}", f"Opus 4.5 ctx: {CONTEXT}"),
        ("{model}\n·{5h} {", "Opus 4.5·5h 29% {"),  # no newline reaches the status bar; a lone brace is text
        ("{weather}", FALLBACK),
    ],
)
def test_a_format_template_gives_the_line_its_own_shape(with_summary: Path, template: str, line: str) -> None:
    assert render(sample("2.1.x.json"), str(with_summary), NOW, template) == line


def test_a_missing_part_in_a_template_leaves_no_doubled_separator(state: Path) -> None:
    template = "{model} · {today} · {block} · {5h} · {7d} · {context}"
    assert render(sample("2.0.x.json"), str(state), NOW, template) == "Sonnet 4.5"


def test_a_plan_window_already_reset_is_not_shown_from_the_recorded_file(state: Path) -> None:
    render(sample("2.1.x.json"), str(state), NOW)
    assert (
        render(sample("2.0.x.json"), str(state), FIVE_HOUR_RESET) == "Sonnet 4.5 · session $1.23 · 7d 18% (5d 11h left)"
    )
    assert render(sample("2.0.x.json"), str(state), SEVEN_DAY_RESET) == "Sonnet 4.5 · session $1.23"
    assert recorded(state)["rate_limits"]["five_hour"]["resets_at"] == FIVE_HOUR_RESET


# --- what is recorded for the daemon --------------------------------------------------------------


def test_rate_limits_are_recorded_as_exact_json(state: Path) -> None:
    render(sample("2.1.x.json"), str(state), NOW)
    assert recorded(state) == {
        "version": 1,
        "recorded_at": NOW,
        "claude_code_version": "2.1.14",
        "session_id": "e7c1a9d0-2f4b-4e8a-9d6c-0b1a2c3d4e5f",
        "session_cost_usd": 0.8712,
        "model": "claude-opus-4-5-20251101",
        "rate_limits": {
            "five_hour": {"used_percentage": 28.999999999999996, "resets_at": FIVE_HOUR_RESET, "recorded_at": NOW},
            "seven_day": {"used_percentage": 17.5, "resets_at": SEVEN_DAY_RESET, "recorded_at": NOW},
        },
    }


def test_percentages_and_reset_times_as_strings_are_recorded_as_numbers(state: Path) -> None:
    render(sample("2.1.x-strings.json"), str(state), NOW)
    assert recorded(state)["rate_limits"] == {
        "five_hour": {"used_percentage": 63.4, "resets_at": FIVE_HOUR_RESET, "recorded_at": NOW},
        "seven_day": {"used_percentage": 21.0, "resets_at": SEVEN_DAY_RESET, "recorded_at": NOW},
    }


def test_an_old_input_records_nulls_for_what_it_does_not_send(state: Path) -> None:
    render(sample("1.0.x-minimal.json"), str(state), NOW)
    assert recorded(state) == {
        "version": 1,
        "recorded_at": NOW,
        "claude_code_version": None,
        "session_id": "0c4a7f6e-3b1d-4c55-9a1e-7d2f1c9b8e01",
        "session_cost_usd": None,
        "model": "claude-sonnet-4-20250514",
        "rate_limits": {},
    }


def test_a_later_input_without_rate_limits_keeps_the_recorded_windows(state: Path) -> None:
    render(sample("2.1.x.json"), str(state), NOW)
    line = render(sample("2.0.x.json"), str(state), NOW + 60)
    assert line == f"Sonnet 4.5 · session $1.23 · 5h 29% · {WEEK}"
    snapshot = recorded(state)
    assert (snapshot["recorded_at"], snapshot["claude_code_version"], snapshot["session_cost_usd"]) == (
        NOW + 60,
        "2.0.37",
        1.2345,
    )
    assert snapshot["rate_limits"] == {
        "five_hour": {"used_percentage": 28.999999999999996, "resets_at": FIVE_HOUR_RESET, "recorded_at": NOW},
        "seven_day": {"used_percentage": 17.5, "resets_at": SEVEN_DAY_RESET, "recorded_at": NOW},
    }


def test_each_window_missing_from_a_later_input_keeps_its_own_recorded_at(state: Path) -> None:
    render(sample("2.1.x.json"), str(state), NOW)
    later = edited("2.1.x.json", rate_limits={"five_hour": {"used_percentage": 50, "resets_at": FIVE_HOUR_RESET}})
    assert render(later, str(state), NOW + 120) == f"Opus 4.5 · session $0.87 · 5h 50% · {WEEK} · {CONTEXT}"
    assert recorded(state)["rate_limits"] == {
        "five_hour": {"used_percentage": 50.0, "resets_at": FIVE_HOUR_RESET, "recorded_at": NOW + 120},
        "seven_day": {"used_percentage": 17.5, "resets_at": SEVEN_DAY_RESET, "recorded_at": NOW},
    }


@pytest.mark.parametrize(
    "window",
    [
        {"used_percentage": math.nan, "resets_at": FIVE_HOUR_RESET},
        {"used_percentage": "NaN", "resets_at": FIVE_HOUR_RESET},
        {"used_percentage": math.inf, "resets_at": FIVE_HOUR_RESET},
        {"used_percentage": -1, "resets_at": FIVE_HOUR_RESET},
        {"used_percentage": 1000.5, "resets_at": FIVE_HOUR_RESET},
        {"used_percentage": True, "resets_at": FIVE_HOUR_RESET},
        {"used_percentage": None, "resets_at": FIVE_HOUR_RESET},
        {"used_percentage": "42%", "resets_at": FIVE_HOUR_RESET},
        {"used_percentage": 42, "resets_at": "in two hours"},
        {"used_percentage": 42, "resets_at": "2026-13-01T00:00:00Z"},
        {"used_percentage": 42, "resets_at": -5},
        {"used_percentage": 42, "resets_at": 10**400},
        {"used_percentage": 42},
        "42%",
    ],
)
def test_an_invalid_window_is_dropped_and_the_recorded_one_kept(state: Path, window: object) -> None:
    render(sample("2.1.x.json"), str(state), NOW)
    raw = edited("2.1.x.json", rate_limits={"five_hour": window})
    assert render(raw, str(state), NOW + 60) == f"Opus 4.5 · session $0.87 · 5h 29% · {WEEK} · {CONTEXT}"
    assert recorded(state)["rate_limits"]["five_hour"] == {
        "used_percentage": 28.999999999999996,
        "resets_at": FIVE_HOUR_RESET,
        "recorded_at": NOW,
    }


def test_a_garbled_previous_snapshot_is_replaced(state: Path) -> None:
    state.mkdir()
    (state / SNAPSHOT).write_text('{"rate_limits": {"five_hour": {"used_percentage": 1, "resets_at": "x"}}, "se')
    assert render(sample("2.0.x.json"), str(state), NOW) == "Sonnet 4.5 · session $1.23"
    assert recorded(state)["rate_limits"] == {}


def test_a_negative_session_cost_is_not_recorded_or_shown(state: Path) -> None:
    raw = edited("2.0.x.json", cost={"total_cost_usd": -3})
    assert render(raw, str(state), NOW) == "Sonnet 4.5"
    assert recorded(state)["session_cost_usd"] is None


def test_the_recorded_file_holds_no_path_or_working_directory(state: Path) -> None:
    render(sample("2.1.x.json"), str(state), NOW)
    written = (state / SNAPSHOT).read_text()
    for private in ("secret", "/home/dev", "transcript", "cwd", "workspace"):
        assert private not in written
    assert set(recorded(state)) == {
        "version",
        "recorded_at",
        "claude_code_version",
        "session_id",
        "session_cost_usd",
        "model",
        "rate_limits",
    }


def test_the_recorded_file_is_private_to_its_owner(state: Path) -> None:
    render(sample("2.1.x.json"), str(state), NOW)
    assert stat.S_IMODE((state / SNAPSHOT).stat().st_mode) == 0o600
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert sorted(os.listdir(state)) == [SNAPSHOT]


def test_an_unwritable_state_dir_still_gives_the_line(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    line = render(sample("2.1.x.json"), str(tmp_path / "a-file" / "state"), NOW)
    assert line == f"Opus 4.5 · session $0.87 · 5h 29% · {WEEK} · {CONTEXT}"


# --- the helpers the daemon imports ---------------------------------------------------------------


def test_write_atomic_replaces_the_file_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old")
    (tmp_path / f"summary.json.{os.getpid()}.tmp").write_text("left by a crash")
    write_atomic(str(target), b'{"version": 1}')
    assert target.read_bytes() == b'{"version": 1}'
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["summary.json"]


@pytest.mark.parametrize("content", [None, b"", b"{", b"[1, 2]", b"null", b"\xff\xfe{}", b"[" * 100_000])
def test_load_json_is_none_for_a_missing_garbled_or_non_object_file(tmp_path: Path, content: bytes | None) -> None:
    if content is not None:
        (tmp_path / "f.json").write_bytes(content)
    assert load_json(str(tmp_path / "f.json")) is None


def test_load_json_reads_an_object(tmp_path: Path) -> None:
    (tmp_path / "f.json").write_text('{"version": 1}')
    assert load_json(str(tmp_path / "f.json")) == {"version": 1}


# --- where the state lives ------------------------------------------------------------------------


def test_the_state_dir_flag_wins_in_either_spelling() -> None:
    env = {"CLAUDE_USAGE_EXPORTER_STATE_DIR": "/env", "HOME": "/home/u"}
    assert state_dir_from(["--state-dir", "/flag"], env) == "/flag"
    assert state_dir_from(["--state-dir=/flag"], env) == "/flag"
    assert state_dir_from(["--what", "--state-dir=~/s", "-x"], env) == "/home/u/s"


def test_unknown_arguments_and_a_flag_without_value_are_ignored() -> None:
    assert state_dir_from(["--verbose", "extra", "--state-dir"], {"HOME": "/home/u"}) == (
        "/home/u/.local/state/claude-usage-exporter"
    )


def test_the_state_dir_comes_from_the_environment_then_xdg_then_home() -> None:
    assert state_dir_from([], {"CLAUDE_USAGE_EXPORTER_STATE_DIR": "/env", "XDG_STATE_HOME": "/xdg"}) == "/env"
    assert state_dir_from([], {"XDG_STATE_HOME": "/xdg", "HOME": "/h"}) == "/xdg/claude-usage-exporter"
    assert state_dir_from([], {"XDG_STATE_HOME": "rel", "HOME": "/h"}) == "/h/.local/state/claude-usage-exporter"


# --- main and the console script ------------------------------------------------------------------


class FakeStdin:
    def __init__(self, data: bytes) -> None:
        self.buffer = io.BytesIO(data)


@pytest.mark.parametrize("stdin", [b"not json", b"[1, 2]", b'"text"', b"null", b"", b"\xff\xfe\x00", b"{" * 100_000])
def test_garbage_stdin_prints_the_fallback_line_and_exits_0(
    state: Path, stdin: bytes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(stdin))
    assert statusline.main(["--state-dir", str(state)]) == 0
    assert capsys.readouterr() == (FALLBACK + "\n", "")


def test_main_prints_the_line_for_a_real_input(
    state: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", FakeStdin(sample("2.0.x.json")))
    assert statusline.main(["--state-dir", str(state), "--unknown"]) == 0
    assert capsys.readouterr().out == "Sonnet 4.5 · session $1.23\n"


@pytest.mark.parametrize("stdin", [b"{not json", b"[]", b""])
def test_the_console_script_prints_the_fallback_for_garbage_without_a_traceback(tmp_path: Path, stdin: bytes) -> None:
    result = run_script(stdin, "--state-dir", str(tmp_path / "state"), env=clean_env(tmp_path))
    assert (result.returncode, result.stdout, result.stderr) == (0, FALLBACK.encode() + b"\n", b"")


def test_the_console_script_prints_the_line_for_an_unwritable_state_dir(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    env = {**clean_env(tmp_path), "CLAUDE_USAGE_EXPORTER_STATE_DIR": str(tmp_path / "a-file" / "state")}
    result = run_script(sample("2.0.x.json"), "--bogus", env=env)
    assert (result.returncode, result.stdout.decode(), result.stderr) == (0, "Sonnet 4.5 · session $1.23\n", b"")


def test_the_console_scripts_code_takes_a_format_template(tmp_path: Path) -> None:
    # The console script's own code from this tree (the script on PATH may be another checkout's install).
    launch = [sys.executable, "-c", "from exporter.cli.entry import main; main()", "statusline"]
    result = subprocess.run(
        [*launch, "--format", "{model} | {context}"],
        input=sample("2.1.x.json"),
        capture_output=True,
        env=clean_env(tmp_path),
        cwd=Path(__file__).parent.parent,
        timeout=30,
    )
    assert (result.returncode, result.stdout.decode(), result.stderr) == (0, f"Opus 4.5 | {CONTEXT}\n", b"")


def test_the_console_script_records_in_the_default_state_dir(tmp_path: Path) -> None:
    result = run_script(sample("2.1.x.json"), env=clean_env(tmp_path))
    assert result.returncode == 0
    snapshot = tmp_path / "home/.local/state/claude-usage-exporter" / SNAPSHOT
    assert json.loads(snapshot.read_text())["claude_code_version"] == "2.1.14"


# The modules `statusline` may add to what a bare interpreter has already loaded.
ALLOWED_IMPORTS = {
    "exporter",
    "exporter.cli",
    "exporter.cli.entry",
    "exporter.sources",
    "exporter.sources.statusline",
    "json",
    "json.decoder",
    "json.encoder",
    "json.scanner",
    "_json",
}
PROBE = """
import sys
before = set(sys.modules)
sys.argv = ["claude-usage-exporter", "statusline", *sys.argv[1:]]
from exporter.cli.entry import main
try:
    main()
except SystemExit as e:
    assert e.code == 0, e.code
sys.stderr.write(" ".join(sorted(set(sys.modules) - before)))
"""


def test_the_statusline_path_imports_only_json_beyond_a_bare_python(tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    env["CLAUDE_USAGE_EXPORTER_STATE_DIR"] = str(tmp_path / "s")
    result = subprocess.run(
        [sys.executable, "-c", PROBE], input=sample("2.1.x.json"), capture_output=True, env=env, timeout=30
    )
    assert result.returncode == 0, result.stderr
    # The fixture's seven-day window reset long before this clock, so it shows no time left.
    assert result.stdout.decode() == f"Opus 4.5 · session $0.87 · 5h 29% · 7d 18% · {CONTEXT}\n"
    added = set(result.stderr.decode().split())
    # So no click, pydantic, opentelemetry, yaml, datetime or typing either.
    assert added <= ALLOWED_IMPORTS, added - ALLOWED_IMPORTS
