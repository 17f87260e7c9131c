"""Services read synchronously on PostgreSQL: every service in memory, kept in step.

The directory asks "is this service registered, and with which policy?" inside
synchronous code on the event loop (the router, an actor's step). SQLite answers that
with an indexed read of some microseconds; a PostgreSQL read is a network round trip,
which must not block the loop. So the store reads every service once, in chunks, before
the directory is built, and applies each services row it commits afterwards. That is
sound while this node is the only one writing, which the lease of CONTRACT §7 makes
so: a node becoming active builds its directory, and so this index, anew.
"""

from __future__ import annotations

import heapq
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec

from pagerd.core.records import ServiceRow, StoreError

FILL_CHUNK = 50_000
SELECT_SERVICES = """
SELECT json_agg(json_build_object(
    'id', id, 'name', name, 'policy_id', policy_id, 'managed', managed,
    'heartbeat_s', heartbeat_s) ORDER BY id)::text,
    max(id), count(*)
FROM (SELECT * FROM services WHERE id > $1 ORDER BY id LIMIT $2) AS chunk
"""
_SERVICES = msgspec.json.Decoder(list[ServiceRow])


def _decode_services(text: str) -> list[ServiceRow]:
    try:
        return _SERVICES.decode(text)
    except msgspec.DecodeError as error:  # ValidationError included
        raise StoreError(f"a stored service is unreadable: {error}") from error


Fetch = Callable[..., Awaitable[list[Any]]]


class ServiceIndex:
    """Every stored service by id, and the ids of each policy's services."""

    def __init__(self) -> None:
        self._rows: dict[str, ServiceRow] = {}
        self._by_policy: dict[str, set[str]] = {}
        # Ids committed while the index was being filled: a chunk read before such a
        # commit must not put back the row as it was.
        self._committed_while_filling: set[str] | None = None
        self.closed = False

    async def fill(self, fetch: Fetch, chunk: int = FILL_CHUNK) -> None:
        """Read every service, a chunk of ids at a time (the server writes each as JSON,
        which msgspec turns into rows in C: half the time of the driver's records)."""
        self._committed_while_filling = set()
        rows, by_policy = self._rows, self._by_policy
        try:
            after = ""
            while True:
                [(text, last, count)] = await fetch(SELECT_SERVICES, after, chunk)
                newer = self._committed_while_filling
                for row in _decode_services(text) if count else ():
                    if row.id not in newer:  # ids only grow: no row of a chunk is known
                        rows[row.id] = row
                        by_policy.setdefault(row.policy_id, set()).add(row.id)
                if count < chunk:
                    return
                after = last
        finally:
            self._committed_while_filling = None

    def committed(self, rows: Iterable[tuple[str, str, str, bool, float | None, str]]) -> None:
        """Apply services rows (id, name, policy_id, managed, heartbeat_s, integration key)
        just committed."""
        for service_id, name, policy_id, managed, heartbeat_s, _ in rows:
            if self._committed_while_filling is not None:
                self._committed_while_filling.add(service_id)
            self._put(ServiceRow(service_id, name, policy_id, managed, heartbeat_s))

    def _put(self, row: ServiceRow) -> None:
        before = self._rows.get(row.id)
        if before is not None and before.policy_id != row.policy_id:
            self._by_policy[before.policy_id].discard(row.id)
        self._rows[row.id] = row
        self._by_policy.setdefault(row.policy_id, set()).add(row.id)

    def get(self, service_id: str) -> ServiceRow | None:
        return self._rows.get(service_id)

    def ids_using(self, policy_id: str, limit: int) -> list[str]:
        return heapq.nsmallest(limit, self._by_policy.get(policy_id, ()))

    def close(self) -> None:
        self.closed = True
        self._rows.clear()
        self._by_policy.clear()


class ServiceReader:
    """The ``ServiceLookup`` of the PostgreSQL store: reads of its ``ServiceIndex``."""

    def __init__(self, index: ServiceIndex) -> None:
        self._index: ServiceIndex | None = index

    def close(self) -> None:
        """Stop reading; later reads raise StoreError."""
        self._index = None

    def _open(self) -> ServiceIndex:
        index = self._index
        if index is None or index.closed:
            raise StoreError("read failed: the service reader is closed")
        return index

    def get(self, service_id: str) -> ServiceRow | None:
        """The service, or None if it is not registered."""
        return self._open().get(service_id)

    def ids_using(self, policy_id: str, limit: int) -> list[str]:
        """The first ``limit`` ids, sorted, of the services escalating through ``policy_id``."""
        return self._open().ids_using(policy_id, limit)
