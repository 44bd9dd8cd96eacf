"""A fake Anthropic Admin API on loopback, written from the documented schemas (see sources/anthropic_admin.py).

Tests load buckets and records into it, script faults (a status, headers and a body answered before the real
answer), and read back every request it saw. Pagination follows the documents: `limit` buckets (or records) per
page, `has_more`, and an opaque `next_page` token.
"""

from __future__ import annotations

import base64
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from exporter.sources.anthropic_admin import API_VERSION, CLAUDE_CODE, COST, MESSAGES

Json = dict[str, Any]
KEY = "sk-ant-admin01-fake-key-for-loopback-only-0123456789"


@dataclass
class Fault:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"type": "error", "error": {"type": "api_error", "message": "fake"}}'
    cut: bool = False  # promise more bytes than are sent, then close: the client reads an incomplete body


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    key_ok: bool
    version: str | None


@dataclass
class AdminState:
    messages: list[Json] = field(default_factory=list)  # buckets, in time order
    costs: list[Json] = field(default_factory=list)
    claude_code: dict[str, list[Json]] = field(default_factory=dict)  # records by day (YYYY-MM-DD)
    faults: list[Fault] = field(default_factory=list)  # answered first, one per request
    seen: list[Seen] = field(default_factory=list)
    page_size: int | None = None  # overrides the client's limit, to force pagination
    lock: threading.Lock = field(default_factory=threading.Lock)


def key_file(folder: Path) -> Path:
    """An admin key file in `folder`, as an operator writes one (the key, then a newline)."""
    path = folder / "admin.key"
    path.write_text(KEY + "\n", encoding="utf-8")
    return path


def message_bucket(start: datetime, width: timedelta, *results: Json) -> Json:
    return {"starting_at": _ts(start), "ending_at": _ts(start + width), "results": list(results)}


def message_result(
    uncached: int,
    output: int,
    *,
    write_5m: int = 0,
    write_1h: int = 0,
    read: int = 0,
    searches: int = 0,
    model: str | None = "claude-sonnet-4-5-20250929",
    workspace_id: str | None = None,
    api_key_id: str | None = "apikey_01",
) -> Json:
    return {
        "uncached_input_tokens": uncached,
        "cache_creation": {"ephemeral_5m_input_tokens": write_5m, "ephemeral_1h_input_tokens": write_1h},
        "cache_read_input_tokens": read,
        "output_tokens": output,
        "server_tool_use": {"web_search_requests": searches},
        "api_key_id": api_key_id,
        "workspace_id": workspace_id,
        "model": model,
        "service_tier": "standard",
        "context_window": "0-200k",
    }


def cost_result(
    amount: str, *, model: str | None = "claude-sonnet-4-5-20250929", token_type: str = "output_tokens"
) -> Json:
    return {
        "amount": amount,
        "currency": "USD",
        "description": f"{model} usage - {token_type}",
        "cost_type": "tokens",
        "model": model,
        "token_type": token_type,
        "service_tier": "standard",
        "context_window": "0-200k",
        "workspace_id": None,
    }


def claude_code_record(day: date, email: str, *, sessions: int = 3, cents: float = 150.5) -> Json:
    return {
        "date": day.isoformat(),
        "actor": {"type": "user_actor", "email_address": email},
        "organization_id": "org_fake",
        "customer_type": "api",
        "terminal_type": "vscode",
        "core_metrics": {
            "num_sessions": sessions,
            "lines_of_code": {"added": 120, "removed": 30},
            "commits_by_claude_code": 4,
            "pull_requests_by_claude_code": 1,
        },
        "tool_actions": {"edit_tool": {"accepted": 10, "rejected": 1}},
        "model_breakdown": [
            {
                "model": "claude-sonnet-4-5-20250929",
                "tokens": {"input": 1000, "output": 2000, "cache_read": 30000, "cache_creation": 4000},
                "estimated_cost": {"currency": "USD", "amount": cents},
            }
        ],
    }


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _token(offset: int) -> str:
    return "page_" + base64.urlsafe_b64encode(str(offset).encode()).decode()


def _offset(token: str) -> int:
    return int(base64.urlsafe_b64decode(token.removeprefix("page_")).decode())


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        with state.lock:
            state.seen.append(
                Seen(url.path, query, self.headers.get("x-api-key") == KEY, self.headers.get("anthropic-version"))
            )
            fault = state.faults.pop(0) if state.faults else None
        if fault is not None:
            return self._answer(fault.status, fault.body, fault.headers, cut=fault.cut)
        if self.headers.get("x-api-key") != KEY:
            error = {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}
            return self._answer(401, json.dumps(error).encode())
        if self.headers.get("anthropic-version") != API_VERSION:
            return self._answer(400, b'{"type": "error", "error": {"type": "invalid_request_error"}}')
        with state.lock:
            if url.path == MESSAGES:
                items, default = self._window(state.messages, query), 7
            elif url.path == COST:
                items, default = self._window(state.costs, query), 7
            elif url.path == CLAUDE_CODE:
                items, default = list(state.claude_code.get(query.get("starting_at", [""])[0], [])), 20
            else:
                return self._answer(404, b'{"type": "error", "error": {"type": "not_found_error"}}')
            size = state.page_size or int(query.get("limit", [str(default)])[0])
        start = _offset(query["page"][0]) if "page" in query else 0
        more = start + size < len(items)
        page = {
            "data": items[start : start + size],
            "has_more": more,
            "next_page": _token(start + size) if more else None,
        }
        self._answer(200, json.dumps(page).encode())

    @staticmethod
    def _window(buckets: list[Json], query: dict[str, list[str]]) -> list[Json]:
        """The buckets that start on or after starting_at and end by ending_at, as the documents say."""
        start = query.get("starting_at", [""])[0]
        end = query.get("ending_at", ["9999"])[0]
        return [
            b
            for b in buckets
            if not isinstance(b, dict) or (start <= b.get("starting_at", start) and b.get("ending_at", end) <= end)
        ]

    def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None, cut: bool = False) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body) + (100 if cut else 0)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: AdminState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@contextmanager
def fake_admin() -> Iterator[tuple[str, AdminState]]:
    """A running fake on 127.0.0.1: its base URL and its state; shut down and closed on leaving."""
    state = AdminState()
    server = _Server(state)
    # a short poll so shutdown() returns at once; the standard 0.5 s would be most of a test's time
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="fake-admin", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
