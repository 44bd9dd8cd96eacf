"""Wiring: settings → ledger, pricer, classifier; the one-shot ingest every command starts with."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import orjson

from exporter.events import Request, Source
from exporter.ledger.ingest import IngestResult, Progress, ingest
from exporter.ledger.store import Ledger
from exporter.pricing.prices import Override, Pricer, Rates
from exporter.reports.budgets import BudgetSpec
from exporter.reports.periods import WEEKDAYS

if TYPE_CHECKING:
    from concurrent.futures import Future

    from exporter.classify.rules import Classifier
    from exporter.config import Budget as BudgetSettings
    from exporter.config import PriceOverride, Settings


@dataclass(frozen=True)
class Setup:
    """What ingest and reports need. Built from the full settings, or, when there is no config file
    or environment at all, straight from flags and defaults (pydantic costs a warm report ~0.1 s).
    """

    state_dir: Path
    roots: tuple[Path, ...]
    timezone: str
    pricing_mode: str = "auto"
    overrides: tuple[Override, ...] = ()
    tools: Mapping[str, str] = field(default_factory=dict)  # tool (or glob) -> interaction
    categories: Mapping[str, str] = field(default_factory=dict)  # interaction -> category
    budgets: tuple[BudgetSpec, ...] = ()
    week_start: int = 0  # budgets' weeks: 0 Monday … 6 Sunday

    @classmethod
    def from_settings(cls, s: Settings, env: Mapping[str, str]) -> Setup:
        from exporter.config import claude_roots

        return cls(
            state_dir=Path(s.state_dir),
            roots=claude_roots(s, env),
            timezone=s.timezone,
            pricing_mode=s.pricing.mode,
            overrides=tuple(override(o) for o in s.pricing.overrides),
            tools=s.classify.tools,
            categories=s.classify.categories,
            budgets=tuple(budget(b) for b in s.budgets),
            week_start=WEEKDAYS.index(s.week_start),
        )

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


@dataclass
class Pipeline:
    core: Setup
    # "fork" starts parse workers in milliseconds; a process with threads (the daemon) must not fork.
    start_method: str = "fork"
    _finishing: Future[None] | None = field(default=None, init=False, repr=False)

    @cached_property
    def ledger(self) -> Ledger:
        return Ledger(self.core.state_dir)

    @cached_property
    def pricer(self) -> Pricer:
        return Pricer(self.core.overrides)

    @cached_property
    def classifier(self) -> Classifier:
        from exporter.classify.rules import Classifier

        return Classifier(self.core.tools, self.core.categories)

    @property
    def fingerprint(self) -> str:
        """Changes whenever stored costs or labels would come out differently."""
        c = self.core
        return f"{self.pricer.fingerprint} {sorted(c.tools.items())} {sorted(c.categories.items())}"

    def enrich(self, r: Request) -> Request:
        """Prices and classifies a merged request; labels derive from the merge, never one copy."""
        interaction, category = self.classifier.classify(r.agent, r.tools, r.compaction, r.web_search)
        quote = self.pricer.quote_at(r.model, r.speed, r.ts)
        # The uncached cost: the same context, so the same long-context tier, with nothing read from or
        # written to the cache.
        cost, uncached = (None, None) if quote is None else quote.nanos_and_uncached(r.tokens, r.web_search)
        if r.source == Source.OTLP and r.reported_cost is not None:
            # Claude Code's own price: its event has no cache TTL split to price the tokens from. A model
            # with no rates here claims no saving rather than its whole cost as a loss.
            cost, uncached = r.reported_cost, r.reported_cost if uncached is None else uncached
        return Request(*r[:-4], interaction, category, cost, uncached)  # the last four fields

    def __getstate__(self) -> dict[str, Any]:
        return {"core": self.core}  # for parse workers: the ledger stays in this process

    def refresh(
        self,
        progress: Progress | None = None,
        stop: Callable[[], bool] | None = None,
        now_ms: int | None = None,
        share: int | None = None,
        beside: bool = False,
    ) -> IngestResult:
        """Brings the ledger up to date with the transcripts, and with price or rule changes; then
        closes the prompts that are over (`now_ms`, default the clock, decides which are idle, and which
        files have stopped growing).
        `share` bounds what one file with new bytes may add to the pass while others have new bytes too.
        `beside`: after a first ingest of a large backlog, building its indexes and closing its prompts
        run on another connection in a thread (`finishing`), while the caller reads the requests (they
        change neither); `finished` waits for them. A caller that writes must call `finished` first."""
        self.ledger.reprice(self.fingerprint, self.enrich)
        # Price look-ups are kept in the ledger: a later run prices the same models without loading
        # the price data (~0.3 s), which is most of an incremental report's work.
        saved = orjson.loads(self.ledger.meta("prices") or "{}")
        if saved.get("fingerprint") == self.fingerprint:
            self.remember(saved["lookups"])
        result = ingest(
            self.ledger,
            list(self.core.roots),
            self,
            progress,
            stop=stop,
            start_method=self.start_method,
            share=share,
            now_ns=None if now_ms is None else now_ms * 1_000_000,
            later=beside,
        )
        now = int(time.time() * 1000) if now_ms is None else now_ms
        lookups = self.remembered()
        prices = None
        if lookups != saved.get("lookups"):
            prices = orjson.dumps({"fingerprint": self.fingerprint, "lookups": lookups}).decode()
        if result.deferred:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(1, thread_name_prefix="ledger-finish")
            self._finishing = pool.submit(_finish_apart, self.core.state_dir, now, prices)
            pool.shutdown(wait=False)  # its thread ends with this task; the interpreter waits for it at exit
        else:
            _finish(self.ledger, now, prices)
        return result

    @property
    def finishing(self) -> bool:
        return self._finishing is not None

    def finished(self) -> None:
        """Waits for what `refresh(beside=True)` left running, and raises what it raised."""
        finishing, self._finishing = self._finishing, None
        if finishing is not None:
            finishing.result()

    def remembered(self) -> dict[str, Any]:
        return self.pricer.remembered()

    def remember(self, lookups: dict[str, Any]) -> None:
        self.pricer.remember(lookups)


def _finish(ledger: Ledger, now_ms: int, prices: str | None) -> None:
    """What follows an ingest: the deferred indexes, the prompts that are over, the price look-ups."""
    ledger.build_indexes()
    ledger.close_prompts(now_ms)
    if prices is not None:
        ledger.set_meta("prices", prices)


def _finish_apart(state_dir: Path, now_ms: int, prices: str | None) -> None:
    """`_finish` on a connection of its own (a thread's: SQLite connections stay with their thread)."""
    ledger = Ledger(state_dir)
    try:
        _finish(ledger, now_ms, prices)
    finally:
        ledger.close()


def budget(b: BudgetSettings) -> BudgetSpec:
    return BudgetSpec(b.name, b.window, b.limit_usd, tuple((k, v) for k, v in b.filter if v is not None))


def override(o: PriceOverride) -> Override:
    tier = o.long_context
    return Override(
        o.model,
        o.input,
        o.output,
        o.cache_read,
        o.cache_write_5m,
        o.cache_write_1h,
        long_context_threshold=tier.threshold if tier else None,
        long_context=Rates(tier.input, tier.output, tier.cache_read, tier.cache_write_5m, tier.cache_write_1h)
        if tier
        else None,
        fast_multiplier=o.fast_multiplier,
    )
