"""Generates the Grafana dashboards of claude-usage-exporter: `python dashboards/generate.py` rewrites the JSON.

The JSON files are committed, so Grafana can provision them as they are; tests/test_dashboards.py keeps them
equal to what this script builds and lints every query. Plain standard library: the script runs without the
project installed. `--check` exits 1, writing nothing, when a committed file differs from the generator's.

Conventions every panel follows (the lint checks them): the `${datasource}` variable; `job=~"$job"` and
`instance=~"$instance"` on every selector, `project`/`model_family` where the metric has that label; rates
over `$__rate_interval` for time series and increases over `$__range` for "in the selected range" figures.
"""

from __future__ import annotations

import importlib.util
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

Json = dict[str, Any]

HERE = Path(__file__).resolve().parent


def config(path: Path = HERE / "mixin.toml") -> Json:
    with path.open("rb") as file:
        loaded: Json = tomllib.load(file)
    return loaded


CONFIG = config()
T: dict[str, float] = CONFIG["thresholds"]
JOB = CONFIG["job_selector"]


# Grafana 11.0's schema: older than what Grafana 11.3+/12 writes, which they migrate on load, while a newer
# schemaVersion in an older Grafana is left as it is - 39 is the newest that every Grafana 11 and 12 reads.
SCHEMA_VERSION = 39
TAGS = ["claude-code", "claude-usage"]
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
ANNOTATIONS = {
    "list": [
        {
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        }
    ]
}

# The dashboard filters a metric's selectors carry besides job and instance: only those whose series have
# the label, since `project=~".*"` on a metric without `project` still matches but `project=~"a"` matches
# nothing. Histograms are named by family (their _bucket, _sum and _count series share it).
USAGE = ("project", "model_family", "user")  # `user` only in team mode: `user=~".*"` matches series without it
FILTERS: dict[str, tuple[str, ...]] = {
    "claude_usage_cost_usd_total": USAGE,
    "claude_usage_uncached_cost_usd_total": USAGE,
    "claude_usage_requests_total": USAGE,
    "claude_usage_tokens_total": USAGE,
    "claude_usage_web_search_requests_total": ("project",),
    "claude_usage_tool_calls_total": ("project",),
    "claude_usage_sessions_total": ("project",),
    "claude_usage_prompts_total": ("project",),
    "claude_usage_request_context_tokens": ("model_family",),
    "claude_usage_billed_cost_usd": ("model_family",),
    "claude_usage_bill_estimate_usd": ("model_family",),
    "claude_usage_billed_tokens": ("model_family",),
}
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")
INPUT_SIDE = "input|cache_read|cache_write_5m|cache_write_1h"  # every token_type the model reads
PER_HOUR = " * 3600"  # dollars and tokens read best per hour; rate() is per second


# --- PromQL ---------------------------------------------------------------------------------------------


def sel(metric: str, *matchers: str) -> str:
    """`metric{job=~"$job", instance=~"$instance", <its dashboard filters>, <matchers>}`."""
    family = metric if metric in FILTERS else HISTOGRAM_SERIES.sub("", metric)
    labels = ["job", "instance", *FILTERS.get(family, ())]
    return metric + "{" + ", ".join([*(f'{label}=~"${label}"' for label in labels), *matchers]) + "}"


def rate(selector: str) -> str:
    """Per-second rate for a time series: `$__rate_interval` is never shorter than four scrapes."""
    return f"rate({selector}[$__rate_interval])"


def increase(selector: str) -> str:
    """The increase over the whole selected time range, for an instant query."""
    return f"increase({selector}[$__range])"


def quantile(q: float, buckets: str, *by: str) -> str:
    """The q-quantile of a histogram whose `buckets` is already a rate() or increase() of its _bucket."""
    return f"histogram_quantile({q}, sum by ({', '.join(('le', *by))}) ({buckets}))"


def share(part: str, whole: str) -> str:
    return f"{part}\n/\n{whole}"


# --- panels ---------------------------------------------------------------------------------------------


def target(expr: str, legend: str, *, instant: bool = False, table: bool = False) -> Json:
    """A Prometheus query; `instant` for one value at the range's end, `table` for label columns."""
    return {
        "datasource": DATASOURCE,
        "refId": "",  # set by panel(): A, B, C … in order
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "format": "table" if table else "time_series",
    }


