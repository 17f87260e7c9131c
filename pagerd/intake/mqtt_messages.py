"""What monitors publish, as pagerd reads it (CONTRACT §3), and its verdicts: pure.

A message is validated into a domain event here, or refused with a reason. A message
that carries a ``request_id`` asks for pagerd's verdict: whether it was taken, and
if not, why. ``pagerd alert|ack|healthy`` ask for it and wait (CONTRACT §9).
"""

from __future__ import annotations

import re
from typing import Literal, TypeVar

import msgspec

from pagerd.core.domain import Ack, Alert, Beat, Event, Healthy, Outcome
from pagerd.core.policy import (
    MAX_ALERT_ID_CHARS,
    MAX_MESSAGE_CHARS,
    SERVICE_ID,
    SERVICE_ID_PATTERN,
)
from pagerd.runtime.ids import new_incident_id

MAX_PAYLOAD_BYTES = 64 * 1024  # [mqtt] max_message_bytes by default
# A request id names a topic level of its own: {prefix}/verdicts/{request_id}.
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")

Kind = Literal["alert", "ack", "healthy", "heartbeat"]
KINDS = ("alert", "ack", "healthy", "heartbeat")


class Rejected(Exception):  # noqa: N818 - it is the verdict, not an error of ours
    """A message pagerd refuses; ``reason`` goes to the rejected topic and the log."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code  # short, for the metric label


class AlertBody(msgspec.Struct, frozen=True):
    message: str
    alert_id: str | None = None
    source: str | None = None
    request_id: str | None = None


class AckBody(msgspec.Struct, frozen=True):
    incident_id: str | None = None
    by: str | None = None
    request_id: str | None = None


class HealthyBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    request_id: str | None = None


_Body = TypeVar("_Body", AlertBody, AckBody, HealthyBody)


class Intake(msgspec.Struct, frozen=True, gc=False):
    """A message read into an event. Untracked by the cyclic garbage collector (as the
    events are): it holds text and an event only, so it is never part of a cycle, and
    thousands of them wait in the mailboxes at once."""

    topic: str
    kind: Kind
    service_id: str
    event: Event
    request_id: str | None = None  # the sender asks for a verdict


def parse_topic(topic: str, prefix: str) -> tuple[Kind, str]:
    """``{prefix}/{alert|ack|healthy|heartbeat}/{service_id}`` → (kind, service id)."""
    head = f"{prefix}/"
    parts = topic[len(head) :].split("/") if topic.startswith(head) else []
    if len(parts) != 2 or parts[0] not in KINDS:
        raise Rejected(
            f"topic {topic!r} is not {prefix}/alert|ack|healthy|heartbeat/SERVICE", "topic"
        )
    kind: Kind = parts[0]  # type: ignore[assignment]  # checked just above
    if not SERVICE_ID_PATTERN.fullmatch(parts[1]):
        raise Rejected(f"service id {parts[1]!r} must match {SERVICE_ID}", "topic")
    return kind, parts[1]


def parse_message(
    topic: str, payload: bytes, prefix: str, max_bytes: int = MAX_PAYLOAD_BYTES
) -> Intake:
    """Validate one MQTT message into a domain event, or raise Rejected."""
    kind, service_id = parse_topic(topic, prefix)
    if len(payload) > max_bytes:
        raise Rejected(too_large(len(payload), max_bytes), "too_large")
    if kind == "heartbeat":
        return Intake(topic, kind, service_id, _BEAT)  # any payload: it says only "still here"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Rejected(f"payload is not UTF-8: {error}", "not_utf8") from None
    match kind:
        case "alert":
            alert, request_id = _alert_event(text)
            return Intake(topic, kind, service_id, alert, _request_id(request_id))
        case "ack":
            ack = _decode(text, AckBody) if text.strip() else AckBody()
            event = Ack(incident_id=ack.incident_id, by=ack.by)
            return Intake(topic, kind, service_id, event, _request_id(ack.request_id))
        case "healthy":
            healthy = _decode(text, HealthyBody) if text.strip() else HealthyBody()
            return Intake(topic, kind, service_id, Healthy(), _request_id(healthy.request_id))
    raise AssertionError(kind)  # every kind is matched above


_BEAT = Beat()  # a beat carries nothing: one value serves them all


def too_large(size: int, max_bytes: int) -> str:
    return f"payload of {size} bytes is over {max_bytes}"


def _alert_event(text: str) -> tuple[Alert, str | None]:
    # A payload that looks like JSON must be a valid alert object; anything else
    # is plain text, and the text is the message.
    if text.lstrip().startswith(("{", "[")):
        body = _decode(text, AlertBody)
    else:
        body = AlertBody(message=text.strip())
    if not body.message.strip() or len(body.message) > MAX_MESSAGE_CHARS:
        raise Rejected(f"message: must be 1..{MAX_MESSAGE_CHARS} characters, not blank", "schema")
    if body.alert_id is not None and not 1 <= len(body.alert_id) <= MAX_ALERT_ID_CHARS:
        raise Rejected(f"alert_id: must be 1..{MAX_ALERT_ID_CHARS} characters", "schema")
    alert = Alert(
        message=body.message,
        new_incident_id=new_incident_id(),
        alert_id=body.alert_id,
        source=body.source,
    )
    return alert, body.request_id


def _request_id(value: str | None) -> str | None:
    if value is not None and not REQUEST_ID_PATTERN.fullmatch(value):
        raise Rejected("request_id: must match [A-Za-z0-9._-]{1,64}", "schema")
    return value


def _decode(text: str, schema: type[_Body]) -> _Body:
    try:
        return msgspec.json.decode(text, type=schema)
    except msgspec.ValidationError as error:
        raise Rejected(f"JSON does not fit the schema: {error}", "schema") from None
    except msgspec.DecodeError as error:
        raise Rejected(f"malformed JSON: {error}", "malformed") from None


# --- verdicts ------------------------------------------------------------------------------

# What an event that had its effect, or was a harmless repeat, amounted to; any other
# committed outcome is a refusal of the sender's intent (an ack with no incident open).
TAKEN = frozenset(
    {
        Outcome.OPENED,
        Outcome.APPENDED,
        Outcome.DUPLICATE_ALERT,
        Outcome.SUPPRESSED,  # recorded, during a maintenance window
        Outcome.ACKNOWLEDGED,
        Outcome.ALREADY_ACKNOWLEDGED,
        Outcome.RESOLVED,
        Outcome.ALREADY_HEALTHY,
    }
)


class Verdict(msgspec.Struct, frozen=True, omit_defaults=True):
    """Published on ``{prefix}/verdicts/{request_id}`` for a message that asked for it."""

    request_id: str
    taken: bool
    outcome: str | None = None
    incident_id: str | None = None
    reason: str | None = None


def verdict_topic(prefix: str, request_id: str) -> str:
    return f"{prefix}/verdicts/{request_id}"


class _Asking(msgspec.Struct):
    request_id: str | None = None


def asked_request_id(payload: bytes) -> str | None:
    """The valid ``request_id`` of a message refused before it was parsed, if it has one."""
    try:
        request_id = msgspec.json.decode(payload, type=_Asking).request_id
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    return request_id if request_id and REQUEST_ID_PATTERN.fullmatch(request_id) else None


def not_taken_reason(service_id: str, outcome: Outcome, incident_id: str | None) -> str:
    """Why a committed outcome did not do what its sender meant."""
    if outcome is Outcome.NO_SUCH_OPEN_INCIDENT:
        return f"no open incident on service {service_id!r}" + (
            f" with id {incident_id!r}" if incident_id else ""
        )
    return outcome.value
