"""Runs a plan — the fake Anthropic API, background processes, then steps — in a network namespace with only loopback.

`run_plan(plan, out)` starts `unshare … python -m tests.support.netns PLAN.json`: nothing inside can reach another host.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.support.loopback import free_port
from tests.support.tools import missing
from tests.support.waiting import POLL

ROOT = Path(__file__).resolve().parents[2]
UNSHARE = "/usr/bin/unshare"
# A user namespace (root inside maps to the caller) holding a new network namespace; a PID namespace too,
# so that whatever a step leaves running dies with the driver.
NAMESPACE = ["--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child"]
STOP_WAIT = 30.0  # seconds a background process gets to exit after SIGTERM before SIGKILL
PLACEHOLDER = re.compile(r"\{(api|out|port:[\w.-]+)\}")


@dataclass
class Process:
    """A background process, running through all steps; `ready_url` is polled until it answers HTTP.

    Its output goes to `<out>/<name>.stdout|.stderr`; SIGTERM stops it after the last step.
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    ready_url: str | None = None
    ready_timeout: float = 60.0
    inherit_env: bool = True


@dataclass
class Step:
    """A command run to its end (`argv`), or a `fetch` of a URL whose body becomes the step's stdout.

    With `expect`, the fetch is repeated until the body contains that text (exit code 1 at the timeout).
    `inherit_env=False` starts from an empty environment instead of the driver's, so that nothing of the
    caller's (e.g. its own ANTHROPIC_* or OTEL_* variables) leaks in.
    """

    name: str
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    stdin: str | None = None
    timeout: float = 300.0
    inherit_env: bool = True
    fetch: str | None = None
    expect: str | None = None


@dataclass
class FakeSettings:
    """The fake API's settings (see tests.support.fakeapi.FakeApi)."""

    seed: int = 1
    target: str = "notes.txt"
    fail_with: int | None = None
    keep_bodies: bool = False


@dataclass
class Plan:
    """What to run. Placeholders in any string: `{api}` the fake API's base URL, `{port:NAME}` a free port
    (one per name, the same wherever it appears), `{out}` the output folder.
    """

    steps: list[Step]
    background: list[Process] = field(default_factory=list)
    fake: FakeSettings = field(default_factory=FakeSettings)

    @staticmethod
    def load(path: Path) -> Plan:
        raw = json.loads(path.read_text())
        return Plan(
            steps=[Step(**s) for s in raw["steps"]],
            background=[Process(**p) for p in raw.get("background", [])],
            fake=FakeSettings(**raw.get("fake", {})),
        )


@dataclass
class StepResult:
    name: str
    argv: list[str]  # as run, placeholders filled in
    exit_code: int
    stdout: str
    stderr: str
    seconds: float

    def json(self) -> Any:
        """The step's stdout as JSON (`--output-format json`)."""
        return json.loads(self.stdout)


@dataclass
class Result:
    out: Path
    api_url: str
    ports: dict[str, int]
    steps: list[StepResult]
    api: list[dict[str, Any]]  # the fake API's log: one entry per exchange (tests.support.fakeapi.Exchange)
    background: dict[str, int]  # exit codes after SIGTERM (negative: killed by that signal)
    error: str | None = None

    def step(self, name: str) -> StepResult:
        found = [s for s in self.steps if s.name == name]
        assert len(found) == 1, f"no single step named {name!r} among {[s.name for s in self.steps]}"
        return found[0]

    def requests(self, *kinds: str) -> list[dict[str, Any]]:
        """The fake's Messages exchanges of these kinds (all of them without kinds), in order."""
        return [e for e in self.api if e["kind"] != "other" and (not kinds or e["kind"] in kinds)]

    def log(self, name: str) -> str:
        """A background process' stdout and stderr."""
        return "".join((self.out / f"{name}.{s}").read_text(errors="replace") for s in ("stdout", "stderr"))

    @staticmethod
    def load(out: Path) -> Result:
        raw = json.loads((out / "result.json").read_text())
        return Result(
            out=out,
            api_url=raw["api_url"],
            ports=raw["ports"],
            steps=[StepResult(**s) for s in raw["steps"]],
            api=json.loads((out / "api.json").read_text()),
            background=raw["background"],
            error=raw.get("error"),
        )


