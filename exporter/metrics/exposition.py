"""The metric contract and its exposition: the only place instruments are created.

Usage counters are OpenTelemetry observable instruments reading the ledger's durable counters,
rendered once per ingest that changed something, so a scrape of 10,000 series serves bytes already
made. Health gauges and `process_*` are rendered at each scrape. OpenTelemetry has no asynchronous
histogram, so the one histogram restored from the ledger is a prometheus_client collector beside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider, ObservableCounter, ObservableGauge
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics

from exporter import __version__
from exporter.events import Outcome, Source, latest, to_ms
from exporter.ledger.store import Ledger
from exporter.metrics.billing import read_analytics, read_time
from exporter.metrics.contract import CONTRACT, ENGINEERING, SOURCES, Spec
from exporter.metrics.points import HISTOGRAMS, Histogram, LabelPolicy, Labels, Points, read_histograms, read_points

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = openmetrics.CONTENT_TYPE_LATEST


@dataclass
class Health:
    """What the daemon reports about itself; written by its loop, read at each scrape."""

    source_up: dict[str, int] = field(default_factory=dict)
    files_watched: int = 0
    pending_since: float | None = None  # monotonic time of the oldest change not yet ingested
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time  # for ages of what the ledger stamped in epoch seconds
    windows: Points = field(default_factory=dict)  # budgets and block, recomputed by the loop
    otlp: Callable[[], dict[str, int]] = dict  # the receiver's answers by status code
    pushes: Callable[[], dict[str, int]] = dict  # the pusher's outcomes
    plan: Callable[[], Points] = dict  # read at each scrape: `statusline` may write at any time

    def lag(self) -> float:
        return 0.0 if self.pending_since is None else max(0.0, self.clock() - self.pending_since)


@dataclass
class Snapshot:
    """The ledger's values at one moment: what the usage instruments observe."""

    points: Points = field(default_factory=dict)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    billing_read_at: float | None = None  # epoch seconds of the last full read of the Admin API


def read_snapshot(
    ledger: Ledger,
    policy: LabelPolicy,
    build: dict[str, str],
    sources: tuple[str, ...] = SOURCES,
    *,
    billing: bool = False,
) -> Snapshot:
    points = read_points(ledger, policy)
    # Every source's counters exist from the start at 0, so rate() and increase() see their first rise.
    lines: dict[Labels, float] = {(("outcome", o), ("source", src)): 0.0 for src in sources for o in Outcome}
    if billing:  # the Admin API's rows: skipped (not USD) or malformed, never usage or duplicate
        lines |= {(("outcome", o), ("source", "anthropic_admin")): 0.0 for o in (Outcome.SKIPPED, Outcome.MALFORMED)}
    bytes_read: dict[Labels, float] = {(("source", Source.TRANSCRIPTS),): 0.0}
    errors = dict(bytes_read)
    slow = dict(bytes_read)
    engineering: dict[str, dict[Labels, float]] = {}
    if Source.OTLP in sources:
        for name, kinds, _ in ENGINEERING.values():
            engineering[name] = {_kind(k): 0.0 for k in kinds}
    for name, value in ledger.counters().items():
        kind, _, rest = name.partition(".")
        if kind == "eng" and rest.partition(".")[0] in ENGINEERING:
            metric, _, what = rest.partition(".")
            name, _, scale = ENGINEERING[metric]
            engineering.setdefault(name, {})[_kind(what)] = value / scale
        elif kind == "lines":
            source, _, outcome = rest.partition(".")
            lines[(("outcome", outcome), ("source", source))] = value
        elif kind == "bytes":
            bytes_read[(("source", rest),)] = value
        elif kind == "errors":
            errors[(("source", rest),)] = value
        elif kind == "slow":
            slow[(("source", rest),)] = value
    # Rows a release before the bound on future times stored (year 9999) must not pin the gauge there.
    (last,) = ledger.db.execute("SELECT max(ts) FROM requests WHERE ts <= ?", (to_ms(latest()),)).fetchone()
    count = sum(points.get("claude_usage_requests_total", {}).values())  # each request counts once there
    points |= {
        "claude_usage_exporter_lines_total": lines,
        "claude_usage_exporter_bytes_read_total": bytes_read,
        "claude_usage_exporter_read_errors_total": errors,
        "claude_usage_exporter_slow_lines_total": slow,
        "claude_usage_exporter_ledger_requests": {(): count},
        "claude_usage_exporter_build_info": {tuple(sorted(build.items())): 1},
        **engineering,
    }
    if last is not None:
        points["claude_usage_last_request_timestamp_seconds"] = {(): last / 1000}
    if billing:  # the bill itself is clock-driven: the daemon's windows pass reads it (see metrics/billing.py)
        return Snapshot(points | read_analytics(ledger, policy), read_histograms(ledger), read_time(ledger))
    return Snapshot(points, read_histograms(ledger))


def _kind(kind: str) -> Labels:
    return (("kind", kind),) if kind else ()


class _Histograms:
    """The histograms, from their durable bucket counts (OpenTelemetry cannot observe a histogram)."""

    def __init__(self, exposition: Exposition) -> None:
        self.exposition = exposition

    def collect(self) -> Iterator[Metric]:
        for spec in CONTRACT:
            if spec.kind != "histogram":
                continue
            bounds = [*(f"{float(b)}" for b in HISTOGRAMS[spec.name][0]), "+Inf"]
            family = HistogramMetricFamily(spec.name, spec.help, labels=spec.labels, unit=_unit(spec.unit))
            for label, (counts, total) in sorted(self.exposition.snapshot.histograms.get(spec.name, {}).items()):
                family.add_metric(
                    [label] if spec.labels else [], list(zip(bounds, accumulate(counts), strict=True)), total
                )
            yield family


