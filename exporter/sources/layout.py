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
        for project in _entries(projects, errors):
            if _is_dir(project, errors):
                _project(project.path, seen, found, errors)
    return found


def _project(folder: str, seen: Seen, found: list[Stat], errors: list[str] | None) -> None:
    # Its files are stat'ed relative to it, held open: thousands of shorter path lookups. Paths are joined
    # by hand: `folder` (an entry's path) never ends in a slash, and a name holds none.
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        _report(errors, folder, err)
        return
    try:
        for entry in _entries(folder, errors):
            folder_or_file = _is_dir(entry, errors)
            if folder_or_file:  # a session's folder (most sessions have none): only its subagents count
                subagents = f"{entry.name}/{SUBAGENTS}"
                for sub in _entries(f"{folder}/{subagents}", errors, missing_ok=True):
                    if sub.name.endswith(".jsonl") and _is_dir(sub, errors) is False:
                        _stat(fd, folder, f"{subagents}/{sub.name}", seen, found, errors)
            elif folder_or_file is False and entry.name.endswith(".jsonl"):
                _stat(fd, folder, entry.name, seen, found, errors)
    finally:
        os.close(fd)


def _stat(fd: int, folder: str, name: str, seen: Seen, found: list[Stat], errors: list[str] | None) -> None:
    try:
        st = os.stat(name, dir_fd=fd)  # a dangling link raises, and is reported
    except OSError as err:
        _report(errors, f"{folder}/{name}", err)
        return
    if (st.st_dev, st.st_ino) not in seen:
        seen.add((st.st_dev, st.st_ino))
        found.append((f"{folder}/{name}", st))


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


def _entries(folder: str, errors: list[str] | None, missing_ok: bool = False) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as err:
        if not (missing_ok and isinstance(err, FileNotFoundError | NotADirectoryError)):
            _report(errors, folder, err)
        return []


def _is_dir(entry: os.DirEntry[str], errors: list[str] | None) -> bool | None:
    """Follows symlinks; None (reported) for one that loops."""
    try:
        return entry.is_dir()
    except OSError as err:
        _report(errors, entry.path, err)
        return None


def _report(errors: list[str] | None, path: str, err: OSError) -> None:
    if errors is not None:
        errors.append(f"{path}: {err.strerror or err}")