# ---- the caller's side -------------------------------------------------------------------------------------


@functools.cache
def _netns_refusal() -> str | None:
    """Why a namespace cannot be made here (None when it can)."""
    if not Path(UNSHARE).is_file():
        return f"{UNSHARE} is missing (Debian package util-linux)"
    try:
        probe = subprocess.run([UNSHARE, *NAMESPACE, "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"{UNSHARE} failed: {err}"
    if probe.returncode != 0:
        return f"`unshare {' '.join(NAMESPACE)}` is not permitted here: {probe.stderr.strip()}"
    return None


def require_netns() -> None:
    """Skips the test where no network namespace can be made (loudly); fails instead under CI=true."""
    refusal = _netns_refusal()
    if refusal is not None:
        missing(f"{refusal}: the real Claude Code CLI runs only in a namespace with nothing but loopback. NOT CHECKED")


def run_plan(plan: Plan, out: Path, timeout: float = 600.0) -> Result:
    """Runs `plan` in a new user + network namespace; its files, logs and `result.json` land in `out`.

    Raises AssertionError when the driver itself failed (a background process not ready, a crash); a step
    that exits non-zero is only recorded, for the test to judge.
    """
    require_netns()
    out.mkdir(parents=True, exist_ok=True)
    plan_file = out / "plan.json"
    plan_file.write_text(json.dumps(asdict(plan), indent=1) + "\n")
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    command = [UNSHARE, *NAMESPACE, sys.executable, "-m", "tests.support.netns", str(plan_file)]
    driver = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": path},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    told = f"driver exited with {driver.returncode}; its stderr:\n{driver.stderr[-5000:]}"
    if not (out / "result.json").is_file():
        raise AssertionError(f"the namespace driver wrote no result; {told}")
    result = Result.load(out)
    if result.error:
        logs = "".join(
            f"\n--- {p.name}:\n{result.log(p.name)[-3000:]}"
            for p in plan.background
            if (out / f"{p.name}.stderr").exists()
        )
        raise AssertionError(f"the namespace driver failed: {result.error}; {told}{logs}")
    return result


# ---- inside the namespace -----------------------------------------------------------------------------------

SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def loopback_up() -> None:
    """Brings `lo` up (what `ip link set lo up` does), so that 127.0.0.1 works in the new namespace."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def interfaces() -> list[str]:
    """This network namespace's interfaces (/sys/class/net would show the host's: sysfs was mounted there)."""
    return sorted(name for _, name in socket.if_nameindex())


class Filler:
    """Fills the placeholders in, picking each named port once."""

    def __init__(self, api: str, out: Path) -> None:
        self.api, self.out = api, out
        self.ports: dict[str, int] = {}

    def _one(self, found: re.Match[str]) -> str:
        key = found[1]
        if key == "api":
            return self.api
        if key == "out":
            return str(self.out)
        name = key.removeprefix("port:")
        if name not in self.ports:
            self.ports[name] = free_port()
        return str(self.ports[name])

    def __call__(self, text: str) -> str:
        return PLACEHOLDER.sub(self._one, text)

    def all(self, texts: list[str]) -> list[str]:
        return [self(t) for t in texts]

    def env(self, env: dict[str, str]) -> dict[str, str]:
        return {k: self(v) for k, v in env.items()}


def _answers(url: str) -> bool:
    """True once something serves HTTP at `url` (any status below 500)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status < 500)
    except urllib.error.HTTPError as err:
        return err.code < 500
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


