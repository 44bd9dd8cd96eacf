"""The `statusline` command: Claude Code's JSON on stdin in, one line of spend, plan usage and context out.

It records the plan's rate-limit windows for the daemon and reads the daemon's summary. Claude Code runs it on every
message, so it imports only what a bare Python has already loaded (see bench/statusline.py): no pathlib, no datetime.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

# typing is not among the modules a bare Python has loaded; the annotations are strings, so only mypy needs it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

    Json = dict[str, Any]
    Windows = dict[str, dict[str, float]]

SNAPSHOT = "statusline.json"
SUMMARY = "summary.json"
FALLBACK = "claude-usage-exporter: no usage data"
SEPARATOR = " · "
RATE_LIMIT_WINDOWS = ("five_hour", "seven_day")
MAX_PERCENTAGE = 1000.0
STATE_DIR_ENV = "CLAUDE_USAGE_EXPORTER_STATE_DIR"
# `--format`: each `{field}` is one part of the line; a field with nothing to show (or an unknown one) is empty.
DEFAULT_FORMAT = "{model} · {session} · {today} · {block} · {5h} · {7d} · {context}"
APP = "claude-usage-exporter"


def main(argv: list[str]) -> int:
    """Print the status line; whatever goes wrong, print a fallback line and still exit 0."""
    try:
        template = _flag_value(argv, "--format") or DEFAULT_FORMAT
        text = render(sys.stdin.buffer.read(), state_dir_from(argv, os.environ), time.time(), template)
    except Exception:
        # A traceback would land in Claude Code's status bar; a short line is all the user should see.
        text = FALLBACK
    _emit(text)
    return 0


def _emit(text: str) -> None:
    try:
        sys.stdout.buffer.write(text.encode("utf-8", "replace") + b"\n")
        sys.stdout.flush()
    except Exception:
        # The reader went away (BrokenPipe): point stdout at /dev/null so the flush at exit stays quiet too.
        with contextlib.suppress(Exception):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def render(raw: bytes, state_dir: str, now: float, template: str = DEFAULT_FORMAT) -> str:
    """Parse Claude Code's stdin, record it in `state_dir` (best effort) and build the line."""
    payload = parse_stdin(raw)
    snapshot_path = os.path.join(state_dir, SNAPSHOT)
    fresh = windows_from(payload.get("rate_limits"), now)
    snapshot = build_snapshot(payload, fresh, load_json(snapshot_path), now)
    with contextlib.suppress(OSError):  # a read-only state dir costs the daemon a sample, never the user their line
        record(state_dir, snapshot)
    summary = load_json(os.path.join(state_dir, SUMMARY)) or {}
    return compose(payload, fresh, snapshot["rate_limits"], summary, now, template)


def parse_stdin(raw: bytes) -> Json:
    payload = json.loads(raw)
    if not isinstance(payload, dict):
        raise ValueError("the status line input is not a JSON object")
    return payload


# --- where the state lives ------------------------------------------------------------------------


def state_dir_from(argv: list[str], env: Mapping[str, str]) -> str:
    """`--state-dir`, else `$CLAUDE_USAGE_EXPORTER_STATE_DIR`, else XDG/HOME. A config file is not read (yaml
    alone takes as long to import as Python to start): with `state_dir` set there, pass `--state-dir` too."""
    flag = _flag_value(argv, "--state-dir")
    if flag:
        return _expand_user(flag, env)
    if env.get(STATE_DIR_ENV):
        return _expand_user(env[STATE_DIR_ENV], env)
    xdg = env.get("XDG_STATE_HOME", "")
    # The XDG spec says a relative path in these variables is invalid and should be ignored.
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, APP)
    return os.path.join(_home(env), ".local", "state", APP)


def _home(env: Mapping[str, str]) -> str:
    return env.get("HOME") or os.path.expanduser("~")


def _expand_user(path: str, env: Mapping[str, str]) -> str:
    """`~` and `~/…` from the given environment's HOME (as the daemon's config does); `~user` the usual way."""
    if path == "~" or path.startswith("~/"):
        return _home(env) + path[1:]
    return os.path.expanduser(path)


def _flag_value(argv: list[str], name: str) -> str | None:
    """The last value given as `NAME VALUE` or `NAME=VALUE`, as click would take it; other arguments are ignored."""
    value = None
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith(name + "="):
            value = arg[len(name) + 1 :]
    return value


# --- recording what Claude Code told us -----------------------------------------------------------


