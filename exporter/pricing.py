"""Prices one request from its token counts: a config override if one matches, else the rates bundled
in the pinned `genai-prices` package (read offline, never updated from the network). An unknown
model gets no price (None), never a guessed one; money stays an exact Decimal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from decimal import Decimal
from fnmatch import fnmatchcase
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exporter.events import Tokens

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice, Provider

SOURCE = "genai-prices"
PROVIDER = "anthropic"
# Bump when the arithmetic below changes, so the ledger's stored fingerprint goes stale and it reprices.
_FORMULA = "2"
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens for each token type, and per thousand web searches."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    web_search_per_1k: Decimal = Decimal(10)

    # The rates as integers of 10**-_places USD per million tokens, so the hot path adds ints
    # (several times faster than Decimal) and never rounds below 28 significant digits.
    _scaled: tuple[int, ...] = field(init=False, repr=False, compare=False)
    _places: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rates = (self.input, self.output, self.cache_read, self.cache_write_5m, self.cache_write_1h)
        every = (*rates, self.web_search_per_1k)
        if not all(isinstance(r, Decimal) and r.is_finite() and r >= 0 for r in every):
            raise ValueError(f"rates must be finite non-negative Decimals: {every}")
        places = max(0, *(-int(r.as_tuple().exponent) for r in every))
        scaled = [int(r.scaleb(places)) for r in rates]
        scaled.append(int(self.web_search_per_1k.scaleb(places + 3)))  # per 1,000 -> per 1,000,000
        object.__setattr__(self, "_scaled", tuple(scaled))
        object.__setattr__(self, "_places", places)

    def cost(self, tokens: Tokens, web_search_requests: int) -> Decimal:
        i, o, r, w5, w1, ws = self._scaled
        units = (
            tokens.input * i
            + tokens.output * o
            + tokens.cache_read * r
            + tokens.cache_write_5m * w5
            + tokens.cache_write_1h * w1
            + web_search_requests * ws
        )
        return Decimal(units).scaleb(-6 - self._places)


@dataclass(frozen=True, slots=True)
class Quote:
    """The rates in force for a model, where they come from, and its long-context tier if it has one.

    Above `long_context_threshold` total input (uncached + cache reads + cache writes) Anthropic
    bills the *whole* request, output included, at the `long_context` rates.
    """

    model: str  # the genai-prices model id, or the override's pattern
    name: str
    rates: Rates
    source: str  # "override: <pattern>" or "genai-prices <version>"
    long_context_threshold: int | None = None
    long_context: Rates | None = None

    def cost(self, tokens: Tokens, web_search_requests: int = 0) -> Decimal:
        rates = self.rates
        if self.long_context is not None and tokens.context > (self.long_context_threshold or 0):
            rates = self.long_context
        return rates.cost(tokens, web_search_requests)


@dataclass(frozen=True, slots=True)
class Override:
    """A config override: per-MTok USD rates for every model matching a glob, at every speed."""

    model: str  # glob, e.g. "claude-opus-4-8*"; matched case-insensitively
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    long_context_threshold: int | None = None
    long_context: Rates | None = None
    web_search_per_1k: Decimal = Decimal(10)

    def __post_init__(self) -> None:
        if (self.long_context_threshold is None) != (self.long_context is None):
            raise ValueError(f"override {self.model!r}: long_context and its threshold go together")

    def matches(self, model: str) -> bool:
        return fnmatchcase(model.lower(), self.model.lower())

    def quote(self) -> Quote:
        rates = Rates(
            self.input,
            self.output,
            self.cache_read,
            self.cache_write_5m,
            self.cache_write_1h,
            self.web_search_per_1k,
        )
        return Quote(
            self.model,
            self.model,
            rates,
            f"override: {self.model}",
            self.long_context_threshold,
            self.long_context,
        )


# Prices in force from a date on, oldest first; the first entry starts at _EPOCH.
_Timeline = tuple[tuple[date, Quote], ...]


class Pricer:
    """Looks a model up once per (model, speed) and prices every later request from the cached quote."""

    def __init__(self, overrides: Sequence[Override] = ()) -> None:
        self._overrides = tuple(overrides)
        self._timelines: dict[tuple[str, str], _Timeline | None] = {}
        self._provider: Provider | None = None

    @property
    def source(self) -> str:
        return SOURCE

    @cached_property
    def version(self) -> str:
        # Read from the dist-info folder's name: importing the package costs ~340 ms and
        # importlib.metadata ~40 ms, and every warm report checks this fingerprint.
        from importlib.util import find_spec

        spec = find_spec("genai_prices")
        if spec and spec.origin:
            site = Path(spec.origin).parent.parent
            for info in site.glob("genai_prices-*.dist-info"):
                return info.name.removeprefix("genai_prices-").removesuffix(".dist-info")
        from importlib.metadata import version

        return version("genai-prices")

    @cached_property
    def fingerprint(self) -> str:
        data = "\n".join([_FORMULA, f"{SOURCE} {self.version}", *map(repr, self._overrides)])
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def price(
        self,
        model: str,
        tokens: Tokens,
        web_search_requests: int = 0,
        speed: str = "standard",
        at: datetime | None = None,
    ) -> Decimal | None:
        """USD for one request, or None for an unknown model.

        `at` is when the request was made (None: the newest rates); it matters only for the few
        models whose bundled prices changed on a date (Opus 4.6 and Sonnet 4.6 lost their
        long-context tier on 2026-03-13).
        """
        quote = self.describe(model, speed, at)
        return None if quote is None else quote.cost(tokens, web_search_requests)

    def describe(self, model: str, speed: str = "standard", at: datetime | None = None) -> Quote | None:
        key = (model, speed)
        try:
            timeline = self._timelines[key]
        except KeyError:
            timeline = self._timelines[key] = self._lookup(model, speed)
        if timeline is None:
            return None
        if at is None or len(timeline) == 1:
            return timeline[-1][1]
        day = (at.astimezone(UTC) if at.tzinfo else at).date()  # naive means UTC, as in genai-prices
        # Before the first dated price, the oldest one applies, as genai-prices does it.
        return next((quote for since, quote in reversed(timeline) if since <= day), timeline[0][1])

    def remembered(self) -> dict[str, Any]:
        """The look-ups made so far as JSON data: a later process given them by `remember` prices
        the same models without loading the price data (~0.3 s), e.g. on an incremental report."""
        return {
            f"{model}\t{speed}": None if t is None else [[since.isoformat(), _quote_json(q)] for since, q in t]
            for (model, speed), t in self._timelines.items()
        }

    def remember(self, lookups: dict[str, Any]) -> None:
        for key, t in lookups.items():
            model, _, speed = key.partition("\t")
            self._timelines[(model, speed)] = (
                None if t is None else tuple((date.fromisoformat(since), _quote_from(q)) for since, q in t)
            )

    def known_models(self) -> list[Quote]:
        """Overrides first (they win), then every Anthropic model in the bundled data, at its newest rates."""
        quotes = [override.quote() for override in self._overrides]
        for info in self._anthropic().models:
            timeline = self._timeline(info, "standard")
            if timeline is not None:
                quotes.append(timeline[-1][1])
        return quotes

    def _lookup(self, model: str, speed: str) -> _Timeline | None:
        for override in self._overrides:
            if override.matches(model):
                return ((_EPOCH, override.quote()),)
        info = self._anthropic().find_model(model)
        return None if info is None else self._timeline(info, speed)

    def _anthropic(self) -> Provider:
        if self._provider is None:
            # The bundled list itself, not genai_prices.calc_price's snapshot, which UpdatePrices can
            # swap for prices fetched from the network.
            from genai_prices.data import providers

            self._provider = next(p for p in providers if p.id == PROVIDER)
        return self._provider

    def _timeline(self, info: ModelInfo, speed: str) -> _Timeline | None:
        # genai-prices keys premium speeds as a price variant {"speed": "fast"}; a model without one
        # (Opus 4.6 in 0.2.3) gets its standard rates back, so fast mode there is priced as standard.
        context = None if speed == "standard" else {"speed": speed}
        starts = {_EPOCH} | _price_change_dates(info)
        timeline: list[tuple[date, Quote]] = []
        for since in sorted(starts):
            quote = _quote(info, info.get_prices(datetime.combine(since, time(), UTC), context), self.version)
            if quote is None:
                return None
            if quote.long_context is None and info.id in _MISSING_TIERS:
                threshold, tier = _MISSING_TIERS[info.id]
                quote = replace(quote, long_context_threshold=threshold, long_context=tier,
                                source=f"{quote.source} + Anthropic's long-context list price")  # fmt: skip
            if not timeline or timeline[-1][1] != quote:
                timeline.append((since, quote))
        return tuple(timeline)


# Long-context tiers the bundled data lacks, at Anthropic's list prices (genai-prices 0.2.3 has none for
# Sonnet 4.0). A request above the threshold exists only with the 1 M-context beta, so the base rates
# would always be wrong for it.
_MISSING_TIERS = {
    "claude-sonnet-4-0": (200_000, Rates(*map(Decimal, ("6", "22.5", "0.6", "7.5", "12", "10")))),
}

_RATE_FIELDS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "web_search_per_1k")


def _quote_json(q: Quote) -> dict[str, Any]:
    def rates(r: Rates | None) -> list[str] | None:
        return None if r is None else [str(getattr(r, f)) for f in _RATE_FIELDS]

    return {"model": q.model, "name": q.name, "source": q.source, "rates": rates(q.rates),
            "threshold": q.long_context_threshold, "long_context": rates(q.long_context)}  # fmt: skip


def _quote_from(data: dict[str, Any]) -> Quote:
    def rates(values: list[str] | None) -> Rates | None:
        return None if values is None else Rates(*map(Decimal, values))

    base = rates(data["rates"])
    assert base is not None
    return Quote(data["model"], data["name"], base, data["source"], data["threshold"], rates(data["long_context"]))


def _price_change_dates(info: ModelInfo) -> set[date]:
    from genai_prices.types import StartDateConstraint

    # Time-of-day constraints (off-peak rates) are not followed; no Anthropic model has one.
    constraints = [c.constraint for c in info.prices] if isinstance(info.prices, list) else []
    constraints += [v.constraint for v in info.price_variants or ()]
    return {c.start_date for c in constraints if isinstance(c, StartDateConstraint)}


# Our field -> genai-prices price key. Its `cache_write_mtok` is the 5-minute write: Anthropic's
# default TTL, which its usage extractor maps cache_creation_input_tokens to.
_PRICE_KEYS = {
    "input": "input_mtok",
    "output": "output_mtok",
    "cache_read": "cache_read_mtok",
    "cache_write_5m": "cache_write_mtok",
    "cache_write_1h": "cache_write_1h_mtok",
    "web_search_per_1k": "web_searches_kcount",
}


def _quote(info: ModelInfo, prices: ModelPrice, version: str) -> Quote | None:
    """Our flat view of a genai-prices price set, or None for a shape it cannot say exactly."""
    from genai_prices.types import TieredPrices

    if {k for k, v in vars(prices).items() if v is not None} - set(_PRICE_KEYS.values()):
        return None  # e.g. a per-request fee: unpriced is better than mispriced
    raw = {name: getattr(prices, key) for name, key in _PRICE_KEYS.items()}
    tiered = {name: p for name, p in raw.items() if isinstance(p, TieredPrices)}
    starts = {tier.start for p in tiered.values() for tier in p.tiers}
    if len(starts) > 1 or any(len(p.tiers) != 1 for p in tiered.values()):
        return None  # several thresholds: Quote models one long-context tier
    base = _rates({n: p.base if isinstance(p, TieredPrices) else p for n, p in raw.items()})
    source = f"{SOURCE} {version}"
    if not starts:
        return Quote(info.id, info.name or info.id, base, source)
    long_context = _rates({n: p.tiers[0].price if isinstance(p, TieredPrices) else p for n, p in raw.items()})
    return Quote(info.id, info.name or info.id, base, source, starts.pop(), long_context)


def _rates(prices: dict[str, Decimal | None]) -> Rates:
    # A missing rate is billed the way genai-prices bills it: the tokens stay in the broader
    # bucket (1 h write -> 5 m write -> input; cache read -> input), and a missing web search or
    # output rate costs nothing.
    input_ = prices["input"] or Decimal(0)
    write_5m = _first(prices["cache_write_5m"], input_)
    return Rates(
        input=input_,
        output=prices["output"] or Decimal(0),
        cache_read=_first(prices["cache_read"], input_),
        cache_write_5m=write_5m,
        cache_write_1h=_first(prices["cache_write_1h"], write_5m),
        web_search_per_1k=prices["web_search_per_1k"] or Decimal(0),
    )


def _first(value: Decimal | None, fallback: Decimal) -> Decimal:
    return fallback if value is None else value
