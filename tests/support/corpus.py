"""Seeded, reproducible Claude Code transcripts, and the ground truth they were generated from.

Tests and the benchmark run on this instead of real transcripts: it writes the line shapes Claude
Code 2.1.x writes and every duplicate trap of its transcripts, and records what a correct reader must
count: one request per `message.id`, the per-field maximum over its copies, the earliest timestamp.

`generate()` builds a history; `append_activity()` adds a resumed turn and new sessions to it.
"""

from __future__ import annotations

import base64
import random
import re
import string
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import orjson

Tokens = tuple[int, int, int, int, int]  # input, output, cache_read, cache_write_5m, cache_write_1h
Json = dict[str, Any]

DAY_MS = 86_400_000
MAIN_MODELS = (  # (model id, weight in the main-thread mix)
    ("claude-opus-4-8", 34),
    ("claude-sonnet-4-5-20250929", 28),
    ("claude-opus-4-1-20250805", 12),
    ("claude-sonnet-4-20250514", 12),
    ("claude-haiku-4-5-20251001", 14),
)
LONG_CONTEXT_MODELS = ("claude-sonnet-4-5-20250929", "claude-sonnet-4-20250514")
HAIKU = "claude-haiku-4-5-20251001"
OLD_MODELS = ("claude-sonnet-4-20250514", "claude-3-5-haiku-20241022")
PROJECTS = (  # (cwd, git branch); two share the last path component, as real machines do
    ("/home/dev/acme-api", "main"),
    ("/home/dev/acme-web", "feature/checkout"),
    ("/home/dev/notes-app", "HEAD"),
    ("/home/dev/infra/terraform-live", "main"),
    ("/home/dev/ml/forecasting.v2", "exp/lstm"),
    ("/home/dev/go/src/github.com/acme/billing_svc", "develop"),
    ("/home/dev/archive/acme-api", "legacy"),
)
MAIN_TOOLS = (
    ("Read", 24),
    ("Bash", 16),
    ("Edit", 13),
    ("Grep", 9),
    ("Glob", 6),
    ("Write", 5),
    ("TodoWrite", 5),
    ("Agent", 4),
    ("MultiEdit", 3),
    ("WebFetch", 3),
    ("WebSearch", 2),
    ("Skill", 1),
    ("LS", 1),
    ("mcp__github__create_issue", 1),
    ("mcp__github__get_file_contents", 1),
)
SUBAGENT_TOOLS = (("Read", 10), ("Grep", 6), ("Glob", 4), ("Bash", 3), ("WebFetch", 1))
ALL_TOOLS = tuple(name for name, _ in MAIN_TOOLS)
MALFORMED_KINDS = (
    "truncated",
    "usage_string",
    "negative_tokens",
    "nan_tokens",
    "string_tokens",
    "binary",
    "nul_padding",
)
# Per-MTok list prices (input, output, cache read, 5 m write), only to fill old lines' costUSD.
_OLD_PRICES = {"claude-sonnet-4-20250514": (3.0, 15.0, 0.3, 3.75), "claude-3-5-haiku-20241022": (0.8, 4.0, 0.08, 1.0)}


@dataclass(frozen=True, slots=True)
class _Version:
    name: str
    split: bool  # writes usage.cache_creation {ephemeral_5m, ephemeral_1h}
    provisional: float  # share of multi-line responses whose early lines carry provisional usage


# Provisional usage on early lines was common before 2.1.97 and rare after (FORMATS §1 trap 2).
# The current version is listed twice: most sessions of a history are recent.
VERSIONS = (
    _Version("1.0.88", False, 0.6),
    _Version("2.0.14", True, 0.6),
    _Version("2.1.42", True, 0.5),
    _Version("2.1.197", True, 0.08),
    _Version("2.1.197", True, 0.08),
)
OLD_VERSION = _Version("1.0.3", False, 0.0)


# ---------------------------------------------------------------------------------------------
# Ground truth


@dataclass(frozen=True, slots=True)
class Request:
    """One billable request as a correct reader must count it, whatever copies the files hold."""

    message_id: str
    request_id: str | None
    timestamp: str  # ISO 8601 UTC of the earliest copy
    session_id: str
    project: str
    model: str
    agent: str  # main | subagent
    tools: tuple[str, ...]
    tokens: Tokens
    web_search_requests: int = 0
    reported_cost: float | None = None  # old lines' top-level costUSD


@dataclass
class Truth:
    """What the generator wrote: the requests, and counts of every kind of line and trap."""

    requests: dict[str, Request] = field(default_factory=dict)
    lines: Counter[str] = field(default_factory=Counter)  # line kind -> lines in all files
    traps: Counter[str] = field(default_factory=Counter)  # trap -> occurrences
    files: Counter[str] = field(default_factory=Counter)  # session | fork | subagent | meta
    bytes: int = 0

    @property
    def malformed_lines(self) -> int:
        return sum(n for kind, n in self.lines.items() if kind.startswith("malformed:"))

    def add(self, request: Request) -> None:
        # Later copies never change the merged request: forks and replays carry identical usage and
        # provisional lines are smaller, so the first record is already the maximum and earliest.
        self.requests.setdefault(request.message_id, request)

    def update(self, other: Truth) -> None:
        for request in other.requests.values():
            self.add(request)
        self.lines.update(other.lines)
        self.traps.update(other.traps)
        self.files.update(other.files)
        self.bytes += other.bytes

    def totals(self) -> Tokens:
        return _sum(r.tokens for r in self.requests.values())

    def daily_by_model(self, tz: str = "UTC") -> dict[tuple[str, str], Tokens]:
        """(local date, model) -> summed tokens, dated by each request's earliest copy."""
        zone = ZoneInfo(tz)
        groups: dict[tuple[str, str], list[Tokens]] = {}
        for r in self.requests.values():
            day = datetime.fromisoformat(r.timestamp).astimezone(zone).date().isoformat()
            groups.setdefault((day, r.model), []).append(r.tokens)
        return {key: _sum(tokens) for key, tokens in sorted(groups.items())}


def _sum(tokens: Iterator[Tokens] | list[Tokens]) -> Tokens:
    total = [0, 0, 0, 0, 0]
    for t in tokens:
        for i, n in enumerate(t):
            total[i] += n
    return (total[0], total[1], total[2], total[3], total[4])


def project_dir_name(cwd: str) -> str:
    """Claude Code's directory for a working directory: every non-alphanumeric character becomes `-`."""
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


def project_name(cwd: str) -> str:
    return cwd.rstrip("/").rsplit("/", 1)[-1]


# ---------------------------------------------------------------------------------------------
# Public entry points


@dataclass(frozen=True, slots=True)
class _Options:
    replays: bool = True
    fork: bool = True
    malformed: bool = True
    old_format: bool = False
    midnight_split: bool = True


