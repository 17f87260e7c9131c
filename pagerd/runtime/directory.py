"""The directory of services, policies, teams and schedules, kept in step with the store.

The runtime reads the policy here at every step (CONTRACT §6.9), so an edit
takes effect from the next step without touching running actors. Policies,
teams and schedules are few and held in memory; services may be millions, so they
are read from the store by id when first used (see ``ServiceTable``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from pagerd.core.policy import (
    MAX_REPEAT,
    Level,
    OnCall,
    Policy,
    Roster,
    ScheduleTarget,
    TeamTarget,
)
from pagerd.core.ports import DirectoryStore, ServiceLookup
from pagerd.core.records import DeveloperRow, PolicyRow, ScheduleRow, ServiceRow, TeamRow
from pagerd.core.schedules import Override, Overrides, Rota


def team_service_id(team_id: int) -> str:
    """The service (and, unless replaced, policy) that alerts a team: ``team-{id}``."""
    return f"team-{team_id}"


def team_policy(team_id: int, team_name: str, developers: int, ack_timeout_s: float) -> Policy:
    """A team's own policy (CONTRACT §4): one level paging the rotation, repeated until
    each developer was paged once."""
    level = Level((TeamTarget(team_name),), ack_timeout_s)
    repeat = min(max(developers - 1, 0), MAX_REPEAT)
    return Policy(team_service_id(team_id), (level,), repeat)


# Rows read from the store are kept for their next use up to this many, then forgotten
# together: what is busy is read again at its next message, some microseconds each.
READ_CACHE_LIMIT = 100_000


class ServiceTable:
    """The registered services, read from the store by id on first use.

    Start-up reads no service at all: there may be millions. Rows put here (the
    API after its commit, the router's fallback before its commit) are kept; rows read
    are kept up to ``READ_CACHE_LIMIT``.
    """

    def __init__(self, lookup: ServiceLookup) -> None:
        self._lookup = lookup
        self._put: dict[str, ServiceRow] = {}
        self._read: dict[str, ServiceRow] = {}

    def get(self, service_id: str) -> ServiceRow | None:
        """The service, or None if it is not registered."""
        row = self._put.get(service_id) or self._read.get(service_id)
        if row is not None:
            return row
        row = self._lookup.get(service_id)
        if row is not None:
            if len(self._read) >= READ_CACHE_LIMIT:
                self._read.clear()
            self._read[service_id] = row
        return row

    def __contains__(self, service_id: str) -> bool:
        return self.get(service_id) is not None

    def put(self, row: ServiceRow) -> None:
        """Register or replace a service (the caller writes it to the store)."""
        self._put[row.id] = row
        self._read.pop(row.id, None)

    def using(self, policy_id: str, limit: int) -> list[str]:
        """The first ``limit`` ids, sorted, of the services escalating through ``policy_id``.

        Bounded: a policy may serve a million services, read here on the event loop.
        """
        shadowed = self._put.keys()  # what the stored rows may not say
        stored = self._lookup.ids_using(policy_id, limit + len(shadowed))
        ids = {key for key in stored if key not in shadowed}
        ids.update(key for key, row in self._put.items() if row.policy_id == policy_id)
        return sorted(ids)[:limit]

    def close(self) -> None:
        """Close the store reader; later misses raise StoreError."""
        self._lookup.close()


@dataclass(slots=True)
class Directory:
    services: ServiceTable
    policies: dict[str, PolicyRow] = field(default_factory=dict)
    teams: dict[int, TeamRow] = field(default_factory=dict)
    team_ids: dict[str, int] = field(default_factory=dict)
    developers: dict[int, list[DeveloperRow]] = field(default_factory=dict)
    # Each team's rotation by team name, as decide() reads it; kept in step with the
    # team's developers and its cursor.
    rosters: dict[str, Roster] = field(default_factory=dict)
    # Promised to writes still in flight (see reserve_team): a second create of the same
    # name is refused at once, and two writes never pick the same id.
    reserved_team_names: set[str] = field(default_factory=set)
    reserved_team_ids: set[int] = field(default_factory=set)
    reserved_developer_ids: set[int] = field(default_factory=set)
    schedules: dict[str, ScheduleRow] = field(default_factory=dict)
    overrides: dict[str, dict[int, Override]] = field(default_factory=dict)  # by schedule, id
    # Each schedule as decide() reads it: replaced whole at every change, never changed
    # in place, so a decision reads one consistent set.
    rotas: Mapping[str, Rota] = field(default_factory=dict)
    last_override_id: int = 0  # ids are handed out above it, never twice

    @classmethod
    async def load(cls, store: DirectoryStore) -> Directory:
        """Build the directory from what the store holds."""
        directory = cls(ServiceTable(await store.service_reader()))
        for policy in await store.load_policies():
            directory.policies[policy.policy.id] = policy
        for team in await store.load_teams():
            directory.put_team(team)
        developers = sorted(await store.load_developers(), key=lambda d: d.id)
        directory.add_developers(developers)
        for schedule in await store.load_schedules():
            directory.schedules[schedule.id] = schedule
            directory.overrides[schedule.id] = {}
        for row in await store.load_overrides():
            directory.overrides.setdefault(row.schedule_id, {})[row.override.id] = row.override
        directory.last_override_id = await store.last_override_id()
        directory._update_rotas(directory.schedules)
        return directory

    def close(self) -> None:
        """Release the store reader behind ``services``."""
        self.services.close()

    def put_team(self, team: TeamRow) -> None:
        self.teams[team.id] = team
        self.team_ids[team.name] = team.id
        self.developers.setdefault(team.id, [])
        self._update_roster(team.id)

    def add_developers(self, developers: Iterable[DeveloperRow]) -> None:
        """Add committed developers to their (known) teams, in rotation after the others."""
        teams: set[int] = set()
        for developer in developers:
            self.developers.setdefault(developer.team_id, []).append(developer)
            self.reserved_developer_ids.discard(developer.id)
            teams.add(developer.team_id)
        for team_id in teams:
            self._update_roster(team_id)
        self._update_rotas(s.id for s in self.schedules.values() if s.schedule.team_id in teams)

    def _update_roster(self, team_id: int) -> None:
        team = self.teams.get(team_id)
        if team is None:
            return
        on_call = tuple(OnCall(d.id, d.phone_number) for d in self.developers.get(team_id, ()))
        self.rosters[team.name] = Roster(team.id, team.name, on_call, team.cursor)

    def advance(self, roster: Roster) -> Roster:
        """A developer of the team was picked: the rotation moves on; returns it as it was.

        Synchronous, before the pick is committed, so two actors never page from the
        same position; the caller persists the cursor in the decision's transaction.
        """
        before = self.rosters[roster.team]
        self.rosters[roster.team] = roster
        team = self.teams[roster.team_id]
        self.teams[roster.team_id] = replace(team, cursor=roster.cursor)
        return before

    def give_back(self, advanced: Roster, before: Roster) -> None:
        """Undo a pick whose write failed: the rotation goes back to ``before``.

        Unless the team was picked from since: that pick's write carries the later
        cursor, and going back under it would page its developer twice.
        """
        if self.rosters.get(advanced.team) is advanced:
            self.advance(before)

    def reserve_team(self, name: str) -> int | None:
        """Reserve ``name`` and a new team id (max + 1) until ``release_team``; None if taken."""
        if name in self.team_ids or name in self.reserved_team_names:
            return None
        team_id = max((*self.teams, *self.reserved_team_ids), default=0) + 1
        self.reserved_team_names.add(name)
        self.reserved_team_ids.add(team_id)
        return team_id

    def release_team(self, name: str, team_id: int) -> None:
        """Drop a team reservation, once its write committed (after put_team) or failed."""
        self.reserved_team_names.discard(name)
        self.reserved_team_ids.discard(team_id)

    def reserve_developer_ids(self, count: int) -> list[int]:
        """Reserve ``count`` new developer ids (above every id known or reserved)."""
        known = (d.id for team in self.developers.values() for d in team)
        top = max(max(known, default=0), max(self.reserved_developer_ids, default=0))
        ids = list(range(top + 1, top + 1 + count))
        self.reserved_developer_ids.update(ids)
        return ids

    def release_developer_ids(self, ids: Iterable[int]) -> None:
        """Drop developer id reservations whose write failed."""
        self.reserved_developer_ids.difference_update(ids)

    # --- schedules ---

    def put_schedule(self, row: ScheduleRow) -> None:
        """Add or replace a committed schedule (its overrides stay)."""
        self.schedules[row.id] = row
        self.overrides.setdefault(row.id, {})
        self._update_rotas((row.id,))

    def drop_schedule(self, schedule_id: str) -> None:
        """Forget a deleted schedule and its overrides."""
        self.schedules.pop(schedule_id, None)
        self.overrides.pop(schedule_id, None)
        rotas = dict(self.rotas)
        rotas.pop(schedule_id, None)
        self.rotas = rotas

    def add_override(self, schedule_id: str, override: Override) -> None:
        """Add a committed override of a known schedule."""
        self.overrides[schedule_id][override.id] = override
        self._update_rotas((schedule_id,))

    def drop_override(self, schedule_id: str, override_id: int) -> None:
        """Forget a deleted override."""
        self.overrides.get(schedule_id, {}).pop(override_id, None)
        self._update_rotas((schedule_id,))

    def reserve_override_id(self) -> int:
        """A new override id, above every one handed out: ids grow with creation."""
        self.last_override_id += 1
        return self.last_override_id

    def policies_using(self, schedule_id: str) -> list[str]:
        """The ids, sorted, of the policies with a level paging the schedule."""
        target = ScheduleTarget(schedule_id)
        return sorted(
            row.policy.id
            for row in self.policies.values()
            if any(target in level.targets for level in row.policy.levels)
        )

    def developer(self, team_id: int, developer_id: int | None) -> DeveloperRow | None:
        """A developer of the team, or None (nobody, or not in the team)."""
        return next((d for d in self.developers.get(team_id, ()) if d.id == developer_id), None)

    def phones(self, team_id: int) -> dict[int, str]:
        """How to reach each developer of the team, by developer id."""
        return {d.id: d.phone_number for d in self.developers.get(team_id, ())}

    def _update_rotas(self, schedule_ids: Iterable[str]) -> None:
        rotas = dict(self.rotas)
        for schedule_id in schedule_ids:
            row = self.schedules[schedule_id]
            overrides = Overrides(self.overrides.get(schedule_id, {}).values())
            rotas[schedule_id] = Rota(
                schedule_id, row.schedule, overrides, self.phones(row.schedule.team_id)
            )
        self.rotas = rotas

    # --- services ---

    def service_context(self, service_id: str) -> tuple[Policy | None, float | None]:
        """The policy the service escalates through now (None if it has none) and its
        heartbeat interval (None if it expects no beat)."""
        service = self.services.get(service_id)
        if service is None:
            return None, None
        row = self.policies.get(service.policy_id)
        return (None if row is None else row.policy), service.heartbeat_s

    def policy_for(self, service_id: str) -> Policy | None:
        """The policy the service escalates through now, or None if it has none."""
        service = self.services.get(service_id)
        if service is None:
            return None
        row = self.policies.get(service.policy_id)
        return None if row is None else row.policy
