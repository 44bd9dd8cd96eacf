"""A fake Anthropic Messages API on loopback that drives the real Claude Code CLI through scripted tool loops.

Usage numbers are a seeded function of the conversation's position; every exchange is logged for tests to compare.
"""

from __future__ import annotations

import http.server
import itertools
import json
import random
import re
import secrets
import string
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SUBAGENT_MARKER = "use a subagent"  # a prompt holding this makes the main thread start a subagent first
TARGET = "notes.txt"  # the file in the working directory that the script reads and edits
AGENT_TOOLS = ("Agent", "Task")  # the subagent tool's name: Agent in 2.1.x, Task before
FINAL_TEXT = "Done. I read {target} and appended a line to it."
BACKGROUND_TEXT = "commit this"
BACKGROUND_PROMPTS = ("[SUGGESTION MODE:",)  # how background calls that carry the main thread's tools begin
MAX_STEPS = 6  # tool calls after one prompt before the script gives up and answers text (no endless loops)

# The dated ids the real API answers with for the aliases Claude Code sends.
DATED = {
    "claude-sonnet-4-5": "claude-sonnet-4-5-20250929",
    "claude-haiku-4-5": "claude-haiku-4-5-20251001",
    "claude-opus-4-5": "claude-opus-4-5-20251101",
    "claude-opus-4-1": "claude-opus-4-1-20250805",
    "claude-sonnet-4": "claude-sonnet-4-20250514",
    "claude-opus-4": "claude-opus-4-20250514",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
Json = dict[str, Any]


@dataclass
class Exchange:
    """One request the fake answered, as tests compare it with what Claude Code recorded."""

    seq: int
    method: str
    path: str
    kind: str  # main | subagent | background | error | other (anything but POST /v1/messages)
    status: int
    model: str | None = None  # as requested
    response_model: str | None = None
    stream: bool | None = None
    request_id: str | None = None
    message_id: str | None = None
    usage: Json | None = None
    stop_reason: str | None = None
    tool_uses: list[str] = field(default_factory=list)  # names of the tools the answer calls
    session_id: str | None = None  # the X-Claude-Code-Session-Id header
    user_agent: str | None = None
    beta: str | None = None  # the anthropic-beta header
    request: Json | None = None  # the whole request body, when the server keeps bodies


@dataclass
class Reply:
    """What the script answers: content blocks, stop reason and usage."""

    content: list[Json]
    stop_reason: str
    usage: Json


def _ident(prefix: str) -> str:
    alphabet = string.ascii_letters + string.digits
    return prefix + "".join(secrets.choice(alphabet) for _ in range(22))


def _text(content: Any) -> str:
    """The text of a message's content (a string or a list of blocks), tool results included."""
    if isinstance(content, str):
        return content
    parts = []
    for block in content if isinstance(content, list) else []:
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_text(block.get("content", "")))
    return "\n".join(parts)


def _system(body: Json) -> str:
    system = body.get("system") or ""
    return system if isinstance(system, str) else "\n".join(b.get("text", "") for b in system)


def _tool_names(body: Json) -> list[str]:
    return [t.get("name", "") for t in body.get("tools") or []]


def _is_prompt(message: Json) -> bool:
    """A user message the person typed, as opposed to one carrying tool results."""
    content = message.get("content")
    if message.get("role") != "user":
        return False
    return isinstance(content, str) or not any(b.get("type") == "tool_result" for b in content or [])


def _since_prompt(messages: list[Json]) -> tuple[str, list[Json]]:
    """The last prompt's own text (system reminders left out) and the messages after it."""
    start = max((i for i, m in enumerate(messages) if _is_prompt(m)), default=0)
    content = messages[start].get("content", "") if messages else ""
    blocks = [content] if isinstance(content, str) else [b.get("text", "") for b in content if b.get("type") == "text"]
    said = [b for b in blocks if not b.lstrip().startswith("<system-reminder>")]
    return "\n".join(said), messages[start + 1 :]


def _tools_called(messages: list[Json]) -> list[str]:
    return [
        block["name"]
        for m in messages
        if m.get("role") == "assistant" and isinstance(m.get("content"), list)
        for block in m["content"]
        if block.get("type") == "tool_use"
    ]


def _last_read(messages: list[Json]) -> str | None:
    """The last line of the file as the last tool result shows it (Read numbers lines as `N→text` or `N\\ttext`)."""
    for message in reversed(messages):
        if message.get("role") == "user" and not _is_prompt(message):
            lines = re.findall(r"^\s*\d+(?:\t|→)(.*)$", _text(message.get("content")), re.MULTILINE)
            lines = [line for line in lines if line.strip()]
            return lines[-1] if lines else None
    return None


def classify(body: Json) -> str:
    """main, subagent or background, told apart by what Claude Code sends with each.

    A subagent's system prompt is marked (billing header `cc_is_subagent=true`, "You are an agent for
    Claude Code"). Background calls: a session title comes without tools; a prompt suggestion forks the
    main conversation, its tools included, and ends with a "[SUGGESTION MODE: …]" prompt.
    """
    system = _system(body)
    if "cc_is_subagent=true" in system or "You are an agent for Claude Code" in system:
        return "subagent"
    prompt, _ = _since_prompt(body.get("messages") or [])
    if "Read" not in _tool_names(body) or prompt.lstrip().startswith(BACKGROUND_PROMPTS):
        return "background"
    return "main"


