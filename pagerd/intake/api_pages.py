"""The query parameters of the API's pages: cursors, filters and times, each checked.

A cursor is opaque to clients: the key of the last row of a page, which the next page
starts after (keyset pagination: a row added or removed meanwhile shifts nothing). Each
reader records a problem for a parameter it cannot use, so that one 422 names them all.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from pagerd.core.policy import SERVICE_ID
from pagerd.intake import api_schemas as wire

# Services listed unhealthy first: the cursor names the part of the list (u or h) too.
_SERVICE_CURSOR = re.compile(rf"([uh])\.({SERVICE_ID})")
_SEQ = re.compile(r"[0-9]{1,18}")
# An incident's key: opened_at in microseconds since the epoch, and its seq.
_INCIDENT_CURSOR = re.compile(r"(-?[0-9]{1,17})\.([0-9]{1,18})")
# A "+" left unescaped in a query string arrives as a space: "...T10:00:00 01:00".
_UNESCAPED_PLUS = re.compile(r" (\d\d:\d\d)$")
MAX_TEXT = 100
NOT_A_CURSOR = "must be the next cursor of an earlier page"
HEALTHS = ("unhealthy", "healthy")
STATUSES = ("open", "triggered", "acknowledged", "resolved")


def service_cursor(unhealthy: bool, service_id: str) -> str:
    return f"{'u' if unhealthy else 'h'}.{service_id}"


def read_service_cursor(
    query: Mapping[str, str], problems: list[wire.FieldProblem]
) -> tuple[bool, str] | None:
    """``?after=`` of the services: (unhealthy part, id), or None for the first page."""
    text = query.get("after")
    if text is None:
        return None
    match = _SERVICE_CURSOR.fullmatch(text)
    if match is None:
        problems.append(wire.FieldProblem(field="after", problem=NOT_A_CURSOR))
        return None
    return match.group(1) == "u", match.group(2)


def read_seq_cursor(query: Mapping[str, str], problems: list[wire.FieldProblem]) -> int | None:
    """``?after=`` of alerts: the seq of the last alert of the page before, or None."""
    text = query.get("after")
    if text is None:
        return None
    if not _SEQ.fullmatch(text):
        problems.append(wire.FieldProblem(field="after", problem=NOT_A_CURSOR))
        return None
    return int(text)


def incident_cursor(opened_at: datetime, seq: int) -> str:
    since = opened_at - EPOCH  # in whole microseconds: a float would round some away
    micros = (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds
    return f"{micros}.{seq}"


def read_incident_cursor(
    query: Mapping[str, str], problems: list[wire.FieldProblem]
) -> tuple[datetime, int] | None:
    """``?after=`` of incidents: the key (opened_at, seq) of the page before's last."""
    text = query.get("after")
    if text is None:
        return None
    match = _INCIDENT_CURSOR.fullmatch(text)
    if match is None:
        problems.append(wire.FieldProblem(field="after", problem=NOT_A_CURSOR))
        return None
    try:
        opened_at = EPOCH + timedelta(microseconds=int(match.group(1)))
    except OverflowError:
        problems.append(wire.FieldProblem(field="after", problem=NOT_A_CURSOR))
        return None
    return opened_at, int(match.group(2))


def read_choice(
    query: Mapping[str, str], name: str, choices: tuple[str, ...], problems: list[wire.FieldProblem]
) -> str | None:
    """``?{name}=``, one of ``choices``, or None when absent."""
    text = query.get(name)
    if text is None or text in choices:
        return text
    problems.append(wire.FieldProblem(field=name, problem=f"must be one of {', '.join(choices)}"))
    return None


def read_text(query: Mapping[str, str], problems: list[wire.FieldProblem]) -> str | None:
    """``?q=``, the text searched for, or None when absent or blank."""
    text = query.get("q")
    if text is None or not text.strip():
        return None
    if len(text) > MAX_TEXT:
        problems.append(
            wire.FieldProblem(field="q", problem=f"must be at most {MAX_TEXT} characters")
        )
        return None
    return text.strip()


def read_time(
    query: Mapping[str, str], name: str, problems: list[wire.FieldProblem]
) -> datetime | None:
    """``?{name}=``, an RFC 3339 time with a UTC offset (in UTC), or None when absent."""
    text = query.get(name)
    if text is None:
        return None
    text = _UNESCAPED_PLUS.sub(r"+\1", text)
    with contextlib.suppress(ValueError, OverflowError):  # past datetime's years in UTC
        value = datetime.fromisoformat(text)
        if value.utcoffset() is not None:
            return value.astimezone(UTC)
    problem = f"must be an RFC 3339 time with a UTC offset, got {text[:40]!r}"
    problems.append(wire.FieldProblem(field=name, problem=problem))
    return None


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