def generate(
    root: Path,
    *,
    seed: int = 0,
    days: int = 60,
    start: date = date(2026, 9, 1),
    sessions_per_day: int = 3,
    target_bytes: int | None = None,
    replays: bool = True,
    fork: bool = True,
    malformed: bool = True,
    old_format: bool = False,
    midnight_split: bool = True,
) -> Truth:
    """Write `root/projects/...` and return its ground truth; the same arguments give the same bytes.

    `target_bytes` replaces `sessions_per_day`: sessions are added round-robin over the days until the
    corpus holds about that many bytes. `replays` adds side-question replays (trap 4) and
    `midnight_split` one response whose provisional first line is dated before UTC midnight and its
    final line after: ccusage 20 dates such a request by the line it keeps (the largest output),
    a ledger by the earliest copy, so corpora compared with ccusage turn both off.
    """
    options = _Options(replays, fork, malformed, old_format, midnight_split)
    pay = _Payloads(_Rng(f"{seed}/payloads"))
    out = _Out(root / "projects")
    for round_, day in _schedule(days, sessions_per_day, target_bytes):
        if target_bytes is not None and out.truth.bytes >= target_bytes:
            break
        rng = _Rng(f"{seed}/{round_}/{day}")
        day_ms = _day_ms(start + timedelta(days=day))
        showcase = round_ == 0 and day == 0
        plan = _plan(rng, day_ms, options, showcase=showcase)
        if old_format and not showcase and day < max(1, days // 4) and rng.random() < 0.3:
            plan = _old_plan(rng, day_ms)  # the oldest files of a long history
        _write_session(out, rng, pay, plan)
        if showcase and old_format:
            _write_session(out, rng, pay, _old_plan(rng, day_ms))
    return out.truth


@dataclass
class Appended:
    """What `append_activity` changed, so a benchmark can put the corpus back as it was."""

    created: list[Path]
    grown: dict[Path, int]  # path -> size before the append
    truth: Truth

    def undo(self) -> None:
        for path, size in self.grown.items():
            with path.open("r+b") as f:
                f.truncate(size)
        for path in self.created:
            path.unlink(missing_ok=True)
        for path in self.created:  # subagent dirs, deepest first
            for parent in (path.parent, path.parent.parent):
                if parent.name != "projects" and parent.is_dir() and not any(parent.iterdir()):
                    parent.rmdir()


def append_activity(root: Path, *, seed: int, target_bytes: int = 1 << 20, at: datetime) -> Appended:
    """Resume the first session file with one more turn, then add new sessions until ~target_bytes."""
    pay = _Payloads(_Rng(f"{seed}/payloads"))
    rng = _Rng(f"{seed}/append/{at.isoformat()}")
    out = _Out(root / "projects", append=True)
    files = sorted(p for p in (root / "projects").glob("*/*.jsonl"))
    resumed = files[0]
    plan, sid = _resumed_plan(resumed, at)
    session = _Session(rng, pay, Truth(), plan, sid=sid)  # out.write adds it to out.truth
    session.turn(1, preamble=True)
    session.close()
    out.write(session)
    n = 0
    while out.truth.bytes < target_bytes:
        n += 1
        start = int(at.timestamp() * 1000) + n * 60_000
        new_plan = replace(
            _plan(rng, start - start % DAY_MS, _Options(), showcase=False),
            start_ms=start,
            cwd=plan.cwd,
            branch=plan.branch,
            fork=False,
        )
        _write_session(out, rng, pay, new_plan)
    return Appended(out.created, out.grown, out.truth)


# ---------------------------------------------------------------------------------------------
# Randomness, clock and payloads

_B62 = string.ascii_letters + string.digits


class _Rng(random.Random):
    """random.Random seeded from a string (sha512-based, so stable across runs and platforms)."""

    def b62(self, n: int) -> str:
        return "".join(self.choices(_B62, k=n))

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.getrandbits(128), version=4))

    def hex(self, n: int) -> str:
        return f"{self.getrandbits(4 * n):0{n}x}"

    def pick(self, weighted: tuple[tuple[str, int], ...]) -> str:
        return self.choices([k for k, _ in weighted], [w for _, w in weighted])[0]

    def size(self, median: float, spread: float, low: int, high: int) -> int:
        return max(low, min(high, int(self.lognormvariate(0, spread) * median)))


def _day_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _iso(ms: int) -> str:
    moment = _EPOCH + timedelta(milliseconds=ms)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{ms % 1000:03d}Z"


_WORDS = (
    "account",
    "invoice",
    "ledger",
    "session",
    "token",
    "usage",
    "retry",
    "cache",
    "config",
    "handler",
    "client",
    "request",
    "response",
    "payload",
    "metric",
    "budget",
    "window",
    "parser",
    "record",
    "event",
    "user",
    "order",
    "price",
    "report",
    "schema",
    "queue",
    "worker",
    "stream",
    "buffer",
    "offset",
    "tenant",
)
_CODE = (
    "def {a}_{b}(self, {c}: {T}) -> {U}:",
    "    return self.{a}.{b}({c})",
    "class {T}{U}({T}Base):",
    '    {a}_{b} = {c}.get("{d}", {n})',
    "    if not {a}_{b}:",
    '        raise {T}Error(f"bad {b}: {{{c}!r}}")',
    "from {a}.{b} import {T}{U}",
    "# {T} {b} must be {c} before {d}: see #{n}",
    "    for {a} in self.{b}_{c}s:",
    "        {a}[{n}] += {b}.{c}",
    "",
    "export async function {a}{T}({c}: {U}): Promise<{T}> {{",
    "  const {a} = await {b}.{c}({n});",
    "}}",
    '    logger.debug("{a} {b} %s", {c})',
    "  {a}: {T} | null;",
    "func ({a} *{T}) {U}(ctx context.Context, {b} int) error {{",
    "\tif err := {a}.{b}(ctx); err != nil {{",
    '\t\treturn fmt.Errorf("{c}: %w", err)',
    '    assert {a}.{b} == {n}, "{c} {d}"',
    '    """{T} the {b} usage of {c}."""',
)
_LOG = (
    "tests/test_{a}.py::test_{b}_{c} PASSED{pad}[{p:3d}%]",
    "tests/test_{a}.py::test_{b}_{d} FAILED{pad}[{p:3d}%]",
    "E       AssertionError: {a}_{b} == {n}",
    "npm warn deprecated {a}-{b}@{n}.0.{p}: use {c} instead",
    "  {a}/{b}.go:{n}:{p}: undefined: {c}{T}",
    "+ {a} {b}-{c} ({n} ms)",
    "{T}: {n} passed, {p} warnings in 3.{n}s",
    "    at {T}.{b} (src/{a}/{c}.ts:{n}:{p})",
    "INFO  {a}.{b}: processed {n} {c}s in {p} ms",
)
_PROSE = (
    "The {a} {b} is computed from the {c} {d}, so a stale {a} shows up as a wrong {b}.",
    "I'll check how {a}_{b} handles an empty {c} before changing the {d} path.",
    "## {T} {U}\n\nUse `{a}.{b}()` when the {c} is known; otherwise fall back to the {d}.",
    "- {T}: {n} {c}s, {p} of them with a {d}",
    "Let me look at the {a} tests first, then update {b}_{c}.",
    "According to the docs, the {a} endpoint returns {n} {b}s per page and a `next_{c}` cursor.",
)


@dataclass(frozen=True, slots=True)
class _SourceFile:
    path: str  # relative to the project
    text: str
    numbered: str  # as the Read tool returns it: "1\tline..."
    lines: int


