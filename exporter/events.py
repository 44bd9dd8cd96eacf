"""The usage event: one billable API request, as every source reports it; and the request, the merge of
every copy of one, as the ledger keeps it.

Immutable plain data; units are in the names (tokens are counts, times are aware UTC datetimes,
money is Decimal USD). Named tuples, not dataclasses: ingest builds one per transcript line, and a
tuple is several times cheaper to make. The bounds every source applies to what it hands on are here too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from enum import StrEnum
from functools import lru_cache
from typing import NamedTuple

# --- bounds: what one value from a source may cost --------------------------------------------
# Every string a source hands on reaches the ledger, and labels reach every scrape and the page: one
# 10 MB model name once made /metrics 125 MB. Real values are short: message and request ids ~30
# characters, session ids (UUIDs) 36, model ids under 40, tool names under 70 (MCP's
# mcp__<server>__<tool>), project folders rarely past 60. So one limit, in characters:
MAX_CHARS = 128
# Per field, a value longer than MAX_CHARS is either
# - malformed (the record is counted as such and dropped): identifiers and the model — message id,
#   request id, session id, prompt uuid, model — since no real one is that long, and a shortened id
#   could never again match its other copies (the transcript line and the OTLP event of one request);
# - or shortened (the record is kept): descriptive labels — project, tool, speed, query_source, user
#   identity, OTLP metric names and attributes — to its first MAX_CHARS characters, "~", and 24 hex
#   digits of the BLAKE2b hash of the whole value: SHORTENED_CHARS in all. A kept value has at most
#   MAX_CHARS characters and a shortened one exactly SHORTENED_CHARS, so a shortened value never
#   equals a kept one, and two long values that differ differ in the hash (96 bits): nothing merges.
#   A value already in that form is kept as it is, so shortening twice changes nothing (a merge of two
#   copies, a migration run again); only a sender who crafts the form merges its own series into another.
#   The ledger's migration 5 shortens what older releases stored the same way, ids and models included.
_HASH_CHARS = 24
SHORTENED_CHARS = MAX_CHARS + 1 + _HASH_CHARS
_SHORTENED = re.compile(rf"~[0-9a-f]{{{_HASH_CHARS}}}")
MAX_TOOLS = 64  # distinct tool names kept per request (a response uses a handful): the rest are dropped
# Tokens per field and request: the largest context window is a million tokens, so more than this is
# corruption or a hostile sender, and the record is malformed. One limit for every source, so the
# transcript line and the OTLP event of one request are judged alike.
MAX_TOKENS = 100_000_000
# Claude Code stamps records with the machine's clock; a few minutes of skew is normal, a day is not.
# Later than this after the wall clock at parse time, a timestamp is malformed: kept, it would pin the
# last-request gauge and the time reports in the future for good.
FUTURE_TOLERANCE = timedelta(days=1)


def shorten(value: str) -> str:
    """`value` if it fits in MAX_CHARS, else its collision-safe shortened form (see MAX_CHARS)."""
    if len(value) <= MAX_CHARS or (len(value) == SHORTENED_CHARS and _SHORTENED.fullmatch(value, MAX_CHARS)):
        return value
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=_HASH_CHARS // 2).hexdigest()
    return f"{value[:MAX_CHARS]}~{digest}"


def add_tools(have: frozenset[str], more: Iterable[str]) -> frozenset[str]:
    """`have` with the names of `more` shortened and added, up to MAX_TOOLS in all. What `have` holds is
    always kept, so a request's tools only grow and a later copy never counts a tool call again."""
    extra = {shorten(name) for name in more} - have
    if len(have) + len(extra) <= MAX_TOOLS:
        return have | extra if extra else have
    return have | frozenset(sorted(extra)[: max(0, MAX_TOOLS - len(have))])


def latest(now: datetime | None = None) -> datetime:
    """The latest timestamp a parser accepts, given the wall clock `now` (read when not given)."""
    return (now if now is not None else datetime.now(UTC)) + FUTURE_TOLERANCE


