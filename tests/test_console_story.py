"""The whole 3 a.m. story (issue 19), at desktop and at phone size: a real pagerd, mosquitto,
the SMS stand-in and Debian's chromium.

An alert arrives; the engineer opens the link from the SMS; sees who else was paged;
acknowledges; adds a note; resolves; and the next morning finds the incident in history,
with every alert and a timeline in plain words.
"""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser import TOKEN, no_script_errors, open_page, screenshot, sign_in
from tests.conftest import PagerdFactory
from tests.harness import Monitor, Policy, SmsStandIn, eventually

ALICE = "+15550000011"
BOB = "+15550000012"
SIZES: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
ALERTS = [
    {"message": "5xx rate over 20%", "alert_id": "prom-1", "source": "prometheus"},
    {"message": "p99 latency over 4 s", "source": "blackbox"},
    {"message": "5xx rate over 35%", "alert_id": "prom-2", "source": "prometheus"},
]
NOTE = "Rolled back deploy 4512; error rate back to normal."


async def fits(page: Page, width: int) -> None:
    """Nothing sticks out sideways: no scrolling a phone screen left and right."""
    assert await page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.mark.parametrize("size", SIZES)
async def test_the_3am_story(
    make_pagerd: PagerdFactory,
    monitor: Monitor,
    sms_service: SmsStandIn,
    browser: Browser,
    size: str,
) -> None:
    """Given two teams paged at level 1, when an alert arrives and two more follow, then
    Alice's SMS link shows the incident and that Bob was paged too; acknowledging there is
    recorded in her name; in the console she adds a note and resolves; the next morning
    the history has the incident, with its three alerts and a timeline in plain words."""
    options: dict[str, Any] = SIZES[size]
    width = options["viewport"]["width"]
    team_targets = [{"type": "team", "team": "claims"}, {"type": "team", "team": "dba"}]
    daemon = make_pagerd(
        [Policy("payments", [(60.0, team_targets)])],
        {"payments-api": "payments"},
        teams={"claims": [("Alice", ALICE)], "dba": [("Bob", BOB)]},
    )
    await daemon.start()

    # 03:12, an alert, and two more while the first page is on its way.
    for alert in ALERTS:
        await monitor.publish("alert", "payments-api", alert)
    await eventually(lambda: len(sms_service.to(ALICE)) == 1, what="Alice paged")
    await eventually(lambda: len(sms_service.to(BOB)) == 1, what="Bob paged")
    link = sms_service.to(ALICE)[0].message.split(" ack: ")[1]

    # The link in her SMS: the incident, who else was paged, and the button.
    page, errors = await open_page(browser, **options)
    await page.goto(link)
    await expect(page.get_by_role("heading", level=1)).to_have_text("Acknowledge this incident?")
    paged = page.locator(".paged li")
    await expect(paged).to_have_count(2)
    await expect(paged.filter(has_text="Bob by SMS, level 1")).to_have_count(1)
    await expect(paged.filter(has_text="Alice by SMS, level 1")).to_have_count(1)
    await fits(page, width)
    await screenshot(page, f"story-{size}-1-link")
    await page.get_by_role("button", name="Acknowledge").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Acknowledged")

    # On to the console: sign in, and land on this incident.
    await page.get_by_role("link", name="Open this incident in the console").click()
    await page.get_by_label("Your name").fill("Alice")
    await page.get_by_label("API token").fill(TOKEN)
    await page.get_by_role("button", name="Sign in").click()
    heading = page.get_by_role("heading", level=1)
    await expect(heading).to_have_text("acknowledged 5xx rate over 20%")
    timeline = page.locator(".timeline")
    await expect(timeline).to_contain_text("Acknowledged by Alice via the SMS link")
    who = page.locator(".notifications tbody tr")
    await expect(who.filter(has_text="Bob")).to_contain_text("sent")
    await expect(who.filter(has_text="Alice")).to_contain_text("sent")

    # A note, then resolved: both in her name, in order.
    await page.get_by_label("Add a note").fill(NOTE)
    await page.get_by_role("button", name="Add note").click()
    await expect(timeline).to_contain_text(f"Note by Alice: {NOTE}")
    await expect(page.get_by_label("Add a note")).to_have_value("")
    await page.get_by_role("button", name="Resolve").click()
    await expect(heading).to_have_text("resolved 5xx rate over 20%")
    await expect(timeline).to_contain_text("Resolved by Alice in the console")
    await fits(page, width)
    no_script_errors(errors)
    await page.context.close()

    # The next morning, another browser: the incident is in the history.
    page, errors = await open_page(browser, **options)
    await sign_in(page, daemon, name="Alice")
    await expect(page.locator(".all-clear")).to_have_text("No open incidents. All quiet.")
    await page.get_by_label("Status").select_option("resolved")
    await page.get_by_label("Service id").fill("payments-api")
    await page.get_by_label("Opened").select_option("24h")
    await page.get_by_role("button", name="Filter").click()
    found = page.locator("section", has=page.get_by_role("heading", name="History")).locator(
        "tbody tr"
    )
    await expect(found).to_have_count(1)
    await expect(found).to_contain_text("resolved")
    await expect(found).to_contain_text("Alice")  # who acknowledged it
    await expect(found).to_contain_text("3 alerts")
    await fits(page, width)
    await screenshot(page, f"story-{size}-2-history")
    await found.get_by_role("link", name="5xx rate over 20%").click()

    alerts = page.locator(".alerts li")
    await expect(alerts).to_have_count(3)
    for n, alert in enumerate(reversed(ALERTS)):  # newest first
        await expect(alerts.nth(n)).to_contain_text(alert["message"])
        await expect(alerts.nth(n)).to_contain_text(f"from {alert['source']}")
    events = page.locator(".timeline li .event")
    await expect(events).to_have_count(6)
    said = await events.all_inner_texts()
    # The two pages went out together: in the order their sends finished.
    assert [said[0], sorted(said[1:3]), *said[3:]] == [
        "Triggered: “5xx rate over 20%”",
        ["Paged Alice by SMS (level 1)", "Paged Bob by SMS (level 1)"],
        "Acknowledged by Alice via the SMS link",
        f"Note by Alice: {NOTE}",
        "Resolved by Alice in the console",
    ]
    text = await page.locator("main").inner_text()
    assert "incident." not in text
    assert "notification." not in text
    await fits(page, width)
    await screenshot(page, f"story-{size}-3-incident")
    if size == "desktop":
        await screenshot(page, "console-incident", readme=True, whole=True)
    no_script_errors(errors)
