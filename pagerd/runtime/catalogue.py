"""The catalogue: teams and their developers, escalation policies and services.

Every change is checked, written to the store, and only then applied to the
directory that actors read at every step, so an edit takes effect from the next
step. Changes take one lock, so that a check (a policy in use, a team's size) still
holds when its write commits. The API, the config file (at start-up) and the
command line all change the catalogue through here.
"""

from __future__ import annotations

import asyncio
import enum
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from pagerd.core.policy import Policy, ScheduleTarget
from pagerd.core.ports import MetaStore, Store
from pagerd.core.records import (
    DeveloperRow,
    PolicyRow,
    ScheduleRow,
    ServiceRow,
    StoreError,
    TeamRow,
    WriteBatch,
)
from pagerd.core.schedules import Rotation, Schedule
from pagerd.runtime.directory import Directory, team_policy, team_service_id
from pagerd.runtime.refusals import (
    MANAGED,
    ConflictError,
    InvalidError,
    NotFoundError,
    NotSavedError,
)
from pagerd.runtime.schedule_book import ScheduleBook

log = structlog.get_logger("pagerd.catalogue")

NAMED_USERS = 10  # services a refusal names when a policy in use cannot be deleted
_TEAM_SERVICE = re.compile(r"team-([1-9][0-9]*)")


class Keep(enum.Enum):
    """A value left as it is."""

    KEEP = "keep"


KEEP = Keep.KEEP


def _custom_policy_key(team_id: int) -> str:
    # Set when a policy replaces a team's own (team-{id}): from then on, adding a
    # developer no longer rewrites it.
    return f"team_policy_custom:{team_id}"


# --- declared in the config file -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeclaredTeam:
    name: str
    developers: tuple[tuple[str, str], ...]  # (name, phone number), in rotation order


@dataclass(frozen=True, slots=True)
class DeclaredRotation:
    start: datetime  # local wall-clock time
    shift_s: int
    developers: tuple[str, ...]  # names of the team's developers, in turn order


@dataclass(frozen=True, slots=True)
class DeclaredSchedule:
    id: str
    team: str  # a declared team's name
    time_zone: str
    rotations: tuple[DeclaredRotation, ...]
    notify_handover: bool = False


@dataclass(frozen=True, slots=True)
class Declared:
    """The objects the config file declares: read-only through the API."""

    teams: tuple[DeclaredTeam, ...] = ()
    policies: tuple[Policy, ...] = ()
    services: tuple[ServiceRow, ...] = ()
    schedules: tuple[DeclaredSchedule, ...] = ()
    ack_timeout_s: float = 900.0  # of the teams' own policies


async def apply_declared(store: Store, declared: Declared) -> None:
    """Write the declared objects into the store, keeping ids and rotation cursors."""
    existing = await store.load_teams()
    developers = await store.load_developers()
    teams = {team.name: team for team in existing}
    next_team_id = max((t.id for t in existing), default=0) + 1
    next_developer_id = max((d.id for d in developers), default=0) + 1
    known_developers = {(d.team_id, d.name): d for d in developers}

    team_rows: list[TeamRow] = []
    developer_rows: list[DeveloperRow] = []
    for team in declared.teams:
        stored = teams.get(team.name)
        if stored is None:
            team_id, next_team_id = next_team_id, next_team_id + 1
            team_rows.append(TeamRow(team_id, team.name, managed=True, cursor=0))
        else:
            team_id = stored.id
            team_rows.append(TeamRow(team_id, team.name, managed=True, cursor=stored.cursor))
        for name, phone in team.developers:
            known = known_developers.get((team_id, name))
            if known is None:
                dev_id, next_developer_id = next_developer_id, next_developer_id + 1
            else:
                dev_id = known.id
            developer_rows.append(DeveloperRow(dev_id, team_id, name, phone))

    # A declared team's own service and policy are declared too: read-only, and
    # brought up to date with the file's developers at every start.
    sizes = {team.name: len(team.developers) for team in declared.teams}
    team_policies = [
        team_policy(t.id, t.name, sizes[t.name], declared.ack_timeout_s) for t in team_rows
    ]
    services = [
        *declared.services,
        *(
            ServiceRow(p.id, t.name, p.id, managed=True)
            for t, p in zip(team_rows, team_policies, strict=True)
        ),
    ]
    policies = (*declared.policies, *team_policies)
    schedules = _declared_schedules(declared.schedules, team_rows, developer_rows)
    await store.write(
        WriteBatch(
            teams=tuple(team_rows),
            developers=tuple(developer_rows),
            policies=tuple(PolicyRow(p, managed=True) for p in policies),
            services=tuple(services),
            schedules=schedules,
        )
    )


