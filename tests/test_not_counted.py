"""What was not counted is said: `report`, `serve`'s log and the `/` page name the lines they could not use,
with a pointer to `explain`; a Claude Code dir given by name that is not there is an error naming it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner, Result

from exporter.cli.commands import main
from tests.support.cli import OUTSIDE, folders
from tests.support.daemon import REPO, SERVE, clean_env, serving
from tests.support.lines import request, write
from tests.support.waiting import WAIT

EXPLAIN = "`claude-usage-exporter explain TRANSCRIPT`"


def malformed(n: int) -> bytes:
    """An assistant line with usage, cut short of its last brace: meant to be a request, unusable."""
    return request(n)[:-1]


@pytest.fixture
def invoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    for name in OUTSIDE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return CliRunner()


def daily(runner: CliRunner, tmp_path: Path, *flags: str) -> Result:
    return runner.invoke(main, ["report", "daily", "--json", *folders(tmp_path), *flags])


def test_report_says_in_one_line_how_many_lines_it_could_not_use_since_the_last_run(
    invoke: CliRunner, tmp_path: Path
) -> None:
    transcript = write(tmp_path / "claude/projects/p/s.jsonl", request(1), malformed(2), malformed(3))
    first = daily(invoke, tmp_path)
    assert first.exit_code == 0, first.output
    assert orjson.loads(first.stdout)["totals"]["requests"] == 1  # stdout stays JSON
    assert first.stderr == (
        f"note: 2 line(s) malformed or unrecognised since the last run, not counted; {EXPLAIN} shows what became"
        " of each line\n"
    )
    again = daily(invoke, tmp_path)
    assert (again.exit_code, again.stderr) == (0, "")  # nothing new: nothing to say
    write(transcript, malformed(4), request(5))
    later = daily(invoke, tmp_path)
    assert later.stderr.startswith("note: 1 line(s) malformed or unrecognised since the last run")
    assert orjson.loads(later.stdout)["totals"]["requests"] == 2


@pytest.mark.parametrize("layout", ["missing", "no projects folder"])
def test_report_on_a_given_claude_dir_that_is_not_there_names_it_rather_than_report_old_data(
    invoke: CliRunner, tmp_path: Path, layout: str
) -> None:
    write(tmp_path / "claude/projects/p/s.jsonl", request(1))
    assert daily(invoke, tmp_path).exit_code == 0  # the ledger holds a request now
    given = tmp_path / "elsewhere"
    if layout == "no projects folder":
        (given / "backups").mkdir(parents=True)
    result = daily(invoke, tmp_path, "--claude-dir", str(given))
    assert result.exit_code == 1 and result.stdout == ""
    expected = "does not exist" if layout == "missing" else "has no projects/ folder"
    assert result.stderr.startswith(f"Error: the Claude Code dir {given} {expected}")


def test_report_on_a_claude_config_dir_that_does_not_exist_names_it(
    invoke: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(tmp_path / "typo"))
    result = invoke.invoke(main, ["report", "daily", "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: the Claude Code dir {tmp_path / 'typo'} does not exist")


def test_serve_on_a_given_claude_dir_that_does_not_exist_names_it_and_starts_nothing(tmp_path: Path) -> None:
    # A process of its own: were the check gone, a daemon would start, and the timeout end it.
    result = subprocess.run(
        [*SERVE, "--web.listen-address", "127.0.0.1:0", *folders(tmp_path)],
        capture_output=True,
        env={**clean_env(), "HOME": str(tmp_path / "home")},
        cwd=REPO,
        timeout=WAIT,
    )
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"Error: the Claude Code dir {tmp_path / 'claude'} does not exist")
    assert not (tmp_path / "state").exists()  # no ledger was made


def test_serve_with_the_default_dirs_on_a_fresh_machine_is_ready_and_says_where_it_waits(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with serving(tmp_path / "state", [], env={"HOME": str(home), "CLAUDE_CONFIG_DIR": ""}) as daemon:
        assert daemon.log[-1].count("ready: 0 transcript file(s) found; watching") == 1
        assert f"{home}/.claude/projects" in daemon.log[-1]
        assert daemon.get("/readyz")[0] == 200


def test_serve_logs_each_passs_unusable_lines_in_one_line_and_the_page_counts_them_since_start(
    tmp_path: Path,
) -> None:
    transcript = write(tmp_path / "claude/projects/p/s.jsonl", request(1), malformed(2))
    with serving(tmp_path / "state", [tmp_path / "claude"]) as daemon:
        # The first pass logs it before "ready", so it is already in the log.
        said = [line for line in daemon.log if "malformed or unrecognised" in line]
        assert len(said) == 1 and "1 line(s) malformed or unrecognised since the last pass (1 since start)" in said[0]
        assert EXPLAIN in said[0]
        write(transcript, malformed(3), malformed(4), request(5))
        found = daemon.wait_for(r"(\d+) line\(s\) malformed or unrecognised since the last pass \((\d+) since start\)")
        assert (found[1], found[2]) == ("2", "3")
        page = daemon.get("/")[2].decode()
        shown = re.search(r'id="not-counted" data-lines="(\d+)"', page)
        assert shown is not None and shown[1] == "3"
        assert "claude-usage-exporter explain TRANSCRIPT" in page
        assert daemon.stop() == 0
