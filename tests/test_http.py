"""The HTTP layer on real loopback sockets: routes, formats, readiness, basic auth and TLS."""

from __future__ import annotations

import gzip
import http.client
import ssl
from collections.abc import Iterator
from pathlib import Path

import bcrypt
import pytest

from exporter.daemon.loop import Daemon, Options
from exporter.metrics.exposition import OPENMETRICS, TEXT
from exporter.pipeline import Setup
from exporter.web.server import Server
from exporter.web.webconfig import WebConfig, load_web_config
from tests.support.lines import assistant_line, write
from tests.support.loopback import basic

HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4))


@pytest.fixture
def daemon(tmp_path: Path, claude_dir: Path) -> Iterator[Daemon]:
    write(claude_dir / "projects" / "p" / "s.jsonl", assistant_line("msg_1", "req_1", input=1000))
    running = Daemon(Setup(state_dir=tmp_path / "state", roots=(claude_dir,), timezone="UTC"), Options())
    yield running
    running.close()


@pytest.fixture
def serve(daemon: Daemon) -> Iterator[Server]:
    server = Server(("127.0.0.1", 0), daemon)
    server.start()
    yield server
    server.shutdown()
    server.server_close()


def get(
    server: Server,
    path: str,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
    method: str = "GET",
) -> tuple[int, dict[str, str], bytes]:
    port = server.server_address[1]
    connection = (
        http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        if context
        else http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    )
    try:
        connection.request(method, path, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def test_readyz_is_503_until_the_first_ingest_is_done_then_200(serve: Server, daemon: Daemon) -> None:
    assert get(serve, "/readyz")[::2] == (503, b"not ready: the first ingest has not finished\n")
    assert get(serve, "/healthz")[::2] == (200, b"OK\n")
    daemon.step()
    assert get(serve, "/readyz")[::2] == (200, b"ready\n")


def test_metrics_are_the_classic_text_format_unless_openmetrics_is_asked_for(serve: Server, daemon: Daemon) -> None:
    daemon.step()
    status, headers, body = get(serve, "/metrics")
    assert (status, headers["Content-Type"]) == (200, TEXT)
    assert b"\nclaude_usage_exporter_ledger_requests 1.0\n" in body
    status, headers, body = get(serve, "/metrics", {"Accept": "application/openmetrics-text;version=1.0.0"})
    assert (status, headers["Content-Type"], body[-6:]) == (200, OPENMETRICS, b"# EOF\n")


def test_metrics_are_gzipped_for_scrapers_that_accept_it(serve: Server, daemon: Daemon) -> None:
    daemon.step()
    plain = get(serve, "/metrics")[2]
    status, headers, body = get(serve, "/metrics", {"Accept-Encoding": "gzip"})
    assert (status, headers["Content-Encoding"]) == (200, "gzip")
    unzipped = gzip.decompress(body)
    # process_* values move between two scrapes; the usage part is the same bytes
    assert unzipped.split(b"# HELP process_")[0] == plain.split(b"# HELP process_")[0]


def test_unknown_paths_are_404_other_methods_405_and_head_has_no_body(serve: Server) -> None:
    assert get(serve, "/nope")[0] == 404
    assert get(serve, "/favicon.ico")[::2] == (204, b"")  # browsers ask for it on every page
    status, headers, _ = get(serve, "/metrics", method="POST")
    assert (status, headers["Allow"]) == (405, "GET, HEAD")
    status, headers, body = get(serve, "/healthz", method="HEAD")
    assert (status, headers["Content-Length"], body) == (200, "3", b"")


def test_the_landing_page_is_html_with_the_all_time_cost(serve: Server, daemon: Daemon) -> None:
    daemon.step()
    status, headers, body = get(serve, "/")
    assert (status, headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    total = sum(v for v in daemon.exposition.snapshot.points["claude_usage_cost_usd_total"].values())
    assert f'id="total" data-usd="{total:.6f}"'.encode() in body


def basic_auth(user: str, password: str) -> dict[str, str]:
    return {"Authorization": basic(user, password)}


def test_basic_auth_lets_in_the_right_password_and_answers_401_otherwise(daemon: Daemon) -> None:
    server = Server(("127.0.0.1", 0), daemon, WebConfig(users={"prometheus": HASH}))
    server.start()
    try:
        status, headers, _ = get(server, "/metrics")
        assert (status, headers["WWW-Authenticate"]) == (401, 'Basic realm="claude-usage-exporter"')
        assert get(server, "/metrics", basic_auth("prometheus", "wrong"))[0] == 401
        assert get(server, "/metrics", basic_auth("grafana", "secret"))[0] == 401
        assert get(server, "/metrics", basic_auth("prometheus", "secret"))[0] == 200
        assert [get(server, path)[0] for path in ("/", "/favicon.ico", "/nope")] == [401, 401, 401]
    finally:
        server.shutdown()
        server.server_close()


def test_health_probes_need_no_credentials_as_kubelet_and_docker_send_none(daemon: Daemon) -> None:
    server = Server(("127.0.0.1", 0), daemon, WebConfig(users={"prometheus": HASH}))
    server.start()
    try:
        assert get(server, "/healthz")[::2] == (200, b"OK\n")
        assert get(server, "/readyz")[::2] == (503, b"not ready: the first ingest has not finished\n")
        daemon.step()
        assert get(server, "/readyz")[::2] == (200, b"ready\n")
        assert get(server, "/readyz?verbose", method="HEAD")[0] == 200
        assert (
            get(server, "/healthz", basic_auth("prometheus", "wrong"))[0] == 200
        )  # a probe's credentials do not matter
    finally:
        server.shutdown()
        server.server_close()


def test_tls_serves_https_to_clients_trusting_the_ca_and_plain_http_is_refused(daemon: Daemon, pki: Path) -> None:
    config = pki / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n")
    server = Server(("127.0.0.1", 0), daemon, load_web_config(config))
    server.start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        client = ssl.create_default_context(cafile=pki / "ca.pem")
        assert get(server, "/healthz", context=client)[::2] == (200, b"OK\n")
        with pytest.raises((http.client.RemoteDisconnected, ConnectionResetError, http.client.BadStatusLine)):
            get(server, "/healthz")
        assert get(server, "/healthz", context=client)[0] == 200  # a bad client stops nothing
    finally:
        server.shutdown()
        server.server_close()
