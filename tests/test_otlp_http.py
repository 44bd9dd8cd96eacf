"""The OTLP/HTTP receiver on real loopback sockets: every answer, chunked and gzip bodies, limits, keep-alive."""

from __future__ import annotations

import gzip
import http.client
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
import pytest
from google.rpc.status_pb2 import Status
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from exporter.sources.otlp import JSON, PROTOBUF, Logs, Point, decode_logs, decode_metrics
from exporter.web.otlp import OtlpServer
from tests.support import otlpgen as gen

LIMIT = 256 * 1024
TOKEN = "s3cret-token"
Response = tuple[int, dict[str, str], bytes]


class Recorder:
    """A sink that keeps what it is given, or fails like a full disk when told to."""

    def __init__(self) -> None:
        self.received: list[tuple[str, Logs | list[Point]]] = []
        self.failing = False

    def __call__(self, kind: str, decoded: Logs | list[Point]) -> None:
        if self.failing:
            raise OSError("disk full")
        self.received.append((kind, decoded))


@pytest.fixture
def sink() -> Recorder:
    return Recorder()


@pytest.fixture
def make_server(sink: Recorder) -> Iterator[Callable[..., OtlpServer]]:
    started: list[OtlpServer] = []

    def make(**options: Any) -> OtlpServer:
        server = OtlpServer(("127.0.0.1", 0), sink, **{"max_body_bytes": LIMIT, **options})
        server.start(poll_interval=0.01)  # shutting down then takes 10 ms, not 500
        started.append(server)
        return server

    yield make
    for server in started:
        server.shutdown()
        server.server_close()


@pytest.fixture
def server(make_server: Callable[..., OtlpServer]) -> OtlpServer:
    return make_server()


def connect(server: OtlpServer) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)


def post(
    server: OtlpServer | http.client.HTTPConnection,
    path: str,
    body: bytes | Iterable[bytes],
    headers: dict[str, str],
    method: str = "POST",
) -> Response:
    """One request; an iterable body goes chunked with no Content-Length, as Claude Code sends JSON."""
    connection = server if isinstance(server, http.client.HTTPConnection) else connect(server)
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        if connection is not server:
            connection.close()


def chunks(body: bytes, size: int = 1000) -> Iterator[bytes]:
    return iter([body[i : i + size] for i in range(0, len(body), size)])


