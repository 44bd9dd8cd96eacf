"""The alert and recording rules and the Alertmanager example, checked by the real tools.

`promtool test rules` runs tests/rules/alerts.test.yml: every alert fires in one case and stays silent
in another, with exact labels and rendered annotations. A real Alertmanager shows the inhibitions at
work. Needs the Debian packages `prometheus` and `prometheus-alertmanager`.
"""

from __future__ import annotations

import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from tests.prometheus import PROMTOOL, answers_ok, eventually, free_port, require

ROOT = Path(__file__).parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
RECORDING = PROMETHEUS_DIR / "recording.yml"
ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
UNIT_TESTS = Path(__file__).parent / "rules" / "alerts.test.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
AMTOOL = "/usr/bin/amtool"
ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
RUNBOOK_BASE = "https://github.com/claude-usage-exporter/claude-usage-exporter/blob/main/docs/runbooks.md#"
SEVERITIES = {"page", "ticket"}


def rules(path: Path) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return rules(ALERTS)


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_rules_and_the_prometheus_config_pass_promtool_check() -> None:
    require(PROMTOOL, "the rules passing `promtool check` (Debian package `prometheus`)")
    checked = run(PROMTOOL, "check", "rules", str(ALERTS), str(RECORDING))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout and "SUCCESS: 7 rules found" in checked.stdout
    config = run(PROMTOOL, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr


def test_every_alert_passes_its_promtool_unit_tests() -> None:
    require(PROMTOOL, "the alerts' unit tests (Debian package `prometheus`)")
    tested = run(PROMTOOL, "test", "rules", str(UNIT_TESTS))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert tested.stdout.split() == ["Unit", "Testing:", str(UNIT_TESTS), "SUCCESS"]


def test_every_alert_has_a_case_that_fires_and_one_that_stays_silent() -> None:
    cases: dict[str, set[bool]] = {}
    for group in yaml.safe_load(UNIT_TESTS.read_text())["tests"]:
        for case in group.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    assert cases == {rule["alert"]: {True, False} for rule in alerts()}


def test_every_recording_rule_has_an_exact_value_test_or_feeds_a_tested_alert() -> None:
    tested = {case["expr"] for group in yaml.safe_load(UNIT_TESTS.read_text())["tests"]
              for case in group.get("promql_expr_test", [])}  # fmt: skip
    used_by_alerts = {name for rule in alerts() for name in re.findall(r"[\w:]+:[\w:]+", rule["expr"])}
    assert {rule["record"] for rule in rules(RECORDING)} - tested - used_by_alerts == set()


def test_every_alert_has_a_severity_and_the_annotations_an_on_call_needs() -> None:
    for rule in alerts():
        assert rule["alert"].startswith("ClaudeUsage"), rule["alert"]
        assert rule["labels"] == {"severity": rule["labels"]["severity"]}, rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url", "dashboard_url"}, rule["alert"]


def runbook_anchors() -> set[str]:
    """GitHub's anchors for the runbooks' `## ` headings (lower case; alert names have no spaces)."""
    return {line[3:].strip().lower() for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")}


def test_every_runbook_url_points_at_its_own_section_of_the_runbooks() -> None:
    anchors = runbook_anchors()
    for rule in alerts():
        url = rule["annotations"]["runbook_url"]
        assert url == RUNBOOK_BASE + rule["alert"].lower()
        assert url.removeprefix(RUNBOOK_BASE) in anchors
    assert anchors == {rule["alert"].lower() for rule in alerts()}, "a runbook without an alert"


def test_every_dashboard_url_opens_a_shipped_dashboard() -> None:
    uids = {orjson.loads(path.read_bytes())["uid"] for path in (ROOT / "dashboards").glob("*.json")}
    link = r"http://127\.0\.0\.1:3000/d/([\w-]+)\?var-job=\{\{ \$labels\.job \| urlquery }}" \
           r"&var-instance=\{\{ \$labels\.instance \| urlquery }}"  # fmt: skip
    for rule in alerts():
        found = re.fullmatch(link, rule["annotations"]["dashboard_url"])
        assert found is not None, rule["annotations"]["dashboard_url"]
        assert found[1] in uids


def test_the_alertmanager_example_passes_amtool() -> None:
    require(AMTOOL, "the Alertmanager example passing `amtool check-config` (Debian package prometheus-alertmanager)")
    checked = run(AMTOOL, "check-config", str(ALERTMANAGER_CONFIG))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert " - 2 inhibit rules\n - 2 receivers\n" in checked.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (("severity=page", "alertname=ClaudeUsageBudgetExceeded"), "page"),
        (("severity=page", "alertname=ClaudeUsageBudgetForecastExceeded"), "page"),
        (("severity=ticket", "alertname=ClaudeUsageBudgetWarning"), "ticket"),
        (("alertname=SomethingElse",), "ticket"),  # no severity: the default route
    ],
)
def test_alerts_route_to_page_or_ticket_by_severity(labels: tuple[str, ...], receiver: str) -> None:
    require(AMTOOL, "the routing tree tested by `amtool config routes test` (Debian package prometheus-alertmanager)")
    routed = run(AMTOOL, "config", "routes", "test", f"--config.file={ALERTMANAGER_CONFIG}", *labels)
    assert routed.returncode == 0, routed.stdout + routed.stderr
    assert routed.stdout == receiver + "\n"


