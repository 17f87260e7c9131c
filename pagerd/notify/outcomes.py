"""What became of each page, committed: one writer gathers the outcomes of every attempt.

A send worker does not wait for its outcome to be committed: it hands the outcome
here, and one task writes everything waiting in one ``store.write``, in attempt
order. An outcome that cannot be committed (a full disk) is kept and written with
the next; at shutdown what is waiting still goes to the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

import structlog

from pagerd.core.domain import RecordTimeline
from pagerd.core.ports import Publisher, Writer
from pagerd.core.records import OutboxRow, OutboxUpdate, WriteBatch

log = structlog.get_logger("pagerd.outbox")

COMMIT_RETRY_S = 1.0  # after a failed outcome commit (e.g. disk full), try again this soon


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to some pages, as it is to be committed and announced."""

    updates: tuple[OutboxUpdate, ...]
    timeline: tuple[tuple[str, RecordTimeline], ...]  # (service id, record)
    failed: tuple[OutboxRow, ...] = ()  # failed for good: their level is checked once committed


def outcome(
    rows: Iterable[OutboxRow],
    *,
    status: str,
    event: str,
    now: datetime,
    attempts: int | None = None,
    next_at: datetime | None = None,
    error: str | None = None,
    detail: dict[str, str | int | None] | None = None,
) -> Outcome:
    """The same status and timeline event for each of ``rows`` (a page, or a bundle's)."""
    rows = tuple(rows)
    records = []
    updates = []
    for row in rows:
        tries = row.attempts if attempts is None else attempts
        fields: dict[str, str | int | None] = {
            "notification_id": row.id,
            "channel": row.channel,
            "level": row.level,
            "attempt": tries,
            "error": error,
            "bundled_with": len(rows) - 1,
            **(detail or {}),
        }
        records.append((row.service_id, RecordTimeline(row.incident_id, event, now, fields)))
        updates.append(OutboxUpdate(row.id, status, tries, next_at, error))
    failed = rows if status == "failed" else ()
    return Outcome(tuple(updates), tuple(records), failed)


class OutcomeCommitter:
    """Commits outcomes as they come; whatever waits during one commit goes in the next."""

    def __init__(
        self,
        store: Writer,
        publisher: Publisher,
        on_failed: Callable[[OutboxRow], None],
        on_idle_change: Callable[[], None],
    ) -> None:
        self._store = store
        self._publisher = publisher
        self._on_failed = on_failed  # a page failed for good, its failure now committed
        self._on_idle_change = on_idle_change
        self._outcomes: list[Outcome] = []
        self._ready = asyncio.Event()
        self.uncommitted = 0  # outcomes not yet committed (waiting or being written)

    def add(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self.uncommitted += 1
        self._on_idle_change()
        self._ready.set()

    async def run(self) -> None:
        """Commit outcomes until cancelled; then commit what waits, once more."""
        try:
            while True:
                if not self._outcomes:
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                try:
                    await self._flush()
                except Exception:  # kept for another try: an outcome is never dropped
                    log.exception("notification.commit_failed", outcomes=len(self._outcomes))
                    await asyncio.sleep(COMMIT_RETRY_S)
        except asyncio.CancelledError:
            # Cut off at shutdown: what is waiting still goes to the store, which commits
            # everything queued before it closes.
            if self._outcomes:
                try:
                    await self._flush()
                except Exception:  # the rows stay as they were and are resent on start
                    log.exception("notification.commit_failed", outcomes=len(self._outcomes))
            raise

    async def _flush(self) -> None:
        """Commit every outcome waiting in one write; on failure they wait for the next."""
        outcomes, self._outcomes = self._outcomes, []
        batch = WriteBatch(
            outbox_updates=tuple(u for o in outcomes for u in o.updates),
            timeline=tuple(t for o in outcomes for t in o.timeline),
        )
        try:
            await self._store.write(batch)
        except Exception:
            self._outcomes[:0] = outcomes  # before any newer outcome of the same rows
            raise
        self.uncommitted -= len(outcomes)
        self._on_idle_change()
        for service_id, record in batch.timeline:
            if service_id:  # a notice (a hand-over's SMS) is of no service
                self._publisher.publish_events(service_id, (record,))
        for committed in outcomes:
            for row in committed.failed:
                self._on_failed(row)
