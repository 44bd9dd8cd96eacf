"""Prints docs/metrics.md from the metric contract, so the page cannot drift from the code.

    python scripts/docs_metrics.py > docs/metrics.md

tests/test_docs.py fails when the committed page differs from what this prints.
"""

from __future__ import annotations

import sys

from exporter.metrics.contract import CONTRACT, Spec

PREAMBLE = """\
# Metrics

`serve` exposes these metrics on `/metrics` (see [Deploy](deploy.md#serve-the-prometheus-endpoint)).
`claude-usage-exporter metrics` prints the same contract from the code (`--json` too), and this page is
generated from it: after changing the contract, run `python scripts/docs_metrics.py > docs/metrics.md`
(a test fails when the page differs). Counters are exposed with their `_total` suffix; `process_*`
metrics come as well.

| metric | type | labels | help |
|---|---|---|---|
"""

TAIL = """
OpenTelemetry has no asynchronous histogram, so the three histograms are rendered from durable bucket
counts by a prometheus_client collector beside the OpenTelemetry reader. Buckets: context 1 k … 1 M
tokens; requests per prompt 1, 2, 3, 5, 8, 13, 21, 34, 55, 89; cost per prompt $0.01 … $50.

A *prompt* is a user line with typed content (not a tool result, not a subagent's task, not a local
command's output). Its requests are the session's requests, subagents' included, from it until the
next prompt. It is observed in the two prompt histograms once it is over: when the next prompt comes,
or after 30 minutes without a request in its session; a prompt that caused no request (e.g. `/model`)
is counted in `claude_usage_prompts_total` only. Prompt text is never read into the ledger: only the
line's id, time, session and project.

## Durable counters

Every counter is an all-time total kept in the ledger, restored at start: restarts, `kill -9`, and
Claude Code deleting transcripts after 30 days never make one go down. A later copy of a request (a
fork, a replay, a final usage after a provisional one) only adds what it brought beyond the stored
request, to the series the request is already counted in (if the merge changes its labels, `report`
follows the merge; the counters do not move a request between series). A price data change re-prices
the ledger (reports follow it); the cost counter adds increases and keeps what it counted.

The two counters marked "since the exporter started" (`claude_usage_exporter_otlp_requests_total`,
`claude_usage_exporter_otlp_pushes_total`) are the exception: they count what this process answered or
sent.

Some metrics appear only when there is something to show: the `claude_usage_budget_*` gauges with
budgets configured, the block's start and end during a 5-hour block, the `claude_usage_plan_*` gauges
once the status line has recorded plan usage, and Claude Code's engineering counters (lines of code,
commits, pull requests, active time) and the OTLP counters with the receiver or push on.

## Labels

`project` is the last folder of the session's working directory (`labels.project: name`), a
12-hex-digit SHA-256 prefix (`hash`), or left out (`off`). At most `labels.max_projects` (100)
projects, `labels.max_models` (50) models and `labels.max_tools` (100) tools get their own series, in
the order first seen; later ones are `other`, so a series never changes label set. No session ids,
prompts, paths or e-mail addresses. In team mode, `labels.user` can add a `user` label (see
[Team mode](team-mode.md)), to the usage metrics and to the `claude_usage_analytics_*` counters.

How each request is found and de-duplicated before it is counted, and how it gets its `interaction` and
`category`: [How requests are counted](reports.md#how-requests-are-counted) and
[Classification](reports.md#classification).
"""


def row(spec: Spec) -> str:
    labels = ", ".join(spec.labels) or "–"
    return f"| `{spec.name}` | {spec.kind} | {labels} | {spec.help} |\n"


def page() -> str:
    return PREAMBLE + "".join(row(spec) for spec in CONTRACT) + TAIL


if __name__ == "__main__":
    sys.stdout.write(page())
