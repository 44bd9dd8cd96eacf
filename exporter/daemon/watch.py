"""Watching the transcript roots: inotify through watchfiles, and polling's cheap check between full passes.

Both only wake the daemon's loop; the loop does every read of the files.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from exporter.sources.files import Found
from exporter.sources.layout import SUBAGENTS

log = logging.getLogger("claude_usage_exporter")

RECENT_NS = 3600 * 10**9  # a session quiet for longer is seen at the next full pass


@dataclass(frozen=True)
class Hot:
    """Polling's cheap check between full passes: the files written in the last hour, and the
    folders where a new session, subagent or project file would appear (a new entry changes a
    folder's mtime). A few dozen stats instead of thousands; an old session resumed is seen at the
    next full pass, and is hot from then on."""

    stats: tuple[tuple[str, int, int], ...]  # path, size, mtime_ns

    @classmethod
    def of(cls, found: list[Found], roots: tuple[Path, ...], now_ns: int) -> Hot:
        folders = {os.path.dirname(f.path) for f in found}
        places = {str(root / "projects") for root in roots} | {d for d in folders if not d.endswith("/subagents")}
        for f in found:
            if f.mtime > now_ns - RECENT_NS:
                places |= {f.path, f.path.removesuffix(".jsonl") + "/subagents"}
        return cls(tuple((path, *_stat(path)) for path in sorted(places)))

    def changed(self) -> bool:
        return any(_stat(path) != (size, mtime) for path, size, mtime in self.stats)


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return (0 if stat.S_ISDIR(st.st_mode) else st.st_size, st.st_mtime_ns)


def watch_targets(roots: tuple[Path, ...]) -> list[Path]:
    """What to watch, each folder on its own (not recursively): the folders of Claude Code's layout
    where a transcript, or a folder holding them, can appear: each root's `projects` folder (else
    the root itself, to see `projects` appear), its project folders, their session folders, and
    those sessions' `subagents` folders. A recursive watch would follow a symlink under `projects`
    (to `/`, say) and watch the whole tree behind it."""
    targets = []
    for root in roots:
        projects = root / "projects"
        if not projects.is_dir():
            if root.is_dir():
                targets.append(root)
            continue
        targets.append(projects)
        for project in _folders(projects):
            targets.append(project)
            for session in _folders(project):
                targets.append(session)
                if (session / SUBAGENTS).is_dir():
                    targets.append(session / SUBAGENTS)
    return targets


def _folders(folder: Path) -> list[Path]:
    """The folders in `folder`, symlinks followed; nothing when it cannot be listed (the pass reports that)."""
    try:
        with os.scandir(folder) as it:
            return sorted(folder / entry.name for entry in it if _is_dir(entry))
    except OSError:
        return []


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a symlink loop
        return False


class Watched(Protocol):
    """What the watcher wakes: the daemon's loop."""

    @property
    def roots(self) -> tuple[Path, ...]: ...

    def changed(self) -> None:
        """A transcript changed, or a folder appeared."""

    def watching(self, up: bool) -> bool:
        """Whether inotify works; without it the loop polls. True when this changes which it does."""


def watch(watched: Watched, stop: threading.Event, poll_interval: float, rescan: float) -> None:
    """Wakes the loop on every change of a transcript, until `stop` is set. Runs in a thread.

    Where inotify cannot watch (a folder we may not read stops a recursive watch; the kernel's limit
    of watches is reached), the daemon polls until a later attempt, one rescan period on, succeeds.
    """
    import watchfiles

    def transcripts(change: watchfiles.Change, path: str) -> bool:
        # A new folder may arrive holding transcripts already (copied, or written before the watch
        # on it began): no event would name them.
        return path.endswith(".jsonl") or (change == watchfiles.Change.added and os.path.isdir(path))

    previous: list[Path] | None = None
    while not stop.is_set():
        targets = watch_targets(watched.roots)
        if previous is not None and targets != previous:
            watched.changed()  # a folder appeared: what it holds is new
        previous = targets
        if not targets:  # nothing there yet (a fresh machine): look again shortly
            stop.wait(poll_interval)
            continue
        try:  # every 5 s without events, it looks whether a folder to watch appeared unseen
            for changes in watchfiles.watch(
                *targets,
                watch_filter=transcripts,
                stop_event=stop,
                rust_timeout=5000,
                yield_on_timeout=True,
                step=20,
                ignore_permission_denied=False,
                raise_interrupt=False,
                recursive=False,
            ):
                watched.watching(True)
                if changes:
                    watched.changed()
                # a new folder is watched from now on: the watch starts again with it
                if any(change == watchfiles.Change.added and not path.endswith(".jsonl") for change, path in changes):
                    break
                if not changes and watch_targets(watched.roots) != targets:
                    break
        except FileNotFoundError:  # a folder went between listing and watching: list again
            stop.wait(0.1)
        except OSError as err:  # EACCES; ENOSPC when fs.inotify.max_user_watches is used up
            if watched.watching(False):
                log.warning("cannot watch %s (%s): polling until it can", err.filename or targets, err.strerror or err)
            stop.wait(rescan)
