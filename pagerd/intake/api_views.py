"""What the JSON API answers: domain values and records as the wire shapes of CONTRACT §4."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import cast

import msgspec

from pagerd.core import policy as escalation
from pagerd.core.domain import Incident
from pagerd.core.policy import Policy
from pagerd.core.records import (
    AlertRow,
    DeadLetter,
    DeveloperRow,
    OutboxRow,
    ScheduleRow,
    ServiceRow,
    TeamRow,
)
from pagerd.core.schedules import Override
from pagerd.core.times import rfc3339
from pagerd.core.values import Maintenance
from pagerd.intake import api_schemas as wire
from pagerd.runtime.catalogue import Catalogue


def developer_out(row: DeveloperRow) -> wire.Developer:
    return wire.Developer(
        id=row.id, team_id=row.team_id, name=row.name, phone_number=row.phone_number
    )


def team_out(team: TeamRow, developers: Iterable[DeveloperRow]) -> wire.TeamWithDevelopers:
    members = list(developers)
    return wire.TeamWithDevelopers(
        team=wire.Team(id=team.id, name=team.name),
        developers=[developer_out(d) for d in members],
        managed=team.managed,
        next_developer_id=members[team.cursor % len(members)].id if members else None,
    )


def policy_out(catalogue: Catalogue, policy: Policy, *, managed: bool) -> wire.PolicyOut:
    levels = [
        wire.LevelOut(
            ack_timeout_s=level.ack_timeout_s,
            targets=[target_out(catalogue, t) for t in level.targets],
        )
        for level in policy.levels
    ]
    return wire.PolicyOut(id=policy.id, repeat=policy.repeat, levels=levels, managed=managed)


def target_out(catalogue: Catalogue, target: escalation.Target) -> wire.TargetOut:
    """A target as the API shows it: a team's also by its id."""
    if isinstance(target, escalation.TeamTarget):
        return wire.TeamTargetOut(team=target.team, team_id=catalogue.team_id_of(target.team))
    return target


def service_out(
    row: ServiceRow, incident: Incident | None, window: Maintenance | None
) -> wire.ServiceOut:
    """A service, its open incident and its maintenance window, as committed."""
    brief = None
    if incident is not None:
        brief = wire.IncidentBrief(
            id=incident.id,
            message=incident.message,
            status=incident.status.value,
            level=incident.level,
            opened_at=rfc3339(incident.opened_at),
            acknowledged_at=time_or_none(incident.acknowledged_at),
        )
    return wire.ServiceOut(
        id=row.id,
        name=row.name,
        policy_id=row.policy_id,
        health="healthy" if incident is None else "unhealthy",
        incident=brief,
        heartbeat_s=row.heartbeat_s,
        maintenance=None
        if window is None
        else wire.MaintenanceWindow(until=rfc3339(window.until), reason=window.reason),
    )


def service_detail(
    row: ServiceRow, incident: Incident | None, window: Maintenance | None, integration_key: str
) -> wire.ServiceDetail:
    """One service as ``service_out`` has it, with its integration key."""
    out = service_out(row, incident, window)
    return wire.ServiceDetail(**msgspec.structs.asdict(out), integration_key=integration_key)


def incident_out(service_id: str, incident: Incident) -> wire.IncidentOut:
    return wire.IncidentOut(
        id=incident.id,
        service_id=service_id,
        message=incident.message,
        status=incident.status.value,
        level=incident.level,
        opened_at=rfc3339(incident.opened_at),
        acknowledged_at=time_or_none(incident.acknowledged_at),
        acknowledged_by=incident.acknowledged_by,
        resolved_at=time_or_none(incident.resolved_at),
        alert_count=incident.alert_count,
    )


def notification_out(row: OutboxRow, name: str | None = None) -> wire.NotificationOut:
    """A notification; ``name`` is its developer's, when a developer was paged."""
    return wire.NotificationOut(
        id=row.id,
        # The store's CHECK constraints allow these values only.
        channel=cast(wire.Channel, row.channel),
        to=row.recipient,
        level=row.level,
        status=cast(wire.Delivery, row.status),
        attempts=row.attempts,
        last_error=row.last_error,
        developer_id=row.developer_id,
        name=name,
    )


def alert_out(row: AlertRow) -> wire.AlertOut:
    return wire.AlertOut(
        at=rfc3339(row.at),
        message=row.message,
        alert_id=row.alert_id,
        source=row.source,
        incident_id=row.incident_id,
        suppressed=row.incident_id is None,
    )


def time_or_none(at: datetime | None) -> str | None:
    return None if at is None else rfc3339(at)


def dead_letter_out(letter: DeadLetter) -> wire.DeadLetterOut:
    return wire.DeadLetterOut(
        at=rfc3339(letter.at),
        source=letter.source,
        topic=letter.topic,
        payload=letter.payload,
        reason=letter.reason,
    )


def schedule_out(row: ScheduleRow, overrides: Iterable[Override]) -> wire.ScheduleOut:
    schedule = row.schedule
    rotations = [
        wire.RotationOut(
            start=r.start.isoformat(), shift_s=r.shift_s, developer_ids=list(r.developer_ids)
        )
        for r in schedule.rotations
    ]
    return wire.ScheduleOut(
        id=row.id,
        team_id=schedule.team_id,
        time_zone=schedule.time_zone,
        rotations=rotations,
        notify_handover=row.notify_handover,
        managed=row.managed,
        overrides=[override_out(row.id, o) for o in overrides],
    )


def override_out(schedule_id: str, override: Override) -> wire.OverrideOut:
    return wire.OverrideOut(
        id=override.id,
        schedule_id=schedule_id,
        developer_id=override.developer_id,
        start=rfc3339(override.start),
        end=rfc3339(override.end),
    )
