"""The corpus generator: reproducible, holding every duplicate trap, and its truth provably right.

Traps are checked by scanning the written files, never by trusting the generator's own counters.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.corpus import (
    ALL_TOOLS,
    LONG_CONTEXT_MODELS,
    MAIN_MODELS,
    MALFORMED_KINDS,
    Tokens,
    Truth,
    append_activity,
    generate,
)


def small(root: Path, seed: int, *, old_format: bool = False, midnight_split: bool = True) -> Truth:
    """A corpus of a few MB: four days, two sessions a day, plus the showcase session."""
    return generate(root, seed=seed, days=4, sessions_per_day=2, old_format=old_format, midnight_split=midnight_split)


@dataclass
class Line:
    path: Path
    raw: bytes
    data: dict[str, Any] | None  # None: not strict JSON, or not an object


@dataclass
class Scan:
    lines: list[Line] = field(default_factory=list)

    def parsed(self) -> list[tuple[Path, dict[str, Any]]]:
        return [(line.path, line.data) for line in self.lines if line.data is not None]

    def usage_lines(self) -> list[tuple[Path, dict[str, Any]]]:
        return [(p, d) for p, d in self.parsed() if d.get("type") == "assistant" and _usage(d) is not None]


def _is_replay(d: dict[str, Any]) -> bool:
    # Subagent lines carry an agentId; the earliest versions' inline sidechains carry a costUSD.
    return d.get("isSidechain") is True and "agentId" not in d and "costUSD" not in d


def _usage(d: dict[str, Any]) -> dict[str, Any] | None:
    message = d.get("message")
    usage = message.get("usage") if isinstance(message, dict) else None
    return usage if isinstance(usage, dict) else None


def _scan(root: Path) -> Scan:
    scan = Scan()
    for path in sorted(root.glob("projects/**/*.jsonl")):
        for raw in path.read_bytes().split(b"\n")[:-1]:  # bytes.splitlines() would split at \r too
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError:
                data = None
            scan.lines.append(Line(path, raw, data if isinstance(data, dict) else None))
    return scan


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Truth, Scan]:
    root = tmp_path_factory.mktemp("claude")
    truth = small(root, 11, old_format=True)
    return root, truth, _scan(root)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_same_seed_writes_identical_bytes(tmp_path: Path) -> None:
    first, second = small(tmp_path / "a", 5), small(tmp_path / "b", 5)
    assert _tree(tmp_path / "a") == _tree(tmp_path / "b")
    assert first == second


def test_another_seed_writes_another_corpus(tmp_path: Path) -> None:
    small(tmp_path / "a", 5)
    small(tmp_path / "b", 6)
    assert _tree(tmp_path / "a") != _tree(tmp_path / "b")


def test_the_truth_counts_the_bytes_and_lines_written(corpus: tuple[Path, Truth, Scan]) -> None:
    root, truth, scan = corpus
    assert truth.bytes == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert truth.lines.total() == len(scan.lines)
    unusable = [d for _, d in scan.parsed() if d.get("type") == "assistant" and not _valid(d)]
    broken = [line for line in scan.lines if line.data is None]
    synthetic = [d for d in unusable if d["message"]["model"] == "<synthetic>"]
    assert truth.malformed_lines == len(broken) + len(unusable) - len(synthetic)
    assert {kind.removeprefix("malformed:") for kind in truth.lines if kind.startswith("malformed:")} == set(
        MALFORMED_KINDS
    )


def test_project_directories_are_named_as_claude_code_names_them(corpus: tuple[Path, Truth, Scan]) -> None:
    root, _, scan = corpus
    for path, d in scan.parsed():
        if "cwd" in d and path.parent.name != "subagents":
            assert path.parent.name == re.sub("[^A-Za-z0-9]", "-", d["cwd"])
    assert (root / "projects" / "-home-dev-acme-api").is_dir()


def test_every_line_type_claude_code_writes_is_present(corpus: tuple[Path, Truth, Scan]) -> None:
    _, _, scan = corpus
    types = {d.get("type") for _, d in scan.parsed()}
    assert types == {
        "user",
        "assistant",
        "attachment",
        "queue-operation",
        "file-history-snapshot",
        "system",
        "last-prompt",
        "mode",
        "permission-mode",
        "ai-title",
    }
    subtypes = {d.get("subtype") for _, d in scan.parsed() if d.get("type") == "system"}
    assert subtypes == {"turn_duration", "compact_boundary", "local_command"}


def test_a_response_is_split_into_one_line_per_content_block(corpus: tuple[Path, Truth, Scan]) -> None:
    _, _, scan = corpus
    copies: dict[tuple[Path, str], list[dict[str, Any]]] = defaultdict(list)
    for path, d in scan.usage_lines():
        if not _is_replay(d):
            copies[path, d["message"]["id"]].append(d)
    split = [lines for lines in copies.values() if len(lines) > 1]
    assert len(split) > len(copies) // 3
    for lines in split:
        assert len({d["requestId"] for d in lines}) == 1
        assert all(len(d["message"]["content"]) == 1 for d in lines)


def test_early_lines_carry_provisional_usage(corpus: tuple[Path, Truth, Scan]) -> None:
    _, truth, scan = corpus
    provisional = [
        d
        for _, d in scan.usage_lines()
        if d["message"]["stop_reason"] is None and d["message"]["usage"]["output_tokens"] == 1
    ]
    assert provisional
    for d in provisional:
        assert truth.requests[d["message"]["id"]].tokens[1] > 1


def test_a_forked_session_copies_the_conversation_into_a_new_file(corpus: tuple[Path, Truth, Scan]) -> None:
    _, truth, scan = corpus
    files_of: dict[str, set[Path]] = defaultdict(set)
    sessions_of: dict[str, set[str]] = defaultdict(set)
    for path, d in scan.usage_lines():
        if not _valid(d):
            continue
        files_of[d["message"]["id"]].add(path)
        sessions_of[d["message"]["id"]].add(d["sessionId"])
    forked = [m for m, files in files_of.items() if len(files) > 1]
    assert forked
    assert all(len(sessions_of[m]) == 2 for m in forked)
    assert all(truth.requests[m].session_id in sessions_of[m] for m in forked)


def test_a_side_question_replays_a_response_under_a_new_request_id(corpus: tuple[Path, Truth, Scan]) -> None:
    _, _, scan = corpus
    request_ids: dict[str, set[str]] = defaultdict(set)
    replays = []
    for _, d in scan.usage_lines():
        request_ids[d["message"]["id"]].add(d.get("requestId", ""))
        if _is_replay(d):
            replays.append(d["message"]["id"])
    assert replays
    assert all(len(request_ids[m]) == 2 for m in replays)


def test_subagents_write_their_own_files_and_the_parent_repeats_their_last_usage(
    corpus: tuple[Path, Truth, Scan],
) -> None:
    root, truth, scan = corpus
    agent_files = sorted(root.glob("projects/*/*/subagents/agent-*.jsonl"))
    assert agent_files
    for path in agent_files:
        assert path.with_name(path.stem + ".meta.json").is_file()
        lines = [d for p, d in scan.usage_lines() if p == path]
        assert all(d["isSidechain"] and d["agentId"] == path.stem[6:] and "attributionAgent" in d for d in lines)
        assert all(truth.requests[d["message"]["id"]].agent == "subagent" for d in lines)
    repeated = [
        d for _, d in scan.parsed() if isinstance(d.get("toolUseResult"), dict) and "usage" in d["toolUseResult"]
    ]
    assert repeated
    assert all(d["type"] == "user" and d["toolUseResult"]["totalTokens"] > 0 for d in repeated)


def test_api_errors_are_synthetic_lines_with_zero_usage(corpus: tuple[Path, Truth, Scan]) -> None:
    _, truth, scan = corpus
    synthetic = [d for _, d in scan.usage_lines() if d["message"]["model"] == "<synthetic>"]
    assert synthetic
    assert all(d["isApiErrorMessage"] and not any(_tokens(d)) for d in synthetic)
    assert not any(r.model == "<synthetic>" for r in truth.requests.values())


def test_every_malformed_kind_is_written(corpus: tuple[Path, Truth, Scan]) -> None:
    _, truth, scan = corpus
    broken = [line.raw for line in scan.lines if line.data is None]
    assert any(raw.startswith(b"\x00") and not raw.strip(b"\x00") for raw in broken)  # NUL padding
    assert any(b"NaN" in raw and raw.endswith(b"}") for raw in broken)
    assert any(raw.startswith(b'{"parentUuid"') and not raw.endswith(b"}") for raw in broken)  # truncated
    assert any(not raw.startswith(b"{") and raw.strip(b"\x00") for raw in broken)  # binary
    usages = [_usage(d) for _, d in scan.parsed() if d.get("type") == "assistant"]
    assert any(isinstance(d["message"]["usage"], str) for _, d in scan.parsed() if d.get("type") == "assistant")
    assert any(u is not None and isinstance(u["output_tokens"], int) and u["output_tokens"] < 0 for u in usages)
    assert any(u is not None and isinstance(u["output_tokens"], str) for u in usages)
    assert truth.malformed_lines == sum(n for kind, n in truth.lines.items() if kind.startswith("malformed:"))


def test_compaction_writes_a_summary_line(corpus: tuple[Path, Truth, Scan]) -> None:
    _, _, scan = corpus
    assert any(d.get("isCompactSummary") is True and d["type"] == "user" for _, d in scan.parsed())


def test_old_lines_carry_cost_and_no_request_id(corpus: tuple[Path, Truth, Scan]) -> None:
    _, truth, scan = corpus
    old = [d for _, d in scan.usage_lines() if "costUSD" in d]
    assert old
    assert all("requestId" not in d and "cache_creation" not in d["message"]["usage"] for d in old)
    assert all(truth.requests[d["message"]["id"]].reported_cost == d["costUSD"] for d in old)


def test_cache_writes_come_with_both_ttls_and_without_the_split(corpus: tuple[Path, Truth, Scan]) -> None:
    _, _, scan = corpus
    splits = [d["message"]["usage"].get("cache_creation") for _, d in scan.usage_lines()]
    assert any(s and s["ephemeral_5m_input_tokens"] > 0 for s in splits)
    assert any(s and s["ephemeral_1h_input_tokens"] > 0 for s in splits)
    assert any(s is None for s in splits)


def test_requests_use_web_search_every_tool_and_every_model(corpus: tuple[Path, Truth, Scan]) -> None:
    _, truth, scan = corpus
    tools = {b["name"] for _, d in scan.usage_lines() for b in d["message"]["content"] if b["type"] == "tool_use"}
    assert set(ALL_TOOLS) <= tools
    assert {r.model for r in truth.requests.values()} >= {m for m, _ in MAIN_MODELS}
    assert any(r.web_search_requests > 0 for r in truth.requests.values())
    long = [r for r in truth.requests.values() if r.model in LONG_CONTEXT_MODELS and _context(r.tokens) > 200_000]
    assert long


def test_sessions_switch_models_and_cross_utc_midnight(corpus: tuple[Path, Truth, Scan]) -> None:
    _, _, scan = corpus
    models: dict[str, set[str]] = defaultdict(set)
    days: dict[Path, set[str]] = defaultdict(set)
    for path, d in scan.usage_lines():
        if not d["isSidechain"] and d["message"]["model"] != "<synthetic>":
            models[d["sessionId"]].add(d["message"]["model"])
        days[path].add(d["timestamp"][:10])
    assert any(len(m) > 1 for m in models.values())
    assert any(len(d) > 1 for d in days.values())


def test_a_response_can_straddle_midnight_with_a_provisional_first_line(corpus: tuple[Path, Truth, Scan]) -> None:
    _, truth, scan = corpus
    dates: dict[str, set[str]] = defaultdict(set)
    for _, d in scan.usage_lines():
        if not _is_replay(d):
            dates[d["message"]["id"]].add(d["timestamp"][:10])
    straddling = [m for m, found in dates.items() if len(found) > 1]
    assert len(straddling) == truth.traps["midnight_split"] == 1


def test_responses_stay_within_one_utc_day_without_the_midnight_split(tmp_path: Path) -> None:
    small(tmp_path, 11, midnight_split=False)
    dates: dict[str, set[str]] = defaultdict(set)
    for _, d in _scan(tmp_path).usage_lines():
        if not _is_replay(d):
            dates[d["message"]["id"]].add(d["timestamp"][:10])
    assert all(len(found) == 1 for found in dates.values())


def test_bytes_are_dominated_by_lines_without_usage(corpus: tuple[Path, Truth, Scan]) -> None:
    _, _, scan = corpus
    usage_bytes = sum(len(line.raw) for line in scan.lines if line.data and line.data.get("type") == "assistant")
    assert usage_bytes < 0.4 * sum(len(line.raw) for line in scan.lines)
    assert (
        max(len(line.raw) for line in scan.lines if line.data and line.data["type"] == "file-history-snapshot") > 50_000
    )


def _tokens(d: dict[str, Any]) -> Tokens:
    u = _usage(d) or {}
    split = u.get("cache_creation")
    w1h = split.get("ephemeral_1h_input_tokens", 0) if isinstance(split, dict) else 0
    write = u.get("cache_creation_input_tokens", 0)
    return (u.get("input_tokens", 0), u.get("output_tokens", 0), u.get("cache_read_input_tokens", 0), write - w1h, w1h)


def _context(t: Tokens) -> int:
    return t[0] + t[2] + t[3] + t[4]


def _valid(d: dict[str, Any]) -> bool:
    u = _usage(d)
    fields = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    ok = u is not None and all(type(u.get(k)) is int and u[k] >= 0 for k in fields)
    return ok and d["message"].get("model") != "<synthetic>"


def _reference_reader(scan: Scan) -> dict[tuple[str, str], Tokens]:
    """FORMATS §1 done right: one request per message.id, per-field max, dated by the earliest copy."""
    merged: dict[str, tuple[str, str, list[int]]] = {}
    for _, d in scan.usage_lines():
        if not _valid(d):
            continue
        ts, model, best = merged.setdefault(d["message"]["id"], (d["timestamp"], d["message"]["model"], [0] * 5))
        best[:] = [max(a, b) for a, b in zip(best, _tokens(d), strict=True)]
        merged[d["message"]["id"]] = (min(ts, d["timestamp"]), model, best)
    daily: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * 5)
    for ts, model, tokens in merged.values():
        total = daily[ts[:10], model]
        total[:] = [a + b for a, b in zip(total, tokens, strict=True)]
    return {key: (t[0], t[1], t[2], t[3], t[4]) for key, t in sorted(daily.items())}


def test_a_reader_that_follows_the_format_rules_finds_the_truth(corpus: tuple[Path, Truth, Scan]) -> None:
    _, truth, scan = corpus
    assert _reference_reader(scan) == truth.daily_by_model()


def test_the_truth_differs_from_a_naive_line_sum(corpus: tuple[Path, Truth, Scan]) -> None:
    _, truth, scan = corpus
    naive = [0] * 5
    for _, d in scan.usage_lines():
        if _valid(d):
            naive = [a + b for a, b in zip(naive, _tokens(d), strict=True)]
    total = truth.totals()
    assert all(n > t for n, t in zip(naive, total, strict=True) if t)
    assert naive[1] > 1.5 * total[1]


def test_keeping_the_first_copy_undercounts_output(corpus: tuple[Path, Truth, Scan]) -> None:
    _, truth, scan = corpus
    first: dict[str, int] = {}
    for _, d in scan.usage_lines():
        if _valid(d):
            first.setdefault(d["message"]["id"], _tokens(d)[1])
    assert sum(first.values()) < truth.totals()[1]


def test_daily_by_model_follows_the_time_zone(corpus: tuple[Path, Truth, Scan]) -> None:
    _, truth, _ = corpus
    utc, tokyo = truth.daily_by_model(), truth.daily_by_model("Asia/Tokyo")
    assert utc != tokyo
    for daily in (utc, tokyo):
        assert tuple(sum(t[i] for t in daily.values()) for i in range(5)) == truth.totals()


def test_target_bytes_sets_the_corpus_size(tmp_path: Path) -> None:
    truth = generate(tmp_path, seed=2, days=30, target_bytes=3 << 20)
    assert 3 << 20 <= truth.bytes < 9 << 20


def test_appended_activity_adds_requests_and_can_be_undone(tmp_path: Path) -> None:
    truth = small(tmp_path, 3)
    before = _tree(tmp_path)
    at = datetime(2026, 9, 6, 12, tzinfo=UTC)
    appended = append_activity(tmp_path, seed=3, target_bytes=300_000, at=at)
    assert appended.grown and appended.created
    assert appended.truth.bytes >= 300_000
    assert not set(appended.truth.requests) & set(truth.requests)
    assert min(r.timestamp for r in appended.truth.requests.values()) >= "2026-09-06T12"
    appended.undo()
    assert _tree(tmp_path) == before


def test_a_longer_corpus_starts_where_asked(tmp_path: Path) -> None:
    truth = generate(tmp_path, seed=4, days=2, sessions_per_day=1, start=date(2027, 1, 30), malformed=False)
    assert min(r.timestamp for r in truth.requests.values()).startswith("2027-01-3")
    assert truth.malformed_lines == 0
