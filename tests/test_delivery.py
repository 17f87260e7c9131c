"""Notification delivery end to end: retries, failures, crashes mid-send, bundling."""

from __future__ import annotations

import asyncio
import json
import time
from functools import partial
from pathlib import Path

import aiohttp

from tests.conftest import PagerdFactory
from tests.harness import (
    API_TOKEN,
    Monitor,
    Policy,
    SmsStandIn,
    eventually,
    free_port,
    sms,
    sqlite_rows,
)

ONE = "+15550000001"
TWO = "+15550000002"


def timeline(db: object, kind: str) -> list[dict[str, object]]:
    rows = sqlite_rows(db, "SELECT detail FROM timeline WHERE type = ? ORDER BY seq", kind)  # type: ignore[arg-type]
    return [json.loads(detail) for (detail,) in rows]


def two_levels(timeout: float = 30.0) -> list[Policy]:
    return [Policy("p", [(timeout, [sms(ONE)]), (timeout, [sms(TWO)])])]


async def test_server_errors_are_retried_with_the_same_key_until_delivered(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given the SMS service answers 500, 500, then 200, then exactly one page is delivered,
    after three attempts in the timeline, each with the same Idempotency-Key."""
    sms_service.statuses = [500, 500]
    daemon = make_pagerd(two_levels(), {"api": "p"})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(timeline(daemon.db, "notification.sent")) == 1, what="sent")

    assert len(sms_service.pages) == 3
    assert len(sms_service.distinct_keys()) == 1
    retries = timeline(daemon.db, "notification.retrying")
    assert [r["attempt"] for r in retries] == [1, 2]
    assert all(r["error"] == "HTTP 500" for r in retries)
    assert timeline(daemon.db, "notification.sent")[0]["attempt"] == 3
    assert sqlite_rows(daemon.db, "SELECT status, attempts FROM outbox") == [("sent", 3)]


async def test_client_error_fails_at_once_and_pages_the_next_level_at_once(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given the SMS service refuses level 1's page with 400, then it is not retried, and
    level 2 is paged at once instead of after the 30 s timeout."""
    sms_service.statuses = [400]
    daemon = make_pagerd(two_levels(timeout=30.0), {"api": "p"})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.to(TWO)) == 1, timeout=5, what="level 2 at once")

    assert len(sms_service.to(ONE)) == 1  # one attempt only
    (failed,) = timeline(daemon.db, "notification.failed")
    assert failed["error"] == "HTTP 400"
    events = [e["event"] for e in daemon.log_events()]
    assert "notification.failed" in events
    assert "notification.level_failed" in events


