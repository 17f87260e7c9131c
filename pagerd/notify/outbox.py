"""The outbox dispatcher: hands committed notifications to their channel's sender.

Rows enter the outbox in the same transaction as the decision that caused them
(see the runtime), so a page is never lost: on start-up every row not yet delivered
is sent again, with the same ``Idempotency-Key`` (the notification id). Each
attempt and outcome is committed to the timeline, logged, counted and published
(CONTRACT §5).

- **Moot pages are never sent.** Once an incident is acknowledged or resolved, every
  page of it not yet out (queued, held, waiting its turn or its retry) is cancelled.
  A page already in flight finishes its attempt, and is not retried.
- **Order.** Pages of one incident on one channel go in step order: a later level's
  page waits while an earlier one is queued, in flight or being retried, so after
  an outage nobody hears of level 2 before level 1. It never waits on a page held
  for a bundle. Pages of one step go in parallel; one incident never holds up
  another; the order is per channel, as two channels' delivery times are not
  comparable and a channel that is down must not delay another.
- **Storms, not flaps, are bundled.** A person's first page opens a window; the first
  ``bundle_after`` pages of the window go at once; later ones are held and go
  together when the window ends, as one message listing only what is still open and
  unacknowledged. That message opens the next window. Webhooks are never bundled.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import assert_never

import structlog

from pagerd.core.ports import (
    Attempt,
    Clock,
    FailedLevel,
    OutboxStore,
    Page,
    Publisher,
    Sender,
    Verdict,
)
from pagerd.core.records import OutboxRow
from pagerd.core.times import rfc3339
from pagerd.notify.outcomes import OutcomeCommitter, outcome
from pagerd.telemetry import metrics
from pagerd.telemetry.logs import RateLimitedLog

log = structlog.get_logger("pagerd.outbox")

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0
LOCAL_RETRY_S = 1.0  # after pagerd's own host ran short (Verdict.LOCAL), about this soon
LOCAL_LOG_INTERVAL_S = 10.0
CHANNELS = ("sms", "email", "webhook")
BUNDLED_CHANNELS = frozenset({"sms", "email"})  # people; a webhook is a machine
# A level's pages all reached nobody when each one ended so.
_UNREACHED = frozenset({"failed", "skipped"})

Composer = Callable[[OutboxRow], Page]
BundleComposer = Callable[[list[OutboxRow]], Page]


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    """How hard the dispatcher tries, and how it bundles, from ``[notify]``."""

    max_attempts: int = 6
    max_age_s: float = 3600.0
    concurrency: int = 16
    bundle_window_s: float = 30.0
    bundle_after: int = 3


def backoff_delay(attempts: int, rng: random.Random) -> float:
    """Exponential backoff with full jitter after ``attempts`` failed tries."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return rng.uniform(0, ceiling)


@dataclass(slots=True)
class _Tracked:
    """A page the dispatcher holds until it is delivered, failed or cancelled."""

    row: OutboxRow
    sending: bool = False
    moot: str | None = None  # why it must not be tried again, learnt while in flight
    retry: asyncio.TimerHandle | None = None


@dataclass(slots=True)
class _Window:
    """A person's bundle window: open until ``closes`` (monotonic seconds)."""

    closes: float
    sent: int = 1  # pages let through in this window, the one that opened it included
    held: list[OutboxRow] = field(default_factory=list)


