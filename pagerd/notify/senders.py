"""Channel senders: each turns one outbox row into one delivery attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Protocol

import aiohttp
import aiosmtplib

from pagerd.core.ports import Attempt, Page, Verdict
from pagerd.telemetry.masking import mask_text


def classify_http(status: int, retry_after: str | None) -> Attempt:
    """A 2xx is sent; 5xx and 429 are retried (honouring Retry-After seconds); other 4xx fail."""
    if 200 <= status < 300:
        return Attempt(Verdict.SENT, f"HTTP {status}")
    if status >= 500 or status == 429:
        delay = None
        if retry_after is not None and retry_after.strip().isdigit():
            delay = float(retry_after.strip())
        return Attempt(Verdict.RETRY, f"HTTP {status}", delay)
    return Attempt(Verdict.FAIL, f"HTTP {status}")


class SmsSender:
    """POSTs ``{"phone_number", "message"}`` to the SMS service, keyed by the notification id."""

    def __init__(self, session: aiohttp.ClientSession, url: str, timeout_s: float) -> None:
        self._session = session
        self._url = url
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, page: Page) -> Attempt:
        body = {"phone_number": page.row.recipient, "message": page.text}
        return await post_json(self._session, self._url, body, page.row.id, self._timeout)


class WebhookSender:
    """POSTs the incident as JSON to the target's URL, keyed by the notification id."""

    def __init__(self, session: aiohttp.ClientSession, timeout_s: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, page: Page) -> Attempt:
        row = page.row
        return await post_json(
            self._session, row.recipient, webhook_body(page), row.id, self._timeout
        )


def webhook_body(page: Page) -> dict[str, object]:
    """The JSON a webhook receives: event, incident, service, level and acknowledge link."""
    row = page.row
    return {
        "event": "incident.triggered" if row.step == 0 else "incident.escalated",
        "incident": {
            "id": row.incident_id,
            "message": row.message,
            "level": row.level,
            "step": row.step,
        },
        "service": {"id": row.service_id, "name": page.service_name},
        "level": row.level,
        "ack_url": page.ack_url or None,
    }


class SmtpSettings(Protocol):
    """What the email sender needs of ``[notify.email]``."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def sender(self) -> str: ...
    @property
    def starttls(self) -> bool: ...
    @property
    def username(self) -> str: ...
    @property
    def timeout_s(self) -> float: ...


class EmailSender:
    """Sends each page as one email over SMTP; STARTTLS and login only when configured."""

    def __init__(self, settings: SmtpSettings, password: str | None) -> None:
        self._settings = settings
        self._password = password

    async def send(self, page: Page) -> Attempt:
        settings = self._settings
        try:
            message = email_message(page, settings.sender)
        except ValueError as error:  # a header that cannot be written: resending will not help
            return Attempt(Verdict.FAIL, f"cannot write the message: {mask_text(str(error))}")
        login = bool(settings.username)
        try:
            # aiosmtplib's timeout is per command; this one bounds the whole conversation.
            async with asyncio.timeout(settings.timeout_s):
                await aiosmtplib.send(
                    message,
                    sender=parseaddr(settings.sender)[1] or settings.sender,
                    recipients=[page.row.recipient],
                    hostname=settings.host,
                    port=settings.port,
                    start_tls=settings.starttls,  # aiosmtplib's default would upgrade on offer
                    username=settings.username if login else None,
                    password=self._password if login else None,
                    timeout=settings.timeout_s,
                )
        except aiosmtplib.SMTPRecipientsRefused as error:
            refusals = error.recipients
            code = min((r.code for r in refusals), default=550)
            return _smtp_reply(code, "; ".join(r.message for r in refusals))
        except aiosmtplib.SMTPResponseException as error:
            return _smtp_reply(error.code, error.message)
        except TimeoutError:
            return Attempt(Verdict.RETRY, "SMTP timed out")
        except OSError as error:  # refused, reset, disconnected (aiosmtplib's are OSErrors too)
            return Attempt(Verdict.RETRY, f"SMTP {type(error).__name__}: {error}")
        except aiosmtplib.SMTPException as error:  # e.g. STARTTLS or AUTH configured, not offered
            return Attempt(Verdict.FAIL, f"SMTP {mask_text(error.message)}")
        except ValueError as error:  # an address aiosmtplib will not put on the wire
            return Attempt(Verdict.FAIL, f"SMTP {mask_text(str(error))}")
        return Attempt(Verdict.SENT, "SMTP 250")


def email_message(page: Page, sender: str) -> EmailMessage:
    """The email for ``page``; its Message-ID is the notification id, the same on every resend."""
    row = page.row
    message = EmailMessage()
    message["From"] = sender
    message["To"] = row.recipient
    # An alert message may hold line breaks; a header may not.
    message["Subject"] = " ".join(page.subject.split())
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{row.id}@pagerd>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to the pager
    message["X-Pagerd-Incident"] = row.incident_id
    message["X-Pagerd-Notification"] = row.id
    body = page.text
    if page.ack_url:
        body += f"\n\nAcknowledge: {page.ack_url}"
    message.set_content(body + "\n")
    return message


def _smtp_reply(code: int, text: str) -> Attempt:
    """A 5xx reply is permanent; 4xx, and anything unexpected, is worth another try.

    The server's words are kept (they say why), with the addresses in them masked.
    """
    verdict = Verdict.FAIL if 500 <= code < 600 else Verdict.RETRY
    return Attempt(verdict, f"SMTP {code} {mask_text(text)}".rstrip())


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    body: Mapping[str, object],
    idempotency_key: str,
    client_timeout: aiohttp.ClientTimeout,
) -> Attempt:
    """One POST; the outcome classified, never an exception for network trouble."""
    try:
        async with session.post(
            url, json=body, headers={"Idempotency-Key": idempotency_key}, timeout=client_timeout
        ) as response:
            await response.read()
            return classify_http(response.status, response.headers.get("Retry-After"))
    except TimeoutError:
        return Attempt(Verdict.RETRY, "timed out")
    except aiohttp.ClientError as error:
        return Attempt(Verdict.RETRY, f"{type(error).__name__}: {error}")
