"""Worker processes the ingest fully controls, for parsing a large backlog in parallel.

Every worker holds the items from its start; a thread per worker in this process hands out their
indexes through one pipe and collects the results through another, so workers keep parsing while the
ledger commits. A worker always has its next index waiting (it never idles for this process's threads,
which take turns with the ledger's), and its results pipe holds several results (it never waits for a
reader to send one). However the work ends (the last item, a stop, an error, a worker killed), the
workers are killed and reaped: none is left writing into a pipe nobody reads, and nothing here waits
on a process that may not answer.
"""

from __future__ import annotations

import fcntl
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from multiprocessing import get_context
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# The process's parent decides when to stop: Ctrl-C and service managers (systemd's default
# KillMode=control-group) signal every process of the group, workers included.
STOPPING = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}
STOP_CHECK = 0.05  # seconds: how often a wait for the next result looks at `stop`
NAME = b"ingest-worker"  # what `ps` and `top` show for a worker (at most 15 bytes)
PR_SET_NAME, PR_SET_PDEATHSIG = 15, 1  # from <linux/prctl.h>
RESULTS_PIPE = 1 << 20  # bytes: a worker's results wait here (one is ~0.2 MB), not in its send
IN_FLIGHT = 2  # indexes handed to a worker at once: the one it parses and the next


class WorkerDied(RuntimeError):
    """A worker ended before giving its result: killed (the OOM killer, `kill -9`) or crashed."""


class Workers(Generic[T, R]):
    """`count` processes applying `fn` to `items`, started with `start_method`; `setup(*args)` runs first
    in each. Use as a context manager: leaving it kills them."""

    def __init__(
        self,
        start_method: str,
        count: int,
        setup: Callable[..., None],
        args: tuple[Any, ...],
        fn: Callable[[T], R],
        items: Sequence[T],
    ) -> None:
        context: Any = get_context(start_method)  # typeshed's BaseContext has no Process
        self._lock = threading.Condition()
        self._items = items
        self._results: dict[int, R] = {}
        self._next = 0  # the next item to hand out
        self._ahead = 0  # handed out at most this many items past the next one to yield
        self._taken = 0  # items yielded so far
        self._failure: BaseException | None = None
        self._closed = False
        self._processes: list[BaseProcess] = []
        self._pipes: list[tuple[Connection, Connection]] = []  # per worker: indexes out, results in
        self._threads: list[threading.Thread] = []
        if start_method != "fork":
            # multiprocessing's resource tracker unblocks these signals as it starts (in the first spawn):
            # started before, it leaves the mask below alone.
            from multiprocessing import resource_tracker

            resource_tracker.ensure_running()
        # Blocked here, a stop signal cannot kill a worker before it ignores it (the mask is inherited
        # through fork and exec); this process still gets it, through another thread or once unblocked.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOPPING)
        try:
            for _ in range(count):
                indexes, to_worker = context.Pipe(duplex=False)
                results, from_worker = context.Pipe(duplex=False)
                _widen(from_worker)
                self._pipes.append((to_worker, results))
                work = (indexes, from_worker, os.getpid(), setup, args, fn, items)
                process = context.Process(target=_work, args=work, daemon=True)
                self._processes.append(process)
                process.start()
                indexes.close()  # only the worker holds its ends: when it dies, our reads end
                from_worker.close()
        except BaseException:
            self.close()
            raise
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def ordered(self, stop: Callable[[], bool], ahead: int) -> Iterator[tuple[T, R]]:
        """Each item with its result, in order, at most `ahead` items parsed before they are taken.
        Ends early when `stop()` is true, checked while waiting too. Once."""
        self._ahead = ahead
        # Threads start after every fork: a forked child would inherit them half-way.
        for pipes in self._pipes:
            thread = threading.Thread(target=self._feed, args=pipes, name="ingest-feed", daemon=True)
            self._threads.append(thread)
            thread.start()
        for index, item in enumerate(self._items):
            with self._lock:
                while index not in self._results:
                    if stop():
                        return
                    if self._failure is not None:
                        raise self._failure
                    self._lock.wait(STOP_CHECK)  # a signal handler cannot wake a condition: look again soon
                result = self._results.pop(index)
                self._taken = index + 1
                self._lock.notify_all()
            yield item, result
            if stop():
                return

    def _feed(self, out: Connection, results: Connection) -> None:
        """Hands item indexes to one worker and stores its results, until none are left or it died.
        An index is a few bytes: sending it never waits for the worker, so this thread cannot block
        while the worker blocks on its results."""
        handed: deque[int] = deque()  # indexes the worker has, in the order it answers them
        while True:
            with self._lock:
                while not self._closed and not handed and self._left() and not self._room():
                    self._lock.wait()
                if self._closed:
                    return
                new: list[int] = []
                while len(handed) + len(new) < IN_FLIGHT and self._left() and self._room():
                    new.append(self._next)
                    self._next += 1
            if not handed and not new:
                return
            try:
                for index in new:
                    out.send(index)
                    handed.append(index)
                ok, value = results.recv()
            except (EOFError, OSError):
                ok, value = False, WorkerDied("a parse worker ended before giving its result")
            with self._lock:
                if ok:
                    self._results[handed.popleft()] = value
                elif self._failure is None:
                    self._failure = value
                self._lock.notify_all()
                if not ok:
                    return

    def _left(self) -> bool:
        return self._next < len(self._items)

    def _room(self) -> bool:
        return self._next < self._taken + self._ahead

    def close(self) -> None:
        """Kills the workers and waits for them and the threads: killed, they cannot keep anyone waiting."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        for process in self._processes:
            if process.pid is not None:
                process.kill()
        for process in self._processes:
            if process.pid is not None:
                process.join()
        for thread in self._threads:
            thread.join()  # its worker is dead: its read or write has ended
        for out, results in self._pipes:
            out.close()
            results.close()

    def __enter__(self) -> Workers[T, R]:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def _work(
    indexes: Connection,
    results: Connection,
    parent: int,
    setup: Callable[..., None],
    args: tuple[Any, ...],
    fn: Callable[[T], R],
    items: Sequence[T],
) -> None:
    for sig in STOPPING:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOPPING)  # what came meanwhile is ignored now
    _die_with(parent)
    setup(*args)
    while True:
        try:
            index = indexes.recv()
        except EOFError:  # the parent closed its end, or ended
            return
        try:
            reply: tuple[bool, Any] = (True, fn(items[index]))
        except Exception as err:  # the parent raises it, as if the call had been its own
            reply = (False, err)
        results.send(reply)


def _widen(pipe: Connection) -> None:
    """Lets the pipe hold RESULTS_PIPE bytes (Linux; the default 64 KiB holds a third of a result)."""
    # Above the system's pipe-max-size, or not Linux: the worker waits for the reader sooner.
    with suppress(OSError, AttributeError):
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, RESULTS_PIPE)


def _die_with(parent: int) -> None:
    """A worker must not outlive the process it works for (`kill -9` of the daemon, or a crash): the
    kernel kills it when its parent ends."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        libc.prctl(PR_SET_NAME, NAME)
    except (OSError, AttributeError):  # not Linux: look for a new parent every second instead
        threading.Thread(target=_orphaned, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # it ended before the kernel was told
        os._exit(1)


def _orphaned(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)
