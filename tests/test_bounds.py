"""Hostile sizes and times: a 10 MB model, id, project or tool name, or a timestamp in year 9999, from
either source, never reaches the ledger or a label as it came; an older ledger holding such values is
repaired when it is opened (issue 13, items 2 and 7)."""

from __future__ import annotations

import http.client
import re
import sqlite3
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.daemon.team import Team
from exporter.events import MAX_CHARS, SHORTENED_CHARS, Request, UsageEvent, project_name, shorten
from exporter.ledger.schema import MIGRATIONS, SCHEMA_5
from exporter.ledger.store import Ledger
from exporter.metrics.exposition import TEXT, Exposition, Health, read_snapshot
from exporter.metrics.points import LabelPolicy
from exporter.pipeline import Pipeline
from exporter.sources.otlp import JSON, PROTOBUF, decode_logs, decode_metrics
from exporter.sources.transcripts import parse_chunk
from tests.support import otlpgen
from tests.support.daemon import serving
from tests.support.exposition import samples
from tests.support.ledgers import roll_back
from tests.support.lines import BASE, assistant_line, line, write

HUGE = 10 * 1024 * 1024  # characters: the size that made /metrics 124.8 MB
BUILD = {"version": "0.0.0", "pricing_source": "genai-prices", "pricing_version": "0.2.3"}
GOOD_TS = "2026-11-25T21:13:52.256Z"
NOW = datetime(2026, 11, 26, tzinfo=UTC)  # the wall clock the parsers are given in the pure tests
LABEL_VALUE = re.compile(r'="((?:[^"\\]|\\.)*)"')


def exposition(app: Pipeline) -> str:
    health = Health(source_up={"transcripts": 1})
    shown = Exposition(health, BUILD)
    try:
        shown.update(read_snapshot(app.ledger, LabelPolicy(user=True), BUILD))
        return shown.render(TEXT, process=False).decode()
    finally:
        shown.close()


def longest_label(text: str) -> int:
    return max(len(value) for value in LABEL_VALUE.findall(text))


def strings(app: Pipeline) -> list[str]:
    """Every string stored in the ledger's tables of usage, whatever the column (meta and reports hold
    our own documents: price look-ups, report caches)."""
    return stored(app.ledger.db)


def stored(db: sqlite3.Connection) -> list[str]:
    found = []
    tables = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT IN ('meta', 'reports')"
    for (table,) in db.execute(tables).fetchall():
        for row in db.execute(f"SELECT * FROM {table}"):
            found += [v for v in row if isinstance(v, str)]
    return found


def lines_total(text: str, source: str) -> dict[str, float]:
    found = samples(text, "claude_usage_exporter_lines_total")
    return {k.split('"')[1]: v for k, v in found.items() if f'source="{source}"' in k and v}


# --- transcripts ---------------------------------------------------------------------------------


