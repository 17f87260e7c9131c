"""Schedules and their overrides: checked, written to the store, then applied.

Part of the catalogue (it shares the catalogue's lock, so that "a schedule no policy
pages" still holds when its deletion commits). A schedule declared in the config file
is read-only here, but its overrides are not: an override is the day-to-day change
("Bob covers for Alice on Tuesday") that PagerDuty and GoAlert users make in the tool,
not in the file. After each committed change, ``changed`` is told the schedule's id,
so that its hand-overs are announced anew.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from pagerd.core.policy import DomainError
from pagerd.core.ports import Writer
from pagerd.core.records import (
    DeveloperRow,
    OverrideRow,
    ScheduleRow,
    StoreError,
    WriteBatch,
)
from pagerd.core.schedules import OnCall, Override, Schedule
from pagerd.runtime.directory import Directory
from pagerd.runtime.refusals import (
    MANAGED,
    ConflictError,
    InvalidError,
    NotFoundError,
    NotSavedError,
)

log = structlog.get_logger("pagerd.catalogue")


def _unchanged(_: str) -> None:
    """Nobody to tell (no hand-overs announced): tests and tools."""


@dataclass(slots=True)
class ScheduleBook:
    """Reads and changes of schedules and overrides, in step with the store."""

    store: Writer
    directory: Directory
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: Callable[[str], None] = _unchanged

    # --- reads ---

    def schedules(self) -> list[ScheduleRow]:
        """Every schedule, by id."""
        return sorted(self.directory.schedules.values(), key=lambda s: s.id)

    def schedule(self, schedule_id: str) -> ScheduleRow:
        """The schedule; NotFoundError if there is none."""
        row = self.directory.schedules.get(schedule_id)
        if row is None:
            raise NotFoundError(f"no schedule {schedule_id!r}")
        return row

    def overrides(self, schedule_id: str) -> list[Override]:
        """The schedule's overrides, by id: in the order they were made."""
        return sorted(self.directory.overrides.get(schedule_id, {}).values(), key=lambda o: o.id)

    def on_call(self, schedule_id: str, at: datetime) -> tuple[OnCall, DeveloperRow | None]:
        """Who is on call at ``at`` (aware), and that developer as the team knows them."""
        self.schedule(schedule_id)
        answer = self.directory.rotas[schedule_id].on_call(at)
        return answer, self.developer(schedule_id, answer.developer_id)

    def developer(self, schedule_id: str, developer_id: int | None) -> DeveloperRow | None:
        """A developer of the schedule's team, or None (nobody, or not in the team)."""
        if developer_id is None:
            return None
        team_id = self.schedule(schedule_id).schedule.team_id
        return next(
            (d for d in self.directory.developers.get(team_id, ()) if d.id == developer_id), None
        )

    # --- checks ---

    def problems(
        self, team_id: int, rotations: Sequence[Sequence[int]]
    ) -> Iterator[tuple[str, str]]:
        """(field, problem) for a team that does not exist, and for each developer of a
        rotation (``rotations``: each one's developer ids) who is not in the team."""
        if team_id not in self.directory.teams:
            yield "team_id", f"no team with id {team_id}"
            return
        members = self.directory.phones(team_id)
        for i, developer_ids in enumerate(rotations):
            for j, developer_id in enumerate(developer_ids):
                if developer_id not in members:
                    yield (
                        f"rotations[{i}].developer_ids[{j}]",
                        f"developer {developer_id} is not in team {team_id}",
                    )

    def refuse_managed(self, schedule_id: str) -> None:
        """ConflictError if the schedule is declared in the config file."""
        row = self.directory.schedules.get(schedule_id)
        if row is not None and row.managed:
            raise ConflictError(f"schedule {schedule_id!r} is {MANAGED}")

    # --- changes ---

    async def put(
        self, schedule_id: str, schedule: Schedule, *, notify_handover: bool
    ) -> tuple[ScheduleRow, bool]:
        """Create or replace a schedule (its overrides stay); the row, and True if created."""
        ids = [r.developer_ids for r in schedule.rotations]
        for where, problem in self.problems(schedule.team_id, ids):
            raise InvalidError(where, problem)
        async with self.lock:
            self.refuse_managed(schedule_id)
            created = schedule_id not in self.directory.schedules
            row = ScheduleRow(schedule_id, schedule, notify_handover, managed=False)
            await self._write(WriteBatch(schedules=(row,)))
            self.directory.put_schedule(row)
        log.info("schedule.saved", schedule_id=schedule_id, created=created)
        self.changed(schedule_id)
        return row, created

    async def delete(self, schedule_id: str) -> None:
        """Delete a schedule no policy pages, with its overrides; ConflictError naming the
        policies that do."""
        async with self.lock:
            self.schedule(schedule_id)
            self.refuse_managed(schedule_id)
            users = self.directory.policies_using(schedule_id)
            if users:
                named = ", ".join(users)
                raise ConflictError(f"schedule {schedule_id!r} is in use by policies {named}")
            await self._write(WriteBatch(schedules_deleted=(schedule_id,)))
            self.directory.drop_schedule(schedule_id)
        log.info("schedule.deleted", schedule_id=schedule_id)
        self.changed(schedule_id)

    async def add_override(
        self, schedule_id: str, developer_id: int, start: datetime, end: datetime
    ) -> Override:
        """A new override: during [start, end) ``developer_id`` is on call. Its id is above
        every id handed out before, so where overrides overlap, it wins."""
        team_id = self.schedule(schedule_id).schedule.team_id
        if developer_id not in self.directory.phones(team_id):
            raise InvalidError("developer_id", f"developer {developer_id} is not in team {team_id}")
        async with self.lock:
            self.schedule(schedule_id)  # not deleted meanwhile
            try:
                override = Override(self.directory.reserve_override_id(), developer_id, start, end)
            except DomainError as error:
                raise InvalidError(error.field, error.problem) from None
            await self._write(WriteBatch(overrides=(OverrideRow(schedule_id, override),)))
            self.directory.add_override(schedule_id, override)
        log.info(
            "schedule.override_added",
            schedule_id=schedule_id,
            override_id=override.id,
            developer_id=developer_id,
        )
        self.changed(schedule_id)
        return override

    async def delete_override(self, schedule_id: str, override_id: int) -> None:
        """Delete an override; NotFoundError if the schedule has no such override."""
        async with self.lock:
            self.schedule(schedule_id)
            if override_id not in self.directory.overrides.get(schedule_id, {}):
                raise NotFoundError(f"schedule {schedule_id!r} has no override {override_id}")
            await self._write(WriteBatch(overrides_deleted=((schedule_id, override_id),)))
            self.directory.drop_override(schedule_id, override_id)
        log.info("schedule.override_deleted", schedule_id=schedule_id, override_id=override_id)
        self.changed(schedule_id)

    async def _write(self, batch: WriteBatch) -> None:
        try:
            await self.store.write(batch)
        except StoreError as error:
            log.error("catalogue.write_failed", error=str(error))  # noqa: TRY400 - no traceback
            raise NotSavedError("the change was not saved; try again") from None
