"""The landing page in a real headless browser: Debian's Chromium driven by Playwright.

What a person sees at `/` must be what `/metrics` says, at a laptop's width and a phone's, light or
dark. Needs `/usr/bin/chromium` (Debian package `chromium`) and the `playwright` Python package (its own
browsers are never downloaded): skipped without them, failed without them under CI=true.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

import pytest

from exporter.daemon.gauges import DAYS, TOP, read_daily
from exporter.metrics.exposition import TEXT
from exporter.web.page import PageData, render_page
from tests.support.corpus import generate
from tests.support.daemon import Serve, serving
from tests.support.exposition import by_label, labelled, samples
from tests.support.lines import at, ms
from tests.support.tools import require

pytestmark = pytest.mark.slow  # Chromium and a real `serve`

if TYPE_CHECKING:
    from collections.abc import Callable

    from playwright.sync_api import Browser, Page, Response

    from exporter.ledger.store import Ledger

CHROMIUM = "/usr/bin/chromium"
TITLE = "Claude Code usage"
BUDGET = "monthly"
WIDTHS = (1280, 390)  # a laptop, a phone
LINES = "claude_usage_exporter_lines_total"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("claude")
    # The last few days, so the 30-day chart holds every request; malformed lines included.
    generate(root, seed=41, days=4, sessions_per_day=2, start=datetime.now(UTC).date() - timedelta(days=5))
    config = tmp_path_factory.mktemp("config") / "config.yaml"
    config.write_text(f"timezone: UTC\nbudgets:\n  - {{name: {BUDGET}, window: month, limit_usd: 1}}\n")
    with serving(tmp_path_factory.mktemp("state"), [root], "--config", str(config)) as daemon:
        yield daemon


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require(CHROMIUM, "the landing page in a real browser (Debian package `chromium`)")
    require("playwright", "the landing page in a real browser (pip install playwright; no `playwright install`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        # --no-sandbox: the tests run as root, where Chromium's sandbox refuses to start.
        launched = driver.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Visit:
    page: Page
    response: Response | None
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions


@pytest.fixture
def landing(site: Serve, browser: Browser) -> Iterator[Visit]:
    """`/` opened in a fresh page, with everything the page logs as an error."""
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"{m.text} at {m.location.get('url')}") if m.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield Visit(page, page.goto(site.url + "/", wait_until="networkidle"), errors)
    finally:
        page.close()


def usd(page: Page, selector: str) -> float:
    value = page.get_attribute(selector, "data-usd")
    assert value is not None, f"{selector} has no data-usd"
    return float(value)


def cost_by(exposition: str, label: str) -> dict[str, float]:
    """`claude_usage_cost_usd_total` summed by one label."""
    return by_label(exposition, "claude_usage_cost_usd_total", label)


def table(page: Page, key: str) -> list[tuple[str, float]]:
    """The rows of the table `#key`: its label, and the cost's data-usd."""
    rows = []
    for row in page.locator(f"#{key} tbody tr").all():
        name = row.locator("td").first.inner_text()
        value = row.locator("td.usd").get_attribute("data-usd")
        assert value is not None, f"a row of #{key} has no data-usd: {row.inner_html()}"
        rows.append((name, float(value)))
    return rows


