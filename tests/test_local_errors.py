"""pagerd's own host running short (EMFILE) is no provider's failure: not an attempt, retried soon.

The descriptors run out for real: the test process's soft RLIMIT_NOFILE is lowered
to the lowest free descriptor for a while (``descriptors_exhausted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from pagerd.config import EmailConfig
from pagerd.core.egress import EgressRule
from pagerd.core.ports import Page, Verdict
from pagerd.core.records import OutboxRow, WriteBatch
from pagerd.notify.egress import WebhookEgress
from pagerd.notify.outbox import DeliveryPolicy, Dispatcher
from pagerd.notify.senders import EmailSender, SmsSender, WebhookSender
from pagerd.runtime.clock import SystemClock
from pagerd.store.sqlite import Store
from pagerd.telemetry import metrics
from tests.doubles import Recorder
from tests.harness import SmsStandIn, descriptors_exhausted, eventually, free_port, sqlite_rows


def sms_row(created_at: datetime | None = None) -> OutboxRow:
    return OutboxRow(
        id="01HZXINCIDENT00-0-0",
        incident_id="01HZXINCIDENT00",
        service_id="payments-api",
        channel="sms",
        recipient="+15550001111",
        level=1,
        step=0,
        message="Too many 5xx!",
        created_at=created_at or datetime.now(UTC),
    )


def page_of(row: OutboxRow) -> Page:
    return Page(row, "Payments API", f"Payments API: {row.message}", "[pagerd] down", ack_url="")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def test_an_http_send_without_descriptors_is_a_local_failure(
    session: aiohttp.ClientSession, sms_service: SmsStandIn
) -> None:
    """Given no descriptor left, then an SMS or webhook POST says LOCAL, naming EMFILE; the
    webhook through the session that checks each address (a CIDR entry lets loopback in)."""
    sms = SmsSender(session, sms_service.url, timeout_s=2)
    rule = EgressRule.from_allow_hosts(["127.0.0.0/8"])
    hook = replace(sms_row(), channel="webhook", recipient=sms_service.url)
    async with WebhookEgress(rule, session) as webhooks:
        webhook = WebhookSender(webhooks, timeout_s=2)
        with descriptors_exhausted():
            by_sms = await sms.send(page_of(sms_row()))
            by_webhook = await webhook.send(page_of(hook))

    for attempt in (by_sms, by_webhook):
        assert attempt.verdict is Verdict.LOCAL, attempt
        assert attempt.detail == "EMFILE: pagerd is out of file descriptors"
    assert sms_service.pages == []


async def test_an_email_without_descriptors_is_a_local_failure() -> None:
    settings = EmailConfig(host="127.0.0.1", port=free_port(), timeout_s=2)
    with descriptors_exhausted():
        attempt = await EmailSender(settings, password=None).send(page_of(sms_row()))

    assert attempt.verdict is Verdict.LOCAL, attempt
    assert attempt.detail.startswith("EMFILE")


async def test_a_send_out_of_descriptors_is_retried_soon_and_not_counted_as_an_attempt(
    tmp_path: Path, session: aiohttp.ClientSession, sms_service: SmsStandIn
) -> None:
    """Given one attempt allowed per page and no descriptor left for a while, then the page
    is tried again about every second meanwhile, and once descriptors are back it is sent
    on its first attempt: nothing failed, no retry in the timeline."""
    store = await Store.open(tmp_path / "pagerd.db")
    row = sms_row()
    await store.write(WriteBatch(outbox=(row,)))
    dispatcher = Dispatcher(
        store=store,
        senders={"sms": SmsSender(session, sms_service.url, timeout_s=2)},
        compose=page_of,
        compose_bundle=lambda rows: page_of(rows[0]),
        clock=SystemClock(),
        publisher=Recorder(),
        policy=DeliveryPolicy(max_attempts=1, bundle_window_s=0),
    )
    local_errors = metrics.NOTIFICATION_LOCAL_ERRORS.labels(channel="sms")
    before = local_errors._value.get()
    try:
        async with _running(dispatcher):
            with descriptors_exhausted():
                dispatcher.release([row])
                await eventually(
                    lambda: local_errors._value.get() >= before + 2,
                    timeout=5,
                    what="two sends failed on pagerd's side",
                )
            await eventually(lambda: len(sms_service.pages) == 1, timeout=5, what="the page")
            await dispatcher.idle()
    finally:
        await store.close()

    db = tmp_path / "pagerd.db"
    assert sqlite_rows(db, "SELECT status, attempts, last_error FROM outbox") == [("sent", 1, None)]
    kinds = [kind for (kind,) in sqlite_rows(db, "SELECT type FROM timeline ORDER BY seq")]
    assert kinds == ["notification.sent"]
    (detail,) = sqlite_rows(db, "SELECT detail FROM timeline")
    assert json.loads(detail[0])["attempt"] == 1


@contextlib.asynccontextmanager
async def _running(dispatcher: Dispatcher) -> AsyncIterator[None]:
    """The dispatcher's workers, for the block."""
    task = asyncio.create_task(dispatcher.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
