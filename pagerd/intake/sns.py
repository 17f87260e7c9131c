"""Amazon SNS deliveries over HTTP(S): the envelope, and its signature checked as AWS documents.

SNS signs each message (SignatureVersion 1: SHA1withRSA, 2: SHA256withRSA) over a
canonical string of the fields of its type, and names the certificate in
``SigningCertURL``. Anyone can post an envelope naming any URL, so the certificate
is fetched only from a URL matching ``[integrations] sns_cert_url_pattern``, which
by default admits AWS's own SNS hosts alone.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import aiohttp
import msgspec

from pagerd.intake.api_schemas import BodyError, parse_json
from pagerd.telemetry.logs import get_logger

if TYPE_CHECKING:
    # cryptography is imported where a signature is checked, not here: start-up should
    # not pay its import for an integration most installations never use.
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa

log = get_logger(__name__)

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"
FETCH_TIMEOUT_S = 10.0
MAX_CERT_BYTES = 64 * 1024
MAX_CACHED_CERTS = 32  # AWS rotates its certificates rarely; a bound keeps a flood harmless
# A signed message older than this is refused: a captured ALARM must not be replayable
# forever. An hour is as long as an SNS delivery policy may keep retrying.
MAX_MESSAGE_AGE = timedelta(hours=1)
MAX_CLOCK_SKEW = timedelta(minutes=5)  # a Timestamp this far ahead of our clock still passes

# The fields each type signs, in the order of the canonical string (AWS documentation).
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = (
    "Message",
    "MessageId",
    "SubscribeURL",
    "Timestamp",
    "Token",
    "TopicArn",
    "Type",
)


class SnsEnvelope(msgspec.Struct, frozen=True, rename="pascal"):
    """An SNS HTTP(S) delivery; unknown fields are ignored, as AWS may add some."""

    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: str
    # Missing signature fields are a rejected signature (403), not a malformed body.
    signature_version: str = ""
    signature: str = ""
    signing_cert_url: str = msgspec.field(default="", name="SigningCertURL")
    subject: str | None = None
    token: str | None = None
    subscribe_url: str | None = msgspec.field(default=None, name="SubscribeURL")


class MalformedEnvelopeError(ValueError):
    """The body is not an SNS envelope."""


class SignatureRejectedError(Exception):
    """The envelope's signature is missing, bad, or made with a certificate we do not trust."""


class CertificateUnavailableError(Exception):
    """The signing certificate could not be fetched just now: worth a retry by SNS."""


def parse_envelope(body: bytes) -> SnsEnvelope:
    """The envelope of an SNS delivery (``text/plain`` JSON); MalformedEnvelopeError if not."""
    try:
        # As the API's bodies: nesting past its depth limit is refused, not recursed into.
        return msgspec.convert(parse_json(body), SnsEnvelope)
    except BodyError as error:
        raise MalformedEnvelopeError(f"not an SNS message: {error.detail}") from None
    except msgspec.ValidationError as error:
        raise MalformedEnvelopeError(f"not an SNS message: {error}") from None


def canonical_string(envelope: SnsEnvelope) -> bytes:
    """What SNS signed: ``Key\\nValue\\n`` for each field its type signs, skipping an absent
    Subject; MalformedEnvelopeError for a type SNS does not sign or a missing field."""
    values = {
        "Message": envelope.message,
        "MessageId": envelope.message_id,
        "Subject": envelope.subject,
        "SubscribeURL": envelope.subscribe_url,
        "Timestamp": envelope.timestamp,
        "Token": envelope.token,
        "TopicArn": envelope.topic_arn,
        "Type": envelope.type,
    }
    names: tuple[str, ...]
    if envelope.type == NOTIFICATION:
        names = _NOTIFICATION_FIELDS
    elif envelope.type in (SUBSCRIPTION_CONFIRMATION, UNSUBSCRIBE_CONFIRMATION):
        names = _CONFIRMATION_FIELDS
    else:
        raise MalformedEnvelopeError(f"Type {envelope.type!r} is not an SNS message type")
    parts: list[str] = []
    for name in names:
        value = values[name]
        if value is None:
            if name == "Subject":
                continue
            raise MalformedEnvelopeError(f"{envelope.type} without {name}")
        parts.append(f"{name}\n{value}\n")
    return "".join(parts).encode()


