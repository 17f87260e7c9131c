"""What the store keeps and how: the SQL of each write, value encodings, row codecs.

The tables are made by ``pagerd.store.migrations``. Times are fixed-width UTC text
(``YYYY-MM-DDTHH:MM:SS.ffffffZ``) so that text order is time order.
"""

from __future__ import annotations

import enum
import functools
import secrets
from datetime import UTC, datetime
from typing import Any

import msgspec

from pagerd.core.policy import (
    Level,
    Policy,
    Target,
)
from pagerd.core.records import OutboxRow, WriteBatch
from pagerd.core.schedules import Rotation, Schedule
from pagerd.core.values import AlertIds, Incident, IncidentStatus, RecordAlert, RecordTimeline

Row = tuple[Any, ...]


def new_integration_key() -> str:
    """A service's integration key: 128 random bits, as 32 hex digits (PagerDuty's shape)."""
    return secrets.token_hex(16)


# --- values as stored ---------------------------------------------------------------------


def like_pattern(text: str | None) -> str | None:
    """A LIKE pattern (escape character ``\\``) matching values that contain ``text``."""
    if text is None:
        return None
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# The effects of one decision share one ``now``: most conversions are a cache hit.
@functools.lru_cache(maxsize=4096)
def to_db_time(value: datetime) -> str:
    """Fixed-width UTC text, so that text order is time order."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: store times must be timezone-aware")
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.isoformat(timespec="microseconds")[:26] + "Z"


def _db_time_or_none(value: datetime | None) -> str | None:
    return None if value is None else to_db_time(value)


def from_db_time(text: str) -> datetime:
    """The aware UTC datetime of a stored time."""
    return datetime.fromisoformat(text)


def _from_db_time_or_none(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


class _LevelJson(msgspec.Struct):
    ack_timeout_s: float
    targets: list[Target]


class _PolicyJson(msgspec.Struct):
    repeat: int
    levels: list[_LevelJson]


def encode_policy(policy: Policy) -> str:
    """The policy as JSON: ``{"repeat", "levels": [{"ack_timeout_s", "targets"}]}``."""
    levels = [_LevelJson(level.ack_timeout_s, list(level.targets)) for level in policy.levels]
    return msgspec.json.encode(_PolicyJson(policy.repeat, levels)).decode()


def decode_policy(policy_id: str, body: str) -> Policy:
    """The policy stored as ``body``; ValueError if it is not a valid policy."""
    try:
        stored = msgspec.json.decode(body, type=_PolicyJson)
        levels = tuple(Level(tuple(level.targets), level.ack_timeout_s) for level in stored.levels)
        return Policy(policy_id, levels, stored.repeat)
    except (msgspec.ValidationError, msgspec.DecodeError) as error:
        raise ValueError(str(error)) from error


class _RotationJson(msgspec.Struct):
    start: str
    shift_s: int
    developer_ids: list[int]


def rotation_rows(schedule_id: str, schedule: Schedule) -> list[Row]:
    """The rows of a schedule's rotations: (schedule_id, position, start, shift_s, ids)."""
    return [
        (
            schedule_id,
            position,
            rotation.start.isoformat(),
            rotation.shift_s,
            msgspec.json.encode(list(rotation.developer_ids)).decode(),
        )
        for position, rotation in enumerate(schedule.rotations)
    ]


def decode_rotation(start: str, shift_s: int, developer_ids: str) -> Rotation:
    """A rotation as stored; ValueError if its values are not a rotation's."""
    try:
        ids = msgspec.json.decode(developer_ids, type=list[int])
    except msgspec.DecodeError as error:  # ValidationError included
        raise ValueError(str(error)) from error
    return Rotation(datetime.fromisoformat(start), shift_s, tuple(ids))


# --- writes: each op runs once per round, in this order -----------------------------------