def number(value: object) -> float | None:
    """A finite float from an int, a float or a numeric string; None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        result = float(value.strip() if isinstance(value, str) else value)
    except (ValueError, OverflowError):
        return None
    return result if result - result == 0 else None  # NaN and the infinities fail this


def window_from(value: object, recorded_at: float) -> dict[str, float] | None:
    """One rate-limit window with a plausible percentage and a readable reset time, or None."""
    if not isinstance(value, dict):
        return None
    used = number(value.get("used_percentage"))
    resets_at = number(value.get("resets_at"))  # epoch seconds, as Claude Code sends it
    if used is None or not 0 <= used <= MAX_PERCENTAGE or resets_at is None or resets_at < 0:
        return None
    return {"used_percentage": used, "resets_at": resets_at, "recorded_at": recorded_at}


def windows_from(rate_limits: object, now: float) -> Windows:
    """The valid windows of Claude Code's `rate_limits`, stamped with `now`."""
    if not isinstance(rate_limits, dict):
        return {}
    found = {name: window_from(rate_limits.get(name), now) for name in RATE_LIMIT_WINDOWS}
    return {name: window for name, window in found.items() if window is not None}


def carried_windows(previous: Json | None) -> Windows:
    """The windows of an earlier snapshot, each keeping its own `recorded_at`; invalid ones are dropped."""
    limits = previous.get("rate_limits") if previous else None
    if not isinstance(limits, dict):
        return {}
    carried = {}
    for name in RATE_LIMIT_WINDOWS:
        old = limits.get(name)
        recorded_at = number(old.get("recorded_at")) if isinstance(old, dict) else None
        window = window_from(old, recorded_at) if recorded_at is not None else None
        if window is not None:
            carried[name] = window
    return carried


def build_snapshot(payload: Json, fresh: Windows, previous: Json | None, now: float) -> Json:
    """What the daemon reads: this input's session facts, and the plan windows merged with the previous snapshot.

    Holds no path, cwd or prompt text: only versions, ids, a cost and percentages.
    """
    model = payload.get("model")
    return {
        "version": 1,
        "recorded_at": now,
        "claude_code_version": _string(payload.get("version")),
        "session_id": _string(payload.get("session_id")),
        "session_cost_usd": session_cost(payload),
        "model": _string(model.get("id") if isinstance(model, dict) else model),
        "rate_limits": {**carried_windows(previous), **fresh},
    }


def session_cost(payload: Json) -> float | None:
    cost = payload.get("cost")
    return _amount(cost.get("total_cost_usd")) if isinstance(cost, dict) else None


