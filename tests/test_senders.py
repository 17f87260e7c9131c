"""Email and webhook senders against real servers on 127.0.0.1: what arrives, and each verdict."""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiosmtpd.smtp import SMTP, AuthResult

from pagerd.config import EmailConfig
from pagerd.core.egress import EgressRule
from pagerd.core.ports import Attempt, Page, Verdict
from pagerd.core.records import OutboxRow
from pagerd.notify.egress import WebhookEgress
from pagerd.notify.senders import EmailSender, WebhookSender
from tests.harness import free_port

OPENSSL = shutil.which("openssl")


def page(
    *,
    recipient: str = "oncall@example.com",
    step: int = 0,
    level: int = 1,
    message: str = "Too many 5xx!",
    ack_url: str = "http://127.0.0.1:8080/ack/tok3n",
) -> Page:
    row = OutboxRow(
        id=f"01HZXINCIDENT00-{step}-0",
        incident_id="01HZXINCIDENT00",
        service_id="payments-api",
        channel="email",
        recipient=recipient,
        level=level,
        step=step,
        message=message,
        created_at=datetime(2026, 11, 22, 10, 0, tzinfo=UTC),
    )
    return Page(
        row,
        service_name="Payments API",
        text=f"Payments API: {message} [incident CIDENT00, level {level}]",
        subject=f"[pagerd] Payments API: {message}",
        ack_url=ack_url,
    )


# --- a real SMTP server ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    tls: bool
    login: str | None


