"""The OTLP/HTTP receiver: `POST /v1/logs` and `/v1/metrics` from Claude Code, decoded and handed to a sink.

Bodies are read by hand (Content-Length or chunked, then gzip) so that every size limit holds while
reading, not after; anything a client sends ends in an HTTP answer or a closed connection, never a crash.
Memory is bounded: at most `max_bodies` bodies are read, inflated and decoded at once, each costing its
raw and inflated bytes and their decoding (~200 MiB for a 16 MiB OTLP/JSON body); the other connections
(at most `max_connections`) wait for a turn holding only their headers (at most `max_header_bytes`).
With the defaults: about 2 x 200 MiB + 64 x 72 KiB.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import math
import re
import select
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable
from typing import Any, Literal

from exporter.sources import otlp
from exporter.sources.otlp import Logs, OtlpError, Point
from exporter.web.limits import DEADLINE, MAX_CONNECTIONS, MAX_HEADER_BYTES, LimitedHandler, LimitedServer

log = logging.getLogger("claude_usage_exporter.otlp")
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_BODIES = 2  # bodies read and decoded at once: decoding holds the GIL, so more would only cost memory
RECORD_OUTCOMES = ("usage", "tool", "skipped", "malformed")
Sink = Callable[[str, Logs | list[Point]], None]

_PATHS: dict[str, Literal["logs", "metrics"]] = {"/v1/logs": "logs", "/v1/metrics": "metrics"}
_MAX_LINE = 1024  # a chunk-size or trailer line
_MAX_TRAILERS = 64
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")
# Each gzip member is fed from a small piece, doubling up to _FEED_MAX: what zlib copies out as unused
# data past a member's end is then at most twice the member, so many tiny members cost linear time.
_FEED_MIN, _FEED_MAX = 256, 64 * 1024
_CHECK_EVERY = 64  # pieces inflated between two looks at the clock and at the client
_HUNG_UP = select.POLLHUP | select.POLLERR | getattr(select, "POLLRDHUP", 0)


class Stats:
    """The receiver's self-metrics, plain ints; `snapshot()` reads them all at one instant."""

    def __init__(self) -> None:
        self.requests = 0  # every request, answered or not
        self.records = dict.fromkeys(RECORD_OUTCOMES, 0)  # log records by outcome
        self.points = 0  # metric data points decoded
        self.refused: dict[int, int] = {}  # requests answered with an error, by status code
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "records": dict(self.records),
                "points": self.points,
                "refused": dict(self.refused),
            }

    def received(self) -> None:
        with self._lock:
            self.requests += 1

    def refused_with(self, status: int) -> None:
        with self._lock:
            self.refused[status] = self.refused.get(status, 0) + 1

    def took(self, decoded: Logs | list[Point]) -> None:
        with self._lock:
            if isinstance(decoded, list):
                self.points += len(decoded)
                return
            counts = (len(decoded.requests), len(decoded.tools), decoded.other, decoded.rejected)
            for outcome, n in zip(RECORD_OUTCOMES, counts, strict=True):
                self.records[outcome] += n


