"""`/v0/docs` in a real browser with no network but the api's (issue #12 item 3): Debian's
chromium, headless, driven by Playwright. Every request the page makes is watched; one to any
other host fails the test (the docs would be blank offline). A screenshot is kept in
`.run/screenshots/`."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, Route, sync_playwright

from authbus_dev.browser import LAUNCH_ARGS, BrowserUnavailable, chromium
from authbus_dev.paths import RUNS
from tests.e2e.conftest import System

SCREENSHOTS = RUNS / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    try:
        executable = chromium()
    except BrowserUnavailable as exc:
        pytest.skip(f"no browser here: {exc}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=list(LAUNCH_ARGS)
        )
        yield launched
        launched.close()


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
