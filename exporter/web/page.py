"""The landing page at `/`: today's and this month's spend, the last 30 days and the budgets as inline SVG
charts, and where the money went, as plain HTML: no script, no outside asset.

Its all-time figures come from the same snapshot as `/metrics`, so the page and the metrics agree. Every
figure carries its exact value in a `data-` attribute, for the tests and for anyone scraping the page.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime

from exporter import __version__
from exporter.reports.budgets import BudgetState

FAMILIES = ("opus", "sonnet", "haiku", "other")  # the chart's stacking order, bottom up; `model_family`'s values
EXPLAIN = "claude-usage-exporter explain TRANSCRIPT"


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
    last_request: datetime | None = None  # in the page's zone
    now: datetime | None = None
    down: tuple[str, ...] = ()  # sources whose last ingest failed
    malformed: int = 0  # lines not counted since the daemon started
    daily: list[tuple[str, dict[str, float]]] = field(default_factory=list)  # (local day, family -> USD), oldest first


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


def _bar(s: BudgetState) -> str:
    """Spend against the limit (a full bar is the limit; past it the bar is clipped and red), with a tick
    where the projection ends."""
    limit = s.limit if s.limit > 0 else 1.0
    spent = min(s.spend / limit, 1.0) * 100
    projected = min(s.projected / limit, 1.0) * 100
    return (
        f'<svg class="meter" viewBox="0 0 100 6" preserveAspectRatio="none" role="img" aria-label="'
        f'{html.escape(s.spec.name)}: {_usd(s.spend)} of {_usd(s.limit)}, projected {_usd(s.projected)}">'
        f'<rect class="track" width="100" height="6"/>'
        f'<rect class="spent {s.status}" width="{spent:.3f}" height="6" data-usd="{s.spend:.6f}"'
        f' data-limit="{s.limit:.6f}"/>'
        f'<rect class="projected" x="{max(projected - 0.6, 0):.3f}" width="0.6" height="6"/></svg>'
    )


def _budgets(states: list[BudgetState]) -> str:
    if not states:
        return ""
    rows = "".join(
        f'<tr class="{s.status}"><td>{html.escape(s.spec.name)}</td><td>{s.spec.window}</td>'
        f'<td class="usd" data-usd="{s.spend:.6f}">{_usd(s.spend)}</td><td class="usd">{_usd(s.limit)}</td>'
        f'<td class="usd">{_usd(s.projected)}</td><td>{s.status}</td></tr>'
        f'<tr class="bar"><td colspan="6">{_bar(s)}</td></tr>'
        for s in states
    )
    head = "<tr><th>budget</th><th>window</th><th>spent</th><th>limit</th><th>projected</th><th>status</th></tr>"
    return f'<section><h2>Budgets</h2><table id="budgets"><thead>{head}</thead><tbody>{rows}</tbody></table></section>'


def _families(daily: list[tuple[str, dict[str, float]]]) -> list[str]:
    seen = {family for _, spend in daily for family in spend}
    return [f for f in FAMILIES if f in seen] + sorted(seen - set(FAMILIES))


def _chart(daily: list[tuple[str, dict[str, float]]]) -> str:
    """Spend per day, stacked by model family, in a 300 × 100 box scaled to the page's width."""
    if not daily:
        return ""
    families = _families(daily)
    tallest = max((sum(spend.values()) for _, spend in daily), default=0.0)
    slot = 300 / len(daily)
    bars = []
    for i, (day, spend) in enumerate(daily):
        y = 100.0
        for family in families:
            value = spend.get(family, 0.0)
            if value <= 0:
                continue
            height = value / tallest * 100
            y -= height
            bars.append(
                f'<rect class="f-{html.escape(family)}" x="{i * slot + slot * 0.1:.2f}" y="{y:.3f}"'
                f' width="{slot * 0.8:.2f}" height="{height:.3f}" data-day="{day}"'
                f' data-family="{html.escape(family)}" data-usd="{value:.6f}">'
                f"<title>{day} {html.escape(family)} {_usd(value)}</title></rect>"
            )
    sums = {f: sum(spend.get(f, 0.0) for _, spend in daily) for f in families}
    legend = "".join(
        f'<li><svg class="swatch" viewBox="0 0 10 10" aria-hidden="true"><rect class="f-{html.escape(f)}"'
        f' width="10" height="10"/></svg>{html.escape(f)} <span class="usd" data-family="{html.escape(f)}"'
        f' data-usd="{sums[f]:.6f}">{_usd(sums[f])}</span></li>'
        for f in families
    )
    first, last = daily[0][0], daily[-1][0]
    summary = f"spend per day, {first} to {last}, tallest day {_usd(tallest)}"
    return (
        f'<section id="daily"><h2>Last {len(daily)} days</h2><figure>'
        f'<svg class="chart" viewBox="0 0 300 100" role="img" aria-label="{summary}">'
        f'<line class="axis" x1="0" y1="100" x2="300" y2="100"/>{"".join(bars)}</svg>'
        f"<figcaption><span>{first}</span><span>tallest day {_usd(tallest)}</span><span>{last}</span></figcaption>"
        f'<ul class="legend">{legend or "<li>no spend in these days</li>"}</ul></figure></section>'
    )


