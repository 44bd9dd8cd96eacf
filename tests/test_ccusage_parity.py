"""Parity with ccusage 20.0.24 on one generated corpus: `report daily --json` and ccusage report the
same tokens per day and model, and both equal the generator's truth; `report blocks --json` finds the
same 5-hour blocks, and their costs agree once the two known pricing differences are taken out.

ccusage is found through $CCUSAGE_BIN, then tests/node (`npm install --prefix tests/node`), then PATH.
Without it the test skips, except in CI (CI=true) where a missing ccusage is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from exporter.events import Request, Tokens
from exporter.ledger.store import Ledger
from tests.support.corpus import LONG_CONTEXT_MODELS, Truth, generate

pytestmark = pytest.mark.slow  # ccusage under node

CCUSAGE_VERSION = "20.0.24"
FIELDS = ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens")
Breakdown = dict[tuple[str, str], dict[str, int]]  # (date, model) -> field -> tokens


def find_ccusage() -> Path | None:
    candidates = [os.environ.get("CCUSAGE_BIN"), Path(__file__).parent / "node/node_modules/.bin/ccusage"]
    candidates.append(shutil.which("ccusage"))
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


@pytest.fixture(scope="module")
def ccusage() -> Path:
    found = find_ccusage()
    if found is None:
        reason = (
            "ccusage is not installed: parity with ccusage NOT CHECKED. "
            "Run `npm install --prefix tests/node` or set CCUSAGE_BIN=/path/to/ccusage"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    version = subprocess.run([found, "--version"], capture_output=True, text=True, check=True).stdout.split()
    assert version[-1] == CCUSAGE_VERSION, f"{found} is ccusage {version[-1]}; the parity test pins {CCUSAGE_VERSION}"
    return found


def exporter_command() -> list[str]:
    """The console script installed next to the interpreter running the tests, else `python -m exporter`."""
    script = Path(sys.executable).parent / "claude-usage-exporter"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "exporter"]


def run_json(command: list[str], home: Path, **env: str) -> Any:
    # A private HOME: neither tool may see the real ~/.claude or write to the real home.
    environment = {**os.environ, "HOME": str(home)}
    environment.pop("CLAUDE_CONFIG_DIR", None)
    environment.update(env)
    done = subprocess.run(command, env=environment, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return orjson.loads(done.stdout)


def ccusage_report(ccusage: Path, report: str, root: Path, home: Path) -> Any:
    """ccusage's `report` (daily, blocks) in JSON."""
    command = [str(ccusage), "claude", report, "--json", "--offline", "-z", "UTC"]
    return run_json(command, home, CLAUDE_CONFIG_DIR=str(root))


def our_report(report: str, root: Path, home: Path) -> Any:
    """Our `report` (daily, blocks) in JSON, the ledger in home/state."""
    command = [
        *exporter_command(),
        "report",
        report,
        "--json",
        "--claude-dir",
        str(root),
        "--state-dir",
        str(home / "state"),
        "--timezone",
        "UTC",
    ]
    return run_json(command, home)


def breakdown(report: Any) -> Breakdown:
    return {
        (day["date"], row["modelName"]): {f: row[f] for f in FIELDS}
        for day in report["daily"]
        for row in day["modelBreakdowns"]
    }


def day_totals(report: Any) -> dict[str, dict[str, int]]:
    return {day["date"]: {f: day[f] for f in (*FIELDS, "totalTokens")} for day in report["daily"]}


def truth_breakdown(truth: Truth) -> Breakdown:
    return {
        key: {"inputTokens": t[0], "outputTokens": t[1], "cacheCreationTokens": t[3] + t[4], "cacheReadTokens": t[2]}
        for key, t in truth.daily_by_model("UTC").items()
    }


