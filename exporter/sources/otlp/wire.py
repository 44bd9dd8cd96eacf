"""OTLP/HTTP on the wire: the two content types, the answers a receiver sends, and the plumbing both
decoders walk bodies with (OTLP/JSON as plain dicts, protobuf through opentelemetry.proto). Pure."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class OtlpError(ValueError):
    """A body we cannot take as a whole; `status` is the HTTP answer (400 malformed, 415 unsupported)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --- content types and responses -----------------------------------------------------------------


def media_type(content_type: str | None) -> str:
    """`application/json` or `application/x-protobuf` (parameters ignored); else OtlpError with status 415."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != JSON and media != PROTOBUF:
        raise OtlpError(f"unsupported content type {content_type!r}: send {JSON} or {PROTOBUF}", 415)
    return media


def response(kind: Literal["logs", "metrics"], content_type: str, rejected: int, message: str) -> bytes:
    """The Export*ServiceResponse body, in the request's encoding; partial success only if rejected > 0."""
    if media_type(content_type) == JSON:
        if rejected <= 0:
            return b"{}"
        field = "rejectedLogRecords" if kind == "logs" else "rejectedDataPoints"
        # int64 is a decimal string in proto3 JSON; OTLP decoders take strings and numbers alike.
        return orjson.dumps({"partialSuccess": {field: str(rejected), "errorMessage": message}})
    if kind == "logs":
        logs = logs_pb.ExportLogsServiceResponse()
        if rejected > 0:
            logs.partial_success.rejected_log_records = rejected
            logs.partial_success.error_message = message
        encoded: bytes = logs.SerializeToString()
        return encoded
    metrics = metrics_pb.ExportMetricsServiceResponse()
    if rejected > 0:
        metrics.partial_success.rejected_data_points = rejected
        metrics.partial_success.error_message = message
    encoded = metrics.SerializeToString()
    return encoded


def status_body(content_type: str | None, message: str) -> tuple[bytes, str]:
    """An error answer as OTLP/HTTP wants it: a google.rpc.Status (message only) in the request's encoding."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == JSON:
        return orjson.dumps({"message": message}), JSON
    if media == PROTOBUF:
        text = message.encode()
        return b"\x12" + _varint(len(text)) + text, PROTOBUF  # field 2 (message), length-delimited
    return message.encode() + b"\n", "text/plain; charset=utf-8"


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# --- OTLP/JSON and protobuf plumbing -------------------------------------------------------------


def json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise OtlpError(f"invalid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise OtlpError("the body should be a JSON object")
    return doc


def parse_protobuf(
    message: logs_pb.ExportLogsServiceRequest | metrics_pb.ExportMetricsServiceRequest, body: bytes
) -> None:
    try:
        message.ParseFromString(body)
    except (DecodeError, RuntimeError, ValueError) as e:  # upb reports some failures as RuntimeError
        raise OtlpError(f"invalid protobuf: {e}") from None


def array(parent: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """`parent[key]`, a list of objects; absent or null is empty (proto3 JSON), anything else is malformed."""
    items = parent.get(key)
    if items is None:
        return []
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise OtlpError(f"{key} should be an array of objects")
    return items


def resource_object(value: object) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OtlpError("resource should be an object")
    return value


def json_value(value: dict[str, Any]) -> object:
    for item in value.values():  # an AnyValue has one member, whatever its type
        return item
    return None


def json_attributes(items: object) -> dict[str, object]:
    if items is None:
        return {}
    if not isinstance(items, list):
        raise OtlpError("attributes should be an array")
    found: dict[str, object] = {}
    try:
        for kv in items:  # the hot loop of JSON decoding: _json_value inlined
            key, value, item = kv["key"], kv.get("value"), None
            if type(key) is not str:
                raise TypeError
            if value:
                for item in value.values():  # noqa: B007 - the first (only) member is the value
                    break
            found[key] = item
    except (AttributeError, KeyError, TypeError):
        raise OtlpError("an attribute should be an object with a string key and a value") from None
    return found


def pb_attributes(items: Iterable[KeyValue]) -> dict[str, object]:
    found: dict[str, object] = {}
    for kv in items:
        value = kv.value
        which = value.WhichOneof("value")
        found[kv.key] = getattr(value, which) if which else None
    return found
