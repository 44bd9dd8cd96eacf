"""The landing page at `/`: today's and this month's spend, and where the money went, as plain HTML.

Its all-time figures come from the same snapshot as `/metrics`, so the page and the metrics agree.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from exporter import __version__
from exporter.reports.budgets import BudgetState


@dataclass(frozen=True)
class PageData:
    today: float = 0.0
    month: float = 0.0
    total: float = 0.0
    requests: int = 0
    models: list[tuple[str, float]] = field(default_factory=list)  # all time, by cost
    categories: list[tuple[str, float]] = field(default_factory=list)
    as_of: str = ""
    zone: str = "UTC"
    budgets: list[BudgetState] = field(default_factory=list)


def _usd(value: float) -> str:
    return f"${value:,.2f}"


def _table(title: str, rows: list[tuple[str, float]], key: str) -> str:
    body = "".join(
        f'<tr><td>{html.escape(name)}</td><td class="usd" data-usd="{value:.6f}">{_usd(value)}</td></tr>'
        for name, value in rows
    )
    empty = '<tr><td colspan="2">no requests yet</td></tr>'
    return (
        f'<section><h2>{title}</h2><table id="{key}"><thead><tr><th>{key}</th><th>cost</th></tr></thead>'
        f"<tbody>{body or empty}</tbody></table></section>"
    )


def _budgets(states: list[BudgetState]) -> str:
    if not states:
        return ""
    rows = "".join(
        f'<tr class="{s.status}"><td>{html.escape(s.spec.name)}</td><td>{s.spec.window}</td>'
        f'<td class="usd" data-usd="{s.spend:.6f}">{_usd(s.spend)}</td><td class="usd">{_usd(s.limit)}</td>'
        f'<td class="usd">{_usd(s.projected)}</td><td>{s.status}</td></tr>'
        for s in states
    )
    head = "<tr><th>budget</th><th>window</th><th>spent</th><th>limit</th><th>projected</th><th>status</th></tr>"
    return f'<section><h2>Budgets</h2><table id="budgets"><thead>{head}</thead><tbody>{rows}</tbody></table></section>'


def render_page(data: PageData, ready: bool) -> bytes:
    figures = [("today", "Today", data.today), ("month", "This month", data.month), ("total", "All time", data.total)]
    cards = "".join(
        f'<div class="card"><div class="label">{label}</div>'
        f'<div class="figure" id="{key}" data-usd="{value:.6f}">{_usd(value)}</div></div>'
        for key, label, value in figures
    )
    state = "" if ready else '<p class="warn">Still reading transcripts, or the last ingest failed: see /readyz.</p>'
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Claude Code usage</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:52rem}}
.cards{{display:flex;gap:1rem;flex-wrap:wrap}}
.card{{border:1px solid #ddd;border-radius:8px;padding:1rem 1.5rem;min-width:10rem}}
.label{{color:#666;font-size:.9rem}} .figure{{font-size:1.8rem;font-weight:600}}
table{{border-collapse:collapse;margin-top:.5rem}} td,th{{padding:.25rem .75rem;text-align:left}}
td.usd{{text-align:right}} tr.warning td{{color:#a60}} tr.exceeded td{{color:#b00;font-weight:600}}
.warn{{color:#a40}} footer{{margin-top:2rem;color:#666;font-size:.85rem}}
</style></head><body>
<h1>Claude Code usage</h1>{state}
<div class="cards">{cards}</div>
<p><span id="requests">{data.requests:,}</span> requests in all. Days and months in {html.escape(data.zone)};
as of {html.escape(data.as_of)}.</p>
{_budgets(data.budgets)}
{_table("Top models (all time)", data.models, "model")}
{_table("Top categories (all time)", data.categories, "category")}
<footer><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a>
· claude-usage-exporter {__version__}</footer>
</body></html>
"""
    return text.encode()
