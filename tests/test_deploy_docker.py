"""The container image's recipe, run without Docker: its entrypoint, command, environment and health check.

No Docker engine runs here, so the Dockerfile is read as data. Its ENTRYPOINT and CMD run against the
installed package with the image's environment: the paths inside the image are mapped to temporary
folders, its listen address to a free loopback port. Its HEALTHCHECK then runs against that process.
As root, the same command also runs as the image's USER on a read-only root filesystem, where only the
state volume and a tmpfs for /tmp can be written, as `docker run --read-only --tmpfs /tmp` would.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tomllib
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt
import pytest

from tests.support.daemon import clean_env
from tests.support.exposition import labelled
from tests.support.lines import line, write
from tests.support.loopback import basic, free_port
from tests.support.tools import require
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # the image's command as a process

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy/docker/Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
VENV = "/opt/claude-usage-exporter"  # where the builder stage makes the virtual environment
STATE = "/var/lib/claude-usage-exporter"  # the state volume
CLAUDE = "/claude"  # where ~/.claude is mounted
LISTEN = "0.0.0.0:9477"
WAIT = 60.0


# --- the Dockerfile as data -----------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    steps: list[tuple[str, str]] = field(default_factory=list)  # (KEYWORD, arguments), in order

    def all(self, keyword: str) -> list[str]:
        return [args for word, args in self.steps if word == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"the stage from {self.base} has no {keyword}"
        return found[-1]


@dataclass
class Dockerfile:
    args: dict[str, str]  # ARGs before the first FROM, with their defaults
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def parse(text: str) -> Dockerfile:
    """Instructions with their continuation lines joined; comments and the parser directive dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue  # comment lines may sit between continuation lines too
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    assert not pending, f"the Dockerfile ends inside a continued instruction: {pending!r}"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for instruction in logical:
        keyword, _, rest = instruction.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            stages.append(Stage(base, words[2] if len(words) == 3 and words[1].upper() == "AS" else None))
        elif not stages:
            assert keyword == "ARG", f"only ARG may come before the first FROM, not {keyword}"
            name, _, default = rest.partition("=")
            args[name] = default
        else:
            stages[-1].steps.append((keyword, rest))
    return Dockerfile(args, stages)


def exec_form(args: str) -> list[str]:
    """A JSON array instruction (`["a", "b"]`), which runs without a shell."""
    words = json.loads(args)
    assert isinstance(words, list) and words and all(isinstance(w, str) for w in words), args
    return words


def pairs(args: str) -> dict[str, str]:
    """`ENV`/`LABEL` arguments: `key=value` pairs, values quoted as a shell would."""
    found = {}
    for word in shlex.split(args):
        key, sep, value = word.partition("=")
        assert sep, f"{word!r} is not key=value (the legacy `ENV key value` form is ambiguous)"
        found[key] = value
    return found


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m[1] or m[2], ""), value)


def image_env(stage: Stage, inherited: dict[str, str]) -> dict[str, str]:
    """The environment a container of this stage starts with (ENV in order, each seeing the earlier ones)."""
    env = dict(inherited)
    for args in stage.all("ENV"):
        for key, value in pairs(args).items():
            env[key] = expand(value, env)
    return env


def healthcheck(stage: Stage) -> tuple[dict[str, str], list[str]]:
    """The HEALTHCHECK's options (`--timeout=5s` …) and its exec-form command."""
    options, found, command = stage.last("HEALTHCHECK").partition("CMD ")
    assert found, "the HEALTHCHECK has no CMD"
    settings = dict(word.removeprefix("--").split("=", 1) for word in options.split())
    return settings, exec_form(command)


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m)", duration)
    assert match, duration
    return int(match[1]) * {"ms": 0.001, "s": 1.0, "m": 60.0}[match[2]]


@pytest.fixture(scope="module")
def dockerfile() -> Dockerfile:
    return parse(DOCKERFILE.read_text())


# --- what the recipe says -------------------------------------------------------------------------


def test_both_stages_start_from_one_python_slim_image_pinned_to_a_patch_release(dockerfile: Dockerfile) -> None:
    assert len(dockerfile.stages) >= 2, "a builder stage and a final one"
    bases = {stage.base for stage in dockerfile.stages}
    # One image for both: the virtual environment's interpreter is a link to the base image's python3.
    assert len(bases) == 1, bases
    (base,) = bases
    assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-[a-z]+", base), f"{base} is not pinned to a patch release"
    labels = pairs(" ".join(dockerfile.final.all("LABEL")))
    assert labels["org.opencontainers.image.base.name"] == f"docker.io/library/{base}"


