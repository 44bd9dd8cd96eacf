"""The command line: reports, explain, pricing, check-config, and its errors."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from exporter.cli.commands import main
from tests.support.cli import Run, cli, folders
from tests.support.lines import line, write


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    return cli(tmp_path, monkeypatch)


def test_report_daily_json_counts_a_fork_once(run: Run, tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", line(), line(m_id="msg_2", timestamp="2026-08-21T09:00:00Z"))
    write(tmp_path / "claude/projects/p/fork.jsonl", line(sessionId="fork"))
    data = orjson.loads(run("report", "daily", "--json", *folders(tmp_path)))
    assert [(d["date"], d["requests"], d["outputTokens"]) for d in data["daily"]] == [
        ("2026-08-20", 1, 135),
        ("2026-08-21", 1, 135),
    ]
    assert data["totals"]["totalTokens"] == 2 * (10 + 135 + 22820 + 9907)


def test_the_table_report_shows_totals_and_the_category_split(run: Run, tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", line())
    out = run("report", "monthly", "--breakdown", *folders(tmp_path))
    assert "2026-08" in out and "Total" in out and "claude-haiku-4-5-20251001" in out
    assert "By category: direct_interaction $0.02 (100%) · context_processing $0.00 (0%)" in out


def test_no_transcripts_is_a_clear_error_naming_where_it_looked(run: Run, tmp_path: Path) -> None:
    out = run("report", "daily", "--state-dir", str(tmp_path / "state"), code=1)
    home = tmp_path / "home"
    assert out == (
        f"Error: no Claude Code transcripts found (looked in {home}/.config/claude/projects,"
        f" {home}/.claude/projects); set CLAUDE_CONFIG_DIR or --claude-dir\n"
    )


def test_claude_config_dir_may_list_several_roots(run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "a/projects/p/s1.jsonl", line())
    write(tmp_path / "b/projects/p/s2.jsonl", line(m_id="msg_2"))
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", f"{tmp_path / 'a'},{tmp_path / 'b'}")
    data = orjson.loads(run("report", "daily", "--json", "--state-dir", str(tmp_path / "state")))
    assert data["totals"]["requests"] == 2


def test_an_unusable_state_dir_is_a_clear_error(run: Run, tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", line())
    (tmp_path / "blocker").write_text("a file, not a folder")
    out = run(
        "report",
        "daily",
        "--claude-dir",
        str(tmp_path / "claude"),
        "--state-dir",
        str(tmp_path / "blocker/state"),
        code=1,
    )
    assert out.startswith(f"Error: cannot open the ledger at {tmp_path}/blocker/state/ledger.sqlite3:")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-z", "Mars/Olympus"], "Invalid value for --timezone: 'Mars/Olympus' is not an IANA time zone"),
        (["--since", "yesterday"], "Invalid value for '--since': 'yesterday' is not a date: use YYYY-MM-DD"),
        (["--since", "2026-02-02", "--until", "2026-02-01"], "Invalid value: --since is after --until"),
    ],
)
def test_bad_flags_are_named(run: Run, tmp_path: Path, args: list[str], message: str) -> None:
    out = run("report", "daily", "--state-dir", str(tmp_path / "state"), *args, code=2)
    assert out.splitlines()[-1] == f"Error: {message}"


def test_explain_shows_each_request_and_what_it_duplicates(run: Run, tmp_path: Path) -> None:
    first = write(tmp_path / "claude/projects/p/s1.jsonl", line(), line(m_content=[{"type": "text", "text": "x"}]))
    switch = line(sessionId="fork", m_id="msg_new", m_model="claude-opus-4-8", timestamp="2026-08-20T11:00:00Z")
    fork = write(tmp_path / "claude/projects/p/fork.jsonl", line(sessionId="fork"), switch)
    run("report", "daily", *folders(tmp_path))
    rows = orjson.loads(run("explain", str(fork), "--json", *folders(tmp_path)))
    T = "2026-08-20T10:21:56.612Z"
    assert [(r["line"], r["key"], r["duplicate"], r["modelSwitch"]) for r in rows] == [
        (1, "msg_011CeDq", f"1 line; fork or replay of a request first seen {T} in session 9c42ba52", None),
        (2, "msg_new", "1 line", "haiku→opus"),
    ]
    [original] = orjson.loads(run("explain", str(first), "--json", *folders(tmp_path)))
    assert (original["duplicate"], original["interaction"], original["category"]) == (
        "2 lines",
        "command",
        "direct_interaction",
    )
    assert original["cost"] == pytest.approx((10 * 1 + 135 * 5 + 22820 * 0.1 + 9907 * 2) / 1e6)
    assert "Requests in this transcript" in run("explain", str(first), *folders(tmp_path))


def test_pricing_shows_one_model_and_its_source(run: Run, tmp_path: Path) -> None:
    [quote] = orjson.loads(run("pricing", "claude-sonnet-4-5-20250929", "--json"))
    assert quote["rates"] == {
        "input": "3",
        "output": "15",
        "cache_read": "0.3",
        "cache_write_5m": "3.75",
        "cache_write_1h": "6",
        "web_search_per_1k": "10",
    }
    assert quote["longContext"]["aboveInputTokens"] == 200_000
    assert quote["source"].startswith("genai-prices ")
    assert "claude-haiku-4-5" in run("pricing")


def test_pricing_an_unknown_model_says_it_is_unpriced(run: Run) -> None:
    out = run("pricing", "claude-mystery-9", code=1)
    assert out == "Error: no price known for 'claude-mystery-9': its tokens are counted as unpriced\n"


def test_check_config_accepts_a_good_file_and_lists_every_error_of_a_bad_one(run: Run, tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("timezone: UTC\n")
    assert run("check-config", str(good)).startswith(f"{good}: OK (timezone UTC;")
    bad = tmp_path / "bad.yaml"
    bad.write_text("timezone: Mars/Olympus\nlabels: {projects: name}\n")
    out = run("check-config", str(bad), code=1)
    assert out.splitlines()[1:] == [
        "  labels.projects: unknown key",
        "  timezone: invalid time zone 'Mars/Olympus': use an IANA name such as Europe/Berlin",
    ]


def test_a_config_file_sets_the_zone_and_prices(run: Run, tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", line(timestamp="2026-08-20T23:30:00Z"))
    config = tmp_path / "config.yaml"
    config.write_text(
        f"timezone: Asia/Tokyo\nstate_dir: {tmp_path / 'state'}\n"
        f"sources: {{transcripts: {{roots: [{tmp_path / 'claude'}]}}}}\n"
        "pricing: {overrides: [{model: 'claude-haiku-*', input: 0, output: 1000000, cache_read: 0,"
        " cache_write_5m: 0, cache_write_1h: 0}]}\n"
    )
    data = orjson.loads(run("report", "daily", "--json", "--config", str(config)))
    assert [(d["date"], d["totalCost"]) for d in data["daily"]] == [("2026-08-21", 135.0)]


GOLDEN = Path(__file__).parent / "golden"
# Where the terminal is and how it looks: a dumb terminal (rich's TTY_COMPATIBLE) draws lines but no colour.
STYLES = {"terminal": {"TTY_COMPATIBLE": "1", "TERM": "dumb"}, "pipe": {"TTY_COMPATIBLE": "0"}}


def two_days(tmp_path: Path) -> Path:
    return write(
        tmp_path / "claude/projects/p/s1.jsonl",
        line(),
        line(m_id="msg_2", m_model="claude-opus-4-8", timestamp="2026-08-21T09:00:00Z"),
    )


def a_fork(tmp_path: Path) -> Path:
    write(tmp_path / "claude/projects/p/s1.jsonl", line(), line(m_content=[{"type": "text", "text": "x"}]))
    switch = line(sessionId="fork", m_id="msg_new", m_model="claude-opus-4-8", timestamp="2026-08-20T11:00:00Z")
    return write(tmp_path / "claude/projects/p/fork.jsonl", line(sessionId="fork"), switch)


def golden_table(run: Run, tmp_path: Path, table: str, width: int) -> str:
    if table == "pricing":
        return run("pricing", "--width", str(width))
    if table == "explain":
        fork = a_fork(tmp_path)
        run("report", "daily", *folders(tmp_path))
        return run("explain", str(fork), "--width", str(width), *folders(tmp_path))
    two_days(tmp_path)
    args = ["daily"] if table == "report-daily" else ["monthly", "--breakdown"]
    return run("report", *args, "--width", str(width), *folders(tmp_path))


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("table", ["report-daily", "report-monthly-breakdown", "pricing", "explain"])
def test_each_table_matches_its_golden_rendering_at_80_and_120_columns(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, table: str, width: int, style: str
) -> None:
    for name, value in STYLES[style].items():
        monkeypatch.setenv(name, value)
    out = golden_table(run, tmp_path, table, width)
    golden = GOLDEN / f"{table}-{width}-{style}.txt"
    if os.environ.get("UPDATE_GOLDEN") == "1":  # regenerate after a deliberate change, then read the diff
        golden.write_text(out)
    assert out == golden.read_text()
    assert max(len(row) for row in out.splitlines()) <= width


def test_a_narrow_table_leaves_out_columns_but_never_cuts_a_date_a_model_or_a_number(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TERM", "dumb")
    two_days(tmp_path)
    out = run("report", "monthly", "--breakdown", "--width", "60", *folders(tmp_path))
    assert "…" not in out
    for whole in ("2026-08", "claude-haiku-4-5-20251001", "claude-opus-4-8", "65,744", "$0.14"):
        assert whole in out
    assert "Cache create" not in out  # the least important column went first


def test_wide_keeps_every_column_and_a_pipe_gets_them_all_without_lines(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    two_days(tmp_path)
    monkeypatch.setenv("TTY_COMPATIBLE", "0")
    monkeypatch.delenv("COLUMNS")
    piped = run("report", "daily", *folders(tmp_path)).splitlines()
    header = [
        "Date",
        "Models",
        "Input",
        "Output",
        "Cache create",
        "Cache read",
        "Total tokens",
        "Requests",
        "Cost (USD)",
    ]
    assert re.split(" {2,}", piped[1]) == header
    assert re.split(" {2,}", piped[2]) == [
        "2026-08-20",
        "claude-haiku-4-5-20251001",
        *["10", "135", "9,907", "22,820"],
        *["32,872", "1", "$0.02"],
    ]
    assert not any(set(row) & set("│┃━─") for row in piped)
    assert all(row == row.rstrip() for row in piped)
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TERM", "dumb")
    wide = run("report", "daily", "--wide", *folders(tmp_path)).splitlines()
    assert len(wide[2]) > 80 and "Cache create" in wide[2] and "Requests" in wide[2]


def test_the_configuration_page_lists_every_environment_variable() -> None:
    from exporter.config import ENV_VARS

    readme = (Path(__file__).parent.parent / "docs/configuration.md").read_text()
    assert [name for name in ENV_VARS if f"`{name}`" not in readme] == []


def test_the_docs_config_examples_are_valid_configs(run: Run, tmp_path: Path) -> None:
    docs = Path(__file__).parent.parent / "docs"
    pages = ("budgets-and-statusline", "configuration", "team-mode")
    readme = "".join((docs / f"{page}.md").read_text() for page in pages)
    examples = [block for block in re.findall(r"```yaml\n(.*?)```", readme, re.S) if block.startswith("timezone:")]
    assert len(examples) == 2  # the budgets section's and the full one
    for example in examples:
        config = tmp_path / "config.yaml"
        config.write_text(example)
        checked = run("check-config", str(config))
        assert checked.startswith(f"{config}: OK (timezone Europe/Berlin; sources: transcripts;")
    [team] = [block for block in re.findall(r"```yaml\n(.*?)```", readme, re.S) if block.startswith("# team.yaml")]
    config.write_text(team)
    expected = f"{config}: OK (timezone Europe/Berlin; sources: OTLP on 0.0.0.0:4318;"
    assert run("check-config", str(config)).startswith(expected)


def test_serve_logs_json_lines_when_the_environment_asks(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", line())
    monkeypatch.setenv("CLAUDE_USAGE_EXPORTER_LOG_FORMAT", "json")
    result = CliRunner().invoke(main, ["serve", "--once", *folders(tmp_path)])
    assert result.exit_code == 0, result.output
    logged = [orjson.loads(entry) for entry in result.stderr.splitlines()]
    assert [(entry["level"], entry["msg"].split(" ")[0]) for entry in logged] == [
        ("info", "ingested"),
        ("info", "ready:"),
    ]


def test_serve_on_a_port_in_use_says_which_address_and_exits_1(run: Run, tmp_path: Path) -> None:
    import socket

    (tmp_path / "claude").mkdir()  # a Claude Code dir given by name must exist
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        out = run("serve", "--web.listen-address", address, *folders(tmp_path), code=1)
    assert out == f"Error: cannot listen on {address}: Address already in use\n"


def test_serve_with_a_missing_bearer_tokens_file_names_the_file_and_exits_1(run: Run, tmp_path: Path) -> None:
    config = tmp_path / "team.yaml"
    missing = tmp_path / "tokens"
    (tmp_path / "claude").mkdir()  # a Claude Code dir given by name must exist
    config.write_text(f"sources:\n  otlp: {{enabled: true, listen: 127.0.0.1:0, bearer_tokens_file: {missing}}}\n")
    # Port 0: the metrics listener may bind before the tokens file is read, and 9477 may be taken here.
    out = run("serve", "--config", str(config), "--web.listen-address", "127.0.0.1:0", *folders(tmp_path), code=1)
    assert out == f"Error: cannot read sources.otlp.bearer_tokens_file {missing}: No such file or directory\n"


def budget_config(tmp_path: Path) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(
        "week_start: sunday\nbudgets:\n  - {name: daily, window: day, limit_usd: 20}\n"
        "  - {name: notes-week, window: week, limit_usd: 0.01, filter: {project: acme-api}}\n"
    )
    return config


def test_report_budgets_json_gives_each_budgets_window_spend_and_status(run: Run, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    write(tmp_path / "claude/projects/p/s1.jsonl", line(timestamp=now.strftime("%Y-%m-%dT%H:%M:%S.000Z")))
    data = orjson.loads(
        run("report", "budgets", "--json", "--config", str(budget_config(tmp_path)), *folders(tmp_path))
    )
    daily, weekly = data["budgets"]
    cost = 10 * 1e-6 + 135 * 5e-6 + 22820 * 0.1e-6 + 9907 * 2e-6  # Haiku 4.5, the cache write for 1 h
    assert (data["timezone"], daily["name"], daily["spendUSD"], daily["status"]) == ("UTC", "daily", cost, "ok")
    assert daily["windowStart"] == now.strftime("%Y-%m-%dT00:00:00.000Z")
    sunday = now.date() - timedelta(days=(now.weekday() + 1) % 7)
    assert (weekly["filter"], weekly["spendUSD"], weekly["status"]) == ({"project": "acme-api"}, cost, "exceeded")
    assert weekly["windowStart"] == f"{sunday.isoformat()}T00:00:00.000Z"


def test_report_budgets_table_and_the_error_without_budgets(run: Run, tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/s1.jsonl", line())
    table = run("report", "budgets", "--config", str(budget_config(tmp_path)), *folders(tmp_path))
    assert re.search(r"notes-week .* week .* project=acme-api .* \$0\.00 .* \$0\.01 .* 0% .* ok", table)
    error = run("report", "budgets", *folders(tmp_path), code=1)
    assert "no budgets configured: add a `budgets:` list to the config file" in error