def _observe(points: dict[Labels, float]) -> list[Observation]:
    return [Observation(value, dict(labels)) for labels, value in points.items()]


def _unit(unit: str) -> str:
    return "" if unit.startswith("{") else unit


def _registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=False)


class Exposition:
    """Builds the instruments of the contract on private registries and serves their rendering."""

    def __init__(self, health: Health, build: dict[str, str], push: bool = False) -> None:
        """`push`: also readers an OTLP pusher collects from (see exporter/metrics/push.py)."""
        self.health = health
        self.build = build
        self.snapshot = Snapshot()
        self.usage, self.live, self.process = _registry(), _registry(), _registry()
        limits: Any = {ObservableCounter: 1_000_000, ObservableGauge: 1_000_000}  # our caps bound labels
        self._providers = []
        self.push_readers: list[InMemoryMetricReader] = []
        for registry, live in ((self.usage, False), (self.live, True)):
            reader = PrometheusMetricReader(
                disable_target_info=True, scope_info_enabled=False, registry=registry, cardinality_limits=limits
            )
            readers: list[MetricReader] = [reader]
            if push:  # cumulative, the reader's default
                self.push_readers.append(InMemoryMetricReader())
                readers.append(self.push_readers[-1])
            provider = MeterProvider(metric_readers=readers)
            self._providers.append(provider)
            meter = provider.get_meter("claude-usage-exporter", __version__)
            for spec in CONTRACT:
                if spec.live != live or spec.kind == "histogram":
                    continue
                create = meter.create_observable_counter if spec.kind == "counter" else meter.create_observable_gauge
                create(spec.name, callbacks=[self._callback(spec)], unit=spec.unit, description=spec.help)
        self.usage.register(_Histograms(self))
        ProcessCollector(registry=self.process)
        self._lock = threading.Lock()  # the usage rendering, swapped by the loop
        # OpenTelemetry's Prometheus reader hands collected data over through one queue: two scrapes
        # collecting at once could each take the other's.
        self._live_lock = threading.Lock()
        self._collected = _Collected([])
        self._plan: Points = {}
        self._rendered: dict[str, bytes] = {}

    def _callback(self, spec: Spec) -> Callable[[CallbackOptions], Iterable[Observation]]:
        if spec.name == "claude_usage_exporter_source_up":
            return lambda _: [Observation(v, {"source": s}) for s, v in sorted(self.health.source_up.items())]
        if spec.name == "claude_usage_exporter_files_watched":
            return lambda _: [Observation(self.health.files_watched)]
        if spec.name == "claude_usage_exporter_ingest_lag_seconds":
            return lambda _: [Observation(self.health.lag())]
        if spec.name == "claude_usage_exporter_otlp_requests_total":
            return lambda _: [Observation(n, {"code": code}) for code, n in sorted(self.health.otlp().items())]
        if spec.name == "claude_usage_exporter_otlp_pushes_total":
            return lambda _: [Observation(n, {"outcome": o}) for o, n in sorted(self.health.pushes().items())]
        if spec.name == "claude_usage_billing_data_age_seconds":
            return lambda _: self._billing_age()
        if spec.name.startswith("claude_usage_plan_"):
            return lambda _: _observe(self._plan.get(spec.name, {}))
        if spec.live:
            return lambda _: _observe(self.health.windows.get(spec.name, {}))
        return lambda _: _observe(self.snapshot.points.get(spec.name, {}))

    def _billing_age(self) -> list[Observation]:
        read_at = self.snapshot.billing_read_at
        return [] if read_at is None else [Observation(max(0.0, self.health.wall() - read_at))]

    def update(self, snapshot: Snapshot) -> None:
        """New usage values, collected once and encoded for Prometheus (OpenMetrics) here, not at each
        scrape; the classic text format is encoded from the same collection when first asked for."""
        with self._lock:
            self.snapshot = snapshot
            self._collected = _Collected(list(self.usage.collect()))
            self._rendered = {OPENMETRICS: _encoder(OPENMETRICS)(self._collected)}

    def refresh_live(self) -> None:
        """Reads, once per collection, what several live instruments share: the plan usage file."""
        self._plan = self.health.plan()

    def render(self, content_type: str, process: bool = True) -> bytes:
        """The exposition; `process=False` leaves out `process_*` (for output that must not vary)."""
        with self._lock:
            usage = self._rendered.get(content_type)
            if usage is None:
                usage = self._rendered[content_type] = _encoder(content_type)(self._collected)
        encode = _encoder(content_type)
        with self._live_lock:
            self.refresh_live()
            live = encode(self.live)
        parts = [usage, live, *([encode(self.process)] if process else [])]
        if content_type == OPENMETRICS:
            parts = [part.removesuffix(b"# EOF\n") for part in parts[:-1]] + parts[-1:]
        return b"".join(parts)

    def close(self) -> None:
        for provider in self._providers:
            provider.shutdown()


class _Collected:
    """Metrics collected once, for the encoders (which take anything with `collect`)."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics


def _encoder(content_type: str) -> Callable[[Any], bytes]:  # a registry, or anything with `collect`
    return openmetrics.generate_latest if content_type == OPENMETRICS else generate_latest


def negotiate(accept: str | None) -> str:
    """OpenMetrics when the scraper asks for it (Prometheus does), else the classic text format."""
    for part in (accept or "").split(","):
        if part.split(";")[0].strip() == "application/openmetrics-text":
            return OPENMETRICS
    return TEXT