@dataclass(slots=True)
class _Lane:
    """One incident's pages on one channel: pages of ``step`` are out, later ones wait."""

    step: int
    out: set[str]  # ids of the pages out: queued, in flight or waiting to be retried
    waiting: dict[int, list[OutboxRow]] = field(default_factory=dict)  # by step


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
        policy: DeliveryPolicy | None = None,
        may_send: Callable[[], bool] = lambda: True,
    ) -> None:
        self._store = store
        # False once this node may no longer act (a cluster node whose lease lapsed):
        # checked just before each request, so none goes out from that moment on.
        self._may_send = may_send
        self._senders = senders
        self._compose = compose
        self._compose_bundle = compose_bundle
        self._clock = clock
        self._policy = policy or DeliveryPolicy()
        self._committer = OutcomeCommitter(store, publisher, self._failed_for_good, self._idle_now)
        # Every channel has a queue; one without a sender fails its pages loudly.
        self._queues: dict[str, asyncio.Queue[_Job]] = {c: asyncio.Queue() for c in CHANNELS}
        self._chores: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._failed_levels: asyncio.Queue[FailedLevel] = asyncio.Queue()
        self._rng = random.Random()
        self._local_log = RateLimitedLog(log, LOCAL_LOG_INTERVAL_S)
        self._pages: dict[str, _Tracked] = {}  # by notification id
        self._by_incident: dict[str, set[str]] = {}
        self._windows: dict[tuple[str, str], _Window] = {}  # by (channel, recipient)
        self._lanes: dict[tuple[str, str], _Lane] = {}  # by (incident id, channel)
        self._stopping = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # --- what comes in ---

    def release(self, rows: Iterable[OutboxRow]) -> None:
        """Take rows just committed (by an actor) or found undelivered (at start-up).

        A row already held here is not taken twice: at start-up, a timer that fell due
        may commit and release a page before the undelivered ones are read back.
        """
        for row in rows:
            if row.id in self._pages:
                continue
            self._pages[row.id] = _Tracked(row)
            self._by_incident.setdefault(row.incident_id, set()).add(row.id)
            if self._in_turn(row):
                self._start(row)
        self._gauge()

    def moot(self, incident_id: str, why: str) -> None:
        """The incident was acknowledged or resolved: cancel each page of it not yet out."""
        for channel in CHANNELS:
            self._lanes.pop((incident_id, channel), None)
        for notification_id in self._by_incident.pop(incident_id, ()):
            tracked = self._pages.get(notification_id)
            if tracked is None:
                continue
            if tracked.sending:
                tracked.moot = why  # its attempt finishes; it is not tried again
                continue
            if tracked.retry is not None:
                tracked.retry.cancel()
            del self._pages[notification_id]
            self._cancelled((tracked.row,), why)
        self._gauge()

    def cancel(self, rows: Iterable[OutboxRow], why: str) -> None:
        """Cancel rows never released (found at start-up for an incident no longer open)."""
        for row in rows:
            self._cancelled((row,), why)

    async def failed_levels(self) -> AsyncIterator[FailedLevel]:
        """Each level of an incident whose pages all failed for good, as it happens."""
        while True:
            yield await self._failed_levels.get()

    # --- order within an incident ---

    def _in_turn(self, row: OutboxRow) -> bool:
        """Whether ``row`` may go now; if not, it waits in its lane for the earlier steps."""
        key = (row.incident_id, row.channel)
        lane = self._lanes.get(key)
        if lane is None:
            self._lanes[key] = _Lane(row.step, {row.id})
            return True
        # An earlier step showing up late (not expected) goes at once: late, not never.
        if row.step <= lane.step:
            lane.out.add(row.id)
            return True
        lane.waiting.setdefault(row.step, []).append(row)
        return False

    def _out_of_lane(self, rows: Iterable[OutboxRow]) -> None:
        """These pages no longer hold up later steps (delivered, failed, cancelled, held)."""
        for row in rows:
            key = (row.incident_id, row.channel)
            lane = self._lanes.get(key)
            if lane is None:
                continue
            lane.out.discard(row.id)
            if lane.out:
                continue
            if not lane.waiting:
                del self._lanes[key]
                continue
            lane.step = min(lane.waiting)
            successors = lane.waiting.pop(lane.step)
            lane.out = {r.id for r in successors}
            for successor in successors:
                self._start(successor)

    # --- bundling ---

    def _start(self, row: OutboxRow) -> None:
        """Send a row now, or when its recorded next attempt is due."""
        now = self._clock.now()
        if row.next_attempt_at and row.next_attempt_at > now:
            self._retry_later(_Job((row,)), (row.next_attempt_at - now).total_seconds())
        else:
            self._admit(row)

    def _admit(self, row: OutboxRow) -> None:
        """Send now, or hold for the person's bundle window if it let enough through."""
        policy = self._policy
        if (
            policy.bundle_window_s <= 0
            or row.channel not in BUNDLED_CHANNELS
            or row.attempts
            or row.is_notice
        ):
            self._enqueue(_Job((row,)))
            return
        key = (row.channel, row.recipient)
        window = self._windows.get(key)
        if window is None:
            self._open_window(key)
            self._enqueue(_Job((row,)))
        elif window.sent < policy.bundle_after:
            window.sent += 1
            self._enqueue(_Job((row,)))
        else:
            window.held.append(row)
            self._held(row, window)

    def _open_window(self, key: tuple[str, str]) -> None:
        window_s = self._policy.bundle_window_s
        self._windows[key] = _Window(time.monotonic() + window_s)
        asyncio.get_running_loop().call_later(window_s, self._close_window, key)

    def _close_window(self, key: tuple[str, str]) -> None:
        window = self._windows.pop(key, None)
        if window is None:
            return
        # What was cancelled meanwhile (its incident acknowledged or resolved) is gone.
        held = [row for row in window.held if row.id in self._pages]
        if held:
            self._open_window(key)  # the bundle is the first page of the next window
            self._enqueue(_Job(tuple(held)))

    def _held(self, row: OutboxRow, window: _Window) -> None:
        now = self._clock.now()
        until = now + timedelta(seconds=max(0.0, window.closes - time.monotonic()))
        detail: dict[str, str | int | None] = {"until": rfc3339(until)}
        self._committer.add(
            outcome((row,), status="held", event="notification.held", now=now, detail=detail)
        )
        metrics.NOTIFICATIONS.labels(channel=row.channel, outcome="held").inc()
        log.info("notification.held", **row.log_fields(), until=detail["until"])
        self._out_of_lane((row,))  # a later level never waits on a held page

    def _cancelled(self, rows: tuple[OutboxRow, ...], why: str) -> None:
        row = rows[0]
        now = self._clock.now()
        detail: dict[str, str | int | None] = {"reason": why}
        self._committer.add(
            outcome(
                rows, status="cancelled", event="notification.cancelled", now=now, detail=detail
            )
        )
        metrics.NOTIFICATIONS.labels(channel=row.channel, outcome="cancelled").inc(len(rows))
        log.info("notification.cancelled", **row.log_fields(), reason=why)

    def _enqueue(self, job: _Job) -> None:
        if self._stopping:
            return  # shutting down: the row is pending in the database, sent on start
        self._queues[job.head.channel].put_nowait(job)

    # --- workers ---

    async def run(self) -> None:
        """Run the workers and the committer until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._do_chores(), name="pagerd[outbox-chores]")
            group.create_task(self._committer.run(), name="pagerd[outbox-commit]")
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
        """Return once no send is in flight and every outcome is committed."""
        await self._idle.wait()

    def stop_retries(self) -> None:
        """Drop scheduled retries and start no new send (the rows stay in the database)."""
        self._stopping = True
        for tracked in self._pages.values():
            if tracked.retry is not None:
                tracked.retry.cancel()
                tracked.retry = None

    def _idle_now(self) -> None:
        if self._in_flight or self._committer.uncommitted:
            self._idle.clear()
        else:
            self._idle.set()

    async def _work(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            queued = await queue.get()
            self._gauge()
            # A page cancelled while it waited in the queue is not sent.
            rows = tuple(row for row in queued.rows if row.id in self._pages)
            if not rows:
                continue
            if not self._may_send():
                # Still pending in the database: the node that holds the lease sends it.
                log.debug("notification.not_sent", notification_id=rows[0].id)
                continue
            job = _Job(rows)
            for row in rows:
                self._pages[row.id].sending = True
            self._in_flight += 1
            self._idle_now()
            try:
                self._settle(job, await self._attempt(job))
            except Exception:  # one broken row must not stop a worker, nor its lane
                log.exception("notification.dispatch_error", notification_id=job.head.id)
                self._forget(job.rows)
            finally:
                self._in_flight -= 1
                self._idle_now()

    async def _attempt(self, job: _Job) -> Attempt:
        sender = self._senders.get(job.head.channel)
        if sender is None:
            return Attempt(Verdict.FAIL, f"channel {job.head.channel!r} is not configured")
        rows = list(job.rows)
        page = self._compose(job.head) if len(rows) == 1 else self._compose_bundle(rows)
        return await sender.send(page)

    def _settle(self, job: _Job, attempt: Attempt) -> None:
        """Hand the outcome of one attempt to the committer, then retry, report or go on."""
        if attempt.verdict is Verdict.LOCAL and self._retry_local(job, attempt):
            return
        now = self._clock.now()
        head = job.head
        attempts = head.attempts + 1
        retry_in = attempt.retry_after_s or backoff_delay(attempts, self._rng)
        too_old = (now - head.created_at).total_seconds() + retry_in > self._policy.max_age_s
        moot = next((t.moot for r in job.rows if (t := self._pages.get(r.id)) and t.moot), None)
        verdict = attempt.verdict
        if verdict is Verdict.LOCAL:  # moot, or too old to try again (see _retry_local)
            verdict = Verdict.RETRY if moot is not None else Verdict.FAIL
        if verdict is Verdict.RETRY and (attempts >= self._policy.max_attempts or too_old):
            verdict = Verdict.FAIL
        fields = {
            **head.log_fields(),
            "attempt": attempts,
            "bundled": len(job.rows),
            "detail": attempt.detail,
        }
        match verdict:
            case Verdict.SENT:
                self._record(job, "sent", "notification.sent", attempts=attempts, now=now)
                for row in job.rows:
                    seconds = max(0.0, (now - row.created_at).total_seconds())
                    metrics.INTAKE_TO_PAGE_SECONDS.observe(seconds)
                log.info("notification.sent", **fields)
                self._forget(job.rows)
            case Verdict.RETRY if moot is not None:
                self._forget(job.rows)
                tried = tuple(replace(r, attempts=attempts) for r in job.rows)
                self._cancelled(tried, moot)
            case Verdict.RETRY:
                next_at = now + timedelta(seconds=retry_in)
                self._record(
                    job,
                    "pending",
                    "notification.retrying",
                    attempts=attempts,
                    now=now,
                    error=attempt.detail,
                    next_at=next_at,
                )
                log.warning("notification.retrying", **fields, retry_in_s=round(retry_in, 3))
                retried = tuple(
                    replace(r, attempts=attempts, next_attempt_at=next_at) for r in job.rows
                )
                for row in retried:
                    self._pages[row.id].row = row
                    self._pages[row.id].sending = False
                self._retry_later(_Job(retried), retry_in)
            case Verdict.FAIL | Verdict.LOCAL:  # LOCAL is made FAIL above; mypy cannot tell
                self._record(
                    job,
                    "failed",
                    "notification.failed",
                    attempts=attempts,
                    now=now,
                    error=attempt.detail,
                )
                for row in job.rows:
                    self._report_failure(replace(row, attempts=attempts), attempt.detail)
                self._forget(job.rows)
            case _:
                assert_never(verdict)

    def _retry_local(self, job: _Job, attempt: Attempt) -> bool:
        """pagerd's own host ran short: try again soon, as if this attempt had not been made.

        Nothing is committed (the row stays pending as it was), so a host out of
        descriptors does not also write a timeline row per page per second. False when
        the page is too old to try again, or moot.
        """
        head = job.head
        delay = LOCAL_RETRY_S * self._rng.uniform(0.5, 1.5)
        age_s = (self._clock.now() - head.created_at).total_seconds()
        tracked = [self._pages.get(row.id) for row in job.rows]
        if age_s + delay > self._policy.max_age_s or any(t and t.moot for t in tracked):
            return False
        for page in tracked:
            if page is not None:
                page.sending = False  # waiting now: an acknowledgement cancels it outright
        metrics.NOTIFICATION_LOCAL_ERRORS.labels(channel=head.channel).inc(len(job.rows))
        self._local_log.error(
            "notification.local_error",
            **head.log_fields(),
            detail=attempt.detail,
            retry_in_s=round(delay, 3),
        )
        self._retry_later(job, delay)
        return True

    def _record(
        self,
        job: _Job,
        status: str,
        event: str,
        *,
        attempts: int,
        now: datetime,
        error: str | None = None,
        next_at: datetime | None = None,
    ) -> None:
        self._committer.add(
            outcome(
                job.rows,
                status=status,
                event=event,
                now=now,
                attempts=attempts,
                next_at=next_at,
                error=error,
            )
        )
        metrics.NOTIFICATIONS.labels(channel=job.head.channel, outcome=status).inc(len(job.rows))

    def _forget(self, rows: Iterable[OutboxRow]) -> None:
        """These pages are done with: delivered, failed for good or cancelled."""
        rows = tuple(rows)
        for row in rows:
            self._pages.pop(row.id, None)
            ids = self._by_incident.get(row.incident_id)
            if ids is not None:
                ids.discard(row.id)
                if not ids:
                    del self._by_incident[row.incident_id]
        self._out_of_lane(rows)

    def _retry_later(self, job: _Job, delay: float) -> None:
        if self._stopping:
            return  # shutting down: the row is pending in the database, retried on start
        handle = asyncio.get_running_loop().call_later(delay, self._requeue, job)
        for row in job.rows:
            tracked = self._pages.get(row.id)
            if tracked is not None:
                tracked.retry = handle

    def _requeue(self, job: _Job) -> None:
        for row in job.rows:
            tracked = self._pages.get(row.id)
            if tracked is not None:
                tracked.retry = None
        self._enqueue(job)

    # --- failure ---

    def _failed_for_good(self, row: OutboxRow) -> None:
        """A failure is committed: check the page's level once the chore runs."""
        if not row.is_notice:  # a notice is of no incident's level
            self._chores.put_nowait(partial(self._check_level, row))

    async def _check_level(self, row: OutboxRow) -> None:
        """When every page of a level failed, say so, for the runtime to escalate now."""
        siblings = [
            r for r in await self._store.notifications(row.incident_id) if r.step == row.step
        ]
        if siblings and all(r.status in _UNREACHED for r in siblings):
            log.error(
                "notification.level_failed",
                service_id=row.service_id,
                incident_id=row.incident_id,
                level=row.level,
                pages=len(siblings),
            )
            self._failed_levels.put_nowait(FailedLevel(row.service_id, row.incident_id, row.step))

    def _report_failure(self, row: OutboxRow, reason: str) -> None:
        log.error("notification.failed", **row.log_fields(), attempts=row.attempts, reason=reason)

    def _gauge(self) -> None:
        metrics.OUTBOX_DEPTH.set(sum(q.qsize() for q in self._queues.values()))
