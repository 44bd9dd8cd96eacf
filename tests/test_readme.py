"""The README's commands, copy-pasted in order on a fresh machine, all succeed.

What runs: every ```sh block of README.md, in order, in one bash (one terminal: `. .venv/bin/activate`
carries over), in a throwaway checkout folder with a throwaway HOME whose ~/.claude holds generated
transcripts. Each command must exit 0. A file the README asks the reader to save (a ```yaml block
opening with `# NAME.yaml`) is saved there, in its place in the order.

What does not, by a rule the README states too:
- the first block, the set-up commands: the first installs (from the network) and runs `serve` until
  Ctrl-C, the second runs this whole suite. The test plays the first one's part: the built wheel installed
  in the folder's `.venv` (offline, as in tests/test_packaging.py) and `.venv/bin/claude-usage-exporter
  serve` running, ready, while the other commands run.
- a command whose trailing comment says `# needs: …` (the network, Docker): the test asserts exactly
  which, so marking one more is a decision this file records.
`serve` listens on a free port rather than 9477 (parallel runs): the README's `127.0.0.1:9477` is
replaced by it.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.corpus import generate
from tests.support.daemon import clean_env
from tests.support.loopback import answers_ok, free_port
from tests.support.tools import require
from tests.support.waiting import WAIT, eventually
from tests.test_packaging import build, install

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.M | re.S)
FENCED = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
SAVED = re.compile(r"# ([\w.-]+\.yaml)\n")
NEEDS = re.compile(r"\s#[^#]*\bneeds: [^#]*$")
HEREDOC = re.compile(r"<<-?\s*'?(\w+)'?")
DEFAULT_LISTEN = "127.0.0.1:9477"
FRESH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Command:
    text: str  # one command: continued lines and a here-document's lines included

    @property
    def needs(self) -> bool:
        return bool(NEEDS.search(self.text.splitlines()[0]))


def commands(block: str) -> list[Command]:
    """The block's commands, comment-only and blank lines left out."""
    found: list[Command] = []
    lines = iter(block.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        text = [line]
        while text[-1].endswith("\\"):
            text.append(next(lines))
        if heredoc := HEREDOC.search(line):
            while text[-1] != heredoc[1]:
                text.append(next(lines))
        found.append(Command("\n".join(text)))
    return found


def blocks(markdown: str) -> list[list[Command]]:
    return [commands(b) for b in BLOCK.findall(markdown)]


def script(markdown: str, port: int, statuses: Path) -> tuple[str, list[str]]:
    """The bash script of the README's steps after the set-up block, and the commands it runs: after
    each, its exit status is appended to `statuses`."""
    steps, run = [], []
    for language, body in FENCED.findall(markdown)[1:]:
        if language == "yaml" and (saved := SAVED.match(body)):
            steps.append(f"cat > {saved[1]} <<'README_SAVED'\n{body}README_SAVED\n")
        elif language == "sh":
            for command in commands(body):
                if not command.needs:
                    run.append(command.text.replace(DEFAULT_LISTEN, f"127.0.0.1:{port}"))
                    steps.append(f'{run[-1]}\nprintf "%s\\n" "$?" >> "{statuses}"\n')
    return "".join(steps), run


def test_commands_are_split_at_lines_with_continuations_and_here_documents_kept_whole() -> None:
    block = "# a comment\nls \\\n  -l\n\ncat > f <<'EOF'\na: 1\nEOF\ncurl x   # needs: the network\n"
    assert commands(block) == [
        Command("ls \\\n  -l"),
        Command("cat > f <<'EOF'\na: 1\nEOF"),
        Command("curl x   # needs: the network"),
    ]
    assert [c.needs for c in commands(block)] == [False, False, True]


def test_only_the_set_up_commands_and_those_needing_the_network_or_docker_are_left_out() -> None:
    first, *rest = blocks(README.read_text(encoding="utf-8"))
    assert [c.text for c in first] == [
        "python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/claude-usage-exporter serve",
        "./scripts/test",
    ]
    assert [c.text.split("#")[0].strip() for b in rest for c in b if c.needs] == [
        "pipx install claude-code-usage-exporter",
        "uv tool install claude-code-usage-exporter",
        "docker compose -f deploy/compose/docker-compose.yml up -d --build",
    ]


def test_every_readme_command_runs_in_order_after_the_readmes_own_install(tmp_path: Path) -> None:
    require("/usr/bin/curl", "the README's `curl` commands (Debian package `curl`)")
    port, statuses = free_port(), tmp_path / "statuses"
    steps, to_run = script(README.read_text(encoding="utf-8"), port, statuses)
    assert len(to_run) >= 8, "the README's tour"

    checkout, home = tmp_path / "checkout", tmp_path / "home"
    checkout.mkdir()
    generate(home / ".claude", days=3, sessions_per_day=2)
    install(next(build(tmp_path / "dist").glob("*.whl")), checkout / ".venv")
    env = {k: v for k, v in clean_env().items() if k not in ("CLAUDE_CONFIG_DIR", "VIRTUAL_ENV")}
    # A fresh machine's PATH: not this test's, which may hold a venv with the command in it.
    env |= {"HOME": str(home), "TZ": "UTC", "COLUMNS": "120", "PATH": FRESH_PATH}

    serve_log = tmp_path / "serve.log"
    listen = f"127.0.0.1:{port}"
    with serve_log.open("wb") as log:
        serve = subprocess.Popen(
            [checkout / ".venv/bin/claude-usage-exporter", "serve", "--web.listen-address", listen],
            cwd=checkout,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"http://{listen}/readyz"
        eventually(lambda: answers_ok(url, serve, serve_log.read_text), what=f"serve ready on {url}")
        done = subprocess.run(
            ["bash", "-c", steps], cwd=checkout, env=env, capture_output=True, text=True, timeout=10 * WAIT
        )
    finally:
        serve.terminate()
        serve.wait(timeout=WAIT)
    told = statuses.read_text().split() if statuses.exists() else []
    failed = [(text, code) for text, code in zip(to_run, told, strict=False) if code != "0"]
    assert (failed, len(told)) == ([], len(to_run)), f"stderr:\n{done.stderr[-4000:]}"
    assert serve.returncode == 0, serve_log.read_text()
