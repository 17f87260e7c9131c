"""Webhook egress (CONTRACT §5): the rule on URLs and addresses, and the webhook sender
against real aiohttp servers on 127.0.0.1: no redirects, bounded reads, coarse errors."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from pagerd.config import ConfigError, load_config
from pagerd.core.egress import EgressRule, allow_hosts_problems
from pagerd.core.ports import Attempt, Page, Verdict
from pagerd.core.records import OutboxRow
from pagerd.notify.egress import AddressNotAllowedError, WebhookEgress, checked_socket
from pagerd.notify.senders import MAX_RESPONSE_BYTES, WebhookSender
from pagerd.telemetry import metrics
from tests.harness import free_port

OPENSSL = shutil.which("openssl")
NOBODY = EgressRule.from_allow_hosts([])


# --- the rule on URLs --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1:8080/hook", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.10/", "private"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
        ("http://0.0.0.0:22/", "unspecified"),
        ("http://[::1]:8080/", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd00::1]/", "private"),
        ("http://[::]/", "unspecified"),
        ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 of 169.254.169.254
        ("http://2130706433/", "loopback"),  # 127.0.0.1 as one number
        ("http://0x7f.1/", "loopback"),
        ("http://127.1:8080/", "loopback"),
        ("http://localhost:9/", "loopback"),
        ("http://LOCALHOST./", "loopback"),
        ("https://db.localhost/", "loopback"),
        ("http://user:pw@10.0.0.1/", "private"),
    ],
)
def test_a_url_naming_an_internal_address_is_refused(url: str, kind: str) -> None:
    refusal = NOBODY.url_refusal(url)
    assert refusal is not None
    assert f"a {kind} address" in refusal
    assert "[notify.webhook] allow_hosts" in refusal


@pytest.mark.parametrize(
    "url",
    [
        "https://chat.example.com/hook",
        "http://93.184.216.34/",
        "http://[2606:2800:220:1::1]/",
        "http://localhost.example.com/",  # a name: its addresses are checked at connect time
    ],
)
def test_a_url_naming_a_public_address_or_a_name_passes(url: str) -> None:
    assert NOBODY.url_refusal(url) is None


@pytest.mark.parametrize(
    ("allow_hosts", "url", "allowed"),
    [
        (["127.0.0.1"], "http://127.0.0.1:1/", True),
        (["127.0.0.1"], "http://127.0.0.2/", False),
        (["127.0.0.0/8"], "http://127.0.0.2/", True),
        (["127.0.0.0/8"], "http://[::ffff:127.0.0.2]/", True),
        (["10.0.0.0/8"], "http://[::1]/", False),
        (["hooks.internal"], "http://HOOKS.internal./x", True),
        (["hooks.internal"], "http://10.0.0.1/", False),
        (["localhost"], "http://localhost:8080/", True),
        (["localhost"], "http://127.0.0.1:8080/", False),
    ],
)
def test_allow_hosts_lets_through_what_it_lists(
    allow_hosts: list[str], url: str, allowed: bool
) -> None:
    rule = EgressRule.from_allow_hosts(allow_hosts)
    assert (rule.url_refusal(url) is None) is allowed


def test_allow_hosts_entries_that_mean_nothing_are_named() -> None:
    entries = ["10.0.0.0/33", "not a host!", "hooks.internal", "10.0.0.0/8", "::1", "127.0.0.1"]
    assert [index for index, _ in allow_hosts_problems(entries)] == [0, 1]


_INTERNAL_NETWORKS = [
    ipaddress.IPv4Network(cidr)
    for cidr in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16")
]
_INTERNAL_V4 = st.sampled_from(_INTERNAL_NETWORKS).flatmap(
    lambda net: st.integers(0, net.num_addresses - 1).map(lambda i: net[i])
)


@given(address=_INTERNAL_V4, mapped=st.booleans())
def test_every_internal_ipv4_address_is_refused_however_written(
    address: ipaddress.IPv4Address, mapped: bool
) -> None:
    host = f"[::ffff:{address}]" if mapped else str(address)
    assert NOBODY.url_refusal(f"http://{host}:8080/") is not None
    assert NOBODY.url_refusal(f"http://{int(address)}/") is not None
    with pytest.raises(AddressNotAllowedError):
        checked_socket(NOBODY, (socket.AF_INET, socket.SOCK_STREAM, 6, "", (str(address), 80)))


@given(address=st.ip_addresses(v=4))
def test_a_public_address_is_connected_to(address: ipaddress.IPv4Address) -> None:
    if address.is_private or address.is_loopback or address.is_link_local:
        return
    if address.is_unspecified:
        return
    sock = checked_socket(NOBODY, (socket.AF_INET, socket.SOCK_STREAM, 6, "", (str(address), 80)))
    sock.close()


# --- the sender against real servers --------------------------------------------------------


def page(url: str) -> Page:
    row = OutboxRow(
        id="01HZXINCIDENT00-0-0",
        incident_id="01HZXINCIDENT00",
        service_id="payments-api",
        channel="webhook",
        recipient=url,
        level=1,
        step=0,
        message="Too many 5xx!",
        created_at=datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
    )
    return Page(row, "Payments API", "text", subject="subject", ack_url="")


@dataclass
class Sink:
    """A webhook receiver: records each POST by path; can redirect, flood, or hang."""

    hits: list[str] = field(default_factory=list)
    flooded: int = 0  # bytes written by /flood before the client went away
    port: int = 0

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def hook(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        await request.read()
        return web.json_response({"ok": True})

    async def redirect(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        raise web.HTTPTemporaryRedirect("/hook")

    async def flood(self, request: web.Request) -> web.StreamResponse:
        """A 200 whose body never ends (as the 1.5 GB one that took pagerd to 1.19 GB)."""
        self.hits.append(request.path)
        response = web.StreamResponse()
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            while self.flooded < 512 * 1024 * 1024:
                await response.write(chunk)
                self.flooded += len(chunk)
        except ConnectionError:
            pass
        return response


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    receiver = Sink()
    app = web.Application()
    app.router.add_post("/hook", receiver.hook)
    app.router.add_post("/redirect", receiver.redirect)
    app.router.add_post("/flood", receiver.flood)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.port = int(runner.addresses[0][1])
    yield receiver
    await runner.cleanup()


async def send(url: str, allow_hosts: list[str], *, timeout_s: float = 5.0) -> Attempt:
    rule = EgressRule.from_allow_hosts(allow_hosts)
    async with aiohttp.ClientSession() as session, WebhookEgress(rule, session) as egress:
        return await WebhookSender(egress, timeout_s).send(page(url))


async def test_an_internal_address_is_refused_at_connect_time(sink: Sink) -> None:
    """Given no allow_hosts, when a webhook points at 127.0.0.1 (literally, or by a name
    that resolves there), then the page fails at once, `address not allowed`, and
    nothing reaches the receiver; listed in allow_hosts, it is delivered."""
    before = metrics.WEBHOOK_ADDRESSES_REFUSED._value.get()

    literal = await send(sink.url("/hook"), [])
    by_name = await send(sink.url("/hook", host="localhost"), [])

    assert literal == Attempt(Verdict.FAIL, "address not allowed")
    assert by_name == Attempt(Verdict.FAIL, "address not allowed")
    assert sink.hits == []
    assert metrics.WEBHOOK_ADDRESSES_REFUSED._value.get() > before

    assert (await send(sink.url("/hook"), ["127.0.0.0/8"])).verdict is Verdict.SENT
    assert (await send(sink.url("/hook", host="localhost"), ["localhost"])).verdict is Verdict.SENT
    assert (await send(sink.url("/hook", host="localhost"), ["127.0.0.1"])).verdict is Verdict.SENT
    assert sink.hits == ["/hook"] * 3


async def test_a_redirect_fails_at_once_and_is_not_followed(sink: Sink) -> None:
    attempt = await send(sink.url("/redirect"), ["127.0.0.1"])

    assert attempt == Attempt(Verdict.FAIL, "HTTP 307 (redirects are not followed)")
    assert sink.hits == ["/redirect"]


async def test_an_endless_answer_is_read_to_64_kib_only(sink: Sink) -> None:
    """Given a 200 whose body never ends, then the page counts as sent as soon as 64 KiB
    are read, well before the timeout, and the connection is dropped."""
    started = time.monotonic()
    attempt = await send(sink.url("/flood"), ["127.0.0.1"], timeout_s=5.0)
    elapsed = time.monotonic() - started

    assert attempt == Attempt(Verdict.SENT, "HTTP 200")
    assert elapsed < 2.0, elapsed
    assert MAX_RESPONSE_BYTES == 64 * 1024
    await asyncio.sleep(0)  # let the receiver notice the client is gone
    assert sink.flooded < 64 * 1024 * 1024  # what socket buffers hold, not the whole stream


async def test_connection_errors_are_told_by_coarse_classes(sink: Sink) -> None:
    """Given targets that refuse, hang, or speak no TLS, then the detail names the class
    only, never the host, port or socket text."""
    port = free_port()
    refused = await send(f"http://127.0.0.1:{port}/hook", ["127.0.0.1"])
    tls = await send(f"https://127.0.0.1:{sink.port}/hook", ["127.0.0.1"])
    unresolved = await send("http://no-such-host.invalid/hook", [])

    assert refused == Attempt(Verdict.RETRY, "connection refused")
    assert tls == Attempt(Verdict.RETRY, "TLS error")  # a plain HTTP server, asked for TLS
    assert unresolved == Attempt(Verdict.RETRY, "name not resolved")
    for attempt in (refused, tls, unresolved):
        assert str(port) not in attempt.detail
        assert "127.0.0.1" not in attempt.detail


@pytest.fixture
def tls_server_context(tmp_path: Path) -> ssl.SSLContext:
    """A TLS context with a self-signed certificate, which no client trusts."""
    if OPENSSL is None:
        pytest.skip("openssl is not installed")
    pem = tmp_path / "server.pem"
    command = [OPENSSL, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(pem), "-out", str(pem)]
    subprocess.run(command, check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    return context


async def test_an_untrusted_certificate_is_a_tls_error(tls_server_context: ssl.SSLContext) -> None:
    app = web.Application()
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls_server_context)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        attempt = await send(f"https://127.0.0.1:{port}/hook", ["127.0.0.1"])
    finally:
        await runner.cleanup()

    assert attempt == Attempt(Verdict.RETRY, "TLS error")


# --- the rule in the config file -------------------------------------------------------------

WEBHOOK_POLICY = """
[[policies]]
id = "p"
[[policies.levels]]
targets = [{{ type = "sms", phone_number = "+15550001111" }}, {{ type = "webhook", url = "{url}" }}]
"""


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "pagerd.toml"
    path.write_text(text)
    try:
        load_config(path, env={})
    except ConfigError as error:
        return [problem.removeprefix(f"{path}: ") for problem in error.problems]
    return []


def test_the_config_file_refuses_a_webhook_to_an_internal_address(tmp_path: Path) -> None:
    """Given a declared webhook to the metadata address, then the file is refused naming the
    target's key path; listed in allow_hosts, it is accepted."""
    text = WEBHOOK_POLICY.format(url="http://169.254.169.254/latest/meta-data/")

    assert problems_of(tmp_path, text) == [
        (
            "policies[0].levels[0].targets[1].url: 169.254.169.254 is a link-local address;"
            " a webhook may reach it only if [notify.webhook] allow_hosts lists it"
        )
    ]
    allowed = '[notify.webhook]\nallow_hosts = ["169.254.0.0/16"]\n' + text
    assert problems_of(tmp_path, allowed) == []
    public = WEBHOOK_POLICY.format(url="https://chat.example.com/hook")
    assert problems_of(tmp_path, public) == []


def test_the_config_file_names_each_allow_hosts_entry_that_means_nothing(tmp_path: Path) -> None:
    text = '[notify.webhook]\nallow_hosts = ["hooks.internal", "10.0.0.0/33", "a b"]\n'

    problems = problems_of(tmp_path, text)

    assert [p.split(":")[0] for p in problems] == [
        "notify.webhook.allow_hosts[1]",
        "notify.webhook.allow_hosts[2]",
    ]
