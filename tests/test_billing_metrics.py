"""The billing metrics from a real ledger: yesterday's bill by model family and workspace beside our estimate, the
drift only once the bill was read after its day ended, the data's age at each scrape, and Claude Code analytics'
counters with a user label only under `labels.user`."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from exporter.config import load_settings
from exporter.daemon.billing import private
from exporter.daemon.loop import options_from
from exporter.ledger.billing import replace_days
from exporter.ledger.store import Ledger
from exporter.metrics.billing import MAX_WORKSPACES, read_analytics, read_bill
from exporter.metrics.exposition import TEXT, Exposition, Health, Snapshot
from exporter.metrics.points import OTHER, LabelPolicy
from exporter.sources.anthropic_admin import ClaudeCodeDay, CostDay, MessagesDay

NOW = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
YESTERDAY = datetime(2026, 12, 6, tzinfo=UTC)
BILLED_DAY = YESTERDAY.date()
DAY = timedelta(days=1)
OFF = LabelPolicy()
SONNET, OPUS = "claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    opened = Ledger(tmp_path)
    try:
        yield opened
    finally:
        opened.close()


def request(ledger: Ledger, key: str, at: datetime, cost_nanos: int, family: str = "sonnet") -> None:
    ledger.db.execute(
        "INSERT INTO requests (key, ts, session_id, project, model, model_family, agent, input, output, cache_read,"
        " cache_write_5m, cache_write_1h, web_search, tools, speed, source, compaction, interaction, category, cost,"
        " copies) VALUES (?, ?, 's', 'p', 'm', ?, 'main', 1, 1, 0, 0, 0, 0, '', 'standard', 'transcripts', 0,"
        " 'i', 'c', ?, 1)",
        (key, int(at.timestamp() * 1000), family, cost_nanos),
    )


def cost(nanos: int, model: str | None = SONNET, workspace: str | None = None, day: date = BILLED_DAY) -> CostDay:
    return CostDay(day, workspace, "d", model, "tokens", "output_tokens", None, None, nanos)


def read_at(ledger: Ledger, moment: datetime) -> None:
    ledger.db.execute("INSERT OR REPLACE INTO meta VALUES ('billing.read_at', ?)", (repr(moment.timestamp()),))


def billed(ledger: Ledger, *rows: CostDay) -> None:
    replace_days(ledger.db, "cost", [YESTERDAY.date()], list(rows))


def test_yesterdays_bill_and_our_estimate_show_by_model_family_and_the_drift_is_their_ratio(ledger: Ledger) -> None:
    day = YESTERDAY.date()
    # $2 of Sonnet in the default workspace, $1 of Opus in another, $0.50 of web search (no model).
    billed(ledger, cost(2 * 10**9), cost(10**9, OPUS, "wrkspc_1"), cost(5 * 10**8, None, "wrkspc_1"))
    replace_days(
        ledger.db,
        "usage",
        [day],
        [
            MessagesDay(day, SONNET, None, None, None, None, None, 1, 2, 3, 4, 5, 0),
            MessagesDay(day, OPUS, "wrkspc_1", None, None, None, None, 10, 0, 0, 0, 20, 0),
        ],
    )
    request(ledger, "in", YESTERDAY + timedelta(hours=23), 3 * 10**9)
    request(ledger, "opus", YESTERDAY + timedelta(hours=1), 10**9, "opus")
    request(ledger, "before", YESTERDAY - timedelta(seconds=1), 10**9)  # another UTC day: not in the estimate
    request(ledger, "after", YESTERDAY + DAY, 10**9)
    read_at(ledger, NOW - timedelta(minutes=1))
    points = read_bill(ledger, NOW.timestamp())
    assert points["claude_usage_billed_cost_usd"] == {
        (("model_family", "sonnet"), ("workspace", "default")): 2.0,
        (("model_family", "opus"), ("workspace", "wrkspc_1")): 1.0,
        (("model_family", OTHER), ("workspace", "wrkspc_1")): 0.5,
    }
    assert points["claude_usage_bill_estimate_usd"] == {
        (("model_family", "sonnet"),): 3.0,
        (("model_family", "opus"),): 1.0,
    }
    assert points["claude_usage_bill_drift_ratio"] == {(): 4 / 3.5 - 1}
    tokens = points["claude_usage_billed_tokens"]
    assert tokens[(("model_family", "sonnet"), ("token_type", "input"))] == 1
    assert tokens[(("model_family", "sonnet"), ("token_type", "cache_write_5m"))] == 2
    assert tokens[(("model_family", "opus"), ("token_type", "input"))] == 10
    assert tokens[(("model_family", "opus"), ("token_type", "output"))] == 20
    assert len(tokens) == 10  # five token types of each family
    assert "claude_usage_billing_data_age_seconds" not in points  # live: computed at each scrape (see below)


def test_a_bill_read_before_its_day_ended_shows_but_gives_no_drift(ledger: Ledger) -> None:
    billed(ledger, cost(2 * 10**9))
    request(ledger, "in", YESTERDAY + timedelta(hours=12), 10**9)
    read_at(ledger, YESTERDAY + timedelta(hours=23))  # the poller has not read since yesterday: a partial bill
    points = read_bill(ledger, NOW.timestamp())
    assert points["claude_usage_billed_cost_usd"] == {(("model_family", "sonnet"), ("workspace", "default")): 2.0}
    assert "claude_usage_bill_drift_ratio" not in points
    read_at(ledger, YESTERDAY + DAY)  # the first read after midnight
    assert read_bill(ledger, NOW.timestamp())["claude_usage_bill_drift_ratio"] == {(): 0.5 - 1}


def test_a_bill_with_nothing_of_ours_that_day_has_an_estimate_of_0_and_a_drift_of_minus_1(ledger: Ledger) -> None:
    billed(ledger, cost(10**9))
    read_at(ledger, NOW)
    points = read_bill(ledger, NOW.timestamp())
    assert points["claude_usage_bill_estimate_usd"] == {(("model_family", OTHER),): 0.0}
    assert points["claude_usage_bill_drift_ratio"] == {(): -1.0}


def test_with_no_bill_for_yesterday_no_bill_metric_is_shown(ledger: Ledger) -> None:
    replace_days(ledger.db, "cost", [date(2026, 12, 5)], [cost(10**9, day=date(2026, 12, 5))])  # the day before
    read_at(ledger, NOW)
    assert read_bill(ledger, NOW.timestamp()) == {}


def test_workspaces_past_the_costliest_twenty_are_summed_into_other(ledger: Ledger) -> None:
    billed(ledger, *(cost((n + 1) * 10**9, workspace=f"wrkspc_{n:02}") for n in range(MAX_WORKSPACES + 2)))
    shown = read_bill(ledger, NOW.timestamp())["claude_usage_billed_cost_usd"]
    workspaces = {dict(labels)["workspace"]: value for labels, value in shown.items()}
    assert len(workspaces) == MAX_WORKSPACES + 1
    assert workspaces[OTHER] == 1.0 + 2.0  # the two cheapest
    assert "wrkspc_00" not in workspaces and "wrkspc_21" in workspaces


def activity(day: date, actor: str, sessions: int, actor_type: str = "user_actor") -> ClaudeCodeDay:
    return ClaudeCodeDay(day, actor_type, actor, "api", "vscode", sessions, 10 * sessions, sessions, 2, 1, ())


def claude_code(ledger: Ledger, users: str = "off") -> None:
    first, second = YESTERDAY.date() - DAY, YESTERDAY.date()
    replace_days(ledger.db, "claude_code", [first], private([activity(first, "b@example.com", 1)], users))
    replace_days(
        ledger.db,
        "claude_code",
        [second],
        private(
            [
                activity(second, "a@example.com", 2),
                activity(second, "b@example.com", 3),
                activity(second, "ci", 4, "api_actor"),
            ],
            users,
        ),
    )


def short_hash(person: str) -> str:
    return hashlib.sha256(person.encode()).hexdigest()[:12]


def test_claude_code_analytics_are_counters_summed_over_every_user_without_labels_user(ledger: Ledger) -> None:
    claude_code(ledger)
    points = read_analytics(ledger, OFF)
    assert points["claude_usage_analytics_sessions_total"] == {(): 10}
    assert points["claude_usage_analytics_lines_of_code_total"] == {
        (("kind", "added"),): 100,
        (("kind", "removed"),): 10,
    }
    assert points["claude_usage_analytics_commits_total"] == {(): 8}
    assert points["claude_usage_analytics_pull_requests_total"] == {(): 4}
    assert "example.com" not in repr(points)


def test_a_day_read_again_adds_only_what_it_grew_and_a_correction_downwards_keeps_what_was_counted(
    ledger: Ledger,
) -> None:
    claude_code(ledger, "email")  # the addresses as stored under labels.user: email
    second = BILLED_DAY
    day = [activity(second, "a@example.com", 2), activity(second, "b@example.com", 3)]
    replace_days(ledger.db, "claude_code", [second], [*day, activity(second, "ci", 4, "api_actor")])  # the same
    assert read_analytics(ledger, OFF)["claude_usage_analytics_sessions_total"] == {(): 10}
    replace_days(ledger.db, "claude_code", [second], [*day, activity(second, "ci", 6, "api_actor")])  # ci grew
    assert read_analytics(ledger, OFF)["claude_usage_analytics_sessions_total"] == {(): 12}
    replace_days(ledger.db, "claude_code", [second], day)  # ci's day withdrawn: a counter never goes down
    assert read_analytics(ledger, OFF)["claude_usage_analytics_sessions_total"] == {(): 12}
    table = ledger.db.execute("SELECT actor, sum(sessions) FROM claude_code_day GROUP BY actor").fetchall()
    assert sorted(table) == [("a@example.com", 2), ("b@example.com", 4)]  # the stored days follow the bill


def test_the_counters_exist_at_0_before_any_analytics_are_read(ledger: Ledger) -> None:
    points = read_analytics(ledger, OFF)
    assert points["claude_usage_analytics_commits_total"] == {(): 0.0}
    assert points["claude_usage_analytics_lines_of_code_total"] == {(("kind", "added"),): 0, (("kind", "removed"),): 0}


def test_labels_user_hash_gives_each_user_the_hash_team_mode_gives_them(ledger: Ledger) -> None:
    claude_code(ledger, "hash")
    sessions = read_analytics(ledger, LabelPolicy(user=True))["claude_usage_analytics_sessions_total"]
    assert sessions == {
        (("user", short_hash("b@example.com")),): 4,
        (("user", short_hash("a@example.com")),): 2,
        (("user", short_hash("ci")),): 4,
    }


def test_labels_user_email_shows_the_address_and_users_past_the_cap_are_other(ledger: Ledger) -> None:
    claude_code(ledger, "email")
    policy = LabelPolicy(user=True, max_users=2)
    points = read_analytics(ledger, policy)
    # First seen first: b on the first day, then a and ci on the second, by name.
    assert points["claude_usage_analytics_sessions_total"] == {
        (("user", "b@example.com"),): 4,
        (("user", "a@example.com"),): 2,
        (("user", OTHER),): 4,
    }
    assert points["claude_usage_analytics_lines_of_code_total"][(("kind", "added"), ("user", OTHER))] == 40


@pytest.mark.parametrize(("setting", "user"), [("off", False), ("hash", True), ("email", True)])
def test_labels_user_in_the_config_reaches_the_label_policy(tmp_path: Path, setting: str, user: bool) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"labels: {{user: {setting}, max_users: 7}}\n")
    policy = options_from(load_settings(config, {"TZ": "UTC", "HOME": str(tmp_path)}, {})).policy
    assert (policy.user, policy.max_users) == (user, 7)


def test_the_billing_data_age_is_computed_at_each_scrape_from_the_clock(ledger: Ledger) -> None:
    wall = [1_000.0]
    exposition = Exposition(Health(wall=lambda: wall[0]), {})
    try:
        assert b"claude_usage_billing_data_age_seconds " not in exposition.render(TEXT, process=False)
        exposition.update(Snapshot(billing_read_at=900.0))

        def age() -> float:
            found = re.search(rb"^claude_usage_billing_data_age_seconds (\S+)$", exposition.render(TEXT, False), re.M)
            assert found is not None
            return float(found[1])

        assert age() == 100.0
        wall[0] = 1_600.0  # no new snapshot: only the clock moved
        assert age() == 700.0
        wall[0] = 800.0  # a clock set back never shows a negative age
        assert age() == 0.0
    finally:
        exposition.close()
