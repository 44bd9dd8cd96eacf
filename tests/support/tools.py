"""Outside tools (Prometheus, promtool, Chromium, Playwright, the Claude Code CLI, namespaces): a test that
needs one skips loudly where it is missing, and fails instead under CI=true, where every tool must be there."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import NoReturn


def missing(reason: str) -> NoReturn:
    """Skips the test for `reason`; fails it under CI=true."""
    import pytest  # here only: the namespace driver and the OTLP sink run outside pytest and start faster without it

    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def require(tool: str, why: str, *, executable: bool = True) -> None:
    """Skips the test when `tool` (a file's path, executable unless told, or a module's name) is missing;
    fails under CI=true."""
    if "/" in tool:
        found = Path(tool).is_file() and (os.access(tool, os.X_OK) or not executable)
    else:
        found = importlib.util.find_spec(tool) is not None
    if not found:
        missing(f"{tool} is missing: {why} NOT CHECKED")
