"""What both listeners hold every client to (the metrics server and the OTLP receiver): open
connections, time for one whole request, header bytes, and framing as RFC 9112 asks.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import logging
import math
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger("claude_usage_exporter.http")
TIMEOUT = 30.0  # seconds a client may take to read one write of our answer
DEADLINE = 30.0  # seconds a client has to send one whole request, headers and body, from when it is awaited
MAX_CONNECTIONS = 64  # open connections per listener; more are turned away with a 503
MAX_HEADER_BYTES = 64 * 1024  # request line and headers together; more is a 431

_REQUEST_LINE = 65536  # the standard library's own limit (414 above it)
_BUSY_BODY = b"too many connections: try again later\n"
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_BUSY_BODY), _BUSY_BODY)
)


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
