"""Finds Claude Code transcript files and reads only their new bytes, a chunk of whole lines at a time.

A file is known by (device, inode) and a fingerprint of its first bytes, so a replaced file (new
inode) or a reused inode is read from the start, and a truncated one (size below the offset) too.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import orjson

from exporter.events import to_ms
from exporter.sources.layout import transcripts

CHUNK = 1 << 20  # above ~1 MiB, fresh buffers cost more in page faults than the reads
# No usage line comes near this; longer lines (file snapshots can be hundreds of MB) are skipped
# without ever being held in memory whole.
MAX_LINE = 16 << 20
FINGERPRINT_BYTES = 1024  # a file is known by a hash of its first bytes, this many at most


@dataclass(frozen=True, slots=True)
class FileState:
    """How far a file has been consumed; `head` fingerprints its first bytes, `mtime` is in ns.

    `offset` is a line start, or, past a line longer than MAX_LINE still unfinished, the end of what
    was read of it: that line was counted once, and its bytes are not read again."""

    dev: int
    ino: int
    offset: int
    head: str
    mtime: int = 0


@dataclass(frozen=True, slots=True)
class Found:
    path: str
    dev: int
    ino: int
    size: int
    mtime: int  # ns


def discover(roots: list[Path], errors: list[str] | None = None) -> list[Found]:
    """The transcripts of Claude Code's layout under the roots, each file once (see `layout.transcripts`)."""
    return [Found(path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) for path, st in transcripts(roots, errors)]


def head_of(path: str, length: int) -> str:
    """Fingerprint of a file's first `length` bytes (at most FINGERPRINT_BYTES)."""
    with _opened(path) as fd:
        return hashlib.blake2b(os.pread(fd, min(length, FINGERPRINT_BYTES), 0), digest_size=8).hexdigest()


@contextmanager
def _opened(path: str) -> Iterator[int]:
    """A descriptor to `os.pread` from: these small reads at known places, once per file of an ingest,
    cost a third of what `open`'s file objects do."""
    fd = os.open(path, os.O_RDONLY)
    try:
        yield fd
    finally:
        os.close(fd)


ORIGIN_BYTES = 1 << 16  # a file's first time is looked for this far: it is on its first lines
_TIMESTAMP = re.compile(rb'"timestamp":"([0-9T:.+Z-]{10,40})"')


