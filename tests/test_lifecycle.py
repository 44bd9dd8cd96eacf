"""`serve` from start to finish: reloads, restarts after a crash, `--once`, and a fresh machine (its stops
under every pattern of signals: tests/test_stop.py).

Each test runs `serve` as a real process (tests/support/daemon.py) and follows its JSON log; limits such as
"within 5 s" are timeouts of a wait, never pauses.
"""

from __future__ import annotations

import hashlib
import http.client
import re
import signal
import subprocess
import threading
import time
import urllib.parse
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from exporter.events import TOKEN_TYPES
from exporter.ledger.store import Ledger
from tests.support.corpus import append_activity, generate
from tests.support.daemon import SERVE, clean_env, serving
from tests.support.exposition import by_label, counter_samples, label_values, parsed, samples
from tests.support.lines import line, write
from tests.support.prometheus import PROMTOOL
from tests.support.tools import require
from tests.support.waiting import WAIT

pytestmark = pytest.mark.slow  # a real `serve` per test

REQUESTS = "claude_usage_requests_total"
TOKENS = "claude_usage_tokens_total"
COST = "claude_usage_cost_usd_total"
LINES = "claude_usage_exporter_lines_total"
BYTES_READ = "claude_usage_exporter_bytes_read_total"
FILES = "claude_usage_exporter_files_watched"
TRANSCRIPTS = '{source="transcripts"}'
# The watcher wakes the loop within milliseconds of a write; without it, only the rescan every 60 s
# would. A limit between the two tells them apart.
PROMPTLY = 10.0


# --- helpers --------------------------------------------------------------------------------------


def decreased(before: dict[str, float], after: dict[str, float]) -> dict[str, tuple[float, float | None]]:
    return {k: (v, after.get(k)) for k, v in before.items() if after.get(k, float("-inf")) < v}


def corpus_on_disk(root: Path) -> tuple[int, int]:
    """(lines, bytes) of every transcript under the root: what a reader must count once each."""
    files = list(root.glob("projects/**/*.jsonl"))
    return sum(p.read_bytes().count(b"\n") for p in files), sum(p.stat().st_size for p in files)


# --- SIGHUP ---------------------------------------------------------------------------------------


def test_sighup_reloads_the_config_file_and_project_labels_become_hashes(tmp_path: Path) -> None:
    write(tmp_path / "claude/projects/-home-dev-acme-api/s.jsonl", line())  # cwd /home/dev/acme-api
    config = tmp_path / "config.yaml"
    config.write_text("labels: {project: name}\n")
    with serving(tmp_path / "state", [tmp_path / "claude"], "--config", str(config)) as daemon:
        assert label_values(daemon.metrics(), "project") == {"acme-api"}
        config.write_text("labels: {project: hash}\n")
        daemon.process.send_signal(signal.SIGHUP)
        daemon.wait_for(r"configuration reloaded")
        daemon.wait_for(r"ready: ")  # the first pass with the new settings has published them
        hashed = label_values(daemon.metrics(), "project")
        assert hashed == {hashlib.sha256(b"acme-api").hexdigest()[:12]}
        assert all(re.fullmatch(r"[0-9a-f]{12}", value) for value in hashed)
        assert daemon.get("/readyz")[0] == 200


def test_readyz_answers_200_all_through_a_sighup_reload(tmp_path: Path) -> None:
    """A reload is no restart: the old values stay served until the new ones are published, so a probe
    never sees 503 (a Kubernetes readiness probe would take the pod out of its Service)."""
    generate(tmp_path / "claude", seed=24, days=10)  # enough requests that a publish takes a while
    config = tmp_path / "config.yaml"
    config.write_text("labels: {project: name}\n")
    answers: list[tuple[float, int, float]] = []  # (sent, status, answered), times from time.monotonic
    done = threading.Event()
    with serving(tmp_path / "state", [tmp_path / "claude"], "--config", str(config)) as daemon:

        def probe() -> None:  # back to back on one connection, as fast as the daemon answers
            with closing(http.client.HTTPConnection(urllib.parse.urlsplit(daemon.url).netloc, timeout=WAIT)) as c:
                while not done.is_set():
                    sent = time.monotonic()
                    c.request("GET", "/readyz")
                    answer = c.getresponse()
                    answer.read()
                    answers.append((sent, answer.status, time.monotonic()))

        prober = threading.Thread(target=probe)
        prober.start()
        try:
            config.write_text("labels: {project: hash}\n")
            hup = time.monotonic()
            daemon.process.send_signal(signal.SIGHUP)
            daemon.wait_for(r"configuration reloaded")
            daemon.wait_for(r"ready: ")  # the pass with the new settings has published them
            published = time.monotonic()
        finally:
            done.set()
            prober.join(timeout=WAIT)
    during = [status for sent, status, answered in answers if hup <= sent and answered <= published]
    assert during  # the probe did ask while the reload was under way
    assert {status for _, status, _ in answers} == {200}


