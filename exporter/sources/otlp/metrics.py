"""Claude Code's OTLP metrics, decoded: the Sum and Gauge data points of an export request, with their
names and attributes shortened (they key the series `Engineering` remembers). Pure."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb

from exporter.events import latest, shorten
from exporter.sources.otlp.wire import (
    EPOCH,
    JSON,
    OtlpError,
    array,
    json_attributes,
    json_object,
    media_type,
    parse_protobuf,
    pb_attributes,
)

_CUMULATIVE = 2  # AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
_CUMULATIVE_NAME = "AGGREGATION_TEMPORALITY_CUMULATIVE"  # proto3 JSON also allows the enum's name


class Point(NamedTuple):
    name: str
    attributes: tuple[tuple[str, str], ...]  # sorted by key
    value: float
    start_ns: int
    time_ns: int
    cumulative: bool
    monotonic: bool


def decode_metrics(body: bytes, content_type: str, now: datetime | None = None) -> list[Point]:
    """The Sum and Gauge data points of an ExportMetricsServiceRequest; histograms and the like are ignored,
    and so are points stamped more than FUTURE_TOLERANCE after `now` (the wall clock when not given)."""
    until = latest(now)
    until_ns = (until - EPOCH) // timedelta(microseconds=1) * 1000
    points = _json_points(json_object(body)) if media_type(content_type) == JSON else _pb_points(body)
    return [p for p in points if p.time_ns <= until_ns and p.start_ns <= until_ns]


def _pb_points(body: bytes) -> list[Point]:
    request = metrics_pb.ExportMetricsServiceRequest()
    parse_protobuf(request, body)
    points: list[Point] = []
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                which = metric.WhichOneof("data")
                if which == "sum":
                    data, cumulative = metric.sum.data_points, metric.sum.aggregation_temporality == _CUMULATIVE
                    monotonic = metric.sum.is_monotonic
                elif which == "gauge":
                    data, cumulative, monotonic = metric.gauge.data_points, False, False
                else:
                    continue
                for p in data:
                    kind = p.WhichOneof("value")
                    if kind is not None:
                        labels = _labels(pb_attributes(p.attributes))
                        value = float(getattr(p, kind))
                        points.append(
                            Point(
                                shorten(metric.name),
                                labels,
                                value,
                                p.start_time_unix_nano,
                                p.time_unix_nano,
                                cumulative,
                                monotonic,
                            )
                        )
    return points


def _json_points(doc: dict[str, Any]) -> list[Point]:
    points: list[Point] = []
    for resource_metrics in array(doc, "resourceMetrics"):
        for scope_metrics in array(resource_metrics, "scopeMetrics"):
            for metric in array(scope_metrics, "metrics"):
                name = metric.get("name") or ""  # absent or null: proto3's default
                if not isinstance(name, str):
                    raise OtlpError("a metric name should be a string")
                if isinstance(metric.get("sum"), dict):
                    data = metric["sum"]
                    temporality = data.get("aggregationTemporality")
                    cumulative = temporality in (_CUMULATIVE, _CUMULATIVE_NAME)
                    monotonic = data.get("isMonotonic") is True
                elif isinstance(metric.get("gauge"), dict):
                    data, cumulative, monotonic = metric["gauge"], False, False
                else:
                    continue
                for p in array(data, "dataPoints"):
                    value = _point_value(p)
                    if value is not None:
                        labels = _labels(json_attributes(p.get("attributes")))
                        points.append(
                            Point(
                                shorten(name),
                                labels,
                                value,
                                _nanos(p.get("startTimeUnixNano")),
                                _nanos(p.get("timeUnixNano")),
                                cumulative,
                                monotonic,
                            )
                        )
    return points


def _point_value(point: dict[str, Any]) -> float | None:
    # A point without a value has nothing to add: skipped rather than read as 0, which would look like a reset.
    value = point.get("asDouble", point.get("asInt"))
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return float(value)  # proto3 JSON writes NaN and Infinity as strings
    except ValueError:
        return None


def _nanos(value: object) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return 0


def _labels(attrs: dict[str, object]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((shorten(k), shorten(_label(v))) for k, v in attrs.items()))


def _label(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # JSON may write a double 1 as 1: the same label as protobuf's 1.0
    return value if isinstance(value, str) else str(value)
