"""Ports and HTTP on 127.0.0.1, the only network the tests use."""

from __future__ import annotations

import base64
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any


def free_port() -> int:
    """A loopback port nothing listens on now (the kernel's choice, so parallel runs do not collide)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def answers_ok(url: str, process: subprocess.Popen[Any], log: Callable[[], str] = str) -> bool:
    """Whether `url` answers 200 yet; fails at once, with `log()`, when `process` has exited."""
    if process.poll() is not None:
        raise AssertionError(f"{process.args!r} exited with {process.returncode}; its log:\n{log()}")
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, ConnectionError):
        return False


def basic(user: str, password: str) -> str:
    """An `Authorization` header's value for HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
