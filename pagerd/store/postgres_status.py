"""``pagerd status`` on PostgreSQL: the same read-only table as on SQLite, and the nodes."""

from __future__ import annotations

from datetime import datetime

from pagerd.core.times import rfc3339
from pagerd.store.lease import NodeRow, read_nodes
from pagerd.store.postgres import connect
from pagerd.store.status import NotificationCounts, ServiceStatus

_SERVICES = """
    SELECT s.id, s.name, s.policy_id, i.id, i.status, i.level_index + 1,
           to_char(i.opened_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
    FROM services AS s
    LEFT JOIN incidents AS i ON i.service_id = s.id AND i.status <> 'resolved'
    ORDER BY (i.id IS NULL), s.id
"""


async def read_status(
    url: str,
) -> tuple[list[ServiceStatus], NotificationCounts, list[NodeRow]]:
    """Services with their open incident, the notifications not delivered, and every node
    that joined, with its role."""
    conn = await connect(url)  # StoreError if it cannot
    try:
        async with conn.transaction(readonly=True):
            rows = [ServiceStatus(*row) for row in await conn.fetch(_SERVICES)]
            counted = await conn.fetch("SELECT status, count(*) FROM outbox GROUP BY status")
            nodes = await read_nodes(conn)
    finally:
        await conn.close()
    counts = NotificationCounts.of({str(row[0]): int(row[1]) for row in counted})
    return rows, counts, nodes


def render_nodes(nodes: list[NodeRow]) -> str:
    """The nodes as a table: a node silent longer than its lease shows offline."""
    header = ("NODE", "ROLE", "SINCE", "LAST SEEN", "REASON")
    table = [header]
    for node in nodes:
        role = node.role if node.live else "offline"
        if node.role != "offline" and not node.live:
            role = f"offline (said {node.role})"
        if node.holds_lease:
            role = "active"
        table.append(
            (node.node_id, role, _time(node.since), _time(node.seen_at), node.reason or "-")
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    return "\n".join(line.rstrip() for line in lines)


def _time(at: datetime) -> str:
    return rfc3339(at)
