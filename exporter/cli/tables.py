"""Terminal tables (rich) for the JSON documents the report, explain and pricing commands build.

A date, a model or a number is never cut: when a table is wider than the screen, its least important columns are
left out and prose wraps at spaces (`--wide` keeps every column). Piped output is plain text: no lines, no colour.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

_KEYS = {"daily": "date", "weekly": "week", "monthly": "month", "session": "sessionId", "blocks": "startTime"}
_ROWS = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "session": "sessions", "blocks": "blocks"}
# A prose column is never squeezed below this (or its longest word) to make room for another column.
PROSE_MIN = 20


@dataclass(frozen=True)
class Layout:
    """How wide to draw: `width` None means the terminal's (a pipe: unlimited); `wide` keeps every column."""

    width: int | None = None
    wide: bool = False


@dataclass(frozen=True)
class Col:
    """A column; `rank` 0 is always shown, then higher ranks are left out first when space is short."""

    name: str
    rank: int = 0
    right: bool = False
    prose: bool = False  # free text that may wrap at spaces, as narrow as its longest word


@dataclass
class Grid:
    title: str
    cols: list[Col]
    rows: list[tuple[list[Text], str | None]]  # cells and a row style
    sections: set[int]  # a separating line goes before these row indexes

    def add(self, cells: list[str | Text], style: str | None = None) -> None:
        """A row; a string is rich markup, so text from the data goes in as `Text`."""
        self.rows.append(([Text.from_markup(c) if isinstance(c, str) else c for c in cells], style))


def _lines(text: Text) -> list[str]:
    return text.plain.split("\n")


def _natural(text: Text) -> int:
    return max(cell_len(line) for line in _lines(text))


def _longest_word(text: Text) -> int:
    return max((cell_len(word) for line in _lines(text) for word in line.split(" ")), default=0)


def _overhead(count: int, boxed: bool) -> int:
    # Boxed: a space either side of each cell and a line between and around them; plain: two spaces between.
    return 3 * count + 1 if boxed else 2 * (count - 1)


def fit(grid: Grid, width: int | None, boxed: bool) -> dict[int, int]:
    """The columns shown (by index) and their widths: every rank-0 column, then by rank while they fit."""
    natural, least = [], []
    for i, col in enumerate(grid.cols):
        cells = [cells[i] for cells, _ in grid.rows]
        header = Text(col.name)
        longest = max([_longest_word(header), *(_longest_word(c) for c in cells)])
        full = max([_natural(header), *(_natural(c) for c in cells)])
        if col.prose:
            least.append(min(full, max(longest, PROSE_MIN)))
        else:
            # Only the header may wrap; a cell's lines are kept whole.
            least.append(max([_longest_word(header), *(_natural(c) for c in cells)]))
        natural.append(full)
    if width is None:
        return dict(enumerate(natural))
    order = sorted(range(len(grid.cols)), key=lambda i: (grid.cols[i].rank, i))
    chosen: list[int] = []
    for i in order:
        if grid.cols[i].rank == 0 or sum(least[j] for j in [*chosen, i]) + _overhead(len(chosen) + 1, boxed) <= width:
            chosen.append(i)
    widths = {i: least[i] for i in chosen}
    spare = width - sum(widths.values()) - _overhead(len(chosen), boxed)
    for i in chosen:  # the most important first get their full width back
        grow = max(0, min(spare, natural[i] - widths[i]))
        widths[i] += grow
        spare -= grow
    return dict(sorted(widths.items()))


def console_for(layout: Layout) -> tuple[Console, int | None]:
    """The console to print on and the width to fit; a pipe gets every column unless a width is given."""
    console = Console(highlight=False, emoji=False)
    if layout.wide:
        return console, None
    if layout.width is not None:
        return console, layout.width
    if console.is_terminal or os.environ.get("COLUMNS", "").isdigit():
        return console, console.width
    return console, None