def thresholds(*steps: tuple[str, float | None]) -> Json:
    """Threshold steps; the default is one neutral colour, as dollars or tokens are neither good nor bad."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in (steps or (("text", None),))]}


def panel(
    kind: str,
    title: str,
    description: str,
    unit: str,
    targets: list[Json],
    *,
    w: int,
    h: int,
    options: Json | None = None,
    defaults: Json | None = None,
    overrides: list[Json] | None = None,
    transformations: list[Json] | None = None,
) -> Json:
    """A panel of `w` x `h` grid units; its id and position are given by the row() that holds it."""
    for ref, t in zip("ABCDEFGH", targets, strict=False):
        t["refId"] = ref
    result: Json = {
        "id": 0,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "gridPos": {"h": h, "w": w, "x": 0, "y": 0},
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": thresholds(), **(defaults or {})},
            "overrides": overrides or [],
        },
        "options": options or {},
        "targets": targets,
    }
    if transformations:
        result["transformations"] = transformations
    return result


def reduce(fields: str = "") -> Json:
    """Each series reduced to its last value: what stat, gauge, bar gauge and pie chart panels show."""
    return {"calcs": ["lastNotNull"], "fields": fields, "values": False}


NAN = {"type": "special", "options": {"match": "nan", "result": {"text": "–", "index": 0}}}


def stat(
    title: str,
    description: str,
    unit: str,
    *targets: Json,
    w: int = 4,
    h: int = 4,
    graph: bool = False,
    defaults: Json | None = None,
    text: str = "auto",
) -> Json:
    options = {
        "reduceOptions": reduce(),
        "colorMode": "value",
        "graphMode": "area" if graph else "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": text,
        "wideLayout": True,
        "showPercentChange": False,
    }
    # No data reads as a dash, not as "No data"; a share of nothing (0 / 0 = NaN) as a dash too.
    defaults = {"noValue": "–", **(defaults or {})}
    defaults["mappings"] = [*defaults.get("mappings", []), NAN]
    return panel("stat", title, description, unit, list(targets), w=w, h=h, options=options, defaults=defaults)


def timeseries(
    title: str,
    description: str,
    unit: str,
    *targets: Json,
    w: int = 12,
    h: int = 8,
    stacked: bool = False,
    defaults: Json | None = None,
) -> Json:
    custom = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 25 if stacked else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if stacked else "none"},
    }
    defaults = dict(defaults or {})
    custom |= defaults.pop("custom", {})  # e.g. a thresholdsStyle, beside the line style above
    options = {
        "legend": {"calcs": ["mean", "max"], "displayMode": "table", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel(
        "timeseries",
        title,
        description,
        unit,
        list(targets),
        w=w,
        h=h,
        options=options,
        defaults={"custom": custom, **defaults},
    )


def bargauge(
    title: str, description: str, unit: str, *targets: Json, w: int = 12, h: int = 8, defaults: Json | None = None
) -> Json:
    options = {
        "reduceOptions": reduce(),
        "displayMode": "gradient",
        "orientation": "horizontal",
        "showUnfilled": True,
        "valueMode": "color",
        "namePlacement": "auto",
        "sizing": "auto",
    }
    return panel("bargauge", title, description, unit, list(targets), w=w, h=h, options=options, defaults=defaults)


def gauge(
    title: str, description: str, unit: str, *targets: Json, w: int = 8, h: int = 6, defaults: Json | None = None
) -> Json:
    options = {
        "reduceOptions": reduce(),
        "orientation": "auto",
        "showThresholdLabels": False,
        "showThresholdMarkers": True,
        "sizing": "auto",
    }
    return panel("gauge", title, description, unit, list(targets), w=w, h=h, options=options, defaults=defaults)


def piechart(title: str, description: str, unit: str, *targets: Json, w: int = 8, h: int = 8) -> Json:
    options = {
        "reduceOptions": reduce(),
        "pieType": "donut",
        "displayLabels": ["percent"],
        "legend": {"displayMode": "table", "placement": "right", "showLegend": True, "values": ["value", "percent"]},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel("piechart", title, description, unit, list(targets), w=w, h=h, options=options)


def table(
    title: str,
    description: str,
    unit: str,
    *targets: Json,
    columns: dict[str, str],
    w: int = 12,
    h: int = 8,
    overrides: list[Json] | None = None,
    hide: tuple[str, ...] = (),
) -> Json:
    """Instant table queries merged on their labels; `columns` renames the fields kept, in order; `hide` more."""
    organize = {
        "excludeByName": dict.fromkeys(("Time", "job", "__name__", *hide), True),
        "indexByName": {name: i for i, name in enumerate(columns)},
        "renameByName": columns,
    }
    options = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"], "fields": []}}
    return panel(
        "table",
        title,
        description,
        unit,
        list(targets),
        w=w,
        h=h,
        options=options,
        overrides=overrides,
        transformations=[{"id": "merge", "options": {}}, {"id": "organize", "options": organize}],
    )


def field_unit(field: str, unit: str) -> Json:
    """An override giving one field (a table column, after renaming) its own unit."""
    return {"matcher": {"id": "byName", "options": field}, "properties": [{"id": "unit", "value": unit}]}


def mapping(*values: tuple[str, str, str]) -> Json:
    """Value mappings: (value, text, colour), e.g. 1 -> up in green."""
    options = {v: {"text": text, "color": color, "index": i} for i, (v, text, color) in enumerate(values)}
    return {"mappings": [{"type": "value", "options": options}]}


# Both dashboards carry the tag, so each lists the other (Grafana leaves the current one out); the time
# range and the variables go along.
LINK = {
    "title": "Claude usage",
    "type": "dashboards",
    "tags": ["claude-usage"],
    "asDropdown": False,
    "includeVars": True,
    "keepTime": True,
    "targetBlank": False,
    "icon": "external link",
    "tooltip": "",
    "url": "",
}
UP_DOWN = mapping(("0", "down", "red"), ("1", "up", "green"))


def row(number: int, title: str, panels: list[Json], y: int) -> tuple[list[Json], int]:
    """A row at height `y` and its panels laid out left to right, wrapping at 24 columns.

    Ids are number*100 + position, so a panel added at the end of a row renumbers no other panel (panel
    links and `viewPanel=` URLs keep working). Returns the panels, row first, and the next free height.
    """
    placed: list[Json] = [
        {
            "id": number * 100,
            "type": "row",
            "title": title,
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
            "panels": [],
        }
    ]
    x, y, line = 0, y + 1, 0
    for position, p in enumerate(panels, start=1):
        pos = p["gridPos"]
        if x + pos["w"] > 24:
            x, y, line = 0, y + line, 0
        pos["x"], pos["y"] = x, y
        p["id"] = number * 100 + position
        x, line = x + pos["w"], max(line, pos["h"])
        placed.append(p)
    return placed, y + line


def layout(rows: list[tuple[str, list[Json]]]) -> list[Json]:
    panels: list[Json] = []
    y = 0
    for number, (title, members) in enumerate(rows, start=1):
        placed, y = row(number, title, members, y)
        panels += placed
    return panels


# --- variables and dashboards ---------------------------------------------------------------------------


def datasource_variable() -> Json:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "includeAll": False,
        "multi": False,
        "options": [],
        "refresh": 1,
        "regex": "",
    }


def query_variable(name: str, label: str, query: str) -> Json:
    """A multi-value variable whose All is `.*`, so `label=~"$name"` matches every value, even new ones."""
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "query": {"qryType": 5, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,  # on time range change: projects come and go
        "regex": "",
        "sort": 1,
        "multi": True,
        "includeAll": True,
        "allValue": ".*",
        "current": {},
        "options": [],
        "hide": 0,
    }


def variables(usage: bool) -> list[Json]:
    """datasource, job, instance; with `usage`, also project and model_family (the overview's filters)."""
    scope = 'job=~"$job", instance=~"$instance"'
    result = [
        datasource_variable(),
        query_variable("job", "Job", f"label_values(claude_usage_exporter_build_info{{{JOB}}}, job)"),
        query_variable(
            "instance", "Instance", f'label_values(claude_usage_exporter_build_info{{{JOB}, job=~"$job"}}, instance)'
        ),
    ]
    if usage:
        result += [
            query_variable("project", "Project", f"label_values(claude_usage_requests_total{{{scope}}}, project)"),
            query_variable(
                "model_family", "Model family", f"label_values(claude_usage_requests_total{{{scope}}}, model_family)"
            ),
            # Team mode only (an exporter receiving OTLP from many users); All matches series without it too.
            query_variable("user", "User", f"label_values(claude_usage_requests_total{{{scope}}}, user)"),
        ]
    return result


def dashboard(uid: str, title: str, description: str, since: str, usage: bool, panels: list[Json]) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": TAGS,
        "editable": True,
        "graphTooltip": 1,  # a shared crosshair: a spike in one panel lines up with the others
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": since, "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "refresh": "1m",
        "weekStart": "",
        "annotations": ANNOTATIONS,
        "links": [LINK],
        "templating": {"list": variables(usage)},
        "panels": panels,
    }


# The overview's recurring selectors.
COST, UNCACHED = sel("claude_usage_cost_usd_total"), sel("claude_usage_uncached_cost_usd_total")
TOKENS = "claude_usage_tokens_total"
CACHE_READ, INPUT_SIDE_TOKENS = sel(TOKENS, 'token_type="cache_read"'), sel(TOKENS, f'token_type=~"{INPUT_SIDE}"')
COST_OVER_TIME = "Cost over time by {}"


def budget(name: str) -> str:
    return sel(f"claude_usage_budget_{name}")


def block(name: str) -> str:
    return sel(f"claude_usage_block_{name}")


def plan(name: str) -> str:
    return sel(f"claude_usage_plan_{name}")


CALENDAR = (("day", "today"), ("week", "this week"), ("month", "this month"))


def windowed(metric: str, window: str) -> str:
    return sel(metric, f'window="{window}"')