TOKEN_TYPES = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")


# String enums: a member equals its string, so what the ledger stores and the labels show stay plain strings.
class Outcome(StrEnum):
    """What became of one line or record a source read."""

    USAGE = "usage"  # a request not seen before
    DUPLICATE = "duplicate"  # another copy of a request the ledger has
    SKIPPED = "skipped"  # not a usage record (user lines, tool results, other events)
    MALFORMED = "malformed"  # meant to be one, but unusable


class Agent(StrEnum):
    """Who made a request: the main conversation, a subagent (Task tool), or Claude Code itself
    (titles, prompt suggestions, compaction; seen only in its OTLP events)."""

    MAIN = "main"
    SUBAGENT = "subagent"
    AUXILIARY = "auxiliary"


class Source(StrEnum):
    """Where a usage event came from."""

    TRANSCRIPTS = "transcripts"
    OTLP = "otlp"


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
    agent: str  # an Agent
    tokens: Tokens
    web_search_requests: int = 0
    tools: frozenset[str] = frozenset()
    speed: str = "standard"
    source: str = Source.TRANSCRIPTS
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


def model_family(model: str) -> str:
    """`opus`, `sonnet`, `haiku` or `other`: a bounded label for any model id."""
    # Only short ids are cached: 4096 cached keys of 10 MB each would hold 40 GB.
    return _model_family(model) if len(model) <= SHORTENED_CHARS else _family_of(model)


def _family_of(model: str) -> str:
    found = _FAMILY.search(model)
    return found.group(1).lower() if found else "other"


_model_family = lru_cache(maxsize=4096)(_family_of)  # bounded: model ids also come off the network (OTLP)

_PATH_CHARS = 4096  # PATH_MAX: longer paths are not cached


def project_name(cwd: str | None) -> str:
    """The last path component of a working directory (POSIX or Windows), or `unknown`; shortened
    past MAX_CHARS (see there)."""
    if not cwd:
        return "unknown"
    return _project_name(cwd) if len(cwd) <= _PATH_CHARS else _last_component(cwd)


def _last_component(cwd: str) -> str:
    trimmed = cwd.rstrip("/\\")
    name = trimmed[max(trimmed.rfind("/"), trimmed.rfind("\\")) + 1 :]
    return shorten(name) if name else "unknown"


_project_name = lru_cache(maxsize=4096)(_last_component)  # bounded: paths also come off the network (OTLP)


class Prompt(NamedTuple):
    """A prompt the user typed (not a tool result): the start of the requests one ask fans out into."""

    key: str  # the line's uuid: a fork copies it unchanged, so copies are one prompt
    session_id: str
    ts: int  # epoch milliseconds, UTC
    project: str


def tool_label(name: str) -> str:
    """A bounded `tool` label: `mcp__<server>__<tool>` collapses to `mcp__<server>`, others unchanged."""
    if not name.startswith("mcp__"):
        return name
    # Server names may hold single underscores (mcp__claude_ai_Gmail__…); "__" separates the tool.
    return "mcp__" + name[len("mcp__") :].split("__", 1)[0]


NANOS = Decimal(1_000_000_000)


