"""Ingest: transcript files → parsed requests → ledger, in batches committed with their offsets.

This is the one replay path: `report` runs it to the end of the files before answering, and the
daemon runs the same function whenever files change. A large backlog is parsed by worker processes
(one per core) in file ranges that end on line boundaries; the ledger takes the results in order,
so offsets only ever advance over bytes that are committed.
"""

from __future__ import annotations

import fcntl
import gc
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any, Protocol

from exporter.events import Enrich, Outcome, Prompt, Request, Source, Tokens, merge_all
from exporter.ledger.store import Ledger
from exporter.sources import files as fs

BATCH_BYTES = 64 << 20
# A file untouched this long has stopped growing: a last line without its newline that is a whole JSON
# object is then read (Claude Code appends a line and its newline in one write, so this is rare).
QUIET_NS = 2_000_000_000
UNIT_BYTES = 16 << 20  # a worker's share: bounds the memory one result takes
PARALLEL_BYTES = 32 << 20  # below this a pool costs more than it saves

Progress = Callable[[int, int], None]  # (bytes done, bytes to do)


class Pricing(Protocol):
    """Prices and classifies requests; its price look-ups can travel back from worker processes."""

    def enrich(self, r: Request) -> Request: ...

    def remembered(self) -> dict[str, Any]: ...

    def remember(self, lookups: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Part:
    """Lines of one file that start in [start, stop); stop None means to the end. `counted`: the end of
    the file's bytes already counted, when the part lies in them (see `files.counted_until`): its lines
    are merged as copies of nothing, so only what they decide (a request's owner) is re-derived."""

    found: fs.Found
    start: int
    stop: int | None
    counted: int = 0


Unit = tuple[Part, ...]  # a worker's share: whole small files, or a slice of a large one


@dataclass
class Parsed:
    requests: list[Request]
    counts: Counter[str]
    ends: list[tuple[int, str] | None]  # per part: offset after its last complete line, and the
    # file's head fingerprint there (read here, where the file is hot); None: the part failed
    errors: list[str]
    lookups: dict[str, Any] | None = None  # a worker's price look-ups, for the ledger's process
    prompts: list[Prompt] = field(default_factory=list)

    # From a worker the requests travel as plain tuples: a named tuple pickles through a Python call
    # per object (its `__getnewargs__`), which made pickling a result take half as long again.
    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"requests": [(*r[:7], tuple(r[7]), *r[8:]) for r in self.requests]}

    def __setstate__(self, state: dict[str, Any]) -> None:
        new = tuple.__new__  # `_make` without its call: the fields are in order already
        state["requests"] = [new(Request, (*r[:7], new(Tokens, r[7]), *r[8:])) for r in state["requests"]]
        self.__dict__.update(state)


@dataclass
class IngestResult:
    found: list[fs.Found] = field(default_factory=list)  # the files, as discovered
    bytes_read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    more: bool = False  # a fair share left new bytes to the next pass
    deferred: bool = False  # the secondary indexes wait for `Ledger.build_indexes` (see `ingest`'s `later`)

    @property
    def files(self) -> int:
        return len(self.found)


def parse_unit(unit: Unit, enrich: Enrich | None = None) -> Parsed:
    """Reads, parses and (given `enrich`) prices one unit; a file that cannot be read gives an
    error, not an exception."""
    from exporter.sources.transcripts import parse_chunk  # msgspec's import: only when there is something to parse

    parsed = Parsed([], Counter(), [], [])
    merged: dict[str, Request] = {}
    for part in unit:
        end = part.start
        counts: Counter[str] = Counter() if part.counted else parsed.counts  # counted before: not again
        try:
            origin = fs.origin_of(part.found.path)
            for lines, offset, too_long in fs.read_lines(part.found.path, part.start, part.stop):
                end = offset
                counts[Outcome.SKIPPED] += too_long
                events = parse_chunk(lines, counts, parsed.prompts, slow=counts)  # SLOW is taken out in `_Batch`
                requests = (Request.from_event(e, origin) for e in events)
                merge_all((r._replace(copies=0) for r in requests) if part.counted else requests, merged)
            parsed.ends.append((end, fs.head_of(part.found.path, end) if end > part.start else ""))
        except OSError as err:
            parsed.errors.append(f"{part.found.path}: {err.strerror or err}")
            parsed.ends.append(None)
    parsed.requests = [enrich(r) for r in merged.values()] if enrich else list(merged.values())
    return parsed


_worker_pricing: Pricing | None = None  # set once in each worker process, before its first unit