def mismatches(ours: Breakdown, theirs: Breakdown, truth: Breakdown) -> list[str]:
    """One line per differing (day, model, field), with all three values, for a readable failure."""
    rows = []
    for key in sorted(set(ours) | set(theirs) | set(truth)):
        for f in FIELDS:
            values = [side.get(key, {}).get(f) for side in (ours, theirs, truth)]
            if len(set(values)) > 1:
                rows.append(f"{key[0]} {key[1]} {f}: ours={values[0]} ccusage={values[1]} truth={values[2]}")
    return rows


@pytest.fixture(scope="module")
def parity_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth]:
    # Side-question replays and a response split across midnight are left out: for those two,
    # ccusage keeps another copy than the earliest (PRODUCT §4), which is a choice, not a bug.
    root = tmp_path_factory.mktemp("claude")
    return root, generate(root, seed=20, days=10, sessions_per_day=3, replays=False, midnight_split=False)


@pytest.fixture(scope="module")
def reports(
    ccusage: Path, parity_corpus: tuple[Path, Truth], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Any, Any, Truth]:
    root, truth = parity_corpus
    theirs = ccusage_report(ccusage, "daily", root, tmp_path_factory.mktemp("home"))
    ours = our_report("daily", root, tmp_path_factory.mktemp("home"))
    return ours, theirs, truth


def test_ccusage_itself_reports_the_generators_truth(reports: tuple[Any, Any, Truth]) -> None:
    _, theirs, truth = reports
    assert breakdown(theirs) == truth_breakdown(truth)


def test_daily_tokens_per_model_match_ccusage_and_the_truth(reports: tuple[Any, Any, Truth]) -> None:
    ours, theirs, truth = reports
    assert mismatches(breakdown(ours), breakdown(theirs), truth_breakdown(truth)) == []


def test_daily_and_grand_totals_match_ccusage(reports: tuple[Any, Any, Truth]) -> None:
    ours, theirs, _ = reports
    assert day_totals(ours) == day_totals(theirs)
    assert {f: ours["totals"][f] for f in (*FIELDS, "totalTokens")} == {
        f: theirs["totals"][f] for f in (*FIELDS, "totalTokens")
    }


def test_days_list_the_same_models_as_ccusage(reports: tuple[Any, Any, Truth]) -> None:
    ours, theirs, _ = reports
    assert {d["date"]: sorted(d["modelsUsed"]) for d in ours["daily"]} == {
        d["date"]: sorted(d["modelsUsed"]) for d in theirs["daily"]
    }


def test_with_every_trap_the_daily_report_matches_the_truth(tmp_path: Path) -> None:
    # Replays, the midnight split and old costUSD lines included: here only the truth is the reference.
    root = tmp_path / "claude"
    truth = generate(root, seed=21, days=5, sessions_per_day=3, old_format=True)
    ours = our_report("daily", root, tmp_path)
    assert mismatches(breakdown(ours), truth_breakdown(truth), truth_breakdown(truth)) == []


# ---------------------------------------------------------------------------------------------
# 5-hour blocks
#
# Worked out request by request on this corpus (with the same adjustments, the daily cost per day and
# model agrees with ccusage's to 1e-8), block costs differ for two reasons only:
# 1. Web search: we bill $10 per 1,000 searches (`usage.server_tool_use.web_search_requests`);
#    ccusage 20.0.24 prices no server tool use at all.
# 2. Sonnet 4 and 4.5 past 200k tokens: for Sonnet 4.5 we bill the whole request at the long-context
#    rates once its input (uncached + cache reads + cache writes) exceeds 200k, as Anthropic does, and
#    Sonnet 4.0 at base rates (genai-prices 0.2.3 has no tier for it); ccusage prices each token type
#    on its own, its first 200k tokens at the base rate and the rest at the above-200k rate, whatever
#    the request's total.
# Everything else is priced alike: the base rates of all five models, 1 h cache writes (2 x input),
# and the tokens of a response written as several lines (ccusage keeps the copy with the largest
# output, whose usage is the per-field maximum we keep). Only timestamps come from different copies:
# ours from the earliest, ccusage's from the line it keeps (the largest output), seconds later here.

