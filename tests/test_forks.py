"""A forked session (`--resume ID --fork-session`) owns only its own requests, whichever file is newer.

Claude Code 2.1.197 writes a fork as a new file that starts with the fork's own lines (its prompt's queue
operation) and then copies the whole earlier conversation, ids, usage and times unchanged but for the
session id. The fixture is shaped like a real pair of such files: the original (Opus, three responses of
3, 2 and 2 lines) and its fork (the copies, then three Sonnet responses of its own). Who owns a copied
request is read from the files, never from their modification times: continuing the original after the
fork makes its file the newer one, and the original must keep its requests.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import orjson
import pytest

from exporter.ledger.schema import COLUMNS, MIGRATIONS, SCHEMA_6
from exporter.ledger.store import Ledger
from tests.support.cli import Run, cli
from tests.support.ledgers import roll_back
from tests.support.lines import assistant_line

ORIGINAL = "73ed51a7-3974-41b1-ac92-1aed8242bbae"
FORK = "4d0cb3d1-fb47-40c9-a5a4-59a233a74613"
OPUS, SONNET = "claude-opus-4-8", "claude-sonnet-4-5-20250929"
CWD = "/home/dev/notes-app"
# Opus 4.8 (5 / 6.25 / 0.50 / 25 per MTok): 1554*5 + 140*25 + 34814*0.5 + 21316*6.25 = 161,902 micro-dollars.
ORIGINAL_COST = 161_902
# Sonnet 4.5 (3 / 3.75 / 0.30 / 15): 3*3 + 140*15 + 81474*0.3 + 6348*3.75 = 50,356.2 micro-dollars.
FORK_COST = 50_356
ORIGINAL_TOKENS = 1554 + 140 + 34_814 + 21_316
FORK_TOKENS = 3 + 140 + 81_474 + 6_348


def record(session: str, **fields: object) -> bytes:
    return orjson.dumps({**fields, "sessionId": session})


def prompt(session: str, uuid: str, ts: str, text: str) -> bytes:
    return record(
        session,
        parentUuid=None,
        isSidechain=False,
        type="user",
        message={"role": "user", "content": text},
        uuid=uuid,
        timestamp=ts,
        userType="external",
        entrypoint="sdk-cli",
        cwd=CWD,
        version="2.1.197",
    )


def tool_result(session: str, uuid: str, ts: str) -> bytes:
    content = [{"tool_use_id": f"toolu_{uuid}", "type": "tool_result", "content": "ok"}]
    return record(session, type="user", message={"role": "user", "content": content}, uuid=uuid, timestamp=ts, cwd=CWD)


def response(
    session: str,
    msg: str,
    req: str,
    model: str,
    times: list[str],
    tools: list[str],
    *,
    input: int = 1,
    output: int,
    cache_read: int = 0,
    cache_5m: int = 0,
) -> bytes:
    """One response written one content block a line, each line with the same usage."""
    return b"".join(
        assistant_line(
            msg,
            req,
            ts,
            model,
            session=session,
            tools=[tool] if tool else (),
            input=input,
            output=output,
            cache_read=cache_read,
            cache_5m=cache_5m,
        )
        for ts, tool in zip(times, tools, strict=True)
    )


def queued(session: str, at: tuple[str, str], text: str) -> bytes:
    return record(session, type="queue-operation", operation="enqueue", timestamp=at[0], content=text) + (
        b"\n" + record(session, type="queue-operation", operation="dequeue", timestamp=at[1])
    )


def conversation(session: str) -> bytes:
    """The original conversation as the original's file and the fork's copy hold it (with their session id)."""
    lines = [
        prompt(session, "05b3041c-80ff-4b86-9d65-3212aea5dd1d", "2026-11-25T21:14:55.743Z", "Read notes.txt."),
        record(session, type="attachment", uuid="709231a4", timestamp="2026-11-25T21:14:55.734Z", cwd=CWD),
    ]
    out = b"".join(line + b"\n" for line in lines)
    out += response(
        session,
        "msg_0117L55FweSrK5N3ecXMNaA7",
        "req_011CUX6DpPo236CNav6VablbM6",
        OPUS,
        ["2026-11-25T21:14:56.437Z", "2026-11-25T21:14:56.917Z", "2026-11-25T21:14:57.524Z"],
        ["", "", "Read"],
        input=1552,
        output=43,
        cache_5m=17_517,
    )
    out += tool_result(session, "14d117d4", "2026-11-25T21:14:57.543Z") + b"\n"
    out += response(
        session,
        "msg_01PYUfxfNdad",
        "req_01Lu76Cq1s",
        OPUS,
        ["2026-11-25T21:14:58.510Z", "2026-11-25T21:14:59.835Z"],
        ["", "Edit"],
        input=1,
        output=66,
        cache_read=17_407,
        cache_5m=1_808,
    )
    out += tool_result(session, "410d956b", "2026-11-25T21:14:59.851Z") + b"\n"
    out += response(
        session,
        "msg_01xjaGgjKLLd",
        "req_01qq7xc1iE",
        OPUS,
        ["2026-11-25T21:15:00.814Z", "2026-11-25T21:15:01.537Z"],
        ["", ""],
        input=1,
        output=31,
        cache_read=17_407,
        cache_5m=1_991,
    )
    return out


def original_file() -> bytes:
    head = queued(ORIGINAL, ("2026-11-25T21:14:55.653Z", "2026-11-25T21:14:55.656Z"), "Read notes.txt.") + b"\n"
    return head + conversation(ORIGINAL) + record(ORIGINAL, type="last-prompt", lastPrompt="Read notes.txt.") + b"\n"


def fork_file() -> bytes:
    out = record(FORK, type="mode", mode="normal") + b"\n"
    out += queued(FORK, ("2026-11-25T21:15:40.741Z", "2026-11-25T21:15:40.742Z"), "Fork: append a line.") + b"\n"
    out += conversation(FORK)
    out += prompt(FORK, "a838a762", "2026-11-25T21:15:40.771Z", "Fork: append a line.") + b"\n"
    for msg, times, tools, output, writes in (
        ("msg_01QdkzPo00MW", ["21:15:40.868", "21:15:40.910", "21:15:40.963"], ["", "", "Read"], 43, 1_984),
        ("msg_01ekWQ8CzhPS", ["21:15:41.063", "21:15:41.178"], ["", "Edit"], 66, 2_112),
        ("msg_01HYc3tBEM7p", ["21:15:41.277", "21:15:41.339"], ["", ""], 31, 2_252),
    ):
        stamps = [f"2026-11-25T{t}Z" for t in times]
        out += response(
            FORK, msg, "req_" + msg, SONNET, stamps, tools, input=1, output=output, cache_read=27_158, cache_5m=writes
        )
    return out + record(FORK, type="last-prompt", lastPrompt="Fork: append a line.") + b"\n"


def project(claude_dir: Path) -> Path:
    folder = claude_dir / "projects/-home-dev-notes-app"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def touch(path: Path, seconds: int) -> None:
    os.utime(path, (seconds, seconds))


def sessions(run: Run) -> dict[str, tuple[int, int]]:
    """Each session's cost in micro-dollars and its tokens, from `report session --json`; `report daily
    --json` must give their sum."""
    rows = orjson.loads(run("report", "session", "--json"))["sessions"]
    found = {r["sessionId"]: (round(r["totalCost"] * 1_000_000), r["totalTokens"]) for r in rows}
    [day] = orjson.loads(run("report", "daily", "--json"))["daily"]
    costs, tokens = [cost for cost, _ in found.values()], [count for _, count in found.values()]
    assert (round(day["totalCost"] * 1_000_000), day["totalTokens"]) == (sum(costs), sum(tokens))
    return found


EXPECTED = {ORIGINAL: (ORIGINAL_COST, ORIGINAL_TOKENS), FORK: (FORK_COST, FORK_TOKENS)}


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    return cli(tmp_path, monkeypatch, in_folders=True)


@pytest.mark.parametrize("newer", ["original", "fork"])
def test_the_original_keeps_its_requests_and_the_fork_only_its_own_whichever_file_is_newer(
    claude_dir: Path, run: Run, newer: str
) -> None:
    folder = project(claude_dir)
    (folder / f"{ORIGINAL}.jsonl").write_bytes(original_file())
    (folder / f"{FORK}.jsonl").write_bytes(fork_file())
    touch(folder / f"{ORIGINAL}.jsonl", 1_800_000_000 if newer == "original" else 1_700_000_000)
    touch(folder / f"{FORK}.jsonl", 1_800_000_000 if newer == "fork" else 1_700_000_000)
    assert sessions(run) == EXPECTED


def test_the_original_read_after_its_fork_takes_its_requests_back(claude_dir: Path, run: Run) -> None:
    folder = project(claude_dir)
    (folder / f"{FORK}.jsonl").write_bytes(fork_file())
    assert sessions(run) == {FORK: (ORIGINAL_COST + FORK_COST, ORIGINAL_TOKENS + FORK_TOKENS)}  # all it knows
    (folder / f"{ORIGINAL}.jsonl").write_bytes(original_file())
    assert sessions(run) == EXPECTED


def test_continuing_the_original_after_the_fork_adds_to_the_original_only(claude_dir: Path, run: Run) -> None:
    folder = project(claude_dir)
    (folder / f"{ORIGINAL}.jsonl").write_bytes(original_file())
    (folder / f"{FORK}.jsonl").write_bytes(fork_file())
    assert sessions(run) == EXPECTED
    more = prompt(ORIGINAL, "c0ffee00", "2026-11-25T21:16:10.000Z", "And one more.") + b"\n"
    more += response(ORIGINAL, "msg_01Resumed", "req_01Resumed", OPUS, ["2026-11-25T21:16:11.000Z"], [""], output=40)
    with (folder / f"{ORIGINAL}.jsonl").open("ab") as f:
        f.write(more)
    # 1 input * 5 + 40 output * 25 = 1,005 micro-dollars more, all the original's.
    assert sessions(run) == {ORIGINAL: (ORIGINAL_COST + 1_005, ORIGINAL_TOKENS + 41), FORK: EXPECTED[FORK]}


def test_a_ledger_that_gave_the_fork_the_originals_requests_re_derives_them_on_upgrade(
    claude_dir: Path, tmp_path: Path, run: Run
) -> None:
    folder = project(claude_dir)
    (folder / f"{ORIGINAL}.jsonl").write_bytes(original_file())
    (folder / f"{FORK}.jsonl").write_bytes(fork_file())
    assert sessions(run) == EXPECTED
    # The ledger as the previous release (schema 5) left it: the fork owns every copied request, every
    # file read to its end, and an OTLP event waiting in the previous release's row shape.
    db = sqlite3.connect(tmp_path / "state" / Ledger.FILE, isolation_level=None)
    db.execute("UPDATE requests SET session_id = ?", (FORK,))
    old_row = [*db.execute(f"SELECT {COLUMNS} FROM requests LIMIT 1").fetchone()][:-1]  # no origin yet
    old_row[:2] = ["req_pending", "req_pending"]
    db.execute(
        "INSERT INTO pending (request_id, received, request) VALUES ('req_pending', 0, ?)", (orjson.dumps(old_row),)
    )
    roll_back(db, MIGRATIONS.index(SCHEMA_6))
    before = db.execute(
        "SELECT sum(cost), sum(requests), sum(output), (SELECT sum(copies) FROM requests) FROM usage_series"
    ).fetchone()
    counters = dict(db.execute("SELECT name, value FROM counters"))
    db.close()
    assert sessions(run) == EXPECTED
    ledger = Ledger(tmp_path / "state")
    try:
        after = ledger.db.execute(
            "SELECT sum(cost), sum(requests), sum(output), (SELECT sum(copies) FROM requests) FROM usage_series"
        ).fetchone()
        assert after == before  # the same requests and copies: only their sessions changed
        assert ledger.counters() == counters  # re-read, not counted again
        assert min(offset for (offset,) in ledger.db.execute("SELECT offset FROM files")) > 0
        (row,) = ledger.db.execute("SELECT request FROM pending").fetchall()
        assert len(orjson.loads(row[0])) == 26
    finally:
        ledger.close()
