"""Escalation policies: targets, levels and policies, and the rotation of a team.

Made once per configuration or API edit and read at every escalation step; each
constructor checks its own invariants and raises ``DomainError`` naming the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

import msgspec

# Each kind of identifier is written once, here: the domain checks it, and the config
# file, the API's schemas and the OpenAPI document use the same pattern (anchored).
SERVICE_ID = r"[A-Za-z0-9._-]{1,128}"
PHONE_NUMBER = r"\+?[0-9]{6,15}"
EMAIL_ADDRESS = r"[^@\s]+@[^@\s]+"
HTTP_URL = r"https?://\S+"
SERVICE_ID_PATTERN = re.compile(SERVICE_ID)
PHONE_NUMBER_PATTERN = re.compile(PHONE_NUMBER)
EMAIL_PATTERN = re.compile(EMAIL_ADDRESS)
HTTP_URL_PATTERN = re.compile(HTTP_URL)
# What each pattern means, for people: a problem names this, not the regex.
PATTERN_MEANINGS = {
    SERVICE_ID: "must match [A-Za-z0-9._-]{1,128}",
    PHONE_NUMBER: "must be a phone number: an optional + and 6 to 15 digits",
    EMAIL_ADDRESS: "must be an email address",
    HTTP_URL: "must be an http:// or https:// URL",
}

MAX_REPEAT = 9
MAX_MESSAGE_CHARS = 1024
MAX_ALERT_ID_CHARS = 255
# Far above any sane ack timeout, and far below where a deadline overflows datetime.
MAX_ACK_TIMEOUT_S = 30 * 24 * 3600


def anchored(pattern: str) -> str:
    """``pattern`` matching a whole string, for a schema's ``pattern`` (which searches)."""
    return f"^{pattern}$"


class DomainError(ValueError):
    """Invalid domain input; ``field`` names what was wrong (``levels[1].targets``)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


def validate_service_id(service_id: str, field: str = "service_id") -> str:
    """Return ``service_id`` if it matches ``[A-Za-z0-9._-]{1,128}``, else raise DomainError."""
    if not isinstance(service_id, str) or not SERVICE_ID_PATTERN.fullmatch(service_id):
        raise DomainError(field, f"{PATTERN_MEANINGS[SERVICE_ID]}, got {service_id!r}")
    return service_id


def _require(pattern: re.Pattern[str], value: str, field: str) -> None:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise DomainError(field, f"{PATTERN_MEANINGS[pattern.pattern]}, got {value!r}")


def require_phone_number(value: str, field: str = "phone_number") -> None:
    """DomainError unless ``value`` is a phone number: an optional + and 6 to 15 digits."""
    _require(PHONE_NUMBER_PATTERN, value, field)


# For schemas, which check a pattern by searching (``$`` allows a final newline there):
# each target's own check below is the one that holds.
PhoneNumber = Annotated[str, msgspec.Meta(pattern=anchored(PHONE_NUMBER))]
EmailAddress = Annotated[str, msgspec.Meta(pattern=anchored(EMAIL_ADDRESS))]
HttpUrl = Annotated[str, msgspec.Meta(pattern=anchored(HTTP_URL), max_length=2048)]
# A schedule's id follows the pattern of a service's.
ScheduleId = Annotated[str, msgspec.Meta(pattern=anchored(SERVICE_ID))]


# --- escalation policy -------------------------------------------------------------------


def require_text(value: str, field: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise DomainError(field, "must be a non-empty string")


# Targets are the one model of a page's target: the config file, the API and the store
# decode them straight into these (tagged by "type"), and each checks itself.


class _Target(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="type"):
    """Base of the targets: tagged by ``type``, and an unknown field is an error."""


class SmsTarget(_Target, frozen=True, tag="sms"):
    """Page a phone number by SMS."""

    phone_number: PhoneNumber

    def __post_init__(self) -> None:
        require_phone_number(self.phone_number)


class EmailTarget(_Target, frozen=True, tag="email"):
    """Page an email address."""

    address: EmailAddress

    def __post_init__(self) -> None:
        _require(EMAIL_PATTERN, self.address, "address")


class TeamTarget(_Target, frozen=True, tag="team"):
    """Page one developer of a team, chosen by the team's rotation (resolved by the runtime)."""

    team: str

    def __post_init__(self) -> None:
        require_text(self.team, "team")


class WebhookTarget(_Target, frozen=True, tag="webhook"):
    """POST the incident to a URL."""

    url: HttpUrl

    def __post_init__(self) -> None:
        _require(HTTP_URL_PATTERN, self.url, "url")


class ScheduleTarget(_Target, frozen=True, tag="schedule"):
    """Page whoever is on call on a schedule at the moment of the page."""

    schedule: ScheduleId

    def __post_init__(self) -> None:
        validate_service_id(self.schedule, "schedule")


Target = SmsTarget | EmailTarget | TeamTarget | WebhookTarget | ScheduleTarget
TARGET_TYPES = ("sms", "email", "team", "webhook", "schedule")


@dataclass(frozen=True, slots=True)
class Level:
    """One escalation level: who is paged, and how long they have to acknowledge."""

    targets: tuple[Target, ...]
    ack_timeout_s: float

    def __post_init__(self) -> None:
        if not self.targets:
            raise DomainError("targets", "a level needs at least one target")
        timeout = self.ack_timeout_s
        if isinstance(timeout, bool) or not isinstance(timeout, int | float):
            raise DomainError("ack_timeout_s", f"must be a number of seconds, got {timeout!r}")
        if not 0 < timeout <= MAX_ACK_TIMEOUT_S:  # also refuses NaN
            raise DomainError(
                "ack_timeout_s",
                f"must be positive and at most {MAX_ACK_TIMEOUT_S}, got {timeout!r}",
            )

    def distinct_targets(self) -> tuple[Target, ...]:
        """The targets in order, each once: a target listed twice is paged once."""
        return tuple(dict.fromkeys(self.targets))


@dataclass(frozen=True, slots=True)
class Policy:
    """An escalation policy: levels paged in order, then ``repeat`` more rounds from level 1."""

    id: str
    levels: tuple[Level, ...]
    repeat: int = 0

    def __post_init__(self) -> None:
        validate_service_id(self.id, "id")
        if not self.levels:
            raise DomainError("levels", "a policy needs at least one level")
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int):
            raise DomainError("repeat", f"must be an integer, got {self.repeat!r}")
        if not 0 <= self.repeat <= MAX_REPEAT:
            raise DomainError("repeat", f"must be between 0 and {MAX_REPEAT}, got {self.repeat}")


# --- team rotations ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OnCall:
    """A developer as a rotation pages them."""

    developer_id: int
    phone_number: str


@dataclass(frozen=True, slots=True)
class Roster:
    """A team's rotation: its developers in order, and whose turn is next (``cursor``)."""

    team_id: int
    team: str
    developers: tuple[OnCall, ...]
    cursor: int = 0

    def next_up(self) -> tuple[OnCall, Roster] | None:
        """The developer whose turn it is and the roster after their page; None if empty."""
        if not self.developers:
            return None
        count = len(self.developers)
        turn = self.cursor % count
        return self.developers[turn], Roster(
            self.team_id, self.team, self.developers, (turn + 1) % count
        )
