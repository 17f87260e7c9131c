"""The outbox dispatcher: hands committed notifications to their channel's sender.

Rows enter the outbox in the same transaction as the decision that caused them
(see runtime), so a page is never lost: on start-up every row still pending is
sent again, with the same ``Idempotency-Key`` (the notification id). Each attempt
and outcome is committed to the timeline, logged, counted and published.

Against alert storms, pages to one person are bundled: the first goes at once,
and what follows within the bundle window is merged into one message at its end.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Protocol

import structlog

from pagerd import metrics
from pagerd.clock import Clock
from pagerd.domain import RecordTimeline
from pagerd.runtime import Publisher
from pagerd.senders import Attempt, Page, Sender, Verdict
from pagerd.store import OutboxRow, OutboxUpdate, WriteBatch

log = structlog.get_logger("pagerd.outbox")

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0
CHANNELS = ("sms", "email", "webhook")
BUNDLED_CHANNELS = frozenset({"sms", "email"})  # people; a webhook is a machine

Composer = Callable[[OutboxRow], Page]
BundleComposer = Callable[[list[OutboxRow]], Page]
LevelFailed = Callable[[str, str, int], None]  # service id, incident id, step


class OutboxStore(Protocol):
    async def write(self, batch: WriteBatch) -> None: ...

    async def notifications(self, incident_id: str) -> list[OutboxRow]: ...


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard the dispatcher tries, from ``[notify]``."""

    max_attempts: int = 6
    max_age_s: float = 3600.0
    concurrency: int = 16
    bundle_window_s: float = 30.0


