"""PostgreSQL's reads of many rows in chunks: the open incidents at start-up, and every
service for the API's list. Each chunk is one JSON document the server writes."""

from __future__ import annotations

import msgspec

from pagerd.core.domain import AlertIds, ServiceState
from pagerd.core.records import StoreError

OPEN_STATES_CHUNK = 5_000
OPEN_STATES_FIRST_CHUNK = 500
# One chunk of open incidents after the key (service_id, seq), as a JSON array of
# ``ServiceState`` documents, with the chunk's last key and its size. Times are written
# in the session's time zone, UTC. An incident brings the most recent of its alert ids
# only, as many as it remembers ($4).
SELECT_OPEN_STATES = """
WITH chunk AS (
    SELECT i.* FROM incidents AS i
    WHERE i.status <> 'resolved' AND (i.service_id, i.seq) > ($1, $2)
    ORDER BY i.service_id, i.seq LIMIT $3
), last AS (
    SELECT service_id, seq FROM chunk ORDER BY service_id DESC, seq DESC LIMIT 1
)
SELECT (
    SELECT json_agg(json_build_object(
        'service_id', c.service_id,
        'incident', json_build_object(
            'id', c.id, 'message', c.message, 'opened_at', c.opened_at, 'status', c.status,
            'level_index', c.level_index, 'round', c.round, 'step', c.step,
            'ack_deadline', c.ack_deadline, 'acknowledged_at', c.acknowledged_at,
            'acknowledged_by', c.acknowledged_by, 'resolved_at', c.resolved_at,
            'alert_count', c.alert_count, 'opened_by', c.opened_by,
            'alert_ids', ARRAY(SELECT a.alert_id FROM alerts AS a
                               WHERE a.incident_id = c.id AND a.alert_id IS NOT NULL
                               ORDER BY a.seq DESC LIMIT $4)
        )
    ) ORDER BY c.service_id, c.seq)::text FROM chunk AS c
), (SELECT service_id FROM last), (SELECT seq FROM last), (SELECT count(*) FROM chunk)
"""


def _decode_alert_ids(type_: type, value: object) -> object:
    # msgspec builds every other field itself; AlertIds is the domain's own set type.
    if type_ is AlertIds and isinstance(value, list):
        return AlertIds(value)  # of a text column: strings
    raise TypeError(f"cannot make {type_.__name__} of {value!r}")


_OPEN_STATES = msgspec.json.Decoder(list[ServiceState], dec_hook=_decode_alert_ids)


def decode_open_states(text: str) -> list[ServiceState]:
    try:
        return _OPEN_STATES.decode(text)
    except msgspec.DecodeError as error:  # ValidationError included
        raise StoreError(f"a stored open incident is unreadable: {error}") from error


SERVICES_LISTING_CHUNK = 5_000
# One chunk of services after the id ``$1``, each as the API lists it (``ServiceOut``:
# its open incident, if any, times cut to milliseconds), joined by commas, with the
# chunk's last id and its size.
SELECT_SERVICES_LISTING = """
WITH chunk AS (
    SELECT s.id, s.name, s.policy_id, s.heartbeat_s, s.maintenance_until, s.maintenance_reason
    FROM services AS s WHERE s.id > $1 ORDER BY s.id LIMIT $2
), docs AS (
    SELECT c.id, json_build_object(
        'id', c.id, 'name', c.name, 'policy_id', c.policy_id,
        'health', CASE WHEN b.id IS NULL THEN 'healthy' ELSE 'unhealthy' END,
        'incident', CASE WHEN b.id IS NULL THEN NULL ELSE json_build_object(
            'id', b.id, 'message', b.message, 'status', b.status, 'level', b.level_index + 1,
            'opened_at', to_char(b.opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
            'acknowledged_at',
            to_char(b.acknowledged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
        ) END,
        'heartbeat_s', c.heartbeat_s,
        'maintenance', CASE WHEN c.maintenance_until IS NULL THEN NULL ELSE json_build_object(
            'until',
            to_char(c.maintenance_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
            'reason', c.maintenance_reason
        ) END
    )::text AS doc
    FROM chunk AS c LEFT JOIN LATERAL (
        SELECT i.id, i.message, i.status, i.level_index, i.opened_at, i.acknowledged_at
        FROM incidents AS i WHERE i.service_id = c.id AND i.status <> 'resolved'
        ORDER BY i.seq DESC LIMIT 1
    ) AS b ON true
)
SELECT string_agg(doc, ',' ORDER BY id), max(id), count(*) FROM docs
"""
