"""Fault suite: the SMS service down for a while; SMTP down, slow and hanging."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP

from tests.conftest import PagerdFactory
from tests.faults.common import count, page_figures, report
from tests.harness import Monitor, Policy, SmsStandIn, eventually, free_port, sms, sqlite_rows

ONE = "+15550000001"
TWO = "+15550000002"
OUTAGE_S = 60.0  # as the issue has it: a minute without the SMS provider
SLOW_SMTP_S = 5.0  # as the issue has it: slow (5 s) responses
PATIENT = {"bundle_window_s": 0, "max_attempts": 100, "max_age_s": 3600}


def timeline(db: Path, kind: str) -> list[dict[str, Any]]:
    rows = sqlite_rows(db, "SELECT detail FROM timeline WHERE type = ? ORDER BY seq", kind)
    return [json.loads(detail) for (detail,) in rows]


@pytest.mark.timeout(240)
async def test_sms_service_down_for_60s_then_every_page_delivered_in_order(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given the SMS service unreachable for 60 s while 20 incidents escalate through two
    levels, when it comes back, then every page is delivered, none dropped, and each
    incident's level 1 page arrives before its level 2 page."""
    services = [f"svc-{i}" for i in range(20)]
    daemon = make_pagerd(
        [Policy("p", [(5.0, [sms(ONE)]), (5.0, [sms(TWO)])])],
        dict.fromkeys(services, "p"),
        notify=PATIENT,
    )
    await daemon.start()
    await sms_service.stop()
    down_at = time.monotonic()
    for service in services:
        await monitor.publish("alert", service, "down")
    await eventually(
        lambda: count(daemon.db, "SELECT count(*) FROM outbox WHERE level = 2") == len(services),
        timeout=15,
        what="level 2 decided while the SMS service is down",
    )
    await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - down_at)))  # the outage
    retrying = len(timeline(daemon.db, "notification.retrying"))
    await sms_service.start()
    back_at = time.monotonic()

    await eventually(
        lambda: (
            count(daemon.db, "SELECT count(*) FROM outbox WHERE status = 'sent'")
            == 2 * len(services)
        ),
        timeout=120,
        what="every page delivered after the outage",
    )
    delivered_in = time.monotonic() - back_at
    rows = sqlite_rows(daemon.db, "SELECT id, incident_id, level, status FROM outbox")
    first_at: dict[str, float] = {}
    for page in sms_service.pages:
        first_at.setdefault(page.key, page.at)
    out_of_order = [
        incident
        for incident in {r[1] for r in rows}
        if first_at[f"{incident}-0-0"] > first_at[f"{incident}-1-0"]
    ]
    report(
        "sms down 60s",
        outbox=len(rows),
        retries_during_outage=retrying,
        delivered_within_s=round(delivered_in, 1),
        out_of_order=len(out_of_order),
        failed=len(timeline(daemon.db, "notification.failed")),
        **page_figures(sms_service),
    )
    assert {r[3] for r in rows} == {"sent"}
    assert sms_service.distinct_keys() == {r[0] for r in rows}
    assert timeline(daemon.db, "notification.failed") == []
    assert out_of_order == [], "level 2 delivered before level 1"


# --- SMTP ----------------------------------------------------------------------------------


