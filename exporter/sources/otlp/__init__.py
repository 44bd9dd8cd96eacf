"""Claude Code's own OTLP telemetry, decoded: `api_request` log events become usage events, `tool_result`
events tool calls, and its engineering counters running totals. Pure: bytes in, values out (I/O is in
`exporter.web.otlp`). Import from here; the modules below are `wire` (content types, answers, JSON and
protobuf plumbing), `logs`, `metrics` (data points) and `engineering` (running totals).

Strings and times are bounded as `exporter.events` says: a record whose model, request id or session id
is longer than MAX_CHARS, or whose time is more than FUTURE_TOLERANCE after the wall clock (`now`,
injected), is rejected (partial success); project, tool, speed, query_source and identity are shortened.
A metric point later than that is dropped like a point without a value; metric names and attributes
are shortened (they key the series Engineering remembers).
"""

from exporter.sources.otlp.engineering import MAX_SERIES, Engineering
from exporter.sources.otlp.logs import Identity, Logs, ToolResult, agent_of, decode_logs
from exporter.sources.otlp.metrics import Point, decode_metrics
from exporter.sources.otlp.wire import JSON, PROTOBUF, OtlpError, media_type, response, status_body

__all__ = [
    "JSON",
    "MAX_SERIES",
    "PROTOBUF",
    "Engineering",
    "Identity",
    "Logs",
    "OtlpError",
    "Point",
    "ToolResult",
    "agent_of",
    "decode_logs",
    "decode_metrics",
    "media_type",
    "response",
    "status_body",
]
