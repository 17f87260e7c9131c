"""``pagerd status``: a read-only look at the database, safe beside a running daemon."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path


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


def read_status(path: Path) -> tuple[list[ServiceStatus], int]:
    """Services with their open incident, and the number of pending notifications."""
    if not path.exists():
        raise FileNotFoundError(f"no database at {path} (has pagerd run with this config?)")
    # Read-only URI: never creates, migrates or locks the database for writing.
    with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True) as db:
        rows = [ServiceStatus(*row) for row in db.execute(_SERVICES)]
        (pending,) = db.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()
    return rows, int(pending)


def render_status(rows: list[ServiceStatus], pending: int) -> str:
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
        f"\n{_count(len(rows), 'service')}, {_count(open_count, 'open incident')}, "
        f"{_count(pending, 'pending notification')}"
    )
    return "\n".join(line.rstrip() for line in lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
