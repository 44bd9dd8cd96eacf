"""Shared fixtures: an App on a temporary Claude config dir and state dir, never the real ~/.claude."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.app import App, Core
from exporter.config import load_settings


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
