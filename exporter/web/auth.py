"""Basic auth for the web server: the `Authorization` header checked against the web config's bcrypt hashes.

A flood of guesses costs at most one CPU per user name and holds up no one else's login; an unknown user
waits as long as a wrong password without the CPU; good credentials seen before skip bcrypt.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import bcrypt

_CACHE_SIZE = 1024  # successful (user, password) checks remembered per BasicAuth


@functools.cache
def _decoy_hash(cost: int) -> bytes:
    """A hash to check unknown users against, so they cost as much as a wrong password."""
    return bcrypt.hashpw(b"decoy password", bcrypt.gensalt(rounds=cost))


_DECOY_LOCK = threading.Lock()  # a flood of unknown users at start-up measures once, not once per request


@functools.cache
def _measured(cost: int) -> float:
    started = time.perf_counter()
    _checkpw(b"not the decoy password", _decoy_hash(cost))
    return time.perf_counter() - started


def decoy_seconds(cost: int) -> float:
    """How long one wrong-password check at this cost takes on this machine, measured once."""
    with _DECOY_LOCK:
        return _measured(cost)


def _decoy_wait(cost: int) -> None:
    """An unknown user is answered after as long as a wrong password takes, without the CPU it costs:
    a flood of made-up names then burns nothing and holds up no one."""
    time.sleep(decoy_seconds(cost))


def _checkpw(password: bytes, hashed: bytes) -> bool:
    try:
        return bcrypt.checkpw(password[:72], hashed)  # bcrypt reads 72 bytes at most, as Go's bcrypt does
    except ValueError:
        return False


def cost_of(users: Mapping[str, bytes]) -> int:
    """The highest bcrypt cost of the hashes: what a decoy check must take as long as."""
    return max(int(hashed[4:6]) for hashed in users.values())


def _basic_credentials(authorization: str | None) -> bytes | None:
    """`Basic dXNlcjpwYXNz` -> `b"user:pass"`; None when it is not a well-formed Basic header."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        credentials = base64.b64decode(token.strip(), validate=True)
    except ValueError:
        return None
    return credentials if b":" in credentials else None


@dataclass(frozen=True)
class BasicAuth:
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash; empty: no authentication
    check: Callable[[bytes, bytes], bool] = field(default=_checkpw, repr=False, compare=False)  # password, hash
    decoy: Callable[[int], None] = field(default=_decoy_wait, repr=False, compare=False)  # the cost of the hashes
    _good: OrderedDict[bytes, None] = field(default_factory=OrderedDict, init=False, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    # user name -> its lock and how many requests hold or wait for it; gone when none does
    _names: dict[bytes, tuple[threading.Lock, list[int]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def authorized(self, authorization: str | None) -> bool:
        """Whether the raw `Authorization` header lets the request in (always, when no users are configured)."""
        if not self.users:
            return True
        credentials = _basic_credentials(authorization)
        if credentials is None:
            return False
        key = hashlib.sha256(credentials).digest()
        with self._lock:
            if key in self._good:
                self._good.move_to_end(key)
                return True
        user, _, password = credentials.partition(b":")
        try:
            hashed = self.users.get(user.decode())
        except UnicodeDecodeError:
            hashed = None
        with self._one_at_a_time(user):
            if hashed is None:  # as slow as a wrong password, so failures do not tell which users exist
                self.decoy(cost_of(self.users))
                return False
            if not self.check(password, hashed):
                return False
        with self._lock:
            self._good[key] = None
            if len(self._good) > _CACHE_SIZE:
                self._good.popitem(last=False)
        return True

    @contextmanager
    def _one_at_a_time(self, user: bytes) -> Iterator[None]:
        """Checks for one user name (known or not, alike) run one at a time, so a flood of guesses
        takes at most one CPU and waits behind itself; other users' logins never queue behind it
        (exporter-toolkit's single bcrypt mutex made every login wait for every guess)."""
        with self._lock:
            lock, holders = self._names.setdefault(user, (threading.Lock(), [0]))
            holders[0] += 1
        try:
            with lock:
                yield
        finally:
            with self._lock:
                holders[0] -= 1
                if not holders[0]:
                    del self._names[user]
