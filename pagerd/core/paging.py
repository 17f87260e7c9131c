"""Paging one level of an incident: whom each target names at this moment, and what follows.

Pure, like the rest of the core. A team target pages the developer whose turn it is
(and the team's rotation moves on); a schedule target pages whoever is on call at the
moment of the page, so a hand-over between two levels pages the new person at the
next one. A level that reaches nobody is passed at once, as when every page of a level
failed, until a level reaches someone or the policy is run through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import assert_never

from msgspec.structs import replace

from pagerd.core.policy import (
    EmailTarget,
    Policy,
    Roster,
    ScheduleTarget,
    SmsTarget,
    Target,
    TeamTarget,
    WebhookTarget,
)
from pagerd.core.schedules import Rota
from pagerd.core.values import (
    AdvanceRotation,
    ArmTimer,
    Effect,
    Incident,
    Notify,
    RecordTimeline,
)

NO_ROSTERS: Mapping[str, Roster] = {}
NO_ROTAS: Mapping[str, Rota] = {}


def next_position(incident: Incident, policy: Policy) -> tuple[int, int] | None:
    """(level index, round) after the incident's level; None after the last round (§6.4)."""
    if incident.level_index + 1 < len(policy.levels):
        return incident.level_index + 1, incident.round
    if incident.round < policy.repeat:
        return 0, incident.round + 1
    return None


def exhausted(incident: Incident) -> Incident:
    """The incident after the last level with no round left."""
    # Nothing more is sent, the incident stays open and triggered, and no timer is armed
    # (CONTRACT §6.4).
    return replace(incident, ack_deadline=None, step=incident.step + 1)


def escalated(
    incident: Incident, position: tuple[int, int], now: datetime, why: str | None
) -> RecordTimeline:
    """The timeline event of an escalation from the incident's level to ``position``."""
    detail: dict[str, str | int | None] = {
        "from_level": incident.level,
        "level": position[0] + 1,
        "round": position[1] + 1,
    }
    if why is not None:
        detail["reason"] = why
    return RecordTimeline(incident.id, "incident.escalated", now, detail)


@dataclass(frozen=True, slots=True)
class Paging:
    """What paging a level of one service's incident needs to know, at one moment."""

    service_id: str
    policy: Policy
    now: datetime
    rosters: Mapping[str, Roster]
    rotas: Mapping[str, Rota]

    def page(
        self, incident: Incident, position: tuple[int, int], step: int
    ) -> tuple[Incident, list[Effect]]:
        """Page the level at ``position`` (level index, round) and arm its timer.

        A level with nobody to page is passed at once, as when every page of a level
        failed, until a level reaches someone or the policy is run through.
        """
        effects: list[Effect] = []
        while True:
            paged, reached = self._page_level(incident, position, step, effects)
            if reached:
                return paged, effects
            position_after = next_position(paged, self.policy)
            if position_after is None:
                return exhausted(paged), effects
            why = f"nobody to page at level {position[0] + 1}"
            effects.append(escalated(paged, position_after, self.now, why))
            incident, position, step = paged, position_after, step + 1

    def _page_level(
        self, incident: Incident, position: tuple[int, int], step: int, effects: list[Effect]
    ) -> tuple[Incident, bool]:
        """Notify each distinct target of a level once, appending to ``effects``; arm the
        level's timer if anyone could be paged. Returns the incident and whether anyone was."""
        level_index, round_ = position
        level = self.policy.levels[level_index]
        deadline = self.now + timedelta(seconds=level.ack_timeout_s)
        reached = False
        for index, target in enumerate(level.distinct_targets()):
            notify, advanced = self._notify(
                incident, f"{incident.id}-{step}-{index}", step, level_index + 1, target
            )
            effects.append(notify)
            if advanced is not None:
                effects.append(AdvanceRotation(advanced))
            if notify.reaches_someone:
                reached = True
                continue
            kind, why = (
                ("notification.failed", notify.failure)
                if notify.failure is not None
                else ("notification.skipped", notify.skipped)
            )
            detail: dict[str, str | int | None] = {
                "notification_id": notify.notification_id,
                "channel": notify.channel,
                "level": notify.level,
                "error" if notify.failure is not None else "reason": why,
            }
            effects.append(RecordTimeline(incident.id, kind, self.now, detail))
        paged = replace(
            incident,
            level_index=level_index,
            round=round_,
            step=step,
            ack_deadline=deadline if reached else None,
        )
        if reached:
            effects.append(ArmTimer(incident.id, step, deadline))
        return paged, reached

    def _notify(
        self, incident: Incident, notification_id: str, step: int, level: int, target: Target
    ) -> tuple[Notify, Roster | None]:
        """The page of one target, and the team's rotation after it if a developer was picked."""
        developer_id: int | None = None
        failure: str | None = None
        skipped: str | None = None
        advanced: Roster | None = None
        match target:
            case SmsTarget(phone_number=phone):
                channel, recipient = "sms", phone
            case EmailTarget(address=address):
                channel, recipient = "email", address
            case WebhookTarget(url=url):
                channel, recipient = "webhook", url
            case TeamTarget(team=team):
                channel, recipient = "sms", f"team:{team}"
                roster = self.rosters.get(team)
                picked = None if roster is None else roster.next_up()
                if picked is None:
                    failure = f"team {team!r} has nobody to page"
                else:
                    developer, advanced = picked
                    recipient, developer_id = developer.phone_number, developer.developer_id
            case ScheduleTarget(schedule=schedule_id):
                channel, recipient = "sms", f"schedule:{schedule_id}"
                rota = self.rotas.get(schedule_id)
                if rota is None:
                    failure = f"schedule {schedule_id!r} does not exist"
                else:
                    developer_id, number, why = rota.reach(self.now)
                    if number is not None:
                        recipient = number
                    elif developer_id is None:
                        skipped = why
                    else:
                        failure = why
            case _:
                assert_never(target)
        notify = Notify(
            notification_id=notification_id,
            incident_id=incident.id,
            service_id=self.service_id,
            step=step,
            level=level,
            target=target,
            message=incident.message,
            channel=channel,
            recipient=recipient,
            developer_id=developer_id,
            failure=failure,
            skipped=skipped,
        )
        return notify, advanced
