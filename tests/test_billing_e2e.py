"""A real `serve` with the Admin API source on, against the fake Admin API on loopback: a known transcript and a
known bill give the billed cost, the billed tokens and the expected drift on /metrics."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.daemon import serving
from tests.support.fakeadmin import KEY, cost_result, fake_admin, key_file, message_bucket, message_result
from tests.support.lines import assistant_line, write
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow


def value(metrics: str, sample: str) -> float | None:
    found = re.search(rf"^{re.escape(sample)} (\S+)$", metrics, re.M)
    return float(found[1]) if found else None


def test_serve_shows_yesterdays_bill_and_the_drift_of_our_estimate_from_it(tmp_path: Path) -> None:
    # Yesterday and today look alike, so a UTC midnight during the test changes none of the figures.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = (today - timedelta(days=1), today)
    # Sonnet 4.5 at $3 and $15 per million: 100,000 in and 100,000 out are $1.80 by our estimate.
    claude = tmp_path / "claude"
    noons = [(day + timedelta(hours=12)).strftime("%Y-%m-%dT%H:%M:%S.000Z") for day in days]
    write(
        claude / "projects" / "-home-dev-app" / "s.jsonl",
        *(assistant_line(f"msg_{n}", f"req_{n}", noon, input=100_000, output=100_000) for n, noon in enumerate(noons)),
    )
    key = key_file(tmp_path)
    with fake_admin() as (base, state):
        # The bill says $2.00 (200 cents), with more tokens: another client used the same key.
        state.costs = [message_bucket(day, timedelta(days=1), cost_result("200")) for day in days]
        state.messages = [
            message_bucket(day, timedelta(days=1), message_result(110_000, 120_000, read=5)) for day in days
        ]
        config = tmp_path / "config.yaml"
        config.write_text(
            f"sources: {{anthropic_admin: {{enabled: true, key_file: '{key}', base_url: '{base}', interval: 1h}}}}\n"
        )
        with serving(tmp_path / "state", [claude], "--config", str(config)) as daemon:
            daemon.wait_for(r"Admin API read")

            def after_the_read() -> str | None:  # the data's age is stored last, once every report is in
                shown = daemon.metrics()
                return shown if "claude_usage_billing_data_age_seconds " in shown else None

            metrics = eventually(after_the_read, what="the billing data's age on /metrics")
            assert daemon.stop() == 0
        assert all(seen.key_ok for seen in state.seen)
    assert value(metrics, 'claude_usage_exporter_source_up{source="anthropic_admin"}') == 1
    assert value(metrics, 'claude_usage_billed_cost_usd{model_family="sonnet",workspace="default"}') == 2.0
    assert value(metrics, 'claude_usage_billed_tokens{model_family="sonnet",token_type="input"}') == 110_000
    assert value(metrics, 'claude_usage_billed_tokens{model_family="sonnet",token_type="output"}') == 120_000
    drift = value(metrics, "claude_usage_bill_drift_ratio")
    assert drift is not None and abs(drift - (1.80 / 2.00 - 1)) < 1e-9
    age = value(metrics, "claude_usage_billing_data_age_seconds")
    assert age is not None and age >= 0
    assert KEY not in "".join(daemon.log)


def test_serve_with_the_source_off_shows_no_billing_metric(tmp_path: Path) -> None:
    claude = tmp_path / "claude"
    write(claude / "projects" / "-home-dev-app" / "s.jsonl", assistant_line("msg_1", "req_1"))
    with serving(tmp_path / "state", [claude]) as daemon:
        metrics = daemon.metrics()
        assert "claude_usage_requests_total" in metrics
        assert "claude_usage_bill" not in metrics
        assert "anthropic_admin" not in metrics
        assert daemon.stop() == 0
