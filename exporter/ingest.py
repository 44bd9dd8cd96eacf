"""Ingest: transcript files → parsed events → ledger, in batches committed with their offsets.

This is the one replay path: `report` runs it to the end of the files before answering, and the
daemon runs the same function whenever files change.
"""

from __future__ import annotations

import fcntl
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from exporter.events import UsageEvent
from exporter.ledger import Enrich, Ledger
from exporter.sources import files as fs
from exporter.sources.transcripts import SOURCE, parse_chunk

BATCH_BYTES = 32 << 20

Progress = Callable[[int, int], None]  # (bytes done, bytes to do)


@dataclass
class IngestResult:
    files: int = 0
    bytes_read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


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
    enrich: Enrich,
    progress: Progress | None = None,
    batch_bytes: int = BATCH_BYTES,
) -> IngestResult:
    """Reads every new byte under the roots into the ledger; one bad file never stops the rest."""
    result = IngestResult()
    with ingest_lock(ledger.path.parent):
        found = fs.discover(roots, result.errors)
        states = ledger.file_states()
        plan = []
        for f in found:
            try:
                start = fs.start_offset(f, states.get((f.dev, f.ino)))
            except OSError as err:
                result.errors.append(f"{f.path}: {err.strerror or err}")
                continue
            if f.size > start:
                plan.append((f, start))
        # Oldest first: a fork copies its parent's requests with the same times, and on a tie the
        # copy read first keeps the request, so the parent session (usually written first) wins.
        plan.sort(key=lambda item: item[0].mtime)
        result.files = len(found)
        total = sum(f.size - start for f, start in plan)
        batch = _Batch(ledger, enrich, result)
        for f, start in plan:
            try:
                for lines, offset, too_long in fs.read_lines(f.path, start):
                    batch.counts["skipped"] += too_long
                    batch.events.extend(parse_chunk(lines, batch.counts))
                    batch.size += offset - start
                    result.bytes_read += offset - start
                    start = offset
                    batch.files[(f.dev, f.ino)] = fs.FileState(f.dev, f.ino, offset, fs.head_of(f.path, offset))
                    if batch.size >= batch_bytes:
                        batch.flush()
                    if progress:
                        progress(result.bytes_read, total)
            except OSError as err:
                result.errors.append(f"{f.path}: {err.strerror or err}")
        batch.flush()
        ledger.forget_files({(f.dev, f.ino) for f in found})
        if result.errors:
            ledger.add_counters({f"errors.{SOURCE}": len(result.errors)})
    return result


class _Batch:
    def __init__(self, ledger: Ledger, enrich: Enrich, result: IngestResult) -> None:
        self.ledger, self.enrich, self.result = ledger, enrich, result
        self.events: list[UsageEvent] = []
        self.files: dict[tuple[int, int], fs.FileState] = {}
        self.counts: Counter[str] = Counter()
        self.size = 0

    def flush(self) -> None:
        if not (self.events or self.files or self.counts):
            return
        outcomes = self.ledger.commit(self.events, self.enrich, self.files.values(), self.counts, SOURCE)
        self.ledger.add_counters({f"bytes.{SOURCE}": self.size})
        self.result.outcomes.update(outcomes)
        self.events, self.files, self.counts, self.size = [], {}, Counter(), 0
