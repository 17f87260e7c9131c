"""PostgreSQL's reads for the API's pages: services, alerts and incidents, one page at a time.

The same pages as SQLite's (``sqlite_listings``), by the same keys: every page starts
after a key and walks an index from there, never an offset. Services come as the JSON
objects the API sends, written by the server.
"""

from __future__ import annotations

# $2 is an ILIKE pattern of the text searched for in id or name, or NULL for every service.

# A page of healthy services after the id $1, at most $3: the services by primary key,
# each with no open incident (a probe of the partial index of open incidents).
SELECT_HEALTHY_PAGE = """
WITH chunk AS (
    SELECT s.id, s.name, s.policy_id, s.heartbeat_s, s.maintenance_until, s.maintenance_reason
    FROM services AS s WHERE s.id > $1 AND ($2::text IS NULL OR s.id ILIKE $2 OR s.name ILIKE $2)
    AND NOT EXISTS (
        SELECT 1 FROM incidents AS o WHERE o.service_id = s.id AND o.status <> 'resolved'
    )
    ORDER BY s.id LIMIT $3
)
SELECT string_agg(json_build_object(
    'id', c.id, 'name', c.name, 'policy_id', c.policy_id, 'health', 'healthy', 'incident', NULL,
    'heartbeat_s', c.heartbeat_s,
    'maintenance', CASE WHEN c.maintenance_until IS NULL THEN NULL ELSE json_build_object(
        'until',
        to_char(c.maintenance_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'reason', c.maintenance_reason
    ) END
)::text, ',' ORDER BY c.id), max(c.id), count(*) FROM chunk AS c
"""

# A page of unhealthy services after the id $1, at most $3: driven by the partial index
# of open incidents in service id order, each service once, by its latest open incident.
SELECT_UNHEALTHY_PAGE = """
WITH chunk AS (
    SELECT s.id, s.name, s.policy_id, s.heartbeat_s, s.maintenance_until,
        s.maintenance_reason, o.id AS incident_id, o.message, o.status, o.level_index,
        o.opened_at, o.acknowledged_at
    FROM incidents AS o JOIN services AS s ON s.id = o.service_id
    WHERE o.status <> 'resolved' AND o.service_id > $1
    AND ($2::text IS NULL OR s.id ILIKE $2 OR s.name ILIKE $2) AND NOT EXISTS (
        SELECT 1 FROM incidents AS later
        WHERE later.service_id = o.service_id AND later.status <> 'resolved'
        AND later.seq > o.seq
    )
    ORDER BY o.service_id LIMIT $3
)
SELECT string_agg(json_build_object(
    'id', c.id, 'name', c.name, 'policy_id', c.policy_id, 'health', 'unhealthy',
    'incident', json_build_object(
        'id', c.incident_id, 'message', c.message, 'status', c.status,
        'level', c.level_index + 1,
        'opened_at',
        to_char(c.opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'acknowledged_at',
        to_char(c.acknowledged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
    ),
    'heartbeat_s', c.heartbeat_s,
    'maintenance', CASE WHEN c.maintenance_until IS NULL THEN NULL ELSE json_build_object(
        'until',
        to_char(c.maintenance_until AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'reason', c.maintenance_reason
    ) END
)::text, ',' ORDER BY c.id), max(c.id), count(*) FROM chunk AS c
"""

_ALERT_COLUMNS = "SELECT seq, at, message, alert_id, source, incident_id FROM alerts"
# Newest first, older than the alert $2 (its seq); at most $3.
SELECT_SERVICE_ALERTS = (
    _ALERT_COLUMNS + " WHERE service_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
)
SELECT_INCIDENT_ALERTS = (
    _ALERT_COLUMNS + " WHERE incident_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
)

# Incidents as listed (no alert ids: a listing never shows them, and a storm's are many).
SELECT_INCIDENT_ROWS = (
    "SELECT i.seq, i.id, i.service_id, i.message, i.opened_at, i.status, i.level_index,"
    " i.round, i.step, i.ack_deadline, i.acknowledged_at, i.acknowledged_by, i.resolved_at,"
    " i.alert_count, i.opened_by, ARRAY[]::text[] FROM incidents AS i"
)
# The open ones name the partial index's own condition, so that it is used.
STATUS_CLAUSES = {
    "open": "i.status <> 'resolved'",
    "triggered": "i.status <> 'resolved' AND i.status = 'triggered'",
    "acknowledged": "i.status <> 'resolved' AND i.status = 'acknowledged'",
    "resolved": "i.status = 'resolved'",
}
# Newest first; (opened_at, seq) is the key of the order, so a page starts strictly
# after the last row of the one before. ``{}`` are the numbers of parameters.
INCIDENTS_ORDER = " ORDER BY i.opened_at DESC, i.seq DESC LIMIT ${}"
BEFORE_KEY = "(i.opened_at, i.seq) < (${}, ${})"
