"""`serve --once --output FILE`: the exposition for node_exporter's textfile collector, for machines that
sleep (a scraped exporter flaps; node_exporter, often already running, serves the last file written).

A real node_exporter (Debian `prometheus-node-exporter`), with only its textfile collector, reads the file
and serves our series again, with no scrape error; the file is replaced by a rename, never rewritten in
place, so the collector never reads half of it.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from exporter.cli.commands import main
from tests.support.daemon import REPO, SERVE, clean_env
from tests.support.lines import line, request, write
from tests.support.loopback import answers_ok, free_port
from tests.support.tools import require
from tests.support.waiting import WAIT, eventually

NODE_EXPORTER = "/usr/bin/prometheus-node-exporter"
WHY = "node_exporter reading the textfile (Debian package `prometheus-node-exporter`)"
ANALYZE = "/usr/bin/systemd-analyze"
SERVICE = REPO / "deploy/systemd/claude-usage-textfile.service"
TIMER = REPO / "deploy/systemd/claude-usage-textfile.timer"

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def series(text: str, prefix: str = "claude_usage_") -> Series:
    """`{(name, labels): value}`; a bucket's bound as a number, which node_exporter writes its own way (1e+06)."""
    return {
        (s.name, tuple(sorted((k, repr(float(v)) if k == "le" else v) for k, v in s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name.startswith(prefix)
    }


def serve_once(tmp_path: Path, claude: Path, output: Path) -> None:
    env = {**clean_env(), "HOME": str(tmp_path / "home"), "TZ": "UTC"}
    args = [*SERVE, "--once", "--claude-dir", str(claude), "--output", str(output)]
    done = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=WAIT)
    assert (done.returncode, done.stdout) == (0, ""), done.stderr


def node_exporter_metrics(folder: Path, log: Path) -> str:
    """node_exporter's /metrics with only its textfile collector, reading `folder`."""
    port = free_port()
    args = [
        NODE_EXPORTER,
        "--collector.disable-defaults",
        "--collector.textfile",
        f"--collector.textfile.directory={folder}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    url = f"http://127.0.0.1:{port}/metrics"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        eventually(lambda: answers_ok(url, process, log.read_text), what=f"node_exporter answering on {url}")
        with urllib.request.urlopen(url, timeout=WAIT) as answer:
            return str(answer.read().decode())
    finally:
        process.terminate()
        process.wait(timeout=WAIT)


@pytest.fixture
def claude(tmp_path: Path) -> Path:
    root = tmp_path / "claude"
    write(root / "projects" / "-home-dev-notes-app" / "s1.jsonl", line())
    return root


def test_node_exporters_textfile_collector_serves_every_series_of_the_file(tmp_path: Path, claude: Path) -> None:
    require(NODE_EXPORTER, WHY)
    folder = tmp_path / "textfile"
    folder.mkdir()
    serve_once(tmp_path, claude, folder / "claude-usage.prom")
    ours = series((folder / "claude-usage.prom").read_text(encoding="utf-8"))

    served = node_exporter_metrics(folder, tmp_path / "node_exporter.log")

    assert series(served, "node_textfile_scrape_error") == {("node_textfile_scrape_error", ()): 0.0}
    assert [v for (name, _), v in ours.items() if name == "claude_usage_requests_total"] == [1.0]
    assert series(served) == ours


def test_each_run_replaces_the_file_by_a_rename_and_leaves_nothing_else(tmp_path: Path, claude: Path) -> None:
    folder = tmp_path / "textfile"
    folder.mkdir()
    output = folder / "claude-usage.prom"
    serve_once(tmp_path, claude, output)
    first = output.stat()
    write(claude / "projects" / "-home-dev-notes-app" / "s1.jsonl", request(2))

    serve_once(tmp_path, claude, output)

    second = output.stat()
    assert second.st_ino != first.st_ino  # a new file renamed over the old one, not the old one rewritten
    assert oct(second.st_mode & 0o777) == oct(0o644)  # node_exporter usually runs as another user
    assert os.listdir(folder) == ["claude-usage.prom"]
    requests = series(output.read_text(encoding="utf-8"))
    assert sum(v for (name, _), v in requests.items() if name == "claude_usage_requests_total") == 2.0


def test_output_without_once_is_refused_before_anything_starts(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["serve", "--output", str(tmp_path / "x.prom")], env={"HOME": str(tmp_path)})
    assert result.exit_code == 2
    assert result.output.splitlines()[-1] == "Error: --output needs --once: it writes one exposition and exits"
    assert list(tmp_path.iterdir()) == []


def directives(path: Path) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        stripped = raw.strip()
        if stripped.startswith("["):
            section = stripped.strip("[]")
        elif stripped and stripped[0] not in "#;":
            key, _, value = stripped.partition("=")
            found.setdefault(section, {})[key] = value  # the last of a repeated key, enough here
    return found


def test_the_timers_service_writes_the_textfile_folder_it_may_write() -> None:
    service, timer = directives(SERVICE), directives(TIMER)
    program, *args = shlex.split(service["Service"]["ExecStart"])
    assert (program, args[:2], service["Service"]["Type"]) == (
        "%h/.local/bin/claude-usage-exporter",
        ["serve", "--once"],
        "oneshot",
    )
    output = Path(args[args.index("--output") + 1])
    assert output.suffix == ".prom", "the textfile collector reads *.prom only"
    state = args[args.index("--state-dir") + 1]
    assert service["Service"]["ReadWritePaths"].split() == [state, str(output.parent)]
    assert (timer["Timer"]["OnUnitActiveSec"], timer["Install"]["WantedBy"]) == ("1min", "timers.target")
    assert TIMER.with_suffix(".service") == SERVICE, "a timer starts the service of its own name"


def test_systemd_analyze_verifies_the_timer_and_its_service_without_a_warning(tmp_path: Path) -> None:
    require(ANALYZE, "the timer checked by systemd-analyze (Debian package `systemd`)")
    bin_dir = tmp_path / "home/.local/bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "claude-usage-exporter").symlink_to(Path(sys.prefix) / "bin/claude-usage-exporter")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_RUNTIME_DIR": str(runtime)}
    args = [ANALYZE, "--user", "verify", "--man=no", str(TIMER), str(SERVICE)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    told = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert (done.returncode, told) == (0, [])


def test_a_missing_output_folder_is_a_clear_error(tmp_path: Path, claude: Path) -> None:
    output = tmp_path / "missing" / "claude-usage.prom"
    args = ["serve", "--once", "--claude-dir", str(claude), "--output", str(output)]
    result = CliRunner().invoke(main, args, env={"HOME": str(tmp_path / "home"), "TZ": "UTC"})
    assert (result.exit_code, result.output.splitlines()[-1]) == (
        1,
        f"Error: cannot write {output}: No such file or directory",
    )
