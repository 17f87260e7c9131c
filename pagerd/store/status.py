"""``pagerd status``: a read-only look at the database, safe beside a running daemon."""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class NotificationCounts:
    """Notifications not delivered: still to be sent, held for a bundle, failed for good."""

    pending: int = 0
    held: int = 0
    failed: int = 0

    @classmethod
    def of(cls, by_status: dict[str, int]) -> NotificationCounts:
        """From counts by outbox status; a status the schema does not have yet counts 0."""
        return cls(
            pending=int(by_status.get("pending", 0)),
            held=int(by_status.get("held", 0)),
            failed=int(by_status.get("failed", 0)),
        )


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    service_id: str
    name: str
    policy_id: str
    incident_id: str | None
    incident_status: str | None
    level: int | None
    opened_at: str | None

    @property
    def health(self) -> str:
        return "healthy" if self.incident_id is None else "unhealthy"


_SERVICES = """
    SELECT s.id, s.name, s.policy_id, i.id, i.status, i.level_index + 1, i.opened_at
    FROM services AS s
    LEFT JOIN incidents AS i ON i.service_id = s.id AND i.status != 'resolved'
    ORDER BY (i.id IS NULL), s.id
"""


def read_status(path: Path) -> tuple[list[ServiceStatus], NotificationCounts]:
    """Services with their open incident, and the notifications not delivered."""
    if not path.exists():
        raise FileNotFoundError(f"no database at {path} (has pagerd run with this config?)")
    # Read-only URI: never creates, migrates or locks the database for writing.
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        rows = [ServiceStatus(*row) for row in db.execute(_SERVICES)]
        by_status = dict(db.execute("SELECT status, count(*) FROM outbox GROUP BY status"))
    return rows, NotificationCounts.of(by_status)


def render_status(rows: list[ServiceStatus], notifications: NotificationCounts) -> str:
    """A plain table, unhealthy services first."""
    header = ("SERVICE", "HEALTH", "INCIDENT", "STATUS", "LEVEL", "OPENED AT", "POLICY")
    table = [header] + [
        (
            r.service_id,
            r.health,
            r.incident_id or "-",
            r.incident_status or "-",
            "-" if r.level is None else str(r.level),
            r.opened_at or "-",
            r.policy_id,
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in table]
    open_count = sum(r.incident_id is not None for r in rows)
    lines.append(
        f"\n{_count(len(rows), 'service')}, {_count(open_count, 'open incident')}; "
        f"notifications: {notifications.pending} pending, {notifications.held} held, "
        f"{notifications.failed} failed"
    )
    return "\n".join(line.rstrip() for line in lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
