"""HTTP: `/metrics`, `/`, `/healthz`, `/readyz` on the standard library's threading server.

Handlers only read what the daemon's loop last rendered, so a scrape never waits for an ingest. The
server takes what it shows through a small interface (`Shown`), not the daemon. TLS and basic auth
come from an exporter-toolkit web config file; the limits every client is held to, from `limits`.
"""

from __future__ import annotations

import gzip
import logging
import re
import threading
from collections.abc import Callable
from typing import Any, Protocol

from exporter.metrics.exposition import negotiate
from exporter.web.limits import DEADLINE, MAX_CONNECTIONS, MAX_HEADER_BYTES, LimitedHandler, LimitedServer
from exporter.web.page import PageData, render_page
from exporter.web.webconfig import WebConfig

log = logging.getLogger("claude_usage_exporter.http")
GZIP_ABOVE = 4096
PROBES = frozenset({"/healthz", "/readyz"})  # answered without credentials: they tell only "ok" or "ready"
_QVALUE = re.compile(r"\s*q\s*=\s*(0(?:\.\d{0,3})?|1(?:\.0{0,3})?)\s*", re.IGNORECASE)


class Shown(Protocol):
    """What the server shows, as the daemon's loop last rendered it."""

    page: PageData

    def render(self, content_type: str) -> bytes:
        """The exposition, in the content type asked for."""

    @property
    def not_ready(self) -> str | None:
        """None when ready; else why not."""


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
        shown: Shown,
        web: WebConfig | None = None,
        *,
        max_connections: int = MAX_CONNECTIONS,
        deadline: float = DEADLINE,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self.shown, self.web = shown, web or WebConfig()
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
        return 200, self.server.shown.render(content_type), content_type

    def index(self) -> tuple[int, bytes, str]:
        shown = self.server.shown
        return 200, render_page(shown.page, shown.not_ready is None), "text/html; charset=utf-8"

    def healthz(self) -> tuple[int, bytes, str]:
        return 200, b"OK\n", "text/plain; charset=utf-8"

    def favicon(self) -> tuple[int, bytes, str]:
        # Browsers ask for it on any page, /metrics included: no content is better than a 404.
        return 204, b"", "image/x-icon"

    def readyz(self) -> tuple[int, bytes, str]:
        reason = self.server.shown.not_ready
        if reason is None:
            return 200, b"ready\n", "text/plain; charset=utf-8"
        return 503, f"not ready: {reason}\n".encode(), "text/plain; charset=utf-8"


_ROUTES: dict[str, Callable[[_Handler], tuple[int, bytes, str]]] = {
    "/metrics": _Handler.metrics,
    "/": _Handler.index,
    "/healthz": _Handler.healthz,
    "/readyz": _Handler.readyz,
    "/favicon.ico": _Handler.favicon,
}
