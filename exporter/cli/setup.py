"""`setup`: our entries in Claude Code's settings.json (status line, team mode's telemetry) and the
service unit, each with an `--undo` that puts back what was there.

Claude Code's settings are the user's file: unknown keys and their order stay, a write is atomic, the
state before our first change is kept beside it, and another tool's entry is replaced only with `--force`.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

Settings = dict[str, Any]
NAME = "claude-usage-exporter"
UNIT = f"{NAME}.service"
AGENT = "io.github.claude-usage-exporter"
UNITS = Path(__file__).resolve().parent / "units"  # package data; deploy/systemd and deploy/launchd link here
# The team-mode environment docs/team-mode.md gives each developer's Claude Code.
TELEMETRY_KEYS = (
    "CLAUDE_CODE_ENABLE_TELEMETRY",
    "OTEL_LOGS_EXPORTER",
    "OTEL_METRICS_EXPORTER",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_HEADERS",
)


def settings_path(scope: str, env: dict[str, str] | None = None) -> Path:
    """Claude Code's settings.json: the user's (`$CLAUDE_CONFIG_DIR`, else ~/.claude) or the project's."""
    env = dict(os.environ) if env is None else env
    if scope == "project":
        return Path.cwd() / ".claude" / "settings.json"
    folder = env.get("CLAUDE_CONFIG_DIR", "").split(",")[0].strip()
    return (Path(folder).expanduser() if folder else Path.home() / ".claude") / "settings.json"


def backup_path(path: Path, kind: str) -> Path:
    return path.with_name(f"{path.name}.before-{kind}")


def parse(text: str | None, path: Path) -> Settings:
    """The settings as a dict; a file we cannot read as a JSON object is an error, never overwritten."""
    if text is None or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except ValueError as err:
        raise click.ClickException(f"{path} is not valid JSON ({err}): fix it by hand first") from None
    if not isinstance(data, dict):
        raise click.ClickException(f"{path} holds a JSON {type(data).__name__}, not an object: fix it by hand first")
    return data


def render(data: Settings) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"  # Claude Code's own indent


def read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as err:
        raise click.ClickException(f"cannot read {path}: {err}") from None


