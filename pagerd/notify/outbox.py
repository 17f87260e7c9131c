"""The outbox dispatcher: hands committed notifications to their channel's sender.

Rows enter the outbox in the same transaction as the decision that caused them
(see runtime), so a page is never lost: on start-up every row still pending is
sent again, with the same ``Idempotency-Key`` (the notification id). Each attempt
and outcome is committed to the timeline, logged, counted and published.

Pages of one incident on one channel go in step order: a later level's (or
repeat's) page waits while an earlier one is still out (queued, held for a
bundle, in flight or waiting to be retried), so after an outage of the channel
nobody hears of level 2 before level 1. Pages of one step go in parallel, and a
page waiting on its own incident never holds up another incident. The order is
kept per channel only: a channel that is down must not delay an escalation to a
person reachable on another, and delivery times of two channels (an SMS, an
email) are not comparable anyway.

Against alert storms, pages to one person are bundled: the first goes at once,
and what follows within the bundle window is merged into one message at its end.

A worker does not wait for its outcome to be committed: it hands the outcome to
one committer, which writes everything waiting in one ``store.write``.
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

from pagerd.core.domain import RecordTimeline
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
from pagerd.core.records import OutboxRow, OutboxUpdate, WriteBatch
from pagerd.telemetry import metrics

log = structlog.get_logger("pagerd.outbox")

BACKOFF_BASE_S = 0.5
BACKOFF_CAP_S = 60.0
COMMIT_RETRY_S = 1.0  # after a failed outcome commit (e.g. disk full), try again this soon
CHANNELS = ("sms", "email", "webhook")
BUNDLED_CHANNELS = frozenset({"sms", "email"})  # people; a webhook is a machine

Composer = Callable[[OutboxRow], Page]
BundleComposer = Callable[[list[OutboxRow]], Page]


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


@dataclass(slots=True)
class _Lane:
    """One incident's pages on one channel: pages of ``step`` are out, later ones wait."""

    step: int
    out: set[str]  # ids of the pages out: queued, held, in flight or waiting to retry
    waiting: dict[int, list[OutboxRow]] = field(default_factory=dict)  # by step


