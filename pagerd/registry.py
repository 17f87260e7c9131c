"""In-memory directory of services, policies and teams, kept in step with the store.

The runtime reads the policy here at every step (CONTRACT §6.9), so an edit
takes effect from the next step without touching running actors.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pagerd.domain import Policy
from pagerd.store import DeveloperRow, PolicyRow, ServiceRow, TeamRow


@dataclass(slots=True)
class Directory:
    services: dict[str, ServiceRow] = field(default_factory=dict)
    policies: dict[str, PolicyRow] = field(default_factory=dict)
    teams: dict[int, TeamRow] = field(default_factory=dict)
    team_ids: dict[str, int] = field(default_factory=dict)
    developers: dict[int, list[DeveloperRow]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        services: list[ServiceRow],
        policies: list[PolicyRow],
        teams: list[TeamRow],
        developers: list[DeveloperRow],
    ) -> Directory:
        """Build the directory from rows loaded from the store."""
        directory = cls()
        for service in services:
            directory.services[service.id] = service
        for policy in policies:
            directory.policies[policy.policy.id] = policy
        for team in teams:
            directory.put_team(team)
        for developer in sorted(developers, key=lambda d: d.id):
            directory.developers.setdefault(developer.team_id, []).append(developer)
        return directory

    def put_team(self, team: TeamRow) -> None:
        self.teams[team.id] = team
        self.team_ids[team.name] = team.id
        self.developers.setdefault(team.id, [])

    def policy_for(self, service_id: str) -> Policy | None:
        """The policy the service escalates through now, or None if it has none."""
        service = self.services.get(service_id)
        if service is None:
            return None
        row = self.policies.get(service.policy_id)
        return None if row is None else row.policy

    def next_on_call(self, team_name: str) -> tuple[DeveloperRow, TeamRow] | None:
        """Pick the team's next developer in rotation and advance its cursor.

        Returns the developer and the team row with its new cursor (which the
        caller persists in the same transaction as the decision), or None if the
        team is unknown or has nobody in it. Synchronous, so two actors never
        pick from the same cursor position.
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
        return developer, advanced
