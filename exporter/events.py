"""The usage event: one billable API request, as every source reports it and the ledger keeps it.

Immutable plain data; units are in the names (tokens are counts, times are aware UTC datetimes,
money is Decimal USD). Named tuples, not dataclasses: ingest builds one per transcript line, and a
tuple is several times cheaper to make.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

TOKEN_TYPES = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")
AGENTS = ("main", "subagent", "auxiliary")


class Tokens(NamedTuple):
    """Token counts of one request; `input` is the uncached input only, as Anthropic reports it."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write

    @property
    def context(self) -> int:
        """Everything the model read for this request: uncached input, cache reads and writes."""
        return self.input + self.cache_read + self.cache_write

    @property
    def uncached(self) -> Tokens:
        """The same request with every cached token (read or written) sent as uncached input."""
        return Tokens(self.context, self.output)

    def merge(self, other: Tokens) -> Tokens:
        # Copies of one response may carry provisional (smaller) usage: keep the largest per field.
        if self == other:
            return self
        return Tokens(*map(max, self, other))


class UsageEvent(NamedTuple):
    """One billable API request as a source saw it (possibly one of several copies)."""

    key: str  # dedupe key: message.id, else request id, else a hash of the line
    request_id: str | None
    timestamp: datetime  # aware, UTC
    session_id: str
    project: str  # last path component of the working directory; never a path
    model: str
    agent: str  # one of AGENTS
    tokens: Tokens
    web_search_requests: int = 0
    tools: frozenset[str] = frozenset()
    speed: str = "standard"
    source: str = "transcripts"
    reported_cost: Decimal | None = None
    compaction: bool = False
    user: str = ""  # team mode: who sent it, as `labels.user` shapes it (never set from transcripts)
    lines: int = 1  # transcript lines this event stands for (a response is written one block a line)

    @property
    def model_family(self) -> str:
        return model_family(self.model)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS  # exact: float seconds × 1000 can land a millisecond low


_FAMILY = re.compile(r"(opus|sonnet|haiku)", re.IGNORECASE)


@lru_cache(maxsize=4096)  # bounded: model ids and paths also come off the network (OTLP)
def model_family(model: str) -> str:
    """`opus`, `sonnet`, `haiku` or `other`: a bounded label for any model id."""
    found = _FAMILY.search(model)
    return found.group(1).lower() if found else "other"


@lru_cache(maxsize=4096)  # bounded: model ids and paths also come off the network (OTLP)
def project_name(cwd: str | None) -> str:
    """The last path component of a working directory (POSIX or Windows), or `unknown`."""
    if not cwd:
        return "unknown"
    name = re.split(r"[\\/]", cwd.rstrip("/\\"))[-1]
    return name or "unknown"


class Prompt(NamedTuple):
    """A prompt the user typed (not a tool result): the start of the requests one ask fans out into."""

    key: str  # the line's uuid: a fork copies it unchanged, so copies are one prompt
    session_id: str
    ts: int  # epoch milliseconds, UTC
    project: str