@dataclass
class Smtp:
    """aiosmtpd handler: records each message; DATA waits ``delay`` (None: forever)."""

    received: list[bytes] = field(default_factory=list)
    delay: float | None = 0.0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle_DATA(  # noqa: N802  # aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        if self.delay is None:
            await self.release.wait()
        else:
            await asyncio.sleep(self.delay)
        self.received.append(envelope.content)
        return "250 Message accepted for delivery"


@contextlib.asynccontextmanager
async def smtp_on(port: int, handler: Smtp) -> AsyncIterator[None]:
    """A real aiosmtpd server on ``port`` in this loop."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="mx.test", loop=loop), "127.0.0.1", port
    )
    try:
        yield
    finally:
        handler.release.set()
        server.close()
        await server.wait_closed()


def mail_pagerd(
    make_pagerd: PagerdFactory, smtp_port: int, email_timeout_s: float = 2, **notify: Any
) -> Any:
    email = {"host": "127.0.0.1", "port": smtp_port, "sender": "pagerd@example.com"}
    return make_pagerd(
        [
            Policy("mail", [(600.0, [{"type": "email", "address": "oncall@example.com"}])]),
            Policy("text", [(600.0, [sms(ONE)])]),
        ],
        {"mailed": "mail", "texted": "text"},
        notify={"bundle_window_s": 0, "email": email | {"timeout_s": email_timeout_s}} | notify,
    )


async def sms_page_is_prompt(monitor: Monitor, sms_service: SmsStandIn) -> float:
    """Alert the SMS-paged service; return how long its page took."""
    sent_at = time.monotonic()
    await monitor.publish("alert", "texted", "down")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, timeout=5, what="the SMS page")
    return sms_service.to(ONE)[0].at - sent_at


async def test_smtp_down_then_up_retries_until_delivered(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given nothing listens on the SMTP port, then the email page is retried, and once a
    server is there it is delivered once."""
    port = free_port()
    daemon = mail_pagerd(make_pagerd, port, max_attempts=100)
    await daemon.start()
    await monitor.publish("alert", "mailed", "down")
    await eventually(
        lambda: len(timeline(daemon.db, "notification.retrying")) >= 2,
        timeout=10,
        what="retries while SMTP is down",
    )
    handler = Smtp()
    async with smtp_on(port, handler):
        await eventually(lambda: len(handler.received) == 1, timeout=30, what="the email")
        # The outcome is committed just after the send, by the outbox's committer.
        await eventually(
            lambda: (
                sqlite_rows(daemon.db, "SELECT channel, status FROM outbox") == [("email", "sent")]
            ),
            what="the email committed as sent",
        )
        retries = timeline(daemon.db, "notification.retrying")
        report("smtp down", retries=len(retries), delivered=len(handler.received))
        assert all("onnect" in str(r["error"]) for r in retries), retries


async def test_slow_smtp_delivers_and_does_not_delay_sms(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given an SMTP server that takes 5 s per message (within timeout_s = 7), then the
    email is delivered on its first attempt, and an SMS page meanwhile is not delayed."""
    port = free_port()
    handler = Smtp(delay=SLOW_SMTP_S)
    async with smtp_on(port, handler):
        daemon = mail_pagerd(make_pagerd, port, email_timeout_s=SLOW_SMTP_S + 2)
        await daemon.start()
        await monitor.publish("alert", "mailed", "down")
        sms_took = await sms_page_is_prompt(monitor, sms_service)
        await eventually(lambda: len(handler.received) == 1, timeout=10, what="the email")
        await eventually(
            lambda: len(timeline(daemon.db, "notification.sent")) == 2, what="both sent"
        )
        report("smtp slow", sms_page_s=round(sms_took, 3), emails=len(handler.received))
        assert sms_took < 1.0
        assert timeline(daemon.db, "notification.retrying") == []


async def test_hanging_smtp_fails_loudly_and_does_not_delay_sms(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given an SMTP server that never answers DATA, then each attempt times out after
    timeout_s, the page is retried and then failed (timeline, log), never lost silently;
    an SMS page for another service meanwhile is not delayed."""
    port = free_port()
    handler = Smtp(delay=None)
    async with smtp_on(port, handler):
        daemon = mail_pagerd(make_pagerd, port, max_attempts=3)
        await daemon.start()
        await monitor.publish("alert", "mailed", "down")
        sms_took = await sms_page_is_prompt(monitor, sms_service)
        await eventually(
            lambda: len(timeline(daemon.db, "notification.failed")) == 1,
            timeout=30,
            what="the email failed",
        )
        retries = timeline(daemon.db, "notification.retrying")
        report("smtp hangs", sms_page_s=round(sms_took, 3), retries=len(retries))
        assert sms_took < 1.0
        assert len(retries) == 2
        assert all(r["error"] == "SMTP timeout" for r in retries), retries
        assert sqlite_rows(daemon.db, "SELECT channel, status FROM outbox ORDER BY channel") == [
            ("email", "failed"),
            ("sms", "sent"),
        ]
        assert "notification.failed" in [e["event"] for e in daemon.log_events()]