def draw(grid: Grid, layout: Layout, footer: str | None = None) -> None:
    console, width = console_for(layout)
    boxed = console.is_terminal
    widths = fit(grid, width, boxed)
    table = Table(
        title=grid.title,
        box=box.HEAVY_HEAD if boxed else None,
        show_edge=boxed,
        pad_edge=boxed,
        title_justify="center" if boxed else "left",
        header_style="bold" if boxed else "",
        title_style="italic" if boxed else "",
    )
    for i, w in widths.items():
        col = grid.cols[i]
        table.add_column(col.name, justify="right" if col.right else "left", width=w, overflow="fold")
    for n_row, (cells, style) in enumerate(grid.rows):
        if n_row in grid.sections:
            table.add_section()
        table.add_row(*(cells[i] for i in widths), style=style)
    needed = sum(widths.values()) + _overhead(len(widths), boxed)
    # Never cut: when even the essential columns are wider than asked, the lines run longer instead.
    # Both, or a dumb terminal's console stays 80 wide (rich).
    console.width, console.height = max(needed, width or 0, 20), console.height
    if width is None and footer is not None:
        console.width = max(console.width, *(cell_len(line) for line in Text.from_markup(footer).plain.split("\n")))
    if boxed:
        console.print(table)
        if footer is not None:
            console.print(footer)
        return
    # Plain text for a pipe or a file: no colour, and no padding at the ends of lines for a script to trip on.
    plain = Console(file=io.StringIO(), width=console.width, color_system=None, highlight=False, emoji=False)
    plain.print(table)
    if footer is not None:
        plain.print(footer)
    text = plain.file.getvalue()  # type: ignore[attr-defined]
    sys.stdout.write("".join(line.rstrip() + "\n" for line in text.splitlines()))
    sys.stdout.flush()


def n(value: int) -> str:
    return f"{value:,}"


def money(value: float) -> str:
    return f"${value:,.2f}"


def _tokens(row: dict[str, Any]) -> tuple[int, int, int, int]:
    if "tokenCounts" in row:  # blocks use ccusage's block field names
        t = row["tokenCounts"]
        return t["inputTokens"], t["outputTokens"], t["cacheCreationInputTokens"], t["cacheReadInputTokens"]
    return row["inputTokens"], row["outputTokens"], row["cacheCreationTokens"], row["cacheReadTokens"]


def _report_cols(kind: str) -> list[Col]:
    title = {"session": "Session", "blocks": "Block start"}.get(kind, _KEYS[kind].capitalize())
    return [
        Col(title),
        Col("Models", rank=2),
        Col("Input", rank=5, right=True),
        Col("Output", rank=4, right=True),
        Col("Cache create", rank=7, right=True),
        Col("Cache read", rank=6, right=True),
        Col("Total tokens", rank=1, right=True),
        Col("Requests", rank=3, right=True),
        Col("Cost (USD)", right=True),
    ]


def print_report(kind: str, data: dict[str, Any], by: str, breakdown: bool, layout: Layout = Layout()) -> None:
    rows = data[_ROWS[kind]]
    if not rows:
        Console(highlight=False).print("No usage in this range.")
        return
    grid = Grid(f"Claude Code usage — {kind}", _report_cols(kind), [], set())
    for row in rows:
        if row.get("isGap"):
            grid.add([f"[dim]gap until {row['endTime']}[/dim]", *[""] * 8])
            continue
        i, o, cc, cr = _tokens(row)
        label = row[_KEYS[kind]]
        if kind == "blocks" and row.get("isActive"):
            label += " (active)"
        models = row.get("modelsUsed") or row.get("models") or []
        cost = money(row.get("totalCost", row.get("costUSD", 0.0)))
        requests = n(row.get("requests", 0))
        grid.add([Text(label), Text("\n".join(models)), n(i), n(o), n(cc), n(cr), n(i + o + cc + cr), requests, cost])
        if breakdown:
            for part in _breakdown(row, by):
                tokens = [part[k] for k in ("inputTokens", "outputTokens", "cacheCreationTokens", "cacheReadTokens")]
                grid.add([Text(f"  └ {part['name']}"), "", *map(n, tokens), "", "", money(part["cost"])], style="dim")
    totals = data.get("totals")
    if totals:
        i, o, cc, cr = _tokens(totals)
        grid.sections.add(len(grid.rows))
        cells = [n(i), n(o), n(cc), n(cr), n(totals["totalTokens"]), n(totals["requests"]), money(totals["totalCost"])]
        grid.add(["Total", "", *cells], style="bold")
    draw(grid, layout, category_line(totals) if totals else None)


def _breakdown(row: dict[str, Any], by: str) -> list[dict[str, Any]]:
    if by != "model":
        return list(row.get("breakdowns", []))
    return [{"name": m["modelName"], **m} for m in row.get("modelBreakdowns", [])]