def calendar_spend() -> list[Json]:
    """Today, this week, this month: computed by the exporter from its ledger, so exact to the cent."""
    spend, projected = "claude_usage_window_spend_usd", "claude_usage_window_projected_spend_usd"
    floor = {"min": 0}
    return [
        *(
            stat(
                f"Spend {name}",
                f"What has Claude Code cost {name} (in the exporter's time zone)? Exact: the"
                " exporter sums its ledger, budgets or none.",
                "currencyUSD",
                target(f"sum({windowed(spend, window)})", "spend", instant=True),
                defaults=floor,
            )
            for window, name in CALENDAR
        ),
        *(
            stat(
                f"Projected {name}",
                f"What will {name} cost at its end? Spent so far plus what the last 7 days"
                " spent in the time still to come (the same clock hours for a day: a working day's afternoon pace"
                " does not run through the night).",
                "currencyUSD",
                target(f"sum({windowed(projected, window)})", "projected", instant=True),
                defaults=floor,
            )
            for window, name in CALENDAR
        ),
    ]


def spend_and_budgets() -> list[Json]:
    """Spend in range and against the budgets' calendar windows."""
    return [
        stat(
            "Spend in range",
            "What did Claude Code cost over the selected time range? Approximate: increase()"
            " misses the money in a series' first scrape (a new project or model); the calendar figures above"
            " are exact.",
            "currencyUSD",
            target(f"sum({increase(COST)})", "spend", instant=True),
        ),
        stat(
            "Requests in range",
            "How many billable API requests were made in the selected range?",
            "short",
            target(f"sum({increase(sel('claude_usage_requests_total'))})", "requests", instant=True),
        ),
        stat(
            "Prompts in range",
            "How many prompts were typed in the selected range?",
            "short",
            target(f"sum({increase(sel('claude_usage_prompts_total'))})", "prompts", instant=True),
        ),
        stat(
            "Sessions in range",
            "How many Claude Code sessions were seen in the selected range?",
            "short",
            target(f"sum({increase(sel('claude_usage_sessions_total'))})", "sessions", instant=True),
        ),
        stat(
            "Last request",
            "When did the latest request in the ledger happen?",
            "dateTimeFromNow",
            target(f"max({sel('claude_usage_last_request_timestamp_seconds')}) * 1000", "last request", instant=True),
        ),
        bargauge(
            "Budget used",
            "How much of each budget's current window (today, this week, this month, in the"
            " exporter's time zone) is spent? 100% is the limit.",
            "percentunit",
            target(f"{budget('spend_usd')}\n/\n{budget('limit_usd')}", "{{budget}} ({{window}})", instant=True),
            w=8,
            defaults={"min": 0, "max": 1, "thresholds": thresholds(("green", None), ("orange", 0.8), ("red", 1))},
        ),
        table(
            "Budgets",
            "Per budget and window: the limit, the spend so far, the spend projected at the"
            " window's end from its burn rate, and when the window ends.",
            "currencyUSD",
            target(budget("limit_usd"), "limit", instant=True, table=True),
            target(budget("spend_usd"), "spend", instant=True, table=True),
            target(budget("projected_spend_usd"), "projected", instant=True, table=True),
            target(f"{budget('window_end_timestamp_seconds')} * 1000", "window end", instant=True, table=True),
            columns={
                "budget": "Budget",
                "window": "Window",
                "instance": "Instance",
                "Value #A": "Limit",
                "Value #B": "Spend",
                "Value #C": "Projected",
                "Value #D": "Window ends",
            },
            overrides=[field_unit("Window ends", "dateTimeFromNow")],
            w=16,
        ),
    ]


def block_and_plan() -> list[Json]:
    """The 5-hour block in progress and the plan usage Claude Code reports."""
    return [
        stat(
            "Block cost",
            "What has the 5-hour block in progress cost so far? 0 between blocks.",
            "currencyUSD",
            target(block("cost_usd"), "{{instance}}", instant=True),
        ),
        stat(
            "Block projected cost",
            "What will the block in progress cost at its end at the current burn rate?",
            "currencyUSD",
            target(block("projected_cost_usd"), "{{instance}}", instant=True),
        ),
        stat(
            "Block burn rate (USD per hour)",
            "How fast is the block in progress spending, per hour of activity?",
            "currencyUSD",
            target(block("burn_rate_usd_per_hour"), "{{instance}}", instant=True),
        ),
        stat(
            "Block time left",
            "How long until the block in progress ends? No data between blocks.",
            "s",
            target(f"{block('end_timestamp_seconds')} - time()", "{{instance}}", instant=True),
        ),
        stat(
            "Block tokens",
            "How many tokens has the block in progress used?",
            "short",
            target(block("tokens"), "{{instance}}", instant=True),
        ),
        stat(
            "Plan data stale",
            "Is the plan usage Claude Code's status line reported too old to show?",
            "none",
            target(plan("snapshot_stale"), "{{window}}", instant=True),
            defaults=mapping(("0", "fresh", "green"), ("1", "stale", "orange")),
            text="value_and_name",
        ),
        gauge(
            "Plan usage",
            "How much of the subscription plan's 5-hour and 7-day allowance is used, as Claude Code reports it?",
            "percentunit",
            target(plan("utilization_ratio"), "{{window}}", instant=True),
            defaults={"min": 0, "max": 1, "thresholds": thresholds(("green", None), ("orange", 0.75), ("red", 0.9))},
        ),
        stat(
            "Plan resets",
            "When does each plan window's allowance reset?",
            "dateTimeFromNow",
            target(f"{plan('reset_timestamp_seconds')} * 1000", "{{window}}", instant=True),
            w=8,
            h=6,
            text="value_and_name",
        ),
        stat(
            "Plan snapshot age",
            "How old is the latest plan usage the status line recorded?",
            "s",
            target(plan("snapshot_age_seconds"), "{{window}}", instant=True),
            w=8,
            h=6,
            text="value_and_name",
        ),
    ]


def cost_over_time() -> list[Json]:
    """Where the money goes over time."""
    return [
        timeseries(
            COST_OVER_TIME.format("model"),
            "Which models is the money going to, and when? In USD per hour.",
            "currencyUSD",
            target(f"sum by (model) ({rate(COST)}){PER_HOUR}", "{{model}}"),
            stacked=True,
        ),
        timeseries(
            COST_OVER_TIME.format("category and interaction"),
            "What kind of work is the money spent on:"
            " direct interaction, context processing or model operation, and which interaction? In USD per"
            " hour.",
            "currencyUSD",
            target(f"sum by (category, interaction) ({rate(COST)}){PER_HOUR}", "{{category}} / {{interaction}}"),
            stacked=True,
        ),
        timeseries(
            COST_OVER_TIME.format("project"),
            "Which projects is the money spent on, and when? In USD per hour.",
            "currencyUSD",
            target(f"sum by (project) ({rate(COST)}){PER_HOUR}", "{{project}}"),
            stacked=True,
        ),
        bargauge(
            "Spend by project in range",
            "Which projects cost the most over the selected range?",
            "currencyUSD",
            target(f"sort_desc(sum by (project) ({increase(COST)}))", "{{project}}", instant=True),
        ),
    ]


