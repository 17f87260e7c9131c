"""Group commit: one writer task turns every unit of work waiting into one transaction.

``write()`` queues a unit and returns once it is committed. The writer takes what is
waiting (a round), merges the units into one row list per statement in arrival
order, and hands them to the store's ``transaction`` in one go: one fsync for the
lot. If that transaction fails on a unit's data (a constraint), each unit is retried
alone, so only the bad one fails; if the database itself fails, the whole round
fails and the writer carries on with the next. Any store that can run a list of
(statement, rows) in one transaction commits through here.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pagerd.core.records import StoreError, WriteBatch
from pagerd.telemetry.logs import get_logger

log = get_logger(__name__)

# A round is one transaction; this bounds its size and its time holding the write lock.
MAX_ROUND_UNITS = 10_000

Op = TypeVar("Op", bound=Hashable)  # a statement; ops sort in the order they run
Row = tuple[Any, ...]
Parts = list[tuple[Op, list[Row]]]


class TransactionError(Exception):
    """A transaction failed at ``where``; ``unit_at_fault`` when a unit's own data did it
    (a constraint, an unbindable value), rather than the database (I/O, full, locked)."""

    def __init__(self, where: str, cause: BaseException, *, unit_at_fault: bool) -> None:
        super().__init__(f"transaction failed at {where}: {cause}")
        self.unit_at_fault = unit_at_fault


@dataclass(slots=True)
class _Unit(Generic[Op]):
    batch: WriteBatch
    parts: tuple[tuple[Op, list[Row]], ...]
    done: asyncio.Future[None]
    has_late: bool


# A merged round runs op by op, so a unit's delete or update runs after every upsert or
# insert of the round. A later unit upserting a key that an earlier unit deletes or
# updates would see its order reversed, so it waits for the next round instead.
# A schedule's rotations are replaced by a delete then inserts: a second write of the same
# schedule in one round would insert beside the first, so it waits too.
def _late_keys(b: WriteBatch) -> set[tuple[str, object]]:
    return {
        *(("policy", key) for key in b.policies_deleted),
        *(("team", team) for team, _ in b.team_cursors),
        *(("outbox", u.id) for u in b.outbox_updates),
        *(("schedule", key) for key in b.schedules_deleted),
        *(("schedule", s.id) for s in b.schedules),
        *(("override", key) for _, key in b.overrides_deleted),
    }


def _has_late(b: WriteBatch) -> bool:
    return bool(
        b.policies_deleted
        or b.team_cursors
        or b.outbox_updates
        or b.schedules_deleted
        or b.schedules
        or b.overrides_deleted
    )


def _early_keys(b: WriteBatch) -> Iterator[tuple[str, object]]:
    yield from (("service", s.id) for s in b.services)
    yield from (("policy", p.policy.id) for p in b.policies)
    yield from (("team", t.id) for t in b.teams)
    yield from (("outbox", o.id) for o in b.outbox)
    yield from (("schedule", s.id) for s in b.schedules)
    yield from (("schedule", o.schedule_id) for o in b.overrides)
    yield from (("override", o.override.id) for o in b.overrides)


def _merge(units: Sequence[_Unit[Op]], order: Callable[[Op], Any]) -> Parts[Op]:
    """One row list per op, each in arrival order, the ops in execution order."""
    if len(units) == 1:
        return list(units[0].parts)
    merged: dict[Op, list[Row]] = {}
    for unit in units:
        for op, rows in unit.parts:
            if op in merged:
                merged[op].extend(rows)
            else:
                merged[op] = list(rows)  # a copy: the unit's own rows serve a retry alone
    return [(op, merged[op]) for op in sorted(merged, key=order)]


class GroupCommit(Generic[Op]):
    """The writer task of one store; ``close()`` commits what is queued, then stops it."""

    def __init__(
        self,
        transaction: Callable[[Parts[Op]], Awaitable[None]],
        *,
        order: Callable[[Op], Any],
        max_round_units: int = MAX_ROUND_UNITS,
    ) -> None:
        self._transaction = transaction
        self._order = order
        self._max_round_units = max_round_units
        self._pending: deque[_Unit[Op]] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._commit_callbacks: list[Callable[[int, float], None]] = []
        # Why the last write failed, until one commits again (readiness reports it).
        self.write_error: str | None = None
        self._loop = asyncio.get_running_loop()
        self._writer = asyncio.create_task(self._write_loop(), name="pagerd[store-writer]")

    def on_commit(self, callback: Callable[[int, float], None]) -> None:
        """Call ``callback(units, seconds)`` after each commit."""
        self._commit_callbacks.append(callback)

    async def write(self, batch: WriteBatch, parts: tuple[tuple[Op, list[Row]], ...]) -> None:
        """Commit ``batch`` (as ``parts``) with whatever else is waiting; return once committed."""
        if self._closing or self._writer.done():
            raise StoreError("the store is closed")
        has_late = _has_late(batch)
        done: asyncio.Future[None] = self._loop.create_future()
        self._pending.append(_Unit(batch, parts, done, has_late))
        self._wakeup.set()
        # A cancelled caller cancels only its wait: the unit stays queued and commits.
        await done

    async def close(self) -> None:
        """Commit what is queued and stop the writer."""
        self._closing = True
        self._wakeup.set()
        try:
            await self._writer
        finally:
            # Only if the writer was cancelled is anything left: its waiters must not hang.
            self._fail(self._pending, StoreError("the store was closed before this write"))
            self._pending.clear()

    async def _write_loop(self) -> None:
        while True:
            if self._pending:
                units = self._take_round()
                try:
                    await self._commit(units)
                except Exception as error:
                    log.exception("store.writer_failed", units=len(units))
                    self.write_error = str(error)
                    self._fail(units, error)
                except BaseException:
                    self._fail(units, StoreError("the store writer was stopped"))
                    raise
            elif self._closing:
                return
            else:
                self._wakeup.clear()
                await self._wakeup.wait()

    def _take_round(self) -> list[_Unit[Op]]:
        first = self._pending.popleft()
        units = [first]
        late = _late_keys(first.batch) if first.has_late else set()
        while self._pending and len(units) < self._max_round_units:
            unit = self._pending[0]
            if late and not late.isdisjoint(_early_keys(unit.batch)):
                break  # it opens the next round
            units.append(self._pending.popleft())
            if unit.has_late:
                late |= _late_keys(unit.batch)
        return units

    async def _commit(self, units: list[_Unit[Op]]) -> None:
        started = time.perf_counter()
        try:
            await self._transaction(_merge(units, self._order))
        except TransactionError as error:
            if len(units) > 1 and error.unit_at_fault:
                await self._commit_one_by_one(units)
                return
            log.error("store.commit_failed", units=len(units), error=str(error))  # noqa: TRY400
            self.write_error = str(error)
            self._fail(units, error)
            return
        self._committed(units, started)

    async def _commit_one_by_one(self, units: list[_Unit[Op]]) -> None:
        for index, unit in enumerate(units):
            started = time.perf_counter()
            try:
                await self._transaction(list(unit.parts))
            except TransactionError as error:
                log.warning("store.write_refused", error=str(error))
                if error.unit_at_fault:
                    self._fail([unit], error)
                    continue
                self.write_error = str(error)
                self._fail(units[index:], error)
                return
            self._committed([unit], started)

    def _committed(self, units: list[_Unit[Op]], started: float) -> None:
        seconds = time.perf_counter() - started
        self.write_error = None
        for unit in units:
            if not unit.done.done():
                unit.done.set_result(None)
        for callback in self._commit_callbacks:
            try:
                callback(len(units), seconds)
            except Exception:
                log.exception("store.on_commit_failed")  # a metric must not stop the writer

    @staticmethod
    def _fail(units: Iterable[_Unit[Op]], error: Exception) -> None:
        for unit in units:
            if not unit.done.done():
                unit.done.set_exception(StoreError(str(error)))
