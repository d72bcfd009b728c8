"""The portal page in headless Chromium: the whole flow from the portal's help page.

Debian's ``chromium`` driven by Playwright (``executable_path``); the test installs the
browser with apt when it is missing, and fails (never skips) when it cannot. Codes come
from an independent TOTP implementation, computed from the secret the page shows. A
screenshot of each step is saved under ``test-artifacts/portal/``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect

from services.auth.main import create_app as auth_app
from services.enrolment.main import create_app as enrolment_app
from shared.devtools.servers import free_port
from tests.support.apps import served
from tests.support.clock import Clock
from tests.support.settings import settings_for
from tests.support.totp import otp

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "portal"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
PASSWORD = "correct horse battery staple"


def chromium() -> str:
    """Debian's Chromium: found, or installed with apt; a failure otherwise."""
    found = shutil.which("chromium")
    if found:
        return found
    if os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-q"], env=env, check=False, capture_output=True)
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "chromium"],
            env=env,
            check=False,
            capture_output=True,
        )
        found = shutil.which("chromium")
        if found:
            return found
    pytest.fail("Chromium is missing and could not be installed (apt-get install chromium)")


@pytest.fixture
async def portal(database_url: str) -> AsyncIterator[tuple[str, Clock]]:
    auth_port, enrolment_port = free_port(), free_port()
    settings = settings_for(
        database_url,
        without_broker=True,
        enrolment_url=f"http://127.0.0.1:{enrolment_port}",
        portal_origins=f"http://127.0.0.1:{auth_port}",
    )
    clock = Clock()
    async with (
        served(auth_app(settings, clock=clock), auth_port) as auth_url,
        served(enrolment_app(settings, clock=clock), enrolment_port),
    ):
        yield auth_url, clock


def _read(path: str | Path) -> str:
    return Path(path).read_text()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def test_the_help_page_flow_in_a_real_browser(portal: tuple[str, Clock]) -> None:
    base, clock = portal
    username = f"ann-{uuid.uuid4().hex[:6]}"
    async with httpx.AsyncClient(base_url=base) as http:
        created = await http.post(
            "/v1/accounts",
            json={"username": username, "email": f"{username}@example.org", "password": PASSWORD},
        )
        assert created.status_code == 201
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium(), args=FLAGS)
        context = await browser.new_context(accept_downloads=True)
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        try:
            await run_flow(page, base, clock, username)
        finally:
            await browser.close()
    csp = [p for p in problems if "Content Security Policy" in p]
    assert csp == [], csp


async def sign_in(page: Page, username: str, password: str) -> None:
    await page.locator("#login-username").fill(username)
    await page.locator("#login-password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


async def run_flow(page: Page, base: str, clock: Clock, username: str) -> None:
    # 1. Log in with the password; 2FA is off.
    await page.goto(f"{base}/portal")
    await expect(page.locator("#login-username")).to_be_focused()
    await sign_in(page, username, PASSWORD)
    await expect(page.locator("#profile-2fa")).to_have_text("Off")
    await shot(page, "01-profile-2fa-off")

    # 2. Enable 2FA: password again, then the QR code and the key for manual entry.
    await page.get_by_role("button", name="Enable 2FA").click()
    await page.locator("#reauth-password").fill(PASSWORD)
    await page.get_by_role("button", name="Continue").click()
    await expect(page.locator("#qr")).to_be_visible()
    await expect(page.locator("#secret")).not_to_be_empty()
    secret = await page.locator("#secret").inner_text()
    loaded = await page.locator("#qr").evaluate("img => img.complete && img.naturalWidth > 0")
    assert loaded, "the QR image did not load"
    await shot(page, "02-scan-qr")

    # 3. A wrong code first: refused, still pending; then the right one.
    code_box = page.locator("#confirm-code")
    await code_box.fill("000000")
    await page.get_by_role("button", name="Turn on 2FA").click()
    await expect(page.locator("#error")).to_contain_text("attempts left")
    await code_box.fill(otp(secret, clock()))
    await page.get_by_role("button", name="Turn on 2FA").click()
    codes = page.locator("#codes li")
    await expect(codes).to_have_count(6)
    recovery = await codes.all_inner_texts()
    await shot(page, "03-recovery-codes")
    await page.get_by_role("button", name="Copy").click()
    copied = await page.evaluate("navigator.clipboard.readText()")
    assert copied.split() == recovery
    async with page.expect_download() as download:
        await page.get_by_role("button", name="Download").click()
    path = await (await download.value).path()
    assert _read(path).split() == recovery
    await page.get_by_role("button", name="Close").click()
    await expect(page.locator("#profile-2fa")).to_have_text("On (6 recovery codes left)")
    await shot(page, "04-profile-2fa-on")

    # 4. Sign out; sign in again: the OTP step, with a recovery code instead.
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, username, PASSWORD)
    otp_box = page.locator("#otp-code")
    await expect(otp_box).to_be_focused()
    assert await otp_box.get_attribute("autocomplete") == "one-time-code"
    assert await otp_box.get_attribute("inputmode") == "numeric"
    await shot(page, "05-otp-step")
    await page.get_by_role("link", name="Use a recovery code instead").click()
    await otp_box.fill(recovery[0])
    await page.get_by_role("button", name="Verify").click()
    await expect(page.locator("#profile-2fa")).to_have_text("On (5 recovery codes left)")

    # 5. Change the password and the email: each needs a fresh code.
    clock.advance(seconds=30)
    new_password = "a brand new passphrase 2026"
    await page.locator("#pw-current").fill(PASSWORD)
    await page.locator("#pw-new").fill(new_password)
    await page.locator("#pw-otp").fill(otp(secret, clock()))
    await page.get_by_role("button", name="Change password").click()
    await expect(page.locator("#status")).to_contain_text("Password changed")
    clock.advance(seconds=30)
    await page.locator("#email-current").fill(new_password)
    await page.locator("#email-new").fill("ann.new@example.org")
    await page.locator("#email-otp").fill(otp(secret, clock()))
    await page.get_by_role("button", name="Change email").click()
    await expect(page.locator("#profile-email")).to_have_text("ann.new@example.org")
    await shot(page, "06-changed-password-and-email")

    # 6. Sign in with the OTP, then disable 2FA with one last code.
    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, username, new_password)
    clock.advance(seconds=30)
    await otp_box.fill(otp(secret, clock()))
    await page.get_by_role("button", name="Verify").click()
    await expect(page.locator("#profile-2fa")).to_contain_text("On")
    await page.get_by_role("button", name="Disable 2FA").click()
    clock.advance(seconds=30)
    await page.locator("#disable-code").fill(otp(secret, clock()))
    await page.locator("#disable-form").get_by_role("button", name="Disable 2FA").click()
    await expect(page.locator("#profile-2fa")).to_have_text("Off")
    await shot(page, "07-profile-2fa-off-again")