def tokens_and_caching() -> list[Json]:
    """Tokens by type, and what prompt caching reads and saves."""
    return [
        timeseries(
            "Tokens per hour by token type",
            "How many tokens go in and out, and how many of the input side are cache reads and writes?",
            "short",
            target(f"sum by (token_type) ({rate(sel(TOKENS))}){PER_HOUR}", "{{token_type}}"),
            stacked=True,
        ),
        timeseries(
            "Cache read share over time",
            "Which share of the input side (uncached input, cache reads"
            " and writes) is read from the cache? Higher is cheaper.",
            "percentunit",
            target(share(f"sum({rate(CACHE_READ)})", f"sum({rate(INPUT_SIDE_TOKENS)})"), "cache read share"),
            defaults={"min": 0, "max": 1},
        ),
        stat(
            "Cache read share in range",
            "Which share of the input-side tokens was read from the cache over the selected range?",
            "percentunit",
            target(
                share(f"sum({increase(CACHE_READ)})", f"sum({increase(INPUT_SIDE_TOKENS)})"),
                "cache read share",
                instant=True,
            ),
            w=6,
            h=8,
        ),
        stat(
            "Caching saved in range",
            "How much did prompt caching save over the selected range: the cost with"
            " every cached token billed as plain input, minus the cost? Negative when cache writes were not read"
            " back.",
            "currencyUSD",
            target(f"sum({increase(UNCACHED)})\n-\nsum({increase(COST)})", "saved", instant=True),
            w=6,
            h=8,
        ),
        timeseries(
            "Caching saved per hour (USD)",
            "How much is prompt caching saving, and when?",
            "currencyUSD",
            target(f"(sum({rate(UNCACHED)}) - sum({rate(COST)})){PER_HOUR}", "saved"),
        ),
    ]


def models_agents_and_tools() -> list[Json]:
    """Model mix, subagents, model switches and tools."""
    subagents = sel("claude_usage_cost_usd_total", 'agent="subagent"')
    switches, tools = sel("claude_usage_model_switches_total"), sel("claude_usage_tool_calls_total")
    return [
        piechart(
            "Cost share by model family",
            "Which share of the spend in the selected range went to Opus, Sonnet, Haiku and other models?",
            "currencyUSD",
            target(f"sum by (model_family) ({increase(COST)})", "{{model_family}}", instant=True),
        ),
        stat(
            "Subagent share",
            "Which share of the spend in the selected range did subagents make?",
            "percentunit",
            target(share(f"sum({increase(subagents)})", f"sum({increase(COST)})"), "subagent share", instant=True),
            w=4,
            h=8,
        ),
        timeseries(
            "Cost share by agent",
            "How does the spend split between the main thread, subagents and auxiliary requests over time?",
            "percentunit",
            target(
                share(f"sum by (agent) ({rate(COST)})", f"ignoring (agent) group_left sum({rate(COST)})"), "{{agent}}"
            ),
            stacked=True,
            defaults={"min": 0, "max": 1},
        ),
        bargauge(
            "Model switches in range",
            "How often did the main thread switch model family in the selected range, from which family to which?",
            "short",
            target(
                f"sort_desc(sum by (from_family, to_family) ({increase(switches)}))",
                "{{from_family}} → {{to_family}}",
                instant=True,
            ),
        ),
        bargauge(
            "Top tools",
            "Which ten tools were called most in the selected range (MCP tools by server)?",
            "short",
            target(f"sort_desc(topk(10, sum by (tool) ({increase(tools)})))", "{{tool}}", instant=True),
        ),
    ]


def prompts_and_context() -> list[Json]:
    """What a typed prompt costs and fans out into, and the context per request."""
    prompt_cost, prompt_requests = "claude_usage_prompt_cost_usd", "claude_usage_prompt_requests"
    context = sel("claude_usage_request_context_tokens_bucket")
    return [
        stat(
            "Cost per prompt",
            "What does a typed prompt cost, with every request it fans out into: median, 90th"
            " percentile and mean over the selected range?",
            "currencyUSD",
            *per_prompt(prompt_cost),
            w=6,
            h=8,
            text="value_and_name",
        ),
        stat(
            "Requests per prompt",
            "How many API requests does a typed prompt fan out into (subagents'"
            " included): median, 90th percentile and mean over the selected range?",
            "short",
            *per_prompt(prompt_requests),
            w=6,
            h=8,
            text="value_and_name",
        ),
        timeseries(
            "Context per request",
            "How much context does each request read (uncached input plus"
            " cache reads and writes), by model family: median and 90th percentile?",
            "short",
            target(quantile(0.5, rate(context), "model_family"), "p50 {{model_family}}"),
            target(quantile(0.9, rate(context), "model_family"), "p90 {{model_family}}"),
        ),
    ]


def searches_and_unpriced() -> list[Json]:
    """Web searches, and tokens the exporter could not price."""
    return [
        stat(
            "Web searches in range",
            "How many server-side web searches did the requests make in the selected range?",
            "short",
            target(f"sum({increase(sel('claude_usage_web_search_requests_total'))})", "web searches", instant=True),
            w=6,
            h=6,
        ),
        bargauge(
            "Unpriced tokens",
            "Which models had tokens the exporter could not price in the selected"
            " range? Their cost is missing from every cost panel.",
            "short",
            target(
                f"sort_desc(sum by (model) ({increase(sel('claude_usage_unpriced_tokens_total'))}))",
                "{{model}}",
                instant=True,
            ),
            w=18,
            h=6,
            defaults={"thresholds": thresholds(("orange", None))},
        ),
    ]


BILL_ROW = "Estimate vs bill (Admin API)"


def bill() -> list[Json]:
    """Our estimate of each completed UTC day beside what Anthropic's Admin API billed for it, and the drift.
    Empty unless `sources.anthropic_admin` is enabled."""
    drift = T["bill_drift_ratio"]
    return [
        timeseries(
            "Estimate vs bill",
            "Does our estimate match what Anthropic billed? Each point is the last completed UTC day: our estimate"
            " from the ledger and the Admin API's bill for the same day, in USD (the model family filter applies"
            " to both). Needs sources.anthropic_admin.",
            "currencyUSD",
            target(f"sum({sel('claude_usage_bill_estimate_usd')})", "our estimate"),
            target(f"sum({sel('claude_usage_billed_cost_usd')})", "billed"),
        ),
        timeseries(
            "Bill drift",
            "How far is our estimate of the last completed UTC day from the bill? Our estimate divided by the bill,"
            " minus 1: below 0 the bill is higher (other clients on the same key), above 0 we count more (usage"
            f" never billed per token). The alert ClaudeUsageBillDrift fires past ±{drift * 100:g} %.",
            "percentunit",
            target(f"max by (instance) ({sel('claude_usage_bill_drift_ratio')})", "{{instance}}"),
            defaults={
                "thresholds": thresholds(("red", None), ("green", -drift), ("red", drift)),
                "custom": {"thresholdsStyle": {"mode": "line+area"}},
            },
        ),
    ]


TEAM_ROW = "Team (OTLP)"


