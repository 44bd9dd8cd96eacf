"""HTTP: `/metrics`, `/`, `/healthz`, `/readyz` on the standard library's threading server.

Handlers only read what the daemon's loop last rendered, so a scrape never waits for an ingest.
TLS and basic auth come from an exporter-toolkit web config file. `LimitedServer` and `LimitedHandler`
hold the limits both listeners share (this one and the OTLP receiver): connections, time, header bytes, framing.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import io
import logging
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from exporter.metrics.exposition import negotiate
from exporter.web.page import render_page
from exporter.web.webconfig import WebConfig

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

    from exporter.daemon.serve import Daemon

log = logging.getLogger("claude_usage_exporter.http")
TIMEOUT = 30.0  # seconds a client may take to read one write of our answer
DEADLINE = 30.0  # seconds a client has to send one whole request, headers and body, from when it is awaited
MAX_CONNECTIONS = 64  # open connections per listener; more are turned away with a 503
MAX_HEADER_BYTES = 64 * 1024  # request line and headers together; more is a 431
GZIP_ABOVE = 4096
PROBES = frozenset({"/healthz", "/readyz"})  # answered without credentials: they tell only "ok" or "ready"

_REQUEST_LINE = 65536  # the standard library's own limit (414 above it)
_BUSY_BODY = b"too many connections: try again later\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)
_QVALUE = re.compile(r"\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)\s*", re.IGNORECASE)


class LimitedServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most `max_connections` connections at once.

    One more is turned away at once (a 503 and closed, or just closed under TLS, whose handshake would
    hold up the accept loop), so a flood of idle or slow connections costs threads and memory only up
    to the cap: each connection holds at most `max_header_bytes` of headers and an 8 KiB read buffer.
    """

    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[LimitedHandler],
        *,
        max_connections: int,
        deadline: float,
        max_header_bytes: int,
    ) -> None:
        self.deadline, self.max_header_bytes = deadline, max_header_bytes
        self._slots = threading.BoundedSemaphore(max_connections)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("turned away %s: %s", client_address, "too many connections")
            if not isinstance(request, ssl.SSLSocket):
                with contextlib.suppress(OSError):
                    request.setblocking(False)  # a client that does not read must not hold up the accept loop
                    request.send(_BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()  # no thread started, so none will release it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # ThreadingMixIn's, with the slot given back before the client sees the connection end: a client
        # that waits for the end and connects again then always finds a free slot.
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self._slots.release()
            self.shutdown_request(request)


class _DeadlineIO(io.RawIOBase):
    """The connection's reads, each waiting only for what is left of the request's time.

    A socket timeout bounds one read: a client sending a header line every 20 s would never trip a
    30 s one. This bounds the whole request.
    """

    def __init__(self, connection: socket.socket) -> None:
        super().__init__()
        self._connection, self.until = connection, math.inf

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int:
        left = self.until - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request was not sent in time")
        self._connection.settimeout(left)
        return self._connection.recv_into(buffer)


class _Reader(io.BufferedReader):
    """`rfile`: while `budget` is set (reading the request line and headers), lines count against it."""

    budget: int | None = None

    def readline(self, size: int | None = -1) -> bytes:
        if self.budget is None:
            return super().readline(size)
        cap = self.budget + 1 if size is None or size < 0 else min(size, self.budget + 1)
        line = super().readline(cap)
        self.budget -= len(line)
        if self.budget < 0:
            raise http.client.LineTooLong("request line and headers")
        return line


class LimitedHandler(BaseHTTPRequestHandler):
    """One connection: requests read within the server's deadline and header limit, framed per RFC 9112.

    A request whose framing is ambiguous (Content-Length with Transfer-Encoding, Content-Lengths that
    differ) is a 400 and the connection closes, as RFC 9112 section 6.3 asks: a front proxy may have
    read it another way. A body a handler leaves unread also ends the connection, so it is never read
    as the next request.
    """

    server: LimitedServer
    timeout = TIMEOUT
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for the client's
    # delayed ACK (~40 ms a scrape).
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "claude-usage-exporter"
    error_message_format = "%(code)d %(message)s: %(explain)s\n"
    error_content_type = "text/plain; charset=utf-8"
    rfile: _Reader
    unread = False  # the request has a body nobody read
    _clock: _DeadlineIO
    _first = True

    def version_string(self) -> str:
        return self.server_version  # BaseHTTPRequestHandler would add the Python version

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def setup(self) -> None:
        super().setup()
        self._clock = _DeadlineIO(self.connection)
        self._clock.until = time.monotonic() + self.server.deadline  # the first request's time includes the handshake
        self.rfile.close()
        self.rfile = _Reader(self._clock)
        if isinstance(self.connection, ssl.SSLSocket):
            # Run here, in the request's thread (the listening socket does not), so that a slow client
            # cannot hold up the accept loop; the timeout bounds the whole handshake.
            self.connection.settimeout(self.server.deadline)
            self.connection.do_handshake()

    def seconds_left(self) -> float:
        return max(0.0, self._clock.until - time.monotonic())

    def handle_one_request(self) -> None:
        if not self._first:
            self._clock.until = time.monotonic() + self.server.deadline
        self._first, self.unread = False, False
        self.rfile.budget = self.server.max_header_bytes
        try:
            self.raw_requestline = self.rfile.readline(_REQUEST_LINE + 1)
            if not self.raw_requestline:
                self.close_connection = True
                return
            if len(self.raw_requestline) > _REQUEST_LINE:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                return
            if not self.parse_request():
                return  # it answered
        except http.client.LineTooLong:  # the request line alone used up the header budget
            self.requestline = self.request_version = self.command = ""
            self.send_error(431)
            return
        except TimeoutError:
            self.close_connection = True
            return
        finally:
            self.rfile.budget = None
        problem = self._framing()
        if problem:
            self.unread = True
            self.send_error(400, problem)
            return
        self.unread = self._has_body()
        method = getattr(self, "do_" + self.command, None)
        if method is None:
            self.send_error(501, f"Unsupported method ({self.command!r})")
            return
        try:
            method()
            self.wfile.flush()
        except TimeoutError:
            self.close_connection = True

    def _framing(self) -> str:
        """Why the body's length is ambiguous ("" when it is not)."""
        lengths = self.headers.get_all("Content-Length") or []
        values = {value.strip() for line in lengths for value in line.split(",")}
        if lengths and self.headers.get_all("Transfer-Encoding"):
            return "Content-Length and Transfer-Encoding together"
        if len(values) > 1:
            return "Content-Lengths that differ"
        if values and not all(value.isascii() and value.isdigit() for value in values):
            return f"invalid Content-Length {lengths[0]!r}"
        if self.headers.get_all("Transfer-Encoding") and self.request_version == "HTTP/1.0":
            return "Transfer-Encoding in an HTTP/1.0 request"
        return ""

    def _has_body(self) -> bool:
        if self.headers.get_all("Transfer-Encoding"):
            return True
        length = (self.headers.get("Content-Length") or "0").split(",")[0].strip()
        return int(length) > 0

    def send_response(self, code: int, message: str | None = None) -> None:
        # What is left of the request's time was for reading it: writing the answer has its own timeout.
        self.connection.settimeout(self.timeout)
        super().send_response(code, message)

    def end_headers(self) -> None:
        if self.unread and not self.close_connection:
            self.send_header("Connection", "close")  # sets close_connection
        super().end_headers()


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an `Accept-Encoding` header lets the answer be gzipped: `gzip;q=0` says no, as does `*;q=0`."""
    gzip_q: float | None = None
    any_q: float | None = None
    for item in (accept_encoding or "").split(","):
        coding, _, params = item.partition(";")
        q = 1.0
        for param in params.split(";") if params else ():
            if param.strip().lower().startswith("q"):
                found = _QVALUE.fullmatch(param)
                q = float(found[1]) if found else 0.0  # a q-value we cannot read is not a yes
        name = coding.strip().lower()
        if name in ("gzip", "x-gzip"):
            gzip_q = q
        elif name == "*":
            any_q = q
    chosen = gzip_q if gzip_q is not None else any_q
    return chosen is not None and chosen > 0


class Server(LimitedServer):
    def __init__(
        self,
        address: tuple[str, int],
        daemon: Daemon,
        web: WebConfig | None = None,
        *,
        max_connections: int = MAX_CONNECTIONS,
        deadline: float = DEADLINE,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.exporter, self.web = daemon, web or WebConfig()
        super().__init__(
            address, _Handler, max_connections=max_connections, deadline=deadline, max_header_bytes=max_header_bytes
        )
        if self.web.tls is not None:
            # The handshake runs in the request's thread (see LimitedHandler.setup), so a slow client
            # cannot hold up the accept loop.
            self.socket = self.web.tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else host
        scheme = "https" if self.web.tls else "http"
        return f"{scheme}://[{name}]:{port}" if ":" in name else f"{scheme}://{name}:{port}"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="http", daemon=True)
        thread.start()
        return thread

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(LimitedHandler):
    server: Server

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        path = self.path.split("?", 1)[0]
        # Probes get in without credentials (kubelet and Docker send none); they tell nothing but ok or ready.
        if path not in PROBES and not self.server.web.authorized(self.headers.get("Authorization")):
            self._send(
                401,
                b"Unauthorized\n",
                "text/plain; charset=utf-8",
                head,
                {"WWW-Authenticate": 'Basic realm="claude-usage-exporter"'},
            )
            return
        route = _ROUTES.get(path)
        if route is None:
            self._send(404, b"Not found: try /metrics\n", "text/plain; charset=utf-8", head)
            return
        status, body, content_type = route(self)
        self._send(status, body, content_type, head)

    def do_POST(self) -> None:
        self._send(405, b"Method not allowed\n", "text/plain; charset=utf-8", False, {"Allow": "GET, HEAD"})

    def _send(
        self, status: int, body: bytes, content_type: str, head: bool, extra: dict[str, str] | None = None
    ) -> None:
        headers = {**self.server.web.headers, **(extra or {}), "Content-Type": content_type}
        if len(body) > GZIP_ABOVE and accepts_gzip(self.headers.get("Accept-Encoding")):
            body = gzip.compress(body, compresslevel=1)
            headers["Content-Encoding"] = "gzip"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    # --- routes ---------------------------------------------------------------------------------

    def metrics(self) -> tuple[int, bytes, str]:
        content_type = negotiate(self.headers.get("Accept"))
        return 200, self.server.exporter.exposition.render(content_type), content_type

    def index(self) -> tuple[int, bytes, str]:
        daemon = self.server.exporter
        return 200, render_page(daemon.page, daemon.status.ready), "text/html; charset=utf-8"

    def healthz(self) -> tuple[int, bytes, str]:
        return 200, b"OK\n", "text/plain; charset=utf-8"

    def favicon(self) -> tuple[int, bytes, str]:
        # Browsers ask for it on any page, /metrics included: no content is better than a 404.
        return 204, b"", "image/x-icon"

    def readyz(self) -> tuple[int, bytes, str]:
        status = self.server.exporter.status
        if status.ready:
            return 200, b"ready\n", "text/plain; charset=utf-8"
        reason = status.error or "the first ingest has not finished"
        return 503, f"not ready: {reason}\n".encode(), "text/plain; charset=utf-8"


_ROUTES: dict[str, Callable[[_Handler], tuple[int, bytes, str]]] = {
    "/metrics": _Handler.metrics,
    "/": _Handler.index,
    "/healthz": _Handler.healthz,
    "/readyz": _Handler.readyz,
    "/favicon.ico": _Handler.favicon,
}
