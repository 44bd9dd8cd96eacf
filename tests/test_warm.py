"""A warm `report --json`: answered from the ledger's cache without click, byte for byte what the full
command prints, and never when anything the answer depends on has changed (then the full command runs)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.cli import warm
from tests.support.cli import Run, cli, folders
from tests.support.lines import line, write

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    write(tmp_path / "claude/projects/p/s1.jsonl", line(), line(m_id="msg_2", timestamp="2026-08-21T09:00:00Z"))
    write(tmp_path / "claude/projects/p/s1/subagents/agent-a.jsonl", line(m_id="msg_3", sessionId="s1"))
    return cli(tmp_path, monkeypatch)


def answer(*args: str) -> bytes | None:
    return warm.answer(["report", *args], os.environ)


@pytest.mark.parametrize(
    "args",
    [
        ("daily", "--json"),
        ("weekly", "--json", "--start-of-week", "monday"),
        ("monthly", "--by=project", "--json", "--mode", "calculate"),
        ("session", "--json", "--since", "20260820", "--until=2026-08-21", "--breakdown", "--width", "40"),
    ],
)
def test_a_warm_report_prints_what_the_full_command_printed(run: Run, tmp_path: Path, args: tuple[str, ...]) -> None:
    printed = run("report", *args, *folders(tmp_path))
    assert answer(*args, *folders(tmp_path)) == printed.encode().removesuffix(b"\n")
    assert printed == run("report", *args, *folders(tmp_path))  # the full command again: the same


def test_new_bytes_a_new_file_or_a_file_gone_send_the_report_to_the_full_command(run: Run, tmp_path: Path) -> None:
    flags = ("daily", "--json", *folders(tmp_path))
    run("report", *flags)
    session = tmp_path / "claude/projects/p/s1.jsonl"
    with session.open("ab") as f:
        f.write(line(m_id="msg_4", timestamp="2026-08-22T09:00:00Z") + b"\n")
    assert answer(*flags) is None
    printed = run("report", *flags)
    assert "2026-08-22" in printed and answer(*flags) == printed.encode().removesuffix(b"\n")
    write(tmp_path / "claude/projects/p/s2.jsonl", line(m_id="msg_5", sessionId="s2"))
    assert answer(*flags) is None
    run("report", *flags)
    (tmp_path / "claude/projects/p/s2.jsonl").unlink()
    assert answer(*flags) is None


def test_an_empty_transcript_needs_no_full_command(run: Run, tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/p/empty.jsonl")
    printed = run("report", "daily", "--json", *folders(tmp_path))
    assert answer("daily", "--json", *folders(tmp_path)) == printed.encode().removesuffix(b"\n")


@pytest.mark.parametrize(
    "args",
    [
        ("daily",),  # a table: the full command draws it
        ("blocks", "--json"),  # depends on the clock: never cached
        ("daily", "--json", "--since", "2026-13-01"),
        ("daily", "--json", "--since", "2026-08-22", "--until", "2026-08-21"),
        ("daily", "--json", "--by", "colour"),
        ("daily", "--json", "--width", "5"),
        ("daily", "--json", "-z", "Mars/Olympus_Mons"),
        ("daily", "--json", "--config", "/nonexistent.yaml"),
        ("daily", "--json", "--unknown"),
        ("daily", "--json", "--since"),
        ("daily", "weekly", "--json"),
    ],
)
def test_what_the_full_command_would_say_otherwise_goes_to_it(run: Run, tmp_path: Path, args: tuple[str, ...]) -> None:
    run("report", "daily", "--json", *folders(tmp_path))
    assert answer(*folders(tmp_path), *args) is None  # after the folders' `-z UTC`: the last one counts


def test_settings_from_the_environment_go_to_the_full_command(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run("report", "daily", "--json", *folders(tmp_path))
    monkeypatch.setenv("CLAUDE_USAGE_EXPORTER_PRICING_MODE", "calculate")
    assert answer("daily", "--json", *folders(tmp_path)) is None


def test_prices_fingerprinted_otherwise_send_the_report_to_the_full_command(run: Run, tmp_path: Path) -> None:
    # As after a daemon with price overrides repriced the ledger: the full command reprices it back.
    run("report", "daily", "--json", *folders(tmp_path))
    with sqlite3.connect(tmp_path / "state/ledger.sqlite3") as db:
        db.execute("UPDATE meta SET value = 'overridden' WHERE key = 'fingerprint'")
    assert answer("daily", "--json", *folders(tmp_path)) is None


@pytest.mark.parametrize(
    "change",
    [
        "INSERT INTO meta (key, value) VALUES ('deferred_indexes', '{}')",  # a first ingest killed before its indexes
        "INSERT INTO prompts (key, session_id, ts, project) VALUES ('k', 's1', 0, 'p')",  # a prompt still open
        "UPDATE meta SET value = value + 1 WHERE key = 'generation'",  # requests changed since the document
        "DELETE FROM meta WHERE key = 'warm'",  # never stamped
    ],
)
def test_a_ledger_the_full_command_would_change_or_recompute_goes_to_it(run: Run, tmp_path: Path, change: str) -> None:
    run("report", "daily", "--json", *folders(tmp_path))
    with sqlite3.connect(tmp_path / "state/ledger.sqlite3") as db:
        db.execute(change)
    assert answer("daily", "--json", *folders(tmp_path)) is None


def test_a_change_in_the_package_sends_the_report_to_the_full_command(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "package"
    (package / "pricing").mkdir(parents=True)
    (package / "pricing/fast_prices.toml").write_text("# as shipped\n")
    monkeypatch.setattr(warm, "PACKAGE", package)
    run("report", "daily", "--json", *folders(tmp_path))
    assert answer("daily", "--json", *folders(tmp_path)) is not None
    (package / "pricing/fast_prices.toml").write_text("# edited: prices may differ\n")
    assert answer("daily", "--json", *folders(tmp_path)) is None


def test_a_warm_report_loads_neither_click_nor_the_ingest(run: Run, tmp_path: Path) -> None:
    printed = run("report", "daily", "--json", *folders(tmp_path))
    heavy = ("click", "orjson", "pydantic", "msgspec", "exporter.ledger.store", "exporter.pricing.prices")
    # The answer ends the process with os._exit: the child looks at its modules there.
    child = (
        "import os, runpy, sys\n"
        "end = os._exit\n"
        f"loaded = lambda: sorted(m for m in {heavy!r} if m in sys.modules)\n"
        "os._exit = lambda code: (print(loaded(), file=sys.stderr), end(code))\n"
        f"sys.argv = ['exporter', 'report', 'daily', '--json', *{folders(tmp_path)!r}]\n"
        "runpy.run_module('exporter', run_name='__main__')\n"
    )
    done = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr, done.stdout) == (0, "[]\n", printed)


def test_the_machines_zone_is_the_one_the_full_command_takes(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = ("daily", "--json", *folders(tmp_path)[:4])  # no -z
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    printed = run("report", *flags)
    assert answer(*flags) == printed.encode().removesuffix(b"\n")
    monkeypatch.setenv("TZ", "Nowhere/Atlantis")  # the full command takes /etc/localtime's zone, or UTC
    run("report", *flags)
    assert answer(*flags) is None


def test_a_reader_gone_ends_a_warm_report_as_it_ends_the_full_command(run: Run, tmp_path: Path) -> None:
    run("report", "daily", "--json", *folders(tmp_path))
    command = [sys.executable, "-m", "exporter", "report", "daily", "--json", *folders(tmp_path)]
    env = {**os.environ, "CLAUDE_USAGE_EXPORTER_CONFIG": str(tmp_path / "empty.yaml")}  # the full command
    (tmp_path / "empty.yaml").write_text("{}\n")
    ends = []
    for path_env in (os.environ, env):
        reader, writer = os.pipe()
        os.close(reader)  # gone before a byte is written
        with os.fdopen(writer, "wb") as stdout:
            done = subprocess.run(command, cwd=ROOT, env=path_env, stdout=stdout, stderr=subprocess.PIPE, timeout=60)
        ends.append((done.returncode, done.stderr))
    assert ends == [(1, b""), (1, b"")]


def test_documents_cached_by_other_code_are_dropped_before_the_full_command_answers(
    run: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "package"
    package.mkdir()
    (package / "report.py").write_text("# the release that cached the documents\n")
    monkeypatch.setattr(warm, "PACKAGE", package)
    printed = run("report", "daily", "--json", *folders(tmp_path))
    with sqlite3.connect(tmp_path / "state/ledger.sqlite3") as db:
        db.execute("UPDATE reports SET body = ?", (b'{"shape": "of an older release"}',))
    assert run("report", "daily", "--json", *folders(tmp_path)) != printed  # the same code: the cache answers
    (package / "report.py").write_text("# an upgrade: a report's shape may have changed\n")
    assert run("report", "daily", "--json", *folders(tmp_path)) == printed
