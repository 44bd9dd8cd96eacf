"""Claude Code's transcript layout, walked: every transcript file under the roots once, with its stat.

Its rule: the standard library only (`os`), so a warm `report` can check every file without the package's
imports (see cli/warm.py); `files.discover` is this walk too, so both always see the same files.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

SUBAGENTS = "subagents"

Seen = set[tuple[int, int]]
Stat = tuple[str, os.stat_result]  # a transcript's path and its stat


def transcripts(roots: Sequence[str | os.PathLike[str]], errors: list[str] | None = None) -> list[Stat]:
    """The transcripts of Claude Code's layout under the roots, each file once, with its stat:
    `projects/<project>/*.jsonl` (sessions, and older versions' `agent-*.jsonl`) and
    `projects/<project>/<session>/subagents/*.jsonl`.

    Nothing deeper is walked: a symlink under `projects/` (to `/`, or back up the tree) costs a few
    listings at the layout's own depth, never a walk of what it points to. Symlinked project and
    session folders are followed at their level; a file or `projects` folder reached twice (by
    device and inode) counts once, which makes overlapping roots harmless. What cannot be read goes to
    `errors`.
    """
    seen: Seen = set()
    found: list[Stat] = []
    for root in roots:
        projects = os.path.join(root, "projects")
        if not os.path.isdir(projects) and os.path.basename(os.path.normpath(root)) == "projects":
            projects = os.fspath(root)  # ccusage accepts the projects folder itself as a root, so do we
        if not os.path.isdir(projects) or not _first_visit(projects, seen, errors):
            continue
        for project in _entries(projects, projects, errors):
            if _is_dir(project, projects, errors):
                _project(project.path, seen, found, errors)
    return found


def _project(folder: str, seen: Seen, found: list[Stat], errors: list[str] | None) -> None:
    # Opened once, its session folders opened and its files stat'ed relative to it: fewer path lookups
    # than by full paths, on thousands of files. Paths are joined by hand: `folder` (an entry's path) never
    # ends in a slash, and a name holds none.
    fd = _open(folder, errors)
    if fd is None:
        return
    try:
        for entry in _entries(fd, folder, errors):
            folder_or_file = _is_dir(entry, folder, errors)
            if folder_or_file:  # a session's folder (most sessions have none): only its subagents count
                _subagents(fd, entry.name, f"{folder}/{entry.name}/{SUBAGENTS}", seen, found, errors)
            elif folder_or_file is False and entry.name.endswith(".jsonl"):
                _stat(entry, folder, seen, found, errors)
    finally:
        os.close(fd)


def _subagents(at: int, session: str, folder: str, seen: Seen, found: list[Stat], errors: list[str] | None) -> None:
    fd = _open(folder, errors, f"{session}/{SUBAGENTS}", at)
    if fd is None:
        return
    try:
        for sub in _entries(fd, folder, errors):
            if sub.name.endswith(".jsonl") and _is_dir(sub, folder, errors) is False:
                _stat(sub, folder, seen, found, errors)
    finally:
        os.close(fd)


def _open(folder: str, errors: list[str] | None, relative: str | None = None, at: int | None = None) -> int | None:
    """A folder's descriptor; None when it cannot be opened: reported, unless it is a session's missing
    (or not a folder) `subagents`."""
    try:
        return os.open(folder if relative is None else relative, os.O_RDONLY | os.O_DIRECTORY, dir_fd=at)
    except OSError as err:
        if relative is None or not isinstance(err, FileNotFoundError | NotADirectoryError):
            _report(errors, folder, err)
        return None


def _stat(entry: os.DirEntry[str], folder: str, seen: Seen, found: list[Stat], errors: list[str] | None) -> None:
    try:
        st = entry.stat()  # a dangling link raises, and is reported
    except OSError as err:
        _report(errors, f"{folder}/{entry.name}", err)
        return
    if (st.st_dev, st.st_ino) not in seen:
        seen.add((st.st_dev, st.st_ino))
        found.append((f"{folder}/{entry.name}", st))  # `folder` never ends in a slash here


def _first_visit(folder: str, seen: Seen, errors: list[str] | None) -> bool:
    try:
        st = os.stat(folder)
    except OSError as err:
        _report(errors, folder, err)
        return False
    if (st.st_dev, st.st_ino) in seen:
        return False
    seen.add((st.st_dev, st.st_ino))
    return True


def _entries(folder: str | int, path: str, errors: list[str] | None) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as err:
        _report(errors, path, err)
        return []


def _is_dir(entry: os.DirEntry[str], folder: str, errors: list[str] | None) -> bool | None:
    """Follows symlinks; None (reported) for one that loops."""
    try:
        return entry.is_dir()
    except OSError as err:
        _report(errors, f"{folder}/{entry.name}", err)
        return None


def _report(errors: list[str] | None, path: str, err: OSError) -> None:
    if errors is not None:
        errors.append(f"{path}: {err.strerror or err}")