WEB_SEARCH_NANOS = 10_000_000  # $10 per 1,000 searches, in nano-USD
CCUSAGE_TIER_TOKENS = 200_000
# ccusage 20.0.24's Sonnet 4 and 4.5 rates, USD per MTok, in the order of Tokens: input, output,
# cache read, 5 m cache write, 1 h cache write (ccusage's is 2 x input)
CCUSAGE_SONNET = tuple(map(Decimal, ("3", "15", "0.30", "3.75", "6")))
CCUSAGE_SONNET_ABOVE_200K = tuple(map(Decimal, ("6", "22.50", "0.60", "7.50", "12")))
BLOCK_FIELDS = ("id", "startTime", "endTime", "isGap", "entries", "tokenCounts", "totalTokens")
Blocks = tuple[Any, Any, list[Request]]  # ours, ccusage's, our ledger's requests in time order


@pytest.fixture(scope="module")
def blocks(ccusage: Path, parity_corpus: tuple[Path, Truth], tmp_path_factory: pytest.TempPathFactory) -> Blocks:
    root, _ = parity_corpus
    theirs = ccusage_report(ccusage, "blocks", root, tmp_path_factory.mktemp("home"))
    home = tmp_path_factory.mktemp("home")
    ours = our_report("blocks", root, home)
    ledger = Ledger.read_only(home / "state")
    try:
        requests = sorted(ledger.requests(), key=lambda r: r.ts)
    finally:
        ledger.close()
    return ours, theirs, requests


def activity(report: Any) -> list[Any]:
    return [block for block in report["blocks"] if not block["isGap"]]


def comparable(block: Any) -> dict[str, Any]:
    return {**{f: block[f] for f in BLOCK_FIELDS}, "models": sorted(block["models"])}  # ccusage: first-seen order


