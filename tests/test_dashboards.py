"""A static lint of the Grafana dashboards in dashboards/: their JSON is the generator's, and every panel and
query follows the conventions an SRE expects (datasource variable, job/instance filters, interval variables).

Queries are checked against the metric contract here; running them against a real Prometheus is a live check.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

from exporter.metrics.contract import CONTRACT

DASHBOARDS = Path(__file__).resolve().parent.parent / "dashboards"
Json = dict[str, Any]


def _load_generator() -> ModuleType:
    """dashboards/ is not a package: the generator is loaded from its path."""
    spec = importlib.util.spec_from_file_location("dashboards_generate", DASHBOARDS / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATE = _load_generator()
BUILT: dict[str, Json] = GENERATE.build()
UIDS = {"claude-usage-overview.json": "claude-usage-overview", "claude-usage-exporter.json": "claude-usage-exporter"}

# Ranges other than $__rate_interval and $__range, by (dashboard uid, panel title): range -> why.
RANGE_EXCEPTIONS: dict[tuple[str, str], tuple[str, str]] = {}

# Series Prometheus makes at each scrape, and those prometheus_client's process collector exposes.
PROMETHEUS_MADE = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
PROCESS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
}
# Empty unless the exporter receives OTLP (team mode): a panel on them shows no data on a single machine.
TEAM_MODE = re.compile(r"lines_of_code|commits|pull_requests|active_time|otlp_requests|otlp_pushes")


def _contract_labels() -> dict[str, tuple[str, ...]]:
    """Every exposed series name -> its labels (a histogram's _bucket also has `le`, which no filter needs)."""
    labels: dict[str, tuple[str, ...]] = {}
    for spec in CONTRACT:
        names = [f"{spec.name}_{s}" for s in ("bucket", "sum", "count")] if spec.kind == "histogram" else [spec.name]
        labels |= dict.fromkeys(names, spec.labels)
    return labels


CONTRACT_LABELS = _contract_labels()

SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*)\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')
RANGE = re.compile(r"\[([^\]]*)\]")
RATE = re.compile(r"\b(rate|irate|increase)\(")
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*[({]?)")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
VARIABLE = re.compile(r"\$\{?(\w+)")
BUILT_IN = {"__rate_interval", "__range", "__interval"}


def dashboards() -> list[Json]:
    return list(BUILT.values())


def panels(dash: Json) -> list[Json]:
    """The panels that show data: rows left out."""
    return [p for p in dash["panels"] if p["type"] != "row"]


def exprs() -> list[tuple[str, str, str]]:
    """Every (dashboard uid, panel title, expr)."""
    return [(d["uid"], title, expr) for d in dashboards() for title, expr in GENERATE.queries(d)]


def selectors(expr: str) -> list[tuple[str, dict[str, tuple[str, str]]]]:
    """Every `metric{…}` in expr: the metric and its matchers, label -> (operator, value)."""
    return [
        (name, {label: (op, value) for label, op, value in MATCHER.findall(body)})
        for name, body in SELECTOR.findall(expr)
    ]


def bare_metrics(expr: str) -> list[str]:
    """Names that are neither functions, keywords nor followed by a label matcher: metrics without a selector."""
    stripped = re.sub(r"\{[^}]*\}", "{}", expr)  # matchers hold the strings with `$variables`
    stripped = re.sub(r'"[^"]*"', '""', stripped)
    stripped = GROUPING.sub("", RANGE.sub("", stripped))
    return [name for name, after in IDENTIFIER.findall(stripped) if not after.strip() and name not in KEYWORDS]


def test_committed_json_is_what_the_generator_writes() -> None:
    stale = [n for n, d in BUILT.items() if (DASHBOARDS / n).read_text(encoding="utf-8") != GENERATE.render(d)]
    assert not stale, f"run `python dashboards/generate.py` and commit: {stale}"


def test_every_dashboard_file_is_valid_json_and_generated() -> None:
    files = sorted(p.name for p in DASHBOARDS.glob("*.json"))
    assert files == sorted(BUILT), "a dashboard JSON file the generator does not write, or one missing"
    for name in files:
        assert json.loads((DASHBOARDS / name).read_text(encoding="utf-8"))["uid"] == UIDS[name]


def test_dashboard_uids_are_unique() -> None:
    uids = [d["uid"] for d in dashboards()]
    assert len(uids) == len(set(uids))
    assert {n: d["uid"] for n, d in BUILT.items()} == UIDS


def test_panel_ids_are_unique_within_each_dashboard() -> None:
    for dash in dashboards():
        ids = [p["id"] for p in dash["panels"]]
        assert all(isinstance(i, int) and i > 0 for i in ids), dash["uid"]
        assert len(ids) == len(set(ids)), f"{dash['uid']}: duplicate panel ids"


def test_schema_version_is_set_to_grafana_11_or_later() -> None:
    for dash in dashboards():
        assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 39, dash["uid"]


def test_dashboards_follow_the_shared_conventions() -> None:
    since = {"claude-usage-overview": "now-7d", "claude-usage-exporter": "now-6h"}
    for dash in dashboards():
        assert "__inputs" not in dash, "provisioning takes no __inputs"
        assert dash["editable"] is True
        assert dash["tags"] == ["claude-code", "claude-usage"]
        assert dash["refresh"] == "1m"
        assert dash["time"] == {"from": since[dash["uid"]], "to": "now"}
        kinds = {p["type"] for p in dash["panels"]}
        assert kinds <= {"row", "timeseries", "stat", "bargauge", "gauge", "table", "piechart"}, kinds


def test_each_dashboard_links_to_the_other() -> None:
    tags = {d["uid"]: set(d["tags"]) for d in dashboards()}
    for dash in dashboards():
        linked = {tag for link in dash["links"] if link["type"] == "dashboards" for tag in link["tags"]}
        others = [uid for uid, t in tags.items() if uid != dash["uid"] and t & linked]
        assert others, f"{dash['uid']} links to no other dashboard"
        assert all(link["keepTime"] and link["includeVars"] for link in dash["links"])


def test_every_panel_and_target_uses_the_datasource_variable() -> None:
    wanted = {"type": "prometheus", "uid": "${datasource}"}
    wrong = [(d["uid"], p["title"]) for d in dashboards() for p in panels(d) if p.get("datasource") != wanted]
    wrong += [(d["uid"], p["title"]) for d in dashboards() for p, t in GENERATE.targets(d) if t["datasource"] != wanted]
    wrong += [
        (d["uid"], v["name"])
        for d in dashboards()
        for v in d["templating"]["list"]
        if v["type"] == "query" and v["datasource"] != wanted
    ]
    assert not wrong


def test_every_rate_and_increase_range_is_a_grafana_interval_or_a_listed_exception() -> None:
    wrong = []
    for uid, title, expr in exprs():
        allowed = {"$__rate_interval", "$__range"}
        if (uid, title) in RANGE_EXCEPTIONS:
            allowed.add(RANGE_EXCEPTIONS[uid, title][0])
        ranges = RANGE.findall(expr)
        wrong += [(uid, title, r) for r in ranges if r not in allowed]
        # Every range belongs to a rate(), irate() or increase() (no *_over_time or subquery slipped in).
        if len(ranges) != len(RATE.findall(expr)):
            wrong.append((uid, title, expr))
    assert not wrong


def test_every_range_exception_is_still_needed() -> None:
    used = {
        (uid, title)
        for uid, title, expr in exprs()
        if any(r not in {"$__rate_interval", "$__range"} for r in RANGE.findall(expr))
    }
    assert set(RANGE_EXCEPTIONS) == used


def test_every_selector_carries_the_job_and_instance_filters() -> None:
    wanted = {"job": ("=~", "$job"), "instance": ("=~", "$instance")}
    wrong = [
        (uid, title, name)
        for uid, title, expr in exprs()
        for name, matchers in selectors(expr)
        if any(matchers.get(label) != m for label, m in wanted.items())
    ]
    assert not wrong
    assert all(selectors(expr) for _, _, expr in exprs()), "an expr without any selector"


def test_no_metric_is_named_without_a_label_selector() -> None:
    wrong = [(uid, title, bare_metrics(expr)) for uid, title, expr in exprs() if bare_metrics(expr)]
    assert not wrong, "a bare metric name escapes the job and instance filters"


def test_the_bare_metric_check_sees_bare_metrics() -> None:
    assert bare_metrics('sum by (model) (rate(a{job=~"$job"}[$__range])) / b * 3600') == ["b"]
    assert bare_metrics('histogram_quantile(0.5, sum by (le) (x{le="1"})) - time()') == []


def test_selectors_filter_by_project_and_model_family_where_the_metric_has_them() -> None:
    wrong = []
    for uid, title, expr in exprs():
        for name, matchers in selectors(expr):
            for label in ("project", "model_family"):
                if label in CONTRACT_LABELS.get(name, ()) and matchers.get(label) != ("=~", f"${label}"):
                    wrong.append((uid, title, name, label))
    assert not wrong


def test_every_metric_is_in_the_contract_or_made_by_prometheus() -> None:
    known = set(CONTRACT_LABELS) | PROMETHEUS_MADE | PROCESS
    unknown = {(uid, title, name) for uid, title, expr in exprs() for name, _ in selectors(expr) if name not in known}
    assert not unknown


def test_team_mode_metrics_are_shown_only_in_the_team_row() -> None:
    """They stay empty unless the exporter receives OTLP: their panels sit together in one row that says so."""
    outside = []
    for dash in dashboards():
        row = ""
        for p in dash["panels"]:
            row = p["title"] if p["type"] == "row" else row
            if row != GENERATE.TEAM_ROW and any(TEAM_MODE.search(t["expr"]) for t in p.get("targets", [])):
                outside.append((dash["uid"], p["title"]))
    assert not outside
    team = [p["title"] for p in BUILT["claude-usage-overview.json"]["panels"] if p["type"] != "row"][-4:]
    assert team == ["Spend by user in range", "Cost per commit", "Cost per line of code", "OTLP requests by status"]


def test_the_overview_opens_with_the_exact_calendar_spend() -> None:
    first = [p for p in BUILT["claude-usage-overview.json"]["panels"][:7]]
    assert first[0] == {**first[0], "type": "row", "title": "Calendar spend"}
    assert [p["title"] for p in first[1:]] == [
        "Spend today",
        "Spend this week",
        "Spend this month",
        "Projected today",
        "Projected this week",
        "Projected this month",
    ]
    assert all("claude_usage_window_" in p["targets"][0]["expr"] for p in first[1:])


def test_every_stat_panel_shows_a_dash_for_no_data_and_for_nan() -> None:
    for dash in dashboards():
        for p in panels(dash):
            if p["type"] == "stat":
                defaults = p["fieldConfig"]["defaults"]
                assert defaults["noValue"] == "–", p["title"]
                assert GENERATE.NAN in defaults["mappings"], p["title"]


def test_every_variable_and_rule_query_carries_the_mixin_job_selector() -> None:
    job = GENERATE.CONFIG["job_selector"]
    for dash in dashboards():
        for name, query in GENERATE.variable_queries(dash):
            assert job in query or 'job=~"$job"' in query, (dash["uid"], name)


def test_no_expr_hides_a_misspelling_behind_or_vector() -> None:
    assert not [(uid, title) for uid, title, expr in exprs() if re.search(r"\bor\s+vector\(", expr)]


def test_every_variable_an_expr_uses_is_defined() -> None:
    for dash in dashboards():
        defined = {v["name"] for v in dash["templating"]["list"]} | BUILT_IN
        used = {v for _, expr in GENERATE.queries(dash) for v in VARIABLE.findall(expr)}
        assert used <= defined, f"{dash['uid']}: {used - defined}"


def test_every_panel_has_a_description_and_a_unit() -> None:
    wrong = [
        (d["uid"], p["title"])
        for d in dashboards()
        for p in panels(d)
        if not p.get("description") or not p["fieldConfig"]["defaults"].get("unit")
    ]
    assert not wrong


def test_every_target_has_a_legend_format() -> None:
    wrong = [
        (d["uid"], p["title"], t["refId"])
        for d in dashboards()
        for p, t in GENERATE.targets(d)
        if not t.get("legendFormat") and not (p["type"] == "table" and t.get("format") == "table")
    ]
    assert not wrong


def test_instant_queries_and_range_queries_are_where_they_belong() -> None:
    """Time series panels draw range queries; the others show one value per series at the range's end."""
    wrong = [
        (d["uid"], p["title"])
        for d in dashboards()
        for p, t in GENERATE.targets(d)
        if t["instant"] == (p["type"] == "timeseries") or t["range"] == t["instant"]
    ]
    assert not wrong


def test_variables_come_in_order_with_their_queries() -> None:
    scope = 'job=~"$job", instance=~"$instance"'
    job = GENERATE.CONFIG["job_selector"]
    queries = {
        "job": f"label_values(claude_usage_exporter_build_info{{{job}}}, job)",
        "instance": f'label_values(claude_usage_exporter_build_info{{{job}, job=~"$job"}}, instance)',
        "project": f"label_values(claude_usage_requests_total{{{scope}}}, project)",
        "model_family": f"label_values(claude_usage_requests_total{{{scope}}}, model_family)",
        "user": f"label_values(claude_usage_requests_total{{{scope}}}, user)",
    }
    order = {
        "claude-usage-overview": ["datasource", "job", "instance", "project", "model_family", "user"],
        "claude-usage-exporter": ["datasource", "job", "instance"],
    }
    for dash in dashboards():
        variables = dash["templating"]["list"]
        assert [v["name"] for v in variables] == order[dash["uid"]]
        source, *rest = variables
        assert (source["type"], source["query"]) == ("datasource", "prometheus")
        for v in rest:
            assert v["type"] == "query"
            assert v["query"]["query"] == queries[v["name"]]
            assert (v["multi"], v["includeAll"], v["allValue"]) == (True, True, ".*"), v["name"]
        assert GENERATE.variable_queries(dash) == [(v["name"], queries[v["name"]]) for v in rest]


def test_panels_fit_the_24_column_grid_without_overlapping() -> None:
    for dash in dashboards():
        boxes = [(p["title"], p["gridPos"]) for p in dash["panels"]]
        for title, g in boxes:
            assert g["x"] >= 0 and g["y"] >= 0 and g["w"] > 0 and g["h"] > 0 and g["x"] + g["w"] <= 24, title
        for i, (a, ga) in enumerate(boxes):
            for b, gb in boxes[i + 1 :]:
                apart = (
                    ga["x"] + ga["w"] <= gb["x"]
                    or gb["x"] + gb["w"] <= ga["x"]
                    or ga["y"] + ga["h"] <= gb["y"]
                    or gb["y"] + gb["h"] <= ga["y"]
                )
                assert apart, f"{dash['uid']}: {a!r} overlaps {b!r}"


def test_every_panel_sits_under_a_row() -> None:
    for dash in dashboards():
        assert dash["panels"][0]["type"] == "row", dash["uid"]
        rows = [p for p in dash["panels"] if p["type"] == "row"]
        assert all(r["gridPos"]["w"] == 24 and r["panels"] == [] and not r["collapsed"] for r in rows)


def test_queries_lists_every_target() -> None:
    for dash in dashboards():
        listed = GENERATE.queries(dash)
        assert listed == [(p["title"], t["expr"]) for p in panels(dash) for t in p["targets"]]
        assert all(isinstance(title, str) and isinstance(expr, str) and expr for title, expr in listed)


def test_the_readme_answers_for_every_panel() -> None:
    readme = (DASHBOARDS / "README.md").read_text(encoding="utf-8")
    missing = [(d["uid"], p["title"]) for d in dashboards() for p in panels(d) if f"| {p['title']} |" not in readme]
    assert not missing, "each panel needs a row in the dashboards README"
    assert all(title in readme for _, title in RANGE_EXCEPTIONS), "each lint exception is documented"
    assert "mixin.toml" in readme
