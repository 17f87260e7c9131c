"""What the runtime answers for each event handed to it: committed, retryable or refused.

Every way in (MQTT, the API, the integrations, acknowledge links) maps these three
alike: acknowledge or 2xx once committed; leave unacknowledged or 503 when it may be
taken later; refuse, with the reason, what will never be taken as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pagerd.core.domain import Incident, Outcome
from pagerd.core.records import OutboxRow


@dataclass(frozen=True, slots=True)
class Committed:
    """The event's effect is committed; ``outcome`` says what it amounted to. ``incident``
    is the service's latest incident after it (None for an alert maintenance suppressed)."""

    service_id: str
    outcome: Outcome
    incident: Incident | None
    notified: tuple[OutboxRow, ...] = ()


@dataclass(frozen=True, slots=True)
class Retryable:
    """Not committed this time (the store failed, no answer in time, an internal error):
    the same event may be taken if sent again."""

    service_id: str
    reason: str
    # not_committed | internal_error | unreadable | timeout | abandoned
    code: str = "not_committed"


@dataclass(frozen=True, slots=True)
class Refused:
    """Never taken as it is: ``reason`` is for people, ``code`` labels the metric."""

    service_id: str
    reason: str
    code: str  # unknown_service | no_policy


Answer = Committed | Retryable | Refused
Reply = Callable[[Answer], None]