@pytest.mark.parametrize(
    "invalid",
    [
        pytest.param("labels: {project: sha1}\n", id="a value out of its choices"),
        pytest.param("labels: {project: hash\n", id="broken YAML"),
        pytest.param("labels: {projects: hash}\n", id="an unknown key"),
        pytest.param(None, id="the file deleted"),
    ],
)
def test_an_invalid_config_on_sighup_is_not_loaded_and_the_old_settings_stay(
    tmp_path: Path, invalid: str | None
) -> None:
    write(tmp_path / "claude/projects/p/s.jsonl", line())
    config = tmp_path / "config.yaml"
    config.write_text("labels: {project: hash}\n")
    hashed = {hashlib.sha256(b"acme-api").hexdigest()[:12]}
    with serving(tmp_path / "state", [tmp_path / "claude"], "--config", str(config)) as daemon:
        assert label_values(daemon.metrics(), "project") == hashed
        if invalid is None:
            config.unlink()
        else:
            config.write_text(invalid)
        daemon.process.send_signal(signal.SIGHUP)
        found = daemon.wait_for(r'"level":"error","msg":"configuration not reloaded: ([^:]*): ')
        assert found[1] == str(config)
        write(tmp_path / "claude/projects/p/s.jsonl", line(m_id="msg_2", requestId="req_2"))
        daemon.wait_for_requests(1)  # still following the transcripts, with the old settings
        exposition = daemon.metrics()
        assert label_values(exposition, "project") == hashed
        assert sum(samples(exposition, REQUESTS).values()) == 2
        assert (daemon.get("/healthz")[0], daemon.get("/readyz")[0]) == (200, 200)
        assert daemon.stop() == 0


# --- continuity -----------------------------------------------------------------------------------


def test_a_kill_9_mid_run_and_a_restart_on_the_same_state_dir_count_everything_once(tmp_path: Path) -> None:
    root, state = tmp_path / "claude", tmp_path / "state"
    truth = generate(root, seed=21, days=3)
    with serving(state, [root]) as daemon:
        before = counter_samples(daemon.metrics())
        appended = append_activity(root, seed=21, target_bytes=8 << 20, at=datetime(2026, 9, 4, 12, tzinfo=UTC))
        assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL  # while it reads what was appended
    truth.update(appended.truth)
    with serving(state, [root]) as daemon:
        exposition = daemon.metrics()
        assert daemon.stop() == 0
    after = counter_samples(exposition)
    assert decreased(before, after) == {}

    lines, size = corpus_on_disk(root)  # the corpus: every request, line and byte once
    assert sum(samples(exposition, REQUESTS).values()) == len(truth.requests)
    assert tuple(by_label(exposition, TOKENS, "token_type")[t] for t in TOKEN_TYPES) == truth.totals()
    assert sum(samples(exposition, LINES).values()) == lines
    assert samples(exposition, BYTES_READ) == {TRANSCRIPTS: size}

    with closing(Ledger(state)) as ledger:  # and the ledger: what the counters were read from
        count, cost = ledger.db.execute("SELECT count(*), sum(cost) FROM requests").fetchone()
        stored = {k.rpartition(".")[2]: v for k, v in ledger.counters().items() if k.startswith("lines.")}
    assert sum(samples(exposition, REQUESTS).values()) == count
    assert round(sum(samples(exposition, COST).values()) * 1e9) == cost
    shown = {k: v for k, v in by_label(exposition, LINES, "outcome").items() if v}
    assert shown == stored


def test_deleting_every_transcript_and_restarting_leaves_every_counter_sample_unchanged(tmp_path: Path) -> None:
    root, state = tmp_path / "claude", tmp_path / "state"
    generate(root, seed=22, days=3)
    with serving(state, [root]) as daemon:
        before = counter_samples(daemon.metrics())
        assert daemon.stop() == 0
    for path in root.glob("projects/**/*.jsonl"):
        path.unlink()
    with serving(state, [root]) as daemon:
        exposition = daemon.metrics()
        assert samples(exposition, FILES) == {"": 0.0}
        assert counter_samples(exposition) == before
        assert len(before) > 100  # a history worth keeping


# --- one shot -------------------------------------------------------------------------------------


def test_serve_once_prints_an_exposition_promtool_accepts_and_exits_0(tmp_path: Path) -> None:
    require(PROMTOOL, "`serve --once` output checked by `promtool check metrics` (Debian package `prometheus`)")
    truth = generate(tmp_path / "claude", seed=23, days=2)
    clean = clean_env()
    once = subprocess.run(
        [
            *SERVE,
            "--once",
            "--state-dir",
            str(tmp_path / "state"),
            "--claude-dir",
            str(tmp_path / "claude"),
            "--log.format",
            "json",
        ],
        capture_output=True,
        timeout=WAIT,
        env={**clean, "TZ": "UTC"},
        cwd=Path(__file__).parent.parent,
    )
    assert once.returncode == 0, once.stderr.decode()
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=once.stdout, capture_output=True, timeout=WAIT)
    assert (checked.returncode, checked.stdout + checked.stderr) == (0, b"")
    exposition = once.stdout.decode()
    assert sum(samples(exposition, REQUESTS).values()) == len(truth.requests)
    assert not any(sample.name.startswith("process_") for sample in parsed(exposition))


# --- a fresh machine ------------------------------------------------------------------------------


def test_on_a_fresh_machine_it_starts_ready_and_counts_the_first_transcript_once_it_appears(tmp_path: Path) -> None:
    home = tmp_path / "home"  # no Claude Code dir yet: serve follows the default ones, as it would there
    home.mkdir()
    with serving(tmp_path / "state", [], env={"HOME": str(home), "CLAUDE_CONFIG_DIR": ""}) as daemon:
        assert daemon.get("/readyz")[::2] == (200, b"ready\n")
        exposition = daemon.metrics()
        assert (samples(exposition, FILES), samples(exposition, REQUESTS)) == ({"": 0.0}, {})
        write(home / ".claude/projects/p/s.jsonl", line())  # Claude Code's first session
        daemon.wait_for_requests(1, PROMPTLY)
        exposition = daemon.metrics()
        assert (samples(exposition, FILES), sum(samples(exposition, REQUESTS).values())) == ({"": 1.0}, 1)