def _start_worker(pricing: Pricing) -> None:
    global _worker_pricing
    _worker_pricing = pricing
    gc.disable()  # see `_no_cycle_collection`
    _keep_freed_memory()


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Parsing and merging make millions of tuples and free them by reference counting; none is in a
    cycle, yet each allocation past the threshold wakes the cycle collector, which then walks every
    live object: ~7 % of a serial ingest's CPU. It sleeps while an ingest runs."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _keep_freed_memory() -> None:
    """glibc would give each freed read buffer back to the kernel and fault it in again on the next
    read: a third of a cold ingest's system time. Workers are short-lived, so they keep it."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 << 20)  # M_MMAP_THRESHOLD: buffers come from the heap, not fresh mmaps
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD: the heap is not handed back at each free
    except (OSError, AttributeError):
        pass  # not glibc: only slower


def _parse_in_worker(unit: Unit) -> Parsed:
    assert _worker_pricing is not None
    parsed = parse_unit(unit, _worker_pricing.enrich)
    parsed.lookups = _worker_pricing.remembered()
    return parsed


@contextmanager
def ingest_lock(state_dir: Path) -> Iterator[None]:
    """One ingest at a time per ledger; readers never wait (SQLite WAL)."""
    with (state_dir / "ingest.lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ingest(
    ledger: Ledger,
    roots: list[Path],
    pricing: Pricing,
    progress: Progress | None = None,
    batch_bytes: int = BATCH_BYTES,
    workers: int | None = None,
    stop: Callable[[], bool] | None = None,
    start_method: str = "fork",
    share: int | None = None,
    now_ns: int | None = None,
    later: bool = False,
) -> IngestResult:
    """Reads every new byte under the roots into the ledger; one bad file never stops the rest.

    `stop`, checked after each unit, ends the ingest early: what was read so far is committed.
    `share` (see `plan`) leaves part of a large backlog to the next pass; `result.more` says so.
    `now_ns` (default the clock) tells which files have stopped growing (see `plan`).
    `later`: the indexes a first ingest deferred are left to the caller (`result.deferred` says so),
    who may build them while reading the requests; after an error they are built here all the same.
    """
    result = IngestResult()
    with ingest_lock(ledger.path.parent), _no_cycle_collection():
        found = fs.discover(roots, result.errors)
        result.found = found
        states = ledger.file_states()
        deferred: list[str] = []
        units = plan(found, states, result.errors, share, deferred, time.time_ns() if now_ns is None else now_ns)
        result.more = bool(deferred)
        total = sum((p.found.size if p.stop is None else p.stop) - p.start for u in units for p in u)
        ledger.build_indexes()  # those a first ingest killed before its end left undone
        batch = _Batch(ledger, pricing.enrich, result, batch_bytes)
        if batch.fresh is not None and total >= PARALLEL_BYTES:
            ledger.defer_indexes()
            result.deferred = later
        try:
            for unit, parsed in _parse_all(units, total, workers, pricing, start_method, stop or (lambda: False)):
                result.errors += parsed.errors
                if parsed.lookups:
                    pricing.remember(parsed.lookups)
                batch.add(unit, parsed)
                if progress:
                    progress(result.bytes_read + batch.size, total)
                if stop and stop():
                    break
            batch.flush()
        except BaseException:
            ledger.build_indexes()
            raise
        if not result.deferred:
            ledger.build_indexes()
        gone = states.keys() - {(f.dev, f.ino) for f in found}
        if gone:
            ledger.forget_files(gone)
    return result


def plan(
    found: list[fs.Found],
    states: dict[tuple[int, int], fs.FileState],
    errors: list[str],
    share: int | None = None,
    deferred: list[str] | None = None,
    now_ns: int | None = None,
) -> list[Unit]:
    """The units to read: about UNIT_BYTES each, oldest file first, large files cut at line starts.

    Each file is read up to its last complete line as found: a pass never chases a file that grows
    while it is read (the growth wakes the next pass). With `share`, when several files have new
    bytes, each gives this pass about `share` of them at most, so one fast-growing file cannot hold
    back the others' new requests; the paths of the files left behind go to `deferred`.
    A last line without its newline is read once the file has stopped growing (unmodified for
    QUIET_NS before `now_ns`, default the clock) if it is a whole JSON object.
    """
    now = time.time_ns() if now_ns is None else now_ns
    # a file, where its new lines start and end, and how much of it was counted already
    spans: list[tuple[fs.Found, int, int | None, int]] = []
    # Oldest first, for a stable order; who owns a request a fork copied does not depend on it (see
    # `Request.origin`).
    for f in sorted(found, key=lambda f: f.mtime):
        try:
            state = states.get((f.dev, f.ino))
            start = fs.start_offset(f, state)
            counted = fs.counted_until(f, state)
            end = fs.complete_end(f.path, start, f.size) if f.size > start else start
            if end is not None and end < f.size and now - f.mtime >= QUIET_NS and fs.finished_tail(f.path, end, f.size):
                end = f.size
            if counted and end is not None:
                end = max(end, counted)  # what was counted is read again, a last line without newline too
        except OSError as err:
            errors.append(f"{f.path}: {err.strerror or err}")
            continue
        if end != start:
            spans.append((f, start, end, counted))
    parts: list[Part] = []
    for f, start, end, counted in spans:
        try:
            if counted:
                parts += _parts(f, 0, counted, counted)
                start = counted
                if end is not None and end <= counted:
                    continue
            elif share is not None and len(spans) > 1:
                end = _shared_end(f, start, end, share, deferred)
            parts += _parts(f, start, end)
        except OSError as err:
            errors.append(f"{f.path}: {err.strerror or err}")
    units: list[Unit] = []
    size, current = 0, []
    for part in parts:
        current.append(part)
        size += (part.found.size if part.stop is None else part.stop) - part.start
        if size >= UNIT_BYTES:
            units.append(tuple(current))
            size, current = 0, []
    return [*units, tuple(current)] if current else units


def _shared_end(f: fs.Found, start: int, end: int | None, share: int, deferred: list[str] | None) -> int | None:
    """Where this pass stops reading `f` to leave the others their share: the first line start
    `share` bytes on, if it comes before `end`."""
    cut = fs.line_start_after(f.path, start + share)
    if cut is None or cut >= (f.size if end is None else end):
        return end
    if deferred is not None:
        deferred.append(f.path)
    return cut


def _parts(f: fs.Found, start: int, end: int | None, counted: int = 0) -> list[Part]:
    """[start, end) cut at the first line start after every UNIT_BYTES; end None: to the end of the
    file. Each cut is searched from past the previous one: one line spanning many units (hundreds
    of MB without a newline) is read once, not once per unit."""
    last = f.size if end is None else end
    bounds, at = [start], start + UNIT_BYTES
    while at < last:
        cut = fs.line_start_after(f.path, at)
        if cut is None or cut >= last:
            break
        bounds.append(cut)
        at += UNIT_BYTES * ((cut - at) // UNIT_BYTES + 1)  # the first of the old cut points past `cut`
    return [*(Part(f, a, b, counted) for a, b in pairwise(bounds)), Part(f, bounds[-1], end, counted)]


def _parse_all(
    units: list[Unit], total: int, workers: int | None, pricing: Pricing, start_method: str, stop: Callable[[], bool]
) -> Iterator[tuple[Unit, Parsed]]:
    """Parsed and priced units in order; in worker processes when the backlog is large enough to
    pay off. Pricing there too keeps the ledger's process free for merging and writing. A stop ends
    it without waiting for the units being parsed."""
    count = workers if workers is not None else (os.cpu_count() or 1)
    if count < 2 or total < PARALLEL_BYTES or len(units) < 2:
        for unit in units:
            yield unit, parse_unit(unit, pricing.enrich)
        return
    if stop():  # no workers to start only to kill them
        return
    from exporter.ledger.workers import Workers  # only a large backlog pays for multiprocessing's imports

    # fork (the CLI): workers start in milliseconds, and inherit `pricing` unpickled; the daemon, which
    # has threads, spawns them. They only parse and price, never touching the ledger.
    with Workers[Unit, Parsed](start_method, count, _start_worker, (pricing,), _parse_in_worker, units) as pool:
        yield from pool.ordered(stop, ahead=4 * count)  # bounded look-ahead keeps memory flat


class _Batch:
    """Requests, line counts and file offsets gathered until they are worth a transaction."""

    def __init__(self, ledger: Ledger, enrich: Enrich, result: IngestResult, limit: int) -> None:
        self.ledger, self.enrich, self.result, self.limit = ledger, enrich, result, limit
        self.requests: dict[str, Request] = {}
        self.fresh: set[str] | None = set() if ledger.empty() else None
        # Files a part of which failed: offsets of their later parts would skip the failed lines.
        self.failed: set[tuple[int, int]] = set()
        self.files: dict[tuple[int, int], fs.FileState] = {}
        self.counts: Counter[str] = Counter()
        self.slow = 0  # lines the fast decoder passed to the full parser (see `transcripts.SLOW`)
        self.prompts: list[Prompt] = []
        self.size = 0

    def add(self, unit: Unit, parsed: Parsed) -> None:
        from exporter.sources.transcripts import SLOW  # loaded by then: `parse_unit` imported it

        merge_all(parsed.requests, self.requests)
        self.slow += parsed.counts.pop(SLOW, 0)
        self.counts.update(parsed.counts)
        self.prompts += parsed.prompts
        for part, done in zip(unit, parsed.ends, strict=True):
            f = part.found
            if done is None or (part.stop is not None and done[0] < part.stop):
                self.failed.add((f.dev, f.ino))
            elif done[0] > part.start and (f.dev, f.ino) not in self.failed:
                end, head = done
                self.size += 0 if part.counted else end - part.start
                if end >= part.counted:  # inside the counted bytes the negative offset stays until their end
                    self.files[(f.dev, f.ino)] = fs.FileState(f.dev, f.ino, end, head, f.mtime)
        if self.size >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not (self.requests or self.files or self.counts):
            return
        outcomes = self.ledger.commit(
            self.requests.values(),
            self.enrich,
            self.files.values(),
            self.counts,
            Source.TRANSCRIPTS,
            self.size,
            self.fresh,
            self.prompts,
            slow=self.slow,
        )
        self.result.outcomes.update(outcomes)
        self.result.bytes_read += self.size
        self.requests, self.files, self.counts, self.prompts, self.size, self.slow = {}, {}, Counter(), [], 0, 0
