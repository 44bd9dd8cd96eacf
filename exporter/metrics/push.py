"""OTLP push: every interval, the metrics `/metrics` shows, sent to an OTLP/HTTP endpoint with cumulative
temporality. Counters and gauges come from the OpenTelemetry instruments; the durable histograms, which
OpenTelemetry cannot observe, are added as histogram points built from their bucket counts."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from exporter import __version__
from exporter.metrics.contract import CONTRACT
from exporter.metrics.exposition import Exposition, Snapshot
from exporter.metrics.points import HISTOGRAMS

log = logging.getLogger("claude_usage_exporter")
SCOPE = InstrumentationScope("claude-usage-exporter", __version__)


def metrics_url(endpoint: str) -> str:
    """The endpoint as given, or with OTLP's metrics path when only the collector's base URL was given."""
    scheme, _, rest = endpoint.partition("://")
    return endpoint if "/" in rest.rstrip("/") else f"{scheme}://{rest.rstrip('/')}/v1/metrics"


def histograms(snapshot: Snapshot, start_ns: int, now_ns: int) -> list[Metric]:
    metrics = []
    for spec in CONTRACT:
        if spec.kind != "histogram":
            continue
        bounds = [float(b) for b in HISTOGRAMS[spec.name][0]]
        points = [
            _point(dict(zip(spec.labels, [label], strict=False)), start_ns, now_ns, counts, total, bounds)
            for label, (counts, total) in sorted(snapshot.histograms.get(spec.name, {}).items())
        ]
        if points:
            data = Histogram(points, AggregationTemporality.CUMULATIVE)
            metrics.append(Metric(spec.name, spec.help, spec.unit, data))
    return metrics


def _point(
    attributes: dict[str, str], start_ns: int, now_ns: int, counts: list[int], total: float, bounds: list[float]
) -> HistogramDataPoint:
    # No min or max: the durable buckets never kept them, and None leaves the optional fields unset.
    unset: Any = None
    return HistogramDataPoint(attributes, start_ns, now_ns, sum(counts), total, counts, bounds, unset, unset)


class Pusher:
    def __init__(
        self,
        exposition: Exposition,
        endpoint: str,
        headers: Mapping[str, str],
        interval: float,
        exporter: MetricExporter | None = None,
    ) -> None:
        self.exposition = exposition
        self.url = metrics_url(endpoint)
        self.exporter = exporter or OTLPMetricExporter(endpoint=self.url, headers=dict(headers), timeout=10)
        self.interval = interval
        # `create` adds OTEL_RESOURCE_ATTRIBUTES, e.g. service.instance.id, which tells exporters apart in
        # one backend; our service name and version win over it.
        self.resource = Resource.create({"service.name": "claude-usage-exporter", "service.version": __version__})
        self.started_ns = time.time_ns()
        self.outcomes: Counter[str] = Counter()

    def collect(self) -> MetricsData:
        self.exposition.refresh_live()
        metrics = [
            metric
            for reader in self.exposition.push_readers
            for resource in (reader.get_metrics_data() or MetricsData([])).resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        ]
        metrics += histograms(self.exposition.snapshot, self.started_ns, time.time_ns())
        return MetricsData([ResourceMetrics(self.resource, [ScopeMetrics(SCOPE, metrics, "")], "")])

    def push(self) -> bool:
        try:
            ok = self.exporter.export(self.collect()) == MetricExportResult.SUCCESS
        except Exception:  # a push is best effort: the next interval tries again
            log.exception("OTLP push failed")
            ok = False
        if not ok and not self.outcomes["failure"]:
            log.warning("OTLP push to %s failed; retrying every %g s", self.url, self.interval)
        self.outcomes["success" if ok else "failure"] += 1
        return ok

    def run(self, stop: threading.Event) -> None:
        """Pushes every interval until `stop`, then once more so the last values reach the backend."""
        while not stop.wait(self.interval):
            self.push()
        self.push()
        self.exporter.shutdown()

    def answers(self) -> dict[str, Any]:
        return dict(self.outcomes)
