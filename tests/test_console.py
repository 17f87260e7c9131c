"""The web console, end to end: a real pagerd, mosquitto, the SMS stand-in and chromium.

Each browser test leaves screenshots in tests/artifacts/ (tests/browser.py). The
session cookie and its Origin check are also tested with a plain HTTP client.
"""

from __future__ import annotations

import asyncio
import time
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
from playwright.async_api import Browser, expect

from tests.browser import (
    ALICE,
    BEARER,
    BOB,
    CAROL,
    LEVEL_TIMEOUT_S,
    ONCALL,
    PHONE_PROBLEM,
    TOKEN,
    api,
    expect_field_error,
    no_script_errors,
    open_page,
    screenshot,
    service_row,
    sign_in,
)
from tests.conftest import PagerdFactory
from tests.harness import Monitor, Policy, SmsStandIn, eventually, sms

# --- the session cookie, with a plain HTTP client ------------------------------------------


def session_of(response: aiohttp.ClientResponse) -> Any:
    cookie: SimpleCookie = SimpleCookie()
    for header in response.headers.getall("Set-Cookie", []):
        cookie.load(header)
    return cookie.get("pagerd_session")


async def test_sign_in_sets_a_strict_http_only_cookie_and_writes_need_our_origin(
    make_pagerd: PagerdFactory,
) -> None:
    """Given a signed-in cookie, then reads work, writes work only with our own Origin,
    the cookie does not open /integrations, bearer requests need no Origin, and signing
    out clears the cookie."""
    daemon = make_pagerd([], {})
    await daemon.start()
    base = daemon.base_url
    own = {"Origin": base}
    policy = {"levels": [{"targets": [sms(ONCALL)]}]}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as r:
            assert r.status == 200
            assert r.content_type == "text/html"
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        async with http.get(f"{base}/console/app.js") as r:
            assert r.content_type == "text/javascript"  # what a module script needs
        async with http.get(f"{base}/console/..%2Fconsole.py") as r:
            assert r.status == 404
        async with http.post(f"{base}/console/sign-in", json={"token": "nope"}, headers=own) as r:
            assert r.status == 401
            assert session_of(r) is None
        async with http.post(f"{base}/console/sign-in", json={"token": TOKEN}) as r:
            assert r.status == 403  # no Origin: another site could sign us in
        async with http.post(f"{base}/console/sign-in", data={"token": TOKEN}, headers=own) as r:
            assert r.status == 204  # a plain form works too
            morsel = session_of(r)
        assert morsel.value != TOKEN  # a session of its own, never the token
        assert morsel["httponly"] is True
        assert morsel["samesite"] == "Strict"
        assert morsel["path"] == "/"
        assert not morsel["secure"]  # public_url is http here; with https it is Secure
        cookie = {"Cookie": f"pagerd_session={morsel.value}"}

        async with http.get(f"{base}/api/v1/services", headers=cookie) as r:
            assert r.status == 200
        url = f"{base}/api/v1/policies/web"
        async with http.put(url, json=policy, headers=cookie) as r:
            assert r.status == 403
            assert r.content_type == "application/problem+json"
            assert "Origin" in (await r.json())["detail"]
        evil = cookie | {"Origin": "http://evil.example"}
        async with http.put(url, json=policy, headers=evil) as r:
            assert r.status == 403
        async with http.put(url, json=policy, headers=cookie | own) as r:
            assert r.status == 201
        async with http.put(url, json=policy, headers=BEARER) as r:
            assert r.status == 200  # bearer requests are unchanged: no Origin needed
        async with http.post(
            f"{base}/integrations/alertmanager/web", json={}, headers=cookie | own
        ) as r:
            assert r.status == 401  # the cookie is for /api/v1 only
        async with http.get(f"{base}/api/v1/services", headers={"Cookie": "pagerd_session=x"}) as r:
            assert r.status == 401

        async with http.post(f"{base}/console/sign-out", headers=cookie) as r:
            assert r.status == 403
        async with http.post(f"{base}/console/sign-out", headers=cookie | own) as r:
            assert r.status == 204
            cleared = session_of(r)
        assert cleared.value == ""
        assert cleared["max-age"] == "0"


# --- in the browser ------------------------------------------------------------------------


