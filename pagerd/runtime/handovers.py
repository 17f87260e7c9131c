"""Hand-overs announced: each schedule's on-call, retained, and an SMS when a turn begins.

One timer per schedule, at the end of its current developer's stretch: the first
instant someone else is on call (an override of the same developer, or a rotation of
one, is no hand-over). When it fires, or when the schedule or its overrides change,
the on-call is computed again and announced if it changed: retained on
``{prefix}/oncall/{schedule_id}`` (through the publisher), and, for a schedule with
``notify_handover``, by an SMS to the developer whose turn begins, through the outbox
like any page. An SMS is sent at the hand-over itself only: one that falls while
pagerd is down is not sent late at start-up (the retained topic is set at once).
"""

from __future__ import annotations

from collections.abc import Coroutine
from datetime import datetime
from typing import Any

import structlog

from pagerd.core.ports import Clock, OnCallNow, Outbox, Publisher, Spawner, TimerHandle, Writer
from pagerd.core.records import NOTICE_LEVEL, OutboxRow, StoreError, WriteBatch
from pagerd.core.schedules import LATEST, OnCall, Rota, load_zone
from pagerd.runtime.directory import Directory
from pagerd.telemetry import metrics

log = structlog.get_logger("pagerd.handovers")

# How many hand-overs the end of one developer's stretch is looked for across: a
# rotation that names the same developer more often in a row is announced earlier.
MAX_STRETCH = 100


def stretch(rota: Rota, at: datetime) -> OnCall:
    """Who is on call at ``at``, since when, and until someone else is (None: never)."""
    current = rota.on_call(at)
    until = current.until
    for _ in range(MAX_STRETCH):
        if until is None or until >= LATEST:
            return OnCall(current.developer_id, current.since, None)
        after = rota.on_call(until)
        if after.developer_id != current.developer_id:
            break
        until = after.until
    return OnCall(current.developer_id, current.since, until)


def notice_text(
    schedule_id: str, time_zone: str, since: datetime | None, until: datetime | None
) -> str:
    """The SMS of a turn that begins, in the schedule's local time:
    ``pagerd: you are on call (week) from Mon 02 Mar 09:00 until Mon 09 Mar 09:00 Europe/Paris``
    """
    zone = load_zone(time_zone)

    def local(at: datetime) -> str:
        return at.astimezone(zone).strftime("%a %d %b %H:%M")

    began = "" if since is None else f" from {local(since)}"
    ends = "" if until is None else f" until {local(until)}"
    return f"pagerd: you are on call ({schedule_id}){began}{ends} {time_zone}"


class Handovers:
    """Announces the on-call of every schedule, again at each of its hand-overs."""

    def __init__(
        self,
        *,
        directory: Directory,
        clock: Clock,
        publisher: Publisher,
        store: Writer,
        outbox: Outbox,
        spawner: Spawner,
    ) -> None:
        self._directory = directory
        self._clock = clock
        self._publisher = publisher
        self._store = store
        self._outbox = outbox
        self._spawner = spawner
        self._timers: dict[str, TimerHandle] = {}
        self._announced: dict[str, OnCall] = {}

    def start(self) -> None:
        """Announce every schedule's on-call as it is now, and arm their timers."""
        for schedule_id in list(self._directory.schedules):
            self._announce(schedule_id, starting=True)

    def changed(self, schedule_id: str) -> None:
        """The schedule, its overrides or its team changed (or it is gone): announce anew."""
        timer = self._timers.pop(schedule_id, None)
        if timer is not None:
            timer.cancel()
        if schedule_id not in self._directory.schedules:
            self._announced.pop(schedule_id, None)
            self._publisher.publish_on_call(schedule_id, None)
            return
        self._announce(schedule_id, starting=False)

    def stop(self) -> None:
        """Cancel every timer (at shutdown)."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _on_timer(self, schedule_id: str, until: datetime) -> None:
        self._timers.pop(schedule_id, None)
        if schedule_id in self._directory.schedules:
            # Read at the hand-over even if the wall clock is a hair behind the timer's.
            self._announce(schedule_id, starting=False, not_before=until)

    def _announce(
        self, schedule_id: str, *, starting: bool, not_before: datetime | None = None
    ) -> None:
        rota = self._directory.rotas[schedule_id]
        now = self._clock.now()
        if not_before is not None:
            now = max(now, not_before)
        current = stretch(rota, now)
        before = self._announced.get(schedule_id)
        self._announced[schedule_id] = current
        if before is None or (before.developer_id, before.until) != (
            current.developer_id,
            current.until,
        ):
            developer = self._directory.developer(rota.schedule.team_id, current.developer_id)
            name = None if developer is None else developer.name
            self._publisher.publish_on_call(
                schedule_id, OnCallNow(current.developer_id, name, current.until)
            )
            log.info(
                "schedule.on_call",
                schedule_id=schedule_id,
                developer_id=current.developer_id,
                until=None if current.until is None else current.until.isoformat(),
            )
            handed_over = not starting and (
                before is None or before.developer_id != current.developer_id
            )
            if handed_over and current.developer_id is not None:
                self._notify(schedule_id, rota, current, now)
        if current.until is not None:
            until = current.until
            self._timers[schedule_id] = self._clock.call_at(
                until, lambda: self._on_timer(schedule_id, until)
            )

    def _notify(self, schedule_id: str, rota: Rota, current: OnCall, now: datetime) -> None:
        """The SMS "you are on call", if the schedule asks for one."""
        row = self._directory.schedules[schedule_id]
        developer_id = current.developer_id
        phone = None if developer_id is None else rota.phones.get(developer_id)
        if not row.notify_handover or developer_id is None or phone is None:
            return
        since = current.since or now
        notice = OutboxRow(
            # One per turn: a replay of the same hand-over names the same row.
            id=f"oncall-{schedule_id}-{int(since.timestamp() * 1000)}-{developer_id}",
            incident_id=f"oncall:{schedule_id}",
            service_id="",
            channel="sms",
            recipient=phone,
            level=NOTICE_LEVEL,
            step=0,
            message=notice_text(schedule_id, row.schedule.time_zone, current.since, current.until),
            created_at=now,
            developer_id=developer_id,
        )
        self._spawn(self._send(notice), f"pagerd[handover={schedule_id}]")

    def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        self._spawner.create_task(work, name=name)

    async def _send(self, notice: OutboxRow) -> None:
        try:
            await self._store.write(WriteBatch(outbox=(notice,)))
        except StoreError as error:
            log.error(  # noqa: TRY400 - the store error says all there is
                "schedule.handover_notice_failed",
                notification_id=notice.id,
                error=str(error),
            )
            metrics.NOTIFICATIONS.labels(channel=notice.channel, outcome="failed").inc()
            return
        self._outbox.release((notice,))
