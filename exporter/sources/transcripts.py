"""Transcript source: parses Claude Code session lines into usage events.

Parsing is pure (bytes in, events and outcome counts out); finding and tailing files lives in
`exporter.sources.files`. Claude Code's format is not ours, so parsing is lenient: anything that
cannot be used ends as a counted outcome, never as an exception. Strings and timestamps are bounded
as `exporter.events` says: an id or model longer than MAX_CHARS, or a time more than FUTURE_TOLERANCE
after the wall clock (`now`, injected), makes the line malformed; a long project, tool or speed is shortened.

Assistant lines are decoded by msgspec into only the fields an event needs (see `_Record`); a line it cannot
take goes to orjson and the dict path, with the same result, and is counted as SLOW. Usage stays bytes
until a line gives an event: then counts that are plain integers in bounds need no check (`_Usage`), and
any other usage is read as a dict, as the full parser reads it (counted as SLOW too when it holds a field
`_Usage` does not name: a format change). The one difference
left: a number past a double's range (1e400) in a field neither path reads makes orjson reject the whole
line, which msgspec reads.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Annotated, Any

import msgspec
import orjson

from exporter.events import (
    MAX_CHARS,
    MAX_TOKENS,
    Agent,
    Outcome,
    Prompt,
    Source,
    Tokens,
    UsageEvent,
    add_tools,
    latest,
    project_name,
    shorten,
    to_ms,
)

# Most bytes are tool results and file snapshots; only lines holding both marks can carry usage, or
# lines holding a message with usage and no "type" at all (other tools write those; ccusage counts them).
USAGE_MARK = b'"usage"'
ASSISTANT_MARK = b'"assistant"'
TYPE_MARK = b'"type"'
MESSAGE_MARK = b'"message"'
USER_HEAD = b'"type":"user"'
# A typed prompt's content is a string or starts with a text or image block; a tool result's with
# {"tool_use_id" or {"type":"tool_result". Claude Code writes "message" near the start of the line,
# before the long fields, so only the head is searched: user lines hold most of the bytes.
USER_CONTENT = b'"role":"user","content":'
TYPED = (b'"', b'[{"type":"text"', b'[{"type":"image"')
GENERATED = ("<local-command", "[Request interrupted", "Caveat: The messages below")
LINE_HEAD_BYTES = 300  # a line's first bytes, where its type and role are searched for


def candidates(data: bytes, prompts: list[bytes] | None = None) -> tuple[list[bytes], int]:
    """The lines that may carry usage, and how many lines there are in all; with `prompts`, the user
    lines that may be typed prompts are added to it.

    Walks newline to newline without copying: most bytes are in user lines (tool results: file
    contents, command output), and Claude Code writes their top-level "type" near the start, so
    their head rules them out unread. An assistant line shows its "role" there, before any content
    that could look like a user record.
    """
    found: list[bytes] = []
    lines = start = 0
    size = len(data)
    find, rfind = data.find, data.rfind
    # Locals, not globals, and no call where an operator does: this loop runs once per line.
    user_head, assistant, usage = USER_HEAD, ASSISTANT_MARK, USAGE_MARK
    while start < size:
        end = find(b"\n", start)
        if end == -1:
            end = size
        lines += 1
        head = start + LINE_HEAD_BYTES
        if head > end:
            head = end
        user = find(user_head, start, head) != -1 and find(assistant, start, head) == -1
        if (
            not user
            and rfind(usage, start, end) != -1  # from the end: usage is the message's last field
            and (
                find(assistant, start, end) != -1
                or (find(TYPE_MARK, start, end) == -1 and find(MESSAGE_MARK, start, end) != -1)
            )
        ):
            found.append(data[start:end])
        elif user and prompts is not None:
            at = find(USER_CONTENT, start, min(start + 2 * LINE_HEAD_BYTES, end))
            if at != -1 and data.startswith(TYPED, at + len(USER_CONTENT)):
                prompts.append(data[start:end])
        start = end + 1
    return found, lines


class Malformed(ValueError):
    """A line that looks like usage but cannot be used."""


def parse_chunk(
    buf: bytes | memoryview,
    counts: Counter[str],
    prompts: list[Prompt] | None = None,
    now: datetime | None = None,
    slow: Counter[str] | None = None,
) -> list[UsageEvent]:
    """Events of a run of complete lines; lines that give no event are counted in `counts`.

    Lines that do give one end as `usage` or `duplicate`, which only the ledger can tell apart.
    With `prompts`, the typed prompts found are added to it (their lines still count as skipped).
    `now` is the wall clock future timestamps are judged by (read once when not given).
    With `slow`, the lines the fast decoder left to the full parser are counted in it under SLOW.
    """
    until = latest(now)
    typed: list[bytes] | None = [] if prompts is not None else None
    maybe, lines = candidates(bytes(buf), typed)
    if prompts is not None and typed:
        prompts.extend(p for p in (parse_prompt(line, until) for line in typed) if p is not None)
    counts[Outcome.SKIPPED] += lines - len(maybe)
    events: list[UsageEvent] = []
    last: tuple[object, object, object] | None = None  # the id, usage and model of the last event's message
    for line in maybe:
        fast = _decode(line, slow)
        records = [(fast, line)] if fast is not None else _full(line, counts)
        for record, raw in records:  # grows by the full parser's records when the fast one cannot do (`_reread`)
            if type(record) is _Record:
                read = record.message
                mark = None if read is None else (read.id, read.usage or None, read.model)
                message: object = read
            else:
                message = _message_of(record) if type(record) is dict else None
                mark = (
                    (message.get("id"), message.get("usage"), message.get("model")) if type(message) is dict else None
                )
            try:  # `mark == last`, with usage compared as the dicts it decodes to (the fast decoder keeps bytes)
                same = (
                    mark is not None
                    and last is not None
                    and (
                        mark == last
                        or (mark[0] == last[0] and mark[2] == last[2] and _plain(mark[1]) == _plain(last[1]))
                    )
                )
            except RecursionError:  # nested too deep to compare: the line is read in full
                same = False
            except msgspec.ValidationError:  # see `_reread`
                records += _reread(line, counts, slow)
                continue
            if same:
                # The next content block of the response just read, with the same usage: only its
                # tools are new. Skipping the rest of the parse halves the cost of a cold ingest.
                tools = message.tools() if type(message) is _Message else _tools(message)  # type: ignore[arg-type]
                event = events[-1]
                have = event.tools
                if tools and not tools <= have:
                    have = add_tools(have, tools)
                # In field order: the fields before `tools`, the tools, those after, and one more line.
                events[-1] = _new(UsageEvent, (*event[:_TOOLS], have, *event[_TOOLS + 1 : -1], event.lines + 1))
                continue
            outcome = record.outcome(raw, until, slow) if type(record) is _Record else from_record(record, raw, until)
            if outcome is None:
                records += _reread(line, counts, slow)
                continue
            if isinstance(outcome, str):
                counts[outcome] += 1
                continue
            events.append(outcome)
            last = mark if mark is not None and mark[0] is not None else None  # only a message gives an event
    return events


def _full(line: bytes, counts: Counter[str]) -> list[tuple[object, bytes]]:
    """The records of a line the fast decoder left to orjson, each with its bytes; each part that is no
    JSON at all counts as malformed."""
    try:
        return [(orjson.loads(line), line)]
    except orjson.JSONDecodeError:  # rare: NUL padding, glued records, broken JSON
        pass
    records: list[tuple[object, bytes]] = []
    for raw in split_merged(line):
        try:
            records.append((orjson.loads(raw), raw))
        except orjson.JSONDecodeError:
            counts[Outcome.MALFORMED] += 1
    return records


def _reread(line: bytes, counts: Counter[str], slow: Counter[str] | None) -> list[tuple[object, bytes]]:
    """The full parser's records of a line whose usage holds a number msgspec cannot read as a dict
    (1e400), counted as SLOW: the fast decoder once read usage as a dict and so refused such a line."""
    if slow is not None:
        slow[SLOW] += 1
    return _full(line, counts)


_TOOLS = UsageEvent._fields.index("tools")


# The fast decoder: msgspec reads only the fields an assistant line's event needs, and skips the rest
# (content text, tool inputs) without building it. It takes an assistant line (or one with no type)
# that is valid UTF-8 and of the shape below; any other line is decoded by orjson, as it always was,
# and one it fails on counts as SLOW: a rise means Claude Code's format changed.
SLOW = "slow"  # not an Outcome: a key of the counts `parse_chunk` fills, taken out by the ingest
_UNSET: Any = msgspec.UNSET  # a field the line does not have (`"agentId" in record`)


class _Block(msgspec.Struct, gc=False):
    type: Any = None
    name: Any = None


_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]  # what `_count` accepts without a question


class _Split(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    ephemeral_5m_input_tokens: _Count = 0
    ephemeral_1h_input_tokens: _Count = 0


class _Server(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    web_search_requests: _Count = 0
    web_fetch_requests: Any = None


class _Usage(msgspec.Struct, gc=False, forbid_unknown_fields=True):
    """A usage object whose every count is a plain integer in bounds: the common case. Any other (a
    null, a float, a string, a count out of bounds, a split that is no object, a field Claude Code does
    not write) is read as a dict by `_event_of`, as it always was. Every field is read, none skipped,
    so a number msgspec cannot hold (1e400) is never let through: see `_Record.outcome`."""

    input_tokens: _Count = 0
    output_tokens: _Count = 0
    cache_read_input_tokens: _Count = 0
    cache_creation_input_tokens: _Count = 0
    cache_creation: _Split | None = None
    server_tool_use: _Server | None = None
    speed: Any = None
    service_tier: Any = None
    inference_geo: Any = None
    iterations: Any = None


_USAGE = msgspec.json.Decoder(_Usage)
_FIELDS = set(_Usage.__struct_fields__)
_NESTED = {"cache_creation": set(_Split.__struct_fields__), "server_tool_use": set(_Server.__struct_fields__)}


def _new_fields(usage: object) -> bool:
    """Whether a usage object holds a field `_Usage` (or a split in it) does not name."""
    if type(usage) is not dict:
        return False
    if not usage.keys() <= _FIELDS:
        return True
    return any(type(inner := usage.get(name)) is dict and not inner.keys() <= known for name, known in _NESTED.items())


_NO_USAGE = msgspec.Raw()  # the message has no "usage" (a present one is never empty)


class _Message(msgspec.Struct, gc=False):
    id: Any = None
    model: Any = None
    usage: msgspec.Raw = _NO_USAGE  # decoded only for a line that gives an event (see `_Record.outcome`)
    content: list[_Block] | str | None = None

    def tools(self) -> frozenset[str]:
        if not isinstance(self.content, list):
            return _NO_TOOLS
        return _tool_names([b.name for b in self.content if b.type == "tool_use"])


class _Record(msgspec.Struct, gc=False):
    type: Any = None
    message: _Message | None = None
    requestId: Any = None  # Claude Code's field names
    timestamp: Any = None
    sessionId: Any = None
    cwd: Any = None
    isSidechain: Any = None
    agentId: Any = _UNSET
    costUSD: Any = None
    isCompactSummary: Any = None

    def outcome(self, line: bytes, until: datetime, slow: Counter[str] | None = None) -> UsageEvent | Outcome | None:
        """As `from_record` for an assistant record (or one with no type); None when its usage holds a
        number msgspec cannot read as a dict (1e400), which leaves the line to the full parser. With
        `slow`, a usage with a field `_Usage` does not name (Claude Code's format changed) is counted
        there under SLOW: every line then takes the dict path, and that must show."""
        message = self.message
        if message is None or not message.usage or message.model == "<synthetic>":
            return Outcome.SKIPPED
        try:
            usage = _USAGE.decode(message.usage)
        except msgspec.ValidationError:
            usage = None
        try:
            if usage is None:  # an odd one: as the dict path reads it
                plain = msgspec.json.decode(message.usage)
                if slow is not None and _new_fields(plain):
                    slow[SLOW] += 1
                return self._event(plain, line, until)
            model = message.model
            if type(model) is not str or not model or len(model) > MAX_CHARS:
                return Outcome.MALFORMED
            write = usage.cache_creation_input_tokens
            split = usage.cache_creation
            if split is None:
                five, hour = write, 0
            else:
                five, hour = split.ephemeral_5m_input_tokens, split.ephemeral_1h_input_tokens
                if write > five + hour:  # a partial split leaves the rest at the 5-minute rate
                    five = write - hour
            server, speed, cost = usage.server_tool_use, usage.speed, self.costUSD
            event: UsageEvent = _new(
                UsageEvent,
                (
                    _key_of(message.id, self.requestId, line),
                    _id(self.requestId),
                    _timestamp(self.timestamp, until),
                    _id(self.sessionId) or "unknown",
                    project_name(_str(self.cwd)),
                    model,
                    _SUBAGENT if self.isSidechain is True or self.agentId is not _UNSET else _MAIN,
                    _new(Tokens, (usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens, five, hour)),
                    0 if server is None else server.web_search_requests,
                    message.tools(),
                    shorten(speed) if type(speed) is str and speed else "standard",
                    _TRANSCRIPTS,
                    None if cost is None else _cost(_as_orjson(cost)),
                    self.isCompactSummary is True,
                    "",
                    1,
                ),
            )
            return event
        except Malformed:
            return Outcome.MALFORMED
        except msgspec.ValidationError:
            return None

    def _event(self, usage: object, line: bytes, until: datetime) -> UsageEvent:
        message = self.message
        assert message is not None
        return _event_of(
            usage,
            message.model,
            _key_of(message.id, self.requestId, line),
            (self.requestId, self.timestamp, self.sessionId, self.cwd),
            self.isSidechain is True or self.agentId is not _UNSET,
            message.tools(),
            _as_orjson(self.costUSD),
            self.isCompactSummary is True,
            until,
        )


_new: Callable[..., Any] = tuple.__new__  # a named tuple from all its fields in order, without its Python __new__


def _plain(usage: object) -> object:
    return msgspec.json.decode(usage) if type(usage) is msgspec.Raw else usage


_DECODER = msgspec.json.Decoder(_Record)


def _decode(line: bytes, slow: Counter[str] | None) -> _Record | None:
    """The line's record, or None for a line of another type (not counted) or one the fast decoder
    cannot take (counted as SLOW)."""
    try:
        if not line.isascii():  # the common case, checked first (a tenth of the time)
            line.decode()  # orjson rejects invalid UTF-8 anywhere; msgspec only in the fields it reads
        record = _DECODER.decode(line)
    except (UnicodeDecodeError, msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        if slow is not None:
            slow[SLOW] += 1
        return None
    return record if record.type is None or record.type == "assistant" else None


def _as_orjson(value: object) -> object:
    """orjson reads an integer past 64 bits as a float; msgspec keeps it whole."""
    if type(value) is int and not -(1 << 63) <= value < 1 << 64:
        return float(value)
    return value


def parse_prompt(line: bytes, until: datetime | None = None) -> Prompt | None:
    """The prompt of a user line, or None for a tool result, a generated or subagent line, or junk
    (an over-long id, a time later than `until`: see `exporter.events.latest`).

    Only ids, time and project are kept: never the text.
    """
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or record.get("type") != "user":
        return None
    flags = ("isMeta", "isCompactSummary", "isSidechain", "isVisibleInTranscriptOnly")
    if any(record.get(flag) is True for flag in flags) or "agentId" in record:
        return None
    message = record.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        first = content[0] if content and isinstance(content[0], dict) else {}
        if first.get("type") not in ("text", "image"):
            return None
        content = first.get("text", "")
    if not isinstance(content, str) or content.startswith(GENERATED):
        return None
    try:
        key, session = _id(record.get("uuid")), _id(record.get("sessionId"))
        moment = _timestamp(record.get("timestamp"), latest() if until is None else until)
    except Malformed:
        return None
    if key is None or session is None:
        return None
    return Prompt(key, session, to_ms(moment), project_name(_str(record.get("cwd"))))


def split_merged(line: bytes) -> list[bytes]:
    """One physical line, or the records of a line where two writes were glued together.

    Leading NUL padding (a crash while the file was being extended) is dropped.
    """
    line = line.strip(b"\x00\r\t ")
    if b"}{" not in line:
        return [line]
    try:
        orjson.loads(line)
        return [line]
    except orjson.JSONDecodeError:
        parts = line.split(b"}{")
        return [
            (b"" if i == 0 else b"{") + part + (b"" if i == len(parts) - 1 else b"}") for i, part in enumerate(parts)
        ]


def parse_line(line: bytes, now: datetime | None = None) -> UsageEvent | Outcome:
    """A usage event, or the outcome (`skipped` / `malformed`) of a line that is not one."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        typeless = TYPE_MARK not in line and MESSAGE_MARK in line and USAGE_MARK in line
        return Outcome.MALFORMED if ASSISTANT_MARK in line or typeless else Outcome.SKIPPED
    return from_record(record, line, latest(now))


def from_record(record: object, line: bytes, until: datetime | None = None) -> UsageEvent | Outcome:
    """The event of a parsed line, or its outcome; `line` keys a request that has no id. A time later
    than `until` (by default a day after the wall clock) is malformed.

    A subagent's assistant record nested in a `progress` line (`agent_progress`, Claude Code 2.1.x) is a
    copy of that request: it merges with the subagent transcript's copy under the same message id, and
    stands alone when that transcript is missing (copied histories, partial backups).

    A record with no `type` whose message carries usage is read as an assistant line, as ccusage reads
    it (it looks at neither `type` nor `role`); without a model it is malformed, never skipped unsaid.
    """
    if not isinstance(record, dict):
        return Outcome.SKIPPED
    subagent = False
    if record.get("type") == "progress":
        nested = _nested(record)
        if nested is None:
            return Outcome.SKIPPED
        record, subagent = nested, True
    kind = record.get("type")
    if kind != "assistant" and kind is not None:
        return Outcome.SKIPPED
    message = record.get("message")
    if not isinstance(message, dict) or "usage" not in message:
        return Outcome.SKIPPED
    if message.get("model") == "<synthetic>":  # a locally generated API-error line, zero usage
        return Outcome.SKIPPED
    try:
        return _event(record, message, line, latest() if until is None else until, subagent)
    except Malformed:
        return Outcome.MALFORMED


def _nested(progress: dict[str, Any]) -> dict[str, Any] | None:
    """The subagent record an `agent_progress` line carries in `data.message`, with the progress line's
    session, working directory and time filled in where the nested record lacks them; else None."""
    data = progress.get("data")
    if not isinstance(data, dict) or data.get("type") != "agent_progress":
        return None
    nested = data.get("message")
    if not isinstance(nested, dict) or not isinstance(nested.get("message"), dict):
        return None
    # The nested record holds the response and its own time; the session (the parent's, as on the
    # subagent transcript's lines) and the working directory are on the progress line.
    context: dict[str, Any] = {name: progress[name] for name in ("sessionId", "cwd", "timestamp") if name in progress}
    return context | nested


def _message_of(record: dict[str, Any]) -> object:
    """A record's `message`, or for a progress line the nested subagent record's."""
    if record.get("type") == "progress":
        nested = _nested(record)
        return None if nested is None else nested.get("message")
    return record.get("message")


def _event(
    record: dict[str, Any], message: dict[str, Any], line: bytes, until: datetime, subagent: bool = False
) -> UsageEvent:
    return _event_of(
        message["usage"],
        message.get("model"),
        _key_of(message.get("id"), record.get("requestId"), line),
        (record.get("requestId"), record.get("timestamp"), record.get("sessionId"), record.get("cwd")),
        subagent or record.get("isSidechain") is True or "agentId" in record,
        _tools(message),
        record.get("costUSD"),
        record.get("isCompactSummary") is True,
        until,
    )


def _event_of(
    usage: object,
    model: object,
    key: str,
    where: tuple[object, object, object, object],  # requestId, timestamp, sessionId, cwd as the line has them
    subagent: bool,
    tools: frozenset[str],
    cost: object,
    compaction: bool,
    until: datetime,
) -> UsageEvent:
    if not isinstance(usage, dict) or not isinstance(model, str) or not model or len(model) > MAX_CHARS:
        raise Malformed
    server = usage.get("server_tool_use")
    web_searches = _count(server, "web_search_requests") if isinstance(server, dict) else 0
    speed = usage.get("speed")
    request_id, timestamp, session_id, cwd = where
    return UsageEvent(  # positional: the fields in order (cheaper than keywords on this hot path)
        key,
        _id(request_id),
        _timestamp(timestamp, until),
        _id(session_id) or "unknown",
        project_name(_str(cwd)),
        model,
        _SUBAGENT if subagent else _MAIN,
        _tokens(usage),
        web_searches,
        tools,
        shorten(speed) if isinstance(speed, str) and speed else "standard",
        _TRANSCRIPTS,
        _cost(cost),
        compaction,
    )


_NO_TOOLS: frozenset[str] = frozenset()
_MAIN, _SUBAGENT, _TRANSCRIPTS = Agent.MAIN, Agent.SUBAGENT, Source.TRANSCRIPTS  # globals: cheaper than Enum.X here


def _tools(message: dict[str, Any]) -> frozenset[str]:
    content = message.get("content")
    if not isinstance(content, list):
        return _NO_TOOLS
    return _tool_names([b.get("name") for b in content if type(b) is dict and b.get("type") == "tool_use"])


def _tool_names(names: list[object]) -> frozenset[str]:
    if not names:
        return _NO_TOOLS
    if len(names) == 1 and type(names[0]) is str and len(names[0]) <= MAX_CHARS:  # a line is one block
        return _one_tool(names[0])
    return add_tools(_NO_TOOLS, (name for name in names if isinstance(name, str)))


@lru_cache(maxsize=1024)  # short names only: 1024 cached names of 10 MB each would hold 10 GB
def _one_tool(name: str) -> frozenset[str]:
    return add_tools(_NO_TOOLS, (name,))


def _key_of(message_id: object, request_id: object, line: bytes) -> str:
    # message.id is shared by every copy of a response (blocks, forks, side-question replays);
    # requestId is the fallback; with neither, only a byte-identical re-read is the same request.
    for candidate in (message_id, request_id):
        if isinstance(candidate, str) and candidate:
            if len(candidate) > MAX_CHARS:
                raise Malformed
            return candidate
    return "line:" + hashlib.blake2b(line, digest_size=16).hexdigest()


def _tokens(usage: dict[str, Any]) -> Tokens:
    cache_write = _count(usage, "cache_creation_input_tokens")
    split = usage.get("cache_creation")
    if isinstance(split, dict):
        five = _count(split, "ephemeral_5m_input_tokens")
        hour = _count(split, "ephemeral_1h_input_tokens")
        # Older versions lack the split; a partial split leaves the rest at the 5-minute rate.
        five += max(0, cache_write - five - hour)
    else:
        five, hour = cache_write, 0
    return Tokens(
        input=_count(usage, "input_tokens"),
        output=_count(usage, "output_tokens"),
        cache_read=_count(usage, "cache_read_input_tokens"),
        cache_write_5m=five,
        cache_write_1h=hour,
    )


def _count(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name, 0)
    if type(value) is int and 0 <= value <= MAX_TOKENS:  # the common case, checked first
        return value
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise Malformed
    if not 0 <= value <= MAX_TOKENS:
        raise Malformed
    return int(value)


def _timestamp(value: object, until: datetime) -> datetime:
    if not isinstance(value, str):
        raise Malformed
    try:
        moment = datetime.fromisoformat(value)
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # year 1 an hour east of UTC is out of range
        raise Malformed from None
    if moment > until:
        raise Malformed
    return moment


def _cost(value: object) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        return None
    return cost if cost.is_finite() and cost >= 0 else None


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _id(value: object) -> str | None:
    """An identifier, None when absent; one longer than MAX_CHARS is no real id (see `exporter.events`)."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) > MAX_CHARS:
        raise Malformed
    return value