async def test_engineer_builds_a_team_and_policy_then_handles_an_incident_live(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn, browser: Browser
) -> None:
    """Given a console signed in, when an engineer creates a team, a two-level policy and
    a service, and a monitor alerts over MQTT, then the incident appears without a reload;
    acknowledging it stops the escalation (level 2 is never paged); the incident shows every
    notification masked; marking the service healthy resolves it."""
    daemon = make_pagerd([], {})
    await daemon.start()
    page, errors = await open_page(browser)

    await page.goto(daemon.base_url + "/")
    await page.get_by_label("API token").fill("wrong")
    await page.get_by_role("button", name="Sign in").click()
    await expect_field_error(page.get_by_label("API token"), "not a token of this pagerd")
    await sign_in(page, daemon, name="Dana")
    (cookie,) = await page.context.cookies()
    assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"]) == (
        "pagerd_session",
        True,
        "Strict",
    )
    assert await page.evaluate("document.cookie") == ""  # out of reach of scripts

    # A team, with the brief's create-team API behind the form.
    await page.get_by_role("link", name="Teams").click()
    create = page.locator("form", has=page.get_by_role("heading", name="Create a team"))
    await create.get_by_label("Team name").fill("claims")
    first = create.locator("fieldset", has_text="Developer 1")
    await first.get_by_label("Name").fill("alice")
    await first.get_by_label("Phone number").fill(ALICE)
    await create.get_by_role("button", name="Add another developer").click()
    second = create.locator("fieldset", has_text="Developer 2")
    await expect(second.get_by_label("Name")).to_be_focused()
    await page.keyboard.type("bob")
    await second.get_by_label("Phone number").fill(BOB)
    await create.get_by_role("button", name="Create team").click()
    claims = page.locator(".card", has=page.get_by_role("heading", name="claims"))
    await expect(claims.locator(".rotation li")).to_have_count(2)
    await expect(claims.locator(".rotation li").first).to_contain_text("alice")
    add = claims.locator("form", has=page.get_by_role("heading", name="Add a developer"))
    await add.get_by_label("Name").fill("carol")
    await add.get_by_label("Phone number").fill("12")
    await add.get_by_role("button", name="Add developer").click()
    await expect_field_error(add.get_by_label("Phone number"), PHONE_PROBLEM)
    await add.get_by_label("Phone number").fill(CAROL)
    await add.get_by_role("button", name="Add developer").click()
    await expect(claims.locator(".rotation li")).to_have_count(3)
    await expect(claims.locator(".rotation li").nth(2)).to_contain_text("carol")
    await screenshot(page, "console-teams")

    # A policy: on-call phone first, the team's rotation second.
    await page.get_by_role("link", name="Policies").click()
    await page.get_by_label("Policy id").fill("payments")
    await page.get_by_role("button", name="Create policy").click()
    level1 = page.locator("li.level").nth(0)
    await level1.get_by_label("Acknowledge timeout (seconds)").fill(str(LEVEL_TIMEOUT_S))
    await level1.get_by_label("Phone number").fill(ONCALL)
    await page.get_by_role("button", name="Add level").click()
    level2 = page.locator("li.level").nth(1)
    await level2.get_by_label("Acknowledge timeout (seconds)").fill(str(LEVEL_TIMEOUT_S))
    await level2.get_by_label("Kind").select_option("team")
    await expect(level2.get_by_label("Team")).to_have_value("1")
    await page.get_by_role("button", name="Create policy").click()
    await expect(page.locator(".ok")).to_contain_text("Saved")
    saved = await api(daemon, "GET", "/policies/payments")
    team = {"type": "team", "team": "claims", "team_id": 1}
    assert saved["levels"] == [
        {"ack_timeout_s": LEVEL_TIMEOUT_S, "targets": [sms(ONCALL)]},
        {"ack_timeout_s": LEVEL_TIMEOUT_S, "targets": [team]},
    ]

    # A service using it.
    await page.get_by_role("link", name="Services", exact=True).click()
    await page.get_by_label("Service id").fill("payments-api")
    await page.get_by_label("Name", exact=True).fill("Payments API")
    await page.get_by_label("Escalation policy").select_option("payments")
    await page.get_by_role("button", name="Save service").click()
    row = service_row(page, "payments-api")
    await expect(row.locator(".badge").first).to_have_text("healthy")

    # The alert arrives over MQTT and shows up in the open page.
    await page.evaluate("window.notReloaded = true")
    await monitor.publish("alert", "payments-api", "5xx rate over 20%")
    triggered_at = time.monotonic()
    await expect(row.locator(".badge.unhealthy")).to_be_visible()
    await expect(row).to_contain_text("triggered")
    await expect(row).to_contain_text("5xx rate over 20%")
    await expect(row.get_by_role("button", name="Acknowledge Payments API")).to_be_visible()
    assert await page.evaluate("window.notReloaded") is True
    await eventually(lambda: len(sms_service.to(ONCALL)) == 1, what="level 1 page")
    await screenshot(page, "console-services", readme=True)

    await row.get_by_role("button", name="Acknowledge Payments API").click()
    await expect(row).to_contain_text("acknowledged")
    assert time.monotonic() - triggered_at < LEVEL_TIMEOUT_S, "acked too late to test escalation"
    await expect(row.get_by_role("button", name="Acknowledge Payments API")).to_be_hidden()
    # Past level 1's timeout (and a second more): no level 2 page to the team.
    remaining = LEVEL_TIMEOUT_S + 1.0 - (time.monotonic() - triggered_at)
    await asyncio.sleep(max(remaining, 0))
    assert sms_service.to(ALICE) == []
    assert len(sms_service.pages) == 1

    # The incident: timeline, and the notification with a masked recipient.
    await row.get_by_role("link").click()
    await expect(page.get_by_role("heading", name="5xx rate over 20%", level=1)).to_be_visible()
    notification = page.locator(".notifications tbody tr")
    await expect(notification).to_have_count(1)
    await expect(notification).to_contain_text("SMS")
    await expect(notification).to_contain_text("+155*****001")
    await expect(notification.locator(".badge")).to_have_text("sent")
    await expect(notification.locator("td").nth(3)).to_have_text("1")  # attempts
    timeline = page.locator(".timeline")
    await expect(timeline).to_contain_text("Triggered: “5xx rate over 20%”")
    await expect(timeline).to_contain_text("Paged +155*****001 by SMS (level 1)")
    await expect(timeline).to_contain_text("Acknowledged by Dana in the console")
    assert "Escalated" not in (await timeline.text_content() or "")
    assert ONCALL not in await page.locator("main").inner_text()
    await screenshot(page, "console-incident-acknowledged")

    await page.get_by_role("button", name="Resolve").click()
    await expect(page.locator("h1 .badge")).to_have_text("resolved")
    await expect(timeline).to_contain_text("Resolved by Dana in the console")
    await page.get_by_role("link", name="Services", exact=True).click()
    await expect(row.locator(".badge").first).to_have_text("healthy")
    # Nothing to do but, as for any service, start maintenance.
    await expect(row.get_by_role("button")).to_have_text(["Start maintenance"])
    assert await page.evaluate("window.notReloaded") is True
    await screenshot(page, "console-services-healthy")

    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_label("API token")).to_be_visible()
    assert await page.context.cookies() == []
    no_script_errors(errors)