def check_signature(envelope: SnsEnvelope, public_key: rsa.RSAPublicKey) -> None:
    """Raise SignatureRejectedError unless ``public_key`` signed the envelope's canonical string."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import padding

    algorithm, signature, signed = _signed_parts(envelope)
    try:
        public_key.verify(signature, signed, padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise SignatureRejectedError("the signature does not match the message") from None


def check_fresh(envelope: SnsEnvelope, now: datetime) -> None:
    """Refuse a message whose (signed) Timestamp is too old, or too far ahead, to be live."""
    try:
        sent = datetime.fromisoformat(envelope.timestamp)
    except ValueError:
        raise SignatureRejectedError(f"Timestamp {envelope.timestamp!r} is not a time") from None
    if sent.tzinfo is None:
        raise SignatureRejectedError(f"Timestamp {envelope.timestamp!r} has no time zone")
    if now - sent > MAX_MESSAGE_AGE or sent - now > MAX_CLOCK_SKEW:
        raise SignatureRejectedError(
            f"Timestamp {envelope.timestamp} is not within {MAX_MESSAGE_AGE} of now"
            " (a replayed message?)"
        )


def _signed_parts(envelope: SnsEnvelope) -> tuple[hashes.HashAlgorithm, bytes, bytes]:
    """The hash algorithm, the signature and the signed bytes; raises if any is missing."""
    if not envelope.signature:
        raise SignatureRejectedError("the message is not signed")
    from cryptography.hazmat.primitives import hashes

    hash_of_version = {"1": hashes.SHA1, "2": hashes.SHA256}
    algorithm = hash_of_version.get(envelope.signature_version)
    if algorithm is None:
        raise SignatureRejectedError(
            f"SignatureVersion {envelope.signature_version!r} is not 1 or 2"
        )
    try:
        signature = base64.b64decode(envelope.signature, validate=True)
    except binascii.Error:
        raise SignatureRejectedError("Signature is not base64") from None
    return algorithm(), signature, canonical_string(envelope)


class SnsVerifier:
    """Checks envelopes against AWS's signing certificates, fetched once each and cached.

    It owns an HTTP session, made at first use; ``close`` it at shutdown.
    """

    def __init__(
        self,
        cert_url_pattern: str,
        *,
        timeout_s: float = FETCH_TIMEOUT_S,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._pattern = re.compile(cert_url_pattern)
        self._now = now
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._fetching = asyncio.Lock()

    async def verify(self, envelope: SnsEnvelope) -> None:
        """Return if SNS signed the envelope; else SignatureRejectedError (or, when the
        certificate cannot be fetched just now, CertificateUnavailableError)."""
        _signed_parts(envelope)  # what can be refused without fetching anything, first
        url = envelope.signing_cert_url
        # The whole URL must match: a pattern that matched a part would admit any host.
        if not self._pattern.fullmatch(url):
            raise SignatureRejectedError(
                f"SigningCertURL {url!r} does not match sns_cert_url_pattern"
            )
        check_fresh(envelope, self._now())
        check_signature(envelope, await self._public_key(url))

    async def confirm(self, subscribe_url: str) -> None:
        """Confirm a subscription by fetching its SubscribeURL; aiohttp.ClientError on failure."""
        async with self._client().get(subscribe_url, allow_redirects=False) as response:
            response.raise_for_status()

    async def close(self) -> None:
        """Close the HTTP session, if one was made."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _public_key(self, url: str) -> rsa.RSAPublicKey:
        async with self._fetching:  # one fetch per certificate, however many messages wait
            key = self._keys.get(url)
            if key is None:
                key = _rsa_key(await self._fetch(url), url)
                if len(self._keys) >= MAX_CACHED_CERTS:
                    self._keys.pop(next(iter(self._keys)))
                self._keys[url] = key
                log.info("sns.certificate_fetched", url=url)
            return key

    async def _fetch(self, url: str) -> bytes:
        try:
            # No redirects: the URL that matched the pattern is the one that must answer.
            async with self._client().get(url, allow_redirects=False) as response:
                if response.status >= 500 or response.status == 429:
                    raise CertificateUnavailableError(f"{url} answered {response.status}")
                if response.status != 200:
                    raise SignatureRejectedError(f"{url} answered {response.status}")
                body = await response.content.read(MAX_CERT_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise CertificateUnavailableError(f"cannot fetch {url}: {error!r}") from None
        if len(body) > MAX_CERT_BYTES:
            raise SignatureRejectedError(f"{url} is over {MAX_CERT_BYTES} bytes")
        return body


def _rsa_key(pem: bytes, url: str) -> rsa.RSAPublicKey:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import rsa

    try:
        key = x509.load_pem_x509_certificate(pem).public_key()
    except ValueError:
        raise SignatureRejectedError(f"{url} is not a PEM certificate") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise SignatureRejectedError(f"{url} does not hold an RSA key")
    return key
