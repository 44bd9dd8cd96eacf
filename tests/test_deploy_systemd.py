"""The systemd user unit (deploy/systemd): systemd-analyze verifies it and scores its sandbox.

No user manager runs here, so the unit is not started; `systemd-analyze --user verify` loads it as
one would (the program it starts included, at the `%h` of a temporary home), and `security
--offline` lists the sandboxing it lacks. The exporter itself is run once with writable-and-executable
memory refused by the kernel, as `MemoryDenyWriteExecute=yes` does, to show the option does not break it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.defaults import default_state_dir
from tests.support.daemon import serving
from tests.support.lines import line, write
from tests.support.tools import require

pytestmark = pytest.mark.slow  # systemd's tools and the unit's command

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy/systemd/claude-usage-exporter.service"
ANALYZE = "/usr/bin/systemd-analyze"
WHY = "the user unit checked by systemd-analyze (Debian package `systemd`)"


def directives(text: str) -> dict[str, dict[str, list[str]]]:
    """`{section: {key: [values]}}`: systemd allows a key more than once (SystemCallFilter=)."""
    found: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped[0] in "#;":
            continue
        if stripped.startswith("["):
            section = stripped.strip("[]")
            found[section] = {}
            continue
        key, _, value = stripped.partition("=")
        found[section].setdefault(key, []).append(value)
    return found


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """The environment of a user whose ~/.local/bin holds the installed exporter."""
    bin_dir = tmp_path / "home/.local/bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "claude-usage-exporter").symlink_to(Path(sys.prefix) / "bin/claude-usage-exporter")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    return {**os.environ, "HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(runtime)}


def analyze(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ANALYZE, "--user", *args], env=env, capture_output=True, text=True, timeout=120)


def test_the_unit_is_a_user_service_started_from_local_bin_with_the_default_ledger() -> None:
    unit = directives(UNIT.read_text())
    service = unit["Service"]
    assert unit["Install"]["WantedBy"] == ["default.target"]
    (start,) = service["ExecStart"]
    program, command, *flags = shlex.split(start)
    assert (program, command) == ("%h/.local/bin/claude-usage-exporter", "serve")
    state = flags[flags.index("--state-dir") + 1]
    assert state.replace("%h", "/home/u") == str(default_state_dir({"HOME": "/home/u"})), "`report` finds it"
    assert service["ReadWritePaths"] == [state], "the only place it may write"
    assert any(state in pre for pre in service["ExecStartPre"]), "made before the sandbox needs it"
    assert service["Restart"] == ["on-failure"]
    for key in ("User", "Group", "DynamicUser", "CapabilityBoundingSet", "AmbientCapabilities", "StateDirectory"):
        assert key not in service, f"{key}= does not work as intended in a user unit (StateDirectory= is ~/.config)"


def test_the_unit_sandboxes_the_exporter_to_its_ledger_and_the_network() -> None:
    service = directives(UNIT.read_text())["Service"]
    expected = {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "read-only",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
    }
    for key, value in expected.items():
        assert service[key] == [value], key
    assert "@system-service" in service["SystemCallFilter"]


def test_systemd_analyze_verifies_the_unit_without_a_warning(home: dict[str, str], tmp_path: Path) -> None:
    require(ANALYZE, WHY)
    done = analyze(home, "verify", "--man=no", str(UNIT))
    told = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode == 0 and not told, "\n".join(told)
    broken = tmp_path / UNIT.name
    broken.write_text(UNIT.read_text().replace("[Service]\n", "[Service]\nProtectSystems=strict\n"))
    done = analyze(home, "verify", "--man=no", str(broken))
    assert "Unknown key 'ProtectSystems'" in done.stderr, "verify reports a typo, so its silence means something"


# Left open on purpose: a user unit has no capabilities to drop and cannot filter IP addresses; the
# exporter needs the network and reads the home folder; ProcSubset=pid would hide /proc/stat, which
# process_start_time_seconds needs; a user manager runs its units as that user.
ACCEPTED = re.compile(
    r"CapabilityBoundingSet=.*|PrivateNetwork=|IPAddressDeny=|RestrictAddressFamilies=~AF_(UNIX|\(INET\|INET6\))"
    r"|ProtectHome=|ProcSubset=|DeviceAllow=|RootDirectory=/RootImage=|User=/DynamicUser=|SupplementaryGroups="
    r"|RemoveIPC="
)


def test_systemd_analyze_security_finds_nothing_left_open_but_what_a_user_unit_cannot_close(
    home: dict[str, str],
) -> None:
    require(ANALYZE, WHY)
    done = analyze(home, "security", "--offline=true", "--json=short", "--no-pager", str(UNIT))
    assert done.returncode == 0, done.stderr
    items = json.loads(done.stdout)
    assert len(items) > 50, "the whole assessment"
    open_items = sorted(i["name"] for i in items if not i["set"] and not ACCEPTED.fullmatch(i["name"]))
    assert not open_items, f"sandboxing the unit could add: {open_items}"


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
# Runs the rest of its arguments with writable-and-executable memory refused (kept across exec).
REFUSE_WX = (
    "import ctypes, os, sys; libc = ctypes.CDLL(None, use_errno=True); "
    f"libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0 "
    "or sys.exit(f'prctl: {os.strerror(ctypes.get_errno())}'); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def test_the_exporter_serves_with_writable_executable_memory_refused(tmp_path: Path) -> None:
    wx = "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)"
    probe = subprocess.run([sys.executable, "-c", REFUSE_WX, sys.executable, "-c", wx], capture_output=True, text=True)
    if "prctl:" in probe.stderr:
        reason = f"the kernel cannot refuse W+X memory ({probe.stderr.strip()}): NOT CHECKED"
        pytest.fail(reason) if os.environ.get("CI") == "true" else pytest.skip(reason)
    assert probe.returncode != 0 and "PermissionError" in probe.stderr, "W+X memory is refused after the exec"
    root = tmp_path / "claude"
    write(root / "projects/acme-api/s.jsonl", line())
    with serving(tmp_path / "state", [root], prefix=(sys.executable, "-c", REFUSE_WX)) as daemon:
        assert 'project="acme-api"' in daemon.metrics()
        assert daemon.stop() == 0, "".join(daemon.log)
