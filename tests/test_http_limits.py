"""Both listeners under hostile clients, on real loopback sockets: connection cap, whole-request deadline,
header size, request smuggling (RFC 9112), bounded decoding, gzip members, Accept-Encoding and the Server header.

Real `serve` processes where the defaults are what is tested; servers made in the test where a limit is
set short (a deadline of one second) so that no test waits for the real one.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import socket
import threading
from collections.abc import Callable, Iterator
from typing import NamedTuple

import pytest

from exporter.daemon.loop import Daemon
from exporter.sources.otlp import Logs, Point
from exporter.web.limits import _BUSY, MAX_CONNECTIONS, MAX_HEADER_BYTES
from exporter.web.otlp import _FEED_MIN, MAX_BODY_BYTES, OtlpServer, _Gone, _Refused, client_gone, gunzip
from exporter.web.server import Server, accepts_gzip
from tests.support import otlpgen as gen
from tests.support.daemon import Serve, serving
from tests.support.lines import assistant_line, write
from tests.test_http import daemon  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow  # a real `serve`, and deadlines that must pass

WAIT = 30.0  # seconds a read waits for the server before the test fails (a limit, never a pause)
SHORT = 1.0  # a deadline short enough to wait for, long enough for a request sent in one write
Address = tuple[str, int]
EMPTY_MEMBER = gzip.compress(b"")  # 20 bytes: the smallest gzip member


def address(url: str) -> Address:
    host, _, port = url.split("://")[1].rpartition(":")
    return host, int(port)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Serve, Address, Address]]:
    """One `serve` with both listeners: (the process, the metrics address, the OTLP address)."""
    folder = tmp_path_factory.mktemp("limits")
    root = folder / "claude"
    write(root / "projects" / "p" / "s.jsonl", assistant_line("msg_1", "req_1", input=1000))
    with serving(folder / "state", [root], "--otlp.listen", "127.0.0.1:0") as process:
        (otlp,) = [m[1] for line in process.log if (m := re.search(r"receiving OTLP on (\S+)/v1/logs", line))]
        yield process, address(process.url), address(otlp)


class Listener(NamedTuple):
    where: Address
    path: str  # a GET there, and its status
    status: int


@pytest.fixture(params=["metrics", "otlp"])
def listener(request: pytest.FixtureRequest, served: tuple[Serve, Address, Address]) -> Listener:
    return Listener(served[1], "/healthz", 200) if request.param == "metrics" else Listener(served[2], "/v1/logs", 405)


def read_response(connection: socket.socket) -> bytes:
    """One whole answer (headers and a Content-Length body) from a connection that stays open."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"the connection ended inside an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"\r\nContent-Length: (\d+)", head)[1])  # type: ignore[index]
    while len(body) < length:
        chunk = connection.recv(65536)
        assert chunk, f"the connection ended inside an answer: {data!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def read_to_end(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection."""
    data = b""
    try:
        while chunk := connection.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass  # a reset after the answers: what came before it was read
    return data


def exchange(where: Address, request: bytes) -> bytes:
    with socket.create_connection(where, timeout=WAIT) as connection:
        connection.sendall(request)
        return read_to_end(connection)


def statuses(answers: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"^HTTP/1\.1 (\d{3}) ", answers, re.M)]


def header(answer: bytes, name: str) -> str | None:
    found = re.search(rb"\r\n" + name.encode() + rb": ([^\r]*)\r\n", answer.partition(b"\r\n\r\n")[0] + b"\r\n")
    return found[1].decode() if found else None


