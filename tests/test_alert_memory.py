"""Memory per open incident is bounded however many alerts it absorbs (CONTRACT §9, issue
#13 point 8), and nothing is lost by forgetting: the store's unique index keeps each
alert id once, and a PagerDuty resolve finds an alert the incident no longer remembers."""

from __future__ import annotations

import aiohttp

from pagerd.core.domain import MAX_REMEMBERED_ALERT_IDS
from tests.conftest import PagerdFactory
from tests.harness import API_TOKEN, Monitor, Policy, SmsStandIn, eventually, sms, sqlite_rows

PAGER = "+15550000001"


async def test_an_alert_id_older_than_the_incident_remembers_is_still_recorded_once(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given an incident that absorbed more alert ids than it remembers, when the first one
    comes again, then it is recorded once; and a PagerDuty resolve naming another one it
    forgot as its dedup_key resolves the incident."""
    daemon = make_pagerd([Policy("p", [(600.0, [sms(PAGER)])])], {"api": "p"})
    await daemon.start()
    total = MAX_REMEMBERED_ALERT_IDS + 500
    for n in range(total):
        await monitor.publish("alert", "api", {"message": "down", "alert_id": f"k-{n}"})
    count = "SELECT count(*) FROM alerts"
    await eventually(lambda: sqlite_rows(daemon.db, count) == [(total,)], timeout=30, what="all")

    await monitor.publish("alert", "api", {"message": "down", "alert_id": "k-0"})
    await monitor.publish("alert", "api", {"message": "down", "alert_id": "k-last"})
    await eventually(lambda: sqlite_rows(daemon.db, count) == [(total + 1,)], what="k-last")
    assert sqlite_rows(daemon.db, "SELECT count(*) FROM alerts WHERE alert_id = 'k-0'") == [(1,)]

    resolve = {"routing_key": "api", "event_action": "resolve", "dedup_key": "k-1"}
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    url = f"{daemon.base_url}/integrations/pagerduty/v2/enqueue"
    async with aiohttp.ClientSession(headers=headers) as http, http.post(url, json=resolve) as got:
        assert got.status == 202
    status = "SELECT status FROM incidents"
    await eventually(lambda: sqlite_rows(daemon.db, status) == [("resolved",)], what="resolved")
    assert len(sms_service.pages) == 1
