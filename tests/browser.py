"""The console in a browser: chromium (Debian's) driven by Playwright against a real pagerd.

Each browser test leaves screenshots in tests/artifacts/ (git-ignored); those the README
shows go to tests/screenshots/ when PAGERD_README_SCREENSHOTS=1 is set.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import aiohttp
from playwright.async_api import Browser, Locator, Page, expect

from tests.harness import API_TOKEN, Pagerd

TOKEN = API_TOKEN
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ARTIFACTS = Path(__file__).parent / "artifacts"
README_SCREENSHOTS = Path(__file__).parent / "screenshots"
ONCALL = "+15550000001"
ALICE = "+15550000011"
BOB = "+15550000012"
CAROL = "+15550000013"
PHONE_PROBLEM = "must be a phone number: an optional + and 6 to 15 digits"
# Level 1's timeout: the alert to show, the click, and room for a slow box.
LEVEL_TIMEOUT_S = 5.0
UI_TIMEOUT_MS = 8_000  # a change shows at once; this leaves room on a slow CI box
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

expect.set_options(timeout=UI_TIMEOUT_MS)


async def open_page(browser: Browser, **options: Any) -> tuple[Page, list[str]]:
    """A page in a fresh context, and the script errors and refused loads it will report."""
    context = await browser.new_context(**options)
    page = await context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda m: errors.append(f"{m.text} {m.location['url']}") if m.type == "error" else None,
    )
    return page, errors


def no_script_errors(errors: list[str]) -> None:
    """A script error or a refused resource (CSP, 404) fails the test that caused it;
    chromium also logs the API's answers the console expects (401 for a wrong token or
    before sign-in, a new policy's 404, 409, 422)."""
    expected = tuple(f"status of {status} " for status in (401, 404, 409, 422))
    answers = ("/api/v1/", "/console/sign-in")
    unexpected = [
        e for e in errors if not (any(a in e for a in answers) and any(s in e for s in expected))
    ]
    assert unexpected == []


async def screenshot(page: Page, name: str, *, readme: bool = False, whole: bool = False) -> None:
    """Keep what the page looks like: in tests/artifacts/, the whole page; for the README's
    pictures (``readme``), what the screen shows (the whole page if ``whole``), in
    tests/screenshots/ when PAGERD_README_SCREENSHOTS=1."""
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    if readme and os.environ.get("PAGERD_README_SCREENSHOTS") == "1":
        await page.screenshot(path=str(README_SCREENSHOTS / f"{name}.png"), full_page=whole)


async def sign_in(page: Page, daemon: Pagerd, name: str = "", path: str = "/") -> None:
    """Sign in at ``path`` (the console's home, the incidents, unless told otherwise)."""
    await page.goto(daemon.base_url + path)
    if name:
        await page.get_by_label("Your name").fill(name)
    await page.get_by_label("API token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", level=1)).not_to_have_text("Sign in")
    await expect(page.locator("#live")).to_have_text("Live")


def service_row(page: Page, service_id: str) -> Locator:
    return page.locator(f'tr[data-service="{service_id}"]')


async def expect_field_error(field: Locator, text: str) -> None:
    """The error element that ``field`` is described by (what a screen reader reads
    with it) shows ``text``, and the field is marked invalid."""
    described = await field.get_attribute("aria-describedby") or ""
    error_id = next(i for i in described.split() if i.endswith("-error"))
    await expect(field.page.locator(f"[id='{error_id}']")).to_have_text(text)
    await expect(field).to_have_attribute("aria-invalid", "true")


async def api(daemon: Pagerd, method: str, path: str, body: Any = None) -> Any:
    async with (
        aiohttp.ClientSession(headers=BEARER) as http,
        http.request(method, f"{daemon.base_url}/api/v1{path}", json=body) as response,
    ):
        assert response.status < 300, await response.text()
        return await response.json()
