"""Wiring of the channel senders: in the daemon's event loop, or in sender processes.

``[notify] workers`` sender processes (``pagerd.notify.pool``) make every attempt when
it is above 0; at 0 the senders of ``pagerd.notify.senders`` run on the event loop.
Either way the dispatcher sees one ``Sender`` per channel and keeps every rule of
CONTRACT §5. docs/processes.md says which process does what.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
import structlog

from pagerd.config import Config
from pagerd.core.ports import Sender
from pagerd.notify.egress import WebhookEgress
from pagerd.notify.ipc import EmailSettings, Settings
from pagerd.notify.outbox import CHANNELS
from pagerd.notify.pool import SenderPool
from pagerd.notify.senders import EmailSender, SmsSender, WebhookSender

log = structlog.get_logger("pagerd.app")

SENDERS_STOP_S = 4.0  # the sender processes' exit: each is killed after 3 s


def sender_settings(config: Config) -> Settings:
    """What a sender process needs of ``[notify]`` and ``[log]``."""
    notify = config.notify
    email = notify.email
    return Settings(
        sms_url=notify.sms.url,
        sms_timeout_s=notify.sms.timeout_s,
        webhook_timeout_s=notify.webhook.timeout_s,
        allow_hosts=tuple(notify.webhook.allow_hosts),
        email=EmailSettings(
            host=email.host,
            port=email.port,
            sender=email.sender,
            starttls=email.starttls,
            username=email.username,
            timeout_s=email.timeout_s,
        ),
        email_password=config.email_password(),
        log_format=config.log.format,
        log_level=config.log.level,
    )


@contextlib.asynccontextmanager
async def sender_processes(config: Config) -> AsyncIterator[SenderPool | None]:
    """``[notify] workers`` sender processes, started now (they start while the store
    loads) and ended on exit; None when pages are sent from the event loop."""
    if config.notify.workers == 0:
        yield None
        return
    pool = SenderPool(sender_settings(config), config.notify.workers)
    supervising = asyncio.create_task(pool.run(), name="pagerd[senders]")
    try:
        yield pool
    finally:
        await pool.close()
        try:
            async with asyncio.timeout(SENDERS_STOP_S):
                await asyncio.shield(supervising)
        except TimeoutError:
            log.error("sender.stop_timeout", timeout_s=SENDERS_STOP_S)  # noqa: TRY400 - a deadline
        finally:
            supervising.cancel()
            await asyncio.gather(supervising, return_exceptions=True)


def channel_senders(
    config: Config,
    session: aiohttp.ClientSession,
    webhooks: WebhookEgress,
    pool: SenderPool | None,
) -> dict[str, Sender]:
    """The dispatcher's sender of each channel: the pool for all, or the loop's own."""
    if pool is not None:
        return dict.fromkeys(CHANNELS, pool)
    notify = config.notify
    return {
        "sms": SmsSender(session, notify.sms.url, notify.sms.timeout_s),
        "email": EmailSender(notify.email, config.email_password()),
        "webhook": WebhookSender(webhooks, notify.webhook.timeout_s),
    }


async def senders_ready(pool: SenderPool | None) -> None:
    """Once every sender process was ready (at once without any)."""
    if pool is not None:
        await pool.ready.wait()
