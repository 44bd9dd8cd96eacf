"""The warm report: `report daily|weekly|monthly|session --json` answered from the ledger's report cache
with the standard library and `sqlite3` alone (no click, no pydantic, none of the ingest's modules).

Its rule: answer only where the full command would print that same cached document and change nothing:
no config file or environment variable of ours; only the options understood here, each well formed; the
code and price data as they were when a full report stamped the ledger (`remember`), so the prices'
fingerprint is still the stored one; every transcript file read exactly to its end, none new or gone; no
index left to build, no prompt left open; the document cached for the ledger's generation. Anything
else, a bad flag included, gives None, and the full command runs, with its own messages and errors.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path

from exporter import DISTRIBUTION, defaults
from exporter.sources.layout import transcripts

KINDS = ("daily", "weekly", "monthly", "session")  # the reports kept in the cache
BY = ("model", "category", "interaction", "project", "agent", "speed")
MODES = ("auto", "calculate", "reported")
WEEK_STARTS = ("monday", "sunday")
STAMP = "warm"  # the meta key of what the cached documents were made with
CODE = "reports.code"  # the meta key of the code that made the cached documents (see drop_other_codes_reports)
PACKAGE = Path(__file__).resolve().parent.parent

_VALUED = {
    "--since",
    "--until",
    "--by",
    "--mode",
    "--start-of-week",
    "--width",
    "--state-dir",
    "--claude-dir",
    "--timezone",
}
_FLAGS = {"--json", "--breakdown", "--wide"}


def cache_key(kind: str, timezone: str, since: object, until: object, by: str, mode: str, week_start: str) -> str:
    """The report cache's key: the document is `--json`'s output, indented, without its newline."""
    return f"{kind} {timezone} {since} {until} {by} {mode} {week_start} json"


def answer(argv: Sequence[str], env: Mapping[str, str]) -> bytes | None:
    """`report`'s output for these arguments when the cache holds it and nothing has changed, else None."""
    parsed = _parse(argv)
    if (
        parsed is None
        or defaults.config_file_from(None, env) is not None
        or any(n.startswith(defaults.ENV_PREFIX) for n in env)
    ):
        return None
    options, dirs = parsed
    # The zone is not checked: a document is cached only under a name the full command took for a zone, and
    # where that is not the machine's first name (TZ names none), the key misses and the full command runs.
    timezone = options.get("--timezone") or next(iter(defaults.zone_names(env)), "UTC")
    roots = tuple(Path(p).expanduser() for p in dirs) or defaults.default_roots(env)
    if not _named_dirs_ok(roots, env):
        return None
    state = Path(options["--state-dir"]).expanduser() if "--state-dir" in options else defaults.default_state_dir(env)
    ledger = state / "ledger.sqlite3"
    if not (ledger.is_file() and os.access(ledger, os.W_OK) and os.access(state, os.W_OK)):
        return None  # the full command opens it for writing, and says what is wrong
    try:
        since, until = _day(options.get("--since")), _day(options.get("--until"))
    except ValueError:
        return None
    if since and until and since > until:
        return None
    key = cache_key(
        options["kind"],
        timezone,
        since,
        until,
        options.get("--by", "model"),
        options.get("--mode", "auto"),
        options.get("--start-of-week", "sunday"),
    )
    try:
        db = sqlite3.connect(ledger, timeout=30, isolation_level=None)
        try:
            return _cached(db, key, roots)
        finally:
            db.close()
    except (sqlite3.Error, OSError):  # the full command says what is wrong
        return None


def _parse(argv: Sequence[str]) -> tuple[dict[str, str], list[str]] | None:
    """The options of `report KIND --json ...` as click would take them, and the `--claude-dir`s; None for
    anything else."""
    if argv[:1] != ["report"]:
        return None
    options: dict[str, str] = {}
    dirs: list[str] = []
    args = list(argv[1:])
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        name = "--timezone" if name == "-z" and not eq else name
        if arg in _FLAGS:
            options[arg] = ""
        elif name in _VALUED:
            if not eq:
                value = args.pop(0) if args else ""
            if not value or value.startswith("-"):
                return None
            if name == "--claude-dir":
                dirs.append(value)
            else:
                options[name] = value  # the last one wins, as in click
        elif not arg.startswith("-") and "kind" not in options:
            options["kind"] = arg
        else:
            return None
    valid = (
        options.get("kind") in KINDS
        and "--json" in options
        and options.get("--by", "model") in BY
        and options.get("--mode", "auto") in MODES
        and options.get("--start-of-week", "sunday") in WEEK_STARTS
        and _width_ok(options.get("--width"))
    )
    return (options, dirs) if valid else None


def _width_ok(width: str | None) -> bool:
    return width is None or (width.isascii() and width.isdigit() and int(width) >= 20)


