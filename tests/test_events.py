"""Merging the copies of one request field by field, in memory (the ledger's tests merge through SQLite)."""

from __future__ import annotations

from typing import Any

from exporter.events import Request, Tokens


def _request(**changes: Any) -> Request:
    base = Request(
        key="msg_1",
        request_id="req_1",
        ts=1_000,
        session_id="s1",
        project="acme",
        model="claude-sonnet-4-5",
        agent="main",
        tokens=Tokens(10, 1, 1000, 50, 0),
        web_search=1,
        tools=frozenset({"Read"}),
        speed="standard",
        source="transcripts",
        compaction=False,
        reported_cost=5,
        user="ann",
        copies=1,
        origin=100,
        interaction="prompt",
        category="coding",
        cost=7,
        uncached_cost=9,
    )
    return base._replace(**changes)


def test_two_copies_merge_field_by_field_with_the_identity_of_the_earlier_one() -> None:
    earlier = _request(request_id=None, speed="fast")
    # The later copy differs in every field the merge reads.
    later = _request(request_id="req_2", ts=2_000, session_id="fork", project="other", agent="subagent")
    later = later._replace(tokens=Tokens(10, 100, 900, 50, 7), web_search=3, tools=frozenset({"Edit"}))
    later = later._replace(compaction=True, reported_cost=None, user="bob", copies=2, origin=50)
    expected = earlier._replace(
        request_id="req_2",  # the earlier copy has none
        tokens=Tokens(10, 100, 1000, 50, 7),
        web_search=3,
        tools=frozenset({"Read", "Edit"}),
        compaction=True,
        copies=3,
        interaction="",  # derived from the merge: `enrich` sets them again
        category="",
        cost=None,
        uncached_cost=None,
    )
    assert earlier.merge(later) == expected
    assert later.merge(earlier) == expected


def test_of_two_copies_at_one_time_the_one_whose_file_started_first_gives_the_identity() -> None:
    parent, fork = _request(origin=100), _request(session_id="fork", origin=200, request_id="req_fork")
    assert parent.merge(fork).session_id == fork.merge(parent).session_id == "s1"
    assert fork.merge(parent).request_id == "req_1"
    unknown = _request(session_id="otlp", origin=None)
    assert unknown.merge(fork).session_id == "fork"
