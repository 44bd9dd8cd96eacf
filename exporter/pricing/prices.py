"""Prices one request from its token counts: a config override if one matches, else the rates bundled
in the pinned `genai-prices` package (read offline, never updated from the network). An unknown
model gets no price (None), never a guessed one; money stays an exact Decimal.

Fast mode (`speed: "fast"`) is priced from genai-prices' fast variant where it has one, else from
Anthropic's published multiplier in `fast_prices.toml`; with neither, the request is unpriced.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fnmatch import fnmatchcase
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from exporter.events import Tokens

if TYPE_CHECKING:
    from genai_prices.types import ModelInfo, ModelPrice, Provider

PRICE_DATA = "genai-prices"  # where prices come from, unless a config override matches
PROVIDER = "anthropic"
# Bump when the arithmetic below changes, so the ledger's stored fingerprint goes stale and it reprices.
_FORMULA = "3"  # 3: fast mode priced at its own rates, or not at all
_EPOCH = date(1970, 1, 1)
_DAY_MS = 86_400_000
STANDARD, FAST = "standard", "fast"


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

    def times(self, factor: Decimal) -> Rates:
        """Every token rate times `factor`; web search keeps its price (fast mode speeds up tokens only)."""
        return Rates(
            _plain(self.input * factor),
            _plain(self.output * factor),
            _plain(self.cache_read * factor),
            _plain(self.cache_write_5m * factor),
            _plain(self.cache_write_1h * factor),
            self.web_search_per_1k,
        )

    def cost(self, tokens: Tokens, web_search_requests: int) -> Decimal:
        return Decimal(self._units(tokens, web_search_requests)).scaleb(-6 - self._places)

    def _units(self, tokens: Tokens, web_search_requests: int) -> int:
        i, o, r, w5, w1, ws = self._scaled
        return (
            tokens.input * i
            + tokens.output * o
            + tokens.cache_read * r
            + tokens.cache_write_5m * w5
            + tokens.cache_write_1h * w1
            + web_search_requests * ws
        )

    def nanos(self, tokens: Tokens, web_search_requests: int) -> int:
        """`cost` in nano-USD rounded half to even, as `events.to_nanos` rounds it, in integers only."""
        return self._nanos(self._units(tokens, web_search_requests))

    def nanos_and_uncached(self, tokens: Tokens, web_search_requests: int) -> tuple[int, int]:
        """`nanos` of the request and of its `Tokens.uncached` form (every cached token as uncached input),
        in one pass: what pricing every request asks for."""
        i, o, r, w5, w1, ws = self._scaled
        ti, to, tr, t5, t1 = tokens
        rest = to * o + web_search_requests * ws
        return self._nanos(ti * i + tr * r + t5 * w5 + t1 * w1 + rest), self._nanos((ti + tr + t5 + t1) * i + rest)

    def _nanos(self, units: int) -> int:
        shift = 3 - self._places  # units are 10**-(6 + places) USD; a nano-USD is 10**-9
        step: int = 10 ** abs(shift)
        if shift >= 0:
            return units * step
        if units >= _EXACT:  # beyond Decimal's 28 digits its rounding decides: ask it
            return int((Decimal(units).scaleb(-6 - self._places) * _NANOS).to_integral_value(ROUND_HALF_EVEN))
        whole, rest = divmod(units, step)
        return whole + (2 * rest > step or (2 * rest == step and whole % 2 == 1))


_NANOS = Decimal(1_000_000_000)
_EXACT = 10**18  # below this, units × 10**9 fits Decimal's 28 digits: the integer arithmetic is the same


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

    def times(self, factor: Decimal, source: str) -> Quote:
        long_context = None if self.long_context is None else self.long_context.times(factor)
        return replace(self, rates=self.rates.times(factor), source=source, long_context=long_context)

    def cost(self, tokens: Tokens, web_search_requests: int = 0) -> Decimal:
        return self._rates_for(tokens).cost(tokens, web_search_requests)

    def nanos_and_uncached(self, tokens: Tokens, web_search_requests: int = 0) -> tuple[int, int]:
        """`Rates.nanos_and_uncached` at the request's tier: its uncached form has the same context, so the same."""
        return self._rates_for(tokens).nanos_and_uncached(tokens, web_search_requests)

    def _rates_for(self, tokens: Tokens) -> Rates:
        """The long-context rates past their threshold, else the base ones."""
        if self.long_context is not None and tokens.context > (self.long_context_threshold or 0):
            return self.long_context
        return self.rates


