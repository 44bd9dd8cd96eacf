"""`explain PATH`: each request of one transcript, its merged tokens, speed, cost, classification, and
whether it is a copy of a request first seen elsewhere (a fork or a side-question replay).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exporter.events import Agent, Enrich, Request, UsageEvent, merge_all
from exporter.ledger.store import Ledger
from exporter.reports.periods import iso
from exporter.sources.files import read_lines
from exporter.sources.transcripts import parse_line, split_merged


def file_requests(path: Path) -> list[tuple[int, Request]]:
    """(first line number, merged request) for each request of the file, in order of appearance."""
    first_line: dict[str, int] = {}
    merged: dict[str, Request] = {}
    number = 0
    for lines, _, too_long in read_lines(str(path), 0):
        number += too_long
        for line in lines.splitlines():
            number += 1
            events = [e for e in map(parse_line, split_merged(line)) if isinstance(e, UsageEvent)]
            for event in events:
                first_line.setdefault(event.key, number)
            merge_all(map(Request.from_event, events), merged)
    return [(first_line[key], request) for key, request in merged.items()]


def explain_file(path: Path, ledger: Ledger, enrich: Enrich) -> list[dict[str, Any]]:
    found = file_requests(path)
    known = ledger.existing(r.key for _, r in found)
    previous_family: dict[str, str] = {}
    rows = []
    for line, here in found:
        request = enrich(here)
        first = known.get(here.key)
        rows.append(
            {
                "line": line,
                "key": here.key,
                "requestId": here.request_id,
                "timestamp": iso(here.ts),
                "model": here.model,
                "speed": here.speed,  # "fast": priced at fast mode's rates, or unpriced where they are unknown
                "agent": here.agent,
                "tokens": here.tokens._asdict(),
                "webSearchRequests": here.web_search,
                "tools": sorted(here.tools),
                "cost": None if request.cost is None else request.cost / 1e9,  # from tokens
                "reportedCost": None if here.reported_cost is None else here.reported_cost / 1e9,  # costUSD
                "interaction": request.interaction,
                "category": request.category,
                "duplicate": _duplicate(here, first),
                "modelSwitch": _switch(here, previous_family),
            }
        )
    return rows


def _duplicate(here: Request, first: Request | None) -> str:
    copies = f"{here.copies} line{'s' if here.copies > 1 else ''}"
    if first is None or (first.session_id == here.session_id and first.ts >= here.ts):
        return copies
    kind = "fork or replay" if first.session_id != here.session_id else "earlier copy"
    return f"{copies}; {kind} of a request first seen {iso(first.ts)} in session {first.session_id}"


def _switch(r: Request, previous: dict[str, str]) -> str | None:
    """A main-thread request whose model family differs from the session's previous one."""
    if r.agent != Agent.MAIN:
        return None
    before = previous.get(r.session_id)
    previous[r.session_id] = r.model_family
    return f"{before}→{r.model_family}" if before and before != r.model_family else None