def _string(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def record(state_dir: str, snapshot: Json) -> None:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    write_atomic(os.path.join(state_dir, SNAPSHOT), json.dumps(snapshot, separators=(",", ":")).encode())


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data` (mode 0600) so that a reader sees the old file or the new one, never a part."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)  # left by a crashed run whose pid we reuse: O_EXCL below must not trip on it
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(temporary, flags, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def load_json(path: str) -> Json | None:
    """The JSON object in `path`; None when the file is missing, unreadable, garbled or not an object."""
    try:
        with open(path, "rb") as f:
            loaded = json.loads(f.read())
    except (OSError, ValueError, RecursionError):
        return None
    return loaded if isinstance(loaded, dict) else None


# --- the line -------------------------------------------------------------------------------------


def compose(payload: Json, fresh: Windows, windows: Windows, summary: Json, now: float, template: str) -> str:
    """The template filled with the parts that are known; the fallback line when none is."""
    parts = {
        "model": model_part(payload),
        "session": session_part(payload),
        "today": today_part(summary, now),
        "block": block_part(summary, now),
        "5h": plan_part("five_hour", "5h", fresh, windows, now),
        "7d": plan_part("seven_day", "7d", fresh, windows, now),
        "context": context_part(payload),
    }
    return fill(template, parts) or FALLBACK


def fill(template: str, parts: Mapping[str, str | None]) -> str:
    """`{name}` becomes its part. Between two fields, text of only spaces and punctuation (` · `, ` | `) is a
    separator: shown only between two parts that are shown, so a missing part leaves no doubled separator."""
    pieces: list[tuple[str, str | None]] = []  # each field with the text before it; the last text has no field
    rest = "".join(c for c in template if c.isprintable())
    while (start := rest.find("{")) >= 0 and (end := rest.find("}", start)) >= 0:
        pieces.append((rest[:start], rest[start + 1 : end]))
        rest = rest[end + 1 :]
    pieces.append((rest, None))
    out, pending, shown = [], "", False
    for i, (text, name) in enumerate(pieces):
        if 0 < i < len(pieces) - 1 and not any(c.isalnum() for c in text):
            pending = text
        else:
            out.append(text)
        value = parts.get(name) if name is not None else None
        if value:
            if shown:
                out.append(pending)
            out.append(value)
            pending, shown = "", True
    return "".join(out).strip()


def model_part(payload: Json) -> str | None:
    model = payload.get("model")
    # Very old versions send no display_name, and a plain string model is tolerated too.
    named = (model.get("display_name"), model.get("id")) if isinstance(model, dict) else (model,)
    name = next((text for text in map(_string, named) if text), None)
    return _printable(name) if name else None


def _printable(text: str) -> str | None:
    # The line goes straight to a terminal: no newlines or escape sequences from the input, and a runaway name
    # must not push the rest of the line out of sight.
    cleaned = "".join(c for c in text if c.isprintable()).strip()
    return cleaned[:80] or None


def session_part(payload: Json) -> str | None:
    spent = session_cost(payload)
    return f"session {money(spent)}" if spent is not None else None


def today_part(summary: Json, now: float) -> str | None:
    """Today's spend, only while the summary's day is still today; with the daily budget when there is one."""
    today = summary.get("today")
    if not isinstance(today, dict) or not _covers(today.get("start"), today.get("end"), now):
        return None
    spent = _amount(today.get("cost_usd"))
    if spent is None:
        return None
    limit = daily_limit(summary)
    return f"today {money(spent)} / {money(limit)}" if limit is not None else f"today {money(spent)}"


def daily_limit(summary: Json) -> float | None:
    """The limit of the first unfiltered budget with a day window."""
    budgets = summary.get("budgets")
    for budget in budgets if isinstance(budgets, list) else []:
        if isinstance(budget, dict) and budget.get("window") == "day" and budget.get("filtered", False) is False:
            return _amount(budget.get("limit_usd"))
    return None


def block_part(summary: Json, now: float) -> str | None:
    block = summary.get("block")
    if not isinstance(block, dict):
        return None
    end = number(block.get("end"))
    spent = _amount(block.get("cost_usd"))
    if end is None or spent is None or now >= end:
        return None
    return f"block {money(spent)} ({duration(end - now)} left)"


def plan_part(name: str, label: str, fresh: Windows, windows: Windows, now: float) -> str | None:
    """A plan window's usage: from this input, else a recorded one that has not reset yet; the weekly one with the
    time to its reset, which is days away and worth knowing."""
    window = fresh.get(name)
    if window is None:
        recorded = windows.get(name)
        window = recorded if recorded is not None and recorded["resets_at"] > now else None
    if window is None:
        return None
    used = f"{label} {window['used_percentage']:.0f}%"
    left = window["resets_at"] - now
    return f"{used} ({duration(left)} left)" if name == "seven_day" and left > 0 else used


def context_part(payload: Json) -> str | None:
    """How full the context window is: Claude Code's `used_percentage`, else the last request's input tokens
    (`current_usage`, the `total_*` fields are session sums) over the window's size; null before the first request."""
    context = payload.get("context_window")
    if not isinstance(context, dict):
        return None
    used = number(context.get("used_percentage"))
    if used is None:
        used = _context_fill(context.get("current_usage"), number(context.get("context_window_size")))
    return f"ctx {used:.0f}%" if used is not None and 0 <= used <= MAX_PERCENTAGE else None


def _context_fill(usage: object, size: float | None) -> float | None:
    if not isinstance(usage, dict) or size is None or size <= 0:
        return None
    counts = [
        number(usage.get(k, 0)) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    ]
    if any(count is None or count < 0 for count in counts):
        return None
    return 100 * sum(count for count in counts if count is not None) / size


def _covers(start: object, end: object, now: float) -> bool:
    low, high = number(start), number(end)
    return low is not None and high is not None and low <= now < high


def _amount(value: object) -> float | None:
    amount = number(value)
    return amount if amount is not None and amount >= 0 else None


def money(amount: float) -> str:
    return f"${amount:.2f}"


def duration(seconds: float) -> str:
    """`3d 4h`, `2h 14m` or `14m`, rounding up so a block never shows `0m` before it ends."""
    minutes = -int(-seconds // 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"