class Request(NamedTuple):
    """A ledger row: the merge of every copy of one request."""

    key: str
    request_id: str | None
    ts: int
    session_id: str
    project: str
    model: str
    agent: str
    tokens: Tokens
    web_search: int
    tools: frozenset[str]
    speed: str
    source: str
    compaction: bool
    reported_cost: int | None
    user: str = ""  # team mode's user label, as `labels.user` shaped it; "" when unknown or off
    copies: int = 1
    # Epoch ms of the first time the file this copy was read from records: a fork's file starts when the
    # fork was made, so of two copies with the same time the one from the earlier-started file owns the
    # request. None: not read from a transcript, or no time near the file's start.
    origin: int | None = None
    interaction: str = ""
    category: str = ""
    cost: int | None = None
    uncached_cost: int | None = None  # nano-USD with every cached token priced as uncached input

    @property
    def model_family(self) -> str:
        return model_family(self.model)

    @classmethod
    def from_event(cls, e: UsageEvent, origin: int | None = None) -> Request:
        return cls(  # positional, in field order: this runs once per parsed event
            e.key,
            e.request_id,
            to_ms(e.timestamp),
            e.session_id,
            e.project,
            e.model,
            e.agent,
            e.tokens,
            e.web_search_requests,
            e.tools,
            e.speed,
            e.source,
            e.compaction,
            to_nanos(e.reported_cost),
            e.user,
            e.lines,
            origin,
        )

    def merge(self, other: Request) -> Request:
        """Both copies of one request: token maxima, tool union, identity of the earliest copy (see `origin`).

        Across sources the transcript copy gives the identity and the cache TTL split, and every token
        field is the larger of the two (see `_across_sources`); the row keeps the key it is stored under."""
        if (self.source == Source.OTLP) != (other.source == Source.OTLP):
            transcript, event = (other, self) if self.source == Source.OTLP else (self, other)
            return transcript._replace(
                key=self.key,
                tokens=_across_sources(transcript.tokens, event.tokens),
                web_search=max(self.web_search, other.web_search),
                tools=add_tools(transcript.tools, event.tools),
                copies=self.copies + other.copies,
                user=self.user or other.user,
                interaction="",
                category="",
                cost=None,
                uncached_cost=None,
            )
        # The earliest copy gives the identity; of copies at one time (a fork copies its parent's lines
        # unchanged but for the session id), the one whose file started first: never the order read in.
        first, later = (other, self) if (other.ts, _origin(other)) < (self.ts, _origin(self)) else (self, other)
        return Request(  # positional, in field order (cheaper than `_replace`: a parse worker merges its copies)
            first.key,
            first.request_id or later.request_id,
            first.ts,
            first.session_id,
            first.project,
            first.model,
            first.agent,
            self.tokens.merge(other.tokens),
            max(self.web_search, other.web_search),
            add_tools(self.tools, other.tools),
            first.speed,
            first.source,
            self.compaction or other.compaction,
            _max_opt(self.reported_cost, other.reported_cost),
            first.user,
            self.copies + other.copies,
            first.origin,
            # interaction, category, cost and uncached cost derive from the merge: `enrich` sets them again
        )


def _origin(r: Request) -> int:
    return _UNKNOWN if r.origin is None else r.origin


_UNKNOWN = 1 << 62  # an unknown origin (OTLP, an old ledger's row) yields to any known one


def _across_sources(transcript: Tokens, event: Tokens) -> Tokens:
    """The larger figure per field: Claude Code 2.1.38/39 wrote at most 5 output tokens on subagent
    transcript lines while its OTLP event had the real count. The event's cache writes are the 5m and
    1h writes together (it has no split): the transcript's split stands, and only what the event has
    beyond its total is added, as 5-minute writes (the cheaper guess), so no write counts twice."""
    extra = max(0, event.cache_write - transcript.cache_write)
    return Tokens(
        max(transcript.input, event.input),
        max(transcript.output, event.output),
        max(transcript.cache_read, event.cache_read),
        transcript.cache_write_5m + extra,
        transcript.cache_write_1h,
    )


Enrich = Callable[[Request], Request]  # sets costs, interaction and category; "" interaction = not yet


def to_nanos(usd: Decimal | None) -> int | None:
    return None if usd is None else int((usd * NANOS).to_integral_value(ROUND_HALF_EVEN))


def _max_opt(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def merge_all(requests: Iterable[Request], into: dict[str, Request] | None = None) -> dict[str, Request]:
    """Requests merged by key (into `into` when given)."""
    merged = {} if into is None else into
    for request in requests:
        known = merged.get(request.key)
        merged[request.key] = request if known is None else known.merge(request)
    return merged
