"""`doctor`: what stands between the user and working figures, one line per check with its fix.

Each check reads what it can and never raises: a broken part is a `fail` line, not a traceback.
The exit code is the worst result (0 ok, 1 warn, 2 fail), so scripts can gate on it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import click

from exporter.cli.setup import is_our_statusline, settings_path
from exporter.sources.files import Found, discover

if TYPE_CHECKING:
    from exporter.ledger.store import Ledger
    from exporter.pipeline import Pipeline

LEVELS = {"ok": 0, "warn": 1, "fail": 2}
CLOCK_SLACK_S = 300  # a transcript written by another machine may run a little ahead
VERSION = re.compile(rb'"version"\s*:\s*"(\d+(?:\.\d+)+)"')
NEWEST_FILES = 5  # the version is read from the tails of the most recently written transcripts
TAIL_BYTES = 64 << 10


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # ok | warn | fail
    detail: str
    fix: str = ""


def run(load: Callable[[], Pipeline], url: str, as_json: bool, now: float) -> int:
    checks = diagnose(load, url, now)
    if as_json:
        worst = max(checks, key=lambda c: LEVELS[c.status]).status
        click.echo(json.dumps({"status": worst, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for c in checks:
            click.echo(f"{c.status:<4}  {c.name}: {c.detail}" + (f"; fix: {c.fix}" if c.fix else ""))
    return max(LEVELS[c.status] for c in checks)


def diagnose(load: Callable[[], Pipeline], url: str, now: float) -> list[Check]:
    try:
        app = load()
    except click.ClickException as err:
        config = Check(
            "config", "fail", err.format_message(), "claude-usage-exporter check-config FILE lists every error"
        )
        return [config, serving(url), statusline(), clock_of_files([], now)]
    errors: list[str] = []
    found = discover(list(app.core.roots), errors)
    paths = [f.path for f in found]
    ledger, failure = refreshed(app)
    checks = [transcripts(app, paths, errors, ledger), claude_version(found)]
    if ledger is None:
        fix = f"make {app.core.state_dir} writable (or choose another with --state-dir), and free some disk space"
        checks.append(Check("ledger", "fail", failure, fix))
    else:
        checks += [Check("ledger", "ok", f"writable at {ledger.path}"), lines(ledger), pricing(ledger)]
    checks += [serving(url), statusline(), clock(ledger, found, now)]
    return checks


def refreshed(app: Pipeline) -> tuple[Ledger | None, str]:
    from exporter.ledger.store import LedgerError

    try:
        app.refresh()
    except (LedgerError, OSError) as err:
        return None, str(err)
    return app.ledger, ""


def transcripts(app: Pipeline, paths: list[str], errors: list[str], ledger: Ledger | None) -> Check:
    looked = ", ".join(str(r / "projects") for r in app.core.roots)
    if not paths:
        return Check(
            "transcripts",
            "fail",
            f"no Claude Code transcripts in {looked}",
            "point CLAUDE_CONFIG_DIR or --claude-dir at the folder Claude Code writes (the one with projects/)",
        )
    unreadable = [p for p in paths if not os.access(p, os.R_OK)]
    requests = (
        f", {_count(ledger.db.execute('SELECT count(*) FROM requests').fetchone()[0], 'request')}" if ledger else ""
    )
    detail = f"{_count(len(paths), 'file')}{requests} in {looked}"
    if unreadable or errors:
        first = unreadable[0] if unreadable else errors[0]
        problems = len(unreadable) + len(errors)
        return Check(
            "transcripts", "warn", f"{detail}; {problems} cannot be read ({first})", "give your user read access"
        )
    return Check("transcripts", "ok", detail)


def claude_version(found: list[Found]) -> Check:
    """The newest `version` Claude Code wrote in a transcript, else what `claude --version` says."""
    newest = sorted(found, key=lambda f: f.mtime, reverse=True)[:NEWEST_FILES]
    versions = set()
    for f in newest:
        try:
            with open(f.path, "rb") as handle:
                handle.seek(max(0, f.size - TAIL_BYTES))
                versions |= {m.decode() for m in VERSION.findall(handle.read(TAIL_BYTES))}
        except OSError:
            continue
    if versions:
        return Check("claude code", "ok", f"version {max(versions, key=_numbers)} (newest in the transcripts)")
    claude = shutil.which("claude")
    if claude:
        try:
            said = subprocess.run([claude, "--version"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            said = ""
        if said.strip():
            return Check("claude code", "ok", f"version {said.split()[0]} (claude --version)")
    return Check(
        "claude code",
        "warn",
        "no version in the transcripts and no `claude` on PATH",
        "install Claude Code, or point --claude-dir at the folder it writes",
    )


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" if n == 1 else f"{n} {thing}s"


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def lines(ledger: Ledger) -> Check:
    counters = ledger.counters()
    malformed = sum(v for k, v in counters.items() if k.startswith("lines.") and k.endswith(".malformed"))
    read = sum(v for k, v in counters.items() if k.startswith("lines."))
    if malformed:
        fix = "see docs/troubleshooting.md (Lines counted as malformed); usually a newer Claude Code format"
        return Check("lines", "warn", f"{malformed} of {read} lines were not recognised (malformed)", fix)
    return Check("lines", "ok", f"{read} lines read, none malformed")


def pricing(ledger: Ledger) -> Check:
    rows = ledger.db.execute(
        "SELECT model, sum(unpriced) FROM usage_series GROUP BY model HAVING sum(unpriced) > 0 ORDER BY model"
    ).fetchall()
    if rows:
        models = ", ".join(f"{model} ({tokens} tokens)" for model, tokens in rows)
        fix = "add a pricing override (docs/pricing.md), or upgrade for newer price data"
        return Check("pricing", "warn", f"no price for {models}", fix)
    return Check("pricing", "ok", "every request is priced")


def serving(url: str) -> Check:
    target = url.rstrip("/") + "/readyz"
    fix = "start it: claude-usage-exporter serve (or setup service), or pass --url"
    try:
        # Straight to the exporter: a proxy from the environment would answer for it, or not at all.
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(target, timeout=5):
            return Check("serve", "ok", f"ready at {url}")
    except urllib.error.HTTPError as err:
        body = err.read(300).decode(errors="replace").strip()
        return Check("serve", "warn", f"{target} answered {err.code}: {body}", "see docs/troubleshooting.md (/readyz)")
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = err.reason if isinstance(err, urllib.error.URLError) else err
        return Check("serve", "warn", f"nothing answers at {url} ({reason})", fix)


def statusline() -> Check:
    fix = "claude-usage-exporter setup statusline"
    others = []
    for scope in ("project", "user"):
        path = settings_path(scope)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        try:
            data = json.loads(text)
        except ValueError as err:
            return Check("status line", "fail", f"{path} is not valid JSON ({err}): Claude Code ignores it", "fix it")
        if not isinstance(data, dict):
            return Check("status line", "fail", f"{path} is not a JSON object", "fix it by hand")
        if is_our_statusline(data):
            return Check("status line", "ok", f"configured in {path}")
        if isinstance(data.get("statusLine"), dict):
            others.append(f"{path} runs {data['statusLine'].get('command')!r}")
    if others:
        return Check("status line", "warn", f"another status line: {others[0]}", fix + " --force")
    return Check("status line", "warn", "not configured", fix)


def clock(ledger: Ledger | None, found: list[Found], now: float) -> Check:
    if ledger is not None:
        (newest,) = ledger.db.execute("SELECT max(ts) FROM requests").fetchone()
        if newest is not None and newest / 1000 > now + CLOCK_SLACK_S:
            at = datetime.fromtimestamp(newest / 1000, UTC).isoformat(timespec="seconds")
            ahead = round((newest / 1000 - now) / 60)
            return Check("clock", "fail", f"the newest request ({at}) is {ahead} min ahead of this clock", _SYNC)
    return clock_of_files(found, now)


_SYNC = "set the clock right (e.g. timedatectl set-ntp true)"


def clock_of_files(found: list[Found], now: float) -> Check:
    ahead = [f for f in found if f.mtime / 1e9 > now + CLOCK_SLACK_S]
    if ahead:
        written = f"{_count(len(ahead), 'transcript')} written in the future ({ahead[0].path})"
        return Check("clock", "fail", written, _SYNC)
    return Check("clock", "ok", "no request or transcript is dated in the future")