async def test_timeouts_are_retried(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given the SMS service takes longer than [notify.sms] timeout_s, then the page is retried."""
    sms_service.delays = [3.0]  # the harness configures timeout_s = 2
    daemon = make_pagerd(two_levels(), {"api": "p"})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(
        lambda: len(timeline(daemon.db, "notification.sent")) == 1, timeout=8, what="sent"
    )
    (retry,) = timeline(daemon.db, "notification.retrying")
    assert retry["error"] == "timeout"


async def test_connection_refused_is_retried_then_failed_loudly(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given nothing listens at the SMS URL, then each page is retried up to max_attempts,
    then failed, logged and counted, and the next level is paged (by its own failure, too)."""
    daemon = make_pagerd(
        two_levels(),
        {"api": "p"},
        sms_url=f"http://127.0.0.1:{free_port()}/sms",
        notify={"bundle_window_s": 0, "max_attempts": 3},
    )
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(
        lambda: len(timeline(daemon.db, "notification.failed")) == 2,
        timeout=10,
        what="both levels failed",
    )
    retries = timeline(daemon.db, "notification.retrying")
    assert len(retries) == 4  # two per page, the third attempt fails it
    assert all(r["error"] == "connection refused" for r in retries)
    statuses = sqlite_rows(daemon.db, "SELECT level, status, attempts FROM outbox ORDER BY level")
    assert statuses == [(1, "failed", 3), (2, "failed", 3)]


async def test_retry_after_is_honoured(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given a 429 with Retry-After: 2, then the next attempt waits two seconds."""
    sms_service.statuses = [429]
    sms_service.retry_after = "2"
    daemon = make_pagerd(two_levels(), {"api": "p"})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.pages) == 2, timeout=6, what="second attempt")
    gap = sms_service.pages[1].at - sms_service.pages[0].at
    assert 1.9 <= gap <= 3.0, f"retried after {gap:.2f}s"


PATIENT = {"bundle_window_s": 0, "max_attempts": 100, "max_age_s": 3600}


def first_arrivals(sms_service: SmsStandIn) -> dict[str, float]:
    """When each notification id first reached the stand-in."""
    first: dict[str, float] = {}
    for page in sms_service.pages:
        first.setdefault(page.key, page.at)
    return first


def pages_by_step(db: Path) -> dict[str, list[tuple[int, str]]]:
    """incident id -> [(step, notification id)] in step order."""
    rows = sqlite_rows(db, "SELECT incident_id, step, id FROM outbox ORDER BY step, id")
    out: dict[str, list[tuple[int, str]]] = {}
    for incident, step, nid in rows:
        out.setdefault(incident, []).append((step, nid))
    return out


def arrival_order_kept(db: Path, sms_service: SmsStandIn) -> dict[str, bool]:
    """incident id -> whether its pages first arrived in step order."""
    first = first_arrivals(sms_service)
    return {
        incident: [first[nid] for _, nid in pages] == sorted(first[nid] for _, nid in pages)
        for incident, pages in pages_by_step(db).items()
    }


async def test_after_an_outage_each_incidents_pages_arrive_in_level_order(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given the SMS service down while eight incidents escalate from level 1 to level 2,
    when it comes back, then every page is delivered once, and each incident's level 1
    page arrives before its level 2 page (level 2 does not overtake a level 1 page still
    backing off)."""
    services = [f"svc-{i}" for i in range(8)]
    daemon = make_pagerd(two_levels(timeout=0.3), dict.fromkeys(services, "p"), notify=PATIENT)
    await daemon.start()
    await sms_service.stop()
    for service in services:
        await monitor.publish("alert", service, "down")

    def backing_off() -> bool:
        # Level 1 pages three attempts in (their next wait is up to 2 s), level 2 decided.
        level_1 = sqlite_rows(daemon.db, "SELECT attempts FROM outbox WHERE level = 1")
        return (
            len(level_1) == len(services)
            and all(attempts >= 3 for (attempts,) in level_1)
            and count_level(daemon.db, 2) == len(services)
        )

    await eventually(backing_off, timeout=15, what="level 1 backing off, level 2 decided")
    await sms_service.start()
    await eventually(
        lambda: count_pages(daemon.db) == 2 * len(services),
        timeout=20,
        what="every page delivered after the outage",
    )
    ids = {nid for pages in pages_by_step(daemon.db).values() for _, nid in pages}
    assert sms_service.distinct_keys() == ids
    assert timeline(daemon.db, "notification.failed") == []
    order = arrival_order_kept(daemon.db, sms_service)
    assert [incident for incident, kept in order.items() if not kept] == []


async def test_a_page_waiting_to_be_retried_holds_back_only_its_own_incident(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given incident A's level 1 page answered 503 with Retry-After: 2, then A's level 2
    page waits for it and follows it, while incident B, alerting meanwhile, has both its
    levels paged at once; pages of one level (two phones) go without waiting for each
    other."""
    sms_service.statuses = [503]
    sms_service.retry_after = "2"
    three = "+15550000003"
    daemon = make_pagerd(
        [Policy("p", [(0.5, [sms(ONE)]), (0.5, [sms(TWO), sms(three)])])],
        {"a": "p", "b": "p"},
        notify=PATIENT,
    )
    await daemon.start()
    await monitor.publish("alert", "a", "down")
    await eventually(lambda: len(sms_service.pages) == 1, what="A's level 1 page refused")
    refused_at = sms_service.pages[0].at
    await monitor.publish("alert", "b", "down")
    await eventually(lambda: count_pages(daemon.db) == 6, timeout=10, what="every page sent")

    a_incident = sms_service.pages[0].key.rsplit("-", 2)[0]  # ids are {incident}-{step}-{n}
    first = first_arrivals(sms_service)
    steps = pages_by_step(daemon.db)
    a_pages, b_pages = steps.pop(a_incident), next(iter(steps.values()))
    a_level_1 = [p for p in sms_service.pages if p.key == a_pages[0][1]]
    assert len(a_level_1) == 2, "refused once, then delivered"
    assert 1.9 <= a_level_1[1].at - refused_at <= 3.0, "Retry-After honoured"
    assert all(first[nid] >= a_level_1[1].at for _, nid in a_pages[1:]), "A's level 2 waited"
    assert all(first[nid] < a_level_1[1].at for _, nid in b_pages), "B was not held up"
    assert all(arrival_order_kept(daemon.db, sms_service).values())


async def test_a_send_in_flight_at_shutdown_has_its_outcome_committed(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given the SMS service answering after 1 s, when pagerd is told to stop while the
    page is in flight, then the send completes and is committed as sent before exit."""
    sms_service.delays = [1.0]
    daemon = make_pagerd(two_levels(), {"api": "p"})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.pages) == 1, what="page in flight")
    assert await daemon.stop() == 0
    assert sqlite_rows(daemon.db, "SELECT status, attempts FROM outbox") == [("sent", 1)]
    (sent,) = timeline(daemon.db, "notification.sent")
    assert sent["attempt"] == 1


async def test_page_cut_off_by_a_crash_is_resent_with_the_same_key(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given the SMS service received a page but pagerd died before marking it sent, then
    after restart it is sent again with the same Idempotency-Key (so a receiver that
    de-duplicates by key shows one page)."""
    sms_service.delays = [30.0]  # the first request hangs: pagerd never learns the outcome
    daemon = make_pagerd(two_levels(), {"api": "p"})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.pages) == 1, what="page received")
    daemon.kill()
    assert sqlite_rows(daemon.db, "SELECT status FROM outbox") == [("pending",)]

    await daemon.start()
    await eventually(lambda: len(sms_service.pages) == 2, what="resent after restart")
    assert len(sms_service.distinct_keys()) == 1
    await eventually(
        lambda: sqlite_rows(daemon.db, "SELECT status FROM outbox") == [("sent",)],
        what="marked sent",
    )


async def test_alert_storm_to_one_phone_is_three_pages_and_one_bundle(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given ten services with the same on-call phone alerting at once, then the phone gets
    the first three pages at once (bundle_after) and one bundled page of the other seven
    at the end of the window, not ten pages."""
    window = 1.5
    services = {f"svc-{i}": "p" for i in range(10)}
    daemon = make_pagerd(
        [Policy("p", [(60.0, [sms(ONE)])])], services, notify={"bundle_window_s": window}
    )
    await daemon.start()
    sent_at = time.monotonic()
    await asyncio.gather(*(monitor.publish("alert", s, f"{s} down") for s in services))
    await eventually(lambda: len(sms_service.pages) == 3, what="the first three pages")
    assert all(page.at - sent_at < window / 2 for page in sms_service.pages), "none may wait"

    await eventually(lambda: len(sms_service.pages) == 4, timeout=window + 2, what="bundle")
    bundle = sms_service.pages[3]
    assert bundle.message.startswith("pagerd: 7 more incidents:")
    assert len(bundle.message) <= 160
    assert bundle.at - sms_service.pages[0].at >= window - 0.2
    await asyncio.sleep(window)
    assert len(sms_service.pages) == 4
    assert sqlite_rows(daemon.db, "SELECT status, count(*) FROM outbox GROUP BY 1") == [
        ("sent", 10)
    ]


async def test_acknowledge_link_in_the_page_stops_escalation(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given a page with an acknowledge link, when a link scanner GETs it, then nothing
    changes; when the person POSTs, then the incident is acknowledged and level 2 is
    never paged."""
    daemon = make_pagerd(two_levels(timeout=1.0), {"api": "p"})
    await daemon.start()
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="level 1 page")
    page = sms_service.to(ONE)[0].message
    assert len(page) <= 160
    link = page.split(" ack: ")[1]
    assert link.startswith(f"{daemon.base_url}/ack/")

    async with aiohttp.ClientSession() as http:
        async with http.get(link) as response:
            assert response.status == 200
            assert "<button" in await response.text()
        assert sqlite_rows(daemon.db, "SELECT status FROM incidents") == [("triggered",)]
        async with http.post(link) as response:
            assert response.status == 200
    assert sqlite_rows(daemon.db, "SELECT status, acknowledged_by FROM incidents") == [
        ("acknowledged", "+155*****001")  # the target the link was sent to, masked
    ]
    await asyncio.sleep(1.5)  # past level 1's timeout: nothing more may come
    assert sms_service.to(TWO) == []


CLAIMS = [("ana", "+15550000011"), ("bo", "+15550000012"), ("cy", "+15550000013")]


async def test_team_target_rotates_across_incidents_and_restarts(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given a team of three in rotation, when three services alert (pagerd restarted after
    the second), then three different developers are paged, in rotation order: the
    cursor is persisted with the decision."""
    team = {"type": "team", "team": "claims"}
    daemon = make_pagerd(
        [Policy("p", [(60.0, [team])])],
        {"a": "p", "b": "p", "c": "p"},
        teams={"claims": CLAIMS},
    )
    await daemon.start()
    for pages, service in enumerate(("a", "b", "c"), start=1):
        if service == "c":
            assert await daemon.stop() == 0
            await daemon.start()
        await monitor.publish("alert", service, "down")
        await eventually(partial(paged, daemon.db, pages), what=f"page for {service}")
    assert [p.phone_number for p in sms_service.pages] == [phone for _, phone in CLAIMS]


async def test_unacknowledged_incident_walks_the_rotation(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given one level targeting a team of three with repeat = 2, when nobody acks, then
    each developer is paged once, in turn, and then nobody more."""
    team = {"type": "team", "team": "claims"}
    daemon = make_pagerd(
        [Policy("p", [(0.3, [team])], repeat=2)], {"a": "p"}, teams={"claims": CLAIMS}
    )
    await daemon.start()
    await monitor.publish("alert", "a", "down")
    await eventually(lambda: len(sms_service.pages) == 3, timeout=5, what="three pages")
    await asyncio.sleep(0.9)  # three more timeouts: nothing more may come
    assert [p.phone_number for p in sms_service.pages] == [phone for _, phone in CLAIMS]


def paged(db: object, expected: int) -> bool:
    return count_pages(db) == expected


def count_pages(db: object) -> int:
    return int(sqlite_rows(db, "SELECT count(*) FROM outbox WHERE status = 'sent'")[0][0])  # type: ignore[arg-type]


def count_level(db: Path, level: int) -> int:
    return int(sqlite_rows(db, "SELECT count(*) FROM outbox WHERE level = ?", level)[0][0])


async def test_team_declared_in_the_config_file_can_be_alerted_through_the_api(
    make_pagerd: PagerdFactory, sms_service: SmsStandIn
) -> None:
    """Given a team declared in the config file, when POST /api/v1/alerts names it, then
    one developer is paged, and the team's own service team-{id} is there, read-only."""
    daemon = make_pagerd([], {}, teams={"claims": CLAIMS})
    await daemon.start()
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with aiohttp.ClientSession(base_url=daemon.base_url, headers=headers) as http:
        async with http.get("/api/v1/teams") as response:
            (team,) = (await response.json())["teams"]
        team_id = team["team"]["id"]
        async with http.post("/api/v1/alerts", json={"team_id": team_id}) as response:
            assert response.status == 202
            accepted = await response.json()
        assert accepted["service_id"] == f"team-{team_id}"
        assert [n["phone_number"] for n in accepted["notified"]] == [CLAIMS[0][1]]
        async with http.put(
            f"/api/v1/policies/team-{team_id}", json={"levels": [{"targets": []}]}
        ) as response:
            assert response.status == 409  # declared in the file: read-only
    await eventually(lambda: len(sms_service.pages) == 1, what="the team's page")
    assert "Too many 5xx!" in sms_service.pages[0].message
