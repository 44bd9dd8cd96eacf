"""The landing page in a real headless browser: Debian's Chromium driven by Playwright.

What a person sees at `/` must be what `/metrics` says. Needs `/usr/bin/chromium` (Debian package
`chromium`) and the `playwright` Python package (its own browsers are never downloaded): skipped
without them, failed without them under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from exporter.daemon.gauges import TOP
from exporter.metrics.exposition import TEXT
from tests.support.corpus import generate
from tests.support.daemon import Serve, serving
from tests.support.exposition import by_label, samples
from tests.support.tools import require

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Response

CHROMIUM = "/usr/bin/chromium"
TITLE = "Claude Code usage"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("claude")
    generate(root, seed=41, days=4, sessions_per_day=2)
    with serving(tmp_path_factory.mktemp("state"), [root]) as daemon:
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