def _declared_schedules(
    declared: Iterable[DeclaredSchedule], teams: list[TeamRow], developers: list[DeveloperRow]
) -> tuple[ScheduleRow, ...]:
    """The declared schedules, their teams and developers named by id (load_config has
    checked that each names a declared team and its developers)."""
    team_ids = {team.name: team.id for team in teams}
    developer_ids = {(d.team_id, d.name): d.id for d in developers}
    rows = []
    for entry in declared:
        team_id = team_ids[entry.team]
        rotations = tuple(
            Rotation(
                r.start, r.shift_s, tuple(developer_ids[(team_id, name)] for name in r.developers)
            )
            for r in entry.rotations
        )
        schedule = Schedule(team_id, entry.time_zone, rotations)
        rows.append(ScheduleRow(entry.id, schedule, entry.notify_handover, managed=True))
    return tuple(rows)


# --- the catalogue -------------------------------------------------------------------------


@dataclass(slots=True)
class Catalogue:
    """Reads and changes of teams, policies and services, in step with the store."""

    store: MetaStore
    directory: Directory
    default_ack_timeout_s: float = 900.0
    fallback_policy: str = ""
    _writes: asyncio.Lock = field(default_factory=asyncio.Lock)
    schedules: ScheduleBook = field(init=False)

    def __post_init__(self) -> None:
        # One lock for both: a policy that pages a schedule and the schedule's deletion
        # are checked and written one after the other.
        self.schedules = ScheduleBook(self.store, self.directory, self._writes)

    # --- teams ---

    def teams(self) -> list[TeamRow]:
        """Every team, by id."""
        return sorted(self.directory.teams.values(), key=lambda t: t.id)

    def team(self, team_id: int) -> TeamRow:
        """The team; NotFoundError if there is none."""
        team = self.directory.teams.get(team_id)
        if team is None:
            raise NotFoundError(f"no team with id {team_id}")
        return team

    def developers(self, team_id: int) -> list[DeveloperRow]:
        """The team's developers, in rotation order."""
        return list(self.directory.developers.get(team_id, ()))

    def developer_names(self, ids: Iterable[int | None]) -> dict[int, str]:
        """The names of the developers among ``ids`` that are known, by id."""
        wanted = {i for i in ids if i is not None}
        if not wanted:
            return {}
        return {
            d.id: d.name
            for team in self.directory.developers.values()
            for d in team
            if d.id in wanted
        }

    def refuse_managed_team(self, team_id: int) -> None:
        """ConflictError if the team is declared in the config file."""
        team = self.team(team_id)
        if team.managed:
            raise ConflictError(f"team {team.name!r} is {MANAGED}")

    def team_name(self, *, team_id: int | None, team: str | None, field: str = "team") -> str:
        """The name of the team a target names by id or by name; InvalidError if none."""
        if team_id is not None:
            row = self.directory.teams.get(team_id)
            if row is None:
                raise InvalidError(f"{field}_id", f"no team with id {team_id}")
            if team is not None and team != row.name:
                raise InvalidError(field, f"is not the name of team {team_id} ({row.name!r})")
            return row.name
        if team is None:
            raise InvalidError(field, "is required: name the team by team or team_id")
        if team not in self.directory.team_ids:
            raise InvalidError(field, f"no team named {team!r}")
        return team

    def team_id_of(self, name: str) -> int | None:
        return self.directory.team_ids.get(name)

    async def create_team(
        self, name: str, developers: Sequence[tuple[str, str]]
    ) -> tuple[TeamRow, tuple[DeveloperRow, ...]]:
        """A new team with its developers (name, phone), and its own service and policy."""
        directory = self.directory
        # Reserved before any await: a second create of the same name is refused at once.
        team_id = directory.reserve_team(name)
        if team_id is None:
            raise ConflictError(f"team name {name!r} is taken")
        ids = directory.reserve_developer_ids(len(developers))
        try:
            team = TeamRow(team_id, name, managed=False, cursor=0)
            rows = tuple(
                DeveloperRow(i, team_id, d_name, phone)
                for i, (d_name, phone) in zip(ids, developers, strict=True)
            )
            async with self._writes:
                services, policies = await self._team_service(team, len(rows))
                await self._write(
                    WriteBatch(teams=(team,), developers=rows, services=services, policies=policies)
                )
                directory.put_team(team)
                directory.add_developers(rows)
                self._apply(services, policies)
        finally:
            directory.release_team(name, team_id)
            directory.release_developer_ids(ids)
        log.info("team.created", team_id=team_id, developers=len(rows))
        return team, rows

    async def add_developer(self, team_id: int, name: str, phone_number: str) -> DeveloperRow:
        """A developer joins the team, last in its rotation."""
        self.refuse_managed_team(team_id)
        team = self.team(team_id)
        directory = self.directory
        async with self._writes:
            (developer_id,) = directory.reserve_developer_ids(1)
            try:
                developer = DeveloperRow(developer_id, team.id, name, phone_number)
                count = len(directory.developers.get(team.id, ())) + 1
                services, policies = await self._team_service(team, count)
                await self._write(
                    WriteBatch(developers=(developer,), services=services, policies=policies)
                )
                directory.add_developers((developer,))
                self._apply(services, policies)
            finally:
                directory.release_developer_ids((developer_id,))
        log.info("developer.added", team_id=team.id, developer_id=developer_id)
        return developer

    async def team_service(self, team_id: int) -> str:
        """The id of the service that alerts the team, made now if the team lacks one."""
        team = self.team(team_id)
        service_id = team_service_id(team.id)
        if self.directory.policy_for(service_id) is None:
            async with self._writes:
                count = len(self.directory.developers.get(team.id, ()))
                services, policies = await self._team_service(team, count)
                if services or policies:
                    await self._write(WriteBatch(services=services, policies=policies))
                    self._apply(services, policies)
        return service_id

    async def _team_service(
        self, team: TeamRow, developers: int
    ) -> tuple[tuple[ServiceRow, ...], tuple[PolicyRow, ...]]:
        """The rows that make or bring up to date the team's own service and policy."""
        directory = self.directory
        service_id = team_service_id(team.id)
        services: tuple[ServiceRow, ...] = ()
        if service_id not in directory.services:
            services = (ServiceRow(service_id, team.name, service_id, managed=False),)
        derived = team_policy(team.id, team.name, developers, self.default_ack_timeout_s)
        existing = directory.policies.get(service_id)
        if existing is not None and (
            existing.managed
            or existing.policy == derived
            or await self._read_meta(_custom_policy_key(team.id)) is not None
        ):
            return services, ()
        return services, (PolicyRow(derived, managed=False),)

    # --- policies ---

    def policies(self) -> list[PolicyRow]:
        """Every policy, by id."""
        return sorted(self.directory.policies.values(), key=lambda r: r.policy.id)

    def policy(self, policy_id: str) -> PolicyRow:
        """The policy; NotFoundError if there is none."""
        row = self.directory.policies.get(policy_id)
        if row is None:
            raise NotFoundError(f"no policy {policy_id!r}")
        return row

    def refuse_managed_policy(self, policy_id: str) -> None:
        """ConflictError if the policy is declared in the config file."""
        _refuse_managed(self.directory.policies.get(policy_id), f"policy {policy_id!r}")

    async def put_policy(self, policy: Policy) -> bool:
        """Create or replace a policy; True if it was created."""
        team = _TEAM_SERVICE.fullmatch(policy.id)
        meta = () if team is None else ((_custom_policy_key(int(team.group(1))), "1"),)
        async with self._writes:
            existing = self.directory.policies.get(policy.id)
            _refuse_managed(existing, f"policy {policy.id!r}")
            self._check_schedules(policy)
            row = PolicyRow(policy, managed=False)
            await self._write(WriteBatch(policies=(row,), meta=meta))
            self.directory.policies[policy.id] = row
        log.info("policy.saved", policy_id=policy.id, created=existing is None)
        return existing is None

    def _check_schedules(self, policy: Policy) -> None:
        """InvalidError naming the first schedule target whose schedule does not exist."""
        for i, level in enumerate(policy.levels):
            for j, target in enumerate(level.targets):
                if (
                    isinstance(target, ScheduleTarget)
                    and target.schedule not in self.directory.schedules
                ):
                    where = f"levels[{i}].targets[{j}].schedule"
                    raise InvalidError(where, f"no schedule {target.schedule!r}")

    async def delete_policy(self, policy_id: str) -> None:
        """Delete a policy no service uses; ConflictError naming the first users if any do."""
        async with self._writes:
            row = self.policy(policy_id)
            _refuse_managed(row, f"policy {policy_id!r}")
            users = self.directory.services.using(policy_id, limit=NAMED_USERS + 1)
            if users:
                named = ", ".join(users[:NAMED_USERS])
                more = " and more" if len(users) > NAMED_USERS else ""
                raise ConflictError(f"policy {policy_id!r} is in use by services {named}{more}")
            if policy_id == self.fallback_policy:
                raise ConflictError(f"policy {policy_id!r} is [routing] fallback_policy")
            await self._write(WriteBatch(policies_deleted=(policy_id,)))
            del self.directory.policies[policy_id]
        log.info("policy.deleted", policy_id=policy_id)

    # --- services ---

    def service_name(self, service_id: str) -> str:
        """The service's name, or its id if it is not registered (any more)."""
        row = self.directory.services.get(service_id)
        return service_id if row is None else row.name

    def service(self, service_id: str) -> ServiceRow:
        """The service; NotFoundError if there is none."""
        row = self.directory.services.get(service_id)
        if row is None:
            raise NotFoundError(f"no service {service_id!r}")
        return row

    def refuse_managed_service(self, service_id: str) -> None:
        """ConflictError if the service is declared in the config file."""
        _refuse_managed(self.directory.services.get(service_id), f"service {service_id!r}")

    async def put_service(
        self,
        service_id: str,
        name: str | None,
        policy_id: str,
        heartbeat_s: float | Keep | None = KEEP,
    ) -> tuple[ServiceRow, bool]:
        """Create or change a service; the row, and True if it was created.

        ``heartbeat_s`` KEEP leaves the service's heartbeat interval as it is.
        """
        async with self._writes:
            existing = self.directory.services.get(service_id)
            _refuse_managed(existing, f"service {service_id!r}")
            if policy_id not in self.directory.policies:
                raise InvalidError("policy_id", f"no policy {policy_id!r}")
            name = name or (service_id if existing is None else existing.name)
            if isinstance(heartbeat_s, Keep):
                heartbeat_s = None if existing is None else existing.heartbeat_s
            row = ServiceRow(service_id, name, policy_id, managed=False, heartbeat_s=heartbeat_s)
            await self._write(WriteBatch(services=(row,)))
            self.directory.services.put(row)
        log.info("service.saved", service_id=service_id, created=existing is None)
        return row, existing is None

    # --- writing ---

    async def _write(self, batch: WriteBatch) -> None:
        try:
            await self.store.write(batch)
        except StoreError as error:
            log.error("catalogue.write_failed", error=str(error))  # noqa: TRY400 - no traceback
            raise NotSavedError("the change was not saved; try again") from None

    async def _read_meta(self, key: str) -> str | None:
        try:
            return await self.store.get_meta(key)
        except StoreError as error:
            log.error("catalogue.read_failed", error=str(error))  # noqa: TRY400 - no traceback
            raise NotSavedError("the database could not be read; try again") from None

    def _apply(self, services: Iterable[ServiceRow], policies: Iterable[PolicyRow]) -> None:
        for policy in policies:
            self.directory.policies[policy.policy.id] = policy
        for service in services:
            self.directory.services.put(service)


def _refuse_managed(row: PolicyRow | ServiceRow | None, what: str) -> None:
    if row is not None and row.managed:
        raise ConflictError(f"{what} is {MANAGED}")
