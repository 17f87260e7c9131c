"""The sender processes under their supervisor: real processes, a real HTTP server as the
provider, and SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from pagerd.core.egress import ADDRESS_NOT_ALLOWED
from pagerd.core.ports import Attempt, Verdict
from pagerd.notify import pool as pool_module
from pagerd.notify.ipc import Settings
from pagerd.notify.pool import WORKER_DIED, SenderPool
from pagerd.telemetry import metrics
from tests.harness import eventually, free_port
from tests.test_sender_ipc import SETTINGS, a_page


@dataclass
class Provider:
    """An SMS provider that holds each request until told to answer, noting its key."""

    port: int = field(default_factory=free_port)
    keys: list[str] = field(default_factory=list)
    answer: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sms"

    async def handle(self, request: web.Request) -> web.Response:
        self.keys.append(request.headers["Idempotency-Key"])
        await self.answer.wait()
        return web.json_response({"ok": True})


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    stand_in = Provider()
    app = web.Application()
    app.router.add_post("/sms", stand_in.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", stand_in.port).start()
    yield stand_in
    stand_in.answer.set()
    await runner.cleanup()


def settings_for(provider: Provider) -> Settings:
    return Settings(
        sms_url=provider.url,
        sms_timeout_s=30.0,
        webhook_timeout_s=5.0,
        allow_hosts=(),
        email=SETTINGS.email,
        email_password=None,
        log_format="json",
        log_level="info",
    )


@contextlib.asynccontextmanager
async def running(pool: SenderPool) -> AsyncIterator[SenderPool]:
    supervising = asyncio.create_task(pool.run())
    try:
        yield pool
    finally:
        await pool.close()
        async with asyncio.timeout(10):
            await supervising


def counted(counter: object) -> float:
    name = {
        id(metrics.SENDER_RESTARTS): "pagerd_sender_restarts_total",
        id(metrics.SENDER_RESENT): "pagerd_sender_resent_total",
        id(metrics.SENDER_START_FAILURES): "pagerd_sender_start_failures_total",
        id(metrics.WEBHOOK_ADDRESSES_REFUSED): "pagerd_webhook_addresses_refused_total",
    }[id(counter)]
    return metrics.REGISTRY.get_sample_value(name) or 0.0


async def test_ready_once_every_process_is_and_a_page_goes_through_one(
    provider: Provider,
) -> None:
    pool = SenderPool(settings_for(provider), workers=2)
    assert pool.not_ready() == ["senders: 0 of 2 processes ready"]
    async with running(pool):
        await asyncio.wait_for(pool.ready.wait(), timeout=20)
        assert pool.not_ready() == []
        assert len(set(pool.pids())) == 2
        assert os.getpid() not in pool.pids()
        provider.answer.set()
        attempt = await asyncio.wait_for(pool.send(a_page(1)), timeout=10)
    assert attempt == Attempt(Verdict.SENT, "HTTP 200")
    assert provider.keys == [a_page(1).row.id]


async def test_a_webhook_address_refused_in_a_process_is_counted_once_by_the_daemon(
    provider: Provider,
) -> None:
    """The egress rule refuses loopback (no allow_hosts): each refusal in a sender process
    is counted in the daemon's metric, once, and each page fails with the rule's reason."""
    pool = SenderPool(settings_for(provider), workers=1)
    refused = counted(metrics.WEBHOOK_ADDRESSES_REFUSED)
    webhook = dataclasses.replace(
        a_page(3).row, channel="webhook", recipient=f"http://127.0.0.1:{provider.port}/hook"
    )
    async with running(pool):
        await asyncio.wait_for(pool.ready.wait(), timeout=20)
        for _ in range(2):
            page = dataclasses.replace(a_page(3), row=webhook)
            attempt = await asyncio.wait_for(pool.send(page), timeout=10)
            assert attempt.verdict is Verdict.FAIL
            assert ADDRESS_NOT_ALLOWED in attempt.detail
    assert counted(metrics.WEBHOOK_ADDRESSES_REFUSED) == refused + 2
    assert provider.keys == []


async def test_a_process_killed_mid_send_is_restarted_and_the_page_resent_with_its_key(
    provider: Provider,
) -> None:
    """Given a page in flight in the only sender process, when that process is SIGKILLed,
    then a new process is started and sends the same page, with the same key, and the
    dispatcher hears one outcome: the resent one's."""
    pool = SenderPool(settings_for(provider), workers=1)
    restarts, resent = counted(metrics.SENDER_RESTARTS), counted(metrics.SENDER_RESENT)
    async with running(pool):
        await asyncio.wait_for(pool.ready.wait(), timeout=20)
        (first,) = pool.pids()
        sending = asyncio.create_task(pool.send(a_page(7)))
        await eventually(lambda: provider.keys != [], timeout=10, what="the first attempt")
        os.kill(first, signal.SIGKILL)
        await eventually(lambda: len(provider.keys) == 2, timeout=20, what="the page resent")
        (second,) = pool.pids()
        provider.answer.set()
        attempt = await asyncio.wait_for(sending, timeout=10)
    assert second != first
    assert attempt == Attempt(Verdict.SENT, "HTTP 200")
    assert provider.keys == [a_page(7).row.id, a_page(7).row.id]
    assert counted(metrics.SENDER_RESTARTS) == restarts + 1
    assert counted(metrics.SENDER_RESENT) == resent + 1


async def test_a_page_carried_through_too_many_deaths_is_answered_as_a_retry(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page that every process dies on does not go round for ever: after MAX_RESENDS
    deaths it comes back to the dispatcher as a retry (backoff and max_attempts bound it),
    and the next process still sends other pages."""
    monkeypatch.setattr(pool_module, "MAX_RESENDS", 1)
    pool = SenderPool(settings_for(provider), workers=1)
    async with running(pool):
        await asyncio.wait_for(pool.ready.wait(), timeout=20)
        sending = asyncio.create_task(pool.send(a_page(9)))
        for seen in (1, 2):

            def tried(n: int = seen) -> bool:
                return len(provider.keys) == n

            await eventually(tried, timeout=20, what="a try")
            await eventually(lambda: pool.pids() != [], timeout=20, what="a process ready")
            os.kill(pool.pids()[0], signal.SIGKILL)
        attempt = await asyncio.wait_for(sending, timeout=20)
        assert attempt == Attempt(Verdict.RETRY, WORKER_DIED)
        provider.answer.set()
        after = await asyncio.wait_for(pool.send(a_page(10)), timeout=20)
    assert after.verdict is Verdict.SENT


async def test_a_process_that_cannot_start_is_logged_and_tried_again_never_ready(
    provider: Provider, capsys: pytest.CaptureFixture[str]
) -> None:
    failures = counted(metrics.SENDER_START_FAILURES)
    pool = SenderPool(settings_for(provider), workers=1, command=(sys.executable, "-c", "pass"))
    async with running(pool):
        await eventually(
            lambda: counted(metrics.SENDER_START_FAILURES) >= failures + 2,
            timeout=20,
            what="two failed starts",
        )
        assert not pool.ready.is_set()
        assert pool.not_ready() == ["senders: 0 of 1 processes ready"]
        sending = asyncio.create_task(pool.send(a_page(2)))
        await asyncio.sleep(0.05)
        assert not sending.done()  # it waits for a process, as in a full queue
        sending.cancel()
    assert "sender.start_failed" in capsys.readouterr().out


async def test_close_ends_every_process(provider: Provider) -> None:
    pool = SenderPool(settings_for(provider), workers=2)
    async with running(pool):
        await asyncio.wait_for(pool.ready.wait(), timeout=20)
        pids = pool.pids()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