def test_every_alert_severity_has_a_route() -> None:
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    routed = {matcher for route in config["route"]["routes"] for matcher in route["matchers"]}
    assert {f'severity="{rule["labels"]["severity"]}"' for rule in alerts()} <= routed


class Alertmanager:
    """A real Alertmanager on a free loopback port, alone (no cluster), with the example config."""

    def __init__(self, workdir: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = workdir / "alertmanager.log"
        command = [ALERTMANAGER, f"--config.file={ALERTMANAGER_CONFIG}", f"--storage.path={workdir / 'data'}",
                   f"--web.listen-address={self.url.removeprefix('http://')}", "--cluster.listen-address="]  # fmt: skip
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        eventually(lambda: answers_ok(f"{self.url}/-/ready", self.process, self.log.read_text),
                   what=f"alertmanager ready at {self.url}")  # fmt: skip

    def api(self, path: str, body: object = None) -> Any:
        data = None if body is None else orjson.dumps(body)
        request = urllib.request.Request(f"{self.url}/api/v2/{path}", data=data,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            raw = answer.read()
        return orjson.loads(raw) if raw else None


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Alertmanager]:
    require(ALERTMANAGER, "the inhibitions checked on a real Alertmanager (Debian package prometheus-alertmanager)")
    running = Alertmanager(tmp_path)
    try:
        yield running
    finally:
        running.process.terminate()
        running.process.wait(timeout=30)


def budget_alert(name: str, severity: str, budget: str) -> dict[str, Any]:
    labels = {"alertname": name, "severity": severity, "job": "claude-usage", "instance": "laptop:9477",
              "budget": budget, "window": "month"}  # fmt: skip
    return {"labels": labels, "annotations": {"summary": name}}


def test_a_real_alertmanager_silences_what_an_exceeded_or_forecast_budget_says_already(
    alertmanager: Alertmanager,
) -> None:
    sent = [
        budget_alert("ClaudeUsageBudgetExceeded", "page", "team"),
        budget_alert("ClaudeUsageBudgetForecastExceeded", "page", "team"),
        budget_alert("ClaudeUsageBudgetWarning", "ticket", "team"),
        budget_alert("ClaudeUsageBudgetForecastExceeded", "page", "acme"),
        budget_alert("ClaudeUsageBudgetWarning", "ticket", "acme"),
        budget_alert("ClaudeUsageBudgetWarning", "ticket", "other"),
    ]
    alertmanager.api("alerts", sent)

    def states() -> dict[tuple[str, str], str] | None:
        found = {(a["labels"]["alertname"], a["labels"]["budget"]): a["status"]["state"]
                 for a in alertmanager.api("alerts")}  # fmt: skip
        return found if len(found) == len(sent) else None

    assert eventually(states, what="the six alerts listed") == {
        ("ClaudeUsageBudgetExceeded", "team"): "active",
        ("ClaudeUsageBudgetForecastExceeded", "team"): "suppressed",  # the budget is blown
        ("ClaudeUsageBudgetWarning", "team"): "suppressed",
        ("ClaudeUsageBudgetForecastExceeded", "acme"): "active",  # pages before it is blown
        ("ClaudeUsageBudgetWarning", "acme"): "suppressed",  # ...and the ticket adds nothing
        ("ClaudeUsageBudgetWarning", "other"): "active",
    }


def test_the_readme_lists_every_alert_with_its_for_and_severity() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^  \| `(ClaudeUsage\w+)` \| .+ \| (\S+) \| (\w+) \|$", readme, re.MULTILINE)
    assert rows == [(rule["alert"], rule.get("for", "–"), rule["labels"]["severity"]) for rule in alerts()]