def _ago(then: datetime, now: datetime | None) -> str:
    seconds = max(0, int((now - then).total_seconds())) if now else 0
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = seconds // size
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def _state(data: PageData, ready: bool) -> str:
    """What a person checks first: is it reading, when was the last request, what was not counted."""
    lines = []
    if not ready:
        lines.append('<p class="warn">Still reading transcripts, or the last ingest failed: see /readyz.</p>')
    if data.down:
        names = ", ".join(html.escape(s) for s in data.down)
        lines.append(f'<p class="warn" id="down">Down: {names} (its last ingest failed; see /readyz and the log).</p>')
    if data.last_request is None:
        lines.append('<p id="last-request">No request seen yet.</p>')
    else:
        at = data.last_request
        lines.append(
            f'<p id="last-request" data-ts="{at.timestamp():.3f}">Last request seen '
            f'<time datetime="{at.isoformat()}">{at.strftime("%Y-%m-%d %H:%M:%S %Z")}</time>'
            f" ({_ago(at, data.now)}).</p>"
        )
    if data.malformed:
        lines.append(
            f'<p class="warn" id="not-counted" data-lines="{data.malformed}">{data.malformed:,} line(s) malformed or'
            f" unrecognised since this exporter started, not counted; <code>{EXPLAIN}</code> shows what became of"
            " each line of a transcript.</p>"
        )
    return "\n".join(lines)


_STYLE = """
:root{color-scheme:light dark;--fg:#1f2328;--bg:#fff;--muted:#59636e;--line:#d1d9e0;--track:#e8ecf0;
--opus:#8250df;--sonnet:#0969da;--haiku:#1a7f37;--other:#9a6700;--ok:#1a7f37;--warning:#bf8700;--exceeded:#cf222e}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--bg:#0d1117;--muted:#9198a1;--line:#3d444d;--track:#262c36;
--opus:#ab7df8;--sonnet:#4493f8;--haiku:#3fb950;--other:#d29922;--ok:#3fb950;--warning:#d29922;--exceeded:#f85149}}
body{font-family:system-ui,sans-serif;margin:1rem auto;padding:0 1rem;color:var(--fg);background:var(--bg);
max-width:52rem}
a{color:var(--sonnet)}
.cards{display:flex;gap:1rem;flex-wrap:wrap}
.card{border:1px solid var(--line);border-radius:8px;padding:.75rem 1.25rem;flex:1 1 8rem}
.label{color:var(--muted);font-size:.9rem} .figure{font-size:1.6rem;font-weight:600}
table{border-collapse:collapse;margin-top:.5rem;max-width:100%} td,th{padding:.25rem .6rem;text-align:left}
td:first-child{overflow-wrap:anywhere} td.usd{text-align:right;white-space:nowrap} tr.warning td{color:var(--warning)}
tr.exceeded td{color:var(--exceeded);font-weight:600} tr.bar td{padding-top:0} table#budgets{width:100%}
.warn{color:var(--warning)} footer{margin-top:2rem;color:var(--muted);font-size:.85rem}
figure{margin:0} svg.chart{display:block;width:100%;height:auto;max-height:18rem}
svg.meter{display:block;width:100%;height:.6rem;min-width:8rem}
figcaption{display:flex;justify-content:space-between;gap:.5rem;color:var(--muted);font-size:.85rem}
.legend{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.25rem 1rem}
svg.swatch{width:.8rem;height:.8rem;vertical-align:-.05rem;margin-right:.3rem}
.axis{stroke:var(--line);stroke-width:.5} .track{fill:var(--track)} .projected{fill:var(--muted)}
.spent.ok{fill:var(--ok)} .spent.warning{fill:var(--warning)} .spent.exceeded{fill:var(--exceeded)}
@media (max-width:30rem){table#budgets{font-size:.85rem} table#budgets :is(td,th){padding:.2rem .25rem}
table#budgets tr :nth-child(6){display:none}}
.f-opus{fill:var(--opus)} .f-sonnet{fill:var(--sonnet)} .f-haiku{fill:var(--haiku)} .f-other{fill:var(--other)}
"""


def render_page(data: PageData, ready: bool) -> bytes:
    figures = [("today", "Today", data.today), ("month", "This month", data.month), ("total", "All time", data.total)]
    cards = "".join(
        f'<div class="card"><div class="label">{label}</div>'
        f'<div class="figure" id="{key}" data-usd="{value:.6f}">{_usd(value)}</div></div>'
        for key, label, value in figures
    )
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Claude Code usage</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">
<style>{_STYLE}</style></head><body>
<h1>Claude Code usage</h1>
{_state(data, ready)}
<div class="cards">{cards}</div>
<p><span id="requests">{data.requests:,}</span> requests in all. Days and months in {html.escape(data.zone)};
as of {html.escape(data.as_of)}.</p>
{_chart(data.daily)}
{_budgets(data.budgets)}
{_table("Top models (all time)", data.models, "model")}
{_table("Top categories (all time)", data.categories, "category")}
<footer><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a> · <a href="/readyz">/readyz</a>
· claude-usage-exporter {__version__}</footer>
</body></html>
"""
    return text.encode()
