"""Every dashboard query, variable and recording rule returns data from a real Prometheus scraping a real `serve`.

A misspelt metric or label is no error in PromQL: the query succeeds with an empty result. So here an
empty result is the failure. The exporter reads a generated history with activity in the last hour, a
model with no price, budgets and a plan snapshot, so every panel has something to show; Prometheus
loads the shipped rule files and evaluates them every second. Needs the Debian package `prometheus`.
"""

from __future__ import annotations

import math
import re
import runpy
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from exporter.reports.periods import iso
from tests.support import fakeadmin
from tests.support.corpus import append_activity, generate
from tests.support.daemon import Serve, serving
from tests.support.lines import assistant_line, write
from tests.support.prometheus import JOB, Prometheus, prometheus
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # Prometheus scraping a real `serve`

ROOT = Path(__file__).parent.parent
RULES = (ROOT / "deploy" / "prometheus" / "recording.yml", ROOT / "deploy" / "prometheus" / "alerts.yml")
GENERATOR = runpy.run_path(str(ROOT / "dashboards" / "generate.py"))
DASHBOARDS: dict[str, dict[str, Any]] = GENERATOR["build"]()
# What Grafana puts in place of each variable: the job Prometheus scrapes, "All" (`.*`) for the
# others, and intervals that hold several of the test's one-second scrapes.
VALUES = {
    "job": JOB,
    "instance": ".*",
    "project": ".*",
    "model_family": ".*",
    "user": ".*",
    "__rate_interval": "1m",
    "__range": "1h",
    "__interval": "15s",
    "__range_s": "3600",
}
DAY_LIMIT = 1  # USD: one request of today's costs $2
BILLED_CENTS = 100_000_000  # yesterday's bill: $1,000,000, so far above our estimate that its drift alert fires
SEED = 41


def substitute(expr: str) -> str:
    """`expr` as Grafana sends it, every `$name` or `${name}` replaced; an unknown variable fails."""

    def value(found: re.Match[str]) -> str:
        assert found[1] in VALUES, f"unknown variable ${found[1]} in {expr}"
        return VALUES[found[1]]

    return re.sub(r"\$\{?(\w+)\}?", value, expr)


def params(listed: str) -> list[Any]:
    """`(title, query)` pairs the generator's function `listed` gives for each dashboard, as test cases."""
    return [
        pytest.param(query, id=f"{board['uid']}: {title}")
        for board in DASHBOARDS.values()
        for title, query in GENERATOR[listed](board)
    ]


def recordings() -> list[str]:
    return [rule["record"] for group in yaml.safe_load(RULES[0].read_text())["groups"] for rule in group["rules"]]


def stamp(moment: datetime) -> str:
    return iso(int(moment.timestamp() * 1000))


@dataclass(frozen=True)
class Exporter:
    """A running `serve` over the generated history, and what `report` needs to read the same ledger."""

    daemon: Serve
    state: Path
    root: Path
    config: Path


def bill_yesterday(bill: fakeadmin.AdminState, midnight: datetime) -> None:
    """Yesterday's bill and Claude Code analytics in the fake Admin API: the "Estimate vs bill" row's data."""
    yesterday = midnight - timedelta(days=1)
    bill.costs = [fakeadmin.message_bucket(yesterday, timedelta(days=1), fakeadmin.cost_result(str(BILLED_CENTS)))]
    bill.messages = [fakeadmin.message_bucket(yesterday, timedelta(days=1), fakeadmin.message_result(1_000, 2_000))]
    bill.claude_code = {
        yesterday.date().isoformat(): [fakeadmin.claude_code_record(yesterday.date(), "dev@example.com")]
    }


@contextmanager
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    """`serve` over a generated history with something for every panel, and yesterday's bill from a fake Admin
    API; test_remote_write uses it too."""
    now = datetime.now(UTC)
    midnight = datetime.combine(now.date(), datetime.min.time(), UTC)  # today's, so near midnight too
    root = tmp_path_factory.mktemp("claude")
    generate(root, seed=SEED, days=2, start=(now - timedelta(days=3)).date(), sessions_per_day=2)
    append_activity(root, seed=SEED, target_bytes=64 << 10, at=now - timedelta(hours=1))
    write(
        root / "projects" / "-work-future" / "s.jsonl",
        # $2.00 for certain today (Haiku 4.5: $1 per million input tokens), whatever the random activity
        assistant_line(
            "msg_haiku",
            "req_haiku",
            stamp(max(now - timedelta(minutes=6), midnight)),
            "claude-haiku-4-5-20251001",
            input=2_000_000,
            output=0,
        ),
        # a model no price list knows yet
        assistant_line(
            "msg_future", "req_future", stamp(now - timedelta(minutes=5)), "claude-future-9", input=1_000, output=200
        ),
    )
    config = tmp_path_factory.mktemp("config") / "config.yaml"
    state = tmp_path_factory.mktemp("state")
    recorded = now.timestamp()
    (state / "statusline.json").write_bytes(
        orjson.dumps(
            {
                "version": 1,
                "rate_limits": {
                    "five_hour": {"used_percentage": 95, "resets_at": recorded + 3600, "recorded_at": recorded},
                    "seven_day": {"used_percentage": 40, "resets_at": recorded + 3 * 86400, "recorded_at": recorded},
                },
            }
        )
    )
    with fakeadmin.fake_admin() as (base, bill):
        bill_yesterday(bill, midnight)
        config.write_text(
            "timezone: UTC\nbudgets:\n"
            f"  - {{name: daily, window: day, limit_usd: {DAY_LIMIT}}}\n"
            "  - {name: weekly, window: week, limit_usd: 100000}\n"
            "  - {name: team-month, window: month, limit_usd: 500000}\n"
            f"sources: {{anthropic_admin: {{enabled: true, key_file: '{fakeadmin.key_file(config.parent)}',"
            f" base_url: '{base}', interval: 1m}}}}\n"
        )
        with serving(state, [root], "--config", str(config)) as daemon:
            yield Exporter(daemon, state, root, config)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exporter]:
    with exporter(tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="module")