def write_atomically(path: Path, text: str | None) -> None:
    """Replaces the file in one step (None removes it); a symlinked settings.json stays a symlink."""
    target = path.resolve()
    if text is None:
        target.unlink(missing_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o600  # it may hold a token
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def diff(path: Path, old: str | None, new: str | None) -> str:
    lines = difflib.unified_diff(
        (old or "").splitlines(keepends=True), (new or "").splitlines(keepends=True), f"{path}", f"{path} (new)"
    )
    # as diff(1) marks a last line without its newline, so the output stays a valid patch
    text = "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
    return text or f"{path}: no change\n"


Change = Callable[[Settings], Settings]


def change(path: Path, kind: str, apply: Change, is_ours: Callable[[Settings], bool], dry_run: bool) -> None:
    """Applies `apply` to the settings; the file as it was before our first change is kept as a backup
    (empty when there was no file)."""
    old = read(path)
    before = parse(old, path)
    new = render(apply(json.loads(json.dumps(before))))
    if old is not None and new == render(before):
        click.echo(f"{path}: already set up, nothing to change")
        return
    if dry_run:
        click.echo(diff(path, old, new), nl=False)
        return
    backup = backup_path(path, kind)
    if not is_ours(before) or not backup.exists():
        write_atomically(backup, old or "")
    write_atomically(path, new)
    click.echo(f"{path}: updated (the previous file is in {backup})")


def undo(path: Path, kind: str, revert: Callable[[Settings, Settings], Settings], dry_run: bool) -> None:
    """Takes our entries out again. When nothing else changed since, the file comes back byte for byte
    (or goes, if we made it); otherwise only our keys are removed or given back their old values."""
    backup = backup_path(path, kind)
    old = read(path)
    saved = read(backup)
    earlier = parse(saved, backup)
    current = parse(old, path)
    reverted = revert(json.loads(json.dumps(current)), earlier)
    new: str | None = render(reverted)
    if saved is not None and new == render(earlier):
        new = saved if saved else None
    elif reverted == current:
        new = old  # only a different layout: nothing of ours is there
    if new == old:
        click.echo(f"{path}: nothing of ours to undo")
        return
    if dry_run:
        click.echo(diff(path, old, new), nl=False)
        return
    write_atomically(path, new)
    backup.unlink(missing_ok=True)
    click.echo(f"{path}: restored" if new == saved or new is None else f"{path}: our entries removed")


# --- the status line ---------------------------------------------------------------------------


def our_script() -> Path | None:
    """The console script that runs now (the README's `.venv/bin/…` need not be on PATH), else the one
    on PATH. Not resolved: pipx's ~/.local/bin link outlives the venv path it points to."""
    ran = Path(sys.argv[0])
    if ran.name == NAME and ran.is_file():
        return ran.absolute()
    found = shutil.which(NAME)
    return Path(found).absolute() if found else None


def statusline_command(state_dir: Path | None) -> str:
    """Our script by full path (Claude Code's shell may not have the venv on PATH), else `python -m`."""
    script = our_script()
    base = shlex.quote(str(script)) if script else f"{shlex.quote(sys.executable)} -m exporter"
    extra = f" --state-dir {shlex.quote(str(state_dir))}" if state_dir else ""
    return f"{base} statusline{extra}"


def is_our_statusline(data: Settings) -> bool:
    line = data.get("statusLine")
    command = line.get("command", "") if isinstance(line, dict) else ""
    words = command.split() if isinstance(command, str) else []
    return "statusline" in words and any(w.endswith(NAME) or w == "exporter" for w in words)


# --- the telemetry environment -------------------------------------------------------------------


def telemetry_env(endpoint: str, protocol: str, token_file: Path | None) -> dict[str, str]:
    if not endpoint.startswith(("http://", "https://")) or len(endpoint.split("://", 1)[1]) == 0:
        raise click.BadParameter(f"{endpoint!r} is not an http:// or https:// URL", param_hint="--endpoint")
    env = {
        "CLAUDE_CODE_ENABLE_TELEMETRY": "1",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint.rstrip("/"),
    }
    if token_file is not None:
        env["OTEL_EXPORTER_OTLP_HEADERS"] = f"Authorization=Bearer {read_token(token_file)}"
    return env


def read_token(path: Path) -> str:
    """The first line that is not blank or a `#` comment: the receiver's bearer_tokens_file format."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise click.BadParameter(f"cannot read {path}: {err}", param_hint="--token-file") from None
    tokens = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not tokens or any(c.isspace() or c == "," for c in tokens[0]):
        raise click.BadParameter(f"{path} holds no token (one line, no spaces or commas)", param_hint="--token-file")
    return tokens[0]


# --- the service ---------------------------------------------------------------------------------


def _unit_text(manager: str) -> str:
    """The unit this package ships, with ExecStart pointed at this installation's script when it is elsewhere."""
    source = UNITS / (UNIT if manager == "systemd" else f"{AGENT}.plist")
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as err:
        raise click.ClickException(f"cannot read the unit {source}: {err}") from None
    script = our_script()
    if script and manager == "systemd" and script != Path.home() / ".local/bin" / NAME:
        text = text.replace(f"ExecStart=%h/.local/bin/{NAME} ", f"ExecStart={script} ")
    elif script and manager == "launchd":
        text = text.replace(f'"$HOME/.local/bin/{NAME}"', shlex.quote(str(script)))
    return text


def service_plan(manager: str, undo: bool) -> tuple[Path, list[list[str]]]:
    """Where the unit goes, and the commands that start (or stop) it for the current user."""
    if manager == "systemd":
        config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        path = Path(config) / "systemd" / "user" / UNIT
        if undo:
            return path, [["systemctl", "--user", "disable", "--now", UNIT], ["systemctl", "--user", "daemon-reload"]]
        return path, [["systemctl", "--user", "daemon-reload"], ["systemctl", "--user", "enable", "--now", UNIT]]
    path = Path.home() / "Library" / "LaunchAgents" / f"{AGENT}.plist"
    domain = f"gui/{os.getuid()}"
    if undo:
        return path, [["launchctl", "bootout", f"{domain}/{AGENT}"]]
    return path, [["launchctl", "bootstrap", domain, str(path)]]


def run_step(argv: list[str], dry_run: bool) -> None:
    click.echo(("would run: " if dry_run else "running: ") + shlex.join(argv))
    if dry_run:
        return
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise click.ClickException(f"{argv[0]} failed: {err}") from None
    if done.returncode != 0:
        hint = ""
        if argv[:2] == ["systemctl", "--user"] and "bus" in done.stderr:
            hint = " (no systemd user manager for this session: log in normally, or `loginctl enable-linger`)"
        raise click.ClickException(f"{shlex.join(argv)} exited {done.returncode}: {done.stderr.strip()}{hint}")


# --- the commands --------------------------------------------------------------------------------

scope_option = click.option(
    "--scope",
    type=click.Choice(["user", "project"]),
    default="user",
    show_default=True,
    help="user: $CLAUDE_CONFIG_DIR/settings.json, else ~/.claude/settings.json; project: ./.claude/settings.json.",
)
dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Show what would change (a unified diff); change nothing."
)
undo_option = click.option("--undo", "undo_", is_flag=True, help="Put back what was there before.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def setup() -> None:
    """Set up Claude Code and this machine for the exporter; each part has an --undo."""


@setup.command("statusline")
@scope_option
@click.option("--force", is_flag=True, help="Replace another status line (a backup keeps it for --undo).")
@click.option("--state-dir", type=click.Path(path_type=Path), help="Add --state-dir DIR to the command.")
@click.option("--command", "command", help="The command to run instead of ours (default: this installation's).")
@dry_run_option
@undo_option
def statusline(
    scope: str, force: bool, state_dir: Path | None, command: str | None, dry_run: bool, undo_: bool
) -> None:
    """Show our status line in Claude Code (its settings.json's statusLine)."""
    path = settings_path(scope)
    if undo_:

        def revert(data: Settings, earlier: Settings) -> Settings:
            if is_our_statusline(data):
                if "statusLine" in earlier and not is_our_statusline(earlier):
                    data["statusLine"] = earlier["statusLine"]
                else:
                    del data["statusLine"]
            return data

        undo(path, "statusline", revert, dry_run)
        return
    wanted = command or statusline_command(state_dir)

    def apply(data: Settings) -> Settings:
        line = data.get("statusLine")
        if line is not None and not is_our_statusline(data) and not force:
            shown = line.get("command") if isinstance(line, dict) else line
            raise click.ClickException(
                f"{path} already has a status line ({shown!r}): --force replaces it, and --undo puts it back"
            )
        mine = dict(line) if is_our_statusline(data) and isinstance(line, dict) else {}
        data["statusLine"] = {**mine, "type": "command", "command": wanted, "padding": mine.get("padding", 0)}
        return data

    change(path, "statusline", apply, is_our_statusline, dry_run)


@setup.command("telemetry")
@scope_option
@click.option("--endpoint", help="The team exporter's OTLP/HTTP receiver, e.g. http://exporter.example:4318.")
@click.option(
    "--token-file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="A file with the bearer token (its first line that is not a # comment).",
)
@click.option("--protocol", type=click.Choice(["http/json", "http/protobuf"]), default="http/json", show_default=True)
@click.option("--force", is_flag=True, help="Replace telemetry settings someone else made (kept for --undo).")
@dry_run_option
@undo_option
def telemetry(
    scope: str, endpoint: str | None, token_file: Path | None, protocol: str, force: bool, dry_run: bool, undo_: bool
) -> None:
    """Send Claude Code's OpenTelemetry to a team exporter (its settings.json's env; see docs/team-mode.md)."""
    path = settings_path(scope)
    backup = backup_path(path, "telemetry")
    if undo_:
        if not backup.exists():
            raise click.ClickException(f"no backup at {backup}: setup telemetry made no change here to undo")

        def revert(data: Settings, earlier: Settings) -> Settings:
            env, was = data.get("env"), earlier.get("env")
            was = was if isinstance(was, dict) else {}
            if not isinstance(env, dict):
                return data
            for key in TELEMETRY_KEYS:
                if key in was:
                    env[key] = was[key]
                else:
                    env.pop(key, None)
            if not env and "env" not in earlier:
                del data["env"]
            return data

        undo(path, "telemetry", revert, dry_run)
        return
    if endpoint is None:
        raise click.UsageError("--endpoint is required (or --undo)")
    wanted = telemetry_env(endpoint, protocol, token_file)
    set_up_before = backup.exists()

    def apply(data: Settings) -> Settings:
        env = data.setdefault("env", {})
        if not isinstance(env, dict):
            raise click.ClickException(f"{path}: its env is not an object: fix it by hand first")
        clash = sorted(k for k, v in wanted.items() if k in env and env[k] != v)
        if clash and not (force or set_up_before):
            raise click.ClickException(f"{path} already sets {', '.join(clash)}: --force replaces them")
        env.update(wanted)
        if set_up_before and "OTEL_EXPORTER_OTLP_HEADERS" not in wanted:
            # a header we wrote earlier would send the old token on; a header of the user's own stays
            was = parse(read(backup), backup).get("env")
            if not (isinstance(was, dict) and "OTEL_EXPORTER_OTLP_HEADERS" in was):
                env.pop("OTEL_EXPORTER_OTLP_HEADERS", None)
        return data

    def is_ours(data: Settings) -> bool:
        env = data.get("env")
        return isinstance(env, dict) and set_up_before and "OTEL_EXPORTER_OTLP_ENDPOINT" in env

    change(path, "telemetry", apply, is_ours, dry_run)


@setup.command("service")
@click.option(
    "--manager",
    type=click.Choice(["systemd", "launchd"]),
    default="launchd" if sys.platform == "darwin" else "systemd",
    show_default=True,
    help="systemd user unit (Linux) or launchd agent (macOS).",
)
@click.option("--force", is_flag=True, help="Replace a different unit file of the same name.")
@dry_run_option
@undo_option
def service(manager: str, force: bool, dry_run: bool, undo_: bool) -> None:
    """Install and start `serve` as a service of the current user (systemd user unit, or launchd agent)."""
    path, steps = service_plan(manager, undo_)
    backup = path.with_name(path.name + ".before-setup")
    if undo_:
        if not path.exists():
            raise click.ClickException(f"{path} is not there: no service to remove")
        run_step(steps[0], dry_run)
        saved = read(backup)
        done = f"restored the earlier {path}" if saved else f"removed {path}"
        click.echo(f"would have {done}" if dry_run else done)
        if not dry_run:
            write_atomically(path, saved)
            backup.unlink(missing_ok=True)
        for step in steps[1:]:
            run_step(step, dry_run)
        return
    text = _unit_text(manager)
    old = read(path)
    if old is not None and old != text and not force:
        raise click.ClickException(f"{path} exists and differs from ours: --force replaces it (a copy is kept)")
    if dry_run:
        click.echo(diff(path, old, text), nl=False)
    elif old != text:
        if old is not None:
            write_atomically(backup, old)
        write_atomically(path, text)
        click.echo(f"wrote {path}")
    for step in steps:
        run_step(step, dry_run)
