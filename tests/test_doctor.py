"""`doctor`: one line per check with its fix, the exit code of the worst; a real `serve` for the reachable check."""

from __future__ import annotations

import json
import os
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.cli import Run, cli
from tests.support.daemon import serving
from tests.support.lines import line, request, write
from tests.support.loopback import free_port


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    monkeypatch.chdir(tmp_path)  # the project-scope settings doctor reads are the test's own
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no `claude` of the developer's
    return cli(tmp_path, monkeypatch, in_folders=True)


@pytest.fixture
def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def transcript(tmp_path: Path, *lines: bytes) -> Path:
    return write(tmp_path / "claude" / "projects" / "acme-api" / "9c42ba52.jsonl", *lines)


def our_statusline(tmp_path: Path) -> Path:
    path = tmp_path / "home" / ".claude" / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    command = "/home/dev/.local/bin/claude-usage-exporter statusline"
    path.write_text(json.dumps({"model": "opus", "statusLine": {"type": "command", "command": command}}, indent=2))
    return path


def checks(out: str) -> dict[str, dict[str, Any]]:
    report = json.loads(out)
    return {c["name"]: c for c in report["checks"]} | {"": {"status": report["status"]}}


def statuses(out: str) -> list[tuple[str, str]]:
    return [(c["name"], c["status"]) for c in json.loads(out)["checks"]]


@pytest.mark.slow
def test_a_working_setup_is_all_ok_and_exits_0(run: Run, tmp_path: Path) -> None:
    transcript(tmp_path, request(1), request(2))
    settings = our_statusline(tmp_path)
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        out = run("doctor", "--json", "--url", daemon.url)
    assert json.loads(out) == {
        "status": "ok",
        "checks": [
            {
                "name": "transcripts",
                "status": "ok",
                "detail": f"1 file, 2 requests in {tmp_path}/claude/projects",
                "fix": "",
            },
            {"name": "claude code", "status": "ok", "detail": "version 2.1.233 (newest in the transcripts)", "fix": ""},
            {"name": "ledger", "status": "ok", "detail": f"writable at {tmp_path}/state/ledger.sqlite3", "fix": ""},
            {"name": "lines", "status": "ok", "detail": "2 lines read, none malformed", "fix": ""},
            {"name": "pricing", "status": "ok", "detail": "every request is priced", "fix": ""},
            {"name": "serve", "status": "ok", "detail": f"ready at {daemon.url}", "fix": ""},
            {"name": "status line", "status": "ok", "detail": f"configured in {settings}", "fix": ""},
            {"name": "clock", "status": "ok", "detail": "no request or transcript is dated in the future", "fix": ""},
        ],
    }


def test_no_transcripts_fails_naming_the_folders_and_exits_2(run: Run, tmp_path: Path, closed_url: str) -> None:
    out = run("doctor", "--url", closed_url, code=2)
    assert out.splitlines() == [
        f"fail  transcripts: no Claude Code transcripts in {tmp_path}/claude/projects; fix: point CLAUDE_CONFIG_DIR or"
        " --claude-dir at the folder Claude Code writes (the one with projects/)",
        "warn  claude code: no version in the transcripts and no `claude` on PATH; fix: install Claude Code, or point"
        " --claude-dir at the folder it writes",
        f"ok    ledger: writable at {tmp_path}/state/ledger.sqlite3",
        "ok    lines: 0 lines read, none malformed",
        "ok    pricing: every request is priced",
        f"warn  serve: nothing answers at {closed_url} ([Errno 111] Connection refused); fix: start it:"
        " claude-usage-exporter serve (or setup service), or pass --url",
        "warn  status line: not configured; fix: claude-usage-exporter setup statusline",
        "ok    clock: no request or transcript is dated in the future",
    ]


def test_serve_not_running_is_only_a_warning_and_exits_1(run: Run, tmp_path: Path, closed_url: str) -> None:
    transcript(tmp_path, request(1))
    our_statusline(tmp_path)
    out = run("doctor", "--json", "--url", closed_url, code=1)
    assert statuses(out) == [
        ("transcripts", "ok"),
        ("claude code", "ok"),
        ("ledger", "ok"),
        ("lines", "ok"),
        ("pricing", "ok"),
        ("serve", "warn"),
        ("status line", "ok"),
        ("clock", "ok"),
    ]
    assert checks(out)[""] == {"status": "warn"}


def test_a_ledger_that_cannot_be_written_fails_with_the_reason(run: Run, tmp_path: Path, closed_url: str) -> None:
    transcript(tmp_path, request(1))
    (tmp_path / "state").write_text("")  # a file where the state folder should be: fails even as root
    out = run("doctor", "--json", "--url", closed_url, code=2)
    assert checks(out)["ledger"] == {
        "name": "ledger",
        "status": "fail",
        "detail": f"cannot open the ledger at {tmp_path}/state/ledger.sqlite3: [Errno 17] File exists:"
        f" '{tmp_path}/state'",
        "fix": f"make {tmp_path}/state writable (or choose another with --state-dir), and free some disk space",
    }
    assert checks(out)["transcripts"]["detail"] == f"1 file in {tmp_path}/claude/projects"