class _Payloads:
    """Text pools built once per corpus; tool results are slices of them, which keeps 1 GiB fast."""

    def __init__(self, rng: _Rng) -> None:
        self.rng = rng
        code = self._lines(rng, _CODE, 3000)
        self.files = [self._file(rng, code, i) for i in range(400)]
        self.log = "\n".join(rng.choices(self._lines(rng, _LOG, 2000), k=30_000))
        self.prose = "\n".join(rng.choices(self._lines(rng, _PROSE, 1500), k=12_000))
        self.signatures = base64.b64encode(rng.randbytes(1 << 16)).decode()
        self.skills = self.prose[:4200]

    @staticmethod
    def _fill(rng: _Rng, template: str) -> str:
        w = rng.choices(_WORDS, k=6)
        return template.format(
            a=w[0],
            b=w[1],
            c=w[2],
            d=w[3],
            T=w[4].title(),
            U=w[5].title(),
            n=rng.randint(0, 9999),
            p=rng.randint(0, 100),
            pad=" " * rng.randint(1, 30),
        )

    def _lines(self, rng: _Rng, templates: tuple[str, ...], n: int) -> list[str]:
        return [self._fill(rng, rng.choice(templates)) for _ in range(n)]

    def _file(self, rng: _Rng, code: list[str], i: int) -> _SourceFile:
        body = rng.choices(code, k=rng.size(160, 0.9, 3, 2500))
        ext = rng.choice((".py", ".ts", ".go", ".md"))
        path = f"{rng.choice(('src', 'lib', 'internal', 'app'))}/{rng.choice(_WORDS)}/{rng.choice(_WORDS)}_{i}{ext}"
        numbered = "\n".join(f"{n}\t{line}" for n, line in enumerate(body, 1))
        return _SourceFile(path, "\n".join(body) + "\n", numbered, len(body))

    def take(self, rng: _Rng, pool: str, n: int) -> str:
        at = rng.randrange(0, max(1, len(pool) - n))
        newline = pool.find("\n", at, at + 200)  # start at a line, as quoted text does
        if newline >= 0:
            at = newline + 1
        return pool[at : at + n]


# ---------------------------------------------------------------------------------------------
# Plans: what one session will contain

# The showcase session (the first of a corpus) holds every trap however small the corpus: it starts
# on Sonnet with a long context, switches through the rest of the model mix, compacts at turn 2 and
# ends with an API error.
_SHOWCASE_MODELS = {
    1: "claude-sonnet-4-20250514",
    3: "claude-opus-4-8",
    4: HAIKU,
    5: "claude-opus-4-1-20250805",
}
_SHOWCASE_SYNTHETIC_TURN = 6


@dataclass(frozen=True, slots=True)
class _Plan:
    start_ms: int
    cwd: str
    branch: str
    model: str
    version: _Version
    entrypoint: str  # cli (interactive) | sdk-cli (print mode)
    turns: int
    ttl: str  # 5m | 1h: the TTL of the session's cache writes
    long_context: bool = False  # a 1M-context Sonnet session that goes past 200k input
    fork: bool = False
    replays: bool = False
    malformed: tuple[str, ...] = ()
    showcase: bool = False  # forces every trap into this one session
    midnight_split: bool = False
    old: bool = False
    codemod: bool = False  # hundreds of tracked files: big file-history-snapshot lines


def _start_ms(rng: _Rng, day_ms: int) -> int:
    # Working hours in UTC+-8, plus late sessions that run past UTC midnight.
    hour = rng.choices(range(24), [1, 1, 1, 1, 1, 1, 2, 4, 6, 8, 8, 8, 7, 8, 8, 8, 8, 7, 6, 5, 4, 4, 4, 5])[0]
    return day_ms + hour * 3_600_000 + rng.randrange(3_600_000)


def _plan(rng: _Rng, day_ms: int, options: _Options, *, showcase: bool) -> _Plan:
    cwd, branch = rng.choice(PROJECTS)
    model = rng.pick(MAIN_MODELS)
    long_context = model in LONG_CONTEXT_MODELS and rng.random() < 0.15
    kinds = tuple(k for k in MALFORMED_KINDS if rng.random() < 0.04) if options.malformed else ()
    plan = _Plan(
        start_ms=_start_ms(rng, day_ms),
        cwd=cwd,
        branch=branch,
        model=model,
        version=rng.choice(VERSIONS),
        entrypoint=rng.choice(("cli", "cli", "sdk-cli")),
        turns=rng.choice((1, 1, 2, 2, 3, 3, 4, 5, 6, 8)),
        ttl=rng.choice(("5m", "1h")),
        long_context=long_context,
        fork=options.fork and rng.random() < 0.08,
        replays=options.replays and rng.random() < 0.1,
        malformed=kinds,
        codemod=rng.random() < 0.05,
    )
    if not plan.version.split:
        plan = replace(plan, ttl="5m")  # versions without the split object predate 1 h writes
    if showcase:
        plan = replace(
            plan,
            cwd=PROJECTS[0][0],
            branch=PROJECTS[0][1],
            model=LONG_CONTEXT_MODELS[0],
            version=VERSIONS[2],
            entrypoint="cli",
            turns=_SHOWCASE_SYNTHETIC_TURN + 1,
            ttl="1h",
            long_context=True,
            fork=options.fork,
            replays=options.replays,
            malformed=MALFORMED_KINDS if options.malformed else (),
            showcase=True,
            codemod=True,
            midnight_split=options.midnight_split,
            start_ms=day_ms + DAY_MS - (20_000 if options.midnight_split else 1_500_000),
        )
    return plan


def _old_plan(rng: _Rng, day_ms: int) -> _Plan:
    cwd, branch = rng.choice(PROJECTS)
    model = rng.choice(OLD_MODELS)
    return _Plan(
        start_ms=_start_ms(rng, day_ms),
        cwd=cwd,
        branch=branch,
        model=model,
        version=OLD_VERSION,
        entrypoint="cli",
        turns=rng.randint(1, 4),
        ttl="5m",
        old=True,
    )


def _resumed_plan(path: Path, at: datetime) -> tuple[_Plan, str]:
    line: Json = {}
    with path.open("rb") as f:
        for raw in f:
            if b'"cwd"' in raw:
                try:
                    line = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
    version = next((v for v in VERSIONS if v.name == line.get("version")), VERSIONS[-1])
    plan = _Plan(
        start_ms=int(at.timestamp() * 1000),
        cwd=line.get("cwd", PROJECTS[0][0]),
        branch=line.get("gitBranch", "main"),
        model=MAIN_MODELS[0][0],
        version=version,
        entrypoint=line.get("entrypoint", "cli"),
        turns=1,
        ttl="5m",
    )
    return plan, path.stem


def _schedule(days: int, per_day: int, target_bytes: int | None) -> Iterator[tuple[int, int]]:
    round_ = 0
    while target_bytes is not None or round_ < per_day:
        for day in range(days):
            yield round_, day
        round_ += 1


# ---------------------------------------------------------------------------------------------
# Output


class _Out:
    """Writes sessions under projects/ and counts their lines and bytes into the truth."""

    def __init__(self, projects: Path, *, append: bool = False) -> None:
        self.projects = projects
        self.truth = Truth()
        self.append = append
        self.created: list[Path] = []
        self.grown: dict[Path, int] = {}

    def write(self, session: _Session) -> None:
        folder = self.projects / project_dir_name(session.plan.cwd)
        self._file(folder / f"{session.sid}.jsonl", session.lines, "fork" if session.forked else "session")
        for agent_id, lines, meta in session.subagents:
            sub = folder / session.sid / "subagents"
            self._file(sub / f"agent-{agent_id}.jsonl", lines, "subagent")
            self._file(sub / f"agent-{agent_id}.meta.json", [("meta", orjson.dumps(meta))], "meta")
        self.truth.update(session.truth)

    def _file(self, path: Path, lines: list[tuple[str, bytes]], kind: str) -> None:
        data = b"".join(line for _, line in lines)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and self.append:
            self.grown.setdefault(path, path.stat().st_size)
            with path.open("ab") as f:
                f.write(data)
        else:
            self.created.append(path)
            path.write_bytes(data)
            self.truth.files[kind] += 1
        self.truth.bytes += len(data)
        if kind != "meta":
            self.truth.lines.update(k for k, _ in lines)


def _write_session(out: _Out, rng: _Rng, pay: _Payloads, plan: _Plan) -> None:
    session = _Session(rng, pay, Truth(), plan)
    session.run()
    out.write(session)
    if plan.fork:
        child = session.fork(rng)
        out.write(child)