@dataclass
class Mailbox:
    """aiosmtpd handler: records each message; answers RCPT or DATA as told."""

    messages: list[Received] = field(default_factory=list)
    rcpt_reply: str = "250 OK"
    data_reply: str = "250 Message accepted for delivery"
    sessions: int = 0

    async def handle_RCPT(  # noqa: N802  # aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if self.rcpt_reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return self.rcpt_reply

    async def handle_DATA(  # noqa: N802  # aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        if not self.data_reply.startswith("250"):
            return self.data_reply
        # SMTP's line ends are CRLF; the test compares text as Python writes it.
        content = envelope.content.replace(b"\r\n", b"\n")
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(
            Received(
                envelope.mail_from,
                tuple(envelope.rcpt_tos),
                parsed,
                tls=session.ssl is not None,
                login=session.auth_data,
            )
        )
        return self.data_reply


class Authenticator:
    """Accepts one user; ``auth_data`` becomes the user name, so the handler can record it."""

    def __init__(self, user: str, password: str) -> None:
        self.credentials = (user.encode(), password.encode())

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if (auth_data.login, auth_data.password) != self.credentials:
            return AuthResult(success=False, handled=False)  # aiosmtpd answers 535
        return AuthResult(success=True, auth_data=auth_data.login.decode())


SmtpFactory = Callable[..., Awaitable[tuple[Mailbox, int]]]


@pytest.fixture
async def smtp_server() -> AsyncIterator[SmtpFactory]:
    """Start aiosmtpd in the test's own loop (no thread), on a free loopback port."""
    servers: list[asyncio.Server] = []

    async def start(**options: Any) -> tuple[Mailbox, int]:
        mailbox = Mailbox()
        loop = asyncio.get_running_loop()

        def protocol() -> SMTP:
            mailbox.sessions += 1
            return SMTP(mailbox, hostname="mx.test", loop=loop, **options)

        server = await loop.create_server(protocol, "127.0.0.1", 0)
        servers.append(server)
        return mailbox, int(server.sockets[0].getsockname()[1])

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def email_settings(port: int, **options: Any) -> EmailConfig:
    return EmailConfig(host="127.0.0.1", port=port, sender="pagerd@example.com", **options)


async def test_email_arrives_with_recipient_subject_message_id_and_ack_link(
    smtp_server: SmtpFactory,
) -> None:
    mailbox, port = await smtp_server()
    sent = page(message="Too many 5xx!\non checkout")

    attempt = await EmailSender(email_settings(port), password=None).send(sent)

    assert attempt.verdict is Verdict.SENT, attempt
    [received] = mailbox.messages
    assert received.mail_from == "pagerd@example.com"
    assert received.rcpt_tos == ("oncall@example.com",)
    message = received.message
    assert message["From"] == "pagerd@example.com"
    assert message["To"] == "oncall@example.com"
    # The alert's line break cannot stay in a header; service and message both show.
    assert message["Subject"] == "[pagerd] Payments API: Too many 5xx! on checkout"
    assert message["Message-ID"] == "<01HZXINCIDENT00-0-0@pagerd>"
    assert message["X-Pagerd-Incident"] == "01HZXINCIDENT00"
    assert message["X-Pagerd-Notification"] == "01HZXINCIDENT00-0-0"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Date"] is not None
    body = message.get_content()
    assert body.startswith(sent.text)
    assert "Acknowledge: http://127.0.0.1:8080/ack/tok3n\n" in body


async def test_email_without_ack_link_has_no_acknowledge_line(smtp_server: SmtpFactory) -> None:
    mailbox, port = await smtp_server()
    sent = page(ack_url="")

    attempt = await EmailSender(email_settings(port), password=None).send(sent)

    assert attempt.verdict is Verdict.SENT, attempt
    [received] = mailbox.messages
    assert received.message.get_content() == sent.text + "\n"


async def test_email_keeps_non_ascii_text(smtp_server: SmtpFactory) -> None:
    mailbox, port = await smtp_server()

    attempt = await EmailSender(email_settings(port), password=None).send(
        page(message="Überlast → 5xx")
    )

    assert attempt.verdict is Verdict.SENT, attempt
    [received] = mailbox.messages
    assert received.message["Subject"] == "[pagerd] Payments API: Überlast → 5xx"
    assert "Überlast → 5xx" in received.message.get_content()


async def test_the_same_page_sent_twice_carries_the_same_message_id(
    smtp_server: SmtpFactory,
) -> None:
    mailbox, port = await smtp_server()
    sender = EmailSender(email_settings(port), password=None)

    first = await sender.send(page())
    second = await sender.send(page())
    escalated = await sender.send(page(step=1, level=2))

    assert [first.verdict, second.verdict, escalated.verdict] == [Verdict.SENT] * 3
    ids = [received.message["Message-ID"] for received in mailbox.messages]
    assert ids == [
        "<01HZXINCIDENT00-0-0@pagerd>",
        "<01HZXINCIDENT00-0-0@pagerd>",
        "<01HZXINCIDENT00-1-0@pagerd>",
    ]


@pytest.mark.parametrize(
    ("rcpt_reply", "data_reply", "verdict", "detail"),
    [
        ("550 no such user", "250 OK", Verdict.FAIL, "SMTP 550 no such user"),
        ("451 try later", "250 OK", Verdict.RETRY, "SMTP 451 try later"),
        ("250 OK", "554 rejected as spam", Verdict.FAIL, "SMTP 554 rejected as spam"),
        ("250 OK", "452 mailbox full", Verdict.RETRY, "SMTP 452 mailbox full"),
        (
            "550 5.1.1 <someone@example.com>: Recipient address rejected",
            "250 OK",
            Verdict.FAIL,
            "SMTP 550 5.1.1 <s*****@example.com>: Recipient address rejected",
        ),
    ],
    ids=["rcpt 550", "rcpt 451", "data 554", "data 452", "rcpt 550 naming the address"],
)
async def test_smtp_replies_are_classified(
    smtp_server: SmtpFactory, rcpt_reply: str, data_reply: str, verdict: Verdict, detail: str
) -> None:
    mailbox, port = await smtp_server()
    mailbox.rcpt_reply, mailbox.data_reply = rcpt_reply, data_reply

    attempt = await EmailSender(email_settings(port), password=None).send(page())

    assert (attempt.verdict, attempt.detail) == (verdict, detail)
    assert mailbox.messages == []


async def test_email_to_nothing_listening_is_retried() -> None:
    attempt = await EmailSender(email_settings(free_port()), password=None).send(page())

    assert attempt == Attempt(Verdict.RETRY, "SMTP connection refused")  # no host, no port


async def test_email_to_a_silent_server_is_retried_after_the_timeout() -> None:
    held: list[asyncio.StreamWriter] = []

    async def never_greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep the connection open and say nothing

    server = await asyncio.start_server(never_greet, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    try:
        started = time.monotonic()
        attempt = await EmailSender(email_settings(port, timeout_s=0.3), password=None).send(page())
        elapsed = time.monotonic() - started
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()

    assert attempt.verdict is Verdict.RETRY, attempt
    assert 0.25 < elapsed < 3, elapsed


# --- STARTTLS and login -------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> Path:
    """A self-signed certificate (and key) for 127.0.0.1."""
    if OPENSSL is None:
        pytest.skip("openssl is not installed")
    pem = tmp_path / "server.pem"
    command = [OPENSSL, "req", "-x509", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    command += ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]
    command += ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(pem), "-out", str(pem)]
    subprocess.run(command, check=True, capture_output=True)
    return pem


def server_tls(pem: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    return context


async def test_starttls_is_off_by_default_even_when_offered(
    smtp_server: SmtpFactory, certificate: Path
) -> None:
    mailbox, port = await smtp_server(tls_context=server_tls(certificate))

    attempt = await EmailSender(email_settings(port), password=None).send(page())

    assert attempt.verdict is Verdict.SENT, attempt
    [received] = mailbox.messages
    assert not received.tls


async def test_starttls_when_configured(
    smtp_server: SmtpFactory, certificate: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))  # trust the test's own certificate
    mailbox, port = await smtp_server(tls_context=server_tls(certificate))

    attempt = await EmailSender(email_settings(port, starttls=True), password=None).send(page())

    assert attempt.verdict is Verdict.SENT, attempt
    [received] = mailbox.messages
    assert received.tls


async def test_starttls_configured_but_not_offered_fails_without_sending(
    smtp_server: SmtpFactory,
) -> None:
    mailbox, port = await smtp_server()

    attempt = await EmailSender(email_settings(port, starttls=True), password=None).send(page())

    assert attempt.verdict is Verdict.FAIL, attempt
    assert "STARTTLS" in attempt.detail
    assert mailbox.messages == []


async def test_login_only_when_a_username_is_configured(smtp_server: SmtpFactory) -> None:
    mailbox, port = await smtp_server(
        authenticator=Authenticator("pagerd", "s3cret"), auth_require_tls=False
    )

    anonymous = await EmailSender(email_settings(port), password="s3cret").send(page())
    logged_in = await EmailSender(email_settings(port, username="pagerd"), "s3cret").send(page())
    refused = await EmailSender(email_settings(port, username="pagerd"), "wrong").send(page())

    assert (anonymous.verdict, logged_in.verdict) == (Verdict.SENT, Verdict.SENT)
    assert [received.login for received in mailbox.messages] == [None, "pagerd"]
    assert refused.verdict is Verdict.FAIL, refused  # 535: a wrong password stays wrong
    assert refused.detail.startswith("SMTP 535")


# --- a real webhook receiver -------------------------------------------------------------


@dataclass
class Receiver:
    """An aiohttp server standing in for a chat or automation webhook."""

    requests: list[tuple[dict[str, str], Any]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def hook(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.json()))
        return web.json_response({"ok": True})

    async def status(self, request: web.Request) -> web.Response:
        await request.read()
        status = int(request.match_info["code"])
        headers = {"Retry-After": "7"} if status == 429 else {}
        return web.Response(status=status, headers=headers, text="no")

    async def hang(self, request: web.Request) -> web.Response:
        await self.release.wait()  # answers only when the test is over
        return web.Response()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    stand_in = Receiver()
    app = web.Application()
    app.router.add_post("/hook", stand_in.hook)
    app.router.add_post("/status/{code}", stand_in.status)
    app.router.add_post("/hang", stand_in.hang)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    assert runner.addresses
    stand_in.port = int(runner.addresses[0][1])
    yield stand_in
    stand_in.release.set()
    await runner.cleanup()


@pytest.fixture
async def webhooks() -> AsyncIterator[WebhookEgress]:
    """The webhook sessions, allowed to reach the receiver on 127.0.0.1."""
    rule = EgressRule.from_allow_hosts(["127.0.0.1"])
    async with aiohttp.ClientSession() as client, WebhookEgress(rule, client) as egress:
        yield egress


async def send_webhook(
    webhooks: WebhookEgress, url: str, *, timeout_s: float = 5, **options: Any
) -> Attempt:
    return await WebhookSender(webhooks, timeout_s).send(page(recipient=url, **options))


async def test_webhook_body_and_headers(receiver: Receiver, webhooks: WebhookEgress) -> None:
    attempt = await send_webhook(webhooks, receiver.url("/hook"))

    assert attempt.verdict is Verdict.SENT, attempt
    [(headers, body)] = receiver.requests
    assert headers["Idempotency-Key"] == "01HZXINCIDENT00-0-0"
    assert headers["Content-Type"] == "application/json"
    assert body == {
        "event": "incident.triggered",
        "incident": {
            "id": "01HZXINCIDENT00",
            "message": "Too many 5xx!",
            "level": 1,
            "step": 0,
        },
        "service": {"id": "payments-api", "name": "Payments API"},
        "level": 1,
        "ack_url": "http://127.0.0.1:8080/ack/tok3n",
    }


async def test_webhook_of_a_later_step_is_an_escalation(
    receiver: Receiver, webhooks: WebhookEgress
) -> None:
    attempt = await send_webhook(webhooks, receiver.url("/hook"), step=2, level=3, ack_url="")

    assert attempt.verdict is Verdict.SENT, attempt
    [(headers, body)] = receiver.requests
    assert headers["Idempotency-Key"] == "01HZXINCIDENT00-2-0"
    assert body["event"] == "incident.escalated"
    assert (body["level"], body["incident"]["level"], body["incident"]["step"]) == (3, 3, 2)
    assert body["ack_url"] is None


@pytest.mark.parametrize(
    ("status", "verdict", "retry_after_s"),
    [
        (500, Verdict.RETRY, None),
        (503, Verdict.RETRY, None),
        (429, Verdict.RETRY, 7.0),
        (404, Verdict.FAIL, None),
        (400, Verdict.FAIL, None),
    ],
)
async def test_webhook_answers_are_classified(
    receiver: Receiver,
    webhooks: WebhookEgress,
    status: int,
    verdict: Verdict,
    retry_after_s: float | None,
) -> None:
    attempt = await send_webhook(webhooks, receiver.url(f"/status/{status}"))

    assert attempt == Attempt(verdict, f"HTTP {status}", retry_after_s)


async def test_webhook_that_never_answers_is_retried_after_the_timeout(
    receiver: Receiver, webhooks: WebhookEgress
) -> None:
    started = time.monotonic()
    attempt = await send_webhook(webhooks, receiver.url("/hang"), timeout_s=0.3)
    elapsed = time.monotonic() - started

    assert attempt == Attempt(Verdict.RETRY, "timeout")
    assert 0.25 < elapsed < 3, elapsed


async def test_webhook_to_nothing_listening_is_retried(webhooks: WebhookEgress) -> None:
    attempt = await send_webhook(webhooks, f"http://127.0.0.1:{free_port()}/hook")

    assert attempt.verdict is Verdict.RETRY, attempt