class Usage:
    """A simulated prompt cache: a thread's first request writes its prefix, later ones read it and write the growth.

    Numbers depend only on the seed, the kind and the request's position in its conversation, so tests can
    recompute them. Main thread: the prefix is written with a 1 h TTL, the growth with 5 m; subagents write 5 m.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def _rng(self, *key: object) -> random.Random:
        return random.Random("/".join(map(str, (self.seed, *key))))

    def for_turn(self, kind: str, turn: int) -> Json:
        prefix = self._rng(kind, "prefix").randint(18_000, 29_000)
        growth = [self._rng(kind, "growth", t).randint(900, 2600) for t in range(turn + 1)]
        own = self._rng(kind, "turn", turn)
        if kind == "background":
            written_5m, written_1h, read = own.randint(300, 900), 0, prefix
            uncached = own.randint(80, 1500)
        else:
            read = 0 if turn == 0 else prefix + sum(growth[:turn])
            written_1h = prefix if turn == 0 and kind == "main" else 0
            written_5m = growth[turn] + (prefix if turn == 0 and kind != "main" else 0)
            uncached = own.randint(1, 3)
        return {
            "input_tokens": uncached,
            "cache_creation_input_tokens": written_5m + written_1h,
            "cache_read_input_tokens": read,
            "cache_creation": {"ephemeral_5m_input_tokens": written_5m, "ephemeral_1h_input_tokens": written_1h},
            "output_tokens": own.randint(25, 180),
            "service_tier": "standard",
        }


def _tool_use(name: str, tool_input: Json) -> Json:
    return {"type": "tool_use", "id": _ident("toolu_01"), "name": name, "input": tool_input}


def _thinking() -> Json:
    thought = "Let me work through this step by step."
    return {"type": "thinking", "thinking": thought, "signature": secrets.token_hex(24)}


class Script:
    """Decides each answer from the request alone, so --resume and --fork-session conversations work too."""

    def __init__(self, seed: int, target: str = TARGET) -> None:
        self.usage = Usage(seed)
        self.target = target
        self.edits = itertools.count(1)

    def reply(self, kind: str, body: Json) -> Reply:
        messages = body.get("messages") or []
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        blocks = self._main(body) if kind == "main" else self._subagent(body) if kind == "subagent" else []
        if not blocks or blocks[-1]["type"] != "tool_use":
            blocks.append({"type": "text", "text": self._final(kind, body)})
        thinks = (body.get("thinking") or {}).get("type") in ("enabled", "adaptive")
        content = [_thinking(), *blocks] if thinks else blocks
        stop = "tool_use" if content[-1]["type"] == "tool_use" else "end_turn"
        return Reply(content, stop, self.usage.for_turn(kind, turn))

    def _final(self, kind: str, body: Json) -> str:
        schema = ((body.get("output_config") or {}).get("format") or {}).get("schema")
        if schema:  # structured output, e.g. the session title's {"title": …}
            return json.dumps({name: f"Fake {name}" for name in schema.get("required", [])})
        if kind == "main":
            return FINAL_TEXT.format(target=self.target)
        return "The file's first line is shown above." if kind == "subagent" else BACKGROUND_TEXT

    def _path(self, body: Json) -> str:
        # The main thread's system prompt says "Primary working directory: …", a subagent's "Working directory: …".
        found = re.search(r"^(?: - Primary w|W)orking directory: (.+)$", _system(body), re.MULTILINE)
        folder = found[1].strip() if found else "."
        return f"{folder}/{self.target}"

    def _main(self, body: Json) -> list[Json]:
        prompt, after = _since_prompt(body.get("messages") or [])
        called = _tools_called(after)
        path = self._path(body)
        agent = next((name for name in AGENT_TOOLS if name in _tool_names(body)), None)
        if len(called) >= MAX_STEPS:
            return []
        if agent and SUBAGENT_MARKER in prompt.lower() and agent not in called:
            task = {
                "description": "Inspect notes file",
                "prompt": f"Read {path} and report its first line.",
                "subagent_type": "general-purpose",
            }
            return [{"type": "text", "text": "I'll delegate a quick look to a subagent."}, _tool_use(agent, task)]
        if "Read" not in called:
            return [{"type": "text", "text": f"Let me read {self.target}."}, _tool_use("Read", {"file_path": path})]
        last = _last_read(after)
        if "Edit" not in called and last is not None:
            added = f"{last}\nappended by the fake model, edit {next(self.edits)} ({_ident('')[:8]})"
            edit = {"file_path": path, "old_string": last, "new_string": added}
            return [_tool_use("Edit", edit)]
        return []

    def _subagent(self, body: Json) -> list[Json]:
        _, after = _since_prompt(body.get("messages") or [])
        if "Read" in _tools_called(after):
            return []
        return [_tool_use("Read", {"file_path": self._path(body)})]


def _sse(event: str, data: Json) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def stream_events(message: Json) -> list[bytes]:
    """The SSE events of a streamed message: blocks in deltas, the final usage in message_delta."""
    usage = message["usage"]
    start_usage = {**usage, "output_tokens": 1}
    opening_message = {**message, "content": [], "stop_reason": None, "usage": start_usage}
    events = [_sse("message_start", {"type": "message_start", "message": opening_message})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        opening: Json
        if kind == "text":
            opening, deltas = {"type": "text", "text": ""}, [{"type": "text_delta", "text": block["text"]}]
        elif kind == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        else:
            opening = {**block, "input": {}}
            raw = json.dumps(block["input"])
            half = len(raw) // 2
            deltas = [{"type": "input_json_delta", "partial_json": part} for part in (raw[:half], raw[half:])]
        events.append(
            _sse("content_block_start", {"type": "content_block_start", "index": index, "content_block": opening})
        )
        for delta in deltas:
            events.append(_sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    final = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    events.append(_sse("message_delta", {"type": "message_delta", "delta": final, "usage": usage}))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


class FakeApi:
    """The server: `FakeApi(seed=…).start()`, then point ANTHROPIC_BASE_URL at `.url`; `.log` holds every exchange.

    `fail_with` (an HTTP status) answers every Messages request with that error instead; `keep_bodies`
    keeps each request body in the log (large: ~100 kB a request), for finding out what the CLI sends.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 1,
        target: str = TARGET,
        fail_with: int | None = None,
        keep_bodies: bool = False,
    ) -> None:
        self.script = Script(seed, target)
        self.fail_with = fail_with
        self.keep_bodies = keep_bodies
        self.log: list[Exchange] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeApi:
        # A short poll interval: stop() waits for the loop to notice the shutdown.
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeApi:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def record(self, exchange: Exchange) -> None:
        with self._lock:
            exchange.seq = len(self.log) + 1
            self.log.append(exchange)

    def entries(self) -> list[Json]:
        with self._lock:
            return [asdict(e) for e in self.log]

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(self.entries(), indent=1) + "\n")