def category_line(totals: dict[str, Any]) -> str:
    """Where the money went, by interaction category, with shares."""
    total = totals["totalCost"] or 1.0
    parts = [f"{c} {money(v)} ({v / total:.0%})" for c, v in totals["costByCategory"].items()]
    line = "By category: " + " · ".join(parts)
    fast = totals.get("costBySpeed", {}).get("fast", 0.0)
    if fast:
        line += f"\nFast mode: {money(fast)} ({fast / total:.0%})"
    if totals.get("unpricedTokens"):
        line += f"\n[yellow]{n(totals['unpricedTokens'])} tokens of unknown models or speeds are not priced[/yellow]"
    return line


EXPLAIN_COLS = [
    Col("Line", rank=2, right=True),
    Col("Time (UTC)", prose=True),
    Col("Model", prose=True),
    Col("Agent", rank=10),
    Col("Input", rank=5, right=True),
    Col("Output", rank=4, right=True),
    Col("Cache read", rank=7, right=True),
    Col("Write 5m", rank=9, right=True),
    Col("Write 1h", rank=8, right=True),
    Col("Cost", right=True, prose=True),
    Col("Interaction", rank=6),
    Col("Category", rank=3),
    Col("Copies / duplicate of", rank=1, prose=True),
]


def print_explain(rows: list[dict[str, Any]], layout: Layout = Layout()) -> None:
    grid = Grid("Requests in this transcript", EXPLAIN_COLS, [], set())
    for r in rows:
        t = r["tokens"]
        cost = "unpriced" if r["cost"] is None else f"${r['cost']:.6f}"
        if r.get("reportedCost") is not None:  # a line's own costUSD, which `auto` reports
            cost += f"\n(line says ${r['reportedCost']:.6f})"
        model = escape(r["model"]) + (" [bold](fast)[/bold]" if r.get("speed") == "fast" else "")
        model += f"\n[yellow]switch {r['modelSwitch']}[/yellow]" if r.get("modelSwitch") else ""
        tokens = [t[k] for k in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")]
        # A space, not the ISO `T`, so that a narrow column wraps between the date and the time.
        when = r["timestamp"][:19].replace("T", " ")
        cells = [str(r["line"]), when, model, Text(r["agent"]), *map(n, tokens), cost]
        grid.add([*cells, Text(r["interaction"]), Text(r["category"]), Text(r["duplicate"])])
    draw(grid, layout)


def quote_json(quote: Any, fast: Any = None) -> dict[str, Any]:
    """One model's prices; `fast` holds its fast-mode prices, null where fast mode has no known price."""

    def rates(r: Any) -> dict[str, str]:
        return {
            k: str(getattr(r, k))
            for k in ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "web_search_per_1k")
        }

    def tiers(q: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"source": q.source, "rates": rates(q.rates)}
        if q.long_context is not None:
            out["longContext"] = {"aboveInputTokens": q.long_context_threshold, **rates(q.long_context)}
        return out

    return {"model": quote.model, "name": quote.name, **tiers(quote), "fast": None if fast is None else tiers(fast)}


PRICING_COLS = [
    Col("Model"),
    Col("Input", rank=1, right=True),
    Col("Output", rank=2, right=True),
    Col("Cache read", rank=3, right=True),
    Col("Write 5m", rank=4, right=True),
    Col("Write 1h", rank=5, right=True),
    Col("Web search", rank=7, right=True),
    Col("Source", rank=6, prose=True),
]


def print_pricing(pairs: list[tuple[Any, Any]], layout: Layout = Layout()) -> None:
    grid = Grid("Prices in use — USD per million tokens (web search per 1,000)", PRICING_COLS, [], set())
    for standard, fast in pairs:
        rows = _price_rows(standard.model, "  ", standard)
        if fast is not None:
            rows += _price_rows("  fast mode", "  fast mode ", fast)
        for label, r, source in rows:
            prices = [r.input, r.output, r.cache_read, r.cache_write_5m, r.cache_write_1h, r.web_search_per_1k]
            grid.add([Text(label), *map(str, prices), Text(source)])
    draw(grid, layout)


def _price_rows(label: str, tier_prefix: str, quote: Any) -> list[tuple[str, Any, str]]:
    rows = [(label, quote.rates, quote.source)]
    if quote.long_context is not None:
        rows.append((f"{tier_prefix}above {quote.long_context_threshold:,} input", quote.long_context, quote.source))
    return rows