def test_a_ten_megabyte_model_in_a_transcript_line_is_malformed_and_stored_nowhere(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    write(
        claude_dir / "projects" / "-home-dev-notes-app" / "s1.jsonl",
        assistant_line("msg_1", "req_1", GOOD_TS).rstrip(b"\n"),
        assistant_line("msg_2", "req_2", GOOD_TS, "m" * HUGE).rstrip(b"\n"),
    )
    app = make_app()
    app.refresh()
    assert [r.key for r in app.ledger.requests()] == ["msg_1"]
    assert max(map(len, strings(app))) <= SHORTENED_CHARS
    text = exposition(app)
    assert lines_total(text, "transcripts") == {"usage": 1, "malformed": 1}
    assert longest_label(text) <= SHORTENED_CHARS
    assert len(text) < 64 * 1024  # it was 162 MB


@pytest.mark.parametrize("field", ["m_id", "requestId", "sessionId", "m_model"])
def test_an_id_or_model_longer_than_any_real_one_makes_the_line_malformed(field: str) -> None:
    longest, too_long = "x" * MAX_CHARS, "x" * (MAX_CHARS + 1)
    chunk = line(**{field: too_long}, m_id="msg_bad") if field != "m_id" else line(m_id=too_long)
    chunk += b"\n" + line(**{field: longest}, m_id="msg_ok") if field != "m_id" else b"\n" + line(m_id=longest)
    counts: Counter[str] = Counter()
    assert [e.key for e in parse_chunk(chunk + b"\n", counts, now=NOW)] == ["msg_ok" if field != "m_id" else longest]
    assert counts == Counter({"malformed": 1})


def test_a_long_project_and_tool_are_shortened_keeping_two_long_values_apart(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    common = "p" * 200
    first, second = f"/home/{common}-one", f"/home/{common}-two"
    tool = "mcp__" + "s" * HUGE + "__x"
    content = [{"type": "tool_use", "id": "toolu_1", "name": tool, "input": {}}]
    write(
        claude_dir / "projects" / "-home-dev-x" / "s1.jsonl",
        line(cwd=first, m_id="msg_1", requestId="req_1", m_content=content),
        line(cwd=second, m_id="msg_2", requestId="req_2"),
    )
    app = make_app()
    app.refresh()
    projects = {r.key: r.project for r in app.ledger.requests()}
    assert projects == {"msg_1": shorten(common + "-one"), "msg_2": shorten(common + "-two")}
    assert projects["msg_1"] != projects["msg_2"] and len(projects["msg_1"]) == SHORTENED_CHARS
    assert projects["msg_1"].startswith(common[:MAX_CHARS] + "~")
    [tools] = [r.tools for r in app.ledger.requests() if r.key == "msg_1"]
    assert tools == {shorten(tool)}
    text = exposition(app)
    assert longest_label(text) == SHORTENED_CHARS
    assert lines_total(text, "transcripts") == {"usage": 2}


def test_shortening_is_idempotent_and_leaves_short_values_alone() -> None:
    long = "a" * 1000
    assert shorten("claude-sonnet-4-5") == "claude-sonnet-4-5"
    assert shorten(shorten(long)) == shorten(long) != shorten(long + "b")
    assert shorten("a" * MAX_CHARS) == "a" * MAX_CHARS
    assert project_name("/x/" + long) == shorten(long)


# --- OTLP ----------------------------------------------------------------------------------------


def otlp_logs(content_type: str, *records: dict[str, Any], resource: dict[str, object] | None = None) -> bytes:
    body = otlpgen.logs_body(list(records), resource)
    return otlpgen.to_json(body) if content_type == JSON else otlpgen.to_protobuf(body)


def apply(app: Pipeline, team: Team, body: bytes, content_type: str) -> None:
    logs = decode_logs(body, content_type)
    done: Future[None] = Future()
    for finished in team.apply(app, [(logs, done)], int(datetime.now(UTC).timestamp() * 1000)):
        finished.set_result(None)


@pytest.mark.parametrize("content_type", [JSON, PROTOBUF])
def test_a_ten_megabyte_model_in_an_api_request_event_is_rejected_and_stored_nowhere(
    make_app: Callable[..., Pipeline], content_type: str
) -> None:
    good = otlpgen.api_request(otlpgen.T0_MS, "req_ok")
    huge = otlpgen.api_request(otlpgen.T0_MS + 1, "req_huge", model="m" * HUGE)
    body = otlp_logs(content_type, good, huge)
    logs = decode_logs(body, content_type)
    assert (len(logs.requests), logs.rejected) == (1, 1)
    assert (
        logs.error == f"1 log record(s) rejected; first: api_request record: model longer than {MAX_CHARS} characters"
    )
    app = make_app(sources__transcripts__enabled=False)
    apply(app, Team(grace_ms=0, tools_from_otlp=True), body, content_type)
    assert [r.key for r in app.ledger.requests()] == ["req_ok"]
    assert max(map(len, strings(app))) <= SHORTENED_CHARS
    text = exposition(app)
    assert lines_total(text, "otlp") == {"usage": 1, "malformed": 1}
    assert len(text) < 64 * 1024  # it was 124.8 MB


@pytest.mark.parametrize("content_type", [JSON, PROTOBUF])
def test_long_project_tool_speed_and_email_from_otlp_are_shortened(
    make_app: Callable[..., Pipeline], content_type: str
) -> None:
    email = "e" * HUGE + "@example.com"
    identity = {"user.email": email}
    request = otlpgen.api_request(otlpgen.T0_MS, "req_1", speed="s" * 500, identity=identity)
    tool = otlpgen.tool_result(otlpgen.T0_MS + 1, "T" * 300, identity=identity)
    body = otlp_logs(content_type, request, tool, resource={**otlpgen.RESOURCE, "project": "/x/" + "p" * HUGE})
    app = make_app(sources__transcripts__enabled=False)
    apply(app, Team(grace_ms=0, tools_from_otlp=True, users="email"), body, content_type)
    [stored] = app.ledger.requests()
    assert (stored.project, stored.speed, stored.user) == (shorten("p" * HUGE), shorten("s" * 500), shorten(email))
    tools = app.ledger.db.execute("SELECT tool, project FROM tool_series").fetchall()
    assert tools == [(shorten("T" * 300), shorten("p" * HUGE))]
    assert max(map(len, strings(app))) == SHORTENED_CHARS
    assert longest_label(exposition(app)) == SHORTENED_CHARS


@pytest.mark.parametrize("content_type", [JSON, PROTOBUF])
def test_metric_attributes_and_names_are_shortened(content_type: str) -> None:
    t0 = otlpgen.T0_MS * 1_000_000
    point = otlpgen.data_point({"type": "added", "model": "m" * HUGE}, 3, t0, t0 + 1, session_id="s" * 300)
    body = otlpgen.metrics_body(
        [otlpgen.sum_metric("claude_code.lines_of_code.count", [point]), otlpgen.sum_metric("n" * 300, [point])]
    )
    encoded = otlpgen.to_json(body) if content_type == JSON else otlpgen.to_protobuf(body)
    points = decode_metrics(encoded, content_type)
    assert [p.name for p in points] == ["claude_code.lines_of_code.count", shorten("n" * 300)]
    assert dict(points[0].attributes)["model"] == shorten("m" * HUGE)
    assert dict(points[0].attributes)["session.id"] == shorten("s" * 300)


@pytest.mark.slow
def test_a_served_ten_megabyte_model_is_answered_as_a_partial_success_and_never_exposed(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("sources: {transcripts: {enabled: false}}\n")
    body = otlp_logs(
        JSON,
        otlpgen.api_request(otlpgen.T0_MS, "req_ok"),
        otlpgen.api_request(otlpgen.T0_MS + 1, "req_huge", model="m" * HUGE),
    )
    with serving(tmp_path / "state", [], "--config", str(config), "--otlp.listen", "127.0.0.1:0") as daemon:
        found = [re.search(r"receiving OTLP on http://(\S+)/v1/logs", logged) for logged in daemon.log]
        url = next((f[1] for f in found if f), None) or daemon.wait_for(r"receiving OTLP on http://(\S+)/v1/logs")[1]
        connection = http.client.HTTPConnection(url, timeout=60)
        try:
            connection.request("POST", "/v1/logs", body, {"Content-Type": JSON})
            answer = connection.getresponse()
            status, reply = answer.status, orjson.loads(answer.read())
        finally:
            connection.close()
        text = daemon.metrics()
        page_status, _, page = daemon.get("/")
    assert status == 200
    assert reply["partialSuccess"]["rejectedLogRecords"] == "1"
    assert lines_total(text, "otlp") == {"usage": 1, "malformed": 1}
    assert longest_label(text) <= SHORTENED_CHARS
    assert len(text) < 64 * 1024  # it was 124.8 MB
    assert page_status == 200 and len(page) < 256 * 1024  # it was 11.5 MB


# --- timestamps ----------------------------------------------------------------------------------


def test_a_transcript_line_a_day_ahead_of_the_clock_is_malformed_and_a_line_just_inside_is_kept() -> None:
    ahead = (NOW + timedelta(days=1, seconds=1)).isoformat()
    inside = (NOW + timedelta(hours=23)).isoformat()
    chunk = line(timestamp=ahead, m_id="msg_a") + b"\n" + line(timestamp=inside, m_id="msg_b") + b"\n"
    chunk += line(timestamp="9999-12-31T23:59:59.999Z", m_id="msg_c") + b"\n"
    counts: Counter[str] = Counter()
    assert [e.key for e in parse_chunk(chunk, counts, now=NOW)] == ["msg_b"]
    assert counts == Counter({"malformed": 2})
    # The same lines a day later: both earlier ones are now in the past.
    assert [e.key for e in parse_chunk(chunk, Counter(), now=NOW + timedelta(days=1))] == ["msg_a", "msg_b"]


@pytest.mark.parametrize("timestamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_that_falls_off_the_calendar_in_utc_is_malformed_not_a_crash(timestamp: str) -> None:
    counts: Counter[str] = Counter()
    assert parse_chunk(line(timestamp=timestamp) + b"\n", counts, now=NOW) == []
    assert counts == Counter({"malformed": 1})


@pytest.mark.parametrize("content_type", [JSON, PROTOBUF])
def test_an_otlp_event_or_point_a_day_ahead_of_the_clock_is_rejected(content_type: str) -> None:
    now_ms = int(NOW.timestamp() * 1000)
    future = otlpgen.api_request(now_ms + 86_400_001, "req_future")
    inside = otlpgen.api_request(now_ms + 3_600_000, "req_inside")
    year_2500 = otlpgen.api_request(now_ms, "req_2500")  # fixed64 nanoseconds end in 2554
    year_2500["attributes"] = [a for a in year_2500["attributes"] if a["key"] != "event.timestamp"]
    year_2500["timeUnixNano"] = str(int(datetime(2500, 1, 1, tzinfo=UTC).timestamp()) * 10**9)
    tool = otlpgen.tool_result(now_ms + 86_400_001)
    logs = decode_logs(otlp_logs(content_type, future, inside, year_2500, tool), content_type, now=NOW)
    assert [e.request_id for e, _, _ in logs.requests] == ["req_inside"]
    assert (logs.tools, logs.rejected) == ([], 3)
    assert "is in the future" in logs.error
    t = now_ms * 1_000_000
    body = otlpgen.session_metrics(t, t + 86_400_000_000_001, commits=1)
    encoded = otlpgen.to_json(body) if content_type == JSON else otlpgen.to_protobuf(body)
    assert decode_metrics(encoded, content_type, now=NOW) == []
    assert decode_metrics(encoded, content_type, now=NOW + timedelta(seconds=1)) != []


def test_a_line_from_year_9999_never_pins_the_last_request_gauge(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    write(
        claude_dir / "projects" / "-home-dev-notes-app" / "s1.jsonl",
        assistant_line("msg_1", "req_1", GOOD_TS).rstrip(b"\n"),
        assistant_line("msg_2", "req_2", "9999-12-31T23:59:59.999Z").rstrip(b"\n"),
    )
    app = make_app()
    app.refresh()
    text = exposition(app)
    good = datetime.fromisoformat(GOOD_TS).timestamp()
    assert samples(text, "claude_usage_last_request_timestamp_seconds") == {"": good}
    assert lines_total(text, "transcripts") == {"usage": 1, "malformed": 1}


def test_a_request_an_older_release_stored_in_year_9999_does_not_pin_the_last_request_gauge(
    make_app: Callable[..., Pipeline], claude_dir: Path
) -> None:
    write(claude_dir / "projects" / "-home-dev-notes-app" / "s1.jsonl", assistant_line("msg_1", "req_1", GOOD_TS))
    app = make_app()
    app.refresh()
    app.ledger.db.execute("UPDATE requests SET ts = 253402300799999 WHERE key = 'msg_1'")  # as 9999-12-31 was stored
    write(claude_dir / "projects" / "-home-dev-notes-app" / "s1.jsonl", assistant_line("msg_2", "req_2", GOOD_TS))
    app.refresh()
    good = datetime.fromisoformat(GOOD_TS).timestamp()
    assert samples(exposition(app), "claude_usage_last_request_timestamp_seconds") == {"": good}


# --- migration -----------------------------------------------------------------------------------


def old_ledger(state: Path, events: list[UsageEvent], enrich: Callable[[Request], Request]) -> dict[str, Any]:
    """A ledger as a release before migration 5 left it, holding `events` as they came; with what its
    series held (the totals the repair must keep)."""
    ledger = Ledger(state)
    ledger.commit([Request.from_event(e) for e in events], enrich)
    pending = events[0]._replace(key="r" * 300, request_id="r" * 300, source="otlp")
    ledger.receive([Request.from_event(pending)], enrich, 60_000, 0)
    ledger.cached_report("daily", lambda: orjson.dumps({"model": "m" * 300}))
    ledger.set_meta("prices", orjson.dumps({"fingerprint": "f", "lookups": {"m" * 300: None}}).decode())
    totals = ledger.db.execute("SELECT sum(requests), sum(input), sum(cost) FROM usage_series").fetchone()
    calls = ledger.db.execute("SELECT sum(calls) FROM tool_series").fetchone()
    ledger.close()
    db = sqlite3.connect(state / Ledger.FILE)
    roll_back(db, MIGRATIONS.index(SCHEMA_5))
    db.close()
    return {"totals": totals, "calls": calls}


@pytest.mark.slow
def test_opening_an_older_ledger_shortens_every_long_value_and_keeps_every_total(
    make_app: Callable[..., Pipeline], tmp_path: Path
) -> None:
    app = make_app()
    long_model, long_project = "claude-opus-" + "9" * HUGE, "p" * 300
    events = [
        BASE._replace(
            key="k" * 500,
            request_id="q" * 500,
            session_id="s" * 500,
            model=long_model,
            project=long_project,
            tools=frozenset({"T" * 300, "Read"}),
            speed="f" * 200,
        ),
        BASE._replace(key="msg_2", model=long_model + "x", project=long_project + "x"),  # same prefixes
        BASE._replace(key="msg_3", model=shorten(long_model + "x"), project=shorten(long_project + "x")),  # crafted
        BASE._replace(key="msg_4"),
    ]
    state = tmp_path / "old-state"
    before = old_ledger(state, events, app.enrich)

    repaired = Ledger(state)
    db = repaired.db
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert max(map(len, stored(db))) <= SHORTENED_CHARS + len(",Read")  # the widest: the tools column
    rows = {r.key: r for r in repaired.requests()}
    first = rows[shorten("k" * 500)]
    assert (first.request_id, first.session_id, first.model, first.project, first.speed) == (
        shorten("q" * 500),
        shorten("s" * 500),
        shorten(long_model),
        shorten(long_project),
        shorten("f" * 200),
    )
    assert first.tools == {"Read", shorten("T" * 300)}
    assert rows["msg_2"].model == shorten(long_model + "x") != first.model
    assert len(rows) == 4
    # Each series total stays what it was: the crafted row and the shortened one add up, nothing twice.
    assert db.execute("SELECT sum(requests), sum(input), sum(cost) FROM usage_series").fetchone() == before["totals"]
    assert db.execute("SELECT sum(calls) FROM tool_series").fetchone() == before["calls"]
    folded = db.execute(
        "SELECT requests FROM usage_series WHERE model = ? AND project = ?",
        (shorten(long_model + "x"), shorten(long_project + "x")),
    ).fetchall()
    assert folded == [(2,)]
    [(pending_id, row)] = db.execute("SELECT request_id, request FROM pending").fetchall()
    assert pending_id == shorten("r" * 300) == orjson.loads(row)[0]
    assert db.execute("SELECT count(*) FROM reports").fetchone() == (0,)
    assert repaired.meta("prices") is None
    repaired.close()
    Ledger(state).close()  # a second open changes nothing more and does not fail


# --- tokens ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("output", "usable"), [(100_000_000, True), (100_000_001, False), (10**9, False)])
@pytest.mark.parametrize("content_type", [JSON, PROTOBUF])
def test_a_token_count_is_usable_from_both_sources_or_neither(output: int, usable: bool, content_type: str) -> None:
    counts: Counter[str] = Counter()
    from_transcript = parse_chunk(assistant_line("msg_1", "req_1", GOOD_TS, output=output), counts, now=NOW)
    body = otlp_logs(content_type, otlpgen.api_request(otlpgen.T0_MS, "req_1", output=output))
    logs = decode_logs(body, content_type)
    assert (len(from_transcript), counts["malformed"]) == ((1, 0) if usable else (0, 1))
    assert (len(logs.requests), logs.rejected) == ((1, 0) if usable else (0, 1))
