"""Stock PagerDuty client libraries against a real pagerd serving HTTPS (CONTRACT §2, §4):
each sends only the service's integration key as routing_key, as it would to PagerDuty,
and the maintained ``pagerduty`` library refuses any URL that is not https://."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pagerduty
import pytest

from tests.conftest import PagerdFactory
from tests.harness import (
    API_TOKEN,
    Pagerd,
    Policy,
    SmsStandIn,
    TlsFiles,
    eventually,
    make_tls_files,
    sms,
    sqlite_rows,
)

with warnings.catch_warnings():
    # It says it is deprecated for ``pagerduty``; many monitors still send with it.
    warnings.simplefilter("ignore", UserWarning)
    import pdpyras

ONE = "+15550000001"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return make_tls_files(tmp_path / "tls")


@pytest.fixture
async def daemon(make_pagerd: PagerdFactory, tls: TlsFiles) -> Pagerd:
    """pagerd over HTTPS with a certificate of a private CA, service db paging ONE."""
    made = make_pagerd(
        [Policy("oncall", [(3600.0, [sms(ONE)])])],
        {"db": "oncall"},
        http={"tls_cert_file": str(tls.cert), "tls_key_file": str(tls.key)},
    )
    made.public_url = made.base_url
    await made.start()
    return made


def trusting(tls: TlsFiles) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(tls.ca))


async def integration_key(daemon: Pagerd, tls: TlsFiles, service_id: str) -> str:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{daemon.base_url}/api/v1/services/{service_id}", ssl=trusting(tls)) as got,
    ):
        assert got.status == 200
        return str((await got.json())["integration_key"])


def status_of(daemon: Pagerd) -> Callable[[], str | None]:
    def status() -> str | None:
        rows = sqlite_rows(daemon.db, "SELECT status FROM incidents WHERE service_id = 'db'")
        return str(rows[-1][0]) if rows else None

    return status


async def trigger_ack_resolve(
    daemon: Pagerd, sms_service: SmsStandIn, send: Callable[..., Any]
) -> None:
    """``send(action, dedup_key, summary)`` as the library would; each step is seen."""
    status = status_of(daemon)
    dedup_key = await asyncio.to_thread(send, "trigger", None, "disk full on db-1")
    await eventually(lambda: len(sms_service.to(ONE)) == 1, what="the page")
    assert "disk full on db-1" in sms_service.to(ONE)[0].message
    await asyncio.to_thread(send, "acknowledge", dedup_key, None)
    await eventually(lambda: status() == "acknowledged", what="the acknowledgement")
    await asyncio.to_thread(send, "resolve", dedup_key, None)
    await eventually(lambda: status() == "resolved", what="the resolution")


async def test_the_pagerduty_library_triggers_acknowledges_and_resolves(
    daemon: Pagerd, tls: TlsFiles, sms_service: SmsStandIn
) -> None:
    key = await integration_key(daemon, tls, "db")
    client = pagerduty.EventsApiV2Client(
        key, base_url=f"{daemon.base_url}/integrations/pagerduty", verify=trusting(tls)
    )

    def send(action: str, dedup_key: str | None, summary: str | None) -> str:
        if action == "trigger":
            assert summary is not None
            return str(client.trigger(summary, "db-1", severity="critical"))
        assert dedup_key is not None
        return str(client.send_event(action, dedup_key=dedup_key))

    try:
        await trigger_ack_resolve(daemon, sms_service, send)
    finally:
        client.close()


async def test_pdpyras_triggers_acknowledges_and_resolves(
    daemon: Pagerd, tls: TlsFiles, sms_service: SmsStandIn
) -> None:
    key = await integration_key(daemon, tls, "db")
    session = pdpyras.EventsAPISession(key)
    session.url = f"{daemon.base_url}/integrations/pagerduty"
    session.verify = str(tls.ca)
    session.trust_env = False  # else $REQUESTS_CA_BUNDLE, if set, would replace verify

    def send(action: str, dedup_key: str | None, summary: str | None) -> str:
        match action:
            case "trigger":
                assert summary is not None
                return str(session.trigger(summary, "db-1", severity="critical"))
            case "acknowledge":
                return str(session.acknowledge(dedup_key))
            case _:
                return str(session.resolve(dedup_key))

    try:
        await trigger_ack_resolve(daemon, sms_service, send)
    finally:
        session.close()


async def test_plain_http_to_the_https_port_is_refused_and_counted(
    daemon: Pagerd, tls: TlsFiles
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    async with asyncio.timeout(10):
        answer = await reader.read()  # to the end: pagerd closes the connection
    writer.close()
    assert not answer.startswith(b"HTTP/"), answer

    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{daemon.base_url}/metrics", ssl=trusting(tls)) as response,
    ):
        text = await response.text()
    assert "pagerd_http_tls_handshake_failures_total 1.0" in text.splitlines()
    events = [e for e in daemon.log_events() if e["event"] == "http.tls_handshake_failed"]
    assert [e["peer"] for e in events] == ["127.0.0.1"]
    assert "HTTP_REQUEST" in events[0]["error"]


async def test_a_tls_handshake_must_finish_within_the_request_timeout(
    make_pagerd: PagerdFactory, tls: TlsFiles
) -> None:
    """A client that connects and says nothing holds its place only request_timeout_s."""
    daemon = make_pagerd(
        [],
        {},
        http={
            "tls_cert_file": str(tls.cert),
            "tls_key_file": str(tls.key),
            "request_timeout_s": 1,
        },
    )
    daemon.public_url = daemon.base_url
    await daemon.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.http_port)
    started = asyncio.get_running_loop().time()
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    waited = asyncio.get_running_loop().time() - started
    writer.close()
    assert 0.9 <= waited < 5, waited
    # The line is written after the connection is closed: poll for it.
    await eventually(
        lambda: any(e["event"] == "http.tls_handshake_failed" for e in daemon.log_events()),
        what="the handshake's failure logged",
    )
    events = [e for e in daemon.log_events() if e["event"] == "http.tls_handshake_failed"]
    assert len(events) == 1, events