def _day(value: str | None) -> str | None:
    """A date flag as the cache key writes it (YYYY-MM-DD), None when absent; ValueError when not a plain
    YYYY-MM-DD or YYYYMMDD date (click decides those)."""
    if value is None:
        return None
    digits = value.replace("-", "") if len(value) == 10 and value[4] == value[7] == "-" else value
    if len(digits) != 8 or not (digits.isascii() and digits.isdigit()):
        raise ValueError(value)
    from datetime import date

    return date(int(digits[:4]), int(digits[4:6]), int(digits[6:])).isoformat()


def _named_dirs_ok(roots: tuple[Path, ...], env: Mapping[str, str]) -> bool:
    """What `check_claude_dirs` lets pass without a word."""
    if roots == defaults.default_roots({k: v for k, v in env.items() if k != "CLAUDE_CONFIG_DIR"}):
        return True
    return all(root.is_dir() and (root / "projects").is_dir() for root in roots)


def _cached(db: sqlite3.Connection, key: str, roots: tuple[Path, ...]) -> bytes | None:
    meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN (?, ?, ?, ?, ?)", _META))
    fingerprint = meta.get("fingerprint")
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if fingerprint is None or meta.get(STAMP) != stamp(fingerprint, version, _code()) or "deferred_indexes" in meta:
        return None
    if not str(meta.get("prices", "")).startswith(f'{{"fingerprint":"{fingerprint}"'):
        return None  # the full command would store its price look-ups again
    if db.execute("SELECT 1 FROM prompts WHERE requests IS NULL LIMIT 1").fetchone() is not None:
        return None  # the full command may close it
    generation = int(meta.get("generation") or 0)
    row = db.execute("SELECT body FROM reports WHERE key = ? AND generation = ?", (key, generation)).fetchone()
    if row is None or not _all_read(db, roots):
        return None
    return bytes(row[0])


_META = ("fingerprint", STAMP, "prices", "generation", "deferred_indexes")


def _all_read(db: sqlite3.Connection, roots: tuple[Path, ...]) -> bool:
    """Every transcript read to its end and unchanged since (same size and mtime as its stored offset),
    no stored file gone, nothing unreadable: the ingest would find nothing to do."""
    errors: list[str] = []
    files = 0
    found = set()
    for _, st in transcripts(roots, errors):
        files += 1
        if st.st_size:  # an empty file is nothing to read, and has no offset
            found.add((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    if errors or not files:
        return False
    return found == set(db.execute("SELECT dev, ino, offset, mtime FROM files"))


def stamp(fingerprint: str, schema_version: int, code: str) -> str:
    """What a warm answer relies on besides the ledger: the prices' fingerprint and the schema version as
    the full command left them, and the code and price data that made them (`_code`)."""
    return "\n".join([fingerprint, str(schema_version), code])


def _code() -> str:
    """The code and price data in use: the package's place, the installed versions, each file by size and mtime."""
    lines = [str(PACKAGE), *_installed()]
    for folder, subfolders, names in os.walk(PACKAGE):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for name in sorted(names):
            st = os.stat(os.path.join(folder, name))
            lines.append(f"{os.path.relpath(os.path.join(folder, name), PACKAGE)} {st.st_size} {st.st_mtime_ns}")
    return "\n".join(lines)


def drop_other_codes_reports(db: sqlite3.Connection) -> str:
    """Empties the report cache when other code made its documents: an upgrade may change a report's shape, and
    the cache is otherwise kept until a request changes. A busy ledger is left as it is: the next report tries.
    Returns the code's identity (`_code`), for `remember`."""
    from contextlib import suppress

    code = _code()
    row = db.execute("SELECT value FROM meta WHERE key = ?", (CODE,)).fetchone()
    if row is None or row[0] != code:
        with suppress(sqlite3.OperationalError):
            db.execute("DELETE FROM reports")  # first: a stop in between only empties the cache once more
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (CODE, code))
    return code


def _installed() -> list[str]:
    """genai-prices' place and installed version, and ours when installed (a release whose files kept their
    sizes and mtimes still has another version)."""
    from importlib.util import find_spec

    spec = find_spec("genai_prices")
    prices = os.path.dirname(os.path.dirname(spec.origin)) if spec and spec.origin else None
    ours = DISTRIBUTION.replace("-", "_") + "-"
    found = [str(spec and spec.origin)]
    for site, prefix in ((prices, "genai_prices-"), (str(PACKAGE.parent), ours)):
        found += sorted(n for n in (os.listdir(site) if site else ()) if n.startswith(prefix))
    return found


def remember(db: sqlite3.Connection, fingerprint: str, code: str) -> None:
    """Stamps the ledger after a full report whose settings price as the defaults do (no overrides, no
    classification remaps): a warm answer is then valid while the stamp holds. A busy ledger stays
    unstamped: the next report tries again."""
    from contextlib import suppress

    version = db.execute("PRAGMA user_version").fetchone()[0]
    value = stamp(fingerprint, version, code)
    row = db.execute("SELECT value FROM meta WHERE key = ?", (STAMP,)).fetchone()
    if row is None or row[0] != value:
        with suppress(sqlite3.OperationalError):
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (STAMP, value))
