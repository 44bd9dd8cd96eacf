"""OTLP push of our metrics to a receiver on loopback: what arrives, with what temporality and headers,
from an in-process pusher and from a real `serve`."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from exporter.events import Request
from exporter.metrics.exposition import Exposition, Health, read_snapshot
from exporter.metrics.points import LabelPolicy
from exporter.metrics.push import Pusher, metrics_url
from exporter.pipeline import Pipeline
from tests.support.daemon import serving
from tests.support.lines import assistant_line, at, write
from tests.support.waiting import eventually

CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
BUILD = {"version": "test", "pricing_source": "genai-prices", "pricing_version": "0"}


class Capture(ThreadingHTTPServer):
    """An OTLP/HTTP receiver that keeps every request: (path, headers, body)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def requests(self) -> list[ExportMetricsServiceRequest]:
        return [ExportMetricsServiceRequest.FromString(body) for _, _, body in list(self.received)]


class _Handler(BaseHTTPRequestHandler):
    server: Capture

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[Capture]:
    server = Capture()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def metrics(request: ExportMetricsServiceRequest) -> dict[str, Any]:
    (resource,) = request.resource_metrics
    return {m.name: m for scope in resource.scope_metrics for m in scope.metrics}


def test_a_push_sends_counters_gauges_and_histograms_cumulatively(
    capture: Capture, make_app: Callable[..., Pipeline]
) -> None:
    app = make_app()
    app.ledger.commit([Request.from_event(at("2026-11-26T10:00:00+00:00"))], app.enrich)
    exposition = Exposition(Health(), BUILD, push=True)
    exposition.update(read_snapshot(app.ledger, LabelPolicy(), BUILD))
    pusher = Pusher(exposition, capture.url, {"X-Scope-OrgID": "team-a"}, 60)
    assert pusher.push()
    exposition.close()
    ((path, headers, _),) = capture.received
    assert (path, headers["x-scope-orgid"], headers["content-type"]) == (
        "/v1/metrics",
        "team-a",
        "application/x-protobuf",
    )
    (request,) = capture.requests()
    found = metrics(request)
    cost = found["claude_usage_cost_usd_total"].sum
    assert (cost.is_monotonic, cost.aggregation_temporality) == (True, CUMULATIVE)
    assert [p.as_double for p in cost.data_points] == [1.0]  # $1: 1 M input tokens of Haiku 4.5
    assert {kv.key: kv.value.string_value for kv in cost.data_points[0].attributes}["model_family"] == "haiku"
    context = found["claude_usage_request_context_tokens"].histogram
    (point,) = context.data_points
    assert (context.aggregation_temporality, point.count, point.sum, point.HasField("min")) == (
        CUMULATIVE,
        1,
        1_000_000,
        False,
    )
    assert list(point.bucket_counts) == [0] * 9 + [1, 0]  # 1 M tokens: the 1,000,000 bucket
    resource = {kv.key: kv.value.string_value for kv in request.resource_metrics[0].resource.attributes}
    assert resource["service.name"] == "claude-usage-exporter"
    assert pusher.answers() == {"success": 1}


def test_the_pushed_resource_carries_the_otel_resource_attributes_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.instance.id=laptop-7,service.name=ignored")
    pusher = Pusher(Exposition(Health(), BUILD, push=True), "http://127.0.0.1:9", {}, 60)
    attributes = dict(pusher.resource.attributes)
    assert (attributes["service.instance.id"], attributes["service.name"]) == ("laptop-7", "claude-usage-exporter")
    pusher.exposition.close()


def test_a_failed_push_is_counted_and_never_raises() -> None:
    exposition = Exposition(Health(), BUILD, push=True)
    url = "http://127.0.0.1:9/v1/metrics"  # the discard port: refused
    pusher = Pusher(exposition, url, {}, 60, OTLPMetricExporter(endpoint=url, timeout=0.2))  # retries for 0.2 s
    assert not pusher.push()
    assert pusher.answers() == {"failure": 1}
    exposition.close()


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("http://collector:4318", "http://collector:4318/v1/metrics"),
        ("http://collector:4318/", "http://collector:4318/v1/metrics"),
        ("https://mimir.example/otlp/v1/metrics", "https://mimir.example/otlp/v1/metrics"),
    ],
)
def test_a_base_url_gets_otlps_metrics_path(given: str, used: str) -> None:
    assert metrics_url(given) == used


@pytest.mark.slow
def test_serve_pushes_every_interval_and_once_more_when_it_stops(
    capture: Capture, tmp_path: Path, claude_dir: Path
) -> None:
    write(claude_dir / "projects" / "p" / "s.jsonl", assistant_line("msg_1", "req_1"))
    config = tmp_path / "config.yaml"
    config.write_text(f"export: {{otlp_push: {{endpoint: '{capture.url}', interval: 100ms, headers: {{a: b}}}}}}\n")
    with serving(tmp_path / "state", [claude_dir], "--config", str(config)) as daemon:
        eventually(lambda: len(capture.received) >= 2)
        assert daemon.stop() == 0
    pushed = len(capture.received)
    last = metrics(capture.requests()[-1])
    assert sum(p.as_double for p in last["claude_usage_requests_total"].sum.data_points) == 1
    assert {headers.get("a") for _, headers, _ in capture.received} == {"b"}
    assert pushed >= 3  # at least two on the interval and the last one at shutdown
