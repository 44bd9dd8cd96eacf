"""Waiting in tests: a condition polled until a deadline, never a fixed pause.

No pytest here: the namespace driver (netns.py) and the benches import it outside pytest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

WAIT = 60.0  # seconds before a test gives up on a condition or an event (a limit, never a pause)
POLL = 0.05  # seconds between two looks at a condition (a pace, never a wait for something to happen)

T = TypeVar("T")


def eventually(condition: Callable[[], T | None], timeout: float = WAIT, what: str | Callable[[], str] = "") -> T:
    """The first truthy value `condition` returns, looked at every POLL seconds; fails after `timeout`.

    `what` (or what it returns, read at the failure) tells the failure message what was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            told = what() if callable(what) else what or repr(condition)
            raise AssertionError(f"not true within {timeout:g} s: {told}; last value {value!r}")
        time.sleep(POLL)