def _handler(api: FakeApi) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real API

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the exchange log says more

        def do_HEAD(self) -> None:
            # Claude Code probes `HEAD /` on the base URL before its first request.
            self._empty(200)

        def do_GET(self) -> None:
            self._empty(404)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if not self.path.startswith("/v1/messages") or self.path.startswith("/v1/messages/"):
                self._empty(404)
                return
            body = json.loads(raw)
            exchange = Exchange(
                seq=0,
                method="POST",
                path=self.path,
                kind="error" if api.fail_with else classify(body),
                status=200,
                model=body.get("model"),
                stream=bool(body.get("stream")),
                request_id=_ident("req_011C"),
                session_id=self.headers.get("X-Claude-Code-Session-Id"),
                user_agent=self.headers.get("User-Agent"),
                beta=self.headers.get("anthropic-beta"),
                request=body if api.keep_bodies else None,
            )
            if api.fail_with:
                self._error(exchange, api.fail_with)
            else:
                self._answer(exchange, body)

        def _empty(self, status: int) -> None:
            api.record(Exchange(seq=0, method=self.command, path=self.path, kind="other", status=status))
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def _error(self, exchange: Exchange, status: int) -> None:
            error = {"type": ERROR_TYPES.get(status, "api_error"), "message": f"fake injected {status}"}
            body = {"type": "error", "error": error, "request_id": exchange.request_id}
            exchange.status = status
            self._send(status, "application/json", [json.dumps(body).encode()], exchange)

        def _answer(self, exchange: Exchange, body: Json) -> None:
            reply = api.script.reply(exchange.kind, body)
            requested = str(body.get("model") or "")
            exchange.response_model = DATED.get(requested, requested)
            exchange.message_id = _ident("msg_01")
            exchange.usage, exchange.stop_reason = reply.usage, reply.stop_reason
            exchange.tool_uses = [b["name"] for b in reply.content if b["type"] == "tool_use"]
            message = {
                "id": exchange.message_id,
                "type": "message",
                "role": "assistant",
                "model": exchange.response_model,
                "content": reply.content,
                "stop_reason": reply.stop_reason,
                "stop_sequence": None,
                "usage": reply.usage,
            }
            if exchange.stream:
                self._send(200, "text/event-stream", stream_events(message), exchange)
            else:
                self._send(200, "application/json", [json.dumps(message).encode()], exchange)

        def _send(self, status: int, content_type: str, chunks: list[bytes], exchange: Exchange) -> None:
            """Chunked, as the real API streams; each SSE event is its own chunk."""
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("request-id", str(exchange.request_id))
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            api.record(exchange)  # before the answer ends: whoever got it finds it in the log
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler


def main() -> None:
    """`python -m tests.support.fakeapi [PORT]`: the fake in the foreground, for trying the CLI by hand."""
    with FakeApi(port=int(sys.argv[1]) if len(sys.argv) > 1 else 0) as api:
        print(api.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