def team() -> list[Json]:
    """What a team exporter receiving Claude Code's OTLP shows: spend per user, cost per commit and per line
    of code, and the receiver's health. Empty on a single machine's exporter."""
    commits, lines = sel("claude_usage_commits_total"), sel("claude_usage_lines_of_code_total", 'kind="added"')
    otlp = sel("claude_usage_exporter_otlp_requests_total")
    return [
        bargauge(
            "Spend by user in range",
            "Which users cost the most over the selected range (team mode)?",
            "currencyUSD",
            target(f"sort_desc(sum by (user) ({increase(COST)}))", "{{user}}", instant=True),
            w=8,
        ),
        stat(
            "Cost per commit",
            "What did Claude Code cost per git commit it made in the selected range?",
            "currencyUSD",
            target(share(f"sum({increase(COST)})", f"sum({increase(commits)})"), "per commit", instant=True),
            w=4,
            h=8,
        ),
        stat(
            "Cost per line of code",
            "What did Claude Code cost per line of code it added in the selected range?",
            "currencyUSD",
            target(share(f"sum({increase(COST)})", f"sum({increase(lines)})"), "per line", instant=True),
            w=4,
            h=8,
        ),
        timeseries(
            "OTLP requests by status",
            "How many OTLP requests does each exporter's receiver answer, by"
            " HTTP status? Anything but 2xx is usage not counted (a bad token, an oversized payload).",
            "reqps",
            target(f"sum by (instance, code) ({rate(otlp)})", "{{instance}} {{code}}"),
            w=8,
        ),
    ]


def overview() -> Json:
    return dashboard(
        "claude-usage-overview",
        "Claude usage overview",
        "What Claude Code costs, against which budgets, on what, and how well caching works.",
        "now-7d",
        True,
        layout(
            [
                ("Calendar spend", calendar_spend()),
                ("Spend and budgets", spend_and_budgets()),
                ("5-hour block and plan", block_and_plan()),
                ("Cost over time", cost_over_time()),
                ("Tokens and caching", tokens_and_caching()),
                ("Models, agents and tools", models_agents_and_tools()),
                ("Prompts and context", prompts_and_context()),
                ("Web searches and unpriced tokens", searches_and_unpriced()),
                (BILL_ROW, bill()),
                (TEAM_ROW, team()),
            ]
        ),
    )


def per_prompt(histogram: str) -> list[Json]:
    """Median, 90th percentile and mean of a per-prompt histogram over the selected range."""
    buckets = increase(sel(f"{histogram}_bucket"))
    mean = share(f"sum({increase(sel(f'{histogram}_sum'))})", f"sum({increase(sel(f'{histogram}_count'))})")
    return [
        target(quantile(0.5, buckets), "p50", instant=True),
        target(quantile(0.9, buckets), "p90", instant=True),
        target(mean, "mean", instant=True),
    ]


def exporter() -> Json:
    lines = "claude_usage_exporter_lines_total"
    build = sel("claude_usage_exporter_build_info")
    malformed = sel(lines, 'outcome="malformed"')
    health = [
        stat(
            "Up",
            "Can Prometheus scrape each exporter?",
            "none",
            target(sel("up"), "{{instance}}", instant=True),
            defaults=UP_DOWN,
        ),
        stat(
            "Uptime",
            "How long has each exporter been running?",
            "s",
            target(f"time() - {sel('process_start_time_seconds')}", "{{instance}}", instant=True),
        ),
        stat(
            "Ingest lag",
            "How old is the oldest change seen but not yet in the ledger? 0 when caught up.",
            "s",
            target(sel("claude_usage_exporter_ingest_lag_seconds"), "{{instance}}", instant=True),
            defaults={"thresholds": thresholds(("green", None), ("orange", 60), ("red", 300))},
        ),
        stat(
            "Files watched",
            "How many transcript files are under the exporter's roots?",
            "short",
            target(sel("claude_usage_exporter_files_watched"), "{{instance}}", instant=True),
        ),
        stat(
            "Ledger requests",
            "How many requests does the ledger hold?",
            "short",
            target(sel("claude_usage_exporter_ledger_requests"), "{{instance}}", instant=True),
        ),
        stat(
            "Last request",
            "When did the latest request in the ledger happen? An old time while Claude Code is"
            " in use means ingestion is stuck.",
            "dateTimeFromNow",
            target(f"{sel('claude_usage_last_request_timestamp_seconds')} * 1000", "{{instance}}", instant=True),
        ),
        table(
            "Build",
            "Which exporter version and price data is each instance running?",
            "none",
            target(build, "{{version}}", instant=True, table=True),
            columns={
                "instance": "Instance",
                "version": "Version",
                "pricing_source": "Pricing source",
                "pricing_version": "Pricing version",
            },
            hide=("Value",),
            h=6,
        ),
        stat(
            "Source up",
            "Did each source's last ingest succeed (a failure is e.g. a state dir that is not writable)?",
            "none",
            target(sel("claude_usage_exporter_source_up"), "{{source}}", instant=True),
            defaults=UP_DOWN,
            w=4,
            h=6,
            text="value_and_name",
        ),
        stat(
            "Malformed lines in range",
            "How many lines could not be parsed in the selected range?",
            "short",
            target(f"sum by (source) ({increase(malformed)})", "{{source}}", instant=True),
            w=4,
            h=6,
            text="value_and_name",
            defaults={"thresholds": thresholds(("green", None), ("orange", 1))},
        ),
        stat(
            "Read errors",
            "How many files or folders could not be read (permissions, deleted mid-read) in the selected range?",
            "short",
            target(
                f"sum by (source) ({increase(sel('claude_usage_exporter_read_errors_total'))})",
                "{{source}}",
                instant=True,
            ),
            w=4,
            h=6,
            text="value_and_name",
            defaults={"thresholds": thresholds(("green", None), ("orange", 1))},
        ),
    ]
    ingest = [
        timeseries(
            "Lines by outcome",
            "How many transcript lines are read per second, and are they usage,"
            " duplicates, skipped (not usage) or malformed?",
            "cps",
            target(f"sum by (outcome) ({rate(sel(lines))})", "{{outcome}}"),
            stacked=True,
        ),
        timeseries(
            "Bytes read per second",
            "How much transcript data is the exporter reading?",
            "Bps",
            target(
                f"sum by (instance, source) ({rate(sel('claude_usage_exporter_bytes_read_total'))})",
                "{{instance}} {{source}}",
            ),
        ),
        timeseries(
            "Ingest lag over time",
            "Has the ledger kept up with the transcripts over time?",
            "s",
            target(sel("claude_usage_exporter_ingest_lag_seconds"), "{{instance}}"),
        ),
        timeseries(
            "Ledger requests over time",
            "How has the number of requests in the ledger grown?",
            "short",
            target(sel("claude_usage_exporter_ledger_requests"), "{{instance}}"),
        ),
    ]
    scrape = [
        timeseries(
            "Scrape duration",
            "How long does Prometheus take to scrape each exporter?",
            "s",
            target(sel("scrape_duration_seconds"), "{{instance}}"),
        ),
        timeseries(
            "Samples scraped",
            "How many samples does each scrape return (the exporter's series count)?",
            "short",
            target(sel("scrape_samples_scraped"), "{{instance}}"),
        ),
    ]
    process = [
        timeseries(
            "CPU",
            "How much CPU does each exporter use (1 = one core)?",
            "percentunit",
            target(rate(sel("process_cpu_seconds_total")), "{{instance}}"),
            w=8,
        ),
        timeseries(
            "Resident memory",
            "How much memory does each exporter hold?",
            "bytes",
            target(sel("process_resident_memory_bytes"), "{{instance}}"),
            w=8,
        ),
        timeseries(
            "Open file descriptors",
            "How many file descriptors does each exporter hold, against its limit?",
            "short",
            target(sel("process_open_fds"), "{{instance}}"),
            target(sel("process_max_fds"), "{{instance}} limit"),
            w=8,
        ),
    ]
    return dashboard(
        "claude-usage-exporter",
        "Claude usage exporter",
        "Is the claude-usage-exporter up, keeping up with the transcripts, and cheap to run?",
        "now-6h",
        False,
        layout([("Health", health), ("Ingest", ingest), ("Scrape", scrape), ("Process", process)]),
    )