@dataclass(frozen=True, slots=True)
class Override:
    """A config override: per-MTok USD rates for every model matching a glob.

    It prices standard requests; fast ones at its rates times `fast_multiplier`, and without one they are
    unpriced: an override says the bundled prices are wrong for these models, fast ones included.
    """

    model: str  # glob, e.g. "claude-opus-4-8*"; matched case-insensitively
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    long_context_threshold: int | None = None
    long_context: Rates | None = None
    web_search_per_1k: Decimal = Decimal(10)
    fast_multiplier: Decimal | None = None

    def __post_init__(self) -> None:
        if (self.long_context_threshold is None) != (self.long_context is None):
            raise ValueError(f"override {self.model!r}: long_context and its threshold go together")
        if self.fast_multiplier is not None and not (self.fast_multiplier.is_finite() and self.fast_multiplier > 0):
            raise ValueError(f"override {self.model!r}: fast_multiplier must be a positive number")

    def matches(self, model: str) -> bool:
        return fnmatchcase(model.lower(), self.model.lower())

    def quote(self, speed: str = STANDARD) -> Quote | None:
        """The override's quote at `speed`, or None where it gives no price for that speed."""
        standard = self._standard()
        if speed == STANDARD:
            return standard
        if speed == FAST and self.fast_multiplier is not None:
            return standard.times(self.fast_multiplier, f"{standard.source} × {self.fast_multiplier} fast mode")
        return None

    def _standard(self) -> Quote:
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
        return PRICE_DATA

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
        # The fast-mode table is price data too: editing it must reprice the ledger.
        data = "\n".join([_FORMULA, f"{PRICE_DATA} {self.version}", _fast_text(), *map(repr, self._overrides)])
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def price(
        self,
        model: str,
        tokens: Tokens,
        web_search_requests: int = 0,
        speed: str = STANDARD,
        at: datetime | None = None,
    ) -> Decimal | None:
        """USD for one request, or None for an unknown model (or a speed with no known price for it).

        `at` is when the request was made (None: the newest rates); it matters only for the few
        models whose bundled prices changed on a date (Opus 4.6 and Sonnet 4.6 lost their
        long-context tier on 2026-03-13).
        """
        quote = self.describe(model, speed, at)
        return None if quote is None else quote.cost(tokens, web_search_requests)

    def describe(self, model: str, speed: str = STANDARD, at: datetime | None = None) -> Quote | None:
        timeline = self._timeline_of(model, speed)
        if timeline is None or at is None or len(timeline) == 1:
            return None if timeline is None else timeline[-1][1]
        return _on((at.astimezone(UTC) if at.tzinfo else at).date(), timeline)  # naive means UTC, as in genai-prices

    def quote_at(self, model: str, speed: str, ts_ms: int) -> Quote | None:
        """`describe` at a time in epoch milliseconds: the hot path of pricing every request."""
        timeline = self._timeline_of(model, speed)
        if timeline is None or len(timeline) == 1:
            return None if timeline is None else timeline[-1][1]
        return _on(_EPOCH + timedelta(days=ts_ms // _DAY_MS), timeline)

    def _timeline_of(self, model: str, speed: str) -> _Timeline | None:
        key = (model, speed)
        try:
            return self._timelines[key]
        except KeyError:
            timeline = self._timelines[key] = self._lookup(model, speed)
            return timeline

    def remembered(self) -> dict[str, Any]:
        """The look-ups made so far as JSON data: a later process given them by `remember` prices
        the same models without loading the price data (~0.3 s), e.g. on an incremental report."""
        return {f"{model}\t{speed}": _timeline_json(t) for (model, speed), t in self._timelines.items()}

    def remember(self, lookups: dict[str, Any]) -> None:
        for key, t in lookups.items():
            model, _, speed = key.partition("\t")
            self._timelines[(model, speed)] = _timeline_from(t)

    def known_models(self) -> list[Quote]:
        """Overrides first (they win), then every Anthropic model in the bundled data, at its newest rates."""
        return [standard for standard, _ in self.price_list()]

    def price_list(self) -> list[tuple[Quote, Quote | None]]:
        """As `known_models`, each with its fast-mode quote (None where fast mode has no known price)."""
        pairs: list[tuple[Quote, Quote | None]] = []
        for override in self._overrides:
            standard = override.quote()
            assert standard is not None
            pairs.append((standard, override.quote(FAST)))
        for info in self._anthropic().models:
            timeline = self._timeline(info, STANDARD)
            if timeline is not None:
                fast = self._timeline(info, FAST)
                pairs.append((timeline[-1][1], None if fast is None else fast[-1][1]))
        return pairs

    def _lookup(self, model: str, speed: str) -> _Timeline | None:
        for override in self._overrides:
            if override.matches(model):
                quote = override.quote(speed)
                return None if quote is None else ((_EPOCH, quote),)
        table = self._table
        if table is not None:  # the bundled data's look-up, without loading it
            entry = _find(table["models"], model)
            return None if entry is None else _timeline_from(entry["speeds"].get(speed))
        info = self._anthropic().find_model(model)
        return None if info is None else self._timeline(info, speed)

    @cached_property
    def _table(self) -> dict[str, Any] | None:
        """`TABLE` when it was made from the installed price data and this module's arithmetic, else None."""
        try:
            table: dict[str, Any] = orjson.loads((Path(__file__).parent / TABLE).read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return table if table.get("basis") == self._basis else None

    @cached_property
    def _basis(self) -> str:
        """What the bundled prices' timelines depend on: the arithmetic, the price data, fast mode's table."""
        data = "\n".join([_FORMULA, f"{PRICE_DATA} {self.version}", _fast_text(), repr(_MISSING_TIERS)])
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def table(self) -> dict[str, Any]:
        """`TABLE`'s content, made from the bundled data: each Anthropic model's match rules (in
        genai-prices' order) and its timeline at each speed it has a price for."""
        models = []
        for info in self._anthropic().models:
            speeds = {v.when["speed"] for v in info.price_variants or () if set(v.when) == {"speed"}}
            models.append(
                {
                    "id": info.id,
                    "match": _clause_json(info.match),
                    "speeds": {s: _timeline_json(self._timeline(info, s)) for s in sorted({STANDARD, FAST} | speeds)},
                }
            )
        return {"basis": self._basis, "models": models}

    def _anthropic(self) -> Provider:
        if self._provider is None:
            # The bundled list itself, not genai_prices.calc_price's snapshot, which UpdatePrices can
            # swap for prices fetched from the network.
            from genai_prices.data import providers

            self._provider = next(p for p in providers if p.id == PROVIDER)
        return self._provider

    def _timeline(self, info: ModelInfo, speed: str) -> _Timeline | None:
        if speed == STANDARD:
            return self._bundled(info, None)
        # genai-prices keys premium speeds as a price variant {"speed": "fast"}, and hands a model without
        # one its standard rates back: asked for a speed it lacks, it must not be asked at all.
        if any(v.when == {"speed": speed} for v in info.price_variants or ()):
            variant = self._bundled(info, {"speed": speed})
            return (
                None
                if variant is None
                else tuple(
                    (since, replace(quote, source=f"{quote.source} {speed} variant")) for since, quote in variant
                )
            )
        factor = fast_multipliers().get(info.id) if speed == FAST else None
        standard = self._bundled(info, None) if factor is not None else None
        if factor is None or standard is None:
            return None  # an unknown speed, or fast mode with no known price: unpriced, never standard
        multiplier, url = factor
        return tuple(
            (since, quote.times(multiplier, f"{quote.source} × {multiplier} fast mode ({url})"))
            for since, quote in standard
        )

    def _bundled(self, info: ModelInfo, context: dict[str, str] | None) -> _Timeline | None:
        starts = {_EPOCH} | _price_change_dates(info)
        timeline: list[tuple[date, Quote]] = []
        for since in sorted(starts):
            quote = _quote(info, info.get_prices(datetime.combine(since, time(), UTC), context), self.version)
            if quote is None:
                return None
            if quote.long_context is None and info.id in _MISSING_TIERS:
                threshold, tier = _MISSING_TIERS[info.id]
                quote = replace(
                    quote,
                    long_context_threshold=threshold,
                    long_context=tier,
                    source=f"{quote.source} + Anthropic's long-context list price",
                )
            if not timeline or timeline[-1][1] != quote:
                timeline.append((since, quote))
        return tuple(timeline)


def _on(day: date, timeline: _Timeline) -> Quote:
    # Before the first dated price, the oldest one applies, as genai-prices does it.
    return next((quote for since, quote in reversed(timeline) if since <= day), timeline[0][1])


_FAST_PRICES = "fast_prices.toml"


def _fast_text() -> str:
    # Beside this module (a wheel installs it as a file): importlib.resources costs a warm report ~3 ms.
    return (Path(__file__).parent / _FAST_PRICES).read_text(encoding="utf-8")


@cache
def fast_multipliers() -> dict[str, tuple[Decimal, str]]:
    """genai-prices model id -> (fast-mode multiplier of its standard rates, the page that publishes it)."""
    table = tomllib.loads(_fast_text())["fast"]
    return {model: (Decimal(str(entry["multiplier"])), entry["source"]) for model, entry in table.items()}


def _plain(value: Decimal) -> Decimal:
    """`value` without trailing zeros (6 × 0.50 is 3, not 3.00), never in exponent form (30, not 3E+1)."""
    value = value.normalize()
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value  # type: ignore[operator]


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

    return {
        "model": q.model,
        "name": q.name,
        "source": q.source,
        "rates": rates(q.rates),
        "threshold": q.long_context_threshold,
        "long_context": rates(q.long_context),
    }


def _quote_from(data: dict[str, Any]) -> Quote:
    def rates(values: list[str] | None) -> Rates | None:
        return None if values is None else Rates(*map(Decimal, values))

    base = rates(data["rates"])
    assert base is not None
    return Quote(data["model"], data["name"], base, data["source"], data["threshold"], rates(data["long_context"]))


def _timeline_json(t: _Timeline | None) -> list[list[Any]] | None:
    return None if t is None else [[since.isoformat(), _quote_json(q)] for since, q in t]


def _timeline_from(data: list[list[Any]] | None) -> _Timeline | None:
    return None if data is None else tuple((date.fromisoformat(since), _quote_from(q)) for since, q in data)


# The bundled data's look-up without loading it (genai-prices and pydantic cost each parse worker ~0.1 s of
# CPU): `Pricer.table()` written out, used while its basis matches. `tests/test_pricing.py` checks it is
# current; `UPDATE_GOLDEN=1` there writes it again.
TABLE = "anthropic_prices.json"
_CLAUSES = {  # genai-prices' match clauses: the class, and its key in the price data's YAML
    "ClauseStartsWith": "starts_with",
    "ClauseEndsWith": "ends_with",
    "ClauseContains": "contains",
    "ClauseRegex": "regex",
    "ClauseEquals": "equals",
    "ClauseOr": "or",
    "ClauseAnd": "and",
}
# genai-prices' `_COMPACT_DATE_RE`: a ref matching nothing is tried again with its compact date dashed.
_COMPACT_DATE = re.compile(r"(-)(20\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|:|$)")


def _clause_json(clause: Any) -> dict[str, Any]:
    key = _CLAUSES[type(clause).__name__]
    if key in ("or", "and"):
        return {key: [_clause_json(c) for c in getattr(clause, key + "_")]}
    return {key: getattr(clause, key)}


def _matches(clause: dict[str, Any], ref: str) -> bool:
    """genai-prices' `is_match` of a clause, `ref` lower case."""
    ((key, value),) = clause.items()
    if key == "or":
        return any(_matches(c, ref) for c in value)
    if key == "and":
        return all(_matches(c, ref) for c in value)
    if key == "regex":
        return re.search(value, ref) is not None
    value = value.lower()
    if key == "starts_with":
        return ref.startswith(value)
    if key == "ends_with":
        return ref.endswith(value)
    return value in ref if key == "contains" else ref == value


def _find(models: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """genai-prices' `Provider.find_model` over the table's models."""
    ref = model.lower()
    found = next((m for m in models if _matches(m["match"], ref)), None)
    if found is not None:
        return found
    dashed = _COMPACT_DATE.sub(_dashed, ref)
    return None if dashed == ref else next((m for m in models if _matches(m["match"], dashed)), None)


def _dashed(match: re.Match[str]) -> str:
    year, month, day = (int(match.group(i)) for i in range(2, 5))
    try:
        date(year, month, day)
    except ValueError:
        return match.group(0)
    return f"{match.group(1)}{year:04d}-{month:02d}-{day:02d}"


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
    source = f"{PRICE_DATA} {version}"
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
