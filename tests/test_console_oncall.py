"""On call, maintenance and heartbeats in the console (issue 19, CONTRACT §8), at desktop
and phone size, against a real pagerd and Debian's chromium.

Who is on call now and until when, the next three hand-overs, overrides added and
removed; a service's maintenance started and ended from its row, and its heartbeat shown.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from playwright.async_api import Browser, Page, expect

from tests.browser import ONCALL, api, no_script_errors, open_page, screenshot, service_row, sign_in
from tests.conftest import PagerdFactory
from tests.harness import Policy, SmsStandIn, eventually, sms

SIZES: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
CLAIMS = [("Alice", "+15550000011"), ("Bob", "+15550000012"), ("Carol", "+15550000013")]


async def fits(page: Page, width: int) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth") <= width


@pytest.mark.parametrize("size", SIZES)
async def test_who_is_on_call_the_next_hand_overs_and_overrides(
    make_pagerd: PagerdFactory, sms_service: SmsStandIn, browser: Browser, size: str
) -> None:
    """Given a daily rotation of three, then the on-call page says who is on call now and
    until the next hand-over, and the three after it, in turn; an override added for
    the one on call already is no hand-over where it ends, and can be removed; an
    override made through the API shows up without a reload."""
    options = SIZES[size]
    daemon = make_pagerd([], {}, teams={"claims": CLAIMS})
    await daemon.start()
    [team] = (await api(daemon, "GET", "/teams"))["teams"]
    ids = {d["name"]: d["id"] for d in team["developers"]}
    rotation = {
        "start": "2026-12-01T09:00:00",
        "shift_s": 86_400,
        "developer_ids": list(ids.values()),
    }
    await api(
        daemon,
        "PUT",
        "/schedules/primary",
        {"team_id": team["team"]["id"], "time_zone": "Europe/Paris", "rotations": [rotation]},
    )
    now = await api(daemon, "GET", "/schedules/primary/oncall")

    page, errors = await open_page(browser, **options)
    await sign_in(page, daemon, path="/#/oncall")
    card = page.locator("[data-schedule=primary]")
    await expect(card.locator(".now")).to_contain_text(
        f"{now['developer']['name']} is on call now, until"
    )
    handovers = card.locator(".handovers li")
    await expect(handovers).to_have_count(3)
    order = [name for name, _ in CLAIMS]
    first = order.index(now["developer"]["name"])
    for n in range(3):
        await expect(handovers.nth(n)).to_contain_text(order[(first + 1 + n) % 3])
    await expect(card.locator(".overrides li")).to_have_count(0)

    # An override for the one on call already changes who is on call in nothing: no
    # hand-over where it ends, the shift goes on.
    on_call = order[first]
    form = card.get_by_role("form", name="Add an override to primary")
    await form.get_by_label("Who").select_option(label=on_call)
    await form.get_by_role("button", name="Add override").click()
    await expect(page.locator("#notice")).to_have_text("Override added to primary.")
    card = page.locator("[data-schedule=primary]")
    await expect(card.locator(".overrides li")).to_have_count(1)
    await expect(card.locator(".overrides li")).to_contain_text(on_call)
    await expect(card.locator(".now")).to_contain_text(f"{on_call} is on call now")
    await expect(handovers.first).to_contain_text(order[(first + 1) % 3])

    await card.get_by_role("button", name=f"Remove the override of {on_call}").click()
    await expect(page.locator("#notice")).to_have_text(f"Override of {on_call} removed.")
    card = page.locator("[data-schedule=primary]")
    await expect(card.locator(".overrides-none")).to_have_text("None.")

    # An override made elsewhere (the API, another console) shows up by itself; the
    # rotation's developer takes over again where it ends.
    other = order[(first + 1) % 3]
    start = datetime.now(UTC) - timedelta(minutes=1)
    override = {
        "developer_id": ids[other],
        "start": start.isoformat(),
        "end": (start + timedelta(hours=2)).isoformat(),
    }
    await api(daemon, "POST", "/schedules/primary/overrides", override)
    await expect(card.locator(".now")).to_contain_text(f"{other} is on call now")
    await expect(card.locator(".overrides li")).to_contain_text(other)
    await expect(handovers.first).to_contain_text(on_call)
    await fits(page, options["viewport"]["width"])
    await screenshot(page, f"console-oncall-{size}")
    if size == "desktop":
        await screenshot(page, "console-oncall", readme=True, whole=True)
    no_script_errors(errors)


@pytest.mark.parametrize("size", SIZES)
async def test_maintenance_starts_and_ends_from_a_services_row(
    make_pagerd: PagerdFactory, sms_service: SmsStandIn, browser: Browser, size: str
) -> None:
    """Given a service that beats every 60 s, then its row says so; starting maintenance
    there shows until when, an alert meanwhile pages nobody, and ending it gives the
    button back."""
    options = SIZES[size]
    daemon = make_pagerd([Policy("p", [(60.0, [sms(ONCALL)])])], {})
    await daemon.start()
    await api(
        daemon, "PUT", "/services/db", {"policy_id": "p", "name": "Database", "heartbeat_s": 60}
    )

    page, errors = await open_page(browser, **options)
    await sign_in(page, daemon, path="/#/services")
    row = service_row(page, "db")
    await expect(row).to_contain_text("beats every 60 s")
    await row.get_by_role("button", name="Start maintenance of Database").click()
    await expect(row).to_contain_text("in maintenance until")
    await api(daemon, "POST", "/services/db/alerts", {"message": "disk slow"})
    await expect(row.locator(".badge").first).to_have_text("healthy")
    assert sms_service.to(ONCALL) == []
    await row.get_by_role("button", name="End maintenance of Database").click()
    await expect(row).not_to_contain_text("in maintenance")
    await expect(row.get_by_role("button", name="Start maintenance of Database")).to_be_visible()
    await fits(page, options["viewport"]["width"])
    no_script_errors(errors)


@pytest.mark.parametrize("size", SIZES)
async def test_a_missed_heartbeat_and_its_return_in_plain_words(
    make_pagerd: PagerdFactory, sms_service: SmsStandIn, browser: Browser, size: str
) -> None:
    """Given a service whose beat is missed, then a beat, then its incident's timeline says
    that the heartbeat was missed and that it came back, not who "heartbeat" is."""
    options = SIZES[size]
    daemon = make_pagerd([Policy("p", [(60.0, [sms(ONCALL)])])], {})
    await daemon.start()
    await api(daemon, "PUT", "/services/cron", {"policy_id": "p", "heartbeat_s": 0.5})

    await eventually(lambda: len(sms_service.to(ONCALL)) == 1, what="the missed beat's page")
    incident = (await api(daemon, "GET", "/services/cron"))["incident"]
    await api(daemon, "POST", "/services/cron/heartbeat")

    page, errors = await open_page(browser, **options)
    await sign_in(page, daemon, path=f"/#/incidents/{incident['id']}")
    timeline = page.locator(".timeline")
    await expect(timeline).to_contain_text("Triggered: “no heartbeat for 0.5 s”")
    await expect(timeline).to_contain_text("Resolved: the heartbeat came back")
    await fits(page, options["viewport"]["width"])
    no_script_errors(errors)


@pytest.mark.parametrize("size", SIZES)
async def test_a_page_skipped_because_nobody_is_on_call_says_so(
    make_pagerd: PagerdFactory, sms_service: SmsStandIn, browser: Browser, size: str
) -> None:
    """Given a policy that pages a schedule whose rotation has not begun, when an alert
    opens an incident, then its page says nobody was paged and why, and the page's
    outcome is skipped, in plain words; nothing is sent."""
    options = SIZES[size]
    daemon = make_pagerd([], {}, teams={"claims": CLAIMS})
    await daemon.start()
    [team] = (await api(daemon, "GET", "/teams"))["teams"]
    rotation = {
        "start": "2099-01-01T09:00:00",
        "shift_s": 86_400,
        "developer_ids": [d["id"] for d in team["developers"]],
    }
    body = {"team_id": team["team"]["id"], "time_zone": "UTC", "rotations": [rotation]}
    await api(daemon, "PUT", "/schedules/later", body)
    target = {"type": "schedule", "schedule": "later"}
    await api(daemon, "PUT", "/policies/p", {"levels": [{"targets": [target]}]})
    await api(daemon, "PUT", "/services/api", {"policy_id": "p"})
    opened = await api(daemon, "POST", "/services/api/alerts", {"message": "api down"})

    page, errors = await open_page(browser, **options)
    await sign_in(page, daemon, path=f"/#/incidents/{opened['incident_id']}")
    await expect(page.locator(".notifications")).to_contain_text("skipped: nobody on call")
    await expect(page.locator(".timeline")).to_contain_text(
        "Paged nobody (level 1): nobody is on call on schedule 'later'"
    )
    assert sms_service.pages == []  # a skipped page is never sent
    await fits(page, options["viewport"]["width"])
    no_script_errors(errors)