# --- alert and recording rules --------------------------------------------------------------------------
# Severities (what node-mixin and kubernetes-mixin use): critical pages a person now, warning goes to the
# team in working hours, info is for the ticket queue. Only a runaway agent is critical: money leaves by
# the minute and a person can stop it. A blown budget is a warning: nothing can be undone at 21:00.


def rsel(metric: str, *matchers: str) -> str:
    """A rule's selector: `metric{<job selector>, <matchers>}`."""
    return metric + "{" + ", ".join((JOB, *matchers)) + "}"


def template(text: str) -> str:
    """A template with `<<x>>` for `{{ x }}`, since Go's braces fight Python's in f-strings."""
    return re.sub(r"<<(.+?)>>", lambda found: "{{ " + found[1] + ("}}" if found[1].endswith(" -") else " }}"), text)


def figure(metric: str, fmt: str = 'printf "%.2f"') -> str:
    """The value of `metric` for the alert's `$sel`, rendered in the annotation."""
    return template(f'<<with query (print "{metric}" $sel)>><<. | first | value | {fmt}>><<end>>')


def dashboard_url(uid: str, instance: bool = True) -> str:
    args = "var-job=<<$labels.job | urlquery>>" + ("&var-instance=<<$labels.instance | urlquery>>" if instance else "")
    return template(f"{CONFIG['grafana_url']}/d/{uid}?{args}")


def alert(
    name: str,
    expr: str,
    severity: str,
    summary: str,
    description: str,
    *,
    for_: str = "",
    dashboard: str = "claude-usage-overview",
    instance: bool = True,
) -> Json:
    rule: Json = {"alert": name, "expr": expr}
    if for_:
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": template(summary),
        "description": template(description),
        "runbook_url": f"{CONFIG['runbook_url']}#{name.lower()}",
        "dashboard_url": dashboard_url(dashboard, instance),
    }
    return rule


BUDGET_SEL = (
    'printf "{job=%q,instance=%q,budget=%q,window=%q}" $labels.job $labels.instance $labels.budget $labels.window'
)
BUDGET_ON = "on (job, instance, budget, window)"
LAST_HOUR = f"sum by (job, instance) (increase({rsel('claude_usage_cost_usd_total')}[1h]))"
BASELINE = "job_instance:claude_usage_cost_usd:increase1h_quantile_7d"


def recording_rules() -> list[Json]:
    spend, limit = rsel("claude_usage_budget_spend_usd"), rsel("claude_usage_budget_limit_usd")
    projected = rsel("claude_usage_budget_projected_spend_usd")
    cost = rsel("claude_usage_cost_usd_total")
    return [
        {
            "record": "job_instance_budget_window:claude_usage_budget_spend:ratio",
            "expr": f"{spend} / {BUDGET_ON} {limit}",
        },
        {
            "record": "job_instance_budget_window:claude_usage_budget_projected_spend:ratio",
            "expr": f"{projected} / {BUDGET_ON} {limit}",
        },
        {"record": "job_instance:claude_usage_cost_usd:increase1h", "expr": LAST_HOUR},
        # The spike baseline: a high quantile of the hourly spend over 7 days, read once an hour (168
        # points, not 10,080). Nights and weekends are the low hours, so the quantile stays a busy hour's.
        {
            "record": BASELINE,
            "expr": f"quantile_over_time({T['spike_quantile']:g},"
            f" job_instance:claude_usage_cost_usd:increase1h[7d:1h])",
        },
        {
            "record": "job_instance_model_family:claude_usage_cost_usd:rate5m",
            "expr": f"sum by (job, instance, model_family) (rate({cost}[5m]))",
        },
        {
            "record": "job_instance_project:claude_usage_cost_usd:rate5m",
            "expr": f"sum by (job, instance, project) (rate({cost}[5m]))",
        },
        {
            "record": "job_instance_token_type:claude_usage_tokens:rate5m",
            "expr": f"sum by (job, instance, token_type) (rate({rsel('claude_usage_tokens_total')}[5m]))",
        },
    ]


def budget_alerts() -> list[Json]:
    spend, limit = rsel("claude_usage_budget_spend_usd"), rsel("claude_usage_budget_limit_usd")
    projected = rsel("claude_usage_budget_projected_spend_usd", 'window="month"')
    sel_ = f"<<$sel := {BUDGET_SEL} ->>"
    end = figure("claude_usage_budget_window_end_timestamp_seconds", "humanizeTimestamp")
    info = T["budget_info_ratio"]
    return [
        alert(
            "ClaudeUsageBudgetWarning",
            f"{spend} / {BUDGET_ON} {limit} >= {info:g}",
            "info",
            "Budget <<$labels.budget>> has used <<$value | humanizePercentage>> of its <<$labels.window>> limit.",
            f"{sel_}<<$labels.instance>> has spent ${figure('claude_usage_budget_spend_usd')} of the"
            f" ${figure('claude_usage_budget_limit_usd')} limit of budget <<$labels.budget>> in the"
            f" <<$labels.window>> that ends {end}.",
            for_="5m",
        ),
        alert(
            "ClaudeUsageBudgetExceeded",
            f"{spend} / {BUDGET_ON} {limit} >= 1",
            "warning",
            "Budget <<$labels.budget>> is exceeded at <<$value | humanizePercentage>> of its <<$labels.window>> limit.",
            f"{sel_}<<$labels.instance>> has spent ${figure('claude_usage_budget_spend_usd')} against the"
            f" ${figure('claude_usage_budget_limit_usd')} limit of budget <<$labels.budget>>; the"
            f" <<$labels.window>> ends {end}.",
            for_="5m",
        ),
        # Months only: a day is not uniform (a working day's afternoon pace does not run through the
        # night) nor is a week (weekends), but a month holds its share of both; `for` asks the pace to hold 6 h.
        alert(
            "ClaudeUsageBudgetForecastExceeded",
            f"{projected} / {BUDGET_ON} {limit} > 1\nand {BUDGET_ON} {spend} < {BUDGET_ON} {limit}",
            "warning",
            "Budget <<$labels.budget>> is on course for <<$value | humanizePercentage>> of its month limit.",
            f"{sel_}At its pace so far this month <<$labels.instance>> will have spent"
            f" ${figure('claude_usage_budget_projected_spend_usd')} when the month ends {end}, against a limit of"
            f" ${figure('claude_usage_budget_limit_usd')}; ${figure('claude_usage_budget_spend_usd')} is spent"
            " so far.",
            for_="6h",
        ),
    ]


