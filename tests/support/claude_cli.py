"""The real Claude Code CLI in tests: where it is, a workspace for it, plan steps that run it offline, an OTLP sink.

`python -m tests.support.claude_cli otlp-sink --port N --out DIR` saves every OTLP/HTTP body it is sent (a plan's
background).
"""

from __future__ import annotations

import argparse
import gzip
import http.server
import itertools
import json
import os
import signal
import sys
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.corpus import project_dir_name
from tests.support.netns import ROOT, Process, Step
from tests.support.tools import missing

CLAUDE = ROOT / "tests" / "node" / "node_modules" / ".bin" / "claude"
MODEL = "claude-sonnet-4-5"
TOOLS = "Read,Edit,Write"
NOTES = "hello from notes\nsecond line\n"
Json = dict[str, Any]


def find_claude() -> Path | None:
    """$CLAUDE_BIN, else the CLI installed by `npm install --prefix tests/node`; None when neither is there."""
    given = os.environ.get("CLAUDE_BIN")
    found = Path(given) if given else CLAUDE
    return found if found.is_file() and os.access(found, os.X_OK) else None


def require_claude() -> Path:
    """The CLI; skips the test loudly where it is missing, fails instead under CI=true."""
    found = find_claude()
    if found is not None:
        return found
    where = os.environ.get("CLAUDE_BIN") or CLAUDE
    missing(f"Claude Code CLI missing ({where}): run `npm install --prefix tests/node`. NOT CHECKED")


@dataclass
class Workspace:
    """Claude Code's config dir, a HOME and a project folder holding the file the fake's script reads and edits."""

    root: Path
    target: str = "notes.txt"

    def __post_init__(self) -> None:
        self.root = self.root.resolve()  # Claude Code names the project folder after the resolved path
        for folder in (self.config, self.home, self.project):
            folder.mkdir(parents=True, exist_ok=True)
        if not (self.project / self.target).exists():
            (self.project / self.target).write_text(NOTES)

    @property
    def config(self) -> Path:
        return self.root / "config"

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def transcripts(self) -> Path:
        """`<config>/projects/<project>/`: session files, and a folder per session for its subagents."""
        return self.config / "projects" / project_dir_name(str(self.project))

    def session_file(self, session_id: str) -> Path:
        """A session's transcript, wherever Claude Code put it (it shortens long project folder names)."""
        found = sorted(self.config.glob(f"projects/*/{session_id}.jsonl"))
        assert len(found) == 1, f"{session_id}.jsonl under {self.config / 'projects'}: {found}"
        return found[0]

    def session(self, session_id: str) -> list[Json]:
        """The lines of a session's transcript."""
        return read_jsonl(self.session_file(session_id))

    def subagent_files(self, session_id: str) -> list[Path]:
        folder = self.session_file(session_id).with_suffix("")
        return sorted((folder / "subagents").glob("agent-*.jsonl"))

    def all_lines(self) -> list[Json]:
        """Every line of every transcript under the config dir, subagents' included."""
        return [line for path in sorted(self.config.glob("projects/**/*.jsonl")) for line in read_jsonl(path)]


def read_jsonl(path: Path) -> list[Json]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Telemetry:
    """Claude Code's OpenTelemetry export to `http://127.0.0.1:{port:<port>}` (a placeholder the plan fills in)."""

    protocol: str = "http/json"  # or http/protobuf
    port: str = "otlp"
    interval_ms: int = 500  # logs and metrics export interval; a final flush follows at exit anyway
    extra: dict[str, str] = field(default_factory=dict)  # e.g. OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE

    def env(self) -> dict[str, str]:
        return {
            "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
            "OTEL_LOGS_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_PROTOCOL": self.protocol,
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{{port:{self.port}}}",
            "OTEL_LOGS_EXPORT_INTERVAL": str(self.interval_ms),
            "OTEL_METRIC_EXPORT_INTERVAL": str(self.interval_ms),
            **self.extra,
        }


