"""Finds Claude Code transcript files and reads only their new bytes, a chunk of whole lines at a time.

A file is known by (device, inode) and a fingerprint of its first bytes, so a replaced file (new
inode) or a reused inode is read from the start, and a truncated one (size below the offset) too.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CHUNK = 1 << 20  # above ~1 MiB, fresh buffers cost more in page faults than the reads
# No usage line comes near this; longer lines (file snapshots can be hundreds of MB) are skipped
# without ever being held in memory whole.
MAX_LINE = 16 << 20
HEAD = 1024


@dataclass(frozen=True, slots=True)
class FileState:
    """How far a file has been consumed; `head` fingerprints its first bytes, `mtime` is in ns."""

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
    """Every `projects/**/*.jsonl` under the roots (subagent files included), each file once.

    Symlinked folders are followed; a folder already visited (by device and inode) is not entered
    again, which breaks loops and makes overlapping roots harmless.
    """
    seen: set[tuple[int, int]] = set()
    found: list[Found] = []
    for root in roots:
        projects = os.path.join(root, "projects")
        if not os.path.isdir(projects) and os.path.basename(os.path.normpath(root)) == "projects":
            projects = str(root)  # ccusage accepts the projects folder itself as a root, so do we
        if os.path.isdir(projects):
            _walk(projects, seen, found, errors, check=True)
    return found


def _walk(folder: str, seen: set[tuple[int, int]], found: list[Found], errors: list[str] | None, check: bool) -> None:
    # Only a root or a symlinked folder can lead back into visited ground; plain subfolders skip the
    # stat, which matters with thousands of session folders.
    try:
        if check:
            st = os.stat(folder)
            if (st.st_dev, st.st_ino) in seen:
                return
            seen.add((st.st_dev, st.st_ino))
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError as err:
        if errors is not None:
            errors.append(f"{folder}: {err.strerror or err}")
        return
    for entry in entries:
        try:
            if entry.is_dir():  # follows symlinks
                _walk(entry.path, seen, found, errors, check=entry.is_symlink())
            elif entry.name.endswith(".jsonl"):
                fst = entry.stat()  # a dangling link raises, and is reported
                if (fst.st_dev, fst.st_ino) not in seen:
                    seen.add((fst.st_dev, fst.st_ino))
                    found.append(Found(entry.path, fst.st_dev, fst.st_ino, fst.st_size, fst.st_mtime_ns))
        except OSError as err:
            if errors is not None:
                errors.append(f"{entry.path}: {err.strerror or err}")


def head_of(path: str, length: int) -> str:
    """Fingerprint of a file's first `length` bytes (at most HEAD)."""
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(min(length, HEAD)), digest_size=8).hexdigest()


def start_offset(found: Found, state: FileState | None) -> int:
    """Where to resume: 0 for a new, replaced or truncated file, else the stored offset."""
    if state is None or (state.dev, state.ino) != (found.dev, found.ino):
        return 0
    if found.size < state.offset or state.offset == 0:
        return 0
    if found.size == state.offset and found.mtime == state.mtime:
        return state.offset  # untouched since it was read: nothing to check, nothing to read
    return state.offset if head_of(found.path, state.offset) == state.head else 0


def read_lines(path: str, offset: int, stop: int | None = None, chunk: int = CHUNK) -> Iterator[tuple[bytes, int, int]]:
    """Yields (complete lines, offset after them, lines skipped as too long) from `offset` on.

    Reads the lines that start before `stop` (all lines when None). A trailing partial line is held
    back: the last offset yielded is the start of that line, so the next read picks it up once its
    newline has been written.
    """
    with open(path, "rb", buffering=0) as f:  # whole chunks are read: Python's buffer only copies
        f.seek(offset)
        carry = b""
        skipping = False  # inside a line longer than MAX_LINE: drop bytes up to its newline
        while (stop is None or offset < stop) and (block := f.read(chunk)):
            if skipping:
                nl = block.find(b"\n")
                if nl == -1:
                    continue
                offset = f.tell() - len(block) + nl + 1
                yield b"", offset, 1
                block, skipping = block[nl + 1 :], False
            data = carry + block if carry else block
            cut = _cut(data, offset, stop)
            if cut:
                yield data[:cut], offset + cut, 0
                offset += cut
            carry = data[cut:]
            if len(carry) > MAX_LINE:
                carry, skipping = b"", True


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
