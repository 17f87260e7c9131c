"""The outbox dispatcher in process: a recording sender, the real SQLite store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pagerd.core.ports import Attempt, Page, Verdict
from pagerd.core.records import OutboxRow, WriteBatch
from pagerd.notify.outbox import DeliveryPolicy, Dispatcher
from pagerd.store.sqlite import Store
from tests.doubles import T0, DrivenClock, Recorder
from tests.harness import eventually


@dataclass
class RecordingSender:
    sent: list[str] = field(default_factory=list)

    async def send(self, page: Page) -> Attempt:
        self.sent.append(page.row.id)
        await asyncio.sleep(0.01)  # a request takes time: other workers run meanwhile
        return Attempt(Verdict.SENT, "HTTP 200")


def compose(row: OutboxRow) -> Page:
    return Page(row, row.service_id, row.message, subject=row.message, ack_url="")


def compose_bundle(rows: list[OutboxRow]) -> Page:
    return compose(rows[0])


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(tmp_path / "pagerd.db")
    yield opened
    await opened.close()


async def test_a_row_released_twice_is_sent_once(store: Store) -> None:
    """Given a page released by its actor and then again by start-up's read of what is
    undelivered (a timer fell due during start-up), then it is sent once."""
    row = OutboxRow("inc-1-1-0", "inc-1", "api", "sms", "+15550000001", 2, 1, "down", T0)
    await store.write(WriteBatch(outbox=(row,)))
    sender = RecordingSender()
    dispatcher = Dispatcher(
        store=store,
        senders={"sms": sender},
        compose=compose,
        compose_bundle=compose_bundle,
        clock=DrivenClock(),
        publisher=Recorder(),
        policy=DeliveryPolicy(bundle_window_s=0),
    )
    dispatcher.release([row])
    dispatcher.release(await store.pending_outbox(limit=10))
    running = asyncio.create_task(dispatcher.run())
    try:
        await eventually(lambda: sender.sent != [], what="the page")
        await dispatcher.idle()
        await asyncio.sleep(0.05)  # a second copy would be on its way by now
        assert sender.sent == [row.id]
    finally:
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
