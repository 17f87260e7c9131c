"""The escalation core: what happens to a service when an event arrives.

Pure and synchronous: no asyncio, no I/O, no clock reads. ``decide`` takes the
service's state, one event, the escalation policy as it is *now*, the teams'
rotations, the schedules and the current time, and returns the new state plus the
effects the runtime must carry out (notify, advance a rotation, arm or cancel the ack
timer, record an alert, a timeline event or a maintenance window). Every rule of
CONTRACT.md §6, and the maintenance windows and heartbeats of §8, are decided here.

Timers follow the state: the runtime arms the ack timer while the open incident has an
``ack_deadline``, the end of a maintenance window while the state has one, and a
heartbeat's deadline while ``beat_due`` is set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import assert_never

from msgspec.structs import replace

from pagerd.core.paging import NO_ROSTERS, NO_ROTAS, Paging, escalated, exhausted, next_position
from pagerd.core.policy import Policy, Roster
from pagerd.core.schedules import Rota
from pagerd.core.values import (
    HEARTBEAT_ALERT_ID,
    MAX_REMEMBERED_ALERT_IDS,
    Ack,
    AckTimeout,
    AdvanceRotation,
    Alert,
    AlertIds,
    ArmTimer,
    Beat,
    BeatMissed,
    CancelTimer,
    Decision,
    Effect,
    EndMaintenance,
    Event,
    Healthy,
    Incident,
    IncidentStatus,
    LevelFailed,
    Maintenance,
    MaintenanceOver,
    Note,
    Notify,
    Outcome,
    RecordAlert,
    RecordMaintenance,
    RecordTimeline,
    ServiceState,
    StartMaintenance,
    Watch,
)

# The values live in pagerd.core.values; they are named here too, where they always were.
__all__ = [
    "HEARTBEAT_ALERT_ID",
    "MAX_REMEMBERED_ALERT_IDS",
    "NO_ROSTERS",
    "NO_ROTAS",
    "Ack",
    "AckTimeout",
    "AdvanceRotation",
    "Alert",
    "AlertIds",
    "ArmTimer",
    "Beat",
    "BeatMissed",
    "CancelTimer",
    "Decision",
    "Effect",
    "EndMaintenance",
    "Event",
    "Healthy",
    "Incident",
    "IncidentStatus",
    "LevelFailed",
    "Maintenance",
    "MaintenanceOver",
    "Note",
    "Notify",
    "Outcome",
    "RecordAlert",
    "RecordMaintenance",
    "RecordTimeline",
    "ServiceState",
    "StartMaintenance",
    "Watch",
    "decide",
    "heartbeat_message",
]


@dataclass(frozen=True, slots=True)
class _Context:
    """What a decision reads besides the state and the event: all as it is now."""

    policy: Policy
    now: datetime
    rosters: Mapping[str, Roster]
    rotas: Mapping[str, Rota]
    heartbeat_s: float | None

    def paging(self, service_id: str) -> Paging:
        return Paging(service_id, self.policy, self.now, self.rosters, self.rotas)


def decide(
    state: ServiceState,
    event: Event,
    policy: Policy,
    now: datetime,
    rosters: Mapping[str, Roster] = NO_ROSTERS,
    *,
    rotas: Mapping[str, Rota] = NO_ROTAS,
    heartbeat_s: float | None = None,
) -> Decision:
    """Apply one event to a service's state under ``policy`` (as it is now) at ``now``.

    ``rosters`` are the teams' rotations by team name, as they are now: a team target
    pages the developer whose turn it is, and the decision says how the rotation moves.
    ``rotas`` are the schedules by id: a schedule target pages whoever is on call at
    ``now``. ``heartbeat_s`` is the service's heartbeat interval, None if it has none.
    """
    context = _Context(policy, now, rosters, rotas, heartbeat_s)
    match event:
        case Alert():
            return _on_alert(state, event, context)
        case Ack():
            return _on_ack(state, event, now)
        case AckTimeout() | LevelFailed():
            return _on_escalation(state, event, context)
        case Healthy():
            return _on_healthy(state, now, event.by, event.via)
        case Note():
            return _on_note(state, event, now)
        case StartMaintenance():
            return _on_start_maintenance(state, event, now)
        case EndMaintenance():
            return _on_end_maintenance(state)
        case MaintenanceOver():
            return _on_maintenance_over(state, event)
        case Beat():
            return _on_beat(state, context)
        case BeatMissed():
            return _on_beat_missed(state, event, context)
        case Watch():
            return _on_watch(state, context)
        case _:
            assert_never(event)


# --- alerts, acknowledgements, escalation, resolution (CONTRACT §6) ---------------------


def _on_alert(state: ServiceState, alert: Alert, context: _Context) -> Decision:
    now = context.now
    window = state.maintenance
    ended: tuple[Effect, ...] = ()
    if window is not None and now >= window.until:
        # The window is over although its timer has not been decided yet: this alert
        # is the first after it, and pages at once.
        state, ended = replace(state, maintenance=None), (RecordMaintenance(None),)
        window = None
    incident = state.open_incident
    if incident is None and window is not None:
        # In maintenance: recorded on no incident, paging nobody (CONTRACT §8).
        return Decision(state, (_record(None, alert, now),), Outcome.SUPPRESSED)
    if incident is None:
        opened = Incident(
            id=alert.new_incident_id,
            message=alert.message,
            opened_at=now,
            alert_ids=AlertIds(() if alert.alert_id is None else (alert.alert_id,)),
            opened_by=alert.alert_id,
        )
        triggered = RecordTimeline(
            opened.id, "incident.triggered", now, {"message": alert.message, "level": 1}
        )
        opened, pages = context.paging(state.service_id).page(opened, (0, 0), 0)
        effects = (*ended, _record(opened.id, alert, now), triggered, *pages)
        return Decision(replace(state, incident=opened), effects, Outcome.OPENED)

    # An incident already open goes on as before, in maintenance or not.
    if alert.alert_id is not None and alert.alert_id in incident.alert_ids:
        return Decision(state, ended, Outcome.DUPLICATE_ALERT)
    seen = incident.alert_ids
    if alert.alert_id is not None:
        seen = seen.with_id(alert.alert_id)
    appended = replace(incident, alert_count=incident.alert_count + 1, alert_ids=seen)
    effects = (*ended, _record(incident.id, alert, now))
    return Decision(replace(state, incident=appended), effects, Outcome.APPENDED)


def _record(incident_id: str | None, alert: Alert, now: datetime) -> RecordAlert:
    return RecordAlert(incident_id, alert.message, alert.alert_id, alert.source, now)


def _on_ack(state: ServiceState, ack: Ack, now: datetime) -> Decision:
    incident = state.open_incident
    if incident is None or (ack.incident_id is not None and ack.incident_id != incident.id):
        return Decision(state, (), Outcome.NO_SUCH_OPEN_INCIDENT)
    if incident.status is IncidentStatus.ACKNOWLEDGED:
        return Decision(state, (), Outcome.ALREADY_ACKNOWLEDGED)
    acked = replace(
        incident,
        status=IncidentStatus.ACKNOWLEDGED,
        acknowledged_at=now,
        acknowledged_by=ack.by,
        ack_deadline=None,
    )
    effects: list[Effect] = []
    if incident.ack_deadline is not None:
        effects.append(CancelTimer(incident.id))
    detail: dict[str, str | int | None] = {"by": ack.by, "level": incident.level}
    if ack.via is not None:
        detail["via"] = ack.via
    effects.append(RecordTimeline(incident.id, "incident.acknowledged", now, detail))
    return Decision(replace(state, incident=acked), tuple(effects), Outcome.ACKNOWLEDGED)


def _on_note(state: ServiceState, note: Note, now: datetime) -> Decision:
    # The state is unchanged: a note is a timeline event of its incident, nothing more.
    detail: dict[str, str | int | None] = {"text": note.text, "by": note.by}
    return Decision(
        state, (RecordTimeline(note.incident_id, "incident.note", now, detail),), Outcome.NOTED
    )


def _on_escalation(
    state: ServiceState, timeout: AckTimeout | LevelFailed, context: _Context
) -> Decision:
    """The ack timer of a step ran out, or every page of it failed: page the next level."""
    incident = state.open_incident
    if (
        incident is None
        or incident.id != timeout.incident_id
        or incident.status is not IncidentStatus.TRIGGERED
        or incident.ack_deadline is None
        or incident.step != timeout.step
    ):
        return Decision(state, (), Outcome.STALE_TIMEOUT)
    position = next_position(incident, context.policy)
    if position is None:
        return Decision(replace(state, incident=exhausted(incident)), (), Outcome.EXHAUSTED)
    outcome = Outcome.ESCALATED if position[1] == incident.round else Outcome.REPEATED
    failed = isinstance(timeout, LevelFailed)
    why = f"every page of level {incident.level} failed" if failed else None
    escalated_to = escalated(incident, position, context.now, why)
    paging = context.paging(state.service_id)
    advanced, effects = paging.page(incident, position, incident.step + 1)
    return Decision(replace(state, incident=advanced), (escalated_to, *effects), outcome)


def _on_healthy(
    state: ServiceState, now: datetime, by: str | None = None, via: str | None = None
) -> Decision:
    incident = state.open_incident
    if incident is None:
        return Decision(state, (), Outcome.ALREADY_HEALTHY)
    resolved = replace(incident, status=IncidentStatus.RESOLVED, resolved_at=now, ack_deadline=None)
    effects: list[Effect] = []
    if incident.ack_deadline is not None:
        effects.append(CancelTimer(incident.id))
    detail: dict[str, str | int | None] = {"level": incident.level}
    if by is not None:
        detail["by"] = by
    if via is not None:
        detail["via"] = via
    effects.append(RecordTimeline(incident.id, "incident.resolved", now, detail))
    return Decision(replace(state, incident=resolved), tuple(effects), Outcome.RESOLVED)


# --- maintenance windows (CONTRACT §8) -------------------------------------------------


def _on_start_maintenance(state: ServiceState, start: StartMaintenance, now: datetime) -> Decision:
    if start.until <= now:
        return _on_end_maintenance(state)  # a window that is over already is no window
    window = Maintenance(start.until, start.reason)
    if state.maintenance == window:
        return Decision(state, (), Outcome.MAINTENANCE_STARTED)  # a repeat: nothing to write
    started = replace(state, maintenance=window)
    return Decision(started, (RecordMaintenance(window),), Outcome.MAINTENANCE_STARTED)


def _on_end_maintenance(state: ServiceState) -> Decision:
    if state.maintenance is None:
        return Decision(state, (), Outcome.NO_MAINTENANCE)
    ended = replace(state, maintenance=None)
    return Decision(ended, (RecordMaintenance(None),), Outcome.MAINTENANCE_ENDED)


def _on_maintenance_over(state: ServiceState, over: MaintenanceOver) -> Decision:
    window = state.maintenance
    if window is None or window.until != over.until:
        return Decision(state, (), Outcome.STALE_TIMEOUT)  # ended or replaced since
    return _on_end_maintenance(state)


# --- heartbeats (CONTRACT §8) ------------------------------------------------------------


def heartbeat_message(heartbeat_s: float) -> str:
    """The message of the alert a missed heartbeat raises: ``no heartbeat for 30 s``."""
    return f"no heartbeat for {heartbeat_s:g} s"


def _on_beat(state: ServiceState, context: _Context) -> Decision:
    """A beat: the next is due one interval from now. It resolves the open incident only if
    a missed heartbeat opened it: the monitor is back, which says nothing of what another
    alert reported."""
    if context.heartbeat_s is None:
        return Decision(state, (), Outcome.BEAT_UNEXPECTED)
    due = context.now + timedelta(seconds=context.heartbeat_s)
    beating = replace(state, beat_due=due)
    incident = state.open_incident
    if incident is not None and incident.opened_by == HEARTBEAT_ALERT_ID:
        return _on_healthy(beating, context.now, by="heartbeat")
    return Decision(beating, (), Outcome.BEAT)


def _on_beat_missed(state: ServiceState, missed: BeatMissed, context: _Context) -> Decision:
    """The beat due at ``missed.due`` did not come: raise the heartbeat's alert, once; the
    service is not watched again until its next beat."""
    if context.heartbeat_s is None or state.beat_due is None or state.beat_due != missed.due:
        return Decision(state, (), Outcome.STALE_TIMEOUT)  # a beat came, or the watch changed
    alert = Alert(
        heartbeat_message(context.heartbeat_s),
        missed.new_incident_id,
        alert_id=HEARTBEAT_ALERT_ID,
        source="heartbeat",
    )
    return _on_alert(replace(state, beat_due=None), alert, context)


def _on_watch(state: ServiceState, context: _Context) -> Decision:
    """Watch anew: a full interval from now before a missed beat counts (or none at all)."""
    if context.heartbeat_s is None:
        due = None
    else:
        due = context.now + timedelta(seconds=context.heartbeat_s)
    if due == state.beat_due:
        return Decision(state, (), Outcome.WATCHED)
    return Decision(replace(state, beat_due=due), (), Outcome.WATCHED)