def probe(path: str, *headers: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: x", *headers, "", ""]
    return "\r\n".join(lines).encode()


# --- connections ----------------------------------------------------------------------------------


def test_a_connection_over_the_cap_is_turned_away_at_once_and_a_freed_slot_serves_again(listener: Listener) -> None:
    held = [socket.create_connection(listener.where, timeout=WAIT) for _ in range(MAX_CONNECTIONS)]
    try:
        for connection in held:  # each answered and kept alive, so each is surely holding its slot
            connection.sendall(probe(listener.path))
            assert statuses(read_response(connection)) == [listener.status]
        with socket.create_connection(listener.where, timeout=WAIT) as extra:
            assert read_to_end(extra) == _BUSY
        held[0].sendall(probe(listener.path, "Connection: close"))
        assert statuses(read_to_end(held[0])) == [listener.status]  # its slot is free once it has ended
        assert statuses(exchange(listener.where, probe(listener.path, "Connection: close"))) == [listener.status]
    finally:
        for connection in held:  # each ended by the server, so the slots are free for the next test
            with contextlib.suppress(OSError):
                connection.sendall(probe(listener.path, "Connection: close"))
                read_to_end(connection)
            connection.close()


# --- the whole-request deadline -------------------------------------------------------------------


@pytest.fixture
def short_deadline(daemon: Daemon) -> Iterator[Callable[[str], Address]]:  # noqa: F811
    """Servers of either kind whose requests must arrive within SHORT seconds."""
    started: list[Server | OtlpServer] = []

    def make(kind: str) -> Address:
        server = (
            Server(("127.0.0.1", 0), daemon, deadline=SHORT)
            if kind == "metrics"
            else (OtlpServer(("127.0.0.1", 0), lambda kind, decoded: None, deadline=SHORT))
        )
        server.start()
        started.append(server)
        return "127.0.0.1", server.server_address[1]

    yield make
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("kind", ["metrics", "otlp"])
def test_a_request_dripped_one_header_line_at_a_time_is_cut_off_at_the_deadline(
    short_deadline: Callable[[str], Address], kind: str
) -> None:
    with socket.create_connection(short_deadline(kind), timeout=WAIT) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        connection.settimeout(0.05)  # how long the client waits for the server to hang up between lines
        for line in range(600):  # 30 s of lines at most: far past the deadline, far below a per-read timeout
            try:
                if connection.recv(1) == b"":
                    break  # the server hung up
            except TimeoutError:
                try:
                    connection.sendall(b"X-Drip: %d\r\n" % line)
                except (BrokenPipeError, ConnectionResetError):
                    break
            except ConnectionResetError:
                break
        else:
            raise AssertionError("the server kept taking header lines for 30 s")


def test_a_kept_alive_connection_gets_a_fresh_deadline_for_each_request(daemon: Daemon) -> None:  # noqa: F811
    entered, release = threading.Event(), threading.Event()

    def sink(kind: str, decoded: Logs | list[Point]) -> None:
        entered.set()
        release.wait(WAIT)

    server = OtlpServer(("127.0.0.1", 0), sink, deadline=SHORT)
    server.start()
    where = ("127.0.0.1", server.server_address[1])
    body = gen.to_json(gen.api_request_logs(1))
    post = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    try:
        with socket.create_connection(where, timeout=WAIT) as kept:
            with socket.create_connection(where, timeout=WAIT) as idle:
                kept.sendall(post % (len(body), body))
                assert entered.wait(WAIT)
                # The idle connection, opened after the kept one, is cut at its deadline: by then the kept
                # connection is older than a deadline too.
                assert read_to_end(idle) == b""
            release.set()
            assert statuses(read_response(kept)) == [200]
            kept.sendall(post % (len(body), body))
            assert statuses(read_response(kept)) == [200]
    finally:
        release.set()
        server.shutdown()
        server.server_close()


# --- headers and framing --------------------------------------------------------------------------


def test_headers_over_64_kib_in_all_are_431_though_each_line_is_short(listener: Listener) -> None:
    pad = [f"X-Pad-{i}: {'a' * 7000}" for i in range(MAX_HEADER_BYTES // 7000 + 1)]
    answer = exchange(listener.where, probe(listener.path, *pad))
    assert statuses(answer) == [431]
    assert header(answer, "Connection") == "close"
    below = probe(listener.path, *pad[:8], "Connection: close")
    assert statuses(exchange(listener.where, below)) == [listener.status]


@pytest.mark.parametrize(
    "framing",
    [
        ["Content-Length: 5", "Transfer-Encoding: chunked"],
        ["Transfer-Encoding: chunked", "Content-Length: 5"],
        ["Content-Length: 5", "Content-Length: 6"],
        ["Content-Length: 5, 6"],
    ],
)
def test_a_request_framed_two_ways_is_400_and_the_connection_closes(listener: Listener, framing: list[str]) -> None:
    smuggled = probe(listener.path)
    lines = ["POST /v1/logs HTTP/1.1", "Host: x", "Content-Type: application/json", *framing, "", ""]
    answer = exchange(listener.where, "\r\n".join(lines).encode() + b"0\r\n\r\n" + smuggled)
    assert statuses(answer) == [400]
    assert header(answer, "Connection") == "close"


def test_a_gets_body_is_never_read_as_the_next_request(served: tuple[Serve, Address, Address]) -> None:
    _, metrics, otlp = served
    smuggled = probe("/nope")
    for where, path, status in ((metrics, "/healthz", 200), (otlp, "/v1/logs", 405)):
        answer = exchange(where, probe(path, f"Content-Length: {len(smuggled)}")[:-2] + b"\r\n" + smuggled)
        assert statuses(answer) == [status], answer
        assert header(answer, "Connection") == "close"


def test_the_server_header_names_no_python_version(listener: Listener) -> None:
    answer = exchange(listener.where, probe(listener.path, "Connection: close"))
    assert header(answer, "Server") == "claude-usage-exporter"


# --- Accept-Encoding ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("gzip;q=0", False),
        ("gzip; q=0.000", False),
        ("identity, gzip;q=0.5", True),
        ("*", True),
        ("*;q=0", False),
        ("br, *;q=0.1", True),
        ("gzip;q=0, *", False),  # gzip named: the wildcard does not apply to it
        ("x-gzip", True),
        ("deflate", False),
        ("gzip;q=nonsense", False),
        ("nogzip", False),
        ("", False),
    ],
)
def test_accept_encoding_q_values_decide_whether_the_answer_is_gzipped(accept_encoding: str, gzipped: bool) -> None:
    assert accepts_gzip(accept_encoding) is gzipped


def test_a_scraper_refusing_gzip_with_q_0_gets_plain_metrics(served: tuple[Serve, Address, Address]) -> None:
    _, metrics, _ = served
    refused = exchange(metrics, probe("/metrics", "Accept-Encoding: gzip;q=0", "Connection: close"))
    accepted = exchange(metrics, probe("/metrics", "Accept-Encoding: gzip;q=1", "Connection: close"))
    assert (statuses(refused), header(refused, "Content-Encoding")) == ([200], None)
    assert (statuses(accepted), header(accepted, "Content-Encoding")) == ([200], "gzip")
    assert b"\nclaude_usage_exporter_ledger_requests " in refused


# --- OTLP bodies: gzip members, decoding slots ----------------------------------------------------


def test_a_body_of_838860_empty_gzip_members_is_answered_and_the_receiver_serves_on(
    served: tuple[Serve, Address, Address],
) -> None:
    # The attack: 16 MiB of the smallest members cost 388 CPU-s when each member copied the rest.
    body = EMPTY_MEMBER * (MAX_BODY_BYTES // len(EMPTY_MEMBER))
    assert len(body) == 838_860 * 20
    head = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: gzip\r\n"
    answer = exchange(served[2], head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    assert statuses(answer) == [200]  # an empty protobuf export: nothing in it, nothing wrong with it
    assert statuses(exchange(served[1], probe("/healthz", "Connection: close"))) == [200]


def test_inflating_stops_at_its_deadline_with_a_503(make_otlp: Callable[..., Address]) -> None:
    where = make_otlp(inflate_seconds=0)
    body = EMPTY_MEMBER * 1000
    head = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Encoding: gzip\r\n"
    answer = exchange(where, head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    assert statuses(answer) == [503]
    plain = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n"
    assert statuses(exchange(where, plain + b"Connection: close\r\n\r\n")) == [200]


def test_inflating_stops_when_the_client_is_gone_and_is_linear_in_the_members() -> None:
    asked: list[int] = []

    def gone() -> bool:
        asked.append(1)
        return len(asked) == 3

    with pytest.raises(_Gone):
        gunzip(EMPTY_MEMBER * 10_000, 1024, gone=gone)
    assert gunzip(EMPTY_MEMBER * 10_000 + gzip.compress(b"x" * 5000), 5000) == b"x" * 5000
    with pytest.raises(_Refused, match="over the limit of 4999 bytes"):
        gunzip(gzip.compress(b"x" * 5000), 4999)
    with pytest.raises(_Refused, match="truncated"):
        gunzip(EMPTY_MEMBER * 3 + EMPTY_MEMBER[:-1], 1024)
    with pytest.raises(_Refused, match="incorrect header check"):
        gunzip(EMPTY_MEMBER + b"garbage", 1024)
    assert _FEED_MIN <= 1024, "a member's first piece is small, so what follows it is not copied each time"


def test_client_gone_sees_a_closed_peer_and_not_an_open_one() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        client = socket.create_connection(listening.getsockname(), timeout=WAIT)
        accepted, _ = listening.accept()
        with accepted:
            client.sendall(b"pipelined")
            assert not client_gone(accepted), "data waiting is not a hang-up"
            client.close()
            socket.socket.recv(accepted, 9)  # the data, then the end of stream behind it
            assert client_gone(accepted)


@pytest.fixture
def make_otlp() -> Iterator[Callable[..., Address]]:
    started: list[OtlpServer] = []

    def make(sink: Callable[[str, Logs | list[Point]], None] = lambda kind, decoded: None, **options: float) -> Address:
        server = OtlpServer(("127.0.0.1", 0), sink, **options)  # type: ignore[arg-type]
        server.start(poll_interval=0.01)
        started.append(server)
        return "127.0.0.1", server.server_address[1]

    yield make
    for server in started:
        server.shutdown()
        server.server_close()


def test_bodies_beyond_the_decoding_slots_wait_then_get_a_503_and_memory_stays_bounded(
    make_otlp: Callable[..., Address],
) -> None:
    entered, release = threading.Event(), threading.Event()

    def sink(kind: str, decoded: Logs | list[Point]) -> None:
        entered.set()
        release.wait(WAIT)

    where = make_otlp(sink, max_bodies=1, deadline=SHORT)
    body = gen.to_json(gen.api_request_logs(1))
    post = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    try:
        with socket.create_connection(where, timeout=WAIT) as first:
            first.sendall(post % (len(body), body))
            assert entered.wait(WAIT), "the first export holds the only slot"
            second = exchange(where, post % (len(body), body))
            assert (statuses(second), header(second, "Retry-After"), header(second, "Connection")) == (
                [503],
                "1",
                "close",  # its body was never read, so the connection cannot carry another request
            )
            release.set()
            assert statuses(read_response(first)) == [200]
        closing = post.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
        assert statuses(exchange(where, closing % (len(body), body))) == [200], "the slot is free again"
    finally:
        release.set()


def test_a_gzip_bomb_within_the_limits_of_a_real_serve_is_413(served: tuple[Serve, Address, Address]) -> None:
    bomb = gzip.compress(b"\0" * (MAX_BODY_BYTES + 1))
    head = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
    answer = exchange(served[2], head + b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(bomb) + bomb)
    assert statuses(answer) == [413]