class Background:
    def __init__(self, spec: Process, fill: Filler, out: Path) -> None:
        self.name = spec.name
        self.argv = fill.all(spec.argv)
        with (out / f"{spec.name}.stdout").open("wb") as stdout, (out / f"{spec.name}.stderr").open("wb") as stderr:
            self.process = subprocess.Popen(
                self.argv,
                env={**(os.environ if spec.inherit_env else {}), **fill.env(spec.env)},
                cwd=fill(spec.cwd) if spec.cwd else out,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )

    def await_ready(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not _answers(url):
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} before {url} answered")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: {url} did not answer within {timeout:g} s")
            time.sleep(POLL)

    def stop(self) -> int:
        """SIGTERM to its process group, then SIGKILL if it has not exited in time."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout=STOP_WAIT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        return self.process.wait()


def _fetch(url: str, expect: str | None, timeout: float) -> tuple[int, str, str]:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                body, told = answer.read().decode(errors="replace"), f"HTTP {answer.status}"
        except urllib.error.HTTPError as err:
            body, told = err.read().decode(errors="replace"), f"HTTP {err.code}"
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            body, told = "", str(err)
        if expect is None or expect in body:
            return (0 if told == "HTTP 200" else 1), body, told
        if time.monotonic() > deadline:
            return 1, body, f"{told}; {expect!r} not in the body within {timeout:g} s"
        time.sleep(POLL)


def run_step(index: int, step: Step, fill: Filler, out: Path) -> StepResult:
    started = time.monotonic()
    if step.fetch:
        url = fill(step.fetch)
        code, stdout, stderr = _fetch(url, fill(step.expect) if step.expect else None, step.timeout)
        argv = ["GET", url]
    else:
        argv = fill.all(step.argv)
        base = dict(os.environ) if step.inherit_env else {}
        process = subprocess.Popen(
            argv,
            env={**base, **fill.env(step.env)},
            cwd=fill(step.cwd) if step.cwd else out,
            stdin=subprocess.PIPE if step.stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            given = fill(step.stdin) if step.stdin is not None else None
            raw_out, raw_err = process.communicate(given.encode() if given is not None else None, step.timeout)
            code = process.returncode
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raw_out, raw_err = process.communicate()
            code = -signal.SIGKILL
            raw_err += f"\n[netns] killed after {step.timeout:g} s\n".encode()
        _reap(process.pid)
        stdout, stderr = raw_out.decode(errors="replace"), raw_err.decode(errors="replace")
    prefix = out / f"{index:02d}-{step.name}"
    Path(f"{prefix}.stdout").write_text(stdout)
    Path(f"{prefix}.stderr").write_text(stderr)
    return StepResult(step.name, argv, code, stdout, stderr, round(time.monotonic() - started, 3))


def _reap(group: int) -> None:
    """Kills what a step left running in its process group (a step is over when its command exits)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)


def drive(plan_file: Path) -> int:
    """The driver, run inside the namespace: writes `result.json` and `api.json` beside the plan, always."""
    from tests.support.fakeapi import FakeApi

    out = plan_file.parent
    plan = Plan.load(plan_file)
    result: dict[str, Any] = {"api_url": "", "ports": {}, "steps": [], "background": {}, "error": None}
    started: list[Background] = []
    api: FakeApi | None = None
    try:
        loopback_up()
        found = interfaces()
        if found != ["lo"]:
            raise RuntimeError(f"the namespace has interfaces besides lo: {found}")
        api = FakeApi(
            seed=plan.fake.seed,
            target=plan.fake.target,
            fail_with=plan.fake.fail_with,
            keep_bodies=plan.fake.keep_bodies,
        ).start()
        result["api_url"] = api.url
        fill = Filler(api.url, out)
        result["ports"] = fill.ports
        for spec in plan.background:
            started.append(Background(spec, fill, out))
            if spec.ready_url:
                started[-1].await_ready(fill(spec.ready_url), spec.ready_timeout)
        for index, step in enumerate(plan.steps, 1):
            result["steps"].append(asdict(run_step(index, step, fill, out)))
    except Exception as err:  # recorded for the caller, who raises it with the driver's stderr
        result["error"] = f"{type(err).__name__}: {err}"
    finally:
        for process in reversed(started):
            result["background"][process.name] = process.stop()
        if api is not None:
            api.stop()
            api.dump(out / "api.json")
        else:
            (out / "api.json").write_text("[]\n")
        (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["error"] is None else 1


if __name__ == "__main__":
    sys.exit(drive(Path(sys.argv[1])))