def test_the_landing_page_renders_without_errors(landing: Visit) -> None:
    assert landing.response is not None
    assert (landing.response.status, landing.response.headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert landing.page.title() == TITLE
    assert landing.page.locator("h1").inner_text() == TITLE
    assert landing.errors == []


def test_the_page_names_an_icon_so_the_browser_asks_for_no_favicon(landing: Visit) -> None:
    assert landing.page.locator("link[rel~=icon]").count() == 1


def test_the_all_time_figures_equal_the_metrics(site: Serve, landing: Visit) -> None:
    exposition = site.metrics()
    cost = sum(samples(exposition, "claude_usage_cost_usd_total").values())
    requests = sum(samples(exposition, "claude_usage_requests_total").values())
    assert cost > 0 and requests > 0
    assert usd(landing.page, "#total") == pytest.approx(cost, abs=1e-6)
    assert int(landing.page.locator("#requests").inner_text().replace(",", "")) == requests


@pytest.mark.parametrize("label", ["model", "category"])
def test_each_table_row_equals_the_cost_metric_summed_by_its_label(site: Serve, landing: Visit, label: str) -> None:
    sums = cost_by(site.metrics(), label)
    top = sorted(sums.items(), key=lambda item: (-item[1], item[0]))[:TOP]
    assert len(top) > 1
    expected: list[tuple[str, object]] = [(name, pytest.approx(value, abs=1e-6)) for name, value in top]
    assert table(landing.page, label) == expected


def test_the_link_to_metrics_opens_the_exposition(site: Serve, landing: Visit) -> None:
    with landing.page.expect_navigation() as navigation:
        landing.page.get_by_role("link", name="/metrics").click()
    response = navigation.value
    assert response is not None
    assert (response.url, response.status, response.headers["content-type"]) == (site.url + "/metrics", 200, TEXT)
    shown = response.text()
    assert samples(shown, "claude_usage_cost_usd_total") == samples(site.metrics(), "claude_usage_cost_usd_total")
    assert landing.errors == []


def test_the_page_loads_no_script_and_nothing_from_elsewhere(site: Serve, browser: Browser) -> None:
    page = browser.new_page()
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    try:
        page.goto(site.url + "/", wait_until="networkidle")
        assert page.locator("script").count() == 0
        assert page.locator("svg").count() > 1  # the charts are inline
    finally:
        page.close()
    assert asked == [site.url + "/"]


def test_the_page_says_when_the_last_request_was_seen_as_the_metrics_do(site: Serve, landing: Visit) -> None:
    (last,) = samples(site.metrics(), "claude_usage_last_request_timestamp_seconds").values()
    shown = landing.page.get_attribute("#last-request", "data-ts")
    assert shown is not None and float(shown) == pytest.approx(last, abs=1e-3)
    assert landing.page.locator("#last-request").inner_text().startswith("Last request seen 20")
    assert landing.page.locator("#down").count() == 0  # every source is up


def test_the_malformed_lines_shown_are_those_the_metrics_count(site: Serve, landing: Visit) -> None:
    malformed = sum(v for labels, v in labelled(site.metrics(), LINES) if labels["outcome"] == "malformed")
    assert malformed > 0  # the corpus has some, and the ledger was empty when serve started
    assert landing.page.get_attribute("#not-counted", "data-lines") == str(int(malformed))
    assert "claude-usage-exporter explain" in landing.page.locator("#not-counted").inner_text()


def test_the_daily_chart_stacks_every_days_spend_by_family_as_the_metrics_sum_it(site: Serve, landing: Visit) -> None:
    by_family = by_label(site.metrics(), "claude_usage_cost_usd_total", "model_family")
    drawn: dict[str, float] = {}
    days = set()
    for rect in landing.page.locator("#daily svg.chart rect").all():
        family, day, value = (rect.get_attribute(a) for a in ("data-family", "data-day", "data-usd"))
        assert family is not None and day is not None and value is not None
        drawn[family] = drawn.get(family, 0.0) + float(value)
        days.add(day)
    expected = {family: pytest.approx(value, abs=1e-5) for family, value in by_family.items() if value > 0}
    assert drawn == expected
    assert len(days) == 4 and len(expected) > 1  # the corpus's days, each stacked
    legend = {
        str(span.get_attribute("data-family")): float(str(span.get_attribute("data-usd")))
        for span in landing.page.locator("#daily .legend span.usd").all()
    }
    assert legend == expected
    assert landing.page.locator("#daily h2").inner_text() == f"Last {DAYS} days"


def test_each_budget_is_a_bar_against_its_limit_as_the_gauges_say(site: Serve, landing: Visit) -> None:
    exposition = site.metrics()
    key = f'{{budget="{BUDGET}",window="month"}}'
    (spent, limit) = (samples(exposition, f"claude_usage_budget_{n}_usd")[key] for n in ("spend", "limit"))
    bar = landing.page.locator("#budgets svg.meter rect.spent")
    assert bar.count() == 1
    assert float(str(bar.get_attribute("data-usd"))) == pytest.approx(spent, abs=1e-6)
    assert float(str(bar.get_attribute("data-limit"))) == limit == 1.0
    assert spent > limit and "exceeded" in str(bar.get_attribute("class"))  # the corpus costs more than $1
    assert float(str(bar.get_attribute("width"))) == 100.0  # clipped at the limit, not drawn past it


def png_size(path: Path) -> tuple[int, int]:
    width, height = struct.unpack(">II", path.read_bytes()[16:24])  # the IHDR chunk
    return width, height


def luminance(css: str) -> float:
    """Of an `rgb(r, g, b)` colour, 0 (black) to 1 (white)."""
    r, g, b = (int(part) / 255 for part in css.removeprefix("rgb(").removesuffix(")").split(","))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("width", WIDTHS)
def test_the_page_fits_each_width_in_each_colour_scheme(
    site: Serve, browser: Browser, tmp_path: Path, width: int, scheme: Literal["light", "dark"]
) -> None:
    page = browser.new_page(viewport={"width": width, "height": 900}, color_scheme=scheme)
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(site.url + "/", wait_until="networkidle")
        assert page.evaluate("document.scrollingElement.scrollWidth") <= width  # nothing overflows sideways
        for selector in ("#daily svg.chart", "#budgets svg.meter", "#model", "#category"):
            box = page.locator(selector).first.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, selector
            if selector.startswith("#daily") or selector.startswith("#budgets"):  # drawn to the column's width
                assert box["width"] > min(width, 800) * 0.8, f"{selector} is squeezed: {box}"
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        text = page.evaluate("getComputedStyle(document.body).color")
        dark, light = sorted((luminance(background), luminance(text)))
        assert (luminance(background) < 0.2) == (scheme == "dark") and light - dark > 0.5, (background, text)
        shot = tmp_path / f"page-{width}-{scheme}.png"
        page.screenshot(path=str(shot), full_page=True)
    finally:
        page.close()
    shot_width, shot_height = png_size(shot)
    assert shot_width == width and shot_height >= 900  # the whole page, no wider than the screen
    assert errors == []


def test_a_source_down_is_said_first_and_an_empty_ledger_shows_no_last_request(browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 900})
    try:
        page.set_content(render_page(PageData(down=("transcripts", "otlp")), ready=False).decode())
        assert page.locator("#down").inner_text().startswith("Down: transcripts, otlp")
        assert page.locator("#last-request").inner_text() == "No request seen yet."
        assert page.locator("#not-counted").count() == 0  # nothing malformed: no line about it
        assert page.evaluate("document.scrollingElement.scrollWidth") <= 390
    finally:
        page.close()


