"""The outbox dispatcher: hands committed notifications to their channel's sender.

Rows enter the outbox in the same transaction as the decision that caused them
(see runtime), so a page is never lost: on start-up every row still pending is
sent again, with the same ``Idempotency-Key`` (the notification id). Each attempt
and outcome is committed, logged, counted and published.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta

import structlog

from pagerd import metrics
from pagerd.clock import Clock
from pagerd.domain import RecordTimeline
from pagerd.runtime import Publisher, Store
from pagerd.senders import Attempt, Sender, Verdict
from pagerd.store import OutboxRow, OutboxUpdate, WriteBatch

log = structlog.get_logger("pagerd.outbox")

MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0

Renderer = Callable[[OutboxRow], str]


def backoff_delay(attempts: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter after ``attempts`` failed tries."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return rng.uniform(0, ceiling)


class Dispatcher:
    """Sends outbox rows with a bounded number of workers; retries what may succeed later."""

    def __init__(
        self,
        *,
        store: Store,
        senders: dict[str, Sender],
        render: Renderer,
        clock: Clock,
        publisher: Publisher,
        concurrency: int = 32,
    ) -> None:
        self._store = store
        self._senders = senders
        self._render = render
        self._clock = clock
        self._publisher = publisher
        self._concurrency = concurrency
        self._queue: asyncio.Queue[OutboxRow] = asyncio.Queue()
        self._rng = random.Random()
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def release(self, rows: Iterable[OutboxRow]) -> None:
        """Queue rows that were just committed (called by actors after their write)."""
        now = self._clock.now()
        for row in rows:
            if row.status == "pending" and row.next_attempt_at and row.next_attempt_at > now:
                self._retry_later(row, (row.next_attempt_at - now).total_seconds())
            elif row.status == "pending":
                self._queue.put_nowait(row)
            elif row.status == "failed":
                # Failed before any attempt (e.g. a team with nobody in it): still loud.
                self._report_failure(row, row.last_error or "failed")
        metrics.OUTBOX_DEPTH.set(self._queue.qsize())

    async def run(self) -> None:
        """Run the workers until cancelled."""
        async with asyncio.TaskGroup() as group:
            for index in range(self._concurrency):
                group.create_task(self._work(), name=f"pagerd[outbox-{index}]")

    async def idle(self) -> None:
        """Return once no send is in flight."""
        await self._idle.wait()

    def stop_retries(self) -> None:
        """Drop scheduled retries (they are pending rows in the database)."""
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()

    async def _work(self) -> None:
        while True:
            row = await self._queue.get()
            metrics.OUTBOX_DEPTH.set(self._queue.qsize())
            self._in_flight += 1
            self._idle.clear()
            try:
                await self._deliver(row)
            except Exception:  # one broken row must not stop a worker
                log.exception("notification.dispatch_error", notification_id=row.id)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()

    async def _deliver(self, row: OutboxRow) -> None:
        sender = self._senders.get(row.channel)
        started = time.monotonic()
        if sender is None:
            attempt = Attempt(Verdict.FAIL, f"channel {row.channel!r} is not configured")
        else:
            attempt = await sender.send(row, self._render(row))
        attempts = row.attempts + 1
        now = self._clock.now()
        fields = {
            "service_id": row.service_id,
            "incident_id": row.incident_id,
            "notification_id": row.id,
            "channel": row.channel,
            "recipient": row.recipient,
            "attempt": attempts,
            "detail": attempt.detail,
        }
        match attempt.verdict:
            case Verdict.SENT:
                await self._commit(
                    row,
                    status="sent",
                    attempts=attempts,
                    next_at=None,
                    error=None,
                    now=now,
                    event="notification.sent",
                )
                metrics.NOTIFICATIONS.labels(channel=row.channel, outcome="sent").inc()
                metrics.INTAKE_TO_PAGE_SECONDS.observe(
                    max(0.0, (now - row.created_at).total_seconds())
                )
                log.info("notification.sent", **fields, seconds=time.monotonic() - started)
            case Verdict.RETRY if attempts < MAX_ATTEMPTS:
                delay = attempt.retry_after_s or backoff_delay(attempts, self._rng)
                next_at = now + timedelta(seconds=delay)
                await self._commit(
                    row,
                    status="pending",
                    attempts=attempts,
                    next_at=next_at,
                    error=attempt.detail,
                    now=now,
                    event="notification.retrying",
                )
                metrics.NOTIFICATIONS.labels(channel=row.channel, outcome="retry").inc()
                log.warning("notification.retrying", **fields, retry_in_s=round(delay, 3))
                self._retry_later(replace(row, attempts=attempts, next_attempt_at=next_at), delay)
            case Verdict.RETRY | Verdict.FAIL:
                await self._commit(
                    row,
                    status="failed",
                    attempts=attempts,
                    next_at=None,
                    error=attempt.detail,
                    now=now,
                    event="notification.failed",
                )
                self._report_failure(replace(row, attempts=attempts), attempt.detail)

    def _retry_later(self, row: OutboxRow, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._retries[row.id] = loop.call_later(delay, self._requeue, row)

    def _requeue(self, row: OutboxRow) -> None:
        self._retries.pop(row.id, None)
        self._queue.put_nowait(row)

    async def _commit(
        self,
        row: OutboxRow,
        *,
        status: str,
        attempts: int,
        next_at: datetime | None,
        error: str | None,
        now: datetime,
        event: str,
    ) -> None:
        timeline = RecordTimeline(
            row.incident_id,
            event,
            now,
            {
                "notification_id": row.id,
                "channel": row.channel,
                "level": row.level,
                "attempt": attempts,
                "error": error,
            },
        )
        await self._store.write(
            WriteBatch(
                outbox_updates=(OutboxUpdate(row.id, status, attempts, next_at, error),),
                timeline=((row.service_id, timeline),),
            )
        )
        if event != "notification.retrying":
            self._publisher.publish_events(row.service_id, (timeline,))

    def _report_failure(self, row: OutboxRow, reason: str) -> None:
        metrics.NOTIFICATIONS.labels(channel=row.channel, outcome="failed").inc()
        log.error(
            "notification.failed",
            service_id=row.service_id,
            incident_id=row.incident_id,
            notification_id=row.id,
            channel=row.channel,
            recipient=row.recipient,
            attempts=row.attempts,
            reason=reason,
        )