def test_the_image_carries_oci_labels_with_the_project_version_and_license(dockerfile: Dockerfile) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    labels = pairs(" ".join(dockerfile.final.all("LABEL")))
    arg_defaults = dict(a.partition("=")[::2] for a in dockerfile.final.all("ARG"))
    labels = {k: expand(v, arg_defaults) for k, v in labels.items()}
    assert labels["org.opencontainers.image.title"] == project["name"]
    assert labels["org.opencontainers.image.version"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert {"description", "revision", "created"} <= {k.rpartition(".")[2] for k in labels}


def test_the_image_runs_as_a_fixed_unprivileged_numeric_user(dockerfile: Dockerfile) -> None:
    user = dockerfile.final.last("USER")
    assert re.fullmatch(r"\d+:\d+", user), f"USER {user}: Kubernetes' runAsNonRoot can only check a numeric uid"
    uid, gid = (int(n) for n in user.split(":"))
    assert uid >= 10000 and gid >= 10000, "outside the ranges hosts give their own users"
    made = " ".join(dockerfile.final.all("RUN"))
    assert f"--uid {uid}" in made and f"--gid {gid}" in made
    assert re.search(rf"--owner {uid} --group {gid} --mode 0700 {STATE}\b", made), "the state folder is its own"


def test_the_image_listens_on_all_interfaces_and_keeps_its_state_on_a_volume(dockerfile: Dockerfile) -> None:
    env = image_env(dockerfile.final, {"PATH": "/usr/bin"})
    assert env["CLAUDE_USAGE_EXPORTER_WEB_LISTEN_ADDRESS"] == LISTEN
    assert env["CLAUDE_USAGE_EXPORTER_STATE_DIR"] == STATE == env["HOME"]
    assert env["CLAUDE_USAGE_EXPORTER_CLAUDE_DIR"] == CLAUDE
    assert env["PYTHONDONTWRITEBYTECODE"] == "1", "a read-only root cannot take bytecode"
    assert env["PATH"].split(":")[0] == f"{VENV}/bin"
    assert exec_form(dockerfile.final.last("VOLUME")) == [STATE]
    assert set(" ".join(dockerfile.final.all("EXPOSE")).split()) == {"9477", "4318"}


def test_the_final_stage_takes_the_virtual_environment_the_builder_made(dockerfile: Dockerfile) -> None:
    builder, final = dockerfile.stages[0], dockerfile.final
    assert any(f"python -m venv {VENV}" in run for run in builder.all("RUN"))
    assert f"--from={builder.name} {VENV} {VENV}" in final.all("COPY")
    assert not any(word in run for run in final.all("RUN") for word in ("pip ", "apt-get")), "no build tools"


def dockerignored(relative: str, patterns: list[str]) -> bool:
    """Whether Docker leaves a path out of the build context: the last pattern matching it or a parent wins."""

    def regex(pattern: str) -> re.Pattern[str]:
        parts = re.split(r"(\*\*/?|\*|\?)", pattern.strip("/"))
        wild = {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(wild.get(p, re.escape(p)) for p in parts))

    excluded = False
    candidates = [relative] + ["/".join(relative.split("/")[:n]) for n in range(1, relative.count("/") + 1)]
    for pattern in patterns:
        negated = pattern.startswith("!")
        if any(regex(pattern.removeprefix("!")).fullmatch(path) for path in candidates):
            excluded = not negated
    return excluded


def test_the_build_context_holds_what_the_build_copies_and_nothing_private(dockerfile: Dockerfile) -> None:
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines() if p.strip() and not p.startswith("#")]
    copied = []
    for args in dockerfile.stages[0].all("COPY"):
        copied += args.split()[:-1]
    assert copied, "the builder copies the project"
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        files = (
            [source]
            if (ROOT / source).is_file()
            else [str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py") if "__pycache__" not in p.parts]
        )
        assert files and not [f for f in files if dockerignored(f, patterns)], f"{source} is left out"
    for private in [
        ".git/config",
        ".venv/bin/python",
        "tests/test_cli.py",
        "state/ledger.sqlite3",
        "exporter/__pycache__/cli.cpython-311.pyc",
        ".ci/run",
        "deploy/docker/Dockerfile",
    ]:
        assert dockerignored(private, patterns), f"{private} would be sent to the Docker daemon"


# --- the recipe run -------------------------------------------------------------------------------


@dataclass
class Container:
    """The image's command as a process on this machine, with its environment mapped onto `base`."""

    dockerfile: Dockerfile
    base: Path
    port: int
    prefix: list[str] = field(default_factory=list)
    args: list[str] | None = None  # instead of the image's CMD, as Kubernetes' `args` are
    mounts: dict[str, str] = field(default_factory=dict)  # more paths inside the image, and where they are

    def __post_init__(self) -> None:
        self.state, self.claude, self.tmp = self.base / "state", self.base / "claude", self.base / "tmp"
        for folder in (self.state, self.claude, self.tmp):
            folder.mkdir(mode=0o755, exist_ok=True)
        self.places = {VENV: sys.prefix, STATE: str(self.state), CLAUDE: str(self.claude), **self.mounts}
        clean = clean_env()
        env = image_env(self.dockerfile.final, clean)
        assert env["CLAUDE_USAGE_EXPORTER_WEB_LISTEN_ADDRESS"] == LISTEN
        env["CLAUDE_USAGE_EXPORTER_WEB_LISTEN_ADDRESS"] = f"127.0.0.1:{self.port}"  # loopback only, here
        self.env = {k: self.mapped(v) for k, v in env.items()} | {"TMPDIR": str(self.tmp)}
        self.log_path = self.base / "serve.log"
        self.process: subprocess.Popen[bytes] | None = None

    def mapped(self, value: str) -> str:
        """A value with each path inside the image (alone, after `--flag=`, or in a `:`-separated list)
        moved onto the host."""

        def one(path: str) -> str:
            for inside, outside in sorted(self.places.items(), key=lambda place: -len(place[0])):
                if path == inside or path.startswith(inside + "/"):
                    return outside + path[len(inside) :]
            return path

        flag, equals, value = value.rpartition("=") if value.startswith("--") else ("", "", value)
        return flag + equals + ":".join(one(part) for part in value.split(":"))

    def resolve(self, command: list[str]) -> list[str]:
        """An exec-form command as the container runs it: its program found on the image's PATH."""
        program = shutil.which(command[0], path=self.env["PATH"])
        assert program, f"{command[0]} is not on the image's PATH {self.env['PATH']}"
        return [program, *(self.mapped(word) for word in command[1:])]

    def command(self) -> list[str]:
        final = self.dockerfile.final
        args = exec_form(final.last("CMD")) if self.args is None else self.args
        return self.resolve(exec_form(final.last("ENTRYPOINT")) + args)

    def start(self) -> None:
        workdir = self.mapped(self.dockerfile.final.last("WORKDIR"))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*self.prefix, *self.command()],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=self.env,
                cwd=workdir,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> int:
        """The exit code of the image's HEALTHCHECK command, killed as Docker would after its timeout."""
        options, command = healthcheck(self.dockerfile.final)
        try:
            done = subprocess.run(
                self.resolve(command), env=self.env, capture_output=True, timeout=seconds(options["timeout"])
            )
        except subprocess.TimeoutExpired:
            return -1
        return done.returncode

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"the command exited with {self.process.returncode}; its log:\n{self.log()}")
        return self.health() == 0

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=WAIT) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def stop(self) -> int:
        """`docker stop`: the image's STOPSIGNAL, then the exit code."""
        assert self.process is not None
        sig = getattr(signal, self.dockerfile.final.last("STOPSIGNAL"))
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout=WAIT)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT)


