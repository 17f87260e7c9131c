"""Channel senders: each turns one outbox row into one delivery attempt."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from pagerd.store import OutboxRow


class Verdict(enum.Enum):
    SENT = "sent"
    RETRY = "retry"  # 5xx, 429, timeout, connection error: try again later
    FAIL = "fail"  # any other refusal: retrying will not help


@dataclass(frozen=True, slots=True)
class Attempt:
    verdict: Verdict
    detail: str
    retry_after_s: float | None = None


class Sender(Protocol):
    async def send(self, row: OutboxRow, text: str) -> Attempt: ...


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

    async def send(self, row: OutboxRow, text: str) -> Attempt:
        body = {"phone_number": row.recipient, "message": text}
        return await post_json(self._session, self._url, body, row.id, self._timeout)


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
