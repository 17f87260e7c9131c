"""``pagerd status`` on PostgreSQL: the same read-only table as on SQLite."""

from __future__ import annotations

from pagerd.store.postgres import connect
from pagerd.store.status import NotificationCounts, ServiceStatus

_SERVICES = """
    SELECT s.id, s.name, s.policy_id, i.id, i.status, i.level_index + 1,
           to_char(i.opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    FROM services AS s
    LEFT JOIN incidents AS i ON i.service_id = s.id AND i.status <> 'resolved'
    ORDER BY (i.id IS NULL), s.id
"""


async def read_status(url: str) -> tuple[list[ServiceStatus], NotificationCounts]:
    """Services with their open incident, and the notifications not delivered."""
    conn = await connect(url)  # StoreError if it cannot
    try:
        async with conn.transaction(readonly=True):
            rows = [ServiceStatus(*row) for row in await conn.fetch(_SERVICES)]
            counted = await conn.fetch("SELECT status, count(*) FROM outbox GROUP BY status")
    finally:
        await conn.close()
    return rows, NotificationCounts.of({str(row[0]): int(row[1]) for row in counted})
