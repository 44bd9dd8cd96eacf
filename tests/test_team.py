"""Team mode with real `serve` processes: Claude Code's OTLP posted over loopback becomes durable usage,
tool and engineering counters; duplicates and transcripts count once; tokens and limits are enforced."""

from __future__ import annotations

import hashlib
import http.client
from pathlib import Path
from typing import Any

import pytest

from tests.support import otlpgen
from tests.support.daemon import Serve, serving
from tests.support.exposition import samples
from tests.support.lines import assistant_line, write
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # a real `serve` per test

CENTRAL = "sources: {transcripts: {enabled: false}}\n"
JSON, PROTOBUF = "application/json", "application/x-protobuf"


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def otlp_url(daemon: Serve) -> str:
    for line in daemon.log:
        if "receiving OTLP on " in line:
            return line.split("receiving OTLP on ")[1].split("/v1/logs")[0]
    return daemon.wait_for(r"receiving OTLP on (\S+)/v1/logs")[1]


def post(daemon: Serve, path: str, body: bytes, content_type: str = JSON, **headers: str) -> tuple[int, bytes]:
    host = otlp_url(daemon).removeprefix("http://")
    connection = http.client.HTTPConnection(host, timeout=30)
    try:
        connection.request("POST", path, body, {"Content-Type": content_type, **headers})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def total(text: str, name: str, **labels: str) -> float:
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    return sum(v for k, v in samples(text, name).items() if all(w in k for w in wanted))


def requests_reach(daemon: Serve, n: int) -> str | None:
    text = daemon.metrics()
    return text if total(text, "claude_usage_requests_total") == n else None


def logs(n: int, first: int = 0, **fields: Any) -> dict[str, Any]:
    return otlpgen.api_request_logs(n, first=first, **fields)


def test_a_central_exporter_counts_posted_requests_once_in_json_and_protobuf(tmp_path: Path) -> None:
    with serving(tmp_path / "state", [], "--config", config(tmp_path, CENTRAL), "--otlp.listen", "127.0.0.1:0") as d:
        assert post(d, "/v1/logs", otlpgen.to_json(logs(3))) == (200, b"{}")
        status, _ = post(d, "/v1/logs", otlpgen.to_protobuf(logs(2, first=3)), PROTOBUF)
        assert status == 200
        assert post(d, "/v1/logs", otlpgen.to_json(logs(5)))[0] == 200  # redelivered: all duplicates
        text = d.metrics()
    assert total(text, "claude_usage_requests_total") == 5
    assert total(text, "claude_usage_cost_usd_total") == 5 * 0.109053  # Claude Code's own price, as sent
    assert total(text, "claude_usage_tokens_total", token_type="cache_write_5m") == 5 * 28908
    assert samples(text, "claude_usage_exporter_lines_total")['{outcome="usage",source="otlp"}'] == 5
    assert samples(text, "claude_usage_exporter_lines_total")['{outcome="duplicate",source="otlp"}'] == 5
    assert samples(text, "claude_usage_exporter_otlp_requests_total") == {'{code="200"}': 3}
    assert samples(text, "claude_usage_exporter_source_up") == {'{source="otlp"}': 1}


def test_engineering_and_tool_counters_are_durable_across_a_restart(tmp_path: Path) -> None:
    args = ("--config", config(tmp_path, CENTRAL), "--otlp.listen", "127.0.0.1:0")
    t0 = otlpgen.T0_MS * 1_000_000
    with serving(tmp_path / "state", [], *args) as d:
        body = otlpgen.session_metrics(t0, t0 + 5_000_000_000, lines=(12, 3), commits=1, pull_requests=1, active_s=2.5)
        assert post(d, "/v1/metrics", otlpgen.to_json(body))[0] == 200
        records = [otlpgen.tool_result(otlpgen.T0_MS), otlpgen.tool_result(otlpgen.T0_MS + 1, "mcp__github__get_pr")]
        assert post(d, "/v1/logs", otlpgen.to_json(otlpgen.logs_body(records)))[0] == 200
    with serving(tmp_path / "state", [], *args) as d:
        text = d.metrics()
    assert samples(text, "claude_usage_lines_of_code_total") == {'{kind="added"}': 12, '{kind="removed"}': 3}
    assert (total(text, "claude_usage_commits_total"), total(text, "claude_usage_pull_requests_total")) == (1, 1)
    assert total(text, "claude_usage_active_time_seconds_total") == 2.5
    assert total(text, "claude_usage_tool_calls_total", tool="Read") == 1
    assert total(text, "claude_usage_tool_calls_total", tool="mcp__github") == 1


