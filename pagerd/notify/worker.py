"""A sender process: makes the attempts the daemon's dispatcher hands it, and answers each.

Run by the daemon (``python -m pagerd.notify.worker FD``) with one end of a socketpair
as descriptor FD; see ``pagerd.notify.ipc`` for what is said on it. It owns the
channel senders of ``pagerd.notify.senders`` (aiohttp for SMS and webhooks, aiosmtplib
for email) and nothing else: no store, no decisions, no retries. The dispatcher keeps
every rule; a process that dies only costs the attempts it had in flight, which the
daemon makes again, with the same page and so the same Idempotency-Key.

It is its own program, so it configures its own logging, as the daemon does. It ends
when the daemon closes the socket, or dies: an attempt then cut off is resent by the
next process, or by the restarted daemon from the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from typing import Any

import aiohttp
import msgspec
import structlog

from pagerd.core.egress import EgressRule
from pagerd.core.ports import Attempt, Sender, Verdict
from pagerd.notify.egress import WebhookEgress
from pagerd.notify.ipc import Link, Ready, Result, Send, Settings, ToWorker
from pagerd.notify.senders import EmailSender, SmsSender, WebhookSender
from pagerd.telemetry.logs import configure_logging

log = structlog.get_logger("pagerd.sender")

SETTINGS_TIMEOUT_S = 10.0  # the daemon sends them at once; none by then: it is gone


def _json_text(body: object) -> str:
    return msgspec.json.encode(body).decode()


class _Refusals:
    """Webhook addresses the egress check refused here, not yet reported to the daemon
    (whose metric counts them): a tally, as reading a metric back costs a registry scan."""

    def __init__(self) -> None:
        self._fresh = 0

    def add(self) -> None:
        self._fresh += 1

    def take(self) -> int:
        fresh, self._fresh = self._fresh, 0
        return fresh


class Worker:
    """The process's one connection to the daemon, and the attempts in flight."""

    def __init__(self) -> None:
        self._settings: asyncio.Future[Settings] = asyncio.get_running_loop().create_future()
        self._gone = asyncio.Event()
        self._senders: dict[str, Sender] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusals = _Refusals()
        self.link: Link[ToWorker] = Link(ToWorker, self._received, self._lost)

    def _received(self, message: ToWorker) -> None:
        match message:
            case Settings():
                if not self._settings.done():
                    self._settings.set_result(message)
            case Send():
                task = asyncio.get_running_loop().create_task(
                    self._attempt(message), name=f"pagerd-sender[{message.id}]"
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _lost(self, reason: BaseException | None) -> None:
        if reason is not None:
            log.error("sender.link_broken", error=str(reason))
        self._gone.set()

    async def _attempt(self, send: Send) -> None:
        channel = send.page.row.channel
        sender = self._senders.get(channel)
        try:
            if sender is None:
                attempt = Attempt(Verdict.FAIL, f"channel {channel!r} is not configured")
            else:
                attempt = await sender.send(send.page)
        except Exception as error:  # a sender never raises for the network: this is a bug
            log.exception("sender.attempt_error", **send.page.row.log_fields())
            attempt = Attempt(Verdict.RETRY, f"sender error: {type(error).__name__}")
        self.link.send(Result.of(send.id, attempt, self._refusals.take()))

    async def serve(self) -> None:
        """Build the senders from the daemon's settings, say Ready, attempt until the end."""
        try:
            async with asyncio.timeout(SETTINGS_TIMEOUT_S):
                settings = await asyncio.shield(self._settings)
        except TimeoutError:
            log.error("sender.no_settings", timeout_s=SETTINGS_TIMEOUT_S)  # noqa: TRY400 - a deadline
            return
        configure_logging(settings.log_format, settings.log_level)
        options: dict[str, Any] = {
            "json_serialize": _json_text,
            "cookie_jar": aiohttp.DummyCookieJar(),
        }
        rule = EgressRule.from_allow_hosts(settings.allow_hosts)
        async with (
            aiohttp.ClientSession(**options) as session,
            WebhookEgress(rule, session, on_refused=self._refusals.add, **options) as webhooks,
        ):
            self._senders = {
                "sms": SmsSender(session, settings.sms_url, settings.sms_timeout_s),
                "email": EmailSender(settings.email, settings.email_password),
                "webhook": WebhookSender(webhooks, settings.webhook_timeout_s),
            }
            self.link.send(Ready(os.getpid()))
            log.info("sender.ready", pid=os.getpid())
            await self._gone.wait()
            # Nobody is left to hear of what is in flight: the daemon resends it.
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(asyncio.CancelledError):  # cancelled just above
                    await task


async def run(fd: int) -> None:
    """Serve the daemon on the socket ``fd`` until it closes it."""
    sock = socket.socket(fileno=fd)
    worker = Worker()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_unix_connection(lambda: worker.link, sock=sock)
    try:
        await worker.serve()
    finally:
        transport.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        sys.stderr.write("usage: python -m pagerd.notify.worker FD (run by pagerd)\n")
        return 2
    configure_logging("json", "info")  # until the daemon's settings say otherwise
    # A stop is the daemon's to run (systemd and a terminal signal the whole group): the
    # process ends when the daemon closes the socket, after the sends in flight.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_IGN)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(int(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
