"""claude-usage-exporter: what Claude Code use costs, and why."""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "claude-code-usage-exporter"  # PyPI's `claude-usage-exporter` is another project's


def _version() -> str:
    """The installed distribution's version; in a source checkout that is not installed (tests run with
    the repository on the path), pyproject.toml's, so the version is written in one place only."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    import tomllib

    try:
        with (Path(__file__).resolve().parent.parent / "pyproject.toml").open("rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0.0.0+unknown"


__version__ = _version()