def run_the_image(container: Container) -> None:
    """Starts the command on one transcript; checks health, readiness and the request counted; stops it."""
    write(container.claude / "projects/acme-api/session.jsonl", line())
    container.start()
    try:
        eventually(container.healthy, what=lambda: f"the HEALTHCHECK passes; log:\n{container.log()}")
        eventually(lambda: container.get("/readyz")[0] == 200, what="/readyz answers 200")
        status, metrics = container.get("/metrics")
        assert status == 200
        counted = [
            v for labels, v in labelled(metrics, "claude_usage_requests_total") if labels["project"] == "acme-api"
        ]
        assert counted == [1.0], "the transcript under the mounted /claude is counted once"
        assert container.stop() == 0, container.log()
    finally:
        container.kill()
    assert container.health() != 0, "the HEALTHCHECK fails once the exporter is gone"
    assert (container.state / "ledger.sqlite3").is_file(), "the ledger is on the state volume"


def test_the_image_command_serves_and_its_health_check_passes_until_it_stops(
    dockerfile: Dockerfile, shared: Path
) -> None:
    container = Container(dockerfile, shared, free_port())
    assert container.command()[0] == str(Path(sys.prefix) / "bin/claude-usage-exporter"), "the installed script"
    run_the_image(container)


# Inside a new mount namespace: the state volume and the tmpfs stay writable, every other mount becomes
# read-only (checked on the paths given after the script's own), then the command runs as the image's USER.
CONFINE = r"""
set -eu
state=$1 tmp=$2 uid=$3 gid=$4; shift 4
mount --bind "$state" "$state"
mount -t tmpfs -o mode=1777,size=16m tmpfs "$tmp"
for point in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do
  case "$point" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*|"$state"|"$tmp") continue ;; esac
  mount -o remount,bind,ro "$point" 2>/dev/null || true
done
while [ "$1" != -- ]; do
  if touch "$1/.claude-usage-probe" 2>/dev/null; then echo "$1 is still writable" >&2; exit 99; fi
  shift
done
shift
exec setpriv --reuid="$uid" --regid="$gid" --clear-groups "$@"
"""


