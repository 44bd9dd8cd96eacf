"""A real Prometheus scrapes a real `serve` over loopback: what PromQL sums is what the ledger holds.

One daemon and one Prometheus serve the whole module; the test that appends activity keeps the
corpus' truth current, so the tests hold in any order. Needs the Debian package `prometheus`
(`/usr/bin/prometheus`, `/usr/bin/promtool`): skipped without it, failed without it under CI=true.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.events import TOKEN_TYPES
from exporter.ledger.store import Ledger
from exporter.metrics.exposition import OPENMETRICS, TEXT
from tests.support.corpus import Truth, append_activity, generate
from tests.support.daemon import Serve, serving
from tests.support.exposition import labelled
from tests.support.prometheus import JOB, PROMTOOL, Prometheus, prometheus, promtool_check_metrics
from tests.support.tools import require

pytestmark = pytest.mark.slow  # Prometheus scraping a real `serve`

SEED = 31
APPENDED_AT = datetime(2026, 9, 6, 12, tzinfo=UTC)  # after the corpus' four days
# What Prometheus 2.x sends: OpenMetrics first, the classic text format as a fallback.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
USAGE_COUNTERS = ("claude_usage_cost_usd_total", "claude_usage_tokens_total", "claude_usage_requests_total")
Series = tuple[tuple[str, str], ...]


@dataclass
class Stack:
    root: Path  # the Claude config dir the daemon reads
    state: Path
    truth: Truth  # everything written to `root` so far
    daemon: Serve


@dataclass(frozen=True)
class Sums:
    requests: float
    cost: float  # USD
    tokens: dict[str, float]  # token_type -> tokens


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("claude")
    truth = generate(root, seed=SEED, days=4, sessions_per_day=2)
    state = tmp_path_factory.mktemp("state")
    with serving(state, [root]) as daemon:
        yield Stack(root, state, truth, daemon)


@pytest.fixture(scope="module")
def server(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    with prometheus(tmp_path_factory.mktemp("prometheus"), stack.daemon.url.removeprefix("http://")) as running:
        running.wait_scraped(time.time())
        yield running


def ledger_sums(state: Path) -> Sums:
    """The ledger's own totals: one row per billable request, cost in nano-USD."""
    ledger = Ledger(state)
    try:
        count, nanos, *tokens = ledger.db.execute(
            "SELECT count(*), coalesce(sum(cost), 0), sum(input), sum(output), sum(cache_read),"
            " sum(cache_write_5m), sum(cache_write_1h) FROM requests"
        ).fetchone()
    finally:
        ledger.close()
    return Sums(count, nanos / 1e9, dict(zip(TOKEN_TYPES, tokens, strict=True)))


def truth_sums(truth: Truth) -> Sums:
    """The generator's truth; it knows no prices, so its cost is NaN and never compared."""
    return Sums(len(truth.requests), float("nan"), dict(zip(TOKEN_TYPES, truth.totals(), strict=True)))


def promql_sums(server: Prometheus) -> Sums:
    tokens = server.query("sum by (token_type) (claude_usage_tokens_total)")
    return Sums(
        server.scalar("sum(claude_usage_requests_total)"),
        server.scalar("sum(claude_usage_cost_usd_total)"),
        {labels["token_type"]: value for labels, value in tokens},
    )


def series(labels: dict[str, str]) -> Series:
    """One series' labels, from the exposition or from PromQL (target labels left out)."""
    return tuple(sorted((k, v) for k, v in labels.items() if k not in ("instance", "job")))


def test_prometheus_sums_equal_the_ledger_and_the_corpus_truth(stack: Stack, server: Prometheus) -> None:
    ledger = ledger_sums(stack.state)
    promql = promql_sums(server)
    assert promql.cost == pytest.approx(ledger.cost, rel=1e-6)
    assert promql.tokens == ledger.tokens
    assert promql.requests == ledger.requests
    truth = truth_sums(stack.truth)
    assert (ledger.requests, ledger.tokens) == (truth.requests, truth.tokens)


