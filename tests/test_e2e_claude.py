"""End to end: the real Claude Code CLI, offline in a network namespace with only loopback, and our `serve`.

Claude Code's config dir is a temporary folder our transcript source watches, and its telemetry goes to our
OTLP receiver. Each scenario is one namespace run: the fake API, `serve` in the background, the CLI's
steps, then a bounded poll of /metrics until everything sent is counted. The fake's usage depends only on
its seed and each request's position, so runs of the same conversation compare token for token, while
the request and message ids (random per run) tie each ledger row to the one exchange the fake served.
They skip loudly without the CLI (`npm install --prefix tests/node`) or user namespaces; under CI=true they
fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exporter.events import Request
from exporter.ledger.store import Ledger
from tests.support.claude_cli import Telemetry, Workspace, claude_step, require_claude, stream_json_prompt
from tests.support.daemon import SERVE
from tests.support.exposition import samples
from tests.support.netns import ROOT, FakeSettings, Plan, Process, Result, Step, require_netns, run_plan
from tests.support.waiting import POLL
from tests.test_claude_cli import PROMPT, list_price, succeeded

pytestmark = pytest.mark.slow  # the Claude Code CLI in a namespace, and `serve`

TRANSCRIPTS_ONLY = "sources: {transcripts: {enabled: true}}\n"
OTLP_ONLY = "sources: {transcripts: {enabled: false}}\n"  # a central exporter: events are stored at once
# An event waits up to 2 s for its transcript line (30 s by default): inotify sees a line within ~0.5 s.
BOTH = "sources: {otlp: {grace: 2s}}\n"
WEB = "http://127.0.0.1:{port:web}"
WAIT = 60.0  # seconds a poll may take before it gives up (a limit, never a pause)
REQUESTS, TOKENS, COST = "claude_usage_requests_total", "claude_usage_tokens_total", "claude_usage_cost_usd_total"
LINES = "claude_usage_exporter_lines_total"
OTLP_USAGE, OTLP_DUPLICATE = '{outcome="usage",source="otlp"}', '{outcome="duplicate",source="otlp"}'
LINE_USAGE, LINE_DUPLICATE = '{outcome="usage",source="transcripts"}', '{outcome="duplicate",source="transcripts"}'
SUGGESTION = "[SUGGESTION MODE:"  # how a prompt-suggestion request's last prompt begins
MAIN_SCRIPT = [("main", ["Read"]), ("main", ["Edit"]), ("main", [])]  # what PROMPT makes the fake answer
Json = dict[str, Any]


# ---- inside the namespace: waiting until the exporter counted everything ---------------------------------------


def await_counted(url: str, requests: int, events: int, lines: int = 0, timeout: float = WAIT) -> int:
    """Polls `url` (/metrics) until at least `requests` requests are counted, `events` OTLP api_request
    events are resolved (stored, or found to be a transcript's request) and `lines` transcript lines with
    usage are read: 0, or 1 at the timeout.

    "At least", so that a double count still ends the wait and is caught by the test's exact assertions;
    an event is resolved in the same commit that would double-count it.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                body = answer.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            body = ""
        counted = sum(samples(body, REQUESTS).values())
        outcomes = samples(body, LINES)
        resolved = outcomes.get(OTLP_USAGE, 0.0) + outcomes.get(OTLP_DUPLICATE, 0.0)
        read = outcomes.get(LINE_USAGE, 0.0) + outcomes.get(LINE_DUPLICATE, 0.0)
        if counted >= requests and resolved >= events and read >= lines:
            return 0
        if time.monotonic() > deadline:
            print(
                f"after {timeout:g} s: {counted:g} of {requests} requests counted, {resolved:g} of {events} "
                f"OTLP events resolved, {read:g} of {lines} transcript lines read; /metrics:\n{body}",
                file=sys.stderr,
            )
            return 1
        time.sleep(POLL)


def counted_step(requests: int, events: int, lines: int = 0, name: str = "counted") -> Step:
    code = (
        "import sys; from tests.test_e2e_claude import await_counted; "
        "sys.exit(await_counted(sys.argv[1], *map(int, sys.argv[2:])))"
    )
    return Step(
        name=name,
        argv=[sys.executable, "-c", code, f"{WEB}/metrics", *map(str, (requests, events, lines))],
        cwd=str(ROOT),
        timeout=WAIT + 30,
    )


# ---- the caller's side -------------------------------------------------------------------------------------------


def exporter_env(home: Path) -> dict[str, str]:
    """`serve` and `report` with nothing of the caller's settings (CLAUDE_USAGE_EXPORTER_*, CLAUDE_CONFIG_DIR)."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(ROOT),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


@dataclass
class Run:
    """One scenario: what the fake served and the CLI printed, and what our exporter made of it."""

    result: Result
    ws: Workspace
    rows: list[Request]  # the ledger, read after `serve` stopped
    pending: int  # OTLP events still waiting for their transcript line
    metrics: str  # /metrics once everything was counted
    report: Json  # `report daily --json`, run afterwards on the same state dir

    def answer(self, name: str = "claude") -> Json:
        return succeeded(self.result, name)

    def by_request_id(self) -> dict[str | None, Request]:
        found = {r.request_id: r for r in self.rows}
        assert len(found) == len(self.rows), f"rows sharing a request id: {self.rows}"
        return found

    def total(self, name: str, **labels: str) -> float:
        wanted = [f'{k}="{v}"' for k, v in labels.items()]
        return sum(v for k, v in samples(self.metrics, name).items() if all(w in k for w in wanted))


def scenario(
    root: Path,
    ws: Workspace,
    *steps: Step,
    config: str,
    otlp: bool,
    requests: int,
    events: int,
    lines: int = 0,
    keep_bodies: bool = False,
    watched: Path | None = None,
) -> Run:
    """Runs `serve` with `config` (and an OTLP receiver if `otlp`) on the transcripts under `watched` (default:
    the CLI's config dir), the steps and the wait for `requests` counted requests, `events` resolved OTLP
    events and `lines` transcript lines read; then reads the ledger and the report."""
    require_claude()
    require_netns()
    state, config_file = root / "state", root / "exporter.yaml"
    config_file.write_text(config)
    common = ["--state-dir", str(state), "--claude-dir", str(watched or ws.config), "--config", str(config_file)]
    argv = [
        *SERVE,
        *common,
        "--web.listen-address",
        "127.0.0.1:{port:web}",
        *(["--otlp.listen", "127.0.0.1:{port:otlp}"] if otlp else []),
    ]
    serve = Process(
        name="serve", argv=argv, env=exporter_env(ws.home), cwd=str(ROOT), ready_url=f"{WEB}/readyz", inherit_env=False
    )
    plan = Plan(
        steps=[*steps, counted_step(requests, events, lines), Step(name="metrics", fetch=f"{WEB}/metrics")],
        background=[serve],
        fake=FakeSettings(keep_bodies=keep_bodies),
    )
    result = run_plan(plan, root / "out")
    cli_runs = {s.name for s in steps if "CLAUDE_CONFIG_DIR" in s.env}
    log = result.log("serve")[-5000:]
    assert result.background == {"serve": 0}, f"serve did not stop cleanly:\n{log}"
    for step in result.steps:
        if step.name not in cli_runs:  # those are judged by the tests
            assert step.exit_code == 0, f"{step.name}: {step.stderr[-5000:]}\n--- serve:\n{log}"

    ledger = Ledger.read_only(state)
    try:
        rows = list(ledger.requests())
        pending = ledger.db.execute("SELECT count(*) FROM pending").fetchone()[0]
    finally:
        ledger.close()
    report = subprocess.run(
        [sys.executable, "-m", "exporter", "report", "daily", "--json", "-z", "UTC", *common],
        cwd=ROOT,
        env=exporter_env(ws.home),
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    return Run(result, ws, rows, pending, result.step("metrics").stdout, json.loads(report.stdout))


def served_tokens(exchange: Json) -> tuple[int, int, int, int]:
    """input, output, cache read and cache writes (both TTLs: an OTLP event has no split) the fake served."""
    u = exchange["usage"]
    return u["input_tokens"], u["output_tokens"], u["cache_read_input_tokens"], u["cache_creation_input_tokens"]


def row_tokens(row: Request) -> tuple[int, int, int, int]:
    t = row.tokens
    return t.input, t.output, t.cache_read, t.cache_write


def cache_writes(exchange: Json) -> tuple[int, int]:
    """The fake's cache writes by TTL: (5 m, 1 h)."""
    written = exchange["usage"]["cache_creation"]
    return written["ephemeral_5m_input_tokens"], written["ephemeral_1h_input_tokens"]


def usd(nanos: int | None) -> float:
    assert nanos is not None, "an unpriced request"
    return nanos / 1e9


def last_prompt(exchange: Json) -> str:
    """The text of the last user message of a kept request body."""
    content = exchange["request"]["messages"][-1]["content"]
    return content if isinstance(content, str) else "\n".join(b.get("text", "") for b in content)


# ---- the scenarios -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transcripts_only(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """No telemetry at all: the transcript source alone."""
    root = tmp_path_factory.mktemp("transcripts-only")
    ws = Workspace(root / "ws")
    return scenario(root, ws, claude_step(ws, PROMPT), config=TRANSCRIPTS_ONLY, otlp=False, requests=3, events=0)


@pytest.fixture(scope="module")
def otlp_only(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A central exporter, as a team runs it: transcripts off, Claude Code's OTLP in protobuf."""
    root = tmp_path_factory.mktemp("otlp-only")
    ws = Workspace(root / "ws")
    step = claude_step(ws, PROMPT, telemetry=Telemetry(protocol="http/protobuf"))
    return scenario(root, ws, step, config=OTLP_ONLY, otlp=True, requests=3, events=3)


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Both sources on one machine, OTLP in JSON."""
    root = tmp_path_factory.mktemp("both")
    ws = Workspace(root / "ws")
    step = claude_step(ws, PROMPT, telemetry=Telemetry(protocol="http/json"))
    return scenario(root, ws, step, config=BOTH, otlp=True, requests=3, events=3)


@pytest.fixture(scope="module")
def forked(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Both sources; a run, then `--resume … --fork-session`, which copies the first conversation's lines."""
    root = tmp_path_factory.mktemp("forked")
    ws, first, telemetry = Workspace(root / "ws"), str(uuid.uuid4()), Telemetry(protocol="http/protobuf")
    steps = (
        claude_step(ws, PROMPT, "--session-id", first, name="first", telemetry=telemetry),
        claude_step(
            ws,
            "Look at notes.txt again, add a line.",
            "--resume",
            first,
            "--fork-session",
            name="fork",
            telemetry=telemetry,
        ),
    )
    return scenario(root, ws, *steps, config=BOTH, otlp=True, requests=6, events=6)


@pytest.fixture(scope="module")
def background(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Both sources; a session title (non-essential traffic, stream-json input) and a prompt
    suggestion: two background calls besides the three main requests."""
    root = tmp_path_factory.mktemp("background")
    ws = Workspace(root / "ws")
    step = claude_step(
        ws,
        "",
        "--input-format",
        "stream-json",
        "--prompt-suggestions",
        "true",
        output_format="stream-json",
        telemetry=Telemetry(protocol="http/json"),
        nonessential=True,
        stdin=stream_json_prompt(PROMPT),
    )
    return scenario(root, ws, step, config=BOTH, otlp=True, requests=5, events=5, keep_bodies=True)


SOURCES = ["transcripts_only", "otlp_only", "both"]


# ---- (a) the same requests and tokens from either source or both -------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
def test_each_source_counts_exactly_the_requests_the_fake_served_with_their_tokens(
    request: pytest.FixtureRequest, name: str
) -> None:
    run: Run = request.getfixturevalue(name)
    session = run.answer()["session_id"]
    served = run.result.requests()
    assert [(e["kind"], e["tool_uses"]) for e in served] == MAIN_SCRIPT
    rows = run.by_request_id()
    assert sorted(rows, key=str) == sorted(e["request_id"] for e in served)
    for exchange in served:
        row = rows[exchange["request_id"]]
        assert row_tokens(row) == served_tokens(exchange), exchange["request_id"]
        assert (row.agent, row.model, row.session_id) == ("main", exchange["response_model"], session)
    assert run.pending == 0
    assert run.total(REQUESTS) == 3
    assert run.total(REQUESTS, agent="main") == 3


def test_a_transcript_keeps_the_cache_ttl_split_and_an_otlp_event_counts_its_writes_as_5m(
    transcripts_only: Run, otlp_only: Run, both: Run
) -> None:
    for run, ttl_split in ((transcripts_only, True), (both, True), (otlp_only, False)):
        rows = run.by_request_id()
        for exchange in run.result.requests():
            row, (five, hour) = rows[exchange["request_id"]], cache_writes(exchange)
            expected = (five, hour) if ttl_split else (five + hour, 0)
            assert (row.tokens.cache_write_5m, row.tokens.cache_write_1h) == expected
            assert row.source == ("transcripts" if ttl_split else "otlp")
    assert sum(cache_writes(e)[1] for e in both.result.requests()) > 0  # the split matters in this conversation


def test_the_three_setups_agree_on_requests_and_tokens(transcripts_only: Run, otlp_only: Run, both: Run) -> None:
    runs = {"transcripts": transcripts_only, "otlp": otlp_only, "both": both}
    tokens = {name: sorted(row_tokens(r) for r in run.rows) for name, run in runs.items()}
    assert tokens["transcripts"] == tokens["otlp"] == tokens["both"]
    assert len(tokens["both"]) == 3
    # The counters show the same: per token type, with the cache writes of both TTLs added up.
    for token_type in ("input", "output", "cache_read"):
        assert transcripts_only.total(TOKENS, token_type=token_type) == otlp_only.total(TOKENS, token_type=token_type)
        assert transcripts_only.total(TOKENS, token_type=token_type) == both.total(TOKENS, token_type=token_type)
    writes = [
        run.total(TOKENS, token_type="cache_write_5m") + run.total(TOKENS, token_type="cache_write_1h")
        for run in (transcripts_only, otlp_only, both)
    ]
    assert writes[0] == writes[1] == writes[2] == sum(served_tokens(e)[3] for e in both.result.requests())


@pytest.mark.parametrize("name", SOURCES)
def test_each_source_counts_every_line_it_reads_exactly_once(request: pytest.FixtureRequest, name: str) -> None:
    run: Run = request.getfixturevalue(name)
    lines = samples(run.metrics, LINES)
    # Without a receiver there are no OTLP series; with transcripts, each event is the transcript's request.
    otlp = (lines.get(OTLP_USAGE), lines.get(OTLP_DUPLICATE))
    assert otlp == {"transcripts_only": (None, None), "otlp_only": (3, 0), "both": (0, 3)}[name]
    # Claude Code writes a response as one line per content block (thinking, text, tool use): 7 lines here.
    written = len([line for line in run.ws.all_lines() if line.get("type") == "assistant"])
    assert written == 7
    expected = (None, None) if name == "otlp_only" else (3, written - 3)
    assert (lines.get(LINE_USAGE), lines.get(LINE_DUPLICATE)) == expected


def test_only_a_transcript_tells_the_tools_and_the_project_that_label_a_request(
    transcripts_only: Run, otlp_only: Run, both: Run
) -> None:
    # An api_request event names no tools and Claude Code sends no `project` resource attribute.
    labels = {"model": "claude-sonnet-4-5-20250929", "model_family": "sonnet", "agent": "main"}
    for run in (transcripts_only, both):
        for interaction, category in (
            ("context_read", "context_processing"),
            ("code_change", "direct_interaction"),
            ("conversation", "direct_interaction"),
        ):
            assert run.total(REQUESTS, interaction=interaction, category=category, project="project", **labels) == 1
        assert len(samples(run.metrics, REQUESTS)) == 3
    conversation = {"interaction": "conversation", "category": "direct_interaction"}
    assert otlp_only.total(REQUESTS, project="unknown", **conversation, **labels) == 3
    assert len(samples(otlp_only.metrics, REQUESTS)) == 1


# ---- (b) our cost is Claude Code's ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
def test_our_cost_equals_the_total_cost_claude_code_prints(request: pytest.FixtureRequest, name: str) -> None:
    run: Run = request.getfixturevalue(name)
    printed = run.answer()["total_cost_usd"]
    assert sum(usd(r.cost) for r in run.rows) == pytest.approx(printed, abs=1e-6)
    assert run.total(COST) == pytest.approx(printed, abs=1e-6)
    assert run.report["totals"]["totalCost"] == pytest.approx(printed, abs=1e-6)
    assert run.report["totals"]["requests"] == 3
    rows = run.by_request_id()
    for exchange in run.result.requests():  # and request by request, at list price
        assert usd(rows[exchange["request_id"]].cost) == pytest.approx(list_price(exchange["usage"]), abs=1e-9)


def test_without_transcripts_the_cost_is_the_one_claude_code_reported_per_request(otlp_only: Run) -> None:
    # The event has no cache TTL split, so tokens alone would price the 1 h writes as 5 m ones: the cost
    # stored is the event's cost_usd.
    for row in otlp_only.rows:
        assert row.reported_cost is not None
        assert row.cost == row.reported_cost
    first = otlp_only.by_request_id()[otlp_only.result.requests()[0]["request_id"]]
    assert first.tokens.cache_write_5m > 0 and cache_writes(otlp_only.result.requests()[0])[1] > 0


# ---- (c) a forked session adds no double counts -------------------------------------------------------------------


def test_a_forked_session_counts_only_the_requests_the_fake_served(forked: Run) -> None:
    first, fork = forked.answer("first"), forked.answer("fork")
    served = forked.result.requests()
    assert [e["session_id"] for e in served] == [first["session_id"]] * 3 + [fork["session_id"]] * 3
    copied = {line["requestId"] for line in forked.ws.session(fork["session_id"]) if line["type"] == "assistant"}
    assert copied == {e["request_id"] for e in served}  # the fork's file holds the first run's requests too

    rows = forked.by_request_id()
    assert sorted(rows, key=str) == sorted(e["request_id"] for e in served)
    assert {rows[e["request_id"]].session_id for e in served[:3]} == {first["session_id"]}
    assert {rows[e["request_id"]].session_id for e in served[3:]} == {fork["session_id"]}
    for exchange in served:
        assert row_tokens(rows[exchange["request_id"]]) == served_tokens(exchange)
    assert forked.total(REQUESTS) == 6
    assert forked.pending == 0
    lines = samples(forked.metrics, LINES)
    assert (lines[OTLP_USAGE], lines[OTLP_DUPLICATE]) == (0, 6)
    # Each process prints the cost of its own requests; together they are what we counted.
    printed = first["total_cost_usd"] + fork["total_cost_usd"]
    assert first["total_cost_usd"] == pytest.approx(sum(list_price(e["usage"]) for e in served[:3]), abs=1e-6)
    assert forked.total(COST) == pytest.approx(printed, abs=1e-6)
    assert forked.report["totals"]["totalCost"] == pytest.approx(printed, abs=1e-6)
    assert forked.report["totals"]["requests"] == 6


def test_the_copied_lines_of_a_fork_count_as_duplicates(forked: Run) -> None:
    lines = samples(forked.metrics, LINES)
    first, fork = (forked.answer(name)["session_id"] for name in ("first", "fork"))
    own = [line for line in forked.ws.session(first) if line["type"] == "assistant"]
    in_fork = [line for line in forked.ws.session(fork) if line["type"] == "assistant"]
    assert len(in_fork) == 2 * len(own)  # the first run's lines, copied, then the fork's own
    assert (lines[LINE_USAGE], lines[LINE_DUPLICATE]) == (6, len(own) + len(in_fork) - 6)


# ---- (d) background calls come only from OTLP, as auxiliary ---------------------------------------------------------


def test_background_calls_are_counted_from_otlp_alone_as_auxiliary(background: Run) -> None:
    session = background.answer()["session_id"]
    served = background.result.requests()
    extra = background.result.requests("background")
    main = background.result.requests("main")
    assert [e["tool_uses"] for e in main] == [tools for _, tools in MAIN_SCRIPT]
    assert len(extra) == 2
    assert sorted(SUGGESTION in last_prompt(e) for e in extra) == [False, True]  # a title and a suggestion

    rows = background.by_request_id()
    assert sorted(rows, key=str) == sorted(e["request_id"] for e in served)
    in_transcripts = {line.get("requestId") for line in background.ws.all_lines()}
    for exchange in extra:
        row = rows[exchange["request_id"]]
        assert exchange["request_id"] not in in_transcripts
        assert (row.agent, row.interaction, row.category, row.source) == (
            "auxiliary",
            "background",
            "model_operation",
            "otlp",
        )
        # The event names its session but not its folder: no `project` resource attribute from Claude Code.
        assert (row.session_id, row.project) == (session, "unknown")
        five, hour = cache_writes(exchange)
        assert row.tokens == (*served_tokens(exchange)[:3], five + hour, 0)
        assert usd(row.cost) == pytest.approx(list_price(exchange["usage"]), abs=1e-9)  # all 5 m writes
    for exchange in main:
        row = rows[exchange["request_id"]]
        assert exchange["request_id"] in in_transcripts
        assert (row.agent, row.source, row_tokens(row)) == ("main", "transcripts", served_tokens(exchange))
    assert background.pending == 0

    assert background.total(REQUESTS, agent="auxiliary", interaction="background") == 2
    assert background.total(REQUESTS, agent="main") == 3
    assert background.total(REQUESTS) == 5
    lines = samples(background.metrics, LINES)
    assert (lines[OTLP_USAGE], lines[OTLP_DUPLICATE]) == (2, 3)


def test_the_printed_total_includes_the_session_title_but_not_the_later_prompt_suggestion(background: Run) -> None:
    # Claude Code prints its result before it asks for a prompt suggestion (the fake serves that last), so
    # total_cost_usd holds the main requests and the title; we count the suggestion as well.
    served = background.result.requests()
    suggestion = [e for e in served if e["kind"] == "background" and SUGGESTION in last_prompt(e)]
    assert [e["seq"] for e in suggestion] == [served[-1]["seq"]]
    rows = background.by_request_id()
    ours = sum(usd(r.cost) for r in background.rows)
    printed = background.answer()["total_cost_usd"]
    assert ours - usd(rows[suggestion[0]["request_id"]].cost) == pytest.approx(printed, abs=1e-6)
    assert background.total(COST) == pytest.approx(ours, abs=1e-6)
    assert background.report["totals"]["totalCost"] == pytest.approx(ours, abs=1e-6)


# ---- a transcript that comes after the grace ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def late_transcript(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """Both sources, but the transcript reaches the watched folder only after its events' grace is over (a
    synced or network home folder, a lagging poll): the requests are counted from OTLP first, then the
    transcript's copies merge into them."""
    root = tmp_path_factory.mktemp("late-transcript")
    ws, watched = Workspace(root / "ws"), root / "watched"
    # The project folder arrives with its session file already inside (cp -r): no event names the file, so
    # the daemon must look into a folder that appears.
    (watched / "projects").mkdir(parents=True)
    arrive = ["cp", "-r", str(ws.transcripts), str(watched / "projects" / ws.transcripts.name)]
    steps = (
        claude_step(ws, PROMPT, telemetry=Telemetry(protocol="http/json")),
        counted_step(3, 3, name="counted-from-otlp"),
        Step(name="transcripts-arrive", argv=arrive),
    )
    return scenario(
        root,
        ws,
        *steps,
        config="sources: {otlp: {grace: 1s}}\n",
        otlp=True,
        requests=3,
        events=3,
        lines=7,
        watched=watched,
    )


def test_a_transcript_after_the_grace_replaces_what_the_events_said_without_a_second_count(
    late_transcript: Run,
) -> None:
    printed = late_transcript.answer()["total_cost_usd"]
    lines = samples(late_transcript.metrics, LINES)
    assert (lines[OTLP_USAGE], lines[OTLP_DUPLICATE], lines[LINE_USAGE], lines[LINE_DUPLICATE]) == (3, 0, 0, 7)
    rows = late_transcript.by_request_id()
    served = late_transcript.result.requests()
    assert sorted(rows, key=str) == sorted(e["request_id"] for e in served)
    for exchange in served:  # the ledger holds the transcript's copy: the cache TTL split is back
        row = rows[exchange["request_id"]]
        assert (row.source, row_tokens(row)) == ("transcripts", served_tokens(exchange))
        assert (row.tokens.cache_write_5m, row.tokens.cache_write_1h) == cache_writes(exchange)
    assert late_transcript.total(REQUESTS) == 3
    assert late_transcript.total(COST) == pytest.approx(printed, abs=1e-6)
    assert late_transcript.report["totals"]["totalCost"] == pytest.approx(printed, abs=1e-6)
    # The counters keep the series the events were counted in (they never move a request).
    assert late_transcript.total(REQUESTS, interaction="conversation", project="unknown") == 3


def test_a_transcript_after_the_grace_adds_no_cache_writes_to_the_counters(late_transcript: Run) -> None:
    served = late_transcript.result.requests()
    assert sum(cache_writes(e)[1] for e in served) > 0
    written = sum(late_transcript.total(TOKENS, token_type=f"cache_write_{ttl}") for ttl in ("5m", "1h"))
    assert written == sum(served_tokens(e)[3] for e in served)
