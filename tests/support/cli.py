"""The command line run in this process (click's runner), away from the developer's own settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from exporter.cli.commands import main

Run = Callable[..., str]

# What a developer's shell may set that would change a command's answer.
OUTSIDE = ("CLAUDE_CONFIG_DIR", "CLAUDE_USAGE_EXPORTER_CONFIG", "CLAUDE_USAGE_EXPORTER_PRICING_MODE", "TZ")


def folders(tmp_path: Path) -> list[str]:
    """The flags that point a command at the test's Claude config dir and state dir, in UTC."""
    return ["--claude-dir", str(tmp_path / "claude"), "--state-dir", str(tmp_path / "state"), "-z", "UTC"]


def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, in_folders: bool = False) -> Run:
    """`run(*args, code=0)`: the command's output, once its exit code is `code`. With `in_folders`, every
    command but `pricing` (which reads no transcripts) gets `folders(tmp_path)`."""
    for name in OUTSIDE:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args: str, code: int = 0) -> str:
        given = [*args, *folders(tmp_path)] if in_folders and args[0] != "pricing" else list(args)
        result = CliRunner().invoke(main, given)
        assert result.exit_code == code, result.output
        return result.output

    return run
