"""Acknowledge links: short HMAC-signed tokens that name a notification and expire.

A token is ``{notification_id}.{expiry}.{signature}``: the notification id as it
is (its characters are URL-safe already, and base64 would make it a third
longer), the expiry in base-36 Unix seconds, and the first 16 bytes of
HMAC-SHA256 over the first two parts, base64url without padding. A typical
token is 50 characters, so a link fits in an SMS beside the alert message.
The incident id is the notification id's part before its first "-" (see
``domain._page_level``), so it is not carried twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pagerd.core.ports import MetaStore
from pagerd.core.records import WriteBatch

SECRET_META_KEY = "ack_secret"  # noqa: S105 - the key it is stored under, not a secret
SECRET_BYTES = 32
MIN_SECRET_BYTES = 16
DEFAULT_TTL = timedelta(hours=24)
SIGNATURE_BYTES = 16
# Separates these signatures from any other use of the same secret.
_CONTEXT = b"pagerd.ack.v1\x00"
_NOTIFICATION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOKEN = re.compile(r"([A-Za-z0-9_-]{1,64})\.([0-9a-z]{1,13})\.([A-Za-z0-9_-]{22})")

NOT_VALID = "this link is not valid"
EXPIRED = "this link has expired"


class InvalidAckToken(ValueError):  # noqa: N818 - the name the API promises
    """A token that cannot acknowledge; ``reason`` is fit to show a person."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AckClaim:
    """What a valid token says: which notification of which incident, and until when."""

    incident_id: str
    notification_id: str
    expires_at: datetime


class AckLinks:
    """Makes and checks acknowledge links signed with one secret."""

    def __init__(self, secret: bytes, public_url: str, ttl: timedelta = DEFAULT_TTL) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the ack link secret needs at least {MIN_SECRET_BYTES} bytes")
        if ttl <= timedelta(0):
            raise ValueError("the ack link lifetime must be positive")
        self._secret = secret
        self._base = public_url.rstrip("/")
        self._ttl = ttl

    def link(self, notification_id: str, incident_id: str, now: datetime) -> str:
        """The URL that acknowledges ``incident_id``, valid for the lifetime from ``now``."""
        if not _NOTIFICATION_ID.fullmatch(notification_id):
            raise ValueError(f"notification id {notification_id!r} is not URL-safe")
        if _incident_of(notification_id) != incident_id:
            # The token carries only the notification id: it must name its incident.
            raise ValueError(
                f"notification id {notification_id!r} does not name incident {incident_id!r}"
            )
        expiry = int((now + self._ttl).timestamp())
        payload = f"{notification_id}.{_base36(expiry)}"
        return f"{self._base}/ack/{payload}.{self._sign(payload)}"

    def verify(self, token: str, now: datetime) -> AckClaim:
        """The claim of a genuine, unexpired token; raises InvalidAckToken otherwise."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            raise InvalidAckToken(NOT_VALID)
        notification_id, expiry, signature = match.groups()
        # The signature is checked before the expiry: a forged token must not learn
        # whether its expiry would have passed.
        if not hmac.compare_digest(signature, self._sign(f"{notification_id}.{expiry}")):
            raise InvalidAckToken(NOT_VALID)
        expires_at = datetime.fromtimestamp(int(expiry, 36), UTC)
        if now >= expires_at:
            raise InvalidAckToken(EXPIRED)
        return AckClaim(_incident_of(notification_id), notification_id, expires_at)

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._secret, _CONTEXT + payload.encode(), hashlib.sha256).digest()
        # Comparing the encoded text, not decoded bytes, leaves one spelling per signature.
        return base64.urlsafe_b64encode(digest[:SIGNATURE_BYTES]).rstrip(b"=").decode()


def _incident_of(notification_id: str) -> str:
    return notification_id.partition("-")[0]


def _base36(value: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        value, digit = divmod(value, 36)
        out = digits[digit] + out
        if not value:
            return out


async def load_or_create_secret(store: MetaStore) -> bytes:
    """The ack link secret kept in the database, made on first use so links survive restarts."""
    stored = await store.get_meta(SECRET_META_KEY)
    if stored is not None:
        try:
            secret = bytes.fromhex(stored)
        except ValueError:
            secret = b""
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(
                f"meta {SECRET_META_KEY!r} in the database is not a hex secret of at least"
                f" {MIN_SECRET_BYTES} bytes; delete that row to make a new one"
                " (links already sent stop working)"
            )
        return secret
    secret = secrets.token_bytes(SECRET_BYTES)
    await store.write(WriteBatch(meta=((SECRET_META_KEY, secret.hex()),)))
    return secret
