"""A real `serve` with the Admin API source on, against the fake Admin API on loopback: a known transcript and a
known bill give the billed cost, the billed tokens and the expected drift on /metrics, and a real Prometheus
evaluating the shipped alert rules (`for:` taken out of a copy) fires ClaudeUsageBillDrift with that drift."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import fakeadmin
from tests.support.daemon import Serve, serving
from tests.support.lines import assistant_line, write
from tests.support.prometheus import JOB, prometheus
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow

ALERTS = Path(__file__).parent.parent / "deploy" / "prometheus" / "alerts.yml"
USER = "dev@example.com"


def value(metrics: str, sample: str) -> float | None:
    found = re.search(rf"^{re.escape(sample)} (\S+)$", metrics, re.M)
    return float(found[1]) if found else None


@contextmanager
def billed(tmp_path: Path, cents: str, config: str = "") -> Iterator[tuple[Serve, list[bool]]]:
    """A `serve` whose ledger has $1.80 of Sonnet yesterday and today, and a fake Admin API billing `cents` for
    each day, with 3 Claude Code sessions of one user; with whether each request to the API carried the key.
    Yesterday and today look alike, so a UTC midnight during the test changes none of the figures. `config`:
    more lines of the config file."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = (today - timedelta(days=1), today)
    # Sonnet 4.5 at $3 and $15 per million: 100,000 in and 100,000 out are $1.80 by our estimate.
    claude = tmp_path / "claude"
    noons = [(day + timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%S.000Z") for day in days]
    write(
        claude / "projects" / "-home-dev-app" / "s.jsonl",
        *(assistant_line(f"msg_{n}", f"req_{n}", noon, input=100_000, output=100_000) for n, noon in enumerate(noons)),
    )
    key = fakeadmin.key_file(tmp_path)
    with fakeadmin.fake_admin() as (base, state):
        # More tokens billed than we saw: another client used the same key.
        state.costs = [fakeadmin.message_bucket(day, timedelta(days=1), fakeadmin.cost_result(cents)) for day in days]
        state.messages = [
            fakeadmin.message_bucket(day, timedelta(days=1), fakeadmin.message_result(110_000, 120_000, read=5))
            for day in days
        ]
        state.claude_code = {day.date().isoformat(): [fakeadmin.claude_code_record(day.date(), USER)] for day in days}
        path = tmp_path / "config.yaml"
        # A read each minute: a midnight between a read and the scrape only delays the drift to the next one.
        path.write_text(
            f"sources: {{anthropic_admin: {{enabled: true, key_file: '{key}', base_url: '{base}', interval: 1m}}}}\n"
            + config
        )
        keys: list[bool] = []
        with serving(tmp_path / "state", [claude], "--config", str(path)) as daemon:
            # No wait for the poller's log line here: it may come before "ready", which `serving` reads past.
            yield daemon, keys
            assert daemon.stop() == 0
        keys += [seen.key_ok for seen in state.seen]


def after_the_read(daemon: Serve) -> str:
    """/metrics once the drift of yesterday is on it (the bill read after yesterday ended)."""

    def shown() -> str | None:
        metrics = daemon.metrics()
        return metrics if "claude_usage_bill_drift_ratio " in metrics else None

    return eventually(shown, what="the bill's drift on /metrics")


def test_serve_shows_yesterdays_bill_and_the_drift_of_our_estimate_from_it(tmp_path: Path) -> None:
    with billed(tmp_path, "200", "labels: {user: hash}\n") as (daemon, keys):  # $2.00
        metrics = after_the_read(daemon)
    assert keys and all(keys)
    # Claude Code analytics per user, under labels.user: the address's hash as team mode makes it, never the address.
    user = hashlib.sha256(USER.encode()).hexdigest()[:12]
    assert value(metrics, f'claude_usage_analytics_sessions_total{{user="{user}"}}') == 6
    assert value(metrics, f'claude_usage_analytics_lines_of_code_total{{kind="added",user="{user}"}}') == 240
    assert USER not in metrics
    assert value(metrics, 'claude_usage_exporter_source_up{source="anthropic_admin"}') == 1
    assert value(metrics, 'claude_usage_billed_cost_usd{model_family="sonnet",workspace="default"}') == 2.0
    assert value(metrics, 'claude_usage_bill_estimate_usd{model_family="sonnet"}') == pytest.approx(1.80)
    assert value(metrics, 'claude_usage_billed_tokens{model_family="sonnet",token_type="input"}') == 110_000
    assert value(metrics, 'claude_usage_billed_tokens{model_family="sonnet",token_type="output"}') == 120_000
    drift = value(metrics, "claude_usage_bill_drift_ratio")
    assert drift is not None and abs(drift - (1.80 / 2.00 - 1)) < 1e-9
    age = value(metrics, "claude_usage_billing_data_age_seconds")
    assert age is not None and age >= 0
    assert fakeadmin.KEY not in "".join(daemon.log)


def test_a_known_ledger_and_a_known_bill_fire_the_drift_alert_in_a_real_prometheus(tmp_path: Path) -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "ClaudeUsageBillDrift":
                del rule["for"]  # a day's drift must hold 3 hours: here it fires at its first evaluation
    copy = tmp_path / "alerts.yml"
    copy.write_text(yaml.safe_dump(rules))
    with billed(tmp_path, "150") as (daemon, _):  # $1.50: our $1.80 is 20 % above it
        drift = value(after_the_read(daemon), "claude_usage_bill_drift_ratio")
        workdir = tmp_path / "prometheus"
        workdir.mkdir()
        with prometheus(workdir, daemon.url.removeprefix("http://"), rule_files=(copy,)) as server:

            def firing() -> list[dict[str, Any]]:
                return [
                    a
                    for a in server.api("alerts")["alerts"]
                    if a["labels"]["alertname"] == "ClaudeUsageBillDrift" and a["state"] == "firing"
                ]

            (alert,) = eventually(firing, what=lambda: f"ClaudeUsageBillDrift firing: {server.api('alerts')}")
            names = {a["labels"]["alertname"] for a in server.api("alerts")["alerts"]}
    assert drift == pytest.approx(1.80 / 1.50 - 1)
    assert float(alert["value"]) == pytest.approx(drift)
    assert alert["labels"] == {
        "alertname": "ClaudeUsageBillDrift",
        "severity": "info",
        "job": JOB,
        "instance": daemon.url.removeprefix("http://"),
    }
    assert (
        alert["annotations"]["summary"]
        == f"Our estimate of yesterday on {alert['labels']['instance']} is off the bill by 20%."
    )
    assert (
        "estimated $1.80 and Anthropic's Admin API billed $1.50, a drift of 20%" in alert["annotations"]["description"]
    )
    assert "ClaudeUsageBillingDataStale" not in names  # the bill was just read


def test_serve_with_the_source_off_shows_no_billing_metric(tmp_path: Path) -> None:
    claude = tmp_path / "claude"
    write(claude / "projects" / "-home-dev-app" / "s.jsonl", assistant_line("msg_1", "req_1"))
    with serving(tmp_path / "state", [claude]) as daemon:
        metrics = daemon.metrics()
        assert "claude_usage_requests_total" in metrics
        assert "claude_usage_bill" not in metrics
        assert "anthropic_admin" not in metrics
        assert daemon.stop() == 0
