"""The console's views (issue 19), each at desktop and at phone size, against a real
pagerd, mosquitto, the SMS stand-in and Debian's chromium: the incidents (open first,
history by filter and cursor, bulk acknowledge), an incident's alerts and pages held or
cancelled, services a page at a time with search, and live updates without polling.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from tests.browser import (
    BEARER,
    ONCALL,
    api,
    no_script_errors,
    open_page,
    screenshot,
    service_row,
    sign_in,
)
from tests.conftest import PagerdFactory
from tests.harness import Monitor, Pagerd, Policy, SmsStandIn, eventually, sms

SIZES: dict[str, dict[str, Any]] = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}
PAGE = 50  # the console's page of incidents and services
QUIET_S = 5.0  # how long a view is watched for requests it should not make
SETTLE_S = 1.5  # events re-read a list at most twice a second (live.js coalesced)


async def fits(page: Page, width: int) -> None:
    assert await page.evaluate("document.documentElement.scrollWidth") <= width


def api_reads(page: Page, path: str) -> list[str]:
    """The GETs of ``/api/v1{path}...`` the page will make, as they come."""
    seen: list[str] = []
    prefix = f"/api/v1{path}"

    def record(request: Any) -> None:
        url = request.url.split("://", 1)[1]
        if request.method == "GET" and url[url.index("/") :].startswith(prefix):
            seen.append(request.url)

    page.on("request", record)
    return seen


async def incidents_of(daemon: Pagerd, service_id: str, count: int) -> None:
    """``count`` incidents of the service, each opened and resolved (history)."""
    async with aiohttp.ClientSession(headers=BEARER) as http:
        base = f"{daemon.base_url}/api/v1/services/{service_id}"
        for n in range(count):
            async with http.post(f"{base}/alerts", json={"message": f"old trouble {n}"}) as r:
                assert r.status == 202
            async with http.post(f"{base}/healthy") as r:
                assert r.status == 200


def section(page: Page, name: str) -> Locator:
    return page.locator("section", has=page.get_by_role("heading", name=name, level=2))


@pytest.mark.parametrize("size", SIZES)
async def test_incidents_open_first_then_history_with_filters_pages_and_bulk_ack(
    make_pagerd: PagerdFactory,
    monitor: Monitor,
    sms_service: SmsStandIn,
    browser: Browser,
    size: str,
) -> None:
    """Given three open incidents (one acknowledged by Bob) and 55 resolved ones, then the
    home shows the open ones newest first with who acknowledged and when; the history
    pages by 50 with "Show older"; all triggered ones are acknowledged at once, in the
    signed-in name; the filters narrow the history and stay in the address; a new alert
    shows up without a reload and nothing is read on a timer; the notice of an action is
    gone on the next page."""
    options: dict[str, Any] = SIZES[size]
    services = dict.fromkeys(("alpha", "beta", "gamma", "delta", "old"), "p")
    daemon = make_pagerd([Policy("p", [(60.0, [sms(ONCALL)])])], services)
    await daemon.start()
    await incidents_of(daemon, "old", 55)
    for service_id in ("alpha", "beta", "gamma"):
        await api(
            daemon, "POST", f"/services/{service_id}/alerts", {"message": f"{service_id} down"}
        )
    await api(daemon, "POST", "/services/beta/ack", {"by": "Bob"})

    page, errors = await open_page(browser, **options)
    await sign_in(page, daemon, name="Dana")
    open_rows = section(page, "Open").locator("tbody tr")
    await expect(open_rows).to_have_count(3)
    await expect(open_rows.get_by_role("link")).to_have_text(
        ["gamma down", "beta down", "alpha down"]
    )
    await expect(open_rows.nth(1)).to_contain_text("Bob")
    await expect(open_rows.nth(0)).to_contain_text("nobody yet")
    history = section(page, "History").locator("tbody tr")
    await expect(history).to_have_count(PAGE)
    await expect(history.first).to_contain_text("old trouble 54")  # resolved, newest first
    await screenshot(page, f"console-incidents-{size}")
    if size == "desktop":
        await screenshot(page, "console-incidents", readme=True)
    await section(page, "History").get_by_role("button", name="Show older incidents").click()
    await expect(history).to_have_count(55)
    await expect(history.last).to_contain_text("old trouble 0")
    await expect(page.get_by_role("button", name="Show older incidents")).to_be_hidden()

    # Bulk acknowledge, by keyboard: the two triggered ones, in Dana's name.
    await page.get_by_label("All triggered").focus()
    await page.keyboard.press("Space")
    bulk = page.get_by_role("button", name="Acknowledge 2 selected")
    await bulk.focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#notice")).to_have_text(
        "Acknowledged 2 incidents: escalation stopped."
    )
    await expect(open_rows.filter(has_text="Dana")).to_have_count(2)
    await expect(open_rows.locator(".badge.triggered")).to_have_count(0)
    timeline = (await api(daemon, "GET", "/incidents?service_id=alpha"))["incidents"][0]
    assert timeline["acknowledged_by"] == "Dana"

    # A new alert shows up by itself; meanwhile nothing is read again on a timer. (The
    # acknowledgements' own events re-read the list once, within half a second: let them.)
    await asyncio.sleep(SETTLE_S)
    reads = api_reads(page, "/incidents")
    await asyncio.sleep(QUIET_S)
    assert reads == [], "the console re-read incidents with nothing new"
    await monitor.publish("alert", "delta", "delta on fire")
    await expect(open_rows.first.get_by_role("link")).to_have_text("delta on fire")
    assert 1 <= len(reads) <= 3  # the open list, read again once per burst of events

    # Filters: status, service and time, kept in the address.
    await page.get_by_label("Status").select_option("any")
    await page.get_by_label("Service id").fill("alpha")
    await page.get_by_label("Opened").select_option("24h")
    await page.get_by_role("button", name="Filter").click()
    await expect(history).to_have_count(1)
    await expect(history).to_contain_text("alpha down")
    assert "status=any" in page.url
    assert "service=alpha" in page.url
    await page.get_by_label("Status").select_option("resolved")
    await page.get_by_role("button", name="Filter").click()
    await expect(section(page, "History").get_by_text("No incidents match.")).to_be_visible()
    await page.reload()
    await expect(page.get_by_label("Status")).to_have_value("resolved")
    await expect(page.get_by_label("Service id")).to_have_value("alpha")
    await expect(page.get_by_label("Opened")).to_have_value("24h")

    # The notice of an action belongs to its page.
    await page.get_by_label("All triggered").check()
    await page.get_by_role("button", name="Acknowledge 1 selected").click()
    await expect(page.locator("#notice")).to_have_text(
        "Acknowledged 1 incident: escalation stopped."
    )
    await page.get_by_role("link", name="Services", exact=True).click()
    await expect(page.get_by_role("heading", name="Services", level=1)).to_be_visible()
    await expect(page.locator("#notice")).to_have_text("")
    await fits(page, options["viewport"]["width"])
    no_script_errors(errors)


@pytest.mark.parametrize("size", SIZES)
async def test_an_incident_shows_every_alert_and_pages_held_or_cancelled(
    make_pagerd: PagerdFactory,
    monitor: Monitor,
    sms_service: SmsStandIn,
    browser: Browser,
    size: str,
) -> None:
    """Given one phone paged for two incidents within a bundle window, the second page
    held, when the second incident is acknowledged, then its page is cancelled, and its
    page says both in plain words; the first incident, with 25 alerts, shows the 20 newest
    and the rest a click away, and a note written elsewhere appears by itself."""
    options: dict[str, Any] = SIZES[size]
    daemon = make_pagerd(
        [Policy("p", [(60.0, [sms(ONCALL)])])],
        {"storm": "p", "quiet": "p"},
        notify={"bundle_window_s": 60, "bundle_after": 1},
    )
    await daemon.start()
    first = await api(daemon, "POST", "/services/storm/alerts", {"message": "alert 0"})
    for n in range(1, 25):
        await monitor.publish("alert", "storm", {"message": f"alert {n}", "source": "grafana"})
    second = await api(daemon, "POST", "/services/quiet/alerts", {"message": "disk full"})
    await eventually(lambda: len(sms_service.to(ONCALL)) == 1, what="the first page")
    await api(daemon, "POST", "/services/quiet/ack", {"by": "Erin"})

    page, errors = await open_page(browser, **options)
    await sign_in(page, daemon, path=f"/#/incidents/{second['incident_id']}")
    pages = page.locator(".notifications tbody tr")
    await expect(pages).to_have_count(1)
    await expect(pages).to_contain_text("cancelled")
    events = page.locator(".timeline .event")
    await expect(
        events.filter(has_text="Held the page to +155*****001 by SMS (level 1) until")
    ).to_contain_text("too many pages at once")
    await expect(
        events.filter(has_text="Did not page +155*****001 by SMS (level 1)")
    ).to_contain_text("the incident was acknowledged first")
    await expect(events.filter(has_text="Acknowledged by Erin through the API")).to_have_count(1)
    await fits(page, options["viewport"]["width"])
    await screenshot(page, f"console-incident-held-{size}")

    await page.goto(f"{daemon.base_url}/#/incidents/{first['incident_id']}")
    alerts = page.locator(".alerts li")
    await expect(alerts).to_have_count(20)
    await expect(alerts.first).to_contain_text("alert 24")
    await expect(alerts.first).to_contain_text("from grafana")
    await page.get_by_role("button", name="Show older alerts").click()
    await expect(alerts).to_have_count(25)
    await expect(alerts.last).to_contain_text("alert 0")
    await expect(page.get_by_role("button", name="Show older alerts")).to_be_hidden()
    await expect(page.locator(".facts")).to_contain_text("25")
    # Live: a note written elsewhere shows up without a reload.
    await api(daemon, "POST", f"/incidents/{first['incident_id']}/notes", {"text": "on it"})
    await expect(page.locator(".timeline")).to_contain_text("Note by api: on it")
    no_script_errors(errors)


@pytest.mark.parametrize("size", SIZES)
async def test_services_come_a_page_at_a_time_unhealthy_first_with_search_and_live_rows(
    make_pagerd: PagerdFactory,
    monitor: Monitor,
    sms_service: SmsStandIn,
    browser: Browser,
    size: str,
) -> None:
    """Given 120 services, two unhealthy, then the services view shows 50, the unhealthy
    first, and 50 more on request; a search finds by id or name; a service that turns
    unhealthy moves up among them and an acknowledgement elsewhere changes its row,
    without a reload and without reading the list on a timer."""
    options: dict[str, Any] = SIZES[size]
    services = {f"svc-{n:03d}": "p" for n in range(120)}
    daemon = make_pagerd([Policy("p", [(60.0, [sms(ONCALL)])])], services)
    await daemon.start()
    for service_id in ("svc-077", "svc-010"):
        await api(
            daemon, "POST", f"/services/{service_id}/alerts", {"message": f"{service_id} down"}
        )

    page, errors = await open_page(browser, **options)
    await sign_in(page, daemon, path="/#/services")
    rows = page.locator("table.services tbody tr")
    await expect(rows).to_have_count(PAGE)
    ids = await rows.evaluate_all("rows => rows.map(r => r.dataset.service)")
    assert ids[:3] == ["svc-010", "svc-077", "svc-000"]
    await expect(page.locator(".summary")).to_have_text("2 unhealthy of the 50 shown.")
    await page.get_by_role("button", name="Show more services").click()
    await expect(rows).to_have_count(100)

    reads = api_reads(page, "/services")
    await asyncio.sleep(QUIET_S)
    assert reads == [], "the console re-read services with nothing new"
    await monitor.publish("alert", "svc-119", "svc-119 down")
    await expect(rows.nth(2)).to_have_attribute("data-service", "svc-119")  # unhealthy, by id
    await expect(service_row(page, "svc-119")).to_contain_text("triggered")
    await expect(rows).to_have_count(100)  # as many as were shown
    await api(daemon, "POST", "/services/svc-077/ack", {"by": "Frank"})
    await expect(service_row(page, "svc-077")).to_contain_text("acknowledged")
    await expect(page.locator(".summary")).to_have_text("3 unhealthy of the 100 shown.")
    await fits(page, options["viewport"]["width"])
    await screenshot(page, f"console-services-{size}")

    search = page.get_by_label("Search")
    await search.fill("SVC-11")  # any case
    await expect(rows).to_have_count(10)
    await expect(rows.first).to_have_attribute("data-service", "svc-119")
    assert "q=SVC-11" in page.url
    await search.fill("Service svc-007")  # the name
    await expect(rows).to_have_count(1)
    await search.fill("nothing like it")
    await expect(
        page.get_by_text("No service has “nothing like it” in its id or name.")
    ).to_be_visible()
    no_script_errors(errors)
