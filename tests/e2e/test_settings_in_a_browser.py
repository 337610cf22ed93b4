"""The settings page in a real browser against the real processes (issue #12, ADR 0018):
Debian's chromium under Playwright, the fleet of `conftest.py` (four api, two authz, two
ratelimit over the real Kafka and MongoDB-wire server).

The whole flow a user goes through: sign up, sign in, create a token and use it on `/v0/me`,
revoke it and see it refused, turn 2FA on with a code computed from the page's key, sign out
and back in with a code. axe-core checks every page on the way (WCAG 2 A and AA, best
practice: no violation), the sign-in form is walked with the keyboard alone, and each page is
saved to `.run/screenshots/settings-*.png`."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import httpx
import pyotp
import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Browser, Page

from tests.e2e.conftest import PASSWORD, SCREENSHOTS, System, wait_for


@pytest.fixture
def page(system: System, browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A fresh browser context (no cookies) in English; on a failure, the page it ended on is
    saved as `settings-failed-<test>.png` and its text printed."""
    context = browser.new_context(
        base_url=system.apis()[0].url, extra_http_headers={"Accept-Language": "en"}
    )
    context.set_default_timeout(10_000)
    opened = context.new_page()
    failures = request.session.testsfailed
    yield opened
    if request.session.testsfailed > failures:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        opened.screenshot(path=str(SCREENSHOTS / f"settings-failed-{request.node.name}.png"))
        print(f"failed on {opened.url}:\n{opened.locator('body').inner_text()}")
    context.close()


def checked(page: Page, name: str) -> None:
    """axe-core finds nothing on the page, which is saved as `settings-<name>.png`."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"settings-{name}.png"), full_page=True)
    results = Axe().run(page, options={"runOnly": ["wcag2a", "wcag2aa", "best-practice"]})
    assert results.violations_count == 0, f"{name}: {results.generate_report()}"


def me(system: System, token: str) -> int:
    url = f"{system.apis()[1].url}/v0/me"  # another api instance than the browser's
    return httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code


def sign_in(page: Page, email: str, code: str = "") -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    if code:
        page.get_by_label("Code from your authenticator app", exact=False).fill(code)
    page.get_by_role("button", name="Sign in").click()


def test_the_whole_self_service_flow(system: System, page: Page) -> None:
    email = f"{uuid.uuid4().hex[:8]}@example.com"

    # sign up: a page without a session sends to the sign-in form, which links to sign-up
    page.goto("/settings")
    assert page.url.endswith("/settings/sign-in")
    checked(page, "sign-in")
    page.get_by_role("link", name="Create an account").click()
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    checked(page, "sign-up")
    page.get_by_role("button", name="Create an account").click()
    assert "Your account is ready" in page.locator("[role=status]").inner_text()

    # sign in: the session is this page's only credential; it shows as "this session"
    sign_in(page, email)
    assert page.url.endswith("/settings")
    assert page.locator("tr.current").count() == 1
    cookie = next(c for c in page.context.cookies() if "authbus_session" in c["name"])
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    checked(page, "overview")

    # create a token: the secret is shown once, with a copy button
    page.get_by_label("Name", exact=True).fill("deploy")
    page.get_by_label("in 7 days").check()
    page.get_by_label("Your password, to confirm").fill(PASSWORD)
    page.get_by_role("button", name="Create the token").click()
    secret = page.locator("#secret").input_value()
    checked(page, "token-created")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    page.get_by_role("button", name="Copy").click()
    assert page.locator("#copy-status").inner_text() == "Copied"
    assert page.evaluate("navigator.clipboard.readText()") == secret
    assert me(system, secret) == 200

    # revoke it, after a confirmation page; every api instance refuses it
    page.get_by_role("link", name="Back to settings").click()
    page.get_by_role("link", name="Revoke deploy").click()
    checked(page, "revoke")
    page.get_by_role("button", name="Revoke").click()
    assert "The token is revoked" in page.locator("[role=status]").inner_text()
    wait_for(lambda: me(system, secret) == 401, timeout_s=10)

    # 2FA: the page's key gives the code that turns it on
    page.get_by_role("button", name="Turn on").click()
    key = page.locator("#totp-secret").inner_text().replace(" ", "")
    totp = pyotp.TOTP(key)
    checked(page, "2fa")
    page.get_by_label("Code from your authenticator app").fill(totp.now())
    page.get_by_role("button", name="Turn on").click()
    assert "Two-factor authentication is on" in page.locator("[role=status]").inner_text()

    # signing in again needs a code (a fresh one: a code is good once)
    page.get_by_role("button", name="Sign out").click()
    assert "signed out" in page.locator("[role=status]").inner_text()
    sign_in(page, email)
    assert "a current code is needed" in page.locator("[role=alert]").inner_text()
    checked(page, "sign-in-refused")
    sign_in(page, email, totp.at(time.time() + 30))
    assert page.url.endswith("/settings")
    assert page.locator("tr.current").count() == 1


def test_the_sign_in_form_is_usable_by_keyboard_alone(system: System, page: Page) -> None:
    page.goto("/settings/sign-in")
    focused = []
    for _ in range(6):
        page.keyboard.press("Tab")
        focused.append(
            page.evaluate("document.activeElement.id || document.activeElement.innerText")
        )
    page.keyboard.press("Shift+Tab")  # back to the button
    page.get_by_label("Email").focus()
    page.keyboard.type("nobody@example.com")
    page.keyboard.press("Tab")
    page.keyboard.type("wrong password")
    page.keyboard.press("Enter")  # submits the form

    assert focused == [
        "Skip to content", "email", "password", "code", "Sign in", "Create an account"
    ]  # fmt: skip
    assert "Email or password incorrect" in page.locator("[role=alert]").inner_text()


def test_the_pages_speak_french_and_pass_axe(system: System, browser: Browser) -> None:
    context = browser.new_context(
        base_url=system.apis()[0].url, extra_http_headers={"Accept-Language": "fr"}
    )
    page = context.new_page()
    page.goto("/settings/sign-in")
    heading = page.get_by_role("heading", level=1).inner_text()
    lang = page.locator("html").get_attribute("lang")
    checked(page, "sign-in-fr")
    context.close()

    assert heading == "Se connecter"
    assert lang == "fr"
