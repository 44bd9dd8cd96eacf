"""The metric contract: every metric's name, type, unit, labels and help, written once.

The exposition creates its instruments from it, `claude-usage-exporter metrics` prints it, and
docs/metrics.md and the dashboards' checks are generated or tested from it.
"""

from __future__ import annotations

from dataclasses import dataclass

from exporter.events import Source

SOURCES = (Source.TRANSCRIPTS,)  # the sources the exporter always shows counters for
USAGE = ("model", "model_family", "category", "interaction", "agent", "project")


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # counter | gauge | histogram
    unit: str  # OpenTelemetry (UCUM) unit; the Prometheus name already ends in it
    labels: tuple[str, ...]
    help: str
    live: bool = False  # read at each scrape rather than from the ledger


CONTRACT: tuple[Spec, ...] = (
    Spec(
        "claude_usage_tokens_total",
        "counter",
        "{token}",
        (*USAGE, "token_type"),
        "Tokens of billable requests; token_type is input (uncached), output, cache_read, cache_write_5m or"
        " cache_write_1h.",
    ),
    Spec("claude_usage_cost_usd_total", "counter", "usd", USAGE, "Cost of billable requests in US dollars."),
    Spec(
        "claude_usage_uncached_cost_usd_total",
        "counter",
        "usd",
        USAGE,
        "What the requests would have cost with every cached token (reads and writes) billed as uncached input;"
        " minus claude_usage_cost_usd_total, what caching saved (negative when writes were not read back).",
    ),
    Spec("claude_usage_requests_total", "counter", "{request}", USAGE, "Billable API requests, each counted once."),
    Spec(
        "claude_usage_web_search_requests_total",
        "counter",
        "{request}",
        ("model", "project"),
        "Server-side web searches the requests made.",
    ),
    Spec(
        "claude_usage_tool_calls_total",
        "counter",
        "{call}",
        ("tool", "agent", "project"),
        "Responses that called a tool; MCP tools collapse to mcp__<server>.",
    ),
    Spec(
        "claude_usage_model_switches_total",
        "counter",
        "{switch}",
        ("from_family", "to_family"),
        "Main-thread requests whose model family differs from the session's previous one.",
    ),
    Spec("claude_usage_sessions_total", "counter", "{session}", ("project",), "Claude Code sessions seen."),
    Spec(
        "claude_usage_unpriced_tokens_total",
        "counter",
        "{token}",
        ("model",),
        "Tokens of requests whose model has no known price; their cost is not in the cost counter.",
    ),
    Spec(
        "claude_usage_prompts_total",
        "counter",
        "{prompt}",
        ("project",),
        "Prompts typed by the user (not tool results); each fans out into one or more requests.",
    ),
    Spec(
        "claude_usage_prompt_requests",
        "histogram",
        "{request}",
        (),
        "Requests per prompt: the session's requests (subagents' included) until the next prompt.",
    ),
    Spec("claude_usage_prompt_cost_usd", "histogram", "usd", (), "Cost per prompt in US dollars."),
    Spec(
        "claude_usage_request_context_tokens",
        "histogram",
        "{token}",
        ("model_family",),
        "Context each request read: uncached input plus cache reads and writes.",
    ),
    Spec(
        "claude_usage_lines_of_code_total",
        "counter",
        "{line}",
        ("kind",),
        "Lines of code Claude Code added or removed (kind), from its own telemetry (team mode).",
    ),
    Spec(
        "claude_usage_commits_total",
        "counter",
        "{commit}",
        (),
        "Git commits Claude Code made, from its own telemetry (team mode).",
    ),
    Spec(
        "claude_usage_pull_requests_total",
        "counter",
        "{pull_request}",
        (),
        "Pull requests Claude Code opened, from its own telemetry (team mode).",
    ),
    Spec(
        "claude_usage_active_time_seconds_total",
        "counter",
        "s",
        ("kind",),
        "Active time Claude Code reported: kind user (the user at work) or cli (Claude Code at work).",
    ),
    Spec(
        "claude_usage_last_request_timestamp_seconds",
        "gauge",
        "s",
        (),
        "Time of the latest request in the ledger, in seconds since the epoch.",
    ),
    Spec(
        "claude_usage_budget_limit_usd",
        "gauge",
        "usd",
        ("budget", "window"),
        "The budget's limit for its current calendar window, in US dollars.",
        live=True,
    ),
    Spec(
        "claude_usage_budget_spend_usd",
        "gauge",
        "usd",
        ("budget", "window"),
        "Spend so far in the budget's current window (day, week or month in the configured time zone).",
        live=True,
    ),
    Spec(
        "claude_usage_budget_projected_spend_usd",
        "gauge",
        "usd",
        ("budget", "window"),
        "Spend projected at the window's end from its burn rate, taken over at least a tenth of the window.",
        live=True,
    ),
    Spec(
        "claude_usage_budget_window_end_timestamp_seconds",
        "gauge",
        "s",
        ("budget", "window"),
        "When the budget's current window ends, in seconds since the epoch.",
        live=True,
    ),
    Spec(
        "claude_usage_window_spend_usd",
        "gauge",
        "usd",
        ("window",),
        "Spend so far today, this week or this month (window) in the configured time zone, budgets or none;"
        " from the ledger, so exact.",
        live=True,
    ),
    Spec(
        "claude_usage_window_projected_spend_usd",
        "gauge",
        "usd",
        ("window",),
        "Spend at the window's end: spent so far plus what the last 7 days spent in the time still to come (the"
        " same clock hours for a day, the average pace for a week or month).",
        live=True,
    ),
    Spec(
        "claude_usage_block_cost_usd",
        "gauge",
        "usd",
        (),
        "Cost of the 5-hour block in progress; 0 between blocks.",
        live=True,
    ),
    Spec("claude_usage_block_tokens", "gauge", "{token}", (), "Tokens of the 5-hour block in progress.", live=True),
    Spec(
        "claude_usage_block_start_timestamp_seconds",
        "gauge",
        "s",
        (),
        "Start of the 5-hour block in progress (absent between blocks).",
        live=True,
    ),
    Spec(
        "claude_usage_block_end_timestamp_seconds",
        "gauge",
        "s",
        (),
        "End of the 5-hour block in progress (absent between blocks).",
        live=True,
    ),
    Spec(
        "claude_usage_block_burn_rate_usd_per_hour",
        "gauge",
        "usd/h",
        (),
        "Cost per hour over the active span of the block in progress.",
        live=True,
    ),
    Spec(
        "claude_usage_block_projected_cost_usd",
        "gauge",
        "usd",
        (),
        "Cost the block in progress reaches at its end at the current burn rate (over at least its first 30 minutes).",
        live=True,
    ),
    Spec(
        "claude_usage_plan_utilization_ratio",
        "gauge",
        "1",
        ("window",),
        "Plan usage Claude Code reported (status line) for five_hour or seven_day; absent when stale.",
        live=True,
    ),
    Spec(
        "claude_usage_plan_reset_timestamp_seconds",
        "gauge",
        "s",
        ("window",),
        "When the plan window resets, as Claude Code reported it; absent when stale.",
        live=True,
    ),
    Spec(
        "claude_usage_plan_snapshot_age_seconds",
        "gauge",
        "s",
        ("window",),
        "Age of the last plan usage the status line recorded.",
        live=True,
    ),
    Spec(
        "claude_usage_plan_snapshot_stale",
        "gauge",
        "",
        ("window",),
        "1 when the recorded plan usage is older than its window or its reset time has passed.",
        live=True,
    ),
    Spec(
        "claude_usage_exporter_build_info",
        "gauge",
        "",
        ("version", "pricing_source", "pricing_version"),
        "Always 1; the exporter's version and the price data it uses.",
    ),
    Spec(
        "claude_usage_exporter_lines_total",
        "counter",
        "{line}",
        ("source", "outcome"),
        "Lines read, by outcome: usage, duplicate, skipped (not usage) or malformed; for the billing source, the"
        " report rows and buckets skipped at each read (a day is read again until it is final).",
    ),
    Spec("claude_usage_exporter_bytes_read_total", "counter", "{byte}", ("source",), "Bytes read from sources."),
    Spec(
        "claude_usage_exporter_slow_lines_total",
        "counter",
        "{line}",
        ("source",),
        "Transcript lines the fast decoder could not take, or whose usage holds a field it does not know, read"
        " by a slower parser instead (the same result); a rise means Claude Code changed its line format.",
    ),
    Spec(
        "claude_usage_exporter_read_errors_total",
        "counter",
        "{error}",
        ("source",),
        "Files or folders that could not be read (permissions, deleted mid-read); a lasting fault counts once.",
    ),
    Spec(
        "claude_usage_billed_cost_usd",
        "gauge",
        "usd",
        ("model_family", "workspace"),
        "What the Admin API billed for the last completed UTC day, by model family (other for a cost line without a"
        " model) and workspace (default for the default one; the 20 costliest, the rest as other). Only with"
        " sources.anthropic_admin enabled.",
        live=True,
    ),
    Spec(
        "claude_usage_bill_estimate_usd",
        "gauge",
        "usd",
        ("model_family",),
        "Our estimate of the cost of the day claude_usage_billed_cost_usd covers, from the ledger's requests, by"
        " model family. Only with sources.anthropic_admin enabled and a bill for that day.",
        live=True,
    ),
    Spec(
        "claude_usage_billed_tokens",
        "gauge",
        "{token}",
        ("model_family", "token_type"),
        "Tokens the Admin API billed for the last completed UTC day; token_type as in claude_usage_tokens_total."
        " Only with sources.anthropic_admin enabled.",
        live=True,
    ),
    Spec(
        "claude_usage_bill_drift_ratio",
        "gauge",
        "1",
        (),
        "Our estimate for the last completed UTC day divided by what the Admin API billed for it, minus 1: 0 when"
        " they agree, negative when the bill is higher (other clients on the same key). Only with"
        " sources.anthropic_admin enabled, a bill above 0, and the bill read after the day ended.",
        live=True,
    ),
    Spec(
        "claude_usage_billing_data_age_seconds",
        "gauge",
        "s",
        (),
        "Seconds since the Admin API was last read in full, at the time of the scrape. Only with"
        " sources.anthropic_admin enabled and once a read has succeeded.",
        live=True,
    ),
    Spec(
        "claude_usage_analytics_sessions_total",
        "counter",
        "{session}",
        (),
        "Claude Code sessions as the Admin API's Claude Code analytics reports them, counted as its days are read"
        " (a day read again adds what it grew); a user label under labels.user. Only with sources.anthropic_admin"
        " enabled.",
    ),
    Spec(
        "claude_usage_analytics_lines_of_code_total",
        "counter",
        "{line}",
        ("kind",),
        "Lines of code added or removed (kind) with Claude Code, as its analytics reports them, counted as the"
        " sessions are; a user label under labels.user. Only with sources.anthropic_admin enabled.",
    ),
    Spec(
        "claude_usage_analytics_commits_total",
        "counter",
        "{commit}",
        (),
        "Git commits Claude Code made, as its analytics reports them, counted as the sessions are; a user label"
        " under labels.user. Only with sources.anthropic_admin enabled.",
    ),
    Spec(
        "claude_usage_analytics_pull_requests_total",
        "counter",
        "{pull_request}",
        (),
        "Pull requests Claude Code opened, as its analytics reports them, counted as the sessions are; a user"
        " label under labels.user. Only with sources.anthropic_admin enabled.",
    ),
    Spec("claude_usage_exporter_ledger_requests", "gauge", "{request}", (), "Requests held in the ledger."),
    Spec(
        "claude_usage_exporter_source_up",
        "gauge",
        "",
        ("source",),
        "1 when the source's last ingest succeeded, 0 when it failed (e.g. the state dir is not writable).",
        live=True,
    ),
    Spec(
        "claude_usage_exporter_files_watched",
        "gauge",
        "{file}",
        (),
        "Transcript files found under the roots.",
        live=True,
    ),
    Spec(
        "claude_usage_exporter_ingest_lag_seconds",
        "gauge",
        "s",
        (),
        "Age of the oldest change seen but not yet in the ledger; 0 when caught up.",
        live=True,
    ),
    Spec(
        "claude_usage_exporter_otlp_requests_total",
        "counter",
        "{request}",
        ("code",),
        "OTLP requests the receiver answered, by HTTP status code, since the exporter started.",
        live=True,
    ),
    Spec(
        "claude_usage_exporter_otlp_pushes_total",
        "counter",
        "{push}",
        ("outcome",),
        "OTLP pushes of these metrics, by outcome (success or failure), since the exporter started.",
        live=True,
    ),
)
ENGINEERING = {  # ledger counter "eng.<metric>.<kind>" -> metric, the kinds it always shows, stored units per unit
    "lines_of_code": ("claude_usage_lines_of_code_total", ("added", "removed"), 1),
    "commits": ("claude_usage_commits_total", ("",), 1),
    "pull_requests": ("claude_usage_pull_requests_total", ("",), 1),
    "active_time_seconds": ("claude_usage_active_time_seconds_total", ("user", "cli"), 1000),
}