BUDGET_COLS = [
    Col("Budget"),
    Col("Window", rank=4),
    Col("Filter", rank=6, prose=True),
    Col("Spent", right=True),
    Col("Limit", rank=1, right=True),
    Col("Used", rank=2, right=True),
    Col("Projected", rank=5, right=True),
    Col("Window ends (UTC)", rank=7, prose=True),
    Col("Status", rank=3),
]


def print_budgets(states: list[Any], zone: str, layout: Layout = Layout()) -> None:
    from exporter.reports.periods import iso

    grid = Grid(f"Budgets — windows in {zone}", BUDGET_COLS, [], set())
    colour = {"ok": "green", "warning": "yellow", "exceeded": "bold red"}
    for s in states:
        where = ", ".join(f"{k}={v}" for k, v in s.spec.filter) or "-"
        ends = iso(s.end_ms)[:16].replace("T", " ")
        used = f"{s.spend / s.limit:.0%}"
        cells = [money(s.spend), money(s.limit), used, money(s.projected), ends, f"[{colour[s.status]}]{s.status}[/]"]
        grid.add([Text(s.spec.name), s.spec.window, Text(where), *cells])
    draw(grid, layout)


RECONCILE_COLS = [
    Col("UTC day / model"),
    Col("Ours", right=True),
    Col("Billed", right=True),
    Col("Difference", right=True),
    Col("Why", prose=True),
    Col("Drift", rank=1, right=True),
    Col("Claude Code est.", rank=2, right=True),
    Col("Our tokens", rank=3, right=True),
    Col("Billed tokens", rank=4, right=True),
]
WHY = {
    "match": "match",
    "not_final": "not final",
    "not_read": "no bill",
    "other_clients": "other clients",
    "not_billed_per_token": "not billed per token",
    "subscription": "subscription",
    "prices": "prices",
    "unpriced": "unpriced",
    "no_model": "no model",
}


def to_cents(usd: str | None, sign: bool = False) -> str:
    """An exact USD amount (a decimal string) to the cent, half to even; `-` where there is none."""
    if usd is None:
        return "-"
    from decimal import ROUND_HALF_EVEN, Decimal

    amount = Decimal(usd).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    text = f"${abs(amount):,}"
    return ("-" if amount < 0 else "+" if sign and amount > 0 else "") + text


def _reconcile_cells(label: str | Text, row: dict[str, Any]) -> list[str | Text]:
    billed, estimate = row["billed"], row.get("claudeCode", {})
    return [
        label,
        to_cents(row["ours"]["costUSD"]),
        to_cents(billed and billed["costUSD"]),
        to_cents(row["differenceUSD"], sign=True),
        ", ".join(WHY[code] for code in row.get("explanations", ())),
        "-" if row["drift"] is None else f"{float(row['drift']):+.1%}",
        "" if estimate == {} else to_cents(estimate and estimate["estimatedCostUSD"]),
        n(sum(row["ours"]["tokens"].values())),
        n(sum(billed["tokens"].values())) if billed else "-",
    ]


def print_reconcile(data: dict[str, Any], layout: Layout = Layout()) -> None:
    """Our estimate beside the bill: each UTC day's total (with Claude Code analytics' estimate), then its models."""
    lines = [data["note"]]
    if data["billing"]["hint"]:
        lines.append(f"[yellow]{escape(data['billing']['hint'])}[/yellow]")
    if not data["days"]:
        empty = f"No usage and no bill from {data['since']} to {data['until']} (UTC days)."
        Console(highlight=False).print("\n".join([empty, *lines]))
        return
    grid = Grid(f"Our estimate beside the bill — {data['since']} to {data['until']}", RECONCILE_COLS, [], set())
    for day in data["days"]:
        grid.sections.add(len(grid.rows))
        grid.add(_reconcile_cells(day["date"], day), style="bold")
        for row in day["models"]:
            grid.add(_reconcile_cells(Text(f"  └ {row['model']}"), row))
    totals = data["totals"]["readDays"]
    if totals["billed"] is not None:
        grid.sections.add(len(grid.rows))
        grid.add(_reconcile_cells("Days with a bill", totals), style="bold")
    lines += [f"{WHY[code]}: {escape(text)}" for code, text in data["explanations"].items()]
    draw(grid, layout, "\n".join(lines))