def test_the_image_command_runs_as_its_user_on_a_read_only_root_filesystem(
    dockerfile: Dockerfile, shared: Path
) -> None:
    require("/usr/bin/unshare", "a mount namespace with a read-only root (util-linux)")
    require("/usr/bin/setpriv", "the command run as the image's USER (util-linux)")
    if os.geteuid() != 0:
        reason = "a read-only root filesystem needs root to mount it: NOT CHECKED"
        pytest.fail(reason) if os.environ.get("CI") == "true" else pytest.skip(reason)
    uid, gid = dockerfile.final.last("USER").split(":")
    container = Container(dockerfile, shared, free_port())
    os.chown(container.state, int(uid), int(gid))
    probes = ["/", sys.prefix, str(ROOT), str(shared)]
    namespace = ["/usr/bin/unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", CONFINE, "confine"]
    container.prefix = [*namespace, str(container.state), str(container.tmp), uid, gid, *probes, "--"]
    run_the_image(container)
    ledger = container.state / "ledger.sqlite3"
    assert (ledger.stat().st_uid, ledger.stat().st_gid) == (int(uid), int(gid)), "written by the image's user"
    assert not list(container.tmp.iterdir()), "the tmpfs was the process's own; the host folder stayed empty"


def secure_web_config(folder: Path, pki: Path, password: str) -> Path:
    """A web config file turning on TLS (the test CA's certificate for 127.0.0.1) and basic auth for `prometheus`."""
    folder.mkdir(exist_ok=True)
    for name in ("server.pem", "server.key"):
        shutil.copy(pki / name, folder / name)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    config = folder / "web.yml"
    tls = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
    config.write_text(f"{tls}basic_auth_users:\n  prometheus: {hashed}\n")
    return config


def https_get(port: int, path: str, pki: Path, password: str | None = None) -> int:
    """The status of a GET over HTTPS, trusting the test CA, with basic auth when a password is given."""
    headers = {"Authorization": basic("prometheus", password or "")}
    request = urllib.request.Request(f"https://127.0.0.1:{port}{path}", headers=headers if password else {})
    try:
        with urllib.request.urlopen(request, timeout=WAIT, context=ssl.create_default_context(cafile=pki / "ca.pem")):
            return 200
    except urllib.error.HTTPError as err:
        return err.code


def test_the_health_check_passes_with_tls_and_basic_auth_on(dockerfile: Dockerfile, shared: Path, pki: Path) -> None:
    config = secure_web_config(shared / "web", pki, "scrape-secret")
    container = Container(dockerfile, shared, free_port(), args=["serve", f"--web.config.file={config}"])
    write(container.claude / "projects/acme-api/session.jsonl", line())
    container.start()
    try:
        eventually(container.healthy, what=lambda: f"the HEALTHCHECK passes; log:\n{container.log()}")
        # Both are on: the metrics need the password, over HTTPS.
        assert https_get(container.port, "/metrics", pki) == 401
        assert https_get(container.port, "/metrics", pki, "scrape-secret") == 200
        assert container.stop() == 0, container.log()
    finally:
        container.kill()
    assert container.health() != 0, "the HEALTHCHECK fails once the exporter is gone"