def backoff_delay(attempts: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter after ``attempts`` failed tries."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return rng.uniform(0, ceiling)


@dataclass(slots=True)
class _Window:
    """Pages held for one recipient until ``closes`` (monotonic seconds)."""

    closes: float
    held: list[OutboxRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Job:
    rows: tuple[OutboxRow, ...]  # one row, or the rows of a bundle

    @property
    def head(self) -> OutboxRow:
        return self.rows[0]


class Dispatcher:
    """Sends outbox rows through bounded per-channel workers; retries what may succeed later."""

    def __init__(
        self,
        *,
        store: OutboxStore,
        senders: dict[str, Sender],
        compose: Composer,
        compose_bundle: BundleComposer,
        clock: Clock,
        publisher: Publisher,
        on_level_failed: LevelFailed,
        policy: DeliveryPolicy | None = None,
    ) -> None:
        self._store = store
        self._senders = senders
        self._compose = compose
        self._compose_bundle = compose_bundle
        self._clock = clock
        self._publisher = publisher
        self._on_level_failed = on_level_failed
        self._policy = policy or DeliveryPolicy()
        # Every channel has a queue; one without a sender fails its pages loudly.
        self._queues: dict[str, asyncio.Queue[_Job]] = {c: asyncio.Queue() for c in CHANNELS}
        self._chores: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._rng = random.Random()
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # --- intake ---

    def release(self, rows: Iterable[OutboxRow]) -> None:
        """Queue rows that were just committed (called by actors after their write)."""
        now = self._clock.now()
        for row in rows:
            if row.status == "failed":
                # Failed before any attempt (e.g. a team with nobody in it): still loud.
                self._report_failure(row, row.last_error or "failed")
                self._chores.put_nowait(partial(self._check_level, row))
            elif row.status == "pending" and row.next_attempt_at and row.next_attempt_at > now:
                self._retry_later(_Job((row,)), (row.next_attempt_at - now).total_seconds())
            elif row.status == "pending":
                self._admit(row)
        self._gauge()

    def _admit(self, row: OutboxRow) -> None:
        """Send now, or hold for the recipient's open bundle window."""
        window_s = self._policy.bundle_window_s
        if window_s <= 0 or row.channel not in BUNDLED_CHANNELS or row.attempts:
            self._enqueue(_Job((row,)))
            return
        key = (row.channel, row.recipient)
        window = self._windows.get(key)
        if window is None:
            self._windows[key] = _Window(time.monotonic() + window_s)
            asyncio.get_running_loop().call_later(window_s, self._close_window, key)
            self._enqueue(_Job((row,)))  # the first page never waits
        else:
            window.held.append(row)

    def _close_window(self, key: tuple[str, str]) -> None:
        window = self._windows.pop(key, None)
        if window is None or not window.held:
            return
        # A storm that goes on gets one bundle per window, not one page per alert.
        window_s = self._policy.bundle_window_s
        self._windows[key] = _Window(time.monotonic() + window_s)
        asyncio.get_running_loop().call_later(window_s, self._close_window, key)
        self._enqueue(_Job(tuple(window.held)))

    def _enqueue(self, job: _Job) -> None:
        self._queues[job.head.channel].put_nowait(job)

    # --- workers ---

    async def run(self) -> None:
        """Run the workers until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._do_chores(), name="pagerd[outbox-chores]")
            for channel, queue in self._queues.items():
                workers = self._policy.concurrency if channel in self._senders else 1
                for index in range(workers):
                    group.create_task(self._work(queue), name=f"pagerd[{channel}-{index}]")

    async def _do_chores(self) -> None:
        while True:
            chore = await self._chores.get()
            try:
                await chore()
            except Exception:  # a failed follow-up must not stop the others
                log.exception("outbox.chore_failed")

    async def idle(self) -> None:
        """Return once no send is in flight."""
        await self._idle.wait()

    def stop_retries(self) -> None:
        """Drop scheduled retries (they are pending rows in the database)."""
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()

    async def _work(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            job = await queue.get()
            self._gauge()
            self._in_flight += 1
            self._idle.clear()
            try:
                await self._deliver(job)
            except Exception:  # one broken row must not stop a worker
                log.exception("notification.dispatch_error", notification_id=job.head.id)
            finally:
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()

    async def _deliver(self, job: _Job) -> None:
        sender = self._senders.get(job.head.channel)
        if sender is None:
            detail = f"channel {job.head.channel!r} is not configured"
            await self._settle(job, Attempt(Verdict.FAIL, detail))
            return
        rows = list(job.rows)
        page = self._compose(job.head) if len(rows) == 1 else self._compose_bundle(rows)
        await self._settle(job, await sender.send(page))

    async def _settle(self, job: _Job, attempt: Attempt) -> None:
        """Commit the outcome of one attempt, then retry, report or escalate."""
        now = self._clock.now()
        head = job.head
        attempts = head.attempts + 1
        retry_in = attempt.retry_after_s or backoff_delay(attempts, self._rng)
        too_old = (now - head.created_at).total_seconds() + retry_in > self._policy.max_age_s
        verdict = attempt.verdict
        if verdict is Verdict.RETRY and (attempts >= self._policy.max_attempts or too_old):
            verdict = Verdict.FAIL
        status, event, next_at = {
            Verdict.SENT: ("sent", "notification.sent", None),
            Verdict.RETRY: ("pending", "notification.retrying", now + timedelta(seconds=retry_in)),
            Verdict.FAIL: ("failed", "notification.failed", None),
        }[verdict]
        error = None if verdict is Verdict.SENT else attempt.detail
        await self._commit(
            job,
            status=status,
            attempts=attempts,
            next_at=next_at,
            error=error,
            event=event,
            now=now,
        )
        metrics.NOTIFICATIONS.labels(channel=head.channel, outcome=status).inc(len(job.rows))
        fields = {
            "service_id": head.service_id,
            "incident_id": head.incident_id,
            "notification_id": head.id,
            "channel": head.channel,
            "recipient": head.recipient,
            "attempt": attempts,
            "bundled": len(job.rows),
            "detail": attempt.detail,
        }
        match verdict:
            case Verdict.SENT:
                for row in job.rows:
                    seconds = max(0.0, (now - row.created_at).total_seconds())
                    metrics.INTAKE_TO_PAGE_SECONDS.observe(seconds)
                log.info("notification.sent", **fields)
            case Verdict.RETRY:
                log.warning("notification.retrying", **fields, retry_in_s=round(retry_in, 3))
                retried = tuple(
                    replace(r, attempts=attempts, next_attempt_at=next_at) for r in job.rows
                )
                self._retry_later(_Job(retried), retry_in)
            case Verdict.FAIL:
                for row in job.rows:
                    self._report_failure(replace(row, attempts=attempts), attempt.detail)
                    await self._check_level(row)

    async def _commit(
        self,
        job: _Job,
        *,
        status: str,
        attempts: int,
        next_at: datetime | None,
        error: str | None,
        event: str,
        now: datetime,
    ) -> None:
        timeline = tuple(
            (
                row.service_id,
                RecordTimeline(
                    row.incident_id,
                    event,
                    now,
                    {
                        "notification_id": row.id,
                        "channel": row.channel,
                        "level": row.level,
                        "attempt": attempts,
                        "error": error,
                        "bundled_with": len(job.rows) - 1,
                    },
                ),
            )
            for row in job.rows
        )
        await self._store.write(
            WriteBatch(
                outbox_updates=tuple(
                    OutboxUpdate(row.id, status, attempts, next_at, error) for row in job.rows
                ),
                timeline=timeline,
            )
        )
        for service_id, record in timeline:
            self._publisher.publish_events(service_id, (record,))

    def _retry_later(self, job: _Job, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._retries[job.head.id] = loop.call_later(delay, self._requeue, job)

    def _requeue(self, job: _Job) -> None:
        self._retries.pop(job.head.id, None)
        self._enqueue(job)

    # --- failure ---

    async def _check_level(self, row: OutboxRow) -> None:
        """When every page of a level has failed, escalate now rather than at the timeout."""
        siblings = [
            r for r in await self._store.notifications(row.incident_id) if r.step == row.step
        ]
        if siblings and all(r.status == "failed" for r in siblings):
            log.error(
                "notification.level_failed",
                service_id=row.service_id,
                incident_id=row.incident_id,
                level=row.level,
                pages=len(siblings),
            )
            self._on_level_failed(row.service_id, row.incident_id, row.step)

    def _report_failure(self, row: OutboxRow, reason: str) -> None:
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

    def _gauge(self) -> None:
        metrics.OUTBOX_DEPTH.set(sum(q.qsize() for q in self._queues.values()))