def claude_env(ws: Workspace, telemetry: Telemetry | None = None, nonessential: bool = False) -> dict[str, str]:
    """The whole environment of an offline run: nothing of the caller's own Claude Code or OTel settings.

    `nonessential` leaves CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC unset: session-title calls happen only then
    (the namespace still keeps every other host out of reach).
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "HOME": str(ws.home),
        "CLAUDE_CONFIG_DIR": str(ws.config),
        "ANTHROPIC_BASE_URL": "{api}",
        "ANTHROPIC_API_KEY": "dummy",
        "DISABLE_AUTOUPDATER": "1",
    }
    if not nonessential:
        env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    return {**env, **(telemetry.env() if telemetry else {})}


def claude_step(
    ws: Workspace,
    prompt: str,
    *args: str,
    name: str = "claude",
    model: str = MODEL,
    output_format: str = "json",
    telemetry: Telemetry | None = None,
    nonessential: bool = False,
    stdin: str | None = None,
    claude: Path | None = None,
    timeout: float = 120.0,
) -> Step:
    """A plan step running `claude -p PROMPT --model M --output-format F --allowedTools Read,Edit,Write ARGS…`.

    `args` adds flags, e.g. `--resume ID --fork-session`, `--session-id UUID`, `--prompt-suggestions true`.
    stream-json output needs `--verbose`, which is added. An empty prompt with `stdin` suits
    `--input-format stream-json` (see `stream_json_prompt`).
    """
    binary = claude or require_claude()
    argv = [
        str(binary),
        "-p",
        *([prompt] if prompt else []),
        "--model",
        model,
        "--output-format",
        output_format,
        "--allowedTools",
        TOOLS,
        *(["--verbose"] if output_format == "stream-json" else []),
        *args,
    ]
    return Step(
        name=name,
        argv=argv,
        env=claude_env(ws, telemetry, nonessential),
        cwd=str(ws.project),
        stdin=stdin,
        timeout=timeout,
        inherit_env=False,
    )


def stream_json_prompt(prompt: str) -> str:
    """A user message for `--input-format stream-json` on stdin (the SDK's way of talking to the CLI)."""
    return json.dumps({"type": "user", "message": {"role": "user", "content": prompt}}) + "\n"


def result_message(step_stdout: str) -> Json:
    """The final `result` object of a run, from json or stream-json output."""
    lines = [json.loads(line) for line in step_stdout.splitlines() if line.strip().startswith("{")]
    found = [line for line in lines if line.get("type") == "result"]
    assert found, f"no result in the CLI's output:\n{step_stdout[-3000:]}"
    last: Json = found[-1]
    return last


# ---- the OTLP sink --------------------------------------------------------------------------------------------


def otlp_sink(folder: Path, port: str = "otlp", name: str = "otlp-sink") -> Process:
    """A plan's background process saving every OTLP/HTTP body sent to `{port:<port>}` into `folder`."""
    sink = ["-m", "tests.support.claude_cli", "otlp-sink"]
    argv = [sys.executable, *sink, "--port", f"{{port:{port}}}", "--out", str(folder)]
    return Process(name=name, argv=argv, ready_url=f"http://127.0.0.1:{{port:{port}}}/")


def _read_body(handler: http.server.BaseHTTPRequestHandler) -> bytes:
    """The request body, chunked (as Claude Code sends JSON) or with a Content-Length."""
    if "chunked" not in handler.headers.get("Transfer-Encoding", "").lower():
        return handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
    parts: list[bytes] = []
    while True:
        size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
        if size == 0:
            while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        parts.append(handler.rfile.read(size))
        handler.rfile.readline()


def _decoded(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    return body


class Sink:
    """Saves bodies as `NNNN-<signal>.json|.pb` (decompressed) with an `index.jsonl` line each."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.count = itertools.count(1)
        self.lock = threading.Lock()

    def save(self, path: str, headers: dict[str, str], body: bytes) -> None:
        content_type = headers.get("content-type", "")
        signal_name = path.rstrip("/").rsplit("/", 1)[-1] or "unknown"
        with self.lock:
            seq = next(self.count)
            file = f"{seq:04d}-{signal_name}.{'json' if 'json' in content_type else 'pb'}"
            (self.folder / file).write_bytes(body)
            entry = {
                "seq": seq,
                "path": path,
                "file": file,
                "content_type": content_type,
                "size": len(body),
                "content_encoding": headers.get("content-encoding"),
                "transfer_encoding": headers.get("transfer-encoding"),
                "content_length": headers.get("content-length"),
            }
            with (self.folder / "index.jsonl").open("a") as index:
                index.write(json.dumps(entry) + "\n")


def _sink_handler(sink: Sink) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            self._reply(200, "text/plain", b"otlp sink\n")  # readiness

        def do_POST(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            body = _decoded(_read_body(self), headers.get("content-encoding", ""))
            sink.save(self.path, headers, body)
            # An empty Export*ServiceResponse: `{}` in JSON, zero bytes in protobuf.
            if "json" in headers.get("content-type", ""):
                self._reply(200, "application/json", b"{}")
            else:
                self._reply(200, "application/x-protobuf", b"")

        def _reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def serve_sink(port: int, folder: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _sink_handler(Sink(folder)))

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown).start()  # shutdown waits for serve_forever: not from its thread

    signal.signal(signal.SIGTERM, stop)
    server.serve_forever(poll_interval=0.05)  # shutdown() waits for the loop to notice
    server.server_close()


# ---- reading what the sink saved ------------------------------------------------------------------------------


def _value(any_value: Json) -> Any:
    """An OTLP AnyValue as Python (intValue arrives as a number in JSON, a string from protobuf's JSON form)."""
    if "intValue" in any_value:
        return int(any_value["intValue"])
    if "doubleValue" in any_value:
        return float(any_value["doubleValue"])
    if "arrayValue" in any_value:
        return [_value(v) for v in any_value["arrayValue"].get("values", [])]
    for key in ("stringValue", "boolValue"):
        if key in any_value:
            return any_value[key]
    return None


def _attributes(raw: list[Json]) -> Json:
    return {a["key"]: _value(a.get("value", {})) for a in raw}


def otlp_bodies(folder: Path, signal_name: str) -> list[Json]:
    """The sink's bodies for `logs` or `metrics`, in arrival order, as OTLP JSON (protobuf converted)."""
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

    kinds: dict[str, Any] = {"logs": ExportLogsServiceRequest, "metrics": ExportMetricsServiceRequest}
    bodies = []
    for entry in read_jsonl(folder / "index.jsonl") if (folder / "index.jsonl").exists() else []:
        if not entry["path"].endswith(f"/{signal_name}"):
            continue
        raw = (folder / entry["file"]).read_bytes()
        if entry["file"].endswith(".json"):
            bodies.append(json.loads(raw))
        else:
            bodies.append(MessageToDict(kinds[signal_name].FromString(raw)))
    return bodies


def otlp_events(folder: Path) -> list[Json]:
    """Every log event: `{"name": "api_request", "attributes": {...}, "resource": {...}}`, in arrival order."""
    events = []
    for body in otlp_bodies(folder, "logs"):
        for resource_logs in body.get("resourceLogs", []):
            resource = _attributes(resource_logs.get("resource", {}).get("attributes", []))
            for scope_logs in resource_logs.get("scopeLogs", []):
                for record in scope_logs.get("logRecords", []):
                    attributes = _attributes(record.get("attributes", []))
                    name = attributes.get("event.name") or str(_value(record.get("body", {})))
                    events.append({"name": name, "attributes": attributes, "resource": resource})
    return events


def _temporality(raw: Any) -> str | None:
    """delta or cumulative, from JSON's number or protobuf's enum name."""
    names = {
        1: "delta",
        2: "cumulative",
        "AGGREGATION_TEMPORALITY_DELTA": "delta",
        "AGGREGATION_TEMPORALITY_CUMULATIVE": "cumulative",
    }
    return names.get(raw)


def otlp_points(folder: Path) -> list[Json]:
    """Every metric data point: `{"name", "attributes", "value", "temporality"}`, in arrival order."""
    points = []
    for body in otlp_bodies(folder, "metrics"):
        for resource_metrics in body.get("resourceMetrics", []):
            for scope_metrics in resource_metrics.get("scopeMetrics", []):
                for metric in scope_metrics.get("metrics", []):
                    data = metric.get("sum") or metric.get("gauge") or {}
                    for point in data.get("dataPoints", []):
                        value = point.get("asDouble", point.get("asInt"))
                        points.append(
                            {
                                "name": metric["name"],
                                "attributes": _attributes(point.get("attributes", [])),
                                "value": float(value) if value is not None else None,
                                "temporality": _temporality(data.get("aggregationTemporality")),
                            }
                        )
    return points


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.support.claude_cli")
    commands = parser.add_subparsers(dest="command", required=True)
    sink = commands.add_parser("otlp-sink", help="save every OTLP/HTTP body posted to 127.0.0.1:PORT into OUT")
    sink.add_argument("--port", type=int, required=True)
    sink.add_argument("--out", type=Path, required=True)
    given = parser.parse_args(argv)
    serve_sink(given.port, given.out)


if __name__ == "__main__":
    main(sys.argv[1:])