def origin_of(path: str) -> int | None:
    """The first time a transcript records (epoch ms), or None when none is near its start.

    A fork's file starts with its own first lines (2.1.x: the queue operation of the fork's prompt) and
    only then holds the copied conversation with its old times; so of two files holding one request,
    the one that started first is where it was made. A string value's quotes are escaped in JSON, so
    the pattern only finds a key's value."""
    head, found = b"", None
    with _opened(path) as fd:
        while found is None and len(head) < ORIGIN_BYTES and (block := os.pread(fd, 4096, len(head))):
            head += block  # usually the first block: the time is on the first lines
            found = _TIMESTAMP.search(head)
    if found is None:
        return None
    try:
        moment = datetime.fromisoformat(found.group(1).decode())
    except ValueError:
        return None
    return to_ms(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def start_offset(found: Found, state: FileState | None) -> int:
    """Where to resume: 0 for a new, replaced or truncated file, or one to read again (see
    `counted_until`), else the stored offset."""
    if state is None or (state.dev, state.ino) != (found.dev, found.ino):
        return 0
    if found.size < state.offset or state.offset <= 0:
        return 0
    if found.size == state.offset and found.mtime == state.mtime:
        return state.offset  # untouched since it was read: nothing to check, nothing to read
    return state.offset if head_of(found.path, state.offset) == state.head else 0


def counted_until(found: Found, state: FileState | None) -> int:
    """How many of the file's first bytes were counted already, when its stored offset is negative: a
    ledger migration asks for them to be read again (to re-derive what the lines decide) without
    counting them twice. 0 when there is no such offset, or the file was replaced or truncated since."""
    if state is None or state.offset >= 0 or (state.dev, state.ino) != (found.dev, found.ino):
        return 0
    end = -state.offset
    return end if found.size >= end and head_of(found.path, end) == state.head else 0


def read_lines(
    path: str, offset: int, stop: int | None = None, chunk: int = CHUNK, max_line: int | None = None
) -> Iterator[tuple[bytes, int, int]]:
    """Yields (complete lines, offset after them, lines skipped as too long) from `offset` on.

    Reads the lines that start before `stop` (all lines when None). A trailing partial line is held
    back: the last offset yielded is the start of that line, so the next read picks it up once its
    newline has been written; unless it ends exactly at `stop`, which says it is a finished last line
    (see `finished_tail`): then it is read, and the newline written after it later is passed over.
    A line longer than `max_line` (default MAX_LINE) is not held back: it
    is counted once, and passed over up to its newline or, unfinished, up to the end of the file,
    where the next read resumes passing over it; so its bytes are read once, however long it grows.
    """
    limit = MAX_LINE if max_line is None else max_line
    with open(path, "rb", buffering=0) as f:  # whole chunks are read: Python's buffer only copies
        # inside a line longer than the limit: drop bytes up to its newline; `counted` once it was
        skipping = counted = _inside_long_line(f, offset, limit, chunk)
        if not skipping and _after_finished_tail(f, offset):
            offset += 1  # the newline of a last line read without it: that line was counted
            yield b"", offset, 0
        f.seek(offset)
        carry = b""
        while (stop is None or offset < stop) and (block := f.read(chunk)):
            if skipping:
                nl = block.find(b"\n")
                if nl == -1:
                    continue
                offset = f.tell() - len(block) + nl + 1
                yield b"", offset, 0 if counted else 1
                block, skipping, counted = block[nl + 1 :], False, False
                if stop is not None and offset >= stop:  # the long line was the part's last
                    return
            data = carry + block if carry else block
            cut = _cut(data, offset, stop)
            if cut:
                yield data[:cut], offset + cut, 0
                offset += cut
            carry = data[cut:]
            if len(carry) > limit:
                carry, skipping = b"", True
        if skipping and f.tell() > offset:  # the end of the file, inside a long line
            yield b"", f.tell(), 0 if counted else 1
        elif carry and stop is not None and offset + len(carry) == stop:  # a finished last line
            yield carry, stop, 0


def _after_finished_tail(f: BinaryIO, offset: int) -> bool:
    """Whether `offset` ends a last line read without its newline and that newline has come since:
    the only offset ingest stores that neither starts a line nor lies in a long one."""
    if offset == 0:
        return False
    f.seek(offset - 1)
    around = f.read(2)
    return len(around) == 2 and around[0:1] != b"\n" and around[1:2] == b"\n"


def finished_tail(path: str, start: int, size: int, max_line: int | None = None) -> bool:
    """Whether [start, size), bytes after the last newline, is one whole JSON object: a last line
    written without its newline (ccusage counts it), not one still being written. The caller
    decides whether the file has stopped growing."""
    if size - start > (MAX_LINE if max_line is None else max_line):
        return False
    with open(path, "rb") as f:
        f.seek(start)
        tail = f.read(size - start)
    if len(tail) != size - start or not tail.rstrip(b"\x00\r\t ").endswith(b"}"):
        return False  # the cheap test first: most partial lines fail it
    try:
        return isinstance(orjson.loads(tail), dict)
    except orjson.JSONDecodeError:
        return False


def _inside_long_line(f: BinaryIO, offset: int, limit: int, chunk: int) -> bool:
    """Whether `offset` lies in a line already longer than `limit` there: where a read that passed
    over an unfinished long line stopped. Any other offset is a line start (ingest stores no other)."""
    if offset <= limit:
        return False
    f.seek(offset - 1)
    if f.read(1) == b"\n":
        return False  # a line start: the usual case, one byte read
    f.seek(offset - limit - 1)
    left = limit + 1
    while left > 0 and (block := f.read(min(chunk, left))):
        if b"\n" in block:
            return False
        left -= len(block)
    return True


def _cut(data: bytes, offset: int, stop: int | None) -> int:
    """Length of the complete lines at the front of `data` that start before `stop`."""
    end = data.rfind(b"\n") + 1
    if stop is None or offset + end <= stop:
        return end
    # The line holding byte `stop - 1` is the last one that starts before `stop`.
    last = data.find(b"\n", max(0, stop - offset - 1))
    return end if last == -1 else last + 1


def line_start_after(path: str, position: int) -> int | None:
    """The first line start at or after `position` that follows a complete line (a boundary for
    parallel reading), or None when no newline comes after it yet."""
    if position == 0:
        return 0
    with open(path, "rb") as f:
        f.seek(position - 1)
        while block := f.read(1 << 16):
            nl = block.find(b"\n")
            if nl != -1:
                return f.tell() - len(block) + nl + 1
    return None


def complete_end(path: str, start: int, size: int, max_line: int | None = None) -> int | None:
    """Where the complete lines in [start, size) end, so a read stops there and never chases a file
    growing while it is read: after the last newline, or `start` when the bytes are one line still
    being written. None when that unfinished line is already longer than `max_line`: a read to the
    end passes over it (see `read_lines`). Reads back at most `max_line` bytes from `size`."""
    limit = MAX_LINE if max_line is None else max_line
    floor = max(start, size - limit)
    with _opened(path) as fd:
        end, step = size, 512  # the last line is short, or already ends with its newline: read little first
        while end > floor:
            begin = max(floor, end - step)
            block = os.pread(fd, end - begin, begin)
            nl = block.rfind(b"\n")
            if nl != -1:
                return begin + nl + 1
            end, step = begin, min(step * 8, 1 << 16)
    return start if size - start <= limit else None