def when(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def hour_of(iso: str) -> str:
    return f"{iso[:13]}:00:00.000Z"


def gaps(report: Any) -> dict[tuple[str, str], Any]:
    """Gap blocks by place: (the block before, the block after), found by time rather than list
    position. A gap ends at the first request of the next block, which starts at that request's hour."""
    ids = [block["id"] for block in activity(report)]
    places = {}
    for gap in report["blocks"]:
        if gap["isGap"]:
            after = ids.index(hour_of(gap["endTime"]))
            places[ids[after - 1], ids[after]] = gap
    return places


def requests_by_block(report: Any, requests: Sequence[Request]) -> list[Sequence[Request]]:
    """Our ledger's requests cut into our blocks: in time order, each block takes its `entries`."""
    cut, start = [], 0
    for block in activity(report):
        cut.append(requests[start : start + block["entries"]])
        start += block["entries"]
    assert start == len(requests)
    return cut


def cost_nanos(request: Request) -> int:
    assert request.cost is not None, f"{request.model} is unpriced"
    return request.cost


def in_ccusage_sonnet_tier(request: Request) -> bool:
    """A Sonnet 4.x request priced differently by the two tools: past 200k input (our whole-request
    tier, Sonnet 4.5) or with one token type past 200k (ccusage's per-type tier)."""
    return request.model in LONG_CONTEXT_MODELS and max(request.tokens.context, *request.tokens) > CCUSAGE_TIER_TOKENS


def ccusage_sonnet_nanos(tokens: Tokens) -> int:
    """ccusage's price of a Sonnet 4.x request: each token type on its own, its first 200k tokens at the
    base rate and the rest at the above-200k rate."""
    usd = sum(
        (
            min(n, CCUSAGE_TIER_TOKENS) * base + max(n - CCUSAGE_TIER_TOKENS, 0) * above
            for n, base, above in zip(tokens, CCUSAGE_SONNET, CCUSAGE_SONNET_ABOVE_200K, strict=True)
        ),
        Decimal(0),
    )
    return int(usd * 1000)  # USD per MTok x tokens / 10**6 USD, in nano-USD: exact at these rates


def web_search_nanos(requests: Sequence[Request]) -> int:
    """What we bill for web searches: ccusage does not count them."""
    return sum(r.web_search for r in requests) * WEB_SEARCH_NANOS


def sonnet_tier_nanos(requests: Sequence[Request]) -> int:
    """Our price minus ccusage's for Sonnet 4.x requests past 200k tokens (web search aside)."""
    return sum(
        cost_nanos(r) - r.web_search * WEB_SEARCH_NANOS - ccusage_sonnet_nanos(r.tokens)
        for r in requests
        if in_ccusage_sonnet_tier(r)
    )


def test_blocks_have_the_same_times_entries_tokens_and_models_as_ccusage(blocks: Blocks) -> None:
    ours, theirs, _ = blocks
    assert [comparable(b) for b in activity(ours)] == [comparable(b) for b in activity(theirs)]


def test_gap_blocks_sit_between_the_same_blocks_as_in_ccusage(blocks: Blocks) -> None:
    ours, theirs, _ = blocks
    assert list(gaps(ours)) == list(gaps(theirs)) != []


def test_gap_and_end_times_differ_from_ccusage_only_by_the_copy_each_tool_dates_a_request_by(
    blocks: Blocks,
) -> None:
    ours, theirs, _ = blocks
    for report in (ours, theirs):  # a gap starts 5 h after the last request of the block before it
        ends = {block["id"]: block["actualEndTime"] for block in activity(report)}
        for (before, _), gap in gaps(report).items():
            assert when(gap["startTime"]) == when(ends[before]) + timedelta(hours=5)
    # We date a request by its earliest copy, ccusage by the copy it keeps: never an earlier one.
    for mine, its in zip(activity(ours), activity(theirs), strict=True):
        assert when(mine["actualEndTime"]) <= when(its["actualEndTime"])
    their_gaps = gaps(theirs)
    for place, gap in gaps(ours).items():
        assert when(gap["endTime"]) <= when(their_gaps[place]["endTime"])


def test_blocks_and_gaps_are_listed_in_ccusages_order(blocks: Blocks) -> None:
    ours, theirs, _ = blocks

    def order(report: Any) -> list[str]:
        return ["gap" if block["isGap"] else block["id"] for block in report["blocks"]]

    assert order(ours) == order(theirs)


def test_blocks_without_web_search_or_long_sonnet_requests_cost_the_same_as_in_ccusage(blocks: Blocks) -> None:
    ours, theirs, requests = blocks
    mine, its = {}, {}
    for our_block, their_block, inside in zip(
        activity(ours), activity(theirs), requests_by_block(ours, requests), strict=True
    ):
        if not any(r.web_search or in_ccusage_sonnet_tier(r) for r in inside):
            mine[our_block["id"]] = pytest.approx(our_block["costUSD"], abs=1e-6)
            its[their_block["id"]] = their_block["costUSD"]
    assert len(mine) >= 3
    assert mine == its


def test_blocks_cost_what_ccusage_charges_once_web_search_and_the_sonnet_tier_are_taken_out(blocks: Blocks) -> None:
    ours, theirs, requests = blocks
    mine, its, taken_out = {}, {}, {"web search": 0, "sonnet tier": 0}
    for our_block, their_block, inside in zip(
        activity(ours), activity(theirs), requests_by_block(ours, requests), strict=True
    ):
        # The cut of the ledger is this block's: its requests add up to the block's cost.
        assert our_block["costUSD"] == pytest.approx(sum(map(cost_nanos, inside)) / 1e9, abs=1e-9)
        web, tier = web_search_nanos(inside), sonnet_tier_nanos(inside)
        taken_out["web search"] += web
        taken_out["sonnet tier"] += tier
        mine[our_block["id"]] = pytest.approx(our_block["costUSD"] - (web + tier) / 1e9, abs=1e-6)
        its[their_block["id"]] = their_block["costUSD"]
    assert mine == its
    assert all(taken_out.values()), f"the corpus no longer exercises both differences: {taken_out}"
