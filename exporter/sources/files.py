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

CHUNK = 4 << 20
# No usage line comes near this; longer lines (file snapshots can be hundreds of MB) are skipped
# without ever being held in memory whole.
MAX_LINE = 16 << 20
HEAD = 1024


@dataclass(frozen=True, slots=True)
class FileState:
    """How far a file has been consumed; `head` fingerprints its first bytes."""

    dev: int
    ino: int
    offset: int
    head: str


@dataclass(frozen=True, slots=True)
class Found:
    path: Path
    dev: int
    ino: int
    size: int
    mtime: float


def discover(roots: list[Path], errors: list[str] | None = None) -> list[Found]:
    """Every `projects/**/*.jsonl` under the roots (subagent files included), each file once.

    Symlinked folders are followed; a folder already visited (by device and inode) is not entered
    again, which breaks loops and makes overlapping roots harmless.
    """
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    found: list[Found] = []
    for root in roots:
        projects = root / "projects"
        if projects.is_dir():
            _walk(projects, seen_dirs, seen_files, found, errors)
    return found


def _walk(
    folder: Path,
    seen_dirs: set[tuple[int, int]],
    seen_files: set[tuple[int, int]],
    found: list[Found],
    errors: list[str] | None,
) -> None:
    try:
        st = folder.stat()
        if (st.st_dev, st.st_ino) in seen_dirs:
            return
        seen_dirs.add((st.st_dev, st.st_ino))
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        if errors is not None:
            errors.append(f"{folder}: {err.strerror or err}")
        return
    for entry in entries:
        try:
            if entry.is_dir():  # follows symlinks
                _walk(Path(entry.path), seen_dirs, seen_files, found, errors)
            elif entry.name.endswith(".jsonl") and entry.is_file():
                fst = entry.stat()
                if (fst.st_dev, fst.st_ino) not in seen_files:
                    seen_files.add((fst.st_dev, fst.st_ino))
                    found.append(Found(Path(entry.path), fst.st_dev, fst.st_ino, fst.st_size, fst.st_mtime))
        except OSError as err:
            if errors is not None:
                errors.append(f"{entry.path}: {err.strerror or err}")


def head_of(path: Path, length: int) -> str:
    """Fingerprint of a file's first `length` bytes (at most HEAD)."""
    with path.open("rb") as f:
        return hashlib.blake2b(f.read(min(length, HEAD)), digest_size=8).hexdigest()


def start_offset(found: Found, state: FileState | None) -> int:
    """Where to resume: 0 for a new, replaced or truncated file, else the stored offset."""
    if state is None or found.size < state.offset or state.offset == 0:
        return 0
    return state.offset if head_of(found.path, state.offset) == state.head else 0


def read_lines(path: Path, offset: int, chunk: int = CHUNK) -> Iterator[tuple[bytes, int, int]]:
    """Yields (complete lines, offset after them, lines skipped as too long) from `offset` on.

    A trailing partial line is held back: the last offset yielded is the start of that line, so
    the next read picks it up once its newline has been written.
    """
    with path.open("rb") as f:
        f.seek(offset)
        carry = b""
        skipping = False  # inside a line longer than MAX_LINE: drop bytes up to its newline
        while block := f.read(chunk):
            if skipping:
                nl = block.find(b"\n")
                if nl == -1:
                    continue
                offset = f.tell() - len(block) + nl + 1
                yield b"", offset, 1
                block, skipping = block[nl + 1 :], False
            data = carry + block if carry else block
            cut = data.rfind(b"\n") + 1
            if cut:
                yield data[:cut], offset + cut, 0
                offset += cut
            carry = data[cut:]
            if len(carry) > MAX_LINE:
                carry, skipping = b"", True