class Op(enum.IntEnum):
    """Write operations in execution order: a row is written after what it refers to."""

    META = 0
    POLICIES = enum.auto()
    TEAMS = enum.auto()
    TEAM_CURSORS = enum.auto()
    DEVELOPERS = enum.auto()
    SCHEDULES = enum.auto()
    SCHEDULE_ROTATIONS_CLEARED = enum.auto()
    SCHEDULE_ROTATIONS = enum.auto()
    SCHEDULE_OVERRIDES = enum.auto()
    SCHEDULE_OVERRIDES_DELETED = enum.auto()
    SCHEDULES_DELETED = enum.auto()
    SERVICES = enum.auto()
    MAINTENANCE = enum.auto()
    INTEGRATION_KEYS = enum.auto()
    POLICIES_DELETED = enum.auto()
    INCIDENTS = enum.auto()
    ALERTS = enum.auto()
    TIMELINE = enum.auto()
    OUTBOX = enum.auto()
    OUTBOX_UPDATES = enum.auto()
    DEAD_LETTERS = enum.auto()


SQL: dict[Op, str] = {
    Op.META: "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    Op.POLICIES: "INSERT INTO policies (id, body, managed) VALUES (?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET body = excluded.body, managed = excluded.managed",
    Op.TEAMS: "INSERT INTO teams (id, name, managed, cursor) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET name = excluded.name, managed = excluded.managed,"
    " cursor = excluded.cursor",
    Op.TEAM_CURSORS: "UPDATE teams SET cursor = ? WHERE id = ?",
    Op.DEVELOPERS: "INSERT INTO developers (id, team_id, name, phone_number) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (id) DO UPDATE SET team_id = excluded.team_id, name = excluded.name,"
    " phone_number = excluded.phone_number",
    Op.SCHEDULES: "INSERT INTO schedules (id, team_id, time_zone, notify_handover, managed)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET team_id = excluded.team_id,"
    " time_zone = excluded.time_zone, notify_handover = excluded.notify_handover,"
    " managed = excluded.managed",
    Op.SCHEDULE_ROTATIONS_CLEARED: "DELETE FROM schedule_rotations WHERE schedule_id = ?",
    Op.SCHEDULE_ROTATIONS: "INSERT INTO schedule_rotations"
    " (schedule_id, position, start, shift_s, developer_ids) VALUES (?, ?, ?, ?, ?)",
    Op.SCHEDULE_OVERRIDES: "INSERT INTO schedule_overrides"
    ' (id, schedule_id, developer_id, start, "end") VALUES (?, ?, ?, ?, ?)',
    Op.SCHEDULE_OVERRIDES_DELETED: "DELETE FROM schedule_overrides"
    " WHERE schedule_id = ? AND id = ?",
    Op.SCHEDULES_DELETED: "DELETE FROM schedules WHERE id = ?",
    # The key is written with a new service only: an update leaves it be.
    Op.SERVICES: "INSERT INTO services (id, name, policy_id, managed, heartbeat_s,"
    " integration_key) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
    " name = excluded.name,"
    " policy_id = excluded.policy_id, managed = excluded.managed,"
    " heartbeat_s = excluded.heartbeat_s",
    Op.MAINTENANCE: "UPDATE services SET maintenance_until = ?, maintenance_reason = ?"
    " WHERE id = ?",
    Op.INTEGRATION_KEYS: "UPDATE services SET integration_key = ? WHERE id = ?",
    Op.POLICIES_DELETED: "DELETE FROM policies WHERE id = ?",
    Op.INCIDENTS: "INSERT INTO incidents (id, service_id, message, opened_at, status,"
    " level_index, round, step, ack_deadline, acknowledged_at, acknowledged_by, resolved_at,"
    " alert_count, opened_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    # id, service_id, message, opened_at and opened_by never change: leaving them out of the SET
    # spares rewriting the index entries made of them.
    " ON CONFLICT (id) DO UPDATE SET status = excluded.status,"
    " level_index = excluded.level_index, round = excluded.round, step = excluded.step,"
    " ack_deadline = excluded.ack_deadline, acknowledged_at = excluded.acknowledged_at,"
    " acknowledged_by = excluded.acknowledged_by, resolved_at = excluded.resolved_at,"
    " alert_count = excluded.alert_count",
    # ON CONFLICT DO NOTHING names the one key a replay may repeat; unlike INSERT OR
    # IGNORE it does not also swallow NOT NULL or CHECK violations.
    Op.ALERTS: "INSERT INTO alerts (incident_id, service_id, alert_id, message, source, at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (incident_id, alert_id) DO NOTHING",
    Op.TIMELINE: "INSERT INTO timeline (incident_id, service_id, at, type, detail)"
    " VALUES (?, ?, ?, ?, ?)",
    Op.OUTBOX: "INSERT INTO outbox (id, incident_id, service_id, channel, recipient, level, step,"
    " message, created_at, developer_id, status, attempts, next_attempt_at, last_error)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
    Op.OUTBOX_UPDATES: "UPDATE outbox SET status = ?, attempts = ?, next_attempt_at = ?,"
    " last_error = ? WHERE id = ?",
    Op.DEAD_LETTERS: "INSERT INTO dead_letters (at, source, topic, payload, reason)"
    " VALUES (?, ?, ?, ?, ?)",
}


def _incident_row(item: tuple[str, Incident]) -> Row:
    service_id, i = item
    return (
        i.id,
        service_id,
        i.message,
        to_db_time(i.opened_at),
        str(i.status),
        i.level_index,
        i.round,
        i.step,
        _db_time_or_none(i.ack_deadline),
        _db_time_or_none(i.acknowledged_at),
        i.acknowledged_by,
        _db_time_or_none(i.resolved_at),
        i.alert_count,
        i.opened_by,
    )


def _alert_row(item: tuple[str, RecordAlert]) -> Row:
    service_id, a = item
    return (a.incident_id, service_id, a.alert_id, a.message, a.source, to_db_time(a.at))


def _timeline_row(item: tuple[str, RecordTimeline]) -> Row:
    service_id, e = item
    detail = e.detail if isinstance(e.detail, dict) else dict(e.detail)
    return (
        e.incident_id,
        service_id,
        to_db_time(e.at),
        e.type,
        msgspec.json.encode(detail).decode(),
    )


def _outbox_row(o: OutboxRow) -> Row:
    return (
        o.id,
        o.incident_id,
        o.service_id,
        o.channel,
        o.recipient,
        o.level,
        o.step,
        o.message,
        to_db_time(o.created_at),
        o.developer_id,
        o.status,
        o.attempts,
        _db_time_or_none(o.next_attempt_at),
        o.last_error,
    )


def _schedule_parts(b: WriteBatch) -> list[tuple[Op, list[Row]]]:
    """The unit's schedule, rotation and override rows per op, in execution order."""
    parts: list[tuple[Op, list[Row]]] = []
    rows: list[Row]
    if b.schedules:
        rows = [
            (r.id, r.schedule.team_id, r.schedule.time_zone, int(r.notify_handover), int(r.managed))
            for r in b.schedules
        ]
        parts.append((Op.SCHEDULES, rows))
        parts.append((Op.SCHEDULE_ROTATIONS_CLEARED, [(r.id,) for r in b.schedules]))
        rows = [row for r in b.schedules for row in rotation_rows(r.id, r.schedule)]
        if rows:
            parts.append((Op.SCHEDULE_ROTATIONS, rows))
    if b.overrides:
        rows = [
            (
                o.override.id,
                o.schedule_id,
                o.override.developer_id,
                to_db_time(o.override.start),
                to_db_time(o.override.end),
            )
            for o in b.overrides
        ]
        parts.append((Op.SCHEDULE_OVERRIDES, rows))
    if b.overrides_deleted:
        parts.append((Op.SCHEDULE_OVERRIDES_DELETED, list(b.overrides_deleted)))
    if b.schedules_deleted:
        parts.append((Op.SCHEDULES_DELETED, [(key,) for key in b.schedules_deleted]))
    return parts


def encode_batch(batch: WriteBatch) -> tuple[tuple[Op, list[Row]], ...]:
    """The unit's rows per op, in execution order; ValueError/TypeError if a value is unfit."""
    b = batch
    parts: list[tuple[Op, list[Row]]] = []
    rows: list[Row]
    if b.meta:
        parts.append((Op.META, [(key, value) for key, value in b.meta]))
    if b.policies:
        rows = [(p.policy.id, encode_policy(p.policy), int(p.managed)) for p in b.policies]
        parts.append((Op.POLICIES, rows))
    if b.teams:
        parts.append((Op.TEAMS, [(t.id, t.name, int(t.managed), t.cursor) for t in b.teams]))
    if b.team_cursors:
        parts.append((Op.TEAM_CURSORS, [(cursor, team) for team, cursor in b.team_cursors]))
    if b.developers:
        rows = [(d.id, d.team_id, d.name, d.phone_number) for d in b.developers]
        parts.append((Op.DEVELOPERS, rows))
    parts += _schedule_parts(b)
    if b.services:
        rows = [
            (s.id, s.name, s.policy_id, int(s.managed), s.heartbeat_s, new_integration_key())
            for s in b.services
        ]
        parts.append((Op.SERVICES, rows))
    if b.maintenance:
        rows = [
            (
                None if window is None else to_db_time(window.until),
                None if window is None else window.reason,
                service_id,
            )
            for service_id, window in b.maintenance
        ]
        parts.append((Op.MAINTENANCE, rows))
    if b.integration_keys:
        parts.append((Op.INTEGRATION_KEYS, [(key, sid) for sid, key in b.integration_keys]))
    if b.policies_deleted:
        parts.append((Op.POLICIES_DELETED, [(key,) for key in b.policies_deleted]))
    if b.incidents:
        parts.append((Op.INCIDENTS, [_incident_row(item) for item in b.incidents]))
    if b.alerts:
        parts.append((Op.ALERTS, [_alert_row(item) for item in b.alerts]))
    if b.timeline:
        parts.append((Op.TIMELINE, [_timeline_row(item) for item in b.timeline]))
    if b.outbox:
        parts.append((Op.OUTBOX, [_outbox_row(o) for o in b.outbox]))
    if b.outbox_updates:
        rows = [
            (u.status, u.attempts, _db_time_or_none(u.next_attempt_at), u.last_error, u.id)
            for u in b.outbox_updates
        ]
        parts.append((Op.OUTBOX_UPDATES, rows))
    if b.dead_letters:
        rows = [(to_db_time(d.at), d.source, d.topic, d.payload, d.reason) for d in b.dead_letters]
        parts.append((Op.DEAD_LETTERS, rows))
    return tuple(parts)


# --- reads -------------------------------------------------------------------------------

# alert_ids come from the alerts table, in the same statement so that they match the row.
SELECT_INCIDENTS = (
    "SELECT id, service_id, message, opened_at, status, level_index, round, step, ack_deadline,"
    " acknowledged_at, acknowledged_by, resolved_at, alert_count, opened_by,"
    " (SELECT json_group_array(a.alert_id) FROM alerts AS a"
    "  WHERE a.incident_id = i.id AND a.alert_id IS NOT NULL)"
    " FROM incidents AS i"
)
# The columns in OutboxRow's field order.
SELECT_OUTBOX = (
    "SELECT id, incident_id, service_id, channel, recipient, level, step, message, created_at,"
    " developer_id, status, attempts, next_attempt_at, last_error FROM outbox"
)


def decode_incident(row: Row) -> tuple[str, Incident]:
    """(service_id, incident) from a ``SELECT_INCIDENTS`` row."""
    (
        incident_id,
        service_id,
        message,
        opened_at,
        status,
        level_index,
        round_,
        step,
        ack_deadline,
        acknowledged_at,
        acknowledged_by,
        resolved_at,
        alert_count,
        opened_by,
        alert_ids,
    ) = row
    incident = Incident(
        id=incident_id,
        message=message,
        opened_at=from_db_time(opened_at),
        status=IncidentStatus(status),
        level_index=level_index,
        round=round_,
        step=step,
        ack_deadline=_from_db_time_or_none(ack_deadline),
        acknowledged_at=_from_db_time_or_none(acknowledged_at),
        acknowledged_by=acknowledged_by,
        resolved_at=_from_db_time_or_none(resolved_at),
        alert_count=alert_count,
        alert_ids=AlertIds(msgspec.json.decode(alert_ids, type=list[str])),
        opened_by=opened_by,
    )
    return service_id, incident


def decode_outbox(row: Row) -> OutboxRow:
    """An outbox row from a ``SELECT_OUTBOX`` row."""
    return OutboxRow(
        id=row[0],
        incident_id=row[1],
        service_id=row[2],
        channel=row[3],
        recipient=row[4],
        level=row[5],
        step=row[6],
        message=row[7],
        created_at=from_db_time(row[8]),
        developer_id=row[9],
        status=row[10],
        attempts=row[11],
        next_attempt_at=_from_db_time_or_none(row[12]),
        last_error=row[13],
    )
