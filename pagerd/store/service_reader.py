"""Services read synchronously by id, for the directory on the event loop (SQLite)."""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Sequence
from typing import Any

from pagerd.core.records import ServiceRow, StoreError

Row = tuple[Any, ...]
_SERVICE_COLUMNS = "SELECT id, name, policy_id, managed, heartbeat_s FROM services"

# The directory's synchronous reads run on the event loop: they must not wait long.
SYNC_READ_BUSY_TIMEOUT_MS = 1_000


def connect_sync_reader(path: str) -> sqlite3.Connection:
    # Autocommit (isolation_level=None): each SELECT sees the latest commit and, read to
    # its end, holds no snapshot that would keep the WAL from being checkpointed.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        connection.execute(f"PRAGMA busy_timeout = {SYNC_READ_BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA query_only = ON")
    except BaseException:
        connection.close()
        raise
    return connection


class ServiceReader:
    """Services read synchronously, by primary key, on a connection of its own.

    The directory answers "is this service registered, and with which policy?" inside
    synchronous code (the router, an actor's step) for up to millions of services, few
    of them active at a time: one indexed read of some microseconds at a service's
    first use beats reading every row before start-up. WAL readers never wait for the
    writer. Made by ``Store.service_reader``; used from the event loop's thread.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        # Closed with the reader, or when it is dropped (a test's directory).
        self._finalizer = weakref.finalize(self, connection.close)

    def close(self) -> None:
        """Close the connection; later reads raise StoreError."""
        self._finalizer()

    def get(self, service_id: str) -> ServiceRow | None:
        """The service, or None if it is not registered."""
        rows = self._read(_SERVICE_COLUMNS + " WHERE id = ?", (service_id,))
        return _service_row(rows[0]) if rows else None

    def ids_using(self, policy_id: str, limit: int) -> list[str]:
        """The first ``limit`` ids, sorted, of the services escalating through ``policy_id``."""
        sql = "SELECT id FROM services WHERE policy_id = ? ORDER BY id LIMIT ?"
        return [str(row[0]) for row in self._read(sql, (policy_id, limit))]

    def _read(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        try:
            # fetchall, never fetchone: a statement left unfinished keeps its snapshot.
            return self._connection.execute(sql, params).fetchall()
        except sqlite3.Error as error:
            raise StoreError(f"read failed: {error}") from error


def _service_row(row: Row) -> ServiceRow:
    service_id, name, policy_id, managed, heartbeat_s = row
    return ServiceRow(service_id, name, policy_id, bool(managed), heartbeat_s)
