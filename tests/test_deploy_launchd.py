"""The macOS launch agent (deploy/launchd): a valid property list whose command runs the exporter.

There is no launchd here. The plist is parsed with plistlib, and its ProgramArguments run as launchd
would start them for a user: with HOME set (launchd expands nothing itself), and that home's
~/.local/bin holding the installed exporter. The exporter must serve, log where the plist says, and
exit 0 on SIGTERM, so that `KeepAlive: {SuccessfulExit: false}` does not restart a clean stop.
"""

from __future__ import annotations

import os
import plistlib
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.support.lines import line, write
from tests.support.loopback import answers_ok, free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # the agent's command as a process

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "deploy/launchd/io.github.claude-usage-exporter.plist"


def agent() -> dict[str, Any]:
    with AGENT.open("rb") as f:
        loaded: dict[str, Any] = plistlib.load(f)
    return loaded


def test_the_agent_is_named_after_its_file_starts_at_login_and_restarts_only_after_a_failure() -> None:
    plist = agent()
    assert plist["Label"] == AGENT.stem, "launchctl finds the agent by its label"
    assert plist["RunAtLoad"] is True
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["ProcessType"] == "Background"
    assert plist["ExitTimeOut"] >= 10, "time to commit the batch being read"
    arguments = plist["ProgramArguments"]
    assert arguments[:2] == ["/bin/sh", "-c"]
    assert re.match(r'exec "\$HOME/\.local/bin/claude-usage-exporter" serve ', arguments[2]), arguments


def test_the_agents_command_serves_the_users_transcripts_logs_to_library_logs_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    home = tmp_path / "Users/dev"
    (home / ".local/bin").mkdir(parents=True)
    (home / ".local/bin/claude-usage-exporter").symlink_to(Path(sys.prefix) / "bin/claude-usage-exporter")
    (home / "Library/Logs").mkdir(parents=True)
    write(home / ".claude/projects/acme-api/s.jsonl", line())
    port = free_port()
    ours = ("CLAUDE_USAGE_EXPORTER_", "CLAUDE_CONFIG_DIR", "XDG_")  # launchd gives an agent none of these
    clean = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env = {**clean, "HOME": str(home), "CLAUDE_USAGE_EXPORTER_WEB_LISTEN_ADDRESS": f"127.0.0.1:{port}"}
    process = subprocess.Popen(agent()["ProgramArguments"], env=env, cwd="/", stdin=subprocess.DEVNULL)
    try:
        eventually(lambda: answers_ok(f"http://127.0.0.1:{port}/readyz", process), what="the agent's exporter is ready")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as answer:
            assert 'project="acme-api"' in answer.read().decode(), "it reads ~/.claude"
        process.send_signal(signal.SIGTERM)  # what `launchctl bootout` sends; the shell exec'd the exporter
        assert process.wait(timeout=60) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=60)
    assert "listening on" in (home / "Library/Logs/claude-usage-exporter.log").read_text()
    assert (home / ".local/state/claude-usage-exporter/ledger.sqlite3").is_file(), "the default ledger"
