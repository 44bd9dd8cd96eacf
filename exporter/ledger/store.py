"""The ledger: one SQLite row per billable request, merged from every copy seen, plus read offsets.

A batch of events commits together with the file offsets and line counts it consumed, so a crash
replays at most one batch and the merge (per-field maximum) absorbs the replay. Money is stored as
integer nano-dollars so sums are exact.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from operator import itemgetter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from exporter.events import Enrich, Outcome, Prompt, Request, Source, Tokens, merge_all, model_family
from exporter.ledger import series
from exporter.ledger.schema import COLUMNS, MARKS, MIGRATIONS, register_functions
from exporter.sources.files import FileState


def _row(r: Request) -> tuple[object, ...]:
    """The row in `COLUMNS`'s order. Fields by position (a named field costs a call, and this runs once
    per request written): 5 model, 7 tokens, 9 tools, 12 compaction, 13 reported cost, 14 user,
    15 copies, 16 origin, 17-19 interaction, category, cost, 20 uncached cost."""
    tools = r[9]
    joined = ",".join(sorted(tools)) if tools else ""
    return (
        *r[:6],
        model_family(r[5]),
        r[6],
        *r[7],
        r[8],
        joined,
        *r[10:12],
        int(r[12]),
        *r[17:20],
        r[13],
        r[15],
        r[14],
        r[20],
        r[16],
    )


def _request(row: Any) -> Request:
    (
        key,
        request_id,
        ts,
        session_id,
        project,
        model,
        _family,
        agent,
        i,
        o,
        cr,
        c5,
        c1h,
        web,
        tools,
        speed,
        source,
        compaction,
        interaction,
        category,
        cost,
        reported,
        copies,
        user,
        uncached,
        origin,
    ) = row
    return Request(
        key=key,
        request_id=request_id,
        ts=ts,
        session_id=session_id,
        project=project,
        model=model,
        agent=agent,
        tokens=Tokens(i, o, cr, c5, c1h),
        web_search=web,
        tools=frozenset(tools.split(",")) - {""},
        speed=speed,
        source=source,
        compaction=bool(compaction),
        reported_cost=reported,
        copies=copies,
        interaction=interaction,
        category=category,
        cost=cost,
        user=user,
        uncached_cost=uncached,
        origin=origin,
    )


PAGE_SIZE = 8192  # bytes, for a new ledger (see `_migrate`)
# Secondary indexes: nothing a first ingest does reads them (it finds rows by key).
DEFERRED_INDEXES = ("requests_ts", "requests_session", "requests_request_id", "prompts_session")
_DEFERRED = "deferred_indexes"  # the meta key holding what `defer_indexes` dropped


class LedgerError(Exception):
    """The ledger cannot be opened or written (permissions, disk, a newer schema)."""


class Ledger:
    """The SQLite ledger in a state dir. Safe to share between processes (WAL + busy timeout)."""

    FILE = "ledger.sqlite3"
    _copy: Path | None = None  # a private copy read by `read_only`

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / self.FILE
        try:
            state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA synchronous=NORMAL")
            register_functions(self.db)
            self._migrate()
        except (OSError, sqlite3.Error) as err:
            raise LedgerError(f"cannot open the ledger at {self.path}: {err}") from err

    @classmethod
    def read_only(cls, state_dir: Path) -> Ledger:
        """The ledger as it is on disk, for a daemon that cannot write it: nothing there is changed.

        Commits a killed process left in the write-ahead log are part of it, but replaying them needs
        a writable folder: then a private copy is read (and removed on `close`).
        """
        ledger = cls.__new__(cls)
        ledger.path, ledger._copy = state_dir / cls.FILE, None
        wal = ledger.path.with_name(cls.FILE + "-wal")
        try:
            if wal.exists() and wal.stat().st_size:
                ledger._copy = Path(tempfile.mkdtemp(prefix="claude-usage-ledger-"))
                for source in (ledger.path, wal):
                    shutil.copyfile(source, ledger._copy / source.name)
                ledger.db = sqlite3.connect(ledger._copy / cls.FILE, isolation_level=None)
            else:  # immutable: no -shm file is needed, so this works in a folder we cannot write
                uri = f"file:{quote(str(ledger.path))}?immutable=1"
                ledger.db = sqlite3.connect(uri, uri=True, isolation_level=None)
            version = ledger.db.execute("PRAGMA user_version").fetchone()[0]
        except (OSError, sqlite3.Error) as err:
            ledger.close()
            raise LedgerError(f"cannot read the ledger at {ledger.path}: {err}") from err
        if version != len(MIGRATIONS):
            ledger.close()
            raise LedgerError(f"{ledger.path} has schema version {version}, not {len(MIGRATIONS)}")
        return ledger

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.close()
        if self._copy is not None:
            shutil.rmtree(self._copy, ignore_errors=True)

    def _migrate(self) -> None:
        # executescript commits before it runs, so SQLite's own lock cannot cover reading the version
        # and migrating; a file lock does, for processes opening a fresh state dir at once.
        with (self.path.parent / "migrate.lock").open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            # Only an empty file takes it (a ledger keeps the size it was made with): pages of 8 KiB cut the
            # writes of a first ingest's commits (and their system time) against SQLite's default of 4 KiB.
            self.db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            # Switching a fresh file to WAL takes an exclusive lock, and SQLite answers "database is
            # locked" at once, without waiting, when another process holds one: so under the file lock.
            self.db.execute("PRAGMA journal_mode=WAL")
            self._migrate_locked()

    def _migrate_locked(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise LedgerError(
                f"{self.path} has schema version {version}, newer than this release knows"
                f" ({len(MIGRATIONS)}): upgrade claude-usage-exporter"
            )
        if 0 < version < len(MIGRATIONS):
            self.build_indexes()  # those a first ingest killed midway dropped: a migration may expect them
        for number in range(version, len(MIGRATIONS)):
            # executescript commits whatever is pending, so the transaction is part of the script.
            self.db.executescript(f"BEGIN IMMEDIATE; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;")

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)

    # --- reading state -------------------------------------------------------------------------

    def file_states(self) -> dict[tuple[int, int], FileState]:
        rows = self.db.execute("SELECT dev, ino, offset, head, mtime FROM files")
        return {(d, i): FileState(d, i, o, h, m) for d, i, o, h, m in rows}

    def counters(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT name, value FROM counters"))

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def existing(self, keys: Iterable[str]) -> dict[str, Request]:
        found: dict[str, Request] = {}
        batch = list(keys)
        for start in range(0, len(batch), 500):
            part = batch[start : start + 500]
            marks = ",".join("?" * len(part))
            for row in self.db.execute(f"SELECT {COLUMNS} FROM requests WHERE key IN ({marks})", part):
                found[row[0]] = _request(row)
        return found

    def by_request_id(self, ids: Iterable[str]) -> dict[str, Request]:
        """Stored requests by their request id: where an OTLP event finds its transcript's row."""
        found: dict[str, Request] = {}
        batch = list(ids)
        for start in range(0, len(batch), 500):
            part = batch[start : start + 500]
            marks = ",".join("?" * len(part))
            for row in self.db.execute(f"SELECT {COLUMNS} FROM requests WHERE request_id IN ({marks})", part):
                found.setdefault(row[1], _request(row))
        return found

    def requests(self) -> Iterator[Request]:
        return (_request(row) for row in self.db.execute(f"SELECT {COLUMNS} FROM requests"))

    # --- writing -------------------------------------------------------------------------------

    def commit(
        self,
        requests: Iterable[Request],
        enrich: Enrich,
        files: Iterable[FileState] = (),
        counts: Counter[str] | None = None,
        source: str = Source.TRANSCRIPTS,
        bytes_read: int = 0,
        fresh: set[str] | None = None,
        prompts: Iterable[Prompt] = (),
        settled: Iterable[str] = (),
        slow: int = 0,
    ) -> Counter[str]:
        """Merges a batch into the ledger in one transaction; returns the line outcomes.

        A line that brings a new request counts as `usage`; every other copy as `duplicate`.
        `fresh`, when the ledger was empty before this ingest, holds the keys committed since:
        no other key can be stored, so a first ingest skips the look-ups. `slow`: lines of the batch the
        fast decoder left to the full parser, counted with the rest.
        """
        merged = merge_all(requests)
        outcomes: Counter[str] = Counter(counts or {})
        with self.transaction():
            if fresh is None:  # a request the OTLP source stored first is keyed by its request id (see `receive`)
                stored = self.existing([*merged, *(r.request_id for r in merged.values() if r.request_id)])
            else:
                stored = self.existing([k for k in merged if k in fresh])
            # An event whose transcript line came first joins that row (stored under its message id).
            events = [r.request_id for k, r in merged.items() if r.source == Source.OTLP and r.request_id]
            joined = self.by_request_id(k for k in events if k not in stored) if events else {}
            rows = []
            changes = series.Changes()
            usage = duplicate = 0  # plain ints: an enum key hashes in Python, twice per `+=`
            for key, request in merged.items():
                old = stored.get(key) or stored.get(request.request_id or key) or joined.get(request.request_id or key)
                usage += old is None
                # A copy re-read to re-derive its owner stands for no line (copies 0, see `Part.counted`).
                duplicate += max(0, request.copies - (old is None))
                if old is not None:
                    request = old.merge(request)
                request = request if request.interaction else enrich(request)
                changes.add(old, request)
                rows.append(_row(request))
            if rows:
                outcomes[Outcome.USAGE] += usage
                outcomes[Outcome.DUPLICATE] += duplicate
                changes.write(self.db)
                self._changed()
            series.add_prompts(self.db, prompts)
            self.db.executemany("DELETE FROM pending WHERE request_id = ?", [(key,) for key in settled])
            rows.sort(key=itemgetter(0))  # by key: the key index fills in order (stable: one key's last row wins)
            self.db.executemany(f"INSERT OR REPLACE INTO requests ({COLUMNS}) VALUES ({MARKS})", rows)
            self.db.executemany(
                "INSERT OR REPLACE INTO files (dev, ino, offset, head, mtime) VALUES (?, ?, ?, ?, ?)",
                [(f.dev, f.ino, f.offset, f.head, f.mtime) for f in files],
            )
            lines = {f"lines.{source}.{k}": v for k, v in outcomes.items()}
            self._add_counters(lines | {f"bytes.{source}": bytes_read, f"slow.{source}": slow})
        if fresh is not None:
            fresh.update(merged)
        return outcomes

    def receive(self, requests: Iterable[Request], enrich: Enrich, grace_ms: int, now_ms: int) -> Counter[str]:
        """OTLP api_request events. One the ledger holds already (its transcript line came first, or
        an earlier delivery) is a duplicate, merged into that row (per-field maximum: a transcript can
        under-state output); one already pending is a duplicate; the others wait `grace_ms` for their
        transcript line in `pending` (see `settle`), or, with no grace, are stored at once, keyed by
        their request id."""
        batch = merge_all(requests)
        stored = self._known_request_ids(batch, pending=False)
        known = self._known_request_ids(batch) - stored
        dupes: Counter[str] = Counter({Outcome.DUPLICATE: sum(batch[k].copies for k in known)})
        joins = [batch[k] for k in stored]
        new = [r for key, r in batch.items() if key not in known and key not in stored]
        if grace_ms <= 0:
            return +self.commit([*joins, *new], enrich, source=Source.OTLP, counts=dupes)
        outcomes = +self.commit(joins, enrich, source=Source.OTLP, counts=dupes)
        if new:
            with self.transaction():
                self.db.executemany(
                    "INSERT OR IGNORE INTO pending (request_id, received, request) VALUES (?, ?, ?)",
                    [(r.key, now_ms, orjson.dumps(_row(r))) for r in new],
                )
        return outcomes

    def settle(self, enrich: Enrich, grace_ms: int, now_ms: int) -> Counter[str]:
        """Stores the pending events whose grace is over and whose transcript line never came."""
        due = self.db.execute("SELECT request_id, request FROM pending WHERE received <= ?", (now_ms - grace_ms,))
        waiting = {key: _request(orjson.loads(row)) for key, row in due}
        if not waiting:
            return Counter()
        # One whose transcript line came meanwhile joins that row (a duplicate): it may hold more output.
        return +self.commit(list(waiting.values()), enrich, source=Source.OTLP, settled=list(waiting))

    def _known_request_ids(self, ids: Iterable[str], pending: bool = True) -> set[str]:
        batch = list(ids)
        known: set[str] = set()
        tables = ("requests", "pending") if pending else ("requests",)
        for start in range(0, len(batch), 500):
            part = batch[start : start + 500]
            marks = ",".join("?" * len(part))
            for table in tables:
                known.update(
                    r for (r,) in self.db.execute(f"SELECT request_id FROM {table} WHERE request_id IN ({marks})", part)
                )
        return known

    def close_prompts(self, now_ms: int) -> int:
        if self.db.execute("SELECT 1 FROM prompts WHERE requests IS NULL LIMIT 1").fetchone() is None:
            return 0  # the common case needs no write lock
        with self.transaction():
            return series.close_prompts(self.db, now_ms)

    def defer_indexes(self) -> None:
        """Drops the secondary indexes until `build_indexes`: one built over a first ingest's rows costs
        a fraction of keeping it up to date row by row. Their definitions wait in `meta` (in the same
        transaction), so a crash in between leaves them to the next `build_indexes`."""
        marks = ",".join("?" * len(DEFERRED_INDEXES))
        with self.transaction():
            found = dict(
                self.db.execute(
                    f"SELECT name, sql FROM sqlite_master WHERE type = 'index' AND name IN ({marks})", DEFERRED_INDEXES
                )
            )
            if found:
                self.set_meta(_DEFERRED, orjson.dumps({**orjson.loads(self.meta(_DEFERRED) or "{}"), **found}).decode())
            for name in found:
                self.db.execute(f"DROP INDEX {name}")

    def build_indexes(self) -> None:
        """Builds the indexes `defer_indexes` dropped, if any."""
        if self.meta(_DEFERRED) is None:
            return  # the common case needs no write lock
        with self.transaction():
            for sql in orjson.loads(self.meta(_DEFERRED) or "{}").values():
                self.db.execute(sql)
            self.db.execute("DELETE FROM meta WHERE key = ?", (_DEFERRED,))

    def empty(self) -> bool:
        return self.db.execute("SELECT 1 FROM requests LIMIT 1").fetchone() is None

    def _add_counters(self, values: dict[str, int]) -> None:
        series.add(self.db, "counters", ("name",), ("value",), [(k, v) for k, v in values.items() if v])

    def add_counters(self, values: dict[str, int], tool_calls: Counter[tuple[str, str, str]] | None = None) -> None:
        """Adds to named counters, and to the tool-call counts (tool, agent, project) a source reported."""
        with self.transaction():
            self._add_counters(values)
            if tool_calls:
                rows = [(*labels, calls) for labels, calls in tool_calls.items()]
                series.add(self.db, "tool_series", ("tool", "agent", "project"), ("calls",), rows)
                self._changed()

    def forget_files(self, gone: Iterable[tuple[int, int]]) -> None:
        """Drops offsets of files that are gone; their requests stay (counters never go down)."""
        with self.transaction():
            self.db.executemany("DELETE FROM files WHERE dev = ? AND ino = ?", gone)

    def reprice(self, fingerprint: str, enrich: Enrich) -> int:
        """Re-derives costs and labels of every request when the price data or rules changed (or when
        migration 4 dropped the fingerprint: a request stored before it has no uncached cost).

        The durable counters only grow: a higher price adds the difference, a lower one is kept.
        """
        if self.meta("fingerprint") == fingerprint:
            return 0
        with self.transaction():
            changes = series.Changes()
            rows = []
            for old in self.requests():
                new = enrich(old)
                changes.add(old, new)
                rows.append(_row(new))
            changes.write(self.db)
            self.db.executemany(f"INSERT OR REPLACE INTO requests ({COLUMNS}) VALUES ({MARKS})", rows)
            self.set_meta("fingerprint", fingerprint)
            self._changed()
        return len(rows)

    def _changed(self) -> None:
        """Marks the requests as changed: report documents computed before are stale."""
        self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('generation', '1')"
            " ON CONFLICT (key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
        )

    def generation(self) -> int:
        return int(self.meta("generation") or 0)

    def cached_report(self, key: str, compute: Callable[[], bytes]) -> bytes:
        """A report document from the cache while no request changed, else computed and kept."""
        generation = self.generation()
        row = self.db.execute("SELECT generation, body FROM reports WHERE key = ?", (key,)).fetchone()
        if row is not None and row[0] == generation:
            return bytes(row[1])
        body = compute()
        with suppress(sqlite3.OperationalError):  # a busy or read-only ledger only misses the cache
            self.db.execute(
                "INSERT OR REPLACE INTO reports (key, generation, body) VALUES (?, ?, ?)", (key, generation, body)
            )
        return body


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT, rolled back on any error (the connection is in autocommit mode)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, tb: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
