"""Publishing to more than one publisher: MQTT's, and the console's live feed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pagerd.core.domain import RecordTimeline, ServiceState
from pagerd.core.ports import OnCallNow, Publisher


class Publishers:
    """Publishes to each of several publishers (MQTT, and the console's live feed)."""

    def __init__(self, publishers: Iterable[Publisher]) -> None:
        self._publishers = tuple(publishers)

    def publish_state(self, service_id: str, state: ServiceState, at: datetime) -> None:
        for publisher in self._publishers:
            publisher.publish_state(service_id, state, at)

    def publish_events(self, service_id: str, events: Iterable[RecordTimeline]) -> None:
        listed = tuple(events)  # each publisher reads them all
        for publisher in self._publishers:
            publisher.publish_events(service_id, listed)

    def publish_on_call(self, schedule_id: str, on_call: OnCallNow | None) -> None:
        for publisher in self._publishers:
            publisher.publish_on_call(schedule_id, on_call)
