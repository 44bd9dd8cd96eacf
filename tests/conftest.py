"""Shared fixtures: an App on a temporary Claude config dir and state dir, never the real ~/.claude."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.app import App, Core
from exporter.config import load_settings
from exporter.events import UsageEvent
from exporter.ledger import Ledger, Request


@pytest.fixture
def claude_dir(tmp_path: Path) -> Path:
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    return root


@pytest.fixture
def make_app(tmp_path: Path, claude_dir: Path) -> Callable[..., App]:
    def make(**flags: object) -> App:
        given = {
            "state_dir": tmp_path / "state",
            "sources.transcripts.roots": [claude_dir],
            "timezone": "UTC",
            **{k.replace("__", "."): v for k, v in flags.items()},
        }
        return App(Core.from_settings(load_settings(None, {}, given), {}))

    return make


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
def ledger(make_app: Callable[..., App]) -> Callable[..., Ledger]:
    """Commits the events given (priced and classified) and returns the ledger."""
    app = make_app()

    def fill(*events: UsageEvent) -> Ledger:
        app.ledger.commit([Request.from_event(e) for e in events], app.enrich)
        return app.ledger

    return fill
