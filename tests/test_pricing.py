"""Pricing: hand-computed costs against the genai-prices 0.2.3 bundled data, overrides, and agreement
with genai-prices' own calculator. Rates in comments are USD per million tokens."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.events import Tokens, to_nanos
from exporter.pricing import prices
from exporter.pricing.prices import Override, Pricer, Quote, Rates

D = Decimal
SONNET_45 = "claude-sonnet-4-5-20250929"
SONNET_45_RATES = Rates(D(3), D(15), D("0.3"), D("3.75"), D(6))
SONNET_45_LONG = Rates(D(6), D("22.5"), D("0.6"), D("7.5"), D(12))


def opus_premium(pattern: str) -> Override:
    # e.g. a cloud provider's price for Opus 4.8: three times the list rates
    return Override(pattern, D(15), D(75), D("1.5"), D("18.75"), D(30))


def test_sonnet_45_prices_uncached_input_output_cache_reads_and_both_cache_writes():
    tokens = Tokens(input=1_000, output=2_000, cache_read=50_000, cache_write_5m=10_000, cache_write_1h=4_000)
    # 1000*3 + 2000*15 + 50000*0.3 + 10000*3.75 + 4000*6 = 3000+30000+15000+37500+24000 = 109500 / 1e6
    assert Pricer().price(SONNET_45, tokens) == D("0.1095")


def test_opus_48_prices_at_its_list_rates():
    tokens = Tokens(input=2_000, output=5_000, cache_read=100_000, cache_write_5m=20_000, cache_write_1h=3_000)
    # 2000*5 + 5000*25 + 100000*0.5 + 20000*6.25 + 3000*10 = 10000+125000+50000+125000+30000 = 340000 / 1e6
    assert Pricer().price("claude-opus-4-8", tokens) == D("0.34")


def test_haiku_45_prices_at_its_list_rates():
    tokens = Tokens(input=10_000, output=1_000, cache_read=40_000, cache_write_5m=5_000, cache_write_1h=2_000)
    # 10000*1 + 1000*5 + 40000*0.1 + 5000*1.25 + 2000*2 = 10000+5000+4000+6250+4000 = 29250 / 1e6
    assert Pricer().price("claude-haiku-4-5-20251001", tokens) == D("0.02925")


def test_sonnet_above_200k_input_prices_the_whole_request_at_the_long_context_rate():
    # context = 1 + 150000 + 40000 + 10000 = 200001 > 200k, so every token moves to 6/22.5/0.6/7.5/12:
    # 1*6 + 1000*22.5 + 150000*0.6 + 40000*7.5 + 10000*12 = 6+22500+90000+300000+120000 = 532506 / 1e6
    tokens = Tokens(input=1, output=1_000, cache_read=150_000, cache_write_5m=40_000, cache_write_1h=10_000)
    assert Pricer().price(SONNET_45, tokens) == D("0.532506")


def test_sonnet_at_exactly_200k_input_stays_at_the_base_rate_and_output_does_not_count():
    # context = 150000 + 40000 + 10000 = 200000, not above the threshold (total with output is 201000):
    # 1000*15 + 150000*0.3 + 40000*3.75 + 10000*6 = 15000+45000+150000+60000 = 270000 / 1e6
    tokens = Tokens(input=0, output=1_000, cache_read=150_000, cache_write_5m=40_000, cache_write_1h=10_000)
    assert Pricer().price(SONNET_45, tokens) == D("0.27")


def test_web_searches_cost_ten_dollars_a_thousand_on_top_of_tokens():
    # 100*5 / 1e6 = 0.0005, plus 3 * 10 / 1000 = 0.03
    assert Pricer().price("claude-haiku-4-5", Tokens(output=100), web_search_requests=3) == D("0.0305")


def test_web_searches_keep_their_price_in_a_long_context_request():
    # 250000*6 / 1e6 = 1.5, plus 2 * 10 / 1000 = 0.02
    assert Pricer().price(SONNET_45, Tokens(input=250_000), web_search_requests=2) == D("1.52")


def test_sonnet_4_gets_the_long_context_tier_the_bundled_data_lacks():
    # genai-prices 0.2.3 has no 4.0 tier; Anthropic's list bills the whole request at 6 / 22.50 above 200k.
    pricer = Pricer()
    assert pricer.price("claude-sonnet-4-20250514", Tokens(input=200_000, output=1_000)) == D("0.615")
    assert pricer.price("claude-sonnet-4-20250514", Tokens(input=300_000, output=1_000)) == D("1.8225")
    assert pricer.price("claude-sonnet-4-20250514", Tokens(cache_read=234_814, output=476, cache_write_1h=1_301)) == (
        D("0.1672104")  # 234,814 × 0.60 + 476 × 22.50 + 1,301 × 12 per million: a request of the parity corpus
    )
    quote = pricer.describe("claude-sonnet-4-0")
    assert quote is not None and quote.source == "genai-prices 0.2.3 + Anthropic's long-context list price"


def test_an_override_wins_over_the_bundled_data_for_models_matching_its_glob():
    pricer = Pricer([opus_premium("claude-opus-4-8*")])
    tokens = Tokens(input=1_000, output=1_000)
    # 1000*15 + 1000*75 = 90000 / 1e6; the unmatched Opus 4.7 keeps its list 1000*5 + 1000*25
    assert pricer.price("claude-opus-4-8", tokens) == D("0.09")
    assert pricer.price("claude-opus-4-8-20261001", tokens) == D("0.09")
    assert pricer.price("CLAUDE-OPUS-4-8", tokens) == D("0.09")
    assert pricer.price("claude-opus-4-7", tokens) == D("0.03")


def test_the_first_matching_override_wins():
    cheap = Override("claude-opus-*", D(1), D(1), D(1), D(1), D(1))
    pricer = Pricer([cheap, opus_premium("claude-opus-4-8*")])
    # 1000*1 + 1000*1 = 2000 / 1e6
    assert pricer.price("claude-opus-4-8", Tokens(input=1_000, output=1_000)) == D("0.002")


def test_an_override_prices_a_model_the_bundled_data_does_not_know():
    pricer = Pricer([Override("claude-mystery-*", D(2), D(8), D("0.2"), D("2.5"), D(4))])
    # 1000*2 + 500*8 = 6000 / 1e6
    assert pricer.price("claude-mystery-9", Tokens(input=1_000, output=500)) == D("0.006")


def test_an_override_with_a_long_context_tier_prices_the_whole_request_above_its_threshold():
    # For the Sonnet 4.0 1M-context beta, which the bundled data lacks.
    sonnet_4 = Override("claude-sonnet-4-2025*", D(3), D(15), D("0.3"), D("3.75"), D(6), 200_000, SONNET_45_LONG)
    pricer = Pricer([sonnet_4])
    # above: 250000*6 + 2000*22.5 = 1500000+45000 = 1545000 / 1e6
    assert pricer.price("claude-sonnet-4-20250514", Tokens(input=250_000, output=2_000)) == D("1.545")
    # at the threshold: 200000*3 + 2000*15 = 600000+30000 = 630000 / 1e6
    assert pricer.price("claude-sonnet-4-20250514", Tokens(input=200_000, output=2_000)) == D("0.63")


def test_an_override_tier_needs_both_its_threshold_and_its_rates():
    with pytest.raises(ValueError, match="long_context and its threshold go together"):
        Override("claude-*", D(1), D(1), D(1), D(1), D(1), long_context_threshold=200_000)


def test_rates_must_be_finite_and_non_negative():
    with pytest.raises(ValueError, match="finite non-negative"):
        Rates(D(1), D(-1), D(1), D(1), D(1))
    with pytest.raises(ValueError, match="finite non-negative"):
        Rates(D(1), D(1), D("NaN"), D(1), D(1))


def test_an_unknown_model_gets_no_price_rather_than_an_invented_one():
    pricer = Pricer([opus_premium("claude-opus-*")])
    assert pricer.price("claude-mystery-9", Tokens(input=1_000, output=1_000)) is None
    assert pricer.price("<synthetic>", Tokens()) is None
    assert pricer.describe("claude-mystery-9") is None


def test_zero_tokens_cost_zero():
    assert Pricer().price(SONNET_45, Tokens()) == D(0)
    assert Pricer([opus_premium("claude-opus-4-8")]).price("claude-opus-4-8", Tokens()) == D(0)


def test_costs_are_exact_decimals_with_no_float_rounding():
    pricer = Pricer([Override("m", D("0.1"), D("0.2"), D(0), D(0), D(0))])
    # 3*0.1 + 3*0.2 = 0.9 / 1e6, where floats would give 9.000000000000001e-07
    assert pricer.price("m", Tokens(input=3, output=3)) == D("0.0000009")


def test_fast_mode_uses_the_premium_rates_genai_prices_has_for_opus_48():
    # 1000*10 + 1000*50 = 60000 / 1e6 (standard would be 0.03)
    assert Pricer().price("claude-opus-4-8", Tokens(input=1_000, output=1_000), speed="fast") == D("0.06")


def test_fast_mode_on_opus_46_costs_six_times_its_standard_rates_cache_included():
    # genai-prices 0.2.3 has no fast variant for Opus 4.6; Anthropic's fast-mode page prices it at 6x:
    # 30 / 150 per MTok, cache reads 3, 5 m writes 37.5, 1 h writes 60 (caching multipliers stack).
    tokens = Tokens(input=1_000, output=2_000, cache_read=50_000, cache_write_5m=10_000, cache_write_1h=4_000)
    # 1000*30 + 2000*150 + 50000*3 + 10000*37.5 + 4000*60 = 30000+300000+150000+375000+240000 = 1095000 / 1e6
    pricer = Pricer()
    assert pricer.price("claude-opus-4-6", tokens, speed="fast") == D("1.095")
    assert pricer.price("claude-opus-4-6", tokens) == D("0.1825")  # the same at standard speed: 6 x 0.1825 = 1.095


def test_fast_mode_on_opus_46_above_200k_before_2026_03_13_costs_60_and_225():
    # Anthropic's page: $60 / $225 above 200K input, 6x the then long-context tier (10 / 37.5); from
    # 2026-03-13 on, the standard rates have no tier, and fast mode is 6x them across the whole window.
    tokens = Tokens(input=300_000, output=1_000)
    pricer = Pricer()
    # 300000*60 + 1000*225 = 18000000+225000 = 18225000 / 1e6
    assert pricer.price("claude-opus-4-6", tokens, speed="fast", at=datetime(2026, 2, 20, tzinfo=UTC)) == D("18.225")
    # 300000*30 + 1000*150 = 9000000+150000 = 9150000 / 1e6
    assert pricer.price("claude-opus-4-6", tokens, speed="fast", at=datetime(2026, 3, 13, tzinfo=UTC)) == D("9.15")


def test_fast_mode_on_a_model_with_no_known_fast_price_is_unpriced_never_standard():
    pricer = Pricer()
    tokens = Tokens(input=1_000, output=1_000)
    assert pricer.price("claude-opus-4-7", tokens, speed="fast") is None  # fast mode existed; no price published
    assert pricer.price("claude-sonnet-4-5-20250929", tokens, speed="fast") is None
    assert pricer.price("claude-opus-4-8", tokens, speed="turbo") is None  # a speed nobody prices
    assert pricer.price("claude-opus-4-7", tokens) == D("0.03")  # standard is unaffected


def test_describe_fast_names_the_multiplier_and_anthropics_page_as_source():
    quote = Pricer().describe("claude-opus-4-6-20260205", "fast")
    assert quote is not None
    assert (quote.rates, quote.long_context, quote.source) == (
        Rates(D(30), D(150), D(3), D("37.5"), D(60)),
        None,
        "genai-prices 0.2.3 × 6 fast mode (https://platform.claude.com/docs/en/build-with-claude/fast-mode)",
    )
    variant = Pricer().describe("claude-opus-4-8", "fast")
    assert variant is not None and variant.source == "genai-prices 0.2.3 fast variant"


def test_an_override_prices_fast_mode_only_with_its_fast_multiplier():
    plain = opus_premium("claude-opus-4-6*")
    with_fast = Override("claude-opus-4-6*", D(15), D(75), D("1.5"), D("18.75"), D(30), fast_multiplier=D(6))
    tokens = Tokens(input=1_000, output=1_000)
    # The override replaces the bundled prices, fast ones included: without a multiplier, fast is unknown.
    assert Pricer([plain]).price("claude-opus-4-6", tokens, speed="fast") is None
    # (1000*15 + 1000*75) * 6 = 540000 / 1e6
    assert Pricer([with_fast]).price("claude-opus-4-6", tokens, speed="fast") == D("0.54")
    assert Pricer([with_fast]).price("claude-opus-4-6", tokens) == D("0.09")
    with pytest.raises(ValueError, match="fast_multiplier must be a positive number"):
        Override("m", D(1), D(1), D(1), D(1), D(1), fast_multiplier=D(0))


def test_price_list_pairs_each_model_with_its_fast_quote_where_one_is_known():
    pairs = Pricer([opus_premium("claude-opus-4-6*")]).price_list()
    fast = {standard.model: None if quote is None else quote.rates.input for standard, quote in pairs}
    assert fast["claude-opus-4-6*"] is None  # the override has no fast multiplier
    assert (fast["claude-opus-4-6"], fast["claude-opus-4-8"], fast["claude-opus-4-7"]) == (D(30), D(10), None)
    assert fast["claude-sonnet-4-5"] is None


def test_opus_46_long_context_tier_applies_only_to_requests_before_2026_03_13():
    pricer = Pricer()
    tokens = Tokens(input=300_000)
    # before: 300000*10 / 1e6; from 2026-03-13 (UTC) on, and by default: 300000*5 / 1e6
    assert pricer.price("claude-opus-4-6", tokens, at=datetime(2026, 3, 12, 23, 59, tzinfo=UTC)) == D(3)
    assert pricer.price("claude-opus-4-6", tokens, at=datetime(2026, 3, 13, tzinfo=UTC)) == D("1.5")
    assert pricer.price("claude-opus-4-6", tokens) == D("1.5")


def test_describe_gives_the_bundled_rates_their_tier_and_the_package_version_as_source():
    assert Pricer().describe(SONNET_45) == Quote(
        model="claude-sonnet-4-5",
        name="Claude Sonnet 4.5",
        rates=SONNET_45_RATES,
        source="genai-prices 0.2.3",
        long_context_threshold=200_000,
        long_context=SONNET_45_LONG,
    )


def test_describe_names_the_matching_override_pattern_as_source():
    assert Pricer([opus_premium("claude-opus-4-8*")]).describe("claude-opus-4-8") == Quote(
        model="claude-opus-4-8*",
        name="claude-opus-4-8*",
        rates=Rates(D(15), D(75), D("1.5"), D("18.75"), D(30)),
        source="override: claude-opus-4-8*",
    )


def test_a_model_is_looked_up_once_and_its_quote_reused():
    pricer = Pricer()
    assert pricer.describe(SONNET_45) is pricer.describe(SONNET_45)


def test_known_models_lists_overrides_first_then_every_bundled_anthropic_model():
    quotes = Pricer([opus_premium("claude-opus-4-8*")]).known_models()
    assert [(q.model, q.source) for q in quotes[:2]] == [
        ("claude-opus-4-8*", "override: claude-opus-4-8*"),
        ("claude-2", "genai-prices 0.2.3"),
    ]
    assert [q.model for q in quotes[1:]] == [
        "claude-2",
        "claude-3-5-haiku-latest",
        "claude-3-5-sonnet",
        "claude-3-7-sonnet-latest",
        "claude-3-haiku",
        "claude-3-opus-latest",
        "claude-3-sonnet",
        "claude-fable-5",
        "claude-fable-5-1",
        "claude-fable-5-2",
        "claude-haiku-4-5",
        "claude-haiku-5-5",
        "claude-mythos-5-2",
        "claude-opus-4-0",
        "claude-opus-4-1",
        "claude-opus-4-5",
        "claude-opus-4-6",
        "claude-opus-4-7",
        "claude-opus-4-8",
        "claude-opus-5",
        "claude-opus-5-5",
        "claude-sonnet-4-0",
        "claude-sonnet-4-5",
        "claude-sonnet-4-6",
        "claude-sonnet-5",
        "claude-sonnet-5-5",
        "claude-v1",
    ]


def test_fingerprint_changes_with_the_overrides_and_is_stable_otherwise():
    plain = Pricer().fingerprint
    one = Pricer([opus_premium("claude-opus-4-8*")]).fingerprint
    assert Pricer().fingerprint == plain
    assert Pricer([opus_premium("claude-opus-4-8*")]).fingerprint == one
    assert one != plain
    assert Pricer([opus_premium("claude-opus-4-7*")]).fingerprint not in {plain, one}
    cheaper = Override("claude-opus-4-8*", D(14), D(75), D("1.5"), D("18.75"), D(30))
    assert Pricer([cheaper]).fingerprint not in {plain, one}
    fast = Override("claude-opus-4-8*", D(15), D(75), D("1.5"), D("18.75"), D(30), fast_multiplier=D(2))
    assert Pricer([fast]).fingerprint not in {plain, one}


def test_source_and_version_name_the_price_data():
    pricer = Pricer()
    assert (pricer.source, pricer.version) == ("genai-prices", "0.2.3")


def test_overrides_fingerprint_and_version_do_not_import_genai_prices():
    # The warm report path must not pay genai-prices' ~340 ms import.
    code = (
        "import sys\n"
        "from decimal import Decimal as D\n"
        "from exporter.events import Tokens\n"
        "from exporter.pricing.prices import Override, Pricer\n"
        "p = Pricer([Override('claude-*', D(1), D(1), D(1), D(1), D(1))])\n"
        "assert p.price('claude-opus-4-8', Tokens(input=1)) == D('0.000001')\n"
        "print(p.fingerprint, p.version, 'genai_prices' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.split()[1:] == ["0.2.3", "False"]


MIXES = [
    Tokens(),
    Tokens(input=1_000, output=2_000, cache_read=50_000, cache_write_5m=10_000, cache_write_1h=4_000),
    Tokens(input=9, output=7, cache_read=99_990, cache_write_5m=0, cache_write_1h=1),  # context exactly 100k
    Tokens(input=1, output=1_000, cache_read=150_000, cache_write_5m=40_000, cache_write_1h=10_000),
    Tokens(input=0, output=1_000, cache_read=150_000, cache_write_5m=40_000, cache_write_1h=10_000),
    Tokens(input=700_000, output=64_000, cache_read=200_000, cache_write_5m=50_000, cache_write_1h=25_000),
]
WHEN = [datetime(2025, 6, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)]


@pytest.mark.parametrize("speed", ["standard", "fast"])
def test_every_bundled_claude_model_costs_what_genai_prices_own_calculator_says(speed):
    # genai-prices counts input as the total (cache included) and the 5 m write as its generic cache write.
    # In fast mode only the models with a fast variant compare: for the others genai-prices answers with
    # standard rates, where we price from Anthropic's multiplier (Opus 4.6) or not at all (tests above).
    from genai_prices import Usage, calc_price

    pricer = Pricer()
    compared = 0
    for quote, fast in pricer.price_list():
        if "long-context list price" in quote.source:  # a tier we add (see the Sonnet 4 test): theirs has none
            continue
        if speed == "fast" and (fast is None or not fast.source.endswith("fast variant")):
            continue
        compared += 1
        for tokens in MIXES:
            for at in WHEN:
                usage = Usage(
                    input_tokens=tokens.context,
                    output_tokens=tokens.output,
                    cache_read_tokens=tokens.cache_read,
                    cache_write_tokens=tokens.cache_write,
                    cache_write_1h_tokens=tokens.cache_write_1h,
                    web_searches=2,
                )
                theirs = calc_price(
                    usage,
                    quote.model,
                    provider_id="anthropic",
                    genai_request_timestamp=at,
                    price_context=None if speed == "standard" else {"speed": speed},
                ).total_price
                ours = pricer.price(quote.model, tokens, web_search_requests=2, speed=speed, at=at)
                assert (quote.model, tokens, at, ours) == (quote.model, tokens, at, theirs)
    assert compared >= (5 if speed == "fast" else 20)  # Opus 4.8, 5, 5.5, Fable 5.2, Mythos 5.2 have variants


def test_remembered_lookups_price_the_same_without_loading_the_price_data() -> None:
    tokens = Tokens(input=1000, output=2000, cache_read=3000, cache_write_5m=400, cache_write_1h=500)
    first = Pricer()
    models = ["claude-sonnet-4-5-20250929", "claude-opus-4-8", "claude-mystery-9"]
    prices = [first.price(m, tokens) for m in models]
    second = Pricer()
    second.remember(first.remembered())
    assert [second.price(m, tokens) for m in models] == prices
    assert second._provider is None  # the bundled data was never loaded


_RATE = st.builds(lambda digits, places: Decimal(digits).scaleb(-places), st.integers(0, 10**7), st.integers(0, 12))
_COUNT = st.integers(0, 100_000_000)


@given(st.lists(_RATE, min_size=6, max_size=6), st.lists(_COUNT, min_size=5, max_size=5), st.integers(0, 1000))
def test_integer_nanos_round_exactly_as_the_decimal_cost_does(rates: list[Decimal], counts: list[int], n: int) -> None:
    r = Rates(*rates)
    assert r.nanos(Tokens(*counts), n) == to_nanos(r.cost(Tokens(*counts), n))
    tokens = Tokens(*counts)
    assert r.nanos_and_uncached(tokens, n) == (r.nanos(tokens, n), to_nanos(r.cost(tokens.uncached, n)))


def test_a_quote_at_a_time_in_milliseconds_is_the_quote_described_at_that_moment() -> None:
    pricer = Pricer()
    for model in ("claude-opus-4-6", "claude-sonnet-4-6", "claude-haiku-4-5"):
        for moment in (datetime(2026, 3, 12, 23, 59, 59, 999000, UTC), datetime(2026, 3, 13, tzinfo=UTC)):
            ms = int(moment.timestamp() * 1000)
            assert pricer.quote_at(model, "standard", ms) == pricer.describe(model, "standard", moment)


def test_the_bundled_price_table_is_made_from_the_installed_price_data() -> None:
    # A genai-prices upgrade, a fast_prices.toml edit or a change of the arithmetic shows here first:
    # `UPDATE_GOLDEN=1` writes the table again (and a stale table is never used: see its basis).
    path = Path(prices.__file__).parent / prices.TABLE
    made = orjson.dumps(Pricer().table(), option=orjson.OPT_INDENT_2) + b"\n"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_bytes(made)
    assert path.read_bytes() == made


def _refs() -> list[str]:
    """Model ids as transcripts may name them: every literal of every match rule, dated, compact-dated,
    upper case, prefixed; and ids no rule knows."""

    def literals(clause: dict[str, object]) -> list[str]:
        ((_, value),) = clause.items()
        return [x for c in value for x in literals(c)] if isinstance(value, list) else [str(value)]

    table = Pricer().table()
    refs = [x for m in table["models"] for x in [m["id"], *literals(m["match"])]]
    refs += [f"{r}-20250929" for r in refs] + [f"{r}-2025-09-29" for r in refs] + [r.upper() for r in refs]
    refs += [f"x-{r}" for r in refs[:40]]
    return [*refs, "claude-opus-5-20260230", "claude-opus-5-20260101", "<synthetic>", "gpt-4o", ""]


def test_the_price_table_finds_what_the_price_data_finds_for_every_model_and_speed() -> None:
    tabled, loaded = Pricer(), Pricer()
    loaded._table = None  # the price data's own look-up
    assert tabled._table is not None
    refs = _refs()
    for speed in ("standard", "fast", "batch", "priority"):
        for ref in refs:
            assert (ref, speed, tabled._lookup(ref, speed)) == (ref, speed, loaded._lookup(ref, speed))
    assert tabled._provider is None  # the table alone answered
    assert sum(tabled._lookup(r, "standard") is not None for r in refs) > len(refs) // 2


def test_a_price_table_made_from_other_price_data_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    pricer = Pricer()
    monkeypatch.setattr(Pricer, "version", "0.0.1")  # as after an upgrade of genai-prices alone
    assert pricer._table is None
    assert pricer.price(SONNET_45, Tokens(input=1_000)) == D("0.003")
    assert pricer._provider is not None
