"""claude-usage-exporter: what Claude Code use costs, and why."""

DISTRIBUTION = "claude-code-usage-exporter"  # PyPI's `claude-usage-exporter` is another project's


def _version() -> str:
    """The installed distribution's version; in a source checkout that is not installed (tests run with
    the repository on the path), pyproject.toml's, so the version is written in one place only."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        pass
    import tomllib
    from pathlib import Path

    try:
        with (Path(__file__).resolve().parent.parent / "pyproject.toml").open("rb") as f:
            return str(tomllib.load(f)["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "0.0.0+unknown"


def __getattr__(name: str) -> str:
    # Computed on first use: importlib.metadata and pathlib would double the status line's start-up.
    if name == "__version__":
        return _version()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
