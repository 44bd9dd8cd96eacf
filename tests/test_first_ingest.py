"""A first ingest's fast path (parse workers, secondary indexes built at the end) builds the very ledger
the plain path does, a first ingest cut short leaves no index missing for good, and the lines the fast
decoder leaves to the full parser are counted."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.ledger import ingest as ingest_module
from exporter.ledger.store import DEFERRED_INDEXES, Ledger, LedgerError
from exporter.metrics.exposition import read_snapshot
from exporter.metrics.points import LabelPolicy
from exporter.pipeline import Pipeline, Setup
from tests.support.cli import cli
from tests.support.corpus import generate
from tests.support.ledgers import roll_back
from tests.support.lines import line, write


def everything(ledger: Ledger) -> dict[str, object]:
    """Every table's rows, and the schema: what two ledgers must share to be the same."""
    db = ledger.db
    tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    rows: dict[str, object] = {name: sorted(db.execute(f"SELECT * FROM {name}"), key=repr) for name in tables}
    rows["schema"] = sorted(db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master"), key=repr)
    return rows


def indexes(ledger: Ledger) -> set[str]:
    return {name for (name,) in ledger.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    generate(root, seed=17, days=6)  # every duplicate trap: forks, replays, side questions, midnight splits
    return root


@pytest.mark.parametrize("beside", [False, True], ids=["then", "beside"])
def test_the_fast_first_ingest_builds_the_same_ledger_as_the_plain_one(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch, beside: bool
) -> None:
    monkeypatch.setattr(ingest_module, "UNIT_BYTES", 64 << 10)  # many units, the same for both
    monkeypatch.setattr(ingest_module, "BATCH_BYTES", 256 << 10)  # several commits, merged across
    plain = Pipeline(Setup(state_dir=tmp_path / "plain", roots=(corpus,), timezone="UTC"))
    monkeypatch.setattr(ingest_module, "PARALLEL_BYTES", 1 << 40)  # one process, every index kept up to date
    plain.refresh(now_ms=1 << 42, beside=beside)
    assert not plain.finishing  # nothing deferred: finished in place
    fast = Pipeline(Setup(state_dir=tmp_path / "fast", roots=(corpus,), timezone="UTC"))
    monkeypatch.setattr(ingest_module, "PARALLEL_BYTES", 0)  # workers, indexes built at the end
    fast.refresh(now_ms=1 << 42, beside=beside)
    assert fast.finishing == beside
    fast.finished()
    assert everything(fast.ledger) == everything(plain.ledger)
    assert fast.ledger.counters()["lines.transcripts.usage"] > 500  # a corpus worth comparing


def test_a_first_report_read_beside_the_finishing_ledger_is_the_report_of_the_finished_one(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = cli(tmp_path, monkeypatch)
    plain = ["--claude-dir", str(corpus), "-z", "UTC", "--json"]
    waited: list[bool] = []
    finished = Pipeline.finished

    def spy(self: Pipeline) -> None:
        waited.append(self.finishing)
        finished(self)

    monkeypatch.setattr(Pipeline, "finished", spy)
    monkeypatch.setattr(ingest_module, "PARALLEL_BYTES", 0)  # a first ingest on the fast path: the report beside
    first = run("report", "daily", *plain, "--state-dir", str(tmp_path / "fast"))
    assert waited == [True]
    monkeypatch.setattr(ingest_module, "PARALLEL_BYTES", 1 << 40)
    other = run("report", "daily", *plain, "--state-dir", str(tmp_path / "plain"))
    assert first == other and '"totalCost"' in first
    fast, slow = Ledger(tmp_path / "fast"), Ledger(tmp_path / "plain")
    assert everything(fast)["prompts"] == everything(slow)["prompts"]  # closed by the thread beside
    assert set(DEFERRED_INDEXES) <= indexes(fast) and fast.meta("deferred_indexes") is None


def test_what_fails_beside_the_report_fails_the_command(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: Ledger, now_ms: int) -> int:
        raise LedgerError("the disk is full")

    monkeypatch.setattr(Ledger, "close_prompts", broken)
    monkeypatch.setattr(ingest_module, "PARALLEL_BYTES", 0)
    app = Pipeline(Setup(state_dir=tmp_path / "state", roots=(corpus,), timezone="UTC"))
    app.refresh(now_ms=1 << 42, beside=True)
    with pytest.raises(LedgerError, match="the disk is full"):
        app.finished()
    app.finished()  # told once
    run = cli(tmp_path, monkeypatch)
    out = run("report", "daily", "--claude-dir", str(corpus), "--state-dir", str(tmp_path / "again"), code=1)
    assert "the disk is full" in out


def test_indexes_a_first_ingest_killed_midway_dropped_are_built_by_the_next_ingest(
    tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = Pipeline(Setup(state_dir=tmp_path / "state", roots=(corpus,), timezone="UTC"))
    app.ledger.defer_indexes()  # as a first ingest does before its first commit; then it was killed
    assert not indexes(app.ledger) & set(DEFERRED_INDEXES)
    monkeypatch.setattr(ingest_module, "PARALLEL_BYTES", 1 << 40)  # a small ingest defers nothing
    app.refresh(now_ms=1 << 42)
    assert set(DEFERRED_INDEXES) <= indexes(app.ledger)
    assert app.ledger.meta("deferred_indexes") is None


def test_an_upgrade_builds_the_indexes_a_killed_first_ingest_dropped_before_it_migrates(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    ledger.defer_indexes()
    roll_back(ledger.db, 6)  # then the release that wrote it is replaced by a newer one
    ledger.close()
    upgraded = Ledger(tmp_path)
    assert set(DEFERRED_INDEXES) <= indexes(upgraded)
    assert upgraded.meta("deferred_indexes") is None


def test_lines_the_fast_decoder_leaves_to_the_full_parser_are_counted_and_exposed(tmp_path: Path) -> None:
    root = tmp_path / "claude"
    odd = line(m_id="msg_2", m_content=["a text block that is no object"])  # a shape it does not know
    write(root / "projects" / "p" / "s.jsonl", line(), odd, line(m_id="msg_3"))
    app = Pipeline(Setup(state_dir=tmp_path / "state", roots=(root,), timezone="UTC"))
    result = app.refresh(now_ms=1 << 42)
    assert result.outcomes["usage"] == 3  # read all the same
    assert app.ledger.counters()["slow.transcripts"] == 1
    assert "lines.transcripts.slow" not in app.ledger.counters()  # no outcome of its own
    points = read_snapshot(app.ledger, LabelPolicy(), {"version": "0", "pricing_source": "t", "pricing_version": "0"})
    assert points.points["claude_usage_exporter_slow_lines_total"] == {(("source", "transcripts"),): 1}
