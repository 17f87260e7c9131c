"""The directory of services, policies and teams, kept in step with the store.

The runtime reads the policy here at every step (CONTRACT §6.9), so an edit
takes effect from the next step without touching running actors. Policies and
teams are few and held in memory; services may be millions, so they are read
from the store by id when first used (see ``ServiceTable``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from pagerd.core.policy import MAX_REPEAT, Level, Policy, TeamTarget
from pagerd.core.ports import DirectoryStore, ServiceLookup
from pagerd.core.records import DeveloperRow, PolicyRow, ServiceRow, TeamRow


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

    Start-up reads no service at all (a million rows took seconds). Rows put here (the
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
    # Promised to writes still in flight (see reserve_team): a second create of the same
    # name is refused at once, and two writes never pick the same id.
    reserved_team_names: set[str] = field(default_factory=set)
    reserved_team_ids: set[int] = field(default_factory=set)
    reserved_developer_ids: set[int] = field(default_factory=set)

    @classmethod
    async def load(cls, store: DirectoryStore) -> Directory:
        """Build the directory from what the store holds."""
        directory = cls(ServiceTable(await store.service_reader()))
        for policy in await store.load_policies():
            directory.policies[policy.policy.id] = policy
        for team in await store.load_teams():
            directory.put_team(team)
        for developer in sorted(await store.load_developers(), key=lambda d: d.id):
            directory.developers.setdefault(developer.team_id, []).append(developer)
        return directory

    def close(self) -> None:
        """Release the store reader behind ``services``."""
        self.services.close()

    def put_team(self, team: TeamRow) -> None:
        self.teams[team.id] = team
        self.team_ids[team.name] = team.id
        self.developers.setdefault(team.id, [])

    def add_developers(self, developers: Iterable[DeveloperRow]) -> None:
        """Add committed developers to their (known) teams, in rotation after the others."""
        for developer in developers:
            self.developers.setdefault(developer.team_id, []).append(developer)
            self.reserved_developer_ids.discard(developer.id)

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

    def policy_for(self, service_id: str) -> Policy | None:
        """The policy the service escalates through now, or None if it has none."""
        service = self.services.get(service_id)
        if service is None:
            return None
        row = self.policies.get(service.policy_id)
        return None if row is None else row.policy

    def give_back(self, advanced: TeamRow, before: TeamRow) -> None:
        """Undo picks whose write failed: the team's cursor goes back to ``before``.

        Unless the team was picked from since: that pick's write carries the later
        cursor, and going back under it would page its developer twice.
        """
        if self.teams.get(advanced.id) is advanced:
            self.teams[advanced.id] = before

    def next_on_call(self, team_name: str) -> tuple[DeveloperRow, TeamRow, TeamRow] | None:
        """Pick the team's next developer in rotation and advance its cursor.

        Returns the developer, the team row with its new cursor (which the caller
        persists in the same transaction as the decision) and the row as it was (for
        ``give_back``), or None if the team is unknown or has nobody in it.
        Synchronous, so two actors never pick from the same cursor position.
        """
        team_id = self.team_ids.get(team_name)
        if team_id is None:
            return None
        developers = self.developers.get(team_id, [])
        if not developers:
            return None
        team = self.teams[team_id]
        developer = developers[team.cursor % len(developers)]
        advanced = replace(team, cursor=(team.cursor + 1) % len(developers))
        self.teams[team_id] = advanced
        return developer, advanced, team