def test_with_transcripts_an_event_joins_its_transcript_line_and_one_alone_counts_after_the_grace(
    tmp_path: Path, claude_dir: Path
) -> None:
    # The transcript holds req_000000 (as Claude Code wrote it); the other event is a background call.
    write(claude_dir / "projects" / "p" / "s.jsonl", assistant_line("msg_1", otlpgen.request_id(0)))
    both = config(tmp_path, "sources: {otlp: {grace: 1s}}\n")
    with serving(tmp_path / "state", [claude_dir], "--config", both, "--otlp.listen", "127.0.0.1:0") as d:
        body = logs(2, query_source="generate_session_title")
        assert post(d, "/v1/logs", otlpgen.to_json(body))[0] == 200
        text = eventually(lambda: requests_reach(d, 2))
    assert total(text, "claude_usage_requests_total", agent="main", interaction="conversation") == 1
    assert total(text, "claude_usage_requests_total", agent="auxiliary", interaction="background") == 1
    lines = samples(text, "claude_usage_exporter_lines_total")
    assert (lines['{outcome="usage",source="otlp"}'], lines['{outcome="duplicate",source="otlp"}']) == (1, 1)


def test_a_bearer_token_is_required_when_configured_and_bad_bodies_are_refused(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# one per line\ns3cret\n\n")
    otlp = f"{{bearer_tokens_file: {tokens}, max_body_bytes: 2000}}"
    text = f"sources:\n  transcripts: {{enabled: false}}\n  otlp: {otlp}\n"
    with serving(tmp_path / "state", [], "--config", config(tmp_path, text), "--otlp.listen", "127.0.0.1:0") as d:
        body = otlpgen.to_json(logs(1))
        assert post(d, "/v1/logs", body)[0] == 401
        assert post(d, "/v1/logs", body, Authorization="Bearer s3cret")[0] == 200
        assert post(d, "/v1/logs", b"{not json", Authorization="Bearer s3cret")[0] == 400
        assert post(d, "/v1/logs", otlpgen.to_json(logs(20)), Authorization="Bearer s3cret")[0] == 413
        metrics = d.metrics()
    assert samples(metrics, "claude_usage_exporter_otlp_requests_total") == {
        '{code="200"}': 1,
        '{code="400"}': 1,
        '{code="401"}': 1,
        '{code="413"}': 1,
    }
    assert total(metrics, "claude_usage_requests_total") == 1


def test_the_user_label_is_off_by_default_else_a_hash_or_the_email_as_configured(tmp_path: Path) -> None:
    ada = {"user.email": "ada@example.com"}
    ada_records = logs(2, identity=ada)["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    bob = logs(1, first=2)["resourceLogs"][0]["scopeLogs"][0]["logRecords"]  # API key: only user.id
    body = otlpgen.to_json(otlpgen.logs_body(ada_records + bob))
    found = {}
    for mode in ("off", "hash", "email"):
        text = f"sources: {{transcripts: {{enabled: false}}}}\nlabels: {{user: {mode}}}\n"
        state = tmp_path / mode
        with serving(state, [], "--config", config(tmp_path, text), "--otlp.listen", "127.0.0.1:0") as d:
            assert post(d, "/v1/logs", body)[0] == 200
            requests = samples(d.metrics(), "claude_usage_requests_total")
        found[mode] = {k.split('user="')[1].split('"')[0] if "user=" in k else None: v for k, v in requests.items()}
    assert found["off"] == {None: 3}
    assert found["hash"] == {
        hashlib.sha256(b"ada@example.com").hexdigest()[:12]: 2,
        hashlib.sha256(otlpgen.USER_ID.encode()).hexdigest()[:12]: 1,
    }
    assert found["email"] == {"ada@example.com": 2, otlpgen.USER_ID: 1}
    ledger = (tmp_path / "hash" / "ledger.sqlite3").read_bytes()
    assert b"ada@example.com" not in ledger  # only what the setting asks for reaches the ledger
