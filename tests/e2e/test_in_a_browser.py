"""authbus's pages in a real browser (issue #12): Debian's chromium, headless, driven by
Playwright. `/v0/docs` renders with no network but the api's (every request the page makes is
watched; one to any other host fails the test: the docs would be blank offline), and the pages
authbus renders itself pass axe-core's WCAG checks. Screenshots go to `.run/screenshots/`."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Route

from tests.e2e.conftest import SCREENSHOTS, System


def test_the_api_docs_render_with_nothing_but_the_api(system: System, browser: Browser) -> None:
    api = system.apis()[0]
    elsewhere: list[str] = []

    def only_the_api(route: Route) -> None:
        if urlsplit(route.request.url).netloc == urlsplit(api.url).netloc:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page = browser.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    page.route("**/*", only_the_api)
    page.goto(f"{api.url}/v0/docs")
    try:
        page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
    except Exception:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "v0-docs-failed.png"))  # for the failure
        pytest.fail(f"no docs rendered; console: {console}; elsewhere: {elsewhere}")
    operations = page.locator(".opblock").count()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "v0-docs.png"), full_page=False)
    title = page.locator(".swagger-ui .info .title").inner_text()
    page.close()

    assert elsewhere == []
    assert title.startswith("authbus")
    assert operations >= 10


@pytest.mark.parametrize(
    ("path", "language", "name"),
    [
        ("/v0/me", "en", "error-401-en"),  # no credential: the catalog's HTML page
        ("/v0/me", "fr", "error-401-fr"),
        ("/v0/nothing-here", "de", "error-404-de"),
        ("/v0/deprecations/api-keys", "en", "deprecation"),
    ],
)
def test_our_html_pages_pass_axe(
    system: System, browser: Browser, path: str, language: str, name: str
) -> None:
    """The pages authbus renders itself (errors are HTML by default), checked by axe-core in
    the browser (WCAG 2 A and AA rules): no violation."""
    context = browser.new_context(extra_http_headers={"Accept-Language": language})
    page = context.new_page()
    page.goto(f"{system.apis()[0].url}{path}")
    results = Axe().run(page, options={"runOnly": ["wcag2a", "wcag2aa", "best-practice"]})
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    lang = page.locator("html").get_attribute("lang")
    context.close()

    assert results.violations_count == 0, results.generate_report()
    assert lang == language