# ---------------------------------------------------------------------------------------------
# Sessions


@dataclass
class _Cache:
    """The prompt cache of one conversation thread: turns new context into cache reads and writes."""

    ttl: str
    context: int  # tokens the next request sends before new additions
    cached: int = 0  # prefix of that in the prompt cache
    model: str = ""
    last_ms: int = -(10**15)

    def usage(self, rng: _Rng, now: int, model: str, added: int, output: int) -> tuple[int, int, int, int]:
        prompt = self.context + added
        ttl_ms = 300_000 if self.ttl == "5m" else 3_600_000
        if model != self.model or now - self.last_ms > ttl_ms:
            self.cached = 0  # another model or an expired entry: the whole prompt is written again
        uncached = rng.randint(1, 9) if rng.random() > 0.04 else rng.randint(300, 24_000)
        uncached = min(uncached, prompt)
        read = min(self.cached, prompt - uncached)
        write = prompt - uncached - read
        self.cached, self.context, self.model, self.last_ms = read + write, prompt + output, model, now
        w1h = write if self.ttl == "1h" else 0
        return uncached, read, write - w1h, w1h


@dataclass
class _Thread:
    """The main conversation or one subagent's: its lines, its last uuid and its cache."""

    cache: _Cache
    lines: list[tuple[str, bytes]]
    agent_id: str | None = None
    agent_type: str | None = None
    parent: str | None = None
    prompt_id: str = ""
    tool_uses: int = 0

    @property
    def sidechain(self) -> bool:
        return self.agent_type is not None


@dataclass
class _Call:
    name: str
    id: str
    input: Json
    content: Any = ""  # the tool_result content
    result: Json | None = None  # toolUseResult
    chars: int = 0


@dataclass
class _Response:
    uuid: str
    line: Json
    usage: Json
    text: str


