"""The OTLP/HTTP receiver: `POST /v1/logs` and `/v1/metrics` from Claude Code, decoded and handed to a sink.

Bodies are read by hand (Content-Length or chunked, then gzip) so that every size limit holds while
reading, not after; anything a client sends ends in an HTTP answer or a closed connection, never a crash.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import re
import socket
import threading
import zlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from exporter import otlp
from exporter.otlp import Logs, OtlpError, Point

log = logging.getLogger("claude_usage_exporter.otlp")
TIMEOUT = 30.0  # seconds a client may stay silent mid-request
MAX_BODY_BYTES = 16 * 1024 * 1024
OUTCOMES = ("usage", "tool", "skipped", "malformed")
Sink = Callable[[str, Logs | list[Point]], None]

_PATHS: dict[str, Literal["logs", "metrics"]] = {"/v1/logs": "logs", "/v1/metrics": "metrics"}
_MAX_LINE = 1024  # a chunk-size or trailer line
_MAX_TRAILERS = 64
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,15}")


class Stats:
    """The receiver's self-metrics, plain ints; `snapshot()` reads them all at one instant."""

    def __init__(self) -> None:
        self.requests = 0  # every request, answered or not
        self.records = dict.fromkeys(OUTCOMES, 0)  # log records by outcome
        self.points = 0  # metric data points decoded
        self.refused: dict[int, int] = {}  # requests answered with an error, by status code
        self._lock = threading.Lock()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"requests": self.requests, "records": dict(self.records), "points": self.points,
                    "refused": dict(self.refused)}  # fmt: skip

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
            for outcome, n in zip(OUTCOMES, counts, strict=True):
                self.records[outcome] += n


class OtlpServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], sink: Sink, *, tokens: frozenset[str] = frozenset(),
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:  # fmt: skip
        if any(not token.strip() for token in tokens):
            raise ValueError("an empty bearer token would let any client in")
        self.sink, self.max_body_bytes, self.stats = sink, max_body_bytes, Stats()
        self.tokens = tuple(token.encode() for token in tokens)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

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


class _Handler(BaseHTTPRequestHandler):
    server: OtlpServer
    timeout = TIMEOUT
    disable_nagle_algorithm = True  # headers and body are two writes; see http.py
    protocol_version = "HTTP/1.1"  # keep-alive: Claude Code reuses its connection for every export
    server_version = "claude-usage-exporter"
    _consumed = False  # whether the request body was read: if not, the connection cannot be reused

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_POST(self) -> None:
        self.server.stats.received()
        self._consumed = False
        try:
            kind = self._route()
            self._authorize()
            media = otlp.media_type(self.headers.get("Content-Type"))
            body = self._body()
            decoded = _decode(kind, body, media)
            self._deliver(kind, decoded)
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
        self._consumed = self.headers.get("Content-Length", "0") == "0" and "Transfer-Encoding" not in self.headers
        try:
            self._route()
        except _Refused as e:
            self._refuse(e.status, e.message)
            return
        self._refuse(405, f"use POST for {self.path}", {"Allow": "POST"})

    do_GET = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

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
        self._consumed = True
        return _gunzip(raw, limit) if encoding == "gzip" else raw

    def _read_sized(self, limit: int) -> bytes:
        declared = (self.headers.get("Content-Length") or "0").strip()
        if not (declared.isascii() and declared.isdigit()):
            raise _Refused(400, f"invalid Content-Length {declared!r}")
        length = int(declared)
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
        except OSError:  # a timeout included: a client silent for TIMEOUT seconds is gone
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
        if not self._consumed:
            # What is left of the body would be read as the next request: end the connection instead.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
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


def _gunzip(data: bytes, limit: int) -> bytes:
    """The gzip body `data` (members concatenated, as gzip allows) inflated to at most `limit` bytes.

    Inflating stops at limit + 1 bytes, so a small bomb costs no more memory than an honest large body.
    """
    parts: list[bytes] = []
    size = 0
    while True:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            part = inflater.decompress(data, limit + 1 - size)
        except zlib.error as e:
            raise _Refused(400, f"invalid gzip body: {e}") from None
        size += len(part)
        if size > limit:
            raise _Refused(413, f"body inflates to over the limit of {limit} bytes")
        parts.append(part)
        if not inflater.eof:  # output was not cut short (else over the limit), so the input ran out
            raise _Refused(400, "invalid gzip body: truncated")
        data = inflater.unused_data
        if not data:
            return b"".join(parts)
