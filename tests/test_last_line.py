"""A last line without its newline: held back while the file may still be written, counted once the file
has stopped growing if it is a whole JSON object (as ccusage counts it), and never twice when the newline
or more lines come later. "Stopped growing" is the file's mtime against an injected clock: no sleeps."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from exporter.ledger.ingest import QUIET_NS
from exporter.ledger.store import Ledger
from exporter.pipeline import Pipeline
from tests.support.cli import Run, cli
from tests.support.lines import request

# Each request(n) is Haiku 4.5: 10*1 + 135*5 + 22820*0.1 + 9907*2 = 22,781 micro-dollars, 32,872 tokens.
COST, TOKENS = 22_781, 10 + 135 + 22_820 + 9_907
MTIME_NS = 1_750_000_000 * 1_000_000_000  # the file's modification time, set by the test: long past


def transcript(claude_dir: Path, content: bytes) -> Path:
    path = claude_dir / "projects/-home-dev-acme-api/9c42ba52.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    os.utime(path, ns=(MTIME_NS, MTIME_NS))
    return path


def append(path: Path, more: bytes) -> None:
    with path.open("ab") as f:
        f.write(more)
    os.utime(path, ns=(MTIME_NS + QUIET_NS, MTIME_NS + QUIET_NS))


def daily(run: Run) -> tuple[int, int]:
    """The day's cost in micro-dollars and its tokens; `report session` gives the one session the same."""
    [day] = orjson.loads(run("report", "daily", "--json"))["daily"]
    [session] = orjson.loads(run("report", "session", "--json"))["sessions"]
    totals = round(day["totalCost"] * 1_000_000), day["totalTokens"]
    assert (round(session["totalCost"] * 1_000_000), session["totalTokens"]) == totals
    return totals


def lines(tmp_path: Path) -> dict[str, int]:
    ledger = Ledger(tmp_path / "state")
    try:
        return {k.removeprefix("lines.transcripts."): v for k, v in ledger.counters().items() if k.startswith("lines.")}
    finally:
        ledger.close()


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    return cli(tmp_path, monkeypatch, in_folders=True)


def test_a_whole_last_line_without_a_newline_in_a_file_that_stopped_growing_is_counted_once(
    claude_dir: Path, tmp_path: Path, run: Run
) -> None:
    path = transcript(claude_dir, request(1) + b"\n" + request(2))  # mtime long past: stopped growing
    assert daily(run) == (2 * COST, 2 * TOKENS)
    assert lines(tmp_path) == {"usage": 2}
    append(path, b"\n")  # the newline comes after all
    assert daily(run) == (2 * COST, 2 * TOKENS)
    append(path, request(3) + b"\n")
    assert daily(run) == (3 * COST, 3 * TOKENS)
    assert lines(tmp_path) == {"usage": 3}  # the late newline is not a line of its own


def test_a_line_glued_to_a_counted_last_line_is_counted_once_too(claude_dir: Path, tmp_path: Path, run: Run) -> None:
    path = transcript(claude_dir, request(1))
    assert daily(run) == (COST, TOKENS)
    append(path, request(2) + b"\n\n")
    assert daily(run) == (2 * COST, 2 * TOKENS)
    assert lines(tmp_path)["usage"] == 2


def test_a_last_line_in_a_file_still_growing_waits_for_the_file_to_stop(
    claude_dir: Path, tmp_path: Path, make_app: Callable[..., Pipeline], run: Run
) -> None:
    transcript(claude_dir, request(1) + b"\n" + request(2))
    app = make_app()
    app.refresh(now_ms=(MTIME_NS + QUIET_NS) // 1_000_000 - 1)  # modified a moment ago
    assert [r.key for r in app.ledger.requests()] == ["msg_001"]
    app.refresh(now_ms=(MTIME_NS + QUIET_NS) // 1_000_000)
    assert sorted(r.key for r in app.ledger.requests()) == ["msg_001", "msg_002"]
    assert daily(run) == (2 * COST, 2 * TOKENS)


def test_a_partial_last_line_is_never_counted_however_quiet_the_file_and_counts_once_when_finished(
    claude_dir: Path, tmp_path: Path, run: Run
) -> None:
    whole = request(2)
    path = transcript(claude_dir, request(1) + b"\n" + whole[:-40])
    assert daily(run) == (COST, TOKENS)
    assert lines(tmp_path) == {"usage": 1}
    append(path, whole[-40:] + b"\n")
    assert daily(run) == (2 * COST, 2 * TOKENS)
    assert lines(tmp_path) == {"usage": 2}
