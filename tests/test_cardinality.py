"""Cardinality pressure: a publish costs what the capped series cost, not what the distinct values cost."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from exporter.events import Prompt, Request, Tokens
from exporter.ledger.schema import USAGE_LABELS, USAGE_VALUES
from exporter.ledger.store import Ledger
from exporter.metrics.exposition import read_snapshot
from exporter.metrics.points import OTHER, LabelPolicy, Points, read_points

BUILD = {"version": "0.0.0", "pricing_source": "test", "pricing_version": "0"}
CAPS = LabelPolicy(max_projects=10, max_models=10, max_tools=10, user=True, max_users=10)


def request(
    key: str,
    project: str = "acme",
    model: str = "claude-sonnet-4-5",
    user: str = "ada",
    tools: frozenset[str] = frozenset({"Read"}),
    output: int = 100,
    session: str = "s1",
) -> Request:
    return Request(
        key,
        f"req_{key}",
        1_760_000_000_000 + len(key),
        session,
        project,
        model,
        "main",
        Tokens(input=10, output=output),
        0,
        tools,
        "standard",
        "transcripts",
        False,
        None,
        user,
    )


def enrich(r: Request) -> Request:
    return r._replace(interaction="main", category="coding", cost=r.tokens.output * 1000, uncached_cost=5)


def flood(ledger: Ledger, n: int) -> None:
    """`n` hostile values of every capped label (model, project, user, tool), one series row each, as
    commits store them; written in SQL, since 100,000 requests through `commit` would take a while."""
    numbers = "WITH RECURSIVE i(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM i WHERE n + 1 < ?)"
    with ledger.transaction():
        ledger.db.execute(
            f"{numbers} INSERT INTO usage_series ({', '.join(USAGE_LABELS + USAGE_VALUES)})"
            f" SELECT 'model-' || n, 'main', 'main', 'coding', 'project-' || n, 'user-' || n,"
            f" 1, 2, 0, 0, 0, 3000, 0, 1, 0, 5 FROM i",
            (n,),
        )
        ledger.db.execute(
            f"{numbers} INSERT INTO tool_series SELECT 'tool-' || n, 'main', 'project-' || n, 1 FROM i", (n,)
        )
        ledger.db.execute(f"{numbers} INSERT INTO sessions SELECT 'hostile-' || n, 'project-' || n, 0, '' FROM i", (n,))
        ledger.db.execute(
            f"{numbers} INSERT INTO prompts SELECT 'p-' || n, 'hostile-' || n, 0, 'project-' || n, NULL, NULL FROM i",
            (n,),
        )


@contextmanager
def counting_steps(ledger: Ledger) -> Iterator[list[int]]:
    """Hundreds of SQLite virtual machine instructions run meanwhile: a count, not a timing."""
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    ledger.db.set_progress_handler(tick, 100)
    try:
        yield steps
    finally:
        ledger.db.set_progress_handler(None, 0)


def publish_steps(tmp_path: Path, distinct: int) -> tuple[int, Points]:
    """Steps of the publish after one legit event, on a ledger flooded with `distinct` hostile values."""
    ledger = Ledger(tmp_path / f"state-{distinct}")
    try:
        ledger.commit([request("legit-1")], enrich)
        flood(ledger, distinct)
        read_snapshot(ledger, CAPS, BUILD)  # the first publish of a connection reads everything once
        ledger.commit([request("legit-2")], enrich)
        with counting_steps(ledger) as steps:
            points = read_snapshot(ledger, CAPS, BUILD).points
        return steps[0], points
    finally:
        ledger.close()


@pytest.mark.slow
def test_publishing_one_event_costs_the_same_with_100k_distinct_hostile_values_as_with_10(tmp_path: Path) -> None:
    few, few_points = publish_steps(tmp_path, 10)
    many, many_points = publish_steps(tmp_path, 100_000)
    assert many <= 2 * few, (few, many)
    # The same capped series either way; every request is still counted once.
    assert many_points.keys() == few_points.keys()
    for points, distinct in ((few_points, 10), (many_points, 100_000)):
        requests = points["claude_usage_requests_total"]
        assert sum(requests.values()) == 2 + distinct
        assert len({dict(labels)["project"] for labels in requests}) == 10 + 1  # the cap, and `other`
        legit = [v for labels, v in requests.items() if dict(labels)["project"] == "acme"]
        assert legit == [2]


def commits(ledger: Ledger) -> Iterator[None]:
    """Writes of every kind the series tables see, with a pause (a publish) after each."""
    ledger.commit(
        [request("a"), request("b", project="beta", model="claude-opus-4-1")],
        enrich,
        prompts=[Prompt("u1", "s1", 1, "acme")],
    )
    yield
    ledger.commit(
        [
            request(f"h{i}", project=f"p{i}", model=f"m{i}", user=f"u{i}", tools=frozenset({f"t{i}"}), session=f"s{i}")
            for i in range(25)
        ],
        enrich,
    )
    yield
    ledger.commit(
        [request("a", output=500), request("c", project="p3", session="s1")],
        enrich,
        prompts=[Prompt("u2", "s1", 2, "late"), Prompt("u1", "s1", 1, "acme")],
    )
    yield
    ledger.add_counters(
        {"lines.otlp.usage": 1}, tool_calls=Counter({("Bash", "main", "acme"): 2, ("t99", "main", "q"): 1})
    )
    yield


@pytest.mark.parametrize("policy", [CAPS, LabelPolicy(), LabelPolicy(project="hash", max_models=3, max_tools=2)])
def test_points_folded_commit_by_commit_equal_the_points_read_afresh(tmp_path: Path, policy: LabelPolicy) -> None:
    ledger = Ledger(tmp_path / "state")
    try:
        for _ in commits(ledger):
            live = read_points(ledger, policy)
            fresh = Ledger(tmp_path / "state")
            try:
                assert live == read_points(fresh, policy)
            finally:
                fresh.close()
        assert sum(live["claude_usage_requests_total"].values()) == 28
        assert sum(live["claude_usage_sessions_total"].values()) == 25  # s1 replaced, not counted twice
        assert sum(live["claude_usage_prompts_total"].values()) == 2
    finally:
        ledger.close()


def test_a_value_past_the_cap_stays_other_and_a_kept_value_keeps_its_label(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state")
    policy = LabelPolicy(max_projects=2)
    try:
        ledger.commit([request("a", project="first"), request("b", project="second")], enrich)
        read_points(ledger, policy)
        ledger.commit([request("c", project="third"), request("d", project="first")], enrich)
        projects = {
            dict(k)["project"]: v for k, v in read_points(ledger, policy)["claude_usage_requests_total"].items()
        }
        assert projects == {"first": 2, "second": 1, OTHER: 1}
    finally:
        ledger.close()


def test_a_commit_by_another_connection_is_seen_at_the_next_publish(tmp_path: Path) -> None:
    ledger, other = Ledger(tmp_path / "state"), Ledger(tmp_path / "state")
    try:
        ledger.commit([request("a")], enrich)
        assert sum(read_points(ledger, CAPS)["claude_usage_requests_total"].values()) == 1
        other.commit([request("b", project="elsewhere")], enrich)  # this connection's triggers never see it
        points = read_points(ledger, CAPS)["claude_usage_requests_total"]
        assert {dict(k)["project"]: v for k, v in points.items()} == {"acme": 1, "elsewhere": 1}
    finally:
        ledger.close()
        other.close()


def test_a_new_policy_folds_the_totals_again(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state")
    try:
        ledger.commit([request("a"), request("b", project="beta")], enrich)
        assert len(read_points(ledger, LabelPolicy(max_projects=1))["claude_usage_requests_total"]) == 2
        projects = read_points(ledger, LabelPolicy(project="off"))["claude_usage_requests_total"]
        assert [dict(k)["project"] for k in projects] == [""]
    finally:
        ledger.close()


def test_a_read_only_ledger_gives_the_same_points(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state")
    try:
        for _ in commits(ledger):
            pass
        expected = read_points(ledger, CAPS)
    finally:
        ledger.close()
    frozen = Ledger.read_only(tmp_path / "state")
    try:
        assert read_points(frozen, CAPS) == expected
    finally:
        frozen.close()