class OtlpServer(LimitedServer):
    def __init__(
        self,
        address: tuple[str, int],
        sink: Sink,
        *,
        tokens: frozenset[str] = frozenset(),
        max_body_bytes: int = MAX_BODY_BYTES,
        max_bodies: int = MAX_BODIES,
        max_connections: int = MAX_CONNECTIONS,
        deadline: float = DEADLINE,
        inflate_seconds: float = DEADLINE,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        if any(not token.strip() for token in tokens):
            raise ValueError("an empty bearer token would let any client in")
        self.sink, self.max_body_bytes, self.stats = sink, max_body_bytes, Stats()
        self.inflate_seconds = inflate_seconds
        self.bodies = threading.BoundedSemaphore(max_bodies)
        self.tokens = tuple(token.encode() for token in tokens)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(
            address, _Handler, max_connections=max_connections, deadline=deadline, max_header_bytes=max_header_bytes
        )

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        return f"http://[{name}]:{port}" if ":" in name else f"http://{name}:{port}"

    def start(self, poll_interval: float = 0.5) -> threading.Thread:
        """Serve on a daemon thread; `shutdown()` takes up to `poll_interval` seconds to be noticed."""
        thread = threading.Thread(target=self.serve_forever, args=(poll_interval,), name="otlp", daemon=True)
        thread.start()
        return thread

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("OTLP connection from %s failed", client_address, exc_info=True)

    # Kept-alive connections are tracked so that closing the server ends them too: otherwise their
    # threads would go on feeding the sink after the daemon thinks the receiver is gone.
    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        with self._open_lock:
            still_open = list(self._open)
        for connection in still_open:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Refused(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class _Gone(Exception):
    """The client went away or stalled mid-body: nothing to answer."""


class _Handler(LimitedHandler):
    server: OtlpServer
    # HTTP/1.1 (from LimitedHandler) keeps connections alive: Claude Code reuses its connection for every export.

    def do_POST(self) -> None:
        self.server.stats.received()
        try:
            kind = self._route()
            self._authorize()
            media = otlp.media_type(self.headers.get("Content-Type"))
            # Waiting for a turn costs this connection its headers only; the body stays in the socket.
            if not self.server.bodies.acquire(timeout=self.seconds_left()):
                raise _Refused(503, "too many exports at once; retry later", {"Retry-After": "1"})
            try:
                body = self._body()
                decoded = _decode(kind, body, media)
                del body  # the decoded records are what the sink keeps
                self._deliver(kind, decoded)
            finally:
                self.server.bodies.release()
        except _Gone:
            self.close_connection = True
            return
        except _Refused as e:
            self._refuse(e.status, e.message, e.headers)
            return
        except OtlpError as e:
            self._refuse(e.status, str(e))
            return
        rejected, error = (decoded.rejected, decoded.error) if isinstance(decoded, Logs) else (0, "")
        self._send(200, otlp.response(kind, media, rejected, error), media)

    def _not_allowed(self) -> None:
        self.server.stats.received()
        try:
            self._route()
        except _Refused as e:
            self._refuse(e.status, e.message)
            return
        self._refuse(405, f"use POST for {self.path}", {"Allow": "POST"})

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Refusals of the HTTP layer itself (framing, header size) count like the receiver's own.
        self.server.stats.received()
        self.server.stats.refused_with(code)
        super().send_error(code, message, explain)

    def _route(self) -> Literal["logs", "metrics"]:
        kind = _PATHS.get(self.path.split("?", 1)[0])
        if kind is None:
            raise _Refused(404, f"no OTLP endpoint at {self.path}: use /v1/logs or /v1/metrics")
        return kind

    def _authorize(self) -> None:
        tokens = self.server.tokens
        if not tokens:
            return
        scheme, _, given = (self.headers.get("Authorization") or "").strip().partition(" ")
        # http.server decodes headers as Latin-1: encoding back gives the bytes sent, UTF-8 tokens included.
        presented = given.strip().encode("latin-1", "replace")
        matched = False
        for token in tokens:  # every token compared, so the time taken does not tell which one matched
            matched |= hmac.compare_digest(presented, token)
        if scheme.lower() != "bearer" or not matched:
            raise _Refused(401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"})

    def _body(self) -> bytes:
        limit = self.server.max_body_bytes
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            raise _Refused(415, f"unsupported content encoding {encoding!r}: send gzip or none")
        transfer = (self.headers.get("Transfer-Encoding") or "").strip().lower()
        if transfer and transfer != "chunked":
            raise _Refused(501, f"unsupported transfer encoding {transfer!r}")
        raw = self._read_chunked(limit) if transfer else self._read_sized(limit)
        self.unread = False
        if encoding != "gzip":
            return raw
        return gunzip(raw, limit, time.monotonic() + self.server.inflate_seconds, lambda: client_gone(self.connection))

    def _read_sized(self, limit: int) -> bytes:
        # LimitedHandler refused a Content-Length that is not digits, or not the same each time.
        length = int((self.headers.get("Content-Length") or "0").split(",")[0])
        if length > limit:
            raise _Refused(413, f"body of {length} bytes over the limit of {limit}")
        return self._read(length)

    def _read_chunked(self, limit: int) -> bytes:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self._line()
            size_text = size_line.split(b";", 1)[0].strip()  # chunk extensions are allowed and ignored
            if not _CHUNK_SIZE.fullmatch(size_text):
                raise _Refused(400, "malformed chunked body")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > limit:
                raise _Refused(413, f"chunked body over the limit of {limit} bytes")
            chunks.append(self._read(size))
            if self._line().strip():
                raise _Refused(400, "malformed chunked body")
        for _ in range(_MAX_TRAILERS):
            if not self._line().strip():
                return b"".join(chunks)
        raise _Refused(400, "too many trailer lines")

    def _line(self) -> bytes:
        try:
            line = self.rfile.readline(_MAX_LINE)
        except OSError:
            raise _Gone from None
        if not line:
            raise _Gone
        if not line.endswith(b"\n"):
            raise _Refused(400, "malformed chunked body: line too long")
        return line

    def _read(self, size: int) -> bytes:
        try:
            data = self.rfile.read(size)
        except OSError:  # a timeout included: a client that has not sent its request within the deadline is gone
            raise _Gone from None
        if len(data) < size:
            raise _Gone
        return data

    def _deliver(self, kind: str, decoded: Logs | list[Point]) -> None:
        try:
            self.server.sink(kind, decoded)
        except Exception:
            log.exception("the OTLP %s sink failed; the client will retry", kind)
            raise _Refused(503, "temporarily unable to store the data; retry later") from None
        self.server.stats.took(decoded)

    def _refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self.server.stats.refused_with(status)
        body, content_type = otlp.status_body(self.headers.get("Content-Type"), message)
        self._send(status, body, content_type, headers)

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()  # with Connection: close if the body was not read (see LimitedHandler)
        if self.command != "HEAD":
            try:
                self.wfile.write(body)
            except OSError:
                self.close_connection = True


def _decode(kind: str, body: bytes, media: str) -> Logs | list[Point]:
    try:
        return otlp.decode_logs(body, media) if kind == "logs" else otlp.decode_metrics(body, media)
    except OtlpError:
        raise
    except Exception as e:  # a decoder bug must not become a dropped connection the client retries forever
        log.warning("could not decode an OTLP %s body", kind, exc_info=True)
        raise OtlpError(f"could not decode the body: {type(e).__name__}") from None


def gunzip(data: bytes, limit: int, deadline: float = math.inf, gone: Callable[[], bool] = lambda: False) -> bytes:
    """The gzip body `data` (members concatenated, as gzip allows) inflated to at most `limit` bytes.

    Inflating stops at limit + 1 bytes, so a small bomb costs no more memory than an honest large body;
    time is linear in `data` however many members it has, and inflating stops when `deadline`
    (time.monotonic()) passes or `gone()` says the client left.
    """
    view = memoryview(data)
    out = bytearray()
    at = pieces = 0
    while True:  # one member a turn
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        feed = _FEED_MIN
        while not inflater.eof:
            pieces += 1
            if pieces % _CHECK_EVERY == 0:
                if gone():
                    raise _Gone
                if time.monotonic() > deadline:
                    raise _Refused(503, "the body took too long to inflate; retry later")
            if at >= len(view):
                raise _Refused(400, "invalid gzip body: truncated")
            piece = view[at : at + feed]
            at += len(piece)
            try:
                out += inflater.decompress(piece, limit + 1 - len(out))
            except zlib.error as e:
                raise _Refused(400, f"invalid gzip body: {e}") from None
            if len(out) > limit:  # else the output was not cut short, so the whole piece was taken
                raise _Refused(413, f"body inflates to over the limit of {limit} bytes")
            feed = min(2 * feed, _FEED_MAX)
        at -= len(inflater.unused_data)  # what followed the member's end in the last piece
        if at >= len(view):
            return bytes(out)


def client_gone(connection: socket.socket) -> bool:
    """Whether the peer of `connection` has closed it (or reset it); never waits."""
    poller = select.poll()
    poller.register(connection, select.POLLIN | _HUNG_UP)
    events = sum(event for _, event in poller.poll(0))
    if events & _HUNG_UP:
        return True
    if not events & select.POLLIN or isinstance(connection, ssl.SSLSocket):
        return False
    try:  # without POLLRDHUP (not Linux), an end of stream is only readable: peek at it
        return connection.recv(1, socket.MSG_PEEK) == b""  # readable, so this does not wait
    except OSError:
        return True