async def test_policy_editor_shows_the_apis_errors_at_their_fields(
    make_pagerd: PagerdFactory, browser: Browser
) -> None:
    """Given an invalid timeout and phone number, then saving shows the API's 422 problem
    next to each field; levels can be reordered; a policy from the config file is shown
    read-only."""
    daemon = make_pagerd([Policy("from-file", [(60.0, [sms(ONCALL)])])], {"billing": "from-file"})
    await daemon.start()
    page, errors = await open_page(browser)
    await sign_in(page, daemon)

    await page.goto(daemon.base_url + "/#/policies/web")
    await expect(page.get_by_role("heading", name="New policy web")).to_be_visible()
    level1 = page.locator("li.level").nth(0)
    timeout = level1.get_by_label("Acknowledge timeout (seconds)")
    phone = level1.get_by_label("Phone number")
    await timeout.fill("0")
    await phone.fill("12")
    await page.get_by_role("button", name="Create policy").click()
    await expect_field_error(timeout, "must be positive")
    await expect_field_error(phone, PHONE_PROBLEM)
    await expect(page.locator("#policy-problem")).to_contain_text("not saved")
    await expect(timeout).to_be_focused()
    await screenshot(page, "console-policy-errors")

    await timeout.fill("ten")
    await page.get_by_role("button", name="Create policy").click()
    await expect_field_error(timeout, "expected number, got string")

    # Fix it, add a second level, move it up with the keyboard, save.
    await timeout.fill("30")
    await phone.fill(ONCALL)
    await page.get_by_role("button", name="Add level").click()
    level2 = page.locator("li.level").nth(1)
    await expect(level2.get_by_label("Acknowledge timeout (seconds)")).to_be_focused()
    await page.keyboard.type("120")
    await level2.get_by_label("Kind").select_option("email")
    await level2.get_by_label("Email address").fill("oncall@example.com")
    await level2.get_by_role("button", name="Add target").click()
    await level2.get_by_label("Kind").nth(1).select_option("webhook")
    await level2.get_by_label("URL").fill("https://chat.example.com/hook")
    await page.get_by_label("Repeat").fill("2")
    await level2.get_by_role("button", name="Move level 2 up").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("li.level").nth(0).locator("legend").first).to_have_text("Level 1")
    await expect(
        page.locator("li.level").nth(0).get_by_label("Acknowledge timeout (seconds)")
    ).to_have_value("120")
    await page.get_by_role("button", name="Create policy").click()
    await expect(page.locator(".ok")).to_contain_text("Saved")
    await expect(page.get_by_role("button", name="Save policy")).to_be_visible()
    await screenshot(page, "console-policy-editor", readme=True)
    saved = await api(daemon, "GET", "/policies/web")
    assert saved["repeat"] == 2
    assert [level["ack_timeout_s"] for level in saved["levels"]] == [120.0, 30.0]
    assert [t["type"] for t in saved["levels"][0]["targets"]] == ["email", "webhook"]

    # A policy from the config file: read-only, saying why.
    await page.goto(daemon.base_url + "/#/policies/from-file")
    await expect(page.get_by_role("heading", name="Policy from-file")).to_be_visible()
    save = page.get_by_role("button", name="Save policy")
    if await save.is_visible():
        # Only the 409 of a write says the policy is managed (the GET body does not).
        await save.click()
    await expect(page.get_by_role("note")).to_contain_text("config file")
    await expect(page.get_by_role("button", name="Save policy")).to_have_count(0)
    await screenshot(page, "console-policy-read-only")
    no_script_errors(errors)


