"""Personal data and secrets at rest, end to end (issue 13 points 11 and 12): a real pagerd,
mosquitto and aiosmtpd. An SMTP server's reply naming the recipient is masked in the
log, the API's timeline and last_error, and the MQTT events; the database files pagerd
creates are readable by its user alone."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiosmtpd.smtp import SMTP

from tests.conftest import PagerdFactory
from tests.harness import API_TOKEN, Monitor, Policy, eventually, sqlite_rows

TOKEN = API_TOKEN
SOMEONE = "someone@example.com"
REPLY = f"550 5.1.1 <{SOMEONE}>: Recipient address rejected: User unknown"
MASKED = "SMTP 550 5.1.1 <s*****@example.com>: Recipient address rejected: User unknown"


class Refusing:
    """aiosmtpd handler: refuses every recipient, naming it, as Postfix does."""

    async def handle_RCPT(  # noqa: N802  # aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        return REPLY


@pytest.fixture
async def smtp_port() -> AsyncIterator[int]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(Refusing(), hostname="mx.test", loop=loop), "127.0.0.1", 0
    )
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


@pytest.fixture
def lax_umask() -> Iterator[None]:
    """A shell's umask, which pagerd (started from this process) inherits."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("lax_umask")
async def test_an_smtp_reply_naming_the_recipient_is_masked_everywhere(
    make_pagerd: PagerdFactory, monitor: Monitor, smtp_port: int
) -> None:
    """Given an SMTP server that answers `550 5.1.1 <someone@example.com>`, when pagerd
    pages that address, then the failure is recorded with the address masked in
    last_error, the timeline, the MQTT events and the log, and none of them holds it
    whole. The database pagerd made, its WAL and shm files are 0600 (no systemd here)."""
    email = {"host": "127.0.0.1", "port": smtp_port, "sender": "pagerd@example.com"}
    daemon = make_pagerd(
        [Policy("mail", [(600.0, [{"type": "email", "address": SOMEONE}])])],
        {"mailed": "mail"},
        notify={"bundle_window_s": 0, "email": email},
    )
    await daemon.start()
    await monitor.publish("alert", "mailed", "down")
    await eventually(
        lambda: sqlite_rows(daemon.db, "SELECT status FROM outbox") == [("failed",)],
        what="the email page failed",
    )
    (incident_id,) = sqlite_rows(daemon.db, "SELECT id FROM incidents")[0]
    await eventually(
        lambda: any(e["type"] == "notification.failed" for e in monitor.on("events/mailed")),
        what="the failure on MQTT",
    )

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{daemon.base_url}/api/v1/incidents/{incident_id}") as response,
    ):
        incident = await response.json()
    (page,) = incident["notifications"]
    assert page["last_error"] == MASKED
    failed = [e for e in incident["timeline"] if e["type"] == "notification.failed"]
    assert [e["detail"]["error"] for e in failed] == [MASKED]
    published = [e for e in monitor.on("events/mailed") if e["type"] == "notification.failed"]
    assert published[0]["detail"]["error"] == MASKED
    logged = [e for e in daemon.log_events() if e["event"] == "notification.failed"]
    assert logged[0]["reason"] == MASKED
    assert SOMEONE not in daemon.log.read_text()
    assert SOMEONE not in json.dumps(incident["timeline"])
    assert all(SOMEONE.encode() not in payload for _, payload in monitor.received)

    files = [daemon.db, daemon.db.with_name("pagerd.db-wal"), daemon.db.with_name("pagerd.db-shm")]
    modes = {file.name: oct(stat.S_IMODE(file.stat().st_mode)) for file in files}
    assert modes == dict.fromkeys(["pagerd.db", "pagerd.db-wal", "pagerd.db-shm"], "0o600")
