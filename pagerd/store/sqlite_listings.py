"""SQLite's reads for the API's pages: services, alerts and incidents, one page at a time.

Every page starts after a key (keyset pagination, never an offset) and walks an index
from there, so the thousandth page costs what the first does, however many rows there
are. Services come as the JSON objects the API sends, written by SQLite on the reader's
thread, as the full listing does.
"""

from __future__ import annotations

# ?2 is a LIKE pattern of the text searched for in id or name (escaped by backslash),
# or NULL for every service.

# A page of healthy services after the id ?1, at most ?3: the services by primary key,
# each with no open incident (a probe of the partial index of open incidents).
SELECT_HEALTHY_PAGE = """
SELECT group_concat(doc, ','), max(id), count(*) FROM (
    SELECT json_object(
        'id', s.id, 'name', s.name, 'policy_id', s.policy_id,
        'health', 'healthy', 'incident', NULL,
        'heartbeat_s', s.heartbeat_s,
        'maintenance', iif(s.maintenance_until IS NULL, NULL, json_object(
            'until', substr(s.maintenance_until, 1, 23) || 'Z', 'reason', s.maintenance_reason
        ))
    ) AS doc, s.id AS id
    FROM services AS s
    WHERE s.id > ?1
    AND (?2 IS NULL OR s.id LIKE ?2 ESCAPE '\\' OR s.name LIKE ?2 ESCAPE '\\')
    AND NOT EXISTS (
        SELECT 1 FROM incidents AS o WHERE o.service_id = s.id AND o.status != 'resolved'
    )
    ORDER BY s.id LIMIT ?3
)
"""

# A page of unhealthy services after the id ?1, at most ?3: driven by the partial index
# of open incidents (few, however many services there are) in service id order, each
# service once, by its latest open incident, as the full listing shows it.
SELECT_UNHEALTHY_PAGE = """
SELECT group_concat(doc, ','), max(id), count(*) FROM (
    SELECT json_object(
        'id', s.id, 'name', s.name, 'policy_id', s.policy_id, 'health', 'unhealthy',
        'incident', json_object(
            'id', o.id, 'message', o.message, 'status', o.status,
            'level', o.level_index + 1, 'opened_at', substr(o.opened_at, 1, 23) || 'Z',
            'acknowledged_at', substr(o.acknowledged_at, 1, 23) || 'Z'
        ),
        'heartbeat_s', s.heartbeat_s,
        'maintenance', iif(s.maintenance_until IS NULL, NULL, json_object(
            'until', substr(s.maintenance_until, 1, 23) || 'Z', 'reason', s.maintenance_reason
        ))
    ) AS doc, s.id AS id
    FROM incidents AS o INDEXED BY incidents_open
    JOIN services AS s ON s.id = o.service_id
    WHERE o.status != 'resolved' AND o.service_id > ?1
    AND (?2 IS NULL OR s.id LIKE ?2 ESCAPE '\\' OR s.name LIKE ?2 ESCAPE '\\')
    AND NOT EXISTS (
        SELECT 1 FROM incidents AS later INDEXED BY incidents_open
        WHERE later.service_id = o.service_id AND later.status != 'resolved'
        AND later.rowid > o.rowid
    )
    ORDER BY o.service_id LIMIT ?3
)
"""

_ALERT_COLUMNS = "SELECT rowid, at, message, alert_id, source, incident_id FROM alerts"
# Newest first, older than the alert ?2 (its rowid); at most ?3.
SELECT_SERVICE_ALERTS = (
    _ALERT_COLUMNS + " WHERE service_id = ?1 AND rowid < ?2 ORDER BY rowid DESC LIMIT ?3"
)
SELECT_INCIDENT_ALERTS = (
    _ALERT_COLUMNS + " INDEXED BY alerts_incident"
    " WHERE incident_id = ?1 AND rowid < ?2 ORDER BY rowid DESC LIMIT ?3"
)

# Incidents as listed (no alert ids: a listing never shows them, and a storm's are many).
SELECT_INCIDENT_ROWS = (
    "SELECT i.rowid, i.id, i.service_id, i.message, i.opened_at, i.status, i.level_index,"
    " i.round, i.step, i.ack_deadline, i.acknowledged_at, i.acknowledged_by, i.resolved_at,"
    " i.alert_count, i.opened_by, '[]' FROM incidents AS i"
)
# Status filters: "open" is every status but resolved, which the partial index holds.
# The open ones name the partial index's own condition, so that it is used.
STATUS_CLAUSES = {
    "open": "i.status != 'resolved'",
    "triggered": "i.status != 'resolved' AND i.status = 'triggered'",
    "acknowledged": "i.status != 'resolved' AND i.status = 'acknowledged'",
    "resolved": "i.status = 'resolved'",
}
# Newest first; (opened_at, rowid) is the key of the order, so a page starts strictly
# after the last row of the one before.
INCIDENTS_ORDER = " ORDER BY i.opened_at DESC, i.rowid DESC LIMIT ?"
BEFORE_KEY = "(i.opened_at, i.rowid) < (?, ?)"
