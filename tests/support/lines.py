"""Builders of Claude Code 2.1 transcript lines for tests, shaped as the CLI writes them.

Each builder returns one complete line, newline included, so a file's content is their concatenation.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from exporter.events import Tokens, UsageEvent

MODEL = "claude-sonnet-4-5-20250929"
SESSION = "52cfe79f-d17c-4e1d-8859-e3e9f638e96c"
CWD = "/home/dev/notes-app"


def assistant_line(
    msg_id: str,
    req_id: str,
    ts: str = "2026-11-25T21:13:52.256Z",
    model: str = MODEL,
    *,
    input: int = 1,
    output: int = 43,
    cache_read: int = 0,
    cache_5m: int = 0,
    cache_1h: int = 0,
    tools: Iterable[str] = (),
    final: bool = True,
    session: str = SESSION,
    agent_id: str | None = None,
    text: str = "I'll read notes.txt first.",
) -> bytes:
    """One content block of a response; `final=False` gives the provisional shape (no stop_reason)."""
    names = list(tools)
    content: list[dict[str, object]] = [
        {"type": "tool_use", "id": f"toolu_{msg_id}_{i}", "name": n, "input": {"file_path": "x"}}
        for i, n in enumerate(names)
    ] or [{"type": "text", "text": text}]
    usage: dict[str, object] = {
        "input_tokens": input,
        "cache_creation_input_tokens": cache_5m + cache_1h,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        "service_tier": "standard",
        "cache_creation": {"ephemeral_1h_input_tokens": cache_1h, "ephemeral_5m_input_tokens": cache_5m},
        "inference_geo": "",
        "iterations": [],
        "speed": "standard",
    }
    record: dict[str, object] = {
        "parentUuid": "87d57dea-eeac-4ca8-b60a-4726eeb2722e",
        "isSidechain": agent_id is not None,
        **({"agentId": agent_id, "attributionAgent": "general-purpose"} if agent_id else {}),
        "message": {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": ("tool_use" if names else "end_turn") if final else None,
            "stop_sequence": None,
            "usage": usage,
            "stop_details": None,
        },
        "requestId": req_id,
        "type": "assistant",
        "uuid": f"uuid-{msg_id}-{len(names)}-{output}",
        "timestamp": ts,
        "userType": "external",
        "entrypoint": "sdk-cli",
        "cwd": CWD,
        "sessionId": session,
        "version": "2.1.197",
        "gitBranch": "HEAD",
    }
    return orjson.dumps(record) + b"\n"


def user_line(
    text: str = "summarise notes.txt",
    ts: str = "2026-11-25T21:13:50.000Z",
    uuid: str = "8acc0000-0000-0000-0000-000000000000",
) -> bytes:
    """A prompt line: no usage, so it ends as `skipped`."""
    record = {
        "parentUuid": None,
        "isSidechain": False,
        "type": "user",
        "message": {"role": "user", "content": text},
        "uuid": uuid,
        "timestamp": ts,
        "userType": "external",
        "cwd": CWD,
        "sessionId": SESSION,
        "version": "2.1.197",
    }
    return orjson.dumps(record) + b"\n"


def snapshot_line(size: int) -> bytes:
    """A `file-history-snapshot` line of about `size` bytes (real ones reach hundreds of MB)."""
    record = {"type": "file-history-snapshot", "messageId": "m", "snapshot": {"blob": "x" * size}}
    return orjson.dumps(record) + b"\n"


# One Claude Code 2.1 assistant line as bytes (no newline), for parser and end-to-end tests.
USAGE = {
    "input_tokens": 10,
    "cache_creation_input_tokens": 9907,
    "cache_read_input_tokens": 22820,
    "output_tokens": 135,
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 9907},
    "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
    "service_tier": "standard",
    "speed": "standard",
}


def line(**changes: object) -> bytes:
    """A Claude Code 2.1 assistant line (shape as the CLI writes it); keys set to None are removed."""
    message: dict[str, object] = {
        "id": "msg_011CeDq",
        "type": "message",
        "role": "assistant",
        "model": "claude-haiku-4-5-20251001",
        "content": [{"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "pytest"}}],
        "stop_reason": "tool_use",
        "usage": dict(USAGE),
    }
    record: dict[str, object] = {
        "parentUuid": "8acc",
        "isSidechain": False,
        "type": "assistant",
        "uuid": "dc35",
        "timestamp": "2026-08-20T10:21:56.612Z",
        "sessionId": "9c42ba52",
        "requestId": "req_011CeDq",
        "version": "2.1.233",
        "cwd": "/home/dev/acme-api",
        "message": message,
    }
    for key, value in changes.items():
        target = message if key in message or key.startswith("m_") else record
        key = key.removeprefix("m_")
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return orjson.dumps(record)


def request(n: int) -> bytes:
    """A good assistant line (no newline) of a request of its own."""
    return line(m_id=f"msg_{n:03d}", requestId=f"req_{n:03d}")


def write(path: Path, *lines: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as f:
        f.write(b"".join(raw + b"\n" for raw in lines))
    return path


BASE = UsageEvent(
    key="",
    request_id=None,
    timestamp=datetime(2026, 1, 1, tzinfo=UTC),
    session_id="s1",
    project="acme",
    model="claude-haiku-4-5-20251001",
    agent="main",
    tokens=Tokens(input=1_000_000),  # $1.00 at Haiku 4.5's $1 per million input tokens
)


def at(when: str, **changes: Any) -> UsageEvent:
    """A $1 request at an ISO time (any offset), with other fields changed as given."""
    moment = datetime.fromisoformat(when).astimezone(UTC)
    return BASE._replace(key=f"msg_{when}_{len(changes)}_{sorted(changes.items())}", timestamp=moment, **changes)


def ms(when: str) -> int:
    """An ISO time as milliseconds since the epoch."""
    return int(datetime.fromisoformat(when).timestamp() * 1000)
