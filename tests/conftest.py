"""Shared fixtures: an Pipeline on a temporary Claude config dir and state dir, never the real ~/.claude."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import pytest

from exporter.config import load_settings
from exporter.events import Request, UsageEvent
from exporter.ledger.store import Ledger
from exporter.pipeline import Pipeline, Setup
from tests.support.daemon import command, process_tree, running, running_after

PR_SET_CHILD_SUBREAPER = 36  # from <linux/prctl.h>
LINGER = 10.0  # seconds the processes still ending when the last test is done may take


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_tests() -> Iterator[None]:
    """Fails the run if a process a test started, or any process that one started, still runs once every
    test is done (and kills it). This process adopts orphans, as a child subreaper: without that, the
    children of a killed daemon would belong to init and escape the count."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1)
    yield
    with suppress(ChildProcessError):  # the ended orphans adopted along the way
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    left = running_after([pid for pid in process_tree(os.getpid()) if running(pid)], LINGER)
    described = [f"{pid} {command(pid)}" for pid in sorted(left)]
    for pid in left:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert described == [], "processes outlived the tests"


@pytest.fixture
def claude_dir(tmp_path: Path) -> Path:
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    return root


@pytest.fixture
def make_app(tmp_path: Path, claude_dir: Path) -> Callable[..., Pipeline]:
    def make(**flags: object) -> Pipeline:
        given = {
            "state_dir": tmp_path / "state",
            "sources.transcripts.roots": [claude_dir],
            "timezone": "UTC",
            **{k.replace("__", "."): v for k, v in flags.items()},
        }
        return Pipeline(Setup.from_settings(load_settings(None, {}, given), {}))

    return make


@pytest.fixture
def shared() -> Iterator[Path]:
    """A folder other users can reach (pytest's tmp_path is private to its own), made with umask 022."""
    mask = os.umask(0o022)
    try:
        with tempfile.TemporaryDirectory(prefix="claude-usage-tests-") as name:
            base = Path(name)
            base.chmod(0o755)
            try:
                yield base
            finally:
                for folder, _, _ in os.walk(base):  # modes a test took away, back for the clean-up
                    os.chmod(folder, 0o755)
    finally:
        os.umask(mask)


def openssl(folder: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    folder = tmp_path_factory.mktemp("pki")
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"]
    ca = ["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign"]
    openssl(folder, "req", "-x509", *new_key, *ca, "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=Test CA")
    for name, usage in [("server", "serverAuth\nsubjectAltName=IP:127.0.0.1"), ("client", "clientAuth")]:
        (folder / f"{name}.ext").write_text(f"basicConstraints=CA:FALSE\nextendedKeyUsage={usage}\n")
        openssl(
            folder, "req", "-new", *new_key, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"
        )
        signed = ["-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext"]
        openssl(folder, "x509", "-req", "-in", f"{name}.csr", *signed, "-out", f"{name}.pem")
    return folder


@pytest.fixture
def ledger(make_app: Callable[..., Pipeline]) -> Callable[..., Ledger]:
    """Commits the events given (priced and classified) and returns the ledger."""
    app = make_app()

    def fill(*events: UsageEvent) -> Ledger:
        app.ledger.commit([Request.from_event(e) for e in events], app.enrich)
        return app.ledger

    return fill
