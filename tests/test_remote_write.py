"""docs/deploy.md's remote_write recipe, proven: a real Prometheus scrapes a real `serve` and remote-writes
with exactly the recipe (its url pointed at a second real Prometheus, the receiver, started with
`--web.enable-remote-write-receiver`); the receiver evaluates the shipped rule files, and every dashboard
query, variable and recording rule returns data there, as on the Prometheus that scrapes (test_live_queries).
A filter in the recipe that drops a series the rules or the dashboards read fails here. Needs the Debian
package `prometheus`.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.prometheus import JOB, PROMETHEUS, Prometheus
from tests.support.tools import require
from tests.support.waiting import eventually
from tests.test_live_queries import HOURLY, RULES, TEAM_PANELS, exporter, params, recordings, substitute

DOCS = Path(__file__).parent.parent / "docs" / "deploy.md"

pytestmark = pytest.mark.slow


def recipe() -> dict[str, Any]:
    """The page's yaml block that starts `remote_write:`, parsed."""
    blocks = re.findall(r"^( *)```yaml\n(.*?)^\1```", DOCS.read_text(encoding="utf-8"), re.M | re.S)
    (found,) = [textwrap.dedent(body) for _, body in blocks if textwrap.dedent(body).startswith("remote_write:")]
    parsed: dict[str, Any] = yaml.safe_load(found)
    return parsed


def sender_config(target: str, receiver: str, password_file: Path) -> dict[str, Any]:
    """The recipe as the page gives it, pointed at `receiver` (its credentials file a real one: the
    receiver ignores the header), in a Prometheus scraping `target` every second."""
    written = recipe()
    (destination,) = written["remote_write"]
    destination["url"] = f"{receiver}/api/v1/write"
    if "basic_auth" in destination:
        destination["basic_auth"]["password_file"] = str(password_file)
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
        "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        **written,
    }


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    require(PROMETHEUS, "real Prometheus servers remote-writing (Debian package `prometheus`)")
    with exporter(tmp_path_factory) as running:
        config = {"global": {"evaluation_interval": "1s"}, "rule_files": [str(path) for path in RULES]}
        flags = ("--web.enable-remote-write-receiver",)
        far = Prometheus(tmp_path_factory.mktemp("receiver"), "", config=config, flags=flags)
        try:
            workdir = tmp_path_factory.mktemp("sender")
            (workdir / "password").write_text("unused")
            target = running.daemon.url.removeprefix("http://")
            near = Prometheus(workdir, target, config=sender_config(target, far.url, workdir / "password"))
            try:
                near.wait_rates_defined()
                yield far
            finally:
                near.stop()
        finally:
            far.stop()


def test_the_recipe_sends_to_one_url_and_names_what_it_keeps() -> None:
    (destination,) = recipe()["remote_write"]
    assert destination["url"].startswith("https://")
    kept = [c for c in destination.get("write_relabel_configs", []) if c.get("action") == "keep"]
    assert all(c["source_labels"] == ["__name__"] for c in kept)


@pytest.mark.parametrize("expr", [p for p in params("queries") if p.id.split(": ", 1)[1] not in TEAM_PANELS])
def test_every_dashboard_query_returns_data_on_the_receiver(receiver: Prometheus, expr: str) -> None:
    query = substitute(expr)
    assert eventually(lambda: receiver.query(query), what=f"data for {query} on the receiver")


@pytest.mark.parametrize("query", params("variable_queries"))
def test_every_dashboard_variable_lists_values_on_the_receiver(receiver: Prometheus, query: str) -> None:
    found = re.fullmatch(r"label_values\((.+), *(\w+)\)", query)
    assert found is not None, f"{query} is not label_values(selector, label)"
    selector, label = substitute(found[1]), found[2]
    assert eventually(lambda: receiver.query(f"count by ({label}) ({selector})"), what=f"values of {query}")


@pytest.mark.parametrize("record", [r for r in recordings() if r not in HOURLY])
def test_every_recording_rule_records_data_on_the_receiver(receiver: Prometheus, record: str) -> None:
    assert eventually(lambda: receiver.query(record), what=f"samples of {record} on the receiver")


def test_every_shipped_rule_evaluates_without_error_on_the_receiver(receiver: Prometheus) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        found = [rule for group in receiver.api("rules")["groups"] for rule in group["rules"]]
        return found if found and all(rule["health"] != "unknown" for rule in found) else None

    found = eventually(evaluated, what="every rule evaluated once on the receiver")
    assert [(r["name"], r["health"], r.get("lastError", "")) for r in found if r["health"] != "ok"] == []


def test_the_budget_alert_fires_on_the_receiver(receiver: Prometheus) -> None:
    """The issue's failure: a filter that dropped the raw series silenced the budget alerts."""

    def fired() -> list[dict[str, Any]]:
        return [
            a
            for a in receiver.api("alerts")["alerts"]
            if a["labels"]["alertname"] == "ClaudeUsageBudgetExceeded" and a["labels"].get("budget") == "daily"
        ]

    (alert,) = eventually(fired, what="ClaudeUsageBudgetExceeded{budget=daily} on the receiver")
    assert alert["labels"]["job"] == JOB
