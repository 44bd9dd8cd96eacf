"""Terminal tables (rich) for the JSON documents the report, explain and pricing commands build."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

_KEYS = {"daily": "date", "weekly": "week", "monthly": "month", "session": "sessionId", "blocks": "startTime"}
_ROWS = {"daily": "daily", "weekly": "weekly", "monthly": "monthly", "session": "sessions", "blocks": "blocks"}


def n(value: int) -> str:
    return f"{value:,}"


def money(value: float) -> str:
    return f"${value:,.2f}"


def _tokens(row: dict[str, Any]) -> tuple[int, int, int, int]:
    if "tokenCounts" in row:  # blocks use ccusage's block field names
        t = row["tokenCounts"]
        return t["inputTokens"], t["outputTokens"], t["cacheCreationInputTokens"], t["cacheReadInputTokens"]
    return row["inputTokens"], row["outputTokens"], row["cacheCreationTokens"], row["cacheReadTokens"]


def print_report(kind: str, data: dict[str, Any], by: str, breakdown: bool) -> None:
    console = Console()
    rows = data[_ROWS[kind]]
    if not rows:
        console.print("No usage in this range.")
        return
    title = {"session": "Session", "blocks": "Block start"}.get(kind, _KEYS[kind].capitalize())
    table = Table(title=f"Claude Code usage — {kind}", show_footer=False)
    for name in (
        title,
        "Models",
        "Input",
        "Output",
        "Cache create",
        "Cache read",
        "Total tokens",
        "Requests",
        "Cost (USD)",
    ):
        table.add_column(name, justify="left" if name in (title, "Models") else "right")
    for row in rows:
        if row.get("isGap"):
            table.add_row(f"[dim]gap until {row['endTime'][:16]}[/dim]", *[""] * 8)
            continue
        i, o, cc, cr = _tokens(row)
        label = row[_KEYS[kind]]
        if kind == "blocks" and row.get("isActive"):
            label += " (active)"
        models = row.get("modelsUsed") or row.get("models") or []
        table.add_row(
            label,
            "\n".join(models),
            n(i),
            n(o),
            n(cc),
            n(cr),
            n(i + o + cc + cr),
            n(row.get("requests", 0)),
            money(row.get("totalCost", row.get("costUSD", 0.0))),
        )
        if breakdown:
            for part in _breakdown(row, by):
                table.add_row(
                    f"  └ {part['name']}",
                    "",
                    n(part["inputTokens"]),
                    n(part["outputTokens"]),
                    n(part["cacheCreationTokens"]),
                    n(part["cacheReadTokens"]),
                    "",
                    "",
                    money(part["cost"]),
                    style="dim",
                )
    totals = data.get("totals")
    if totals:
        i, o, cc, cr = _tokens(totals)
        table.add_section()
        table.add_row(
            "Total",
            "",
            n(i),
            n(o),
            n(cc),
            n(cr),
            n(totals["totalTokens"]),
            n(totals["requests"]),
            money(totals["totalCost"]),
            style="bold",
        )
    console.print(table)
    if totals:
        console.print(category_line(totals))


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


def print_explain(rows: list[dict[str, Any]]) -> None:
    table = Table(title="Requests in this transcript")
    for name in (
        "Line",
        "Time (UTC)",
        "Model",
        "Agent",
        "Input",
        "Output",
        "Cache read",
        "Write 5m",
        "Write 1h",
        "Cost",
        "Interaction",
        "Category",
        "Copies / duplicate of",
    ):
        table.add_column(name, justify="right" if name in ("Input", "Output", "Cost") else "left")
    for r in rows:
        t = r["tokens"]
        cost = "unpriced" if r["cost"] is None else f"${r['cost']:.6f}"
        if r.get("reportedCost") is not None:  # a line's own costUSD, which `auto` reports
            cost += f"\n(line says ${r['reportedCost']:.6f})"
        model = r["model"] + (" [bold](fast)[/bold]" if r.get("speed") == "fast" else "")
        model += f"\n[yellow]switch {r['modelSwitch']}[/yellow]" if r.get("modelSwitch") else ""
        table.add_row(
            str(r["line"]),
            r["timestamp"][:19],
            model,
            r["agent"],
            n(t["input"]),
            n(t["output"]),
            n(t["cache_read"]),
            n(t["cache_write_5m"]),
            n(t["cache_write_1h"]),
            cost,
            r["interaction"],
            r["category"],
            r["duplicate"],
        )
    Console().print(table)


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


def print_pricing(pairs: list[tuple[Any, Any]]) -> None:
    table = Table(title="Prices in use — USD per million tokens (web search per 1,000)")
    for name in ("Model", "Input", "Output", "Cache read", "Write 5m", "Write 1h", "Web search", "Source"):
        table.add_column(name, justify="left" if name in ("Model", "Source") else "right")
    for standard, fast in pairs:
        rows = _price_rows(standard.model, "  ", standard)
        if fast is not None:
            rows += _price_rows("  fast mode", "  fast mode ", fast)
        for label, r, source in rows:
            table.add_row(
                label,
                str(r.input),
                str(r.output),
                str(r.cache_read),
                str(r.cache_write_5m),
                str(r.cache_write_1h),
                str(r.web_search_per_1k),
                source,
            )
    Console().print(table)


def _price_rows(label: str, tier_prefix: str, quote: Any) -> list[tuple[str, Any, str]]:
    rows = [(label, quote.rates, quote.source)]
    if quote.long_context is not None:
        rows.append((f"{tier_prefix}above {quote.long_context_threshold:,} input", quote.long_context, quote.source))
    return rows


def print_budgets(states: list[Any], zone: str) -> None:
    from exporter.reports.periods import iso

    table = Table(title=f"Budgets — windows in {zone}")
    for name in ("Budget", "Window", "Filter", "Spent", "Limit", "Used", "Projected", "Window ends (UTC)", "Status"):
        table.add_column(name, justify="right" if name in ("Spent", "Limit", "Used", "Projected") else "left")
    colour = {"ok": "green", "warning": "yellow", "exceeded": "bold red"}
    for s in states:
        where = ", ".join(f"{k}={v}" for k, v in s.spec.filter) or "-"
        table.add_row(
            s.spec.name,
            s.spec.window,
            where,
            money(s.spend),
            money(s.limit),
            f"{s.spend / s.limit:.0%}",
            money(s.projected),
            iso(s.end_ms)[:16],
            f"[{colour[s.status]}]{s.status}[/]",
        )
    Console().print(table)
