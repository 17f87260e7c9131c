"""Channel senders: each turns one outbox row into one delivery attempt.

What an attempt says (``Attempt.detail``) reaches the timeline, ``last_error`` and
the MQTT events, which any token holder reads. So a failed connection is told by a
coarse class ("connection refused", "timeout"), never the socket's own text: a
webhook's URL is a token holder's choice, and the exact errors would make pagerd a
port scanner. An SMTP server's reply is kept, with any address or number masked.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, parseaddr
from typing import Protocol

import aiohttp
import aiosmtplib

from pagerd.core.egress import ADDRESS_NOT_ALLOWED
from pagerd.core.ports import Attempt, Page, Verdict
from pagerd.notify.egress import AddressNotAllowedError, WebhookEgress
from pagerd.telemetry.logs import mask_text

# Of any provider's answer, this much is read at most (CONTRACT §5); a longer one is cut
# off with its connection. Only the status line decides the outcome.
MAX_RESPONSE_BYTES = 64 * 1024

# The errors of pagerd's own host running short, not of the provider or the network.
LOCAL_ERRNOS = {
    errno.EMFILE: "pagerd is out of file descriptors",
    errno.ENFILE: "the host is out of file descriptors",
    errno.ENOBUFS: "the host is out of socket buffers",
    errno.ENOMEM: "the host is out of memory",
}


def local_failure(error: BaseException) -> Attempt | None:
    """A LOCAL verdict if ``error``, or what it was raised from, is the host running short."""
    seen: BaseException | None = error
    for _ in range(8):  # aiohttp and aiosmtplib wrap the OSError once or twice
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in LOCAL_ERRNOS:
            code = seen.errno
            return Attempt(Verdict.LOCAL, f"{errno.errorcode[code]}: {LOCAL_ERRNOS[code]}")
        seen = seen.__cause__ or seen.__context__
    return None


def classify_http(status: int, retry_after: str | None) -> Attempt:
    """A 2xx is sent; 5xx and 429 are retried (honouring Retry-After seconds); other 4xx
    and any 3xx fail (redirects are never followed)."""
    if 200 <= status < 300:
        return Attempt(Verdict.SENT, f"HTTP {status}")
    if status >= 500 or status == 429:
        delay = None
        if retry_after is not None and retry_after.strip().isdigit():
            delay = float(retry_after.strip())
        return Attempt(Verdict.RETRY, f"HTTP {status}", delay)
    if 300 <= status < 400:
        return Attempt(Verdict.FAIL, f"HTTP {status} (redirects are not followed)")
    return Attempt(Verdict.FAIL, f"HTTP {status}")


def connection_failure(error: aiohttp.ClientError) -> Attempt:
    """The coarse class of a request that got no status line; retried, unless it never can be."""
    os_error = error.os_error if isinstance(error, aiohttp.ClientConnectorError) else None
    if isinstance(os_error, AddressNotAllowedError):
        return Attempt(Verdict.FAIL, ADDRESS_NOT_ALLOWED)
    if isinstance(error, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
        return Attempt(Verdict.FAIL, "invalid URL")
    if isinstance(error, aiohttp.ClientConnectorDNSError):
        return Attempt(Verdict.RETRY, "name not resolved")
    if isinstance(error, aiohttp.ClientSSLError):
        return Attempt(Verdict.RETRY, "TLS error")
    if isinstance(error, aiohttp.ClientResponseError | aiohttp.ClientPayloadError):
        return Attempt(Verdict.RETRY, "invalid response")
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return Attempt(Verdict.RETRY, "connection closed")
    if isinstance(error, OSError):  # ClientOSError and ClientConnectorError are OSErrors
        return Attempt(Verdict.RETRY, os_failure(os_error or error))
    return Attempt(Verdict.RETRY, "connection failed")


def os_failure(error: BaseException) -> str:
    """The coarse class of a socket's error."""
    match error:
        case ssl.SSLError():
            return "TLS error"
        case ConnectionRefusedError():
            return "connection refused"
        case ConnectionResetError() | ConnectionAbortedError() | BrokenPipeError():
            return "connection closed"
        case socket.gaierror():
            return "name not resolved"
        case _:
            return "connection failed"


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
    """POSTs the incident as JSON to the target's URL, keyed by the notification id,
    through the session the egress rule gives that URL."""

    def __init__(self, egress: WebhookEgress, timeout_s: float) -> None:
        self._egress = egress
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def send(self, page: Page) -> Attempt:
        row = page.row
        session = self._egress.session_for(row.recipient)
        return await post_json(session, row.recipient, webhook_body(page), row.id, self._timeout)


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
            return Attempt(Verdict.RETRY, "SMTP timeout")
        except OSError as error:  # refused, reset, disconnected (aiosmtplib's are OSErrors too)
            local = local_failure(error)
            if local is not None:
                return local
            # aiosmtplib's connect error says what it could not reach in its cause.
            return Attempt(Verdict.RETRY, f"SMTP {os_failure(error.__cause__ or error)}")
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
    """One POST, never redirected; the outcome classified, never an exception for network
    trouble."""
    try:
        async with session.post(
            url,
            json=body,
            headers={"Idempotency-Key": idempotency_key},
            timeout=client_timeout,
            allow_redirects=False,
        ) as response:
            await _read_bounded(response)
            return classify_http(response.status, response.headers.get("Retry-After"))
    except TimeoutError:
        return Attempt(Verdict.RETRY, "timeout")
    except aiohttp.ClientError as error:
        return local_failure(error) or connection_failure(error)
    except OSError as error:  # raised before aiohttp could wrap it (making the socket)
        return local_failure(error) or Attempt(Verdict.RETRY, os_failure(error))


async def _read_bounded(response: aiohttp.ClientResponse) -> None:
    """Read the answer's body, to at most ``MAX_RESPONSE_BYTES``, so that the connection
    can be used again; a longer body is cut off with its connection.

    The status line has come: the outcome is decided, and a body that breaks or stalls
    afterwards does not change it (a 2xx was delivered).
    """
    left = MAX_RESPONSE_BYTES
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        while left > 0:
            chunk = await response.content.read(left)
            if not chunk:
                return
            left -= len(chunk)
    response.close()