def spend_alerts() -> list[Json]:
    unpriced = rsel("claude_usage_unpriced_tokens_total")
    # Counters come from the durable ledger, so a restarted or rescheduled exporter (a new `instance`)
    # resumes at the same level: the level of each model, across instances, is compared with its highest
    # level in the week before the last hour. A scrape gap or a new pod is no rise; a new model is.
    before = f"max by (job, model) (max_over_time({unpriced}[7d] offset 1h))"
    now = f"max by (job, model) ({unpriced})"
    factor, floor = T["spike_factor"], T["spike_floor_usd"]
    return [
        alert(
            "ClaudeUsageSpendSpike",
            f"{LAST_HOUR} > {floor:g}\nand {LAST_HOUR}\n  > {factor:g} * {BASELINE}",
            "critical",
            '<<$labels.instance>> spent $<<$value | printf "%.2f">> in the last hour.',
            '<<$sel := printf "{job=%q,instance=%q}" $labels.job $labels.instance ->>'
            f'<<$labels.instance>> spent $<<$value | printf "%.2f">> in the last hour, more than {factor:g} times'
            f" a busy hour of the last 7 days (${figure(BASELINE)}, the {T['spike_quantile'] * 100:g}th"
            " percentile of its hourly spend): an agent may be looping.",
            for_="15m",
        ),
        alert(
            "ClaudeUsagePlanWindowHigh",
            f"{rsel('claude_usage_plan_utilization_ratio')} >= {T['plan_window_ratio']:g}",
            "info",
            "The Claude plan's <<$labels.window>> window is <<$value | humanizePercentage>> used.",
            '<<$sel := printf "{job=%q,instance=%q,window=%q}" $labels.job $labels.instance $labels.window ->>'
            "Claude Code on <<$labels.instance>> reported <<$value | humanizePercentage>> of the plan's"
            " <<$labels.window>> window used; at 100% it is rate-limited until the window resets in"
            ' <<with query (print "claude_usage_plan_reset_timestamp_seconds" $sel " - time()")>>'
            "<<. | first | value | humanizeDuration>><<end>>.",
            for_="1m",
        ),
        alert(
            "ClaudeUsageUnpricedModel",
            f"{now} > {before}\nor {now} unless {before}",
            "warning",
            "Model <<$labels.model>> has no known price.",
            "Requests to <<$labels.model>> (job <<$labels.job>>) were counted in the last hour without a cost"
            ' (<<$value | printf "%.0f">> tokens so far), so spend and budgets are understated. Add a pricing'
            " override for it.",
            instance=False,
        ),
    ]


def summed(metric: str) -> str:
    """The sum of `metric`'s series for the alert's `$sel`, in dollars, rendered in the annotation."""
    return template(f'<<with query (print "sum({metric}" $sel ")")>><<. | first | value | printf "%.2f">><<end>>')


def bill_alerts() -> list[Json]:
    """Our estimate against Anthropic's bill (sources.anthropic_admin): the drift gauge changes once a UTC day,
    when the first read after midnight brings the day's bill; late usage and corrections move it for a while."""
    drift, age = rsel("claude_usage_bill_drift_ratio"), rsel("claude_usage_billing_data_age_seconds")
    share = T["bill_drift_ratio"]
    hours = T["billing_data_age_seconds"] / 3600
    sel_ = '<<$sel := printf "{job=%q,instance=%q}" $labels.job $labels.instance ->>'
    return [
        alert(
            "ClaudeUsageBillDrift",
            f"{drift} > {share:g}\nor {drift} < -{share:g}",
            "info",
            "Our estimate of yesterday on <<$labels.instance>> is off the bill by <<$value | humanizePercentage>>.",
            f"{sel_}For the last completed UTC day <<$labels.instance>> estimated"
            f" ${summed('claude_usage_bill_estimate_usd')} and Anthropic's Admin API billed"
            f" ${summed('claude_usage_billed_cost_usd')}, a drift of <<$value | humanizePercentage>> (more than"
            f" {share * 100:g} % either way). Below 0 the bill is higher (other clients on the same key, requests no"
            " source saw); above 0 we count more (subscription usage, never billed per token; a price we have"
            " wrong). `report reconcile` explains it per model.",
            for_="3h",
        ),
        alert(
            "ClaudeUsageBillingDataStale",
            f"{age} > {T['billing_data_age_seconds']:g}",
            "info",
            "<<$labels.instance>> has not read Anthropic's bill for <<$value | humanizeDuration>>.",
            f"The Admin API was last read in full by <<$labels.instance>> <<$value | humanizeDuration>> ago (over"
            f" {hours:g} h): the billed figures are old, and a day whose bill was not read after it ended shows no"
            " drift.",
            for_="15m",
            dashboard="claude-usage-exporter",
        ),
    ]