def test_malformed_lines_and_unpriced_models_are_warnings_with_their_fix(
    run: Run, tmp_path: Path, closed_url: str
) -> None:
    unknown = line(m_id="msg_x", requestId="req_x", m_model="claude-opus-9-9")
    # a usage record whose token count is not a number: counted as malformed
    broken = line(m_id="msg_b", requestId="req_b", m_usage={"input_tokens": "lots"})
    transcript(tmp_path, request(1), unknown, broken)
    found = checks(run("doctor", "--json", "--url", closed_url, code=1))
    assert found["lines"] == {
        "name": "lines",
        "status": "warn",
        "detail": "1 of 3 lines were not recognised (malformed)",
        "fix": "see docs/troubleshooting.md (Lines counted as malformed); usually a newer Claude Code format",
    }
    assert found["pricing"] == {
        "name": "pricing",
        "status": "warn",
        "detail": "no price for claude-opus-9-9 (32872 tokens)",
        "fix": "add a pricing override (docs/pricing.md), or upgrade for newer price data",
    }


def test_the_version_is_the_newest_in_the_transcripts_compared_as_numbers(
    run: Run, tmp_path: Path, closed_url: str
) -> None:
    transcript(tmp_path, request(1), line(m_id="msg_2", requestId="req_2", version="2.1.40"))
    assert checks(run("doctor", "--json", "--url", closed_url, code=1))["claude code"]["detail"] == (
        "version 2.1.233 (newest in the transcripts)"
    )


def test_without_a_version_in_the_transcripts_claude_on_path_is_asked(
    run: Run, tmp_path: Path, closed_url: str
) -> None:
    transcript(tmp_path, line(version=None))
    claude = tmp_path / "bin" / "claude"
    claude.parent.mkdir()
    claude.write_text("#!/bin/sh\necho '2.1.233 (Claude Code)'\n")
    claude.chmod(0o755)
    assert checks(run("doctor", "--json", "--url", closed_url, code=1))["claude code"] == {
        "name": "claude code",
        "status": "ok",
        "detail": "version 2.1.233 (claude --version)",
        "fix": "",
    }


def test_a_request_dated_ahead_of_the_clock_fails_the_clock_check(run: Run, tmp_path: Path, closed_url: str) -> None:
    ahead = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    transcript(tmp_path, line(timestamp=ahead.isoformat().replace("+00:00", ".000Z")))
    clock = checks(run("doctor", "--json", "--url", closed_url, code=2))["clock"]
    assert (clock["status"], clock["fix"]) == ("fail", "set the clock right (e.g. timedatectl set-ntp true)")
    # the minutes are counted when doctor runs, a moment after this test wrote the line
    shown = re.fullmatch(
        rf"the newest request \({re.escape(ahead.isoformat())}\) is (\d+) min ahead of this clock", clock["detail"]
    )
    assert shown is not None and 115 <= int(shown[1]) <= 120


def test_a_transcript_written_in_the_future_fails_the_clock_check(run: Run, tmp_path: Path, closed_url: str) -> None:
    path = transcript(tmp_path, request(1))
    later = time.time() + 3600
    os.utime(path, (later, later))
    assert checks(run("doctor", "--json", "--url", closed_url, code=2))["clock"] == {
        "name": "clock",
        "status": "fail",
        "detail": f"1 transcript written in the future ({path})",
        "fix": "set the clock right (e.g. timedatectl set-ntp true)",
    }


def test_another_status_line_is_a_warning_naming_its_command(run: Run, tmp_path: Path, closed_url: str) -> None:
    transcript(tmp_path, request(1))
    project = tmp_path / ".claude" / "settings.json"  # doctor runs in tmp_path: this is the project's
    project.parent.mkdir()
    project.write_text(json.dumps({"statusLine": {"type": "command", "command": "bunx ccusage statusline"}}))
    assert checks(run("doctor", "--json", "--url", closed_url, code=1))["status line"] == {
        "name": "status line",
        "status": "warn",
        "detail": f"another status line: {project} runs 'bunx ccusage statusline'",
        "fix": "claude-usage-exporter setup statusline --force",
    }


def test_a_settings_file_claude_code_cannot_read_fails(run: Run, tmp_path: Path, closed_url: str) -> None:
    transcript(tmp_path, request(1))
    settings = our_statusline(tmp_path)
    settings.write_text(settings.read_text() + ",")
    status_line = checks(run("doctor", "--json", "--url", closed_url, code=2))["status line"]
    assert status_line == {
        "name": "status line",
        "status": "fail",
        "detail": f"{settings} is not valid JSON (Extra data: line 7 column 2 (char 138)): Claude Code ignores it",
        "fix": "fix it",
    }


def test_a_refused_config_file_is_a_failure_and_the_other_checks_still_run(
    run: Run, tmp_path: Path, closed_url: str
) -> None:
    (tmp_path / "bad.yaml").write_text("timezone: UTC\nlisten: 9477\n")
    out = run("doctor", "--json", "--url", closed_url, "--config", str(tmp_path / "bad.yaml"), code=2)
    assert statuses(out) == [("config", "fail"), ("serve", "warn"), ("status line", "warn"), ("clock", "ok")]
    assert checks(out)["config"]["fix"] == "claude-usage-exporter check-config FILE lists every error"