class _Session:
    """Builds one session file (plus its subagent files) line by line, in time order."""

    def __init__(self, rng: _Rng, pay: _Payloads, truth: Truth, plan: _Plan, *, sid: str | None = None) -> None:
        self.rng, self.pay, self.truth, self.plan = rng, pay, truth, plan
        self.sid = sid or rng.uuid()
        self.forked = False
        self.project = project_name(plan.cwd)
        self.now = plan.start_ms
        self.model = plan.model
        self.lines: list[tuple[str, bytes]] = []
        base = rng.randint(160_000, 192_000) if plan.long_context else rng.randint(14_000, 32_000)
        self.main = _Thread(_Cache(plan.ttl, base), self.lines)
        self.subagents: list[tuple[str, list[tuple[str, bytes]], Json]] = []
        self.replayable: list[Json] = []
        self.pending_malformed = list(plan.malformed)
        self.forced_tools = list(ALL_TOOLS) if plan.showcase else []
        self.tracked: dict[str, Json] = {}
        self.split_done = not plan.midnight_split
        self.last_prompt = ""
        if plan.old:
            self.env: Json = {
                "userType": "external",
                "cwd": plan.cwd,
                "sessionId": self.sid,
                "version": plan.version.name,
            }
        else:
            self.env = {
                "userType": "external",
                "entrypoint": plan.entrypoint,
                "cwd": plan.cwd,
                "sessionId": self.sid,
                "version": plan.version.name,
                "gitBranch": plan.branch,
            }

    # -- session structure ---------------------------------------------------------------------

    def run(self) -> None:
        for index in range(self.plan.turns):
            self.turn(index, preamble=index == 0)
        self.close()

    def close(self) -> None:
        if self.plan.entrypoint == "sdk-cli":
            return  # print mode writes last-prompt after each turn
        self._last_prompt()

    def _last_prompt(self) -> None:
        self.emit_raw(
            "last-prompt",
            {
                "type": "last-prompt",
                "lastPrompt": self.last_prompt,
                "leafUuid": self.main.parent,
                "sessionId": self.sid,
            },
        )

    def fork(self, rng: _Rng) -> _Session:
        """`--resume ID --fork-session`: a new file that copies the conversation, then goes on."""
        start = self.now + rng.randint(60_000, 20 * 3_600_000)
        child = _Session(
            rng,
            self.pay,
            Truth(),
            replace(self.plan, start_ms=start, showcase=False, malformed=(), midnight_split=False, replays=False),
        )
        child.forked = True
        child.model = self.model
        child.main.cache = replace(self.main.cache)
        child.main.parent = self.main.parent
        child.emit_raw("mode", {"type": "mode", "mode": "normal", "sessionId": child.sid})
        old, new = self.sid.encode(), child.sid.encode()
        copied = [(kind, line.replace(old, new)) for kind, line in self.lines if kind in _CONVERSATION]
        child.lines.extend(copied)
        child.truth.traps["fork_copy_lines"] += len(copied)
        for index in range(rng.randint(1, 2)):
            child.turn(index + 1, preamble=False)
        child.close()
        return child

    def turn(self, index: int, *, preamble: bool) -> None:
        self._advance_between_turns(index)
        if preamble:
            self._preamble()
        self._interlude(index)
        added = self._prompt(index)
        if (self.plan.showcase and index == _SHOWCASE_SYNTHETIC_TURN) or self.rng.random() < 0.01:
            self._synthetic()
            return
        self._requests(added)
        self._turn_end()

    def _interlude(self, index: int) -> None:
        """What happens between two prompts: a side question, /model, compaction, a crash's debris."""
        rng, plan = self.rng, self.plan
        if plan.replays and self.replayable and ((plan.showcase and index == 2) or rng.random() < 0.3):
            self._replay()
        if plan.showcase and index in _SHOWCASE_MODELS:
            self._switch_model(_SHOWCASE_MODELS[index])
        elif not plan.old and index and rng.random() < 0.08:
            self._switch_model(None)
        if self.main.cache.context > (700_000 if plan.long_context else 150_000) or (plan.showcase and index == 2):
            self._compact()
        if self.pending_malformed and (plan.showcase or rng.random() < 0.5):
            for kind in self.pending_malformed:
                self._malformed(kind)
            self.pending_malformed = []

    def _requests(self, added: int) -> None:
        n = self.rng.choice((1, 2, 3, 4, 5, 6, 8, 10, 14, 20))
        r = 0
        while True:
            final = r >= n - 1 and not self.forced_tools  # the showcase goes on until every tool ran
            calls = [] if final else self._calls(self.main)
            response = self._respond(self.main, self.model, calls, added)
            added = self._results(self.main, calls, response)
            if final:
                break
            r += 1

    def _advance_between_turns(self, index: int) -> None:
        rng = self.rng
        if index == 0:
            return
        if rng.random() < 0.1:  # `claude --continue` hours later, often the next day
            self.now += rng.randint(2 * 3_600_000, 30 * 3_600_000)
        else:
            self.now += rng.randint(15_000, 25 * 60_000)

    def _preamble(self) -> None:
        if self.plan.old:
            return
        if self.plan.entrypoint == "cli":
            self.emit_raw("mode", {"type": "mode", "mode": "normal", "sessionId": self.sid})
            self.emit_raw(
                "permission-mode", {"type": "permission-mode", "permissionMode": "default", "sessionId": self.sid}
            )
            title = self.pay.take(self.rng, self.pay.prose, 40).strip()
            self.emit_raw("ai-title", {"type": "ai-title", "aiTitle": title, "sessionId": self.sid})

    def _turn_end(self) -> None:
        if self.plan.entrypoint == "cli" and not self.plan.old:
            self.now += self.rng.randint(5, 60)
            self.emit(
                self.main,
                "system",
                {
                    "type": "system",
                    "subtype": "turn_duration",
                    "durationMs": self.rng.randint(800, 600_000),
                    "messageCount": 12,
                    "isMeta": False,
                },
            )
        if self.plan.entrypoint == "sdk-cli":
            self._last_prompt()

    # -- prompts ---------------------------------------------------------------------------------

    def _prompt(self, index: int) -> int:
        rng, pay = self.rng, self.pay
        text = pay.take(rng, pay.prose, rng.size(200, 1.0, 10, 6000)).strip() or "go on"
        self.last_prompt = text[:200]
        self.main.prompt_id = rng.uuid()
        prompt_uuid = rng.uuid()
        self.now += rng.randint(100, 2000)
        if self.plan.entrypoint == "sdk-cli":
            self.emit_raw(
                "queue-operation",
                {
                    "type": "queue-operation",
                    "operation": "enqueue",
                    "timestamp": _iso(self.now),
                    "sessionId": self.sid,
                    "content": text,
                },
            )
            self.emit_raw(
                "queue-operation",
                {
                    "type": "queue-operation",
                    "operation": "dequeue",
                    "timestamp": _iso(self.now + 1),
                    "sessionId": self.sid,
                },
            )
        elif not self.plan.old:
            self._snapshot(prompt_uuid)
        origin = (
            {"origin": {"kind": "human"}, "promptSource": "typed"}
            if self.plan.entrypoint == "cli"
            else {"promptSource": "sdk"}
        )
        self.emit(
            self.main,
            "user",
            {
                "promptId": self.main.prompt_id,
                "type": "user",
                "message": {"role": "user", "content": text},
                "permissionMode": "default",
                **origin,
            },
            uuid_=prompt_uuid,
        )
        added = len(text) // 4
        if index == 0 and not self.plan.old:
            added += self._attachment({"type": "skill_listing", "content": pay.skills, "isInitial": True})
            added += self._attachment(
                {
                    "type": "agent_listing_delta",
                    "addedTypes": ["Explore", "general-purpose", "Plan"],
                    "addedLines": [pay.skills[:900]],
                    "removedTypes": [],
                    "isInitial": True,
                }
            )
        elif self.tracked and rng.random() < 0.3:
            path = next(iter(self.tracked))
            added += self._attachment(
                {"type": "edited_text_file", "filename": path, "snippet": pay.take(rng, pay.files[0].numbered, 1500)}
            )
        return added

    def _attachment(self, body: Json) -> int:
        self.emit(self.main, "attachment", {"attachment": body, "type": "attachment"})
        return len(orjson.dumps(body)) // 4

    def _snapshot(self, message_id: str) -> None:
        if self.plan.codemod and not self.tracked:  # a codemod touched the whole tree
            for f in self.rng.choices(self.pay.files, k=self.rng.randint(800, 4000)):
                self._track(f"{f.path}.{self.rng.hex(6)}")
        self.emit_raw(
            "file-history-snapshot",
            {
                "type": "file-history-snapshot",
                "messageId": message_id,
                "snapshot": {"messageId": message_id, "trackedFileBackups": self.tracked, "timestamp": _iso(self.now)},
                "isSnapshotUpdate": False,
            },
        )

    def _track(self, path: str) -> None:
        version = self.tracked.get(path, {}).get("version", 0) + 1
        self.tracked[path] = {
            "backupFileName": f"{self.rng.hex(16)}@v{version}",
            "version": version,
            "backupTime": _iso(self.now),
        }

    # -- the traps -------------------------------------------------------------------------------

    def _replay(self) -> None:
        """Trap 4: a side question replays a parent response under a new requestId."""
        original = self.rng.choice(self.replayable)
        self.now += self.rng.randint(1_000, 60_000)
        line = dict(
            original,
            parentUuid=original["uuid"],
            isSidechain=True,
            requestId=self._req_id(),
            uuid=self.rng.uuid(),
            timestamp=_iso(self.now),
        )
        self.lines.append(("replay", orjson.dumps(line) + b"\n"))
        self.truth.traps["replay"] += 1

    def _switch_model(self, model: str | None) -> None:
        choices = [m for m, _ in MAIN_MODELS if m != self.model]
        if self.plan.long_context:
            choices = [m for m in LONG_CONTEXT_MODELS if m != self.model]
        self.model = model or self.rng.choice(choices)
        self.now += self.rng.randint(2_000, 20_000)
        command = (
            "<command-name>/model</command-name>\n<command-message>model</command-message>\n"
            f"<command-args>{self.model}</command-args>"
        )
        self.emit(self.main, "user", {"type": "user", "message": {"role": "user", "content": command}})
        self.emit(
            self.main,
            "system",
            {
                "type": "system",
                "subtype": "local_command",
                "isMeta": False,
                "level": "info",
                "content": f"<local-command-stdout>Set model to {self.model}</local-command-stdout>",
            },
        )
        self.truth.traps["model_switch"] += 1

    def _compact(self) -> None:
        rng = self.rng
        self.now += rng.randint(20_000, 90_000)
        pre = self.main.cache.context
        self.emit(
            self.main,
            "system",
            {
                "type": "system",
                "subtype": "compact_boundary",
                "content": "Conversation compacted",
                "isMeta": False,
                "level": "info",
                "compactMetadata": {"trigger": "auto", "preTokens": pre},
            },
        )
        summary = (
            "This session is being continued from a previous conversation that ran out of context. "
            "The conversation is summarized below:\n" + self.pay.take(rng, self.pay.prose, rng.randint(4000, 12000))
        )
        self.emit(
            self.main,
            "compact_summary",
            {
                "type": "user",
                "message": {"role": "user", "content": summary},
                "isVisibleInTranscriptOnly": True,
                "isCompactSummary": True,
            },
        )
        self.main.cache = _Cache(self.main.cache.ttl, rng.randint(14_000, 32_000) + len(summary) // 4)

    def _synthetic(self) -> None:
        """A locally generated API error: model <synthetic>, zero usage, never a request."""
        rng = self.rng
        self.now += rng.randint(500, 30_000)
        status = rng.choice((400, 500, 529))
        zero = {
            "input_tokens": 0,
            "output_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
            "service_tier": None,
            "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
            "inference_geo": None,
            "iterations": None,
            "speed": None,
        }
        message = {
            "id": rng.uuid(),
            "container": None,
            "model": "<synthetic>",
            "role": "assistant",
            "stop_details": None,
            "stop_reason": "stop_sequence",
            "stop_sequence": "",
            "type": "message",
            "usage": zero,
            "content": [{"type": "text", "text": f"API Error: {status} overloaded_error"}],
            "context_management": None,
        }
        self.emit(
            self.main,
            "synthetic",
            {
                "type": "assistant",
                "message": message,
                "requestId": self._req_id(),
                "error": "unknown",
                "isApiErrorMessage": True,
                "apiErrorStatus": status,
            },
        )
        self._turn_end()

    def _malformed(self, kind: str) -> None:
        """A line that looks like usage but cannot be used; its message id is never a real request."""
        rng = self.rng
        usage: Any = {
            "input_tokens": 7,
            "cache_creation_input_tokens": 120,
            "cache_read_input_tokens": 9000,
            "output_tokens": 987_654_321_987,
        }
        if kind == "usage_string":
            usage = "input_tokens=7 output_tokens=40"
        elif kind == "negative_tokens":
            usage["output_tokens"] = -rng.randint(1, 5000)
        elif kind == "string_tokens":
            usage["output_tokens"] = str(rng.randint(1, 5000))
        line = {
            "parentUuid": self.main.parent,
            "isSidechain": False,
            "message": {
                "id": self._msg_id(),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [{"type": "text", "text": "ok"}],
                "stop_reason": "end_turn",
                "usage": usage,
            },
            "requestId": self._req_id(),
            "type": "assistant",
            "uuid": rng.uuid(),
            "timestamp": _iso(self.now),
            **self.env,
        }
        # NaN is not JSON: strict parsers reject the line, lenient ones (Python's json) accept it.
        sentinel = b"NaN" if kind == "nan_tokens" else str(rng.randint(10, 900)).encode()
        raw = orjson.dumps(line).replace(b"987654321987", sentinel)
        if kind == "truncated":  # a crash mid-write: the object is never closed
            raw = raw[: rng.randint(len(raw) // 3, len(raw) - 2)]
        elif kind == "binary":
            raw = rng.randbytes(rng.randint(40, 600)).replace(b"\n", b"\x00") + b'"usage"'
        elif kind == "nul_padding":  # what a crash leaves in a preallocated block
            raw = b"\x00" * rng.randint(64, 4096)
        self.lines.append((f"malformed:{kind}", raw + b"\n"))

    # -- responses -------------------------------------------------------------------------------

    def _msg_id(self) -> str:
        return "msg_01" + self.rng.b62(22)

    def _req_id(self) -> str:
        return "req_011C" + self.rng.b62(20)

    def _respond(self, th: _Thread, model: str, calls: list[_Call], added: int) -> _Response:
        rng, pay = self.rng, self.pay
        blocks: list[Json] = []
        thinking_tokens = 0
        if rng.random() < 0.6:
            thought = pay.take(rng, pay.prose, rng.size(400, 1.0, 20, 8000))
            blocks.append(
                {
                    "type": "thinking",
                    "thinking": thought,
                    "signature": pay.take(rng, pay.signatures, rng.randint(120, 900)),
                }
            )
            thinking_tokens = len(thought) // 3
        text = pay.take(rng, pay.prose, rng.size(300, 1.0, 10, 6000)).strip() or "Done."
        if rng.random() < 0.7 or not calls or not self.split_done:
            blocks.append({"type": "text", "text": text})
        web = self._server_search(blocks) if not self.plan.old else 0
        for call in calls:
            blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.input})
        output = max(5, thinking_tokens + len(orjson.dumps(blocks)) // 4 // (2 if web else 1) + rng.randint(0, 60))
        times = self._block_times(len(blocks), split=not self.split_done and len(blocks) > 1)
        usage = th.cache.usage(rng, times[0], model, added, output)
        message_id, request_id = self._msg_id(), self._req_id()
        tokens = (usage[0], output, usage[1], usage[2], usage[3])
        if self.plan.old:
            response = self._old_line(th, model, message_id, blocks, tokens, calls, times[-1])
        else:
            response = self._lines(th, model, message_id, request_id, blocks, tokens, web, calls, times)
        tools = tuple(dict.fromkeys(c.name for c in calls))
        cost = response.line.get("costUSD")
        self.truth.add(
            Request(
                message_id,
                None if self.plan.old else request_id,
                _iso(times[0]),
                self.sid,
                self.project,
                model,
                "subagent" if th.sidechain else "main",
                tools,
                tokens,
                web,
                cost,
            )
        )
        self.now = times[-1]
        return response

    def _server_search(self, blocks: list[Json]) -> int:
        """Server-side web search: result blocks in the response and usage.server_tool_use."""
        rng = self.rng
        if not ((self.plan.showcase and not self.truth.traps["web_search"]) or rng.random() < 0.02):
            return 0
        searches = rng.randint(1, 3)
        for _ in range(searches):
            tool_id = "srvtoolu_01" + rng.b62(22)
            blocks.append(
                {
                    "type": "server_tool_use",
                    "id": tool_id,
                    "name": "web_search",
                    "input": {"query": self.pay.take(rng, self.pay.prose, 40).strip()},
                }
            )
            results = [
                {
                    "type": "web_search_result",
                    "title": self.pay.take(rng, self.pay.prose, 60),
                    "url": f"https://docs.example.com/{rng.choice(_WORDS)}/{rng.randint(1, 999)}",
                    "encrypted_content": self.pay.take(rng, self.pay.signatures, rng.randint(800, 4000)),
                    "page_age": None,
                }
                for _ in range(rng.randint(3, 8))
            ]
            blocks.append({"type": "web_search_tool_result", "tool_use_id": tool_id, "content": results})
        self.truth.traps["web_search"] += 1
        return searches

    def _block_times(self, n: int, *, split: bool) -> list[int]:
        rng = self.rng
        first = self.now + rng.randint(700, 9_000)
        if split:  # the showcase's first response: provisional line before midnight, final after
            midnight = (self.now // DAY_MS + 1) * DAY_MS
            self.split_done = True
            self.truth.traps["midnight_split"] += 1
            return [midnight - 150] + [midnight + 100 + 300 * i for i in range(n - 1)]
        times = [first]
        for _ in range(n - 1):
            times.append(times[-1] + rng.randint(30, 2_500))
        if times[0] // DAY_MS != times[-1] // DAY_MS:
            # Keep every response within one UTC day, so that "earliest copy" and "the copy kept"
            # date it alike (see generate()'s midnight_split).
            shift = (times[-1] // DAY_MS) * DAY_MS + rng.randint(20, 900) - times[0]
            times = [t + shift for t in times]
        return times

    def _usage(self, tokens: Tokens, web: int, *, provisional: bool) -> Json:
        inp, out, read, w5, w1h = tokens
        split = {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1h}
        if provisional:  # as Claude Code writes it: no server_tool_use, output_tokens 1
            u: Json = {"input_tokens": inp, "cache_creation_input_tokens": w5 + w1h, "cache_read_input_tokens": read}
            if self.plan.version.split:
                u["cache_creation"] = split
            u["output_tokens"] = 1
            u["service_tier"] = "standard"
            return u
        u = {
            "input_tokens": inp,
            "cache_creation_input_tokens": w5 + w1h,
            "cache_read_input_tokens": read,
            "output_tokens": out,
            "server_tool_use": {"web_search_requests": web, "web_fetch_requests": 0},
            "service_tier": "standard",
        }
        if self.plan.version.split:
            u["cache_creation"] = {"ephemeral_1h_input_tokens": w1h, "ephemeral_5m_input_tokens": w5}
            u.update(inference_geo="", iterations=[], speed="standard")
        return u

    def _lines(
        self,
        th: _Thread,
        model: str,
        message_id: str,
        request_id: str,
        blocks: list[Json],
        tokens: Tokens,
        web: int,
        calls: list[_Call],
        times: list[int],
    ) -> _Response:
        """Trap 1 (one line per content block, usage copied) and trap 2 (provisional early lines)."""
        rng = self.rng
        stop = "tool_use" if calls else "end_turn"
        final = self._usage(tokens, web, provisional=False)
        provisional = len(blocks) > 1 and (
            rng.random() < self.plan.version.provisional or times[0] // DAY_MS != times[-1] // DAY_MS
        )
        early = self._usage(tokens, web, provisional=True) if provisional else final
        line: Json = {}
        for i, (block, ts) in enumerate(zip(blocks, times, strict=True)):
            is_early = provisional and i < len(blocks) - 1
            message = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [block],
                "stop_reason": None if is_early else stop,
                "stop_sequence": None,
                "usage": early if is_early else final,
                "stop_details": None,
            }
            self.now = ts
            extra = {"attributionAgent": th.agent_type} if th.sidechain else {}
            line = self.emit(
                th,
                "provisional" if is_early else "assistant",
                {"message": message, "requestId": request_id, **extra, "type": "assistant"},
            )
        if not th.sidechain:
            self.replayable.append(line)
        text = next((b["text"] for b in blocks if b["type"] == "text"), "Done.")
        return _Response(line["uuid"], line, final, text)

    def _old_line(
        self, th: _Thread, model: str, message_id: str, blocks: list[Json], tokens: Tokens, calls: list[_Call], ts: int
    ) -> _Response:
        """Claude Code before 1.0.9: one line per response, top-level costUSD, no requestId."""
        inp, out, read, w5, _ = tokens
        rate = _OLD_PRICES.get(model, _OLD_PRICES[OLD_MODELS[0]])
        cost = round((inp * rate[0] + out * rate[1] + read * rate[2] + w5 * rate[3]) / 1e6, 8)
        usage = {
            "input_tokens": inp,
            "cache_creation_input_tokens": w5,
            "cache_read_input_tokens": read,
            "output_tokens": out,
            "service_tier": "standard",
        }
        message = {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": blocks,
            "stop_reason": "tool_use" if calls else "end_turn",
            "stop_sequence": None,
            "usage": usage,
        }
        self.now = ts
        line = self.emit(
            th,
            "old_format",
            {"type": "assistant", "message": message, "costUSD": cost, "durationMs": self.rng.randint(900, 60_000)},
        )
        text = next((b["text"] for b in blocks if b["type"] == "text"), "Done.")
        return _Response(line["uuid"], line, usage, text)

    # -- lines -----------------------------------------------------------------------------------

    def emit(self, th: _Thread, kind: str, body: Json, *, uuid_: str | None = None) -> Json:
        """A conversation line: chained by parentUuid, stamped with the session envelope."""
        line: Json = {"parentUuid": th.parent, "isSidechain": th.sidechain}
        if th.agent_id:
            line["agentId"] = th.agent_id
        line.update(body)
        line["uuid"] = uuid_ or self.rng.uuid()
        line["timestamp"] = _iso(self.now)
        line.update(self.env)
        th.parent = line["uuid"]
        th.lines.append((kind, orjson.dumps(line) + b"\n"))
        return line

    def emit_raw(self, kind: str, body: Json) -> None:
        self.lines.append((kind, orjson.dumps(body) + b"\n"))

    # -- tools -----------------------------------------------------------------------------------

    def _calls(self, th: _Thread) -> list[_Call]:
        rng = self.rng
        k = rng.choices((1, 2, 3), (70, 20, 10))[0]
        names = []
        for _ in range(k):
            if self.forced_tools and not th.sidechain:
                names.append(self.forced_tools.pop(0))
            else:
                names.append(rng.pick(SUBAGENT_TOOLS if th.sidechain else MAIN_TOOLS))
        if self.plan.old:
            names = ["Task" if n == "Agent" else n for n in names]
        return [self._call(name) for name in names]

    def _call(self, name: str) -> _Call:
        call = _Call(name, "toolu_01" + self.rng.b62(22), {})
        _TOOLS.get(name if not name.startswith("mcp__") else "mcp", _tool_mcp)(self, call)
        if isinstance(call.content, str):
            call.chars = len(call.content)
        else:
            call.chars = len(orjson.dumps(call.content))
        return call

    def _results(self, th: _Thread, calls: list[_Call], response: _Response) -> int:
        rng = self.rng
        added = 0
        for call in calls:
            if call.name in ("Agent", "Task"):
                self._run_subagent(call)
            self.now += rng.randint(15, 8_000 if call.name == "Bash" else 1_500)
            body: Json = {
                "promptId": th.prompt_id,
                "type": "user",
                "message": {
                    "role": "user",
                    "content": [{"tool_use_id": call.id, "type": "tool_result", "content": call.content}],
                },
            }
            kind = "tool_result"
            if call.result is not None and not th.sidechain:
                body["toolUseResult"] = call.result
                if call.name in ("Agent", "Task"):
                    kind = "agent_result"  # trap 5: toolUseResult.usage repeats the subagent's last request
            body["sourceToolAssistantUUID"] = response.uuid
            self.emit(th, kind, body)
            th.tool_uses += 1
            added += call.chars // 4
            if call.name in ("Edit", "Write", "MultiEdit"):
                self._track(call.input["file_path"])
        return added

    def _run_subagent(self, call: _Call) -> None:
        rng = self.rng
        agent_type = call.input.get("subagent_type", "general-purpose")
        agent_id = "a" + rng.hex(16)
        lines: list[tuple[str, bytes]] = self.lines if self.plan.old else []
        ttl = rng.choice(("5m", "1h")) if self.plan.version.split else "5m"
        th = _Thread(
            _Cache(ttl, rng.randint(8_000, 16_000)),
            lines,
            agent_id=None if self.plan.old else agent_id,
            agent_type=agent_type,
            prompt_id=self.main.prompt_id,
        )
        model = HAIKU if agent_type == "Explore" and not self.plan.old else self.model
        started = self.now
        self.now += rng.randint(20, 200)
        self.emit(
            th,
            "user",
            {"promptId": th.prompt_id, "type": "user", "message": {"role": "user", "content": call.input["prompt"]}},
        )
        n = rng.randint(2, 7)
        response: _Response | None = None
        added = len(call.input["prompt"]) // 4
        for r in range(n):
            calls = [] if r == n - 1 else self._calls(th)
            response = self._respond(th, model, calls, added)
            added = self._results(th, calls, response)
        assert response is not None
        self.truth.traps["subagent"] += 1
        if not self.plan.old:
            meta = {
                "agentType": agent_type,
                "description": call.input["description"],
                "toolUseId": call.id,
                "spawnDepth": 1,
            }
            self.subagents.append((agent_id, lines, meta))
        usage = response.usage
        total = sum(
            usage.get(k, 0)
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
        )
        duration = self.now - started
        call.content = [
            {"type": "text", "text": response.text},
            {
                "type": "text",
                "text": f"agentId: {agent_id} (use SendMessage with to: '{agent_id}', summary: "
                f"'<5-10 word recap>' to continue this agent)\n<usage>subagent_tokens: "
                f"{total}\ntool_uses: {th.tool_uses}\nduration_ms: {duration}</usage>",
            },
        ]
        call.result = {
            "status": "completed",
            "prompt": call.input["prompt"],
            "agentId": agent_id,
            "agentType": agent_type,
            "content": [{"type": "text", "text": response.text}],
            "resolvedModel": model,
            "totalDurationMs": duration,
            "totalTokens": total,
            "totalToolUseCount": th.tool_uses,
            "usage": usage,
            "toolStats": {
                "readCount": th.tool_uses,
                "searchCount": 0,
                "bashCount": 0,
                "editFileCount": 0,
                "linesAdded": 0,
                "linesRemoved": 0,
                "otherToolCount": 0,
            },
        }
        call.chars = len(response.text) + 200


_CONVERSATION = frozenset(
    {
        "user",
        "assistant",
        "provisional",
        "attachment",
        "system",
        "tool_result",
        "agent_result",
        "compact_summary",
        "synthetic",
        "old_format",
    }
)


# ---------------------------------------------------------------------------------------------
# Tool calls: each fills the tool_use input, the tool_result content and the toolUseResult.


def _path(s: _Session, f: _SourceFile) -> str:
    return f"{s.plan.cwd}/{f.path}"


def _tool_read(s: _Session, c: _Call) -> None:
    f = s.rng.choice(s.pay.files)
    c.input = {"file_path": _path(s, f)}
    c.content = f.numbered
    c.result = {
        "type": "text",
        "file": {
            "filePath": _path(s, f),
            "content": f.text,
            "numLines": f.lines,
            "startLine": 1,
            "totalLines": f.lines,
        },
    }


def _tool_edit(s: _Session, c: _Call) -> None:
    rng, f = s.rng, s.rng.choice(s.pay.files)
    old = s.pay.take(rng, f.text, rng.randint(20, 400))
    new = old + "\n" + s.pay.take(rng, s.pay.files[1].text, rng.randint(20, 600))
    c.input = {"file_path": _path(s, f), "old_string": old, "new_string": new, "replace_all": False}
    c.content = f"The file {_path(s, f)} has been updated successfully."
    patch = [
        {
            "oldStart": 10,
            "oldLines": old.count("\n") + 1,
            "newStart": 10,
            "newLines": new.count("\n") + 1,
            "lines": ["-" + x for x in old.split("\n")] + ["+" + x for x in new.split("\n")],
        }
    ]
    c.result = {
        "filePath": _path(s, f),
        "oldString": old,
        "newString": new,
        "originalFile": f.text,
        "structuredPatch": patch,
        "userModified": False,
        "replaceAll": False,
    }


def _tool_multiedit(s: _Session, c: _Call) -> None:
    rng, f = s.rng, s.rng.choice(s.pay.files)
    edits = [
        {"old_string": s.pay.take(rng, f.text, 60), "new_string": s.pay.take(rng, f.text, 90)}
        for _ in range(rng.randint(2, 5))
    ]
    c.input = {"file_path": _path(s, f), "edits": edits}
    c.content = f"Applied {len(edits)} edits to {_path(s, f)}"
    c.result = {
        "filePath": _path(s, f),
        "edits": edits,
        "originalFileContents": f.text,
        "structuredPatch": [],
        "userModified": False,
    }


def _tool_write(s: _Session, c: _Call) -> None:
    f = s.rng.choice(s.pay.files)
    c.input = {"file_path": _path(s, f), "content": f.text}
    c.content = f"File created successfully at: {_path(s, f)}"
    c.result = {
        "type": "create",
        "filePath": _path(s, f),
        "content": f.text,
        "structuredPatch": [],
        "originalFile": None,
    }


def _tool_bash(s: _Session, c: _Call) -> None:
    rng = s.rng
    out = s.pay.take(rng, s.pay.log, rng.size(3000, 1.3, 0, 120_000))
    c.input = {
        "command": rng.choice(("pytest -q", "npm test", "go test ./...", "make lint", "git diff --stat")),
        "description": "Run the checks",
    }
    c.content = out
    c.result = {"stdout": out, "stderr": "", "interrupted": False, "isImage": False}


def _tool_grep(s: _Session, c: _Call) -> None:
    rng = s.rng
    files = [_path(s, f) for f in rng.sample(s.pay.files, k=rng.randint(1, 40))]
    c.input = {"pattern": rng.choice(_WORDS), "path": s.plan.cwd, "output_mode": "files_with_matches"}
    if rng.random() < 0.5:
        c.input["output_mode"] = "content"
        text = s.pay.take(rng, s.pay.files[2].numbered, rng.size(4000, 1.0, 50, 60_000))
        c.content = text
        c.result = {
            "mode": "content",
            "numFiles": len(files),
            "filenames": [],
            "content": text,
            "numLines": text.count("\n"),
        }
    else:
        c.content = f"Found {len(files)} files\n" + "\n".join(files)
        c.result = {"mode": "files_with_matches", "filenames": files, "numFiles": len(files)}


def _tool_glob(s: _Session, c: _Call) -> None:
    files = [_path(s, f) for f in s.rng.sample(s.pay.files, k=s.rng.randint(1, 100))]
    c.input = {"pattern": "**/*" + s.rng.choice((".py", ".ts", ".go", ".md"))}
    c.content = "\n".join(files)
    c.result = {"filenames": files, "durationMs": s.rng.randint(2, 400), "numFiles": len(files), "truncated": False}


def _tool_ls(s: _Session, c: _Call) -> None:
    c.input = {"path": s.plan.cwd}
    c.content = "\n".join(f"  - {f.path}" for f in s.rng.sample(s.pay.files, k=30))


def _tool_webfetch(s: _Session, c: _Call) -> None:
    rng = s.rng
    text = s.pay.take(rng, s.pay.prose, rng.size(6000, 0.8, 200, 80_000))
    url = f"https://docs.example.com/{rng.choice(_WORDS)}"
    c.input = {"url": url, "prompt": "Summarise the API"}
    c.content = text
    c.result = {
        "bytes": len(text) * 3,
        "code": 200,
        "codeText": "OK",
        "result": text,
        "durationMs": rng.randint(300, 9000),
        "url": url,
    }


def _tool_websearch(s: _Session, c: _Call) -> None:
    rng = s.rng
    query = s.pay.take(rng, s.pay.prose, 50).strip()
    links = [
        {"title": s.pay.take(rng, s.pay.prose, 50), "url": f"https://example.org/{rng.randint(1, 10**6)}"}
        for _ in range(8)
    ]
    text = s.pay.take(rng, s.pay.prose, rng.randint(1000, 6000))
    c.input = {"query": query}
    c.content = f'Web search results for query: "{query}"\n\nLinks: {orjson.dumps(links).decode()}\n\n{text}'
    c.result = {
        "query": query,
        "results": [{"tool_use_id": "srvtoolu_01" + rng.b62(22), "content": links}, text],
        "durationSeconds": rng.randint(2, 12) + 0.5,
    }


def _tool_todo(s: _Session, c: _Call) -> None:
    todos = [
        {
            "content": s.pay.take(s.rng, s.pay.prose, 60),
            "status": s.rng.choice(("pending", "in_progress", "completed")),
            "activeForm": s.pay.take(s.rng, s.pay.prose, 40),
        }
        for _ in range(s.rng.randint(2, 8))
    ]
    c.input = {"todos": todos}
    c.content = (
        "Todos have been modified successfully. Ensure that you continue to use the todo list to track your progress."
    )
    c.result = {"oldTodos": todos[1:], "newTodos": todos}


def _tool_agent(s: _Session, c: _Call) -> None:
    kind = s.rng.choice(("general-purpose", "Explore", "Plan"))
    c.input = {
        "description": "Investigate " + s.rng.choice(_WORDS),
        "prompt": s.pay.take(s.rng, s.pay.prose, s.rng.randint(200, 2000)),
        "subagent_type": kind,
    }


def _tool_skill(s: _Session, c: _Call) -> None:
    c.input = {"skill": "code-review", "args": "--fix"}
    c.content = "Launching skill: code-review"
    c.result = {"success": True, "commandName": "code-review"}


def _tool_mcp(s: _Session, c: _Call) -> None:
    if c.name.endswith("create_issue"):
        c.input = {
            "owner": "acme",
            "repo": s.project,
            "title": s.pay.take(s.rng, s.pay.prose, 60),
            "body": s.pay.take(s.rng, s.pay.prose, 1200),
        }
        text = orjson.dumps({"number": s.rng.randint(1, 9000), "state": "open", **c.input}).decode()
    else:
        f = s.rng.choice(s.pay.files)
        c.input = {"owner": "acme", "repo": s.project, "path": f.path}
        text = f.text
    c.content = [{"type": "text", "text": text}]
    c.result = {"content": c.content}  # MCP results echo their content


_TOOLS: dict[str, Callable[[_Session, _Call], None]] = {
    "Read": _tool_read,
    "Edit": _tool_edit,
    "MultiEdit": _tool_multiedit,
    "Write": _tool_write,
    "Bash": _tool_bash,
    "Grep": _tool_grep,
    "Glob": _tool_glob,
    "LS": _tool_ls,
    "WebFetch": _tool_webfetch,
    "WebSearch": _tool_websearch,
    "TodoWrite": _tool_todo,
    "Agent": _tool_agent,
    "Task": _tool_agent,
    "Skill": _tool_skill,
    "mcp": _tool_mcp,
}