async def test_phone_sized_screen_lists_services_and_acknowledges(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn, browser: Browser
) -> None:
    """Given a 390x844 screen, then the acknowledge-link page has the console's look, the
    services list fits without sideways scrolling, and the acknowledge button is on screen,
    large enough to tap, and works."""
    daemon = make_pagerd(
        [Policy("p", [(60.0, [sms(ONCALL)]), (60.0, [sms(ALICE)])])], {"api": "p", "db": "p"}
    )
    await daemon.start()
    await monitor.publish("alert", "api", "p99 latency over 2 s")
    await eventually(lambda: len(sms_service.to(ONCALL)) == 1, what="level 1 page")
    page, errors = await open_page(
        browser, viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True
    )

    # The link in the SMS, opened on the phone (GET only shows): the console's sheet.
    link = sms_service.to(ONCALL)[0].message.split(" ack: ")[1]
    await page.goto(link)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Acknowledge this incident?")
    button = page.get_by_role("button", name="Acknowledge")
    colour = await button.evaluate("b => getComputedStyle(b).backgroundColor")
    assert colour == "rgb(11, 87, 208)"  # --blue in style.css: the sheet loaded past the CSP
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    await screenshot(page, "console-phone-ack-page")

    await sign_in(page, daemon, path="/#/services")
    row = service_row(page, "api")
    ack = row.get_by_role("button", name="Acknowledge Service api")
    await expect(ack).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    box = await ack.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 390
    assert box["height"] >= 44  # a finger-sized target
    await screenshot(page, "console-phone-services")
    await ack.tap()
    await expect(row).to_contain_text("acknowledged")
    await expect(row.get_by_role("button", name="Mark Service api healthy")).to_be_visible()
    await screenshot(page, "console-phone-acknowledged")
    no_script_errors(errors)