def raw(server: OtlpServer, request: bytes) -> tuple[int, bytes]:
    """Bytes straight onto the socket (for framing http.client will not produce); (status, whole answer)."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while data := connection.recv(65536):  # the server closes after refusing a body it did not read
            answer += data
    return int(answer.split(b" ", 2)[1]), answer


def head(content_type: str, extra: str = "") -> bytes:
    return f"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{extra}\r\n".encode()


LOGS = gen.to_json(gen.api_request_logs(100))
JSON_HEADERS = {"Content-Type": JSON}
PB_HEADERS = {"Content-Type": PROTOBUF}


def test_claude_codes_chunked_json_export_reaches_the_sink_and_gets_an_empty_success(
    server: OtlpServer, sink: Recorder
) -> None:
    status, headers, body = post(server, "/v1/logs", chunks(LOGS), JSON_HEADERS)
    assert (status, headers["Content-Type"], body) == (200, JSON, b"{}")
    assert sink.received == [("logs", decode_logs(LOGS, JSON))]
    assert len(decode_logs(LOGS, JSON).requests) == 100


def test_a_protobuf_export_with_a_length_gets_a_protobuf_answer(server: OtlpServer, sink: Recorder) -> None:
    logs = gen.to_protobuf(gen.conversation_logs())
    metrics = gen.to_protobuf(gen.session_metrics(1, 2))
    assert post(server, "/v1/logs", logs, PB_HEADERS)[::2] == (200, b"")
    assert post(server, "/v1/metrics?x=1", metrics, {"Content-Type": "application/x-protobuf; proto=x"})[::2] == (
        200,
        b"",
    )
    assert sink.received == [("logs", decode_logs(logs, PROTOBUF)), ("metrics", decode_metrics(metrics, PROTOBUF))]


def test_gzipped_chunked_bodies_are_inflated(server: OtlpServer, sink: Recorder) -> None:
    headers = {**JSON_HEADERS, "Content-Encoding": "gzip"}
    assert post(server, "/v1/logs", chunks(gzip.compress(LOGS), 333), headers)[::2] == (200, b"{}")
    two_members = gzip.compress(LOGS[:500]) + gzip.compress(LOGS[500:])  # concatenated members are one body
    assert post(server, "/v1/logs", two_members, headers)[::2] == (200, b"{}")
    assert sink.received == [("logs", decode_logs(LOGS, JSON))] * 2


def test_rejected_records_get_a_partial_success_in_the_request_encoding(server: OtlpServer, sink: Recorder) -> None:
    bad = gen.api_request(gen.T0_MS, "req_bad", input=-5)
    doc = gen.logs_body([bad, gen.api_request(gen.T0_MS, "req_good")])
    status, _, body = post(server, "/v1/logs", gen.to_json(doc), JSON_HEADERS)
    error = "1 log record(s) rejected; first: api_request record: input_tokens out of range: -5"
    assert (status, orjson.loads(body)) == (200, {"partialSuccess": {"rejectedLogRecords": "1", "errorMessage": error}})
    status, _, body = post(server, "/v1/logs", gen.to_protobuf(doc), PB_HEADERS)
    answer = ExportLogsServiceResponse.FromString(body)
    assert (status, answer.partial_success.rejected_log_records, answer.partial_success.error_message) == (
        200,
        1,
        error,
    )
    kept = [[e.key for e, _, _ in logs.requests] for _, logs in sink.received if isinstance(logs, Logs)]
    assert kept == [["req_good"], ["req_good"]]


def test_one_kept_alive_connection_carries_many_exports(server: OtlpServer, sink: Recorder) -> None:
    connection = connect(server)
    bodies: list[tuple[str, bytes | Iterable[bytes], dict[str, str]]] = [
        ("/v1/logs", chunks(LOGS), JSON_HEADERS),
        ("/v1/metrics", gen.to_json(gen.session_metrics(1, 2)), JSON_HEADERS),
        ("/v1/logs", b"{", JSON_HEADERS),  # a 400 for a body read in full keeps the connection
        ("/v1/logs", gen.to_protobuf(gen.conversation_logs()), PB_HEADERS),
        ("/v1/logs", chunks(LOGS), JSON_HEADERS),
    ]
    try:
        statuses, sockets = [], set()
        for path, body, headers in bodies:
            statuses.append(post(connection, path, body, headers)[0])
            sockets.add(connection.sock)
    finally:
        connection.close()
    assert (statuses, len(sockets)) == ([200, 200, 400, 200, 200], 1)
    assert [kind for kind, _ in sink.received] == ["logs", "metrics", "logs", "logs"]


def test_a_malformed_body_is_400_with_a_status_message(server: OtlpServer, sink: Recorder) -> None:
    status, headers, body = post(server, "/v1/logs", b'{"resourceLogs": 5}', JSON_HEADERS)
    assert (status, headers["Content-Type"], orjson.loads(body)) == (
        400,
        JSON,
        {"message": "resourceLogs should be an array of objects"},
    )
    status, headers, body = post(server, "/v1/metrics", b"\x0a\xff\xff\xff\xff\x0f", PB_HEADERS)
    assert (status, headers["Content-Type"]) == (400, PROTOBUF)
    assert Status.FromString(body).message.startswith("invalid protobuf: ")
    assert sink.received == []


def test_a_broken_gzip_or_chunked_framing_is_400(server: OtlpServer) -> None:
    headers = {**JSON_HEADERS, "Content-Encoding": "gzip"}
    assert post(server, "/v1/logs", b"not gzip at all", headers)[::2] == (
        400,
        b'{"message":"invalid gzip body: Error -3 while decompressing data: incorrect header check"}',
    )
    assert post(server, "/v1/logs", gzip.compress(LOGS)[:-20], headers)[::2] == (
        400,
        b'{"message":"invalid gzip body: truncated"}',
    )
    assert raw(server, head(JSON, "Transfer-Encoding: chunked\r\n") + b"zz\r\n")[0] == 400
    assert raw(server, head(JSON, "Transfer-Encoding: chunked\r\n") + b"2\r\n{}XX0\r\n\r\n")[0] == 400
    assert raw(server, head(JSON, "Content-Length: -1\r\n"))[0] == 400


def test_bearer_tokens_are_required_when_configured(make_server: Callable[..., OtlpServer], sink: Recorder) -> None:
    server = make_server(tokens=frozenset({TOKEN, "other-token"}))
    for authorization in (None, "Bearer wrong", f"Basic {TOKEN}", "Bearer", f"Bearer {TOKEN}x"):
        headers = {**JSON_HEADERS, **({"Authorization": authorization} if authorization else {})}
        status, answer_headers, body = post(server, "/v1/logs", LOGS, headers)
        assert (status, answer_headers["WWW-Authenticate"], body) == (
            401,
            "Bearer",
            b'{"message":"a valid bearer token is required"}',
        )
    assert post(server, "/v1/logs", LOGS, {**JSON_HEADERS, "Authorization": f"Bearer {TOKEN}"})[0] == 200
    assert post(server, "/v1/logs", LOGS, {**JSON_HEADERS, "Authorization": "bearer  other-token "})[0] == 200
    assert len(sink.received) == 2


def test_an_empty_token_is_refused_at_start(sink: Recorder) -> None:
    with pytest.raises(ValueError, match="an empty bearer token would let any client in"):
        OtlpServer(("127.0.0.1", 0), sink, tokens=frozenset({TOKEN, " "}))


def test_unknown_paths_are_404_and_other_methods_405(server: OtlpServer) -> None:
    status, headers, body = post(server, "/v1/traces", LOGS, JSON_HEADERS)
    assert (status, body) == (404, b'{"message":"no OTLP endpoint at /v1/traces: use /v1/logs or /v1/metrics"}')
    assert post(server, "/", b"", {}, method="GET")[0] == 404
    for method in ("GET", "PUT", "DELETE", "HEAD"):
        status, headers, _ = post(server, "/v1/logs", b"", {}, method=method)
        assert (status, headers["Allow"]) == (405, "POST")


def test_bodies_over_the_limit_are_413_before_they_are_read(server: OtlpServer) -> None:
    status, answer = raw(server, head(JSON, f"Content-Length: {LIMIT + 1}\r\n"))
    assert status == 413
    assert answer.endswith(f'{{"message":"body of {LIMIT + 1} bytes over the limit of {LIMIT}"}}'.encode())
    two_chunks = f"{LIMIT // 2:x}\r\n".encode() + b" " * (LIMIT // 2) + f"\r\n{LIMIT // 2 + 1:x}\r\n".encode()
    status, answer = raw(server, head(JSON, "Transfer-Encoding: chunked\r\n") + two_chunks)
    assert status == 413
    assert answer.endswith(f'{{"message":"chunked body over the limit of {LIMIT} bytes"}}'.encode())


def test_a_gzip_bomb_is_413_not_memory(server: OtlpServer, sink: Recorder) -> None:
    bomb = gzip.compress(b"\0" * (64 * LIMIT))  # 16 MiB of zeros in ~16 KiB
    assert len(bomb) < LIMIT
    status, _, body = post(server, "/v1/logs", chunks(bomb, 4096), {**JSON_HEADERS, "Content-Encoding": "gzip"})
    assert (status, body) == (413, f'{{"message":"body inflates to over the limit of {LIMIT} bytes"}}'.encode())
    assert sink.received == []


def test_unsupported_content_types_and_encodings_are_415(server: OtlpServer) -> None:
    status, headers, body = post(server, "/v1/logs", LOGS, {"Content-Type": "text/plain"})
    assert (status, headers["Content-Type"], body) == (
        415,
        "text/plain; charset=utf-8",
        b"unsupported content type 'text/plain': send application/json or application/x-protobuf\n",
    )
    assert post(server, "/v1/logs", LOGS, {})[0] == 415
    status, _, body = post(server, "/v1/logs", LOGS, {**JSON_HEADERS, "Content-Encoding": "br"})
    assert (status, body) == (415, b'{"message":"unsupported content encoding \'br\': send gzip or none"}')


def test_a_failing_sink_is_503_so_the_client_retries(server: OtlpServer, sink: Recorder) -> None:
    sink.failing = True
    status, _, body = post(server, "/v1/logs", LOGS, JSON_HEADERS)
    assert (status, body) == (503, b'{"message":"temporarily unable to store the data; retry later"}')
    sink.failing = False
    assert post(server, "/v1/logs", LOGS, JSON_HEADERS)[0] == 200
    assert len(sink.received) == 1


def test_stats_count_requests_records_by_outcome_and_refusals(server: OtlpServer, sink: Recorder) -> None:
    post(server, "/v1/logs", gen.to_json(gen.conversation_logs()), JSON_HEADERS)
    bad = gen.logs_body([gen.api_request(gen.T0_MS, "r", output=-1)])
    post(server, "/v1/logs", gen.to_protobuf(bad), PB_HEADERS)
    post(server, "/v1/metrics", gen.to_json(gen.session_metrics(1, 2)), JSON_HEADERS)
    post(server, "/v1/logs", b"{", JSON_HEADERS)
    post(server, "/v1/logs", b"{}", {"Content-Type": "text/plain"})
    post(server, "/v1/nothing", b"{}", JSON_HEADERS)
    sink.failing = True
    post(server, "/v1/logs", b"{}", JSON_HEADERS)
    assert server.stats.snapshot() == {
        "requests": 7,
        "records": {"usage": 3, "tool": 2, "skipped": 5, "malformed": 1},
        "points": 10,
        "refused": {400: 1, 415: 1, 404: 1, 503: 1},
    }


def test_closing_the_server_ends_kept_alive_connections(server: OtlpServer, sink: Recorder) -> None:
    connection = connect(server)
    try:
        assert post(connection, "/v1/logs", LOGS, JSON_HEADERS)[0] == 200
        server.shutdown()
        server.server_close()
        with pytest.raises((http.client.HTTPException, ConnectionError)):
            post(connection, "/v1/logs", LOGS, JSON_HEADERS)
    finally:
        connection.close()
    assert len(sink.received) == 1


def test_the_url_names_the_bound_address(server: OtlpServer) -> None:
    assert server.url == f"http://127.0.0.1:{server.server_address[1]}"
