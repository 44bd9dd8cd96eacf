"""HTTP: `/metrics`, `/`, `/healthz`, `/readyz` on the standard library's threading server.

Handlers only read what the daemon's loop last rendered, so a scrape never waits for an ingest.
TLS and basic auth come from an exporter-toolkit web config file.
"""

from __future__ import annotations

import gzip
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from exporter.metrics import negotiate
from exporter.page import render_page
from exporter.webconfig import WebConfig

if TYPE_CHECKING:
    from exporter.serve import Daemon

log = logging.getLogger("claude_usage_exporter.http")
TIMEOUT = 30.0  # seconds a client may take to send its request, or to read our answer
GZIP_ABOVE = 4096


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], daemon: Daemon, web: WebConfig | None = None) -> None:
        self.exporter, self.web = daemon, web or WebConfig()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)
        if self.web.tls is not None:
            # The handshake runs in the request's thread (see _Handler.setup), so a slow client
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


class _Handler(BaseHTTPRequestHandler):
    server: Server
    timeout = TIMEOUT
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for the client's
    # delayed ACK (~40 ms a scrape).
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "claude-usage-exporter"

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        if not self.server.web.authorized(self.headers.get("Authorization")):
            self._send(401, b"Unauthorized\n", "text/plain; charset=utf-8", head,
                       {"WWW-Authenticate": 'Basic realm="claude-usage-exporter"'})  # fmt: skip
            return
        route = _ROUTES.get(self.path.split("?", 1)[0])
        if route is None:
            self._send(404, b"Not found: try /metrics\n", "text/plain; charset=utf-8", head)
            return
        status, body, content_type = route(self)
        self._send(status, body, content_type, head)

    def do_POST(self) -> None:
        self._send(405, b"Method not allowed\n", "text/plain; charset=utf-8", False, {"Allow": "GET, HEAD"})

    def _send(self, status: int, body: bytes, content_type: str, head: bool,
              extra: dict[str, str] | None = None) -> None:  # fmt: skip
        headers = {**self.server.web.headers, **(extra or {}), "Content-Type": content_type}
        if len(body) > GZIP_ABOVE and "gzip" in self.headers.get("Accept-Encoding", ""):
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