def test_the_charts_days_are_the_configured_zones_local_days_across_a_dst_change(
    ledger: Callable[..., Ledger],
) -> None:
    sonnet = "claude-sonnet-4-5-20250929"  # $6 for 1 M input tokens (over 200k: long context); Haiku 4.5 $1
    db = ledger(
        at("2026-10-06T03:59:00+00:00"),  # 2026-10-05 23:59 in New York: 31 days ago, left out
        at("2026-11-01T03:30:00+00:00"),  # 2026-10-31 23:30 EDT
        at("2026-11-01T04:30:00+00:00"),  # 2026-11-01 00:30 EDT
        at("2026-11-02T04:30:00+00:00", model=sonnet),  # 2026-11-01 23:30 EST: the day had 25 hours
        at("2026-11-02T05:30:00+00:00"),  # 2026-11-02 00:30 EST
    )
    now = ms("2026-11-05T17:00:00+00:00")
    days = dict(read_daily(db, now, ZoneInfo("America/New_York")))
    assert len(days) == DAYS and min(days) == "2026-10-07" and max(days) == "2026-11-05"
    spent = {day: spend for day, spend in days.items() if spend}
    assert spent == {
        "2026-10-31": {"haiku": 10**9},
        "2026-11-01": {"haiku": 10**9, "sonnet": 6 * 10**9},
        "2026-11-02": {"haiku": 10**9},
    }