@dataclass(frozen=True, slots=True)
class _Job:
    rows: tuple[OutboxRow, ...]  # one row, or the rows of a bundle

    @property
    def head(self) -> OutboxRow:
        return self.rows[0]


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One attempt's result as it is to be committed."""

    updates: tuple[OutboxUpdate, ...]
    timeline: tuple[tuple[str, RecordTimeline], ...]  # (service id, record)
    failed: tuple[OutboxRow, ...]  # rows failed for good: their level is checked once committed


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
    ) -> None:
        self._store = store
        self._senders = senders
        self._compose = compose
        self._compose_bundle = compose_bundle
        self._clock = clock
        self._publisher = publisher
        self._failed_levels: asyncio.Queue[FailedLevel] = asyncio.Queue()
        self._policy = policy or DeliveryPolicy()
        # Every channel has a queue; one without a sender fails its pages loudly.
        self._queues: dict[str, asyncio.Queue[_Job]] = {c: asyncio.Queue() for c in CHANNELS}
        self._chores: asyncio.Queue[Callable[[], Awaitable[None]]] = asyncio.Queue()
        self._rng = random.Random()
        self._retries: dict[str, asyncio.TimerHandle] = {}
        self._windows: dict[tuple[str, str], _Window] = {}
        self._lanes: dict[tuple[str, str], _Lane] = {}  # by (incident id, channel)
        self._outcomes: list[_Outcome] = []  # handed to the committer, in attempt order
        self._outcome_ready = asyncio.Event()
        self._uncommitted = 0  # outcomes not yet committed (waiting or being written)
        self._stopping = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # --- intake ---

    def release(self, rows: Iterable[OutboxRow]) -> None:
        """Queue pending rows that were just committed (called by actors after their write)."""
        for row in rows:
            if self._in_turn(row):
                self._start(row)
        self._gauge()

    async def failed_levels(self) -> AsyncIterator[FailedLevel]:
        """Each level of an incident whose pages all failed for good, as it happens."""
        while True:
            yield await self._failed_levels.get()

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

    def _done_with(self, rows: Iterable[OutboxRow]) -> None:
        """These pages are sent or failed for good: let their lanes' next step go."""
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

    def _start(self, row: OutboxRow) -> None:
        """Send a pending row now, or when its recorded next attempt is due."""
        now = self._clock.now()
        if row.next_attempt_at and row.next_attempt_at > now:
            self._retry_later(_Job((row,)), (row.next_attempt_at - now).total_seconds())
        else:
            self._admit(row)

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
        if self._stopping:
            return  # shutting down: the row is pending in the database, sent on start
        self._queues[job.head.channel].put_nowait(job)

    # --- workers ---

    async def run(self) -> None:
        """Run the workers and the committer until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._do_chores(), name="pagerd[outbox-chores]")
            group.create_task(self._commit_outcomes(), name="pagerd[outbox-commit]")
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
        """Drop scheduled retries and start no new send (the rows are pending in the database)."""
        self._stopping = True
        for handle in self._retries.values():
            handle.cancel()
        self._retries.clear()

    def _update_idle(self) -> None:
        if self._in_flight or self._uncommitted:
            self._idle.clear()
        else:
            self._idle.set()

    async def _work(self, queue: asyncio.Queue[_Job]) -> None:
        while True:
            job = await queue.get()
            self._gauge()
            self._in_flight += 1
            self._update_idle()
            try:
                self._settle(job, await self._attempt(job))
            except Exception:  # one broken row must not stop a worker, nor its lane
                log.exception("notification.dispatch_error", notification_id=job.head.id)
                self._done_with(job.rows)
            finally:
                self._in_flight -= 1
                self._update_idle()

    async def _attempt(self, job: _Job) -> Attempt:
        sender = self._senders.get(job.head.channel)
        if sender is None:
            return Attempt(Verdict.FAIL, f"channel {job.head.channel!r} is not configured")
        rows = list(job.rows)
        page = self._compose(job.head) if len(rows) == 1 else self._compose_bundle(rows)
        return await sender.send(page)

    def _settle(self, job: _Job, attempt: Attempt) -> None:
        """Hand the outcome of one attempt to the committer, then retry, report or go on."""
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
        self._record(
            job,
            status=status,
            attempts=attempts,
            next_at=next_at,
            error=error,
            event=event,
            now=now,
            failed=verdict is Verdict.FAIL,
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
                self._done_with(job.rows)
            case Verdict.RETRY:
                log.warning("notification.retrying", **fields, retry_in_s=round(retry_in, 3))
                retried = tuple(
                    replace(r, attempts=attempts, next_attempt_at=next_at) for r in job.rows
                )
                self._retry_later(_Job(retried), retry_in)
            case Verdict.FAIL:
                for row in job.rows:
                    self._report_failure(replace(row, attempts=attempts), attempt.detail)
                self._done_with(job.rows)
            case _:
                assert_never(verdict)

    def _record(
        self,
        job: _Job,
        *,
        status: str,
        attempts: int,
        next_at: datetime | None,
        error: str | None,
        event: str,
        now: datetime,
        failed: bool,
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
        updates = tuple(OutboxUpdate(row.id, status, attempts, next_at, error) for row in job.rows)
        self._outcomes.append(_Outcome(updates, timeline, job.rows if failed else ()))
        self._uncommitted += 1
        self._update_idle()
        self._outcome_ready.set()

    # --- the committer ---

    async def _commit_outcomes(self) -> None:
        """Commit outcomes as they come: whatever waits during one commit goes in the next."""
        try:
            while True:
                if not self._outcomes:
                    self._outcome_ready.clear()
                    await self._outcome_ready.wait()
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
                except Exception:  # the rows stay pending and are resent on start
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
        self._uncommitted -= len(outcomes)
        self._update_idle()
        for service_id, record in batch.timeline:
            self._publisher.publish_events(service_id, (record,))
        for outcome in outcomes:
            for row in outcome.failed:
                self._chores.put_nowait(partial(self._check_level, row))

    def _retry_later(self, job: _Job, delay: float) -> None:
        if self._stopping:
            return  # shutting down: the row is pending in the database, retried on start
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
            self._failed_levels.put_nowait(FailedLevel(row.service_id, row.incident_id, row.step))

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
