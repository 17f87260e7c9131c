"""A node that may no longer act (its lease lapsed) sends no request from that moment:
the outbox asks before each attempt, first ones and retries alike (CONTRACT §7)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest

from pagerd.core.ports import Page
from pagerd.core.records import OutboxRow
from pagerd.notify.outbox import DeliveryPolicy, Dispatcher
from pagerd.notify.senders import SmsSender
from pagerd.runtime.clock import SystemClock
from pagerd.store.sqlite import Store
from pagerd.telemetry import metrics
from tests.doubles import Recorder
from tests.harness import SmsStandIn, eventually

ONE = "+15550000001"


def row(notification_id: str, incident_id: str) -> OutboxRow:
    return OutboxRow(
        id=notification_id,
        incident_id=incident_id,
        service_id="svc",
        channel="sms",
        recipient=ONE,
        level=1,
        step=0,
        message="down",
        created_at=datetime.now(UTC),
    )


def page(r: OutboxRow) -> Page:
    return Page(r, "svc", f"page {r.id}", subject="", ack_url="")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "pagerd.db")
    yield opened
    await opened.close()


async def test_no_request_goes_out_while_the_node_may_not_act(
    store: Store, sms_service: SmsStandIn
) -> None:
    """Given a page sent while the node acts, when the node may no longer act, then a page
    it takes is not sent (it stays pending in the database for the active node)."""
    acting = True
    async with aiohttp.ClientSession() as session:
        dispatcher = Dispatcher(
            store=store,
            senders={"sms": SmsSender(session, sms_service.url, 2.0)},
            compose=page,
            compose_bundle=lambda rows: page(rows[0]),
            clock=SystemClock(),
            publisher=Recorder(),
            policy=DeliveryPolicy(bundle_window_s=0),
            may_send=lambda: acting,
        )
        running = asyncio.create_task(dispatcher.run())
        try:
            dispatcher.release([row("i1-0-0", "i1")])
            await eventually(lambda: len(sms_service.pages) == 1, what="the first page")

            acting = False  # the lease lapsed
            dispatcher.release([row("i2-0-0", "i2")])
            # Taken from the queue: a worker takes and asks in one step, never sending it.
            await eventually(lambda: queued() == 0, what="the second page taken")
            acting = True  # (a node that took the lease anew would resend it on recovery)
            dispatcher.release([row("i3-0-0", "i3")])
            await eventually(lambda: len(sms_service.pages) == 2, what="the third page")
            assert [p.key for p in sms_service.pages] == ["i1-0-0", "i3-0-0"]
        finally:
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running


def queued() -> float:
    return metrics.REGISTRY.get_sample_value("pagerd_outbox_depth") or 0.0
