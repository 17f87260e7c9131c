"""`pagerd standin`: each page a real pagerd sends shows as one line, SMS, webhook and email.

The stand-in runs as users run it (`python -m pagerd standin`, its stdout a pipe); pagerd
is a real process with a real mosquitto. Its HTTP and SMTP sides are also tried alone,
with aiohttp and aiosmtplib as the clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage

import aiohttp
import aiosmtplib
import pytest

from pagerd.config import DEFAULT_SMS_URL
from pagerd.tools.standin import serve
from tests.conftest import PagerdFactory
from tests.harness import Monitor, Policy, eventually, free_port, sms, sqlite_rows

PHONE = "+15550001111"
# The ISSUE's promise: a page shows in the stand-in's output within a second of the alert.
SHOWN_WITHIN_S = 1.0


@dataclass
class StandIn:
    """``pagerd standin`` as a process, and the lines it printed with when they came."""

    http_port: int = field(default_factory=free_port)
    smtp_port: int = field(default_factory=free_port)
    lines: list[tuple[float, str]] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pagerd",
            "standin",
            "--listen",
            f"127.0.0.1:{self.http_port}",
            "--smtp",
            f"127.0.0.1:{self.smtp_port}",
            stdout=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read())
        await eventually(lambda: bool(self.lines), what="the stand-in's first line")
        assert self.lines[0][1].startswith("pagerd standin: "), self.lines

    async def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            self.lines.append((time.monotonic(), raw.decode().rstrip("\n")))

    async def stop(self) -> int:
        assert self.process is not None
        self.process.terminate()
        code = await asyncio.wait_for(self.process.wait(), 10)
        await self._reader
        return code

    def pages(self, channel: str) -> list[tuple[float, str]]:
        return [(at, line) for at, line in self.lines if line.split()[1:2] == [channel]]


@pytest.fixture
async def stand_in() -> AsyncIterator[StandIn]:
    process = StandIn()
    await process.start()
    yield process
    if process.process is not None and process.process.returncode is None:
        await process.stop()


async def test_each_page_shows_as_one_line_with_its_key_within_a_second(
    stand_in: StandIn, make_pagerd: PagerdFactory, monitor: Monitor
) -> None:
    """Given a level paging an SMS, a webhook and an email, all at the stand-in,
    then an alert shows three lines, each within a second, keyed by its notification id."""
    targets = [
        sms(PHONE),
        {"type": "webhook", "url": f"{stand_in.base}/hooks/chat"},
        {"type": "email", "address": "oncall@example.com"},
    ]
    daemon = make_pagerd(
        [Policy("oncall", [(30.0, targets)])],
        {"api": "oncall"},
        sms_url=f"{stand_in.base}/sms",
        notify={"bundle_window_s": 0, "email": {"host": "127.0.0.1", "port": stand_in.smtp_port}},
    )
    await daemon.start()

    published = time.monotonic()
    await monitor.publish("alert", "api", "disk full")
    channels = ("sms", "webhook", "email")
    await eventually(
        lambda: all(stand_in.pages(c) for c in channels), what="a line for each channel"
    )

    keys = dict(sqlite_rows(daemon.db, "SELECT channel, id FROM outbox"))
    for channel in channels:
        ((at, line),) = stand_in.pages(channel)
        assert at - published < SHOWN_WITHIN_S, (channel, at - published)
        key = f"<{keys[channel]}@pagerd>" if channel == "email" else keys[channel]
        assert line.endswith(f"key={key}"), line
    [(_, sms_line)] = stand_in.pages("sms")
    assert f"sms      {PHONE}  Service api: disk full [#" in sms_line
    [(_, webhook_line)] = stand_in.pages("webhook")
    assert "webhook  /hooks/chat  incident.triggered Service api: disk full [incident " in (
        webhook_line
    )
    [(_, email_line)] = stand_in.pages("email")
    assert "email    oncall@example.com  [pagerd] Service api: disk full ack: http" in email_line
    assert await stand_in.stop() == 0


async def test_pagerd_warns_at_start_while_sms_go_to_the_public_mock(
    make_pagerd: PagerdFactory,
) -> None:
    """Given no [notify.sms] url, pagerd says at start-up where SMS pages would go;
    given one, it says nothing of it."""
    policies, services = [Policy("oncall", [(30.0, [sms(PHONE)])])], {"api": "oncall"}
    for url, warned in (("", True), (None, False)):
        daemon = make_pagerd(policies, services, sms_url=url)
        await daemon.start()
        assert await daemon.stop() == 0
        warnings = [e for e in daemon.log_events() if e["event"] == "notify.sms_default_url"]
        if warned:
            [warning] = warnings
            assert warning["level"] == "warning"
            assert warning["url"] == DEFAULT_SMS_URL
            assert "phone numbers" in warning["reason"]
        else:
            assert warnings == []


# --- the stand-in alone ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[tuple[str, int, list[str]]]:
    """The stand-in in process: its HTTP base URL, its SMTP port and the lines it wrote."""
    http_port, smtp_port = free_port(), free_port()
    lines: list[str] = []
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        serve(
            ("127.0.0.1", http_port),
            ("127.0.0.1", smtp_port),
            lines.append,
            stop,
            lambda _: ready.set(),
        )
    )
    await asyncio.wait_for(ready.wait(), 5)
    try:
        yield f"http://127.0.0.1:{http_port}", smtp_port, lines
    finally:
        stop.set()
        await task


async def test_a_request_that_is_not_a_page_is_a_400_and_a_line_saying_so() -> None:
    async with serving() as (base, _, lines), aiohttp.ClientSession() as http:
        async with http.post(f"{base}/sms", data=b"not json") as response:
            assert response.status == 400
        async with http.post(f"{base}/sms", json={"phone_number": "+1555"}) as response:
            assert response.status == 400
        async with http.post(f"{base}/hook", json=[1, 2]) as response:
            assert response.status == 400
    assert [line.split("  ", 1)[1] for line in lines] == [
        'sms      /sms  refused: expected JSON {"phone_number", "message"}  key=-',
        'sms      /sms  refused: expected JSON {"phone_number", "message"}  key=-',
        "webhook  /hook  refused: expected a JSON object  key=-",
    ]


async def test_a_line_is_one_line_whatever_the_message_holds() -> None:
    """An alert's text is the sender's: no line break or terminal escape reaches the screen."""
    message = "disk\nfull\r\n\x1b[2J\x1b]0;owned\x07 now"
    async with serving() as (base, _, lines), aiohttp.ClientSession() as http:
        body = {"phone_number": "+1555", "message": message}
        async with http.post(f"{base}/sms", json=body, headers={"Idempotency-Key": "k\t1"}) as r:
            assert r.status == 200
    [line] = lines
    assert line.isprintable()
    assert line.endswith("  sms      +1555  disk full [2J ]0;owned now  key=k 1")


async def test_email_shows_once_per_recipient_with_its_message_id() -> None:
    message = EmailMessage()
    message["From"] = "pagerd@localhost"
    message["Subject"] = "[pagerd] Payments API: 5xx"
    message["Message-ID"] = "<01ABC-0-2@pagerd>"
    message.set_content("Payments API: 5xx\n\nAcknowledge: http://127.0.0.1:8080/ack/t0k")
    async with serving() as (_, smtp_port, lines):
        await aiosmtplib.send(
            message,
            sender="pagerd@localhost",
            recipients=["a@example.com", "b@example.com"],
            hostname="127.0.0.1",
            port=smtp_port,
            start_tls=False,
        )
    assert [line.split("  ", 1)[1] for line in lines] == [
        f"email    {who}  [pagerd] Payments API: 5xx ack: http://127.0.0.1:8080/ack/t0k"
        "  key=<01ABC-0-2@pagerd>"
        for who in ("a@example.com", "b@example.com")
    ]


async def test_smtp_answers_a_client_out_of_order_and_refuses_a_huge_message() -> None:
    async with serving() as (_, smtp_port, lines):
        reader, writer = await asyncio.open_connection("127.0.0.1", smtp_port)

        async def say(line: bytes) -> bytes:
            writer.write(line)
            await writer.drain()
            return await reader.readline()

        assert (await reader.readline()).startswith(b"220 ")
        assert (await say(b"DATA\r\n")).startswith(b"503 ")
        assert (await say(b"FROB\r\n")).startswith(b"502 ")
        assert (await say(b"MAIL FROM:<x@y>\r\n")).startswith(b"250 ")
        assert (await say(b"RCPT TO:<a@b>\r\n")).startswith(b"250 ")
        assert (await say(b"DATA\r\n")).startswith(b"354 ")
        line = b"x" * 1000 + b"\r\n"
        writer.write(line * 1100)  # over the stand-in's 1 MiB
        assert (await say(b".\r\n")).startswith(b"552 ")
        assert await reader.read() == b""  # and it hung up
        writer.close()
    assert lines == []


async def test_standin_says_when_its_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "pagerd",
            "standin",
            "--listen",
            f"127.0.0.1:{port}",
            "--smtp",
            "",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert out == b""
    assert err.decode().startswith("pagerd standin: cannot listen: "), err
    assert b"Traceback" not in err