def test_appended_activity_grows_the_counters_by_exactly_the_new_rows_and_resets_nothing(
    stack: Stack, server: Prometheus
) -> None:
    before, scraped_before = ledger_sums(stack.state), promql_sums(server)
    assert (scraped_before.requests, scraped_before.tokens) == (before.requests, before.tokens)

    appended = append_activity(stack.root, seed=SEED, target_bytes=300_000, at=APPENDED_AT)
    stack.truth.update(appended.truth)
    new = len(appended.truth.requests)
    ingested = 0
    while ingested < new:  # the watcher may see the files in more than one pass
        ingested += int(stack.daemon.wait_for(r"ingested (\d+) new request")[1])
    assert ingested == new
    server.wait_scraped(time.time())

    after, scraped = ledger_sums(stack.state), promql_sums(server)
    assert after.requests - before.requests == new
    assert scraped.requests - scraped_before.requests == new
    assert scraped.requests == after.requests
    assert scraped.cost == pytest.approx(after.cost, rel=1e-6)
    assert scraped.cost - scraped_before.cost == pytest.approx(after.cost - before.cost, rel=1e-6)
    assert scraped.tokens == after.tokens
    assert {t: scraped.tokens[t] - scraped_before.tokens[t] for t in TOKEN_TYPES} == {
        t: after.tokens[t] - before.tokens[t] for t in TOKEN_TYPES
    }
    truth = truth_sums(stack.truth)
    assert (after.requests, after.tokens) == (truth.requests, truth.tokens)

    exposition = stack.daemon.metrics()
    for name in USAGE_COUNTERS:
        resets = {series(labels): value for labels, value in server.query(f"resets({name}[5m])")}
        assert resets == {series(labels): 0.0 for labels, _ in labelled(exposition, name)}, name


def test_prometheus_scrapes_the_exporter_with_openmetrics(stack: Stack, server: Prometheus) -> None:
    target = server.wait_scraped(time.time())
    assert (target["health"], target["lastError"]) == ("up", "")
    instance = stack.daemon.url.removeprefix("http://")
    assert server.query("up") == [({"__name__": "up", "instance": instance, "job": JOB}, 1.0)]

    # Prometheus records a unit only from OpenMetrics' `# UNIT`, under the family's name (no _total).
    metadata = server.api("targets/metadata", match_target=f'{{job="{JOB}"}}', metric="claude_usage_cost_usd")
    assert [(m["type"], m["unit"], m["target"]["instance"]) for m in metadata] == [("counter", "usd", instance)]

    status, headers, body = stack.daemon.get("/metrics", {"Accept": PROMETHEUS_ACCEPT})
    assert (status, headers["Content-Type"]) == (200, OPENMETRICS)
    sample_lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    assert server.scalar(f'scrape_samples_scraped{{job="{JOB}"}}') == len(sample_lines) > 0


def test_the_exposition_passes_promtool_check_metrics(stack: Stack) -> None:
    status, headers, body = stack.daemon.get("/metrics")
    assert (status, headers["Content-Type"]) == (200, TEXT)
    checked = promtool_check_metrics(body)
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", "")


def test_every_scrape_config_of_the_deploy_page_is_one_promtool_accepts(tmp_path: Path) -> None:
    require(PROMTOOL, "the deploy page's scrape configs")
    readme = (Path(__file__).parent.parent / "docs/deploy.md").read_text()
    examples = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if b.startswith("scrape_configs:")]
    assert len(examples) == 2  # serve's, and the team's in Deploy
    for example in examples:
        config = tmp_path / "prometheus.yml"
        config.write_text(example)
        checked = subprocess.run([PROMTOOL, "check", "config", str(config)], capture_output=True, text=True)
        # The team's file_sd folder does not exist here: a warning, not an error.
        assert (checked.returncode, checked.stdout.splitlines()[-2:]) == (
            0,
            [f" SUCCESS: {config} is valid prometheus config file syntax", ""],
        )