def exporter_alerts() -> list[Json]:
    up, lag = rsel("up"), rsel("claude_usage_exporter_ingest_lag_seconds")
    last = rsel("claude_usage_last_request_timestamp_seconds")
    otlp = rsel("claude_usage_exporter_otlp_requests_total")
    rejected = rsel("claude_usage_exporter_otlp_requests_total", 'code!~"2.."')
    capped = " or ".join(
        rsel(m, f'{label}="other"')
        for m, label in (
            ("claude_usage_requests_total", "project"),
            ("claude_usage_requests_total", "model"),
            ("claude_usage_tool_calls_total", "tool"),
        )
    )
    samples = rsel("scrape_samples_scraped")
    malformed = rsel("claude_usage_exporter_lines_total", 'outcome="malformed"')
    board = "claude-usage-exporter"
    return [
        alert(
            "ClaudeUsageExporterDown",
            f"{up} == 0",
            "warning",
            "claude-usage-exporter on <<$labels.instance>> is down.",
            "Prometheus has not scraped <<$labels.instance>> (job <<$labels.job>>) for 5 minutes. No usage is"
            " lost (it is counted from the transcripts when the exporter is back), but no budget alert can fire"
            " meanwhile.",
            for_="5m",
            dashboard=board,
        ),
        alert(
            "ClaudeUsageTargetAbsent",
            f"absent({up})",
            "warning",
            "No claude-usage-exporter target is scraped.",
            f"Prometheus has no target matching {JOB} for 15 minutes: the exporter is gone from service"
            " discovery (a deleted Service or ServiceMonitor, a changed job name), so nothing is measured and no"
            " other alert can fire.",
            for_="15m",
            dashboard=board,
            instance=False,
        ),
        alert(
            "ClaudeUsageMetricsAbsent",
            f"{up} == 1\nunless on (job, instance) {rsel('claude_usage_exporter_build_info')}",
            "warning",
            "<<$labels.instance>> answers scrapes without claude-usage metrics.",
            "Prometheus scrapes <<$labels.instance>> (job <<$labels.job>>) but finds no"
            " claude_usage_exporter_build_info: the target is another program, a proxy, or the wrong port or"
            " path.",
            for_="10m",
            dashboard=board,
        ),
        alert(
            "ClaudeUsageExporterCrashLooping",
            f"changes({rsel('process_start_time_seconds')}[30m]) >= {T['restarts_30m']:g}",
            "warning",
            "claude-usage-exporter on <<$labels.instance>> keeps restarting.",
            '<<$labels.instance>> restarted <<$value | printf "%.0f">> times in 30 minutes; while it restarts'
            " it neither counts nor answers scrapes.",
            dashboard=board,
        ),
        alert(
            "ClaudeUsageExporterStalled",
            f"{lag} > {T['ingest_lag_seconds']:g}",
            "warning",
            "claude-usage-exporter on <<$labels.instance>> is <<$value | humanizeDuration>> behind.",
            "The oldest transcript change <<$labels.instance>> has seen is <<$value | humanizeDuration>> old and"
            " still not in its ledger, so spend and budgets lag behind.",
            for_="10m",
            dashboard=board,
        ),
        alert(
            "ClaudeUsageSourceDown",
            f"{rsel('claude_usage_exporter_source_up')} == 0",
            "warning",
            "claude-usage-exporter on <<$labels.instance>> cannot ingest from <<$labels.source>>.",
            "The last ingest from <<$labels.source>> on <<$labels.instance>> failed and has gone on failing for"
            " 5 minutes (often an unwritable or full state dir); the metrics show the last good figures.",
            for_="5m",
            dashboard=board,
        ),
        alert(
            "ClaudeUsageMalformedLines",
            f"sum by (job, instance, source) (increase({malformed}[15m])) > {T['malformed_lines_15m']:g}",
            "warning",
            "claude-usage-exporter on <<$labels.instance>> is skipping malformed <<$labels.source>> lines.",
            '<<$value | printf "%.0f">> <<$labels.source>> lines that looked like usage could not be used on'
            " <<$labels.instance>> in the last 15 minutes; their requests are not counted. A new Claude Code"
            " release may have changed its format.",
            dashboard=board,
        ),
        alert(
            "ClaudeUsageReadErrors",
            f"sum by (job, instance, source) (increase({rsel('claude_usage_exporter_read_errors_total')}[1h])) > 0",
            "warning",
            "claude-usage-exporter on <<$labels.instance>> cannot read some <<$labels.source>> files.",
            '<<$value | printf "%.0f">> files or folders under <<$labels.instance>>\'s roots could not be read in'
            " the last hour (permissions, or deleted mid-read); what they hold is not counted.",
            dashboard=board,
        ),
        alert(
            "ClaudeUsageOtlpRejections",
            f"sum by (job, instance) (rate({rejected}[15m]))\n/ sum by (job, instance) (rate({otlp}[15m]))"
            f" > {T['otlp_rejected_ratio']:g}",
            "warning",
            "claude-usage-exporter on <<$labels.instance>> rejects <<$value | humanizePercentage>> of OTLP requests.",
            "<<$value | humanizePercentage>> of the OTLP requests <<$labels.instance>> received in the last 15"
            " minutes were answered with an error (a bad token, an oversized or malformed payload): those Claude"
            " Code clients' usage is not counted.",
            for_="15m",
            dashboard=board,
        ),
        alert(
            "ClaudeUsageClockSkew",
            f"{last} - timestamp({last}) > {T['clock_skew_seconds']:g}",
            "warning",
            "Requests on <<$labels.instance>> are stamped <<$value | humanizeDuration>> in the future.",
            "The latest request on <<$labels.instance>> is stamped <<$value | humanizeDuration>> after"
            " Prometheus scraped it: a clock (the machine running Claude Code, or the exporter's) is ahead, so"
            " spend lands in the wrong day, week or month window.",
            for_="10m",
            dashboard=board,
        ),
        alert(
            "ClaudeUsageLabelCapReached",
            f"count by (job, instance) ({capped}) > 0",
            "info",
            "claude-usage-exporter on <<$labels.instance>> folds labels into `other`.",
            "A label cap (max_projects, max_models or max_tools) is reached on <<$labels.instance>>: later"
            " projects, models or tools are counted under `other`. Raise the cap, or hash or drop the project"
            " label.",
            for_="1h",
            dashboard=board,
        ),
        alert(
            "ClaudeUsageSeriesGrowth",
            f"{samples} > {T['series_limit']:g}",
            "info",
            '<<$labels.instance>> exposes <<$value | printf "%.0f">> samples per scrape.',
            f'<<$labels.instance>> exposes <<$value | printf "%.0f">> samples per scrape, more than'
            f" {T['series_limit']:g}: more projects, models, tools or users than planned. Lower the label caps"
            " or hash the project label.",
            for_="1h",
            dashboard=board,
        ),
    ]


def rule_groups() -> dict[str, list[Json]]:
    """File name in deploy/prometheus/ -> its groups."""
    return {
        "recording.yml": [{"name": "claude-usage.recording", "rules": recording_rules()}],
        "alerts.yml": [
            {"name": "claude-usage.budgets", "rules": budget_alerts()},
            {"name": "claude-usage.spend", "rules": spend_alerts() + bill_alerts()},
            {"name": "claude-usage.exporter", "rules": exporter_alerts()},
        ],
    }


# --- output ---------------------------------------------------------------------------------------------


def build() -> dict[str, Json]:
    """File name -> dashboard."""
    return {"claude-usage-overview.json": overview(), "claude-usage-exporter.json": exporter()}


def render(dash: Json) -> str:
    return json.dumps(dash, indent=2, ensure_ascii=False) + "\n"


RULES_DIR = HERE.parent / "deploy" / "prometheus"
PROMETHEUS_RULE = HERE.parent / "deploy" / "kubernetes" / "prometheusrule.py"
RULES_HEADER = """\
# Generated by dashboards/generate.py from dashboards/mixin.toml: do not edit, change the generator or the
# config and run `python dashboards/generate.py`. Severities: critical pages (a runaway agent), warning goes
# to the team in working hours, info to the ticket queue; deploy/alertmanager/alertmanager.yml routes them.
# Runbooks: docs/runbooks.md. Tested by tests/rules/*.test.yml (promtool test rules).
"""


def _prometheus_rule() -> Any:
    """deploy/kubernetes/prometheusrule.py (PyYAML's dumper and the PrometheusRule), loaded from its path."""
    spec = importlib.util.spec_from_file_location("prometheusrule", PROMETHEUS_RULE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def outputs() -> dict[Path, str]:
    """Every generated file -> its text: the dashboards, the rule files and the Kubernetes PrometheusRule."""
    import yaml  # the one dependency, the project's own: rule files are YAML with `|` blocks for PromQL

    k8s = _prometheus_rule()
    files = {HERE / name: render(dash) for name, dash in build().items()}
    for name, groups in rule_groups().items():
        body = yaml.dump({"groups": groups}, Dumper=k8s._Dumper, sort_keys=False, width=4096, allow_unicode=True)
        files[RULES_DIR / name] = RULES_HEADER + body
    sources = tuple(RULES_DIR / name for name in rule_groups())
    files[k8s.OUTPUT] = k8s.render_text({RULES_DIR / n: files[RULES_DIR / n] for n in rule_groups()}, sources)
    return files


def targets(dash: Json) -> list[tuple[Json, Json]]:
    """Every (panel, target) of a dashboard, rows left out (they have no targets)."""
    return [(p, t) for p in dash["panels"] for t in p.get("targets", [])]


def queries(dash: Json) -> list[tuple[str, str]]:
    """Every (panel title, expr) of a dashboard: what a live check runs against Prometheus."""
    return [(p["title"], t["expr"]) for p, t in targets(dash)]


def variable_queries(dash: Json) -> list[tuple[str, str]]:
    """Every (variable name, query) of a dashboard's query variables, e.g. `label_values(…, job)`."""
    return [(v["name"], v["query"]["query"]) for v in dash["templating"]["list"] if v["type"] == "query"]


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(path.relative_to(HERE.parent))
        if not check:
            path.write_text(text, encoding="utf-8", newline="\n")
    verb = "differs from the generator" if check else "written"
    for name in stale:
        print(f"{name}: {verb}")
    return 1 if check and stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
