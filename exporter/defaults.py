"""Defaults that need no config machinery: the machine's zone, the state dir, the transcript roots.

Kept free of pydantic so a warm `report` with no config file starts in a few tens of milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

CONFIG_ENV = "CLAUDE_USAGE_EXPORTER_CONFIG"
ENV_PREFIX = "CLAUDE_USAGE_EXPORTER_"


def is_zone(name: str) -> bool:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # ~3 ms: a warm report needs no zone checked

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def zone_names(env: Mapping[str, str], localtime: Path = Path("/etc/localtime")) -> list[str]:
    """The names the machine's zone may go by, unchecked, in order: `TZ`, then where /etc/localtime points."""
    candidates = [env.get("TZ", "").removeprefix(":")]
    if localtime.is_symlink():
        candidates.append(str(localtime.resolve()).partition("/zoneinfo/")[2])
    return [name for name in candidates if name]


def default_timezone(env: Mapping[str, str], localtime: Path = Path("/etc/localtime")) -> str:
    """The machine's zone name: the first of `zone_names` that is a zone, else UTC."""
    return next((name for name in zone_names(env, localtime) if is_zone(name)), "UTC")


def _home(env: Mapping[str, str]) -> Path:
    return Path(env["HOME"]) if env.get("HOME") else Path.home()


def default_state_dir(env: Mapping[str, str]) -> Path:
    """`$XDG_STATE_HOME/claude-usage-exporter`, else `~/.local/state/claude-usage-exporter`."""
    xdg = env.get("XDG_STATE_HOME", "")
    # The XDG spec says a relative path in these variables is invalid and should be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "claude-usage-exporter"
    return _home(env) / ".local" / "state" / "claude-usage-exporter"


def default_roots(env: Mapping[str, str]) -> tuple[Path, ...]:
    """`$CLAUDE_CONFIG_DIR` (comma-separated, as ccusage accepts), else both known defaults."""
    listed = [p.strip() for p in env.get("CLAUDE_CONFIG_DIR", "").split(",") if p.strip()]
    if listed:
        return tuple(_home(env) / p[2:] if p == "~" or p.startswith("~/") else Path(p) for p in listed)
    return (_home(env) / ".config" / "claude", _home(env) / ".claude")


def config_file_from(flag: Path | None, env: Mapping[str, str]) -> Path | None:
    """The config file to read: the `--config` flag, else `$CLAUDE_USAGE_EXPORTER_CONFIG`, else none."""
    if flag is not None:
        return flag
    return Path(env[CONFIG_ENV]).expanduser() if env.get(CONFIG_ENV) else None