def live(setup: Exporter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    workdir = tmp_path_factory.mktemp("prometheus")
    with prometheus(workdir, setup.daemon.url.removeprefix("http://"), rule_files=RULES) as server:
        server.wait_rates_defined()
        yield server


# The team row's panels need OTLP from Claude Code (commits, lines, users): a single machine has none.
TEAM_PANELS = {p["title"] for p in GENERATOR["team"]()}


@pytest.mark.parametrize("expr", [p for p in params("queries") if p.id.split(": ", 1)[1] not in TEAM_PANELS])
def test_every_dashboard_query_returns_data(live: Prometheus, expr: str) -> None:
    query = substitute(expr)
    assert eventually(lambda: live.query(query), what=f"data for {query}")


@pytest.mark.parametrize("query", params("variable_queries"))
def test_every_dashboard_variable_lists_values(live: Prometheus, query: str) -> None:
    found = re.fullmatch(r"label_values\((.+), *(\w+)\)", query)
    assert found is not None, f"{query} is not label_values(selector, label)"
    selector, label = substitute(found[1]), found[2]
    values = eventually(lambda: live.query(f"count by ({label}) ({selector})"), what=f"values of {query}")
    # `user` exists in team mode only; here its one value is the empty one, which All (`.*`) matches.
    assert all(labels.get(label) for labels, _ in values) or (label == "user" and values == [({}, values[0][1])])


# The spike baseline samples its input at whole hours (168 points a week, not 10,080): a Prometheus started
# minutes ago has no whole hour behind it yet. promtool's history.test.yml checks its value instead.
HOURLY = {"job_instance:claude_usage_cost_usd:increase1h_quantile_7d"}


@pytest.mark.parametrize("record", [r for r in recordings() if r not in HOURLY])
def test_every_recording_rule_records_data(live: Prometheus, record: str) -> None:
    assert eventually(lambda: live.query(record), what=f"samples of {record}")


def test_every_rule_evaluates_without_error(live: Prometheus) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        found = [rule for group in live.api("rules")["groups"] for rule in group["rules"]]
        return found if all(rule["health"] != "unknown" for rule in found) else None

    found = eventually(evaluated, what="every rule evaluated once")
    assert [(r["name"], r["health"], r.get("lastError", "")) for r in found if r["health"] != "ok"] == []
    assert len(found) == 27


def alert(live: Prometheus, name: str, **labels: str) -> dict[str, Any]:
    """The pending or firing alert `name` with `labels`, once Prometheus has it."""

    def found() -> dict[str, Any] | None:
        for candidate in live.api("alerts")["alerts"]:
            if candidate["labels"]["alertname"] == name and labels.items() <= candidate["labels"].items():
                return dict(candidate)
        return None

    return eventually(found, what=lambda: f"{name} {labels} among the alerts {live.api('alerts')['alerts']}")


def test_a_blown_daily_budget_raises_its_alert_with_the_figures_rendered(live: Prometheus) -> None:
    exceeded = alert(live, "ClaudeUsageBudgetExceeded", budget="daily")
    spend = live.scalar('claude_usage_budget_spend_usd{budget="daily"}')
    end = datetime.fromtimestamp(live.scalar('claude_usage_budget_window_end_timestamp_seconds{budget="daily"}'), UTC)
    instance = live.target
    assert exceeded["labels"] == {
        "alertname": "ClaudeUsageBudgetExceeded",
        "severity": "warning",
        "job": JOB,
        "instance": instance,
        "budget": "daily",
        "window": "day",
    }
    assert exceeded["annotations"]["description"] == (
        f"{instance} has spent ${spend:.2f} against the ${DAY_LIMIT:.2f} limit of budget daily; the day ends"
        f" {end:%Y-%m-%d %H:%M:%S} +0000 UTC."
    )
    assert end == datetime.combine(datetime.now(UTC).date() + timedelta(days=1), datetime.min.time(), UTC)


def test_a_plan_window_at_95_percent_and_a_model_with_no_price_raise_their_alerts(live: Prometheus) -> None:
    plan = alert(live, "ClaudeUsagePlanWindowHigh")
    assert (plan["labels"]["window"], plan["annotations"]["summary"]) == (
        "five_hour",
        "The Claude plan's five_hour window is 95% used.",
    )
    # A Prometheus without a week of history sees every unpriced model as new: the corpus has others too.
    unpriced = alert(live, "ClaudeUsageUnpricedModel", model="claude-future-9")
    assert "instance" not in unpriced["labels"], "keyed on the model, not on the pod"
    assert unpriced["annotations"]["summary"] == "Model claude-future-9 has no known price."


def test_yesterdays_bill_far_above_our_estimate_raises_the_drift_alert(live: Prometheus) -> None:
    drift = alert(live, "ClaudeUsageBillDrift")
    estimate, billed = (
        live.scalar("sum(claude_usage_bill_estimate_usd)"),
        live.scalar("sum(claude_usage_billed_cost_usd)"),
    )
    assert billed == BILLED_CENTS / 100
    assert drift["state"] == "pending"  # a daily figure must hold for 3 hours
    assert drift["labels"] == {
        "alertname": "ClaudeUsageBillDrift",
        "severity": "info",
        "job": JOB,
        "instance": live.target,
    }
    assert float(drift["value"]) == pytest.approx(estimate / billed - 1)
    assert (
        f"estimated ${estimate:.2f} and Anthropic's Admin API billed ${billed:.2f},"
        in drift["annotations"]["description"]
    )
    # Claude Code analytics from the same source: no user label without labels.user, so no address anywhere.
    assert live.query("claude_usage_analytics_sessions_total") == [
        ({"__name__": "claude_usage_analytics_sessions_total", "job": JOB, "instance": live.target}, 3.0)
    ]


WEEK_START = date(2026, 1, 5)  # a Monday: serve's weeks (config week_start) start on Mondays


def week(today: date) -> tuple[date, date]:
    first = today - timedelta(days=(today - WEEK_START).days % 7)
    return first, first + timedelta(days=6)


def month(today: date) -> tuple[date, date]:
    first = today.replace(day=1)
    return first, (first + timedelta(days=31)).replace(day=1) - timedelta(days=1)


@pytest.mark.parametrize(
    ("title", "kind", "days"),
    [
        ("Spend today", "daily", lambda today: (today, today)),
        ("Spend this week", "weekly", week),
        ("Spend this month", "monthly", month),
    ],
)
def test_the_headline_calendar_spend_equals_report_to_the_cent(
    live: Prometheus, setup: Exporter, title: str, kind: str, days: Callable[[date], tuple[date, date]]
) -> None:
    """The overview's first panels against the CLI's `report` on the same ledger and the same whole window:
    money in a series' first scrape interval (the future model's, the Haiku request's) is in both. The
    generated activity runs hours past now, often into tomorrow (as a machine with a fast clock would):
    the gauge counts it in its week and month, so `report` is asked for the whole window, not up to today."""
    (expr,) = [e for t, e in GENERATOR["queries"](DASHBOARDS["claude-usage-overview.json"]) if t == title]
    first, last = days(datetime.now(UTC).date())
    command = [
        *(sys.executable, "-m", "exporter", "report", kind, "--json", "--since", first.isoformat()),
        *("--until", last.isoformat(), "--start-of-week", "monday", "-z", "UTC", "--config", str(setup.config)),
        *("--state-dir", str(setup.state), "--claude-dir", str(setup.root)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    reported = orjson.loads(done.stdout)["totals"]["totalCost"]
    # serve was ready (its first ingest done, the windows computed after it) before Prometheus started.
    (sample,) = eventually(lambda: live.query(substitute(expr)), what=expr)
    assert (round(sample[1], 2), reported >= 2.0) == (round(reported, 2), True)


# --- a fresh history ------------------------------------------------------------------------------


def shown_as_a_number() -> list[Any]:
    """The queries of every panel that shows one number (stat, gauge, bar gauge), as test cases."""
    return [
        pytest.param(target["expr"], id=f"{board['uid']}: {panel['title']}")
        for board in DASHBOARDS.values()
        for panel, target in GENERATOR["targets"](board)
        if panel["type"] in ("stat", "gauge", "bargauge")
    ]


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    """Prometheus scraping a `serve` on a machine where Claude Code has not run yet."""
    root = tmp_path_factory.mktemp("fresh-claude")
    (root / "projects").mkdir()
    with serving(tmp_path_factory.mktemp("fresh-state"), [root]) as daemon:
        target = daemon.url.removeprefix("http://")
        with prometheus(tmp_path_factory.mktemp("fresh-prometheus"), target, rule_files=RULES) as server:
            server.wait_rates_defined()
            yield server


@pytest.mark.parametrize("expr", shown_as_a_number())
def test_no_single_number_panel_reads_nan_on_a_fresh_history(fresh: Prometheus, expr: str) -> None:
    """No data shows the panel's `–`; a NaN (0/0 in a ratio, say) would show as NaN."""
    assert [labels for labels, value in fresh.query(substitute(expr)) if math.isnan(value)] == []
