"""`setup`: our entries in real-shaped Claude Code settings.json files, each undone exactly; the service
through fake `systemctl` and `launchctl` scripts on PATH (no systemd user manager runs here)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.cli import Run, cli
from tests.support.daemon import REPO
from tests.support.waiting import WAIT

SETTINGS = Path(__file__).parent / "fixtures" / "settings"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on PATH holding our script, so the status line's command is known."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "claude-usage-exporter"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return folder


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bin_dir: Path) -> Run:
    return cli(tmp_path, monkeypatch)


def ours(bin_dir: Path) -> dict[str, object]:
    return {"type": "command", "command": f"{bin_dir}/claude-usage-exporter statusline", "padding": 0}


def user_settings(home: Path, fixture: str | None = None) -> Path:
    path = home / ".claude" / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fixture:
        shutil.copyfile(SETTINGS / fixture, path)
    return path


def test_statusline_is_added_last_keeping_every_other_key_in_order(run: Run, home: Path, bin_dir: Path) -> None:
    path = user_settings(home, "full.json")
    before = json.loads(path.read_text())
    run("setup", "statusline")
    after = json.loads(path.read_text())
    assert list(after) == [*before, "statusLine"]
    assert after == {**before, "statusLine": ours(bin_dir)}
    assert path.read_text() == json.dumps(after, indent=2) + "\n"
    assert (path.parent / "settings.json.before-statusline").read_bytes() == (SETTINGS / "full.json").read_bytes()


def test_running_setup_statusline_twice_changes_nothing_the_second_time(run: Run, home: Path) -> None:
    path = user_settings(home, "full.json")
    run("setup", "statusline")
    first = path.read_bytes()
    assert run("setup", "statusline") == f"{path}: already set up, nothing to change\n"
    assert path.read_bytes() == first


def test_another_status_line_is_left_alone_without_force(run: Run, home: Path) -> None:
    path = user_settings(home, "other-statusline.json")
    out = run("setup", "statusline", code=1)
    assert out == (
        f"Error: {path} already has a status line ('bunx ccusage statusline'): --force replaces it, and --undo"
        " puts it back\n"
    )
    assert path.read_bytes() == (SETTINGS / "other-statusline.json").read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.json"]


def test_force_replaces_another_status_line_in_place_and_undo_puts_it_back_byte_for_byte(
    run: Run, home: Path, bin_dir: Path
) -> None:
    path = user_settings(home, "other-statusline.json")
    run("setup", "statusline", "--force")
    after = json.loads(path.read_text())
    assert list(after) == ["model", "statusLine", "permissions"]
    assert after["statusLine"] == ours(bin_dir)
    assert run("setup", "statusline", "--undo") == f"{path}: restored\n"
    assert path.read_bytes() == (SETTINGS / "other-statusline.json").read_bytes()
    assert not (path.parent / "settings.json.before-statusline").exists()


def test_undo_restores_a_differently_formatted_file_byte_for_byte(run: Run, home: Path) -> None:
    path = user_settings(home, "compact.json")
    run("setup", "statusline")
    assert path.read_bytes() != (SETTINGS / "compact.json").read_bytes()
    run("setup", "statusline", "--undo")
    assert path.read_bytes() == (SETTINGS / "compact.json").read_bytes()


def test_undo_after_a_later_edit_removes_only_our_status_line(run: Run, home: Path) -> None:
    path = user_settings(home, "full.json")
    run("setup", "statusline")
    edited = json.loads(path.read_text()) | {"model": "opus", "spinnerTipsEnabled": False}
    path.write_text(json.dumps(edited, indent=2) + "\n")
    assert run("setup", "statusline", "--undo") == f"{path}: our entries removed\n"
    expected = json.loads((SETTINGS / "full.json").read_text()) | {"model": "opus", "spinnerTipsEnabled": False}
    assert path.read_text() == json.dumps(expected, indent=2) + "\n"


def test_undo_removes_the_settings_file_setup_created(run: Run, home: Path, bin_dir: Path) -> None:
    path = user_settings(home)
    run("setup", "statusline")
    assert json.loads(path.read_text()) == {"statusLine": ours(bin_dir)}
    run("setup", "statusline", "--undo")
    assert sorted(path.parent.iterdir()) == []


def test_undo_with_nothing_of_ours_changes_nothing(run: Run, home: Path) -> None:
    path = user_settings(home, "other-statusline.json")
    assert run("setup", "statusline", "--undo") == f"{path}: nothing of ours to undo\n"
    assert path.read_bytes() == (SETTINGS / "other-statusline.json").read_bytes()


def test_dry_run_prints_a_unified_diff_and_writes_nothing(run: Run, home: Path, bin_dir: Path) -> None:
    path = user_settings(home, "compact.json")
    out = run("setup", "statusline", "--dry-run", "--state-dir", "/var/lib/cue state")
    command = f"{bin_dir}/claude-usage-exporter statusline --state-dir '/var/lib/cue state'"
    assert out == "\n".join(
        [
            f"--- {path}",
            f"+++ {path} (new)",
            "@@ -1 +1,15 @@",
            '-{"permissions": {"allow": ["Bash(git diff:*)"], "deny": []}, "model": "sonnet", "cleanupPeriodDays": 30}',
            "\\ No newline at end of file",
            "+{",
            '+  "permissions": {',
            '+    "allow": [',
            '+      "Bash(git diff:*)"',
            "+    ],",
            '+    "deny": []',
            "+  },",
            '+  "model": "sonnet",',
            '+  "cleanupPeriodDays": 30,',
            '+  "statusLine": {',
            '+    "type": "command",',
            f"+    {json.dumps('command')}: {json.dumps(command)},",
            '+    "padding": 0',
            "+  }",
            "+}",
            "",
        ]
    )
    assert path.read_bytes() == (SETTINGS / "compact.json").read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["settings.json"]


def test_project_scope_writes_the_settings_in_the_current_folder(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bin_dir: Path
) -> None:
    project = tmp_path / "acme-api"
    project.mkdir()
    monkeypatch.chdir(project)
    run("setup", "statusline", "--scope", "project")
    assert json.loads((project / ".claude" / "settings.json").read_text()) == {"statusLine": ours(bin_dir)}


def test_user_scope_follows_claude_config_dir(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path, bin_dir: Path
) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "work-claude"))
    run("setup", "statusline")
    assert json.loads((tmp_path / "work-claude" / "settings.json").read_text()) == {"statusLine": ours(bin_dir)}
    assert not (home / ".claude").exists()


def test_without_our_script_on_path_the_command_runs_this_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: Path
) -> None:
    run = cli(tmp_path, monkeypatch)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    path = user_settings(home)
    run("setup", "statusline")
    assert json.loads(path.read_text())["statusLine"]["command"] == f"{sys.executable} -m exporter statusline"


def test_a_settings_file_that_is_not_json_is_refused_and_left_alone(run: Run, home: Path) -> None:
    path = user_settings(home)
    path.write_text('{"model": "opus",}\n')
    out = run("setup", "statusline", code=1)
    assert out == (
        f"Error: {path} is not valid JSON (Expecting property name enclosed in double quotes: line 1 column 18"
        " (char 17)): fix it by hand first\n"
    )
    assert path.read_text() == '{"model": "opus",}\n'


def test_a_symlinked_settings_file_stays_a_symlink(run: Run, home: Path, tmp_path: Path, bin_dir: Path) -> None:
    dotfiles = tmp_path / "dotfiles" / "claude-settings.json"
    dotfiles.parent.mkdir()
    shutil.copyfile(SETTINGS / "compact.json", dotfiles)
    path = user_settings(home)
    path.symlink_to(dotfiles)
    run("setup", "statusline")
    assert path.is_symlink()
    assert json.loads(dotfiles.read_text())["statusLine"] == ours(bin_dir)


def test_telemetry_writes_the_team_mode_environment_with_the_token_header(run: Run, home: Path, tmp_path: Path) -> None:
    path = user_settings(home, "full.json")
    (tmp_path / "token").write_text("# issued 2026-12-01\ns3cr3t-token\n")
    args = (
        "setup",
        "telemetry",
        "--endpoint",
        "http://exporter.example:4318/",
        "--token-file",
        str(tmp_path / "token"),
    )
    out = run(*args, "--force")  # full.json's env sets OTEL_METRICS_EXPORTER=console
    assert out == f"{path}: updated (the previous file is in {path}.before-telemetry)\n"
    assert json.loads(path.read_text())["env"] == {
        "BASH_DEFAULT_TIMEOUT_MS": "300000",
        "OTEL_METRICS_EXPORTER": "otlp",
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://exporter.example:4318",
        "OTEL_EXPORTER_OTLP_HEADERS": "Authorization=Bearer s3cr3t-token",
    }
    assert path.stat().st_mode & 0o777 == (SETTINGS / "full.json").stat().st_mode & 0o777
    assert run(*args) == f"{path}: already set up, nothing to change\n"


def test_telemetry_refuses_to_change_a_users_own_setting_without_force(run: Run, home: Path) -> None:
    path = user_settings(home, "full.json")
    out = run("setup", "telemetry", "--endpoint", "http://exporter.example:4318", code=1)
    assert out == f"Error: {path} already sets OTEL_METRICS_EXPORTER: --force replaces them\n"
    assert path.read_bytes() == (SETTINGS / "full.json").read_bytes()


def test_telemetry_can_move_to_another_endpoint_it_set_up_itself(run: Run, home: Path) -> None:
    path = user_settings(home, "compact.json")
    run("setup", "telemetry", "--endpoint", "http://old.example:4318")
    run("setup", "telemetry", "--endpoint", "https://new.example:4318", "--protocol", "http/protobuf")
    env = json.loads(path.read_text())["env"]
    assert (env["OTEL_EXPORTER_OTLP_ENDPOINT"], env["OTEL_EXPORTER_OTLP_PROTOCOL"]) == (
        "https://new.example:4318",
        "http/protobuf",
    )
    run("setup", "telemetry", "--undo")
    assert path.read_bytes() == (SETTINGS / "compact.json").read_bytes()


def test_telemetry_undo_after_a_later_edit_gives_back_the_users_own_values(run: Run, home: Path) -> None:
    path = user_settings(home, "full.json")
    run("setup", "telemetry", "--endpoint", "http://exporter.example:4318", "--force")
    path.write_text(path.read_text().replace('"claude-sonnet-4-5-20250929"', '"opus"'))
    run("setup", "telemetry", "--undo")
    expected = json.loads((SETTINGS / "full.json").read_text()) | {"model": "opus"}
    assert path.read_text() == json.dumps(expected, indent=2) + "\n"


def test_telemetry_rejects_an_endpoint_that_is_not_a_url_and_a_token_file_without_a_token(
    run: Run, home: Path, tmp_path: Path
) -> None:
    user_settings(home, "compact.json")
    out = run("setup", "telemetry", "--endpoint", "exporter.example:4318", code=2)
    assert out.endswith(
        "Error: Invalid value for --endpoint: 'exporter.example:4318' is not an http:// or https:// URL\n"
    )
    (tmp_path / "token").write_text("# nothing yet\n")
    out = run("setup", "telemetry", "--endpoint", "http://e:4318", "--token-file", str(tmp_path / "token"), code=2)
    assert out.endswith(
        f"Error: Invalid value for --token-file: {tmp_path / 'token'} holds no token (one line, no spaces or commas)\n"
    )


def test_telemetry_undo_without_a_backup_is_refused(run: Run, home: Path) -> None:
    path = user_settings(home, "full.json")
    out = run("setup", "telemetry", "--undo", code=1)
    assert out == f"Error: no backup at {path}.before-telemetry: setup telemetry made no change here to undo\n"


# --- the service ---------------------------------------------------------------------------------


def fake_tool(bin_dir: Path, name: str, log: Path) -> None:
    """A stand-in for systemctl or launchctl: it records its arguments, one call a line."""
    tool = bin_dir / name
    tool.write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    tool.chmod(0o755)


def test_service_installs_the_unit_and_starts_it_with_systemctl(
    run: Run, home: Path, bin_dir: Path, tmp_path: Path
) -> None:
    fake_tool(bin_dir, "systemctl", tmp_path / "calls")
    out = run("setup", "service", "--manager", "systemd")
    unit = home / ".config" / "systemd" / "user" / "claude-usage-exporter.service"
    assert out == "\n".join(
        [
            f"wrote {unit}",
            "running: systemctl --user daemon-reload",
            "running: systemctl --user enable --now claude-usage-exporter.service",
            "",
        ]
    )
    assert (
        tmp_path / "calls"
    ).read_text() == "--user daemon-reload\n--user enable --now claude-usage-exporter.service\n"
    shipped = (Path(__file__).parent.parent / "deploy/systemd/claude-usage-exporter.service").read_text()
    # our script is not in ~/.local/bin here, so ExecStart names where it is
    assert unit.read_text() == shipped.replace(
        "ExecStart=%h/.local/bin/claude-usage-exporter ", f"ExecStart={bin_dir}/claude-usage-exporter "
    )


def test_service_undo_stops_and_removes_the_unit(run: Run, home: Path, bin_dir: Path, tmp_path: Path) -> None:
    fake_tool(bin_dir, "systemctl", tmp_path / "calls")
    run("setup", "service", "--manager", "systemd")
    (tmp_path / "calls").unlink()
    run("setup", "service", "--manager", "systemd", "--undo")
    assert (
        tmp_path / "calls"
    ).read_text() == "--user disable --now claude-usage-exporter.service\n--user daemon-reload\n"
    assert sorted((home / ".config" / "systemd" / "user").iterdir()) == []


def test_service_dry_run_only_says_what_it_would_do(run: Run, home: Path, bin_dir: Path, tmp_path: Path) -> None:
    fake_tool(bin_dir, "systemctl", tmp_path / "calls")
    out = run("setup", "service", "--manager", "systemd", "--dry-run")
    unit = home / ".config" / "systemd" / "user" / "claude-usage-exporter.service"
    assert out.startswith(f"--- {unit}\n+++ {unit} (new)\n")
    assert out.endswith(
        "would run: systemctl --user daemon-reload\n"
        "would run: systemctl --user enable --now claude-usage-exporter.service\n"
    )
    assert not unit.exists() and not (tmp_path / "calls").exists()


def test_service_refuses_to_replace_a_different_unit_without_force(
    run: Run, home: Path, bin_dir: Path, tmp_path: Path
) -> None:
    fake_tool(bin_dir, "systemctl", tmp_path / "calls")
    unit = home / ".config" / "systemd" / "user" / "claude-usage-exporter.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/opt/cue/bin/claude-usage-exporter serve\n")
    out = run("setup", "service", "--manager", "systemd", code=1)
    assert out == f"Error: {unit} exists and differs from ours: --force replaces it (a copy is kept)\n"
    run("setup", "service", "--manager", "systemd", "--force")
    run("setup", "service", "--manager", "systemd", "--undo")
    assert unit.read_text() == "[Service]\nExecStart=/opt/cue/bin/claude-usage-exporter serve\n"


def test_a_failing_systemctl_is_reported_with_what_it_said(run: Run, bin_dir: Path) -> None:
    tool = bin_dir / "systemctl"
    tool.write_text('#!/bin/sh\necho "Failed to connect to bus: No medium found" >&2\nexit 1\n')
    tool.chmod(0o755)
    out = run("setup", "service", "--manager", "systemd", code=1)
    assert out.endswith(
        "Error: systemctl --user daemon-reload exited 1: Failed to connect to bus: No medium found (no systemd user"
        " manager for this session: log in normally, or `loginctl enable-linger`)\n"
    )


def test_service_on_macos_loads_the_launch_agent(run: Run, home: Path, bin_dir: Path, tmp_path: Path) -> None:
    fake_tool(bin_dir, "launchctl", tmp_path / "calls")
    run("setup", "service", "--manager", "launchd")
    agent = home / "Library" / "LaunchAgents" / "io.github.claude-usage-exporter.plist"
    assert f"<string>exec {bin_dir}/claude-usage-exporter serve 2&gt;&gt;" in agent.read_text()
    run("setup", "service", "--manager", "launchd", "--undo")
    uid = os.getuid()
    assert (tmp_path / "calls").read_text() == (
        f"bootstrap gui/{uid} {agent}\nbootout gui/{uid}/io.github.claude-usage-exporter\n"
    )
    assert not agent.exists()


def test_the_script_run_by_its_path_writes_that_path_and_the_written_command_runs(tmp_path: Path) -> None:
    """The README's `.venv/bin/claude-usage-exporter setup statusline`, with .venv/bin not on PATH."""
    script = tmp_path / "venv" / "bin" / "claude-usage-exporter"
    script.parent.mkdir(parents=True)
    script.write_text(f"#!{sys.executable}\nfrom exporter.cli.entry import main\nmain()\n")
    script.chmod(0o755)
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    subprocess.run([str(script), "setup", "statusline"], env=env, check=True, capture_output=True, timeout=WAIT)
    settings = json.loads((tmp_path / "home" / ".claude" / "settings.json").read_text())
    assert settings == {"statusLine": {"type": "command", "command": f"{script} statusline", "padding": 0}}
    # as Claude Code runs it: through a shell, its JSON on stdin
    shown = subprocess.run(
        ["/bin/sh", "-c", settings["statusLine"]["command"]],
        input=b'{"model": {"display_name": "Opus 4.5"}, "cost": {"total_cost_usd": 0.87}}',
        env=env,
        capture_output=True,
        timeout=WAIT,
    )
    assert (shown.returncode, shown.stdout) == (0, "Opus 4.5 · session $0.87\n".encode())


def test_undo_after_our_status_line_was_removed_by_hand_leaves_the_file_as_it_is(run: Run, home: Path) -> None:
    path = user_settings(home, "other-statusline.json")
    run("setup", "statusline", "--force")
    edited = '{"model": "opus", "permissions": {"allow": ["WebSearch"]}}'
    path.write_text(edited)
    assert run("setup", "statusline", "--undo") == f"{path}: nothing of ours to undo\n"
    assert path.read_text() == edited


def test_telemetry_run_again_without_a_token_file_drops_the_header_it_wrote(
    run: Run, home: Path, tmp_path: Path
) -> None:
    path = user_settings(home, "compact.json")
    (tmp_path / "token").write_text("s3cr3t-token\n")
    run("setup", "telemetry", "--endpoint", "http://exporter.example:4318", "--token-file", str(tmp_path / "token"))
    run("setup", "telemetry", "--endpoint", "http://exporter.example:4318")
    assert json.loads(path.read_text())["env"] == {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://exporter.example:4318",
    }
