"""The escalation core (pagerd.domain) against CONTRACT.md §6: pure, no event loop, no I/O.

Every test is Given / When / Then and checks what IS paged and what is NOT (the
whole list of notified targets is compared), and which ack timer is armed, or
that none is. Time is a fixed UTC instant advanced by timedelta.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from pagerd.core.domain import (
    MAX_REMEMBERED_ALERT_IDS,
    Ack,
    AckTimeout,
    AdvanceRotation,
    Alert,
    ArmTimer,
    CancelTimer,
    Decision,
    Event,
    Healthy,
    IncidentStatus,
    LevelFailed,
    Note,
    Notify,
    Outcome,
    RecordAlert,
    RecordTimeline,
    ServiceState,
    decide,
)
from pagerd.core.policy import (
    DomainError,
    EmailTarget,
    Level,
    OnCall,
    Policy,
    Roster,
    SmsTarget,
    Target,
    TeamTarget,
    WebhookTarget,
)

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
SERVICE = "payments-api"

SMS_1 = SmsTarget("+15550001111")
EMAIL_1 = EmailTarget("oncall@example.com")
SMS_2 = SmsTarget("+15550002222")
HOOK_2 = WebhookTarget("https://chat.example.com/hook")
TEAM_3 = TeamTarget("claims")
# The team "claims": two developers, in rotation.
CLAIMS = Roster(3, "claims", (OnCall(31, "+15550003101"), OnCall(32, "+15550003102")))

L1 = Level((SMS_1, EMAIL_1), ack_timeout_s=900)
L2 = Level((SMS_2, HOOK_2), ack_timeout_s=600)
L3 = Level((TEAM_3,), ack_timeout_s=300)

ONE_LEVEL = Policy("payments", (L1,))
TWO_LEVELS = Policy("payments", (L1, L2))
THREE_LEVELS = Policy("payments", (L1, L2, L3))


def alert(n: int = 1, alert_id: str | None = None, message: str = "Too many 5xx!") -> Alert:
    """An alert that would open incident ``inc-{n}``."""
    return Alert(message=message, new_incident_id=f"inc-{n}", alert_id=alert_id)


# --- reading a decision ------------------------------------------------------------------


def notifies(decision: Decision) -> list[Notify]:
    """The Notify effects of a decision, in order."""
    return [e for e in decision.effects if isinstance(e, Notify)]


def notified(decision: Decision) -> list[Target]:
    """Who a decision pages, in order."""
    return [n.target for n in notifies(decision)]


def timers(decision: Decision) -> list[ArmTimer]:
    """The timers a decision arms."""
    return [e for e in decision.effects if isinstance(e, ArmTimer)]


def cancels(decision: Decision) -> list[CancelTimer]:
    """The timer cancellations of a decision."""
    return [e for e in decision.effects if isinstance(e, CancelTimer)]


def records(decision: Decision) -> list[RecordAlert]:
    """The alerts a decision records."""
    return [e for e in decision.effects if isinstance(e, RecordAlert)]


def timeline(decision: Decision) -> list[str]:
    """The timeline event types a decision appends."""
    return [e.type for e in decision.effects if isinstance(e, RecordTimeline)]


# --- driving a service through events ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Fire:
    """The ack timer armed ``index``-th (default: the latest) runs out and is delivered."""

    index: int = -1


@dataclass(frozen=True, slots=True)
class Edit:
    """The service's policy is edited (takes effect from the next step)."""

    policy: Policy


Step = Event | Fire | Edit


class Walk:
    """One service driven through a sequence of events, keeping every decision."""

    def __init__(self, policy: Policy, service_id: str = SERVICE) -> None:
        self.policy = policy
        self.state = ServiceState(service_id)
        self.now = T0
        self.armed: list[ArmTimer] = []  # every timer ever armed, in order
        self.decisions: list[Decision] = []
        self.rosters = {CLAIMS.team: CLAIMS}  # as the runtime keeps them: advanced at once

    def send(self, event: Event, after: timedelta = timedelta(seconds=10)) -> Decision:
        """Deliver ``event`` ``after`` the previous one."""
        return self._decide(event, self.now + after)

    def fire(self, index: int = -1) -> Decision:
        """Deliver the timeout of the ``index``-th armed timer at its deadline (or now, if past)."""
        timer = self.armed[index]
        return self._decide(
            AckTimeout(timer.incident_id, timer.step), max(self.now, timer.deadline)
        )

    def run(self, steps: tuple[Step, ...]) -> Decision | None:
        """Apply ``steps`` in order; return the last decision taken, if any."""
        last: Decision | None = None
        for step in steps:
            match step:
                case Fire(index):
                    last = self.fire(index)
                case Edit(policy):
                    self.policy = policy
                case Alert() | Ack() | AckTimeout() | Healthy():
                    last = self.send(step)
        return last

    def _decide(self, event: Event, now: datetime) -> Decision:
        self.now = now
        decision = decide(self.state, event, self.policy, now, self.rosters)
        self.state = decision.state
        for effect in decision.effects:
            if isinstance(effect, AdvanceRotation):
                self.rosters[effect.roster.team] = effect.roster
        self.armed.extend(timers(decision))
        self.decisions.append(decision)
        return decision


# --- one table per rule of CONTRACT §6 ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Case:
    """Given ``given`` (steps from a healthy service), when ``when``, then the rest holds.

    ``timer`` is (incident id, step, seconds after the When moment), or None for no timer.
    """

    given: tuple[Step, ...]
    when: Step
    outcome: Outcome
    paged: tuple[Target, ...]
    timer: tuple[str, int, float] | None
    healthy: bool
    status: IncidentStatus | None = None
    level: int | None = None
    cancelled: bool = False
    recorded: int = 0
    policy: Policy = TWO_LEVELS


def check(case: Case) -> Walk:
    """Run a case and assert every one of its Then clauses."""
    walk = Walk(case.policy)
    walk.run(case.given)
    before = len(walk.decisions)
    decision = walk.run((case.when,))
    assert decision is not None
    assert len(walk.decisions) == before + 1
    assert decision.outcome is case.outcome
    assert notified(decision) == list(case.paged)
    expected_timers = (
        []
        if case.timer is None
        else [ArmTimer(case.timer[0], case.timer[1], walk.now + timedelta(seconds=case.timer[2]))]
    )
    assert timers(decision) == expected_timers
    assert bool(cancels(decision)) is case.cancelled
    assert len(records(decision)) == case.recorded
    assert walk.state.healthy is case.healthy
    incident = walk.state.incident
    if case.status is not None:
        assert incident is not None
        assert incident.status is case.status
    if case.level is not None:
        assert incident is not None
        assert incident.level == case.level
    return walk


RULE_1 = {
    "given healthy / when alert / then level 1 paged once each, 900 s timer": Case(
        given=(),
        when=alert(1),
        outcome=Outcome.OPENED,
        paged=(SMS_1, EMAIL_1),
        timer=("inc-1", 0, 900),
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        level=1,
        recorded=1,
    ),
    "given healthy, level 1 times out in 0.3 s / when alert / then 0.3 s timer": Case(
        given=(),
        when=alert(1),
        outcome=Outcome.OPENED,
        paged=(TEAM_3,),
        timer=("inc-1", 0, 0.3),
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        level=1,
        recorded=1,
        policy=Policy("fast", (Level((TEAM_3,), ack_timeout_s=0.3), L2)),
    ),
    "given resolved incident / when alert / then a new incident pages level 1": Case(
        given=(alert(1), Healthy()),
        when=alert(2),
        outcome=Outcome.OPENED,
        paged=(SMS_1, EMAIL_1),
        timer=("inc-2", 0, 900),
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        level=1,
        recorded=1,
    ),
}


@pytest.mark.parametrize("case", RULE_1.values(), ids=RULE_1.keys())
def test_rule_1_alert_on_healthy_service_opens_and_pages_level_1(case: Case) -> None:
    """Given a healthy service, when an alert arrives, then level 1 is paged and timed."""
    check(case)


RULE_2 = {
    "given triggered / when alert / then recorded, nothing paged, no timer": Case(
        given=(alert(1),),
        when=alert(2),
        outcome=Outcome.APPENDED,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        level=1,
        recorded=1,
    ),
    "given acknowledged / when alert / then recorded, nothing paged, no timer": Case(
        given=(alert(1), Ack()),
        when=alert(2),
        outcome=Outcome.APPENDED,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.ACKNOWLEDGED,
        recorded=1,
    ),
    "given escalated to level 2 / when alert / then it stays at level 2": Case(
        given=(alert(1), Fire()),
        when=alert(2),
        outcome=Outcome.APPENDED,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        level=2,
        recorded=1,
    ),
    "given alert_id a1 opened it / when alert_id a1 again / then not recorded": Case(
        given=(alert(1, alert_id="a1"),),
        when=alert(2, alert_id="a1"),
        outcome=Outcome.DUPLICATE_ALERT,
        paged=(),
        timer=None,
        healthy=False,
        level=1,
    ),
    "given alert_id a2 appended / when alert_id a2 again / then not recorded": Case(
        given=(alert(1, alert_id="a1"), alert(2, alert_id="a2")),
        when=alert(3, alert_id="a2"),
        outcome=Outcome.DUPLICATE_ALERT,
        paged=(),
        timer=None,
        healthy=False,
    ),
    "given alert_id a1 / when alert_id a2 / then recorded": Case(
        given=(alert(1, alert_id="a1"),),
        when=alert(2, alert_id="a2"),
        outcome=Outcome.APPENDED,
        paged=(),
        timer=None,
        healthy=False,
        recorded=1,
    ),
}


@pytest.mark.parametrize("case", RULE_2.values(), ids=RULE_2.keys())
def test_rule_2_alert_on_unhealthy_service_is_recorded_not_paged(case: Case) -> None:
    """Given an open incident, when an alert arrives, then it is recorded (once) and not paged."""
    check(case)


RULE_3 = {
    "given level 1 of 2 / when its timeout / then level 2 paged, 600 s timer": Case(
        given=(alert(1),),
        when=Fire(),
        outcome=Outcome.ESCALATED,
        paged=(SMS_2, HOOK_2),
        timer=("inc-1", 1, 600),
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        level=2,
    ),
    "given level 2 of 3 / when its timeout / then level 3 paged, 300 s timer": Case(
        given=(alert(1), Fire()),
        when=Fire(),
        outcome=Outcome.ESCALATED,
        paged=(TEAM_3,),
        timer=("inc-1", 2, 300),
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        level=3,
        policy=THREE_LEVELS,
    ),
}


@pytest.mark.parametrize("case", RULE_3.values(), ids=RULE_3.keys())
def test_rule_3_timeout_before_last_level_pages_next_level(case: Case) -> None:
    """Given an unacknowledged incident, when its timer runs out, then the next level is paged."""
    check(case)


RULE_4 = {
    "given last level, repeat 0 / when timeout / then nothing sent, no timer, open": Case(
        given=(alert(1), Fire()),
        when=Fire(),
        outcome=Outcome.EXHAUSTED,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.TRIGGERED,
    ),
    "given last level, repeat 1 / when timeout / then level 1 paged again": Case(
        given=(alert(1), Fire()),
        when=Fire(),
        outcome=Outcome.REPEATED,
        paged=(SMS_1, EMAIL_1),
        timer=("inc-1", 2, 900),
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        level=1,
        policy=Policy("payments", (L1, L2), repeat=1),
    ),
    "given exhausted / when the old timeout again / then nothing": Case(
        given=(alert(1), Fire(), Fire()),
        when=Fire(),
        outcome=Outcome.STALE_TIMEOUT,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.TRIGGERED,
    ),
    "given one level, repeat 0 / when timeout / then nothing sent, no timer": Case(
        given=(alert(1),),
        when=Fire(),
        outcome=Outcome.EXHAUSTED,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        policy=ONE_LEVEL,
    ),
}


@pytest.mark.parametrize("case", RULE_4.values(), ids=RULE_4.keys())
def test_rule_4_timeout_after_last_level_repeats_or_stops(case: Case) -> None:
    """Given the last level times out, then level 1 again if repeat allows, else nothing."""
    check(case)


RULE_5 = {
    "given triggered / when ack / then acknowledged, timer cancelled, nothing sent": Case(
        given=(alert(1),),
        when=Ack(by="alice"),
        outcome=Outcome.ACKNOWLEDGED,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.ACKNOWLEDGED,
        level=1,
        cancelled=True,
    ),
    "given triggered / when ack naming it / then acknowledged": Case(
        given=(alert(1),),
        when=Ack(incident_id="inc-1"),
        outcome=Outcome.ACKNOWLEDGED,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.ACKNOWLEDGED,
        cancelled=True,
    ),
    "given acknowledged / when the pending timeout / then nothing": Case(
        given=(alert(1), Ack()),
        when=Fire(),
        outcome=Outcome.STALE_TIMEOUT,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.ACKNOWLEDGED,
        level=1,
    ),
    "given exhausted / when ack / then acknowledged, no timer to cancel": Case(
        given=(alert(1), Fire()),
        when=Ack(),
        outcome=Outcome.ACKNOWLEDGED,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.ACKNOWLEDGED,
        policy=ONE_LEVEL,
        cancelled=False,
    ),
}


@pytest.mark.parametrize("case", RULE_5.values(), ids=RULE_5.keys())
def test_rule_5_ack_stops_escalation_and_service_stays_unhealthy(case: Case) -> None:
    """Given an open incident, when acked, then no more paging and the service stays unhealthy."""
    check(case)


RULE_6 = {
    "given triggered / when healthy / then resolved, timer cancelled, nothing sent": Case(
        given=(alert(1),),
        when=Healthy(),
        outcome=Outcome.RESOLVED,
        paged=(),
        timer=None,
        healthy=True,
        status=IncidentStatus.RESOLVED,
        cancelled=True,
    ),
    "given acknowledged / when healthy / then resolved, no timer to cancel": Case(
        given=(alert(1), Ack()),
        when=Healthy(),
        outcome=Outcome.RESOLVED,
        paged=(),
        timer=None,
        healthy=True,
        status=IncidentStatus.RESOLVED,
    ),
    "given resolved / when the pending timeout / then nothing": Case(
        given=(alert(1), Healthy()),
        when=Fire(),
        outcome=Outcome.STALE_TIMEOUT,
        paged=(),
        timer=None,
        healthy=True,
        status=IncidentStatus.RESOLVED,
    ),
    "given resolved / when alert / then new incident at level 1": Case(
        given=(alert(1), Fire(), Healthy()),
        when=alert(2),
        outcome=Outcome.OPENED,
        paged=(SMS_1, EMAIL_1),
        timer=("inc-2", 0, 900),
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        level=1,
        recorded=1,
    ),
    "given healthy / when healthy / then nothing": Case(
        given=(),
        when=Healthy(),
        outcome=Outcome.ALREADY_HEALTHY,
        paged=(),
        timer=None,
        healthy=True,
    ),
}


@pytest.mark.parametrize("case", RULE_6.values(), ids=RULE_6.keys())
def test_rule_6_healthy_resolves_and_later_timeouts_do_nothing(case: Case) -> None:
    """Given an open incident, when healthy, then resolved and nothing more happens."""
    check(case)


RULE_7 = {
    "given inc-2 at level 1 / when inc-1's timeout (same step) / then ignored": Case(
        given=(alert(1), Healthy(), alert(2)),
        when=Fire(0),
        outcome=Outcome.STALE_TIMEOUT,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        level=1,
    ),
    "given inc-2 open / when ack naming inc-1 / then inc-2 not acknowledged": Case(
        given=(alert(1), Healthy(), alert(2)),
        when=Ack(incident_id="inc-1"),
        outcome=Outcome.NO_SUCH_OPEN_INCIDENT,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        level=1,
    ),
    "given inc-2 open / when a timeout naming inc-1 at inc-2's step / then ignored": Case(
        given=(alert(1), Fire(), Healthy(), alert(2), Fire()),
        when=AckTimeout("inc-1", 1),
        outcome=Outcome.STALE_TIMEOUT,
        paged=(),
        timer=None,
        healthy=False,
        level=2,
    ),
}


@pytest.mark.parametrize("case", RULE_7.values(), ids=RULE_7.keys())
def test_rule_7_earlier_incident_never_acts_on_a_later_one(case: Case) -> None:
    """Given a later incident, when a timeout or ack of an earlier one arrives, then ignored."""
    check(case)


DOUBLED = Policy("payments", (Level((SMS_1, EMAIL_1, SMS_1), 900), Level((EMAIL_1, SMS_1), 600)))

RULE_8 = {
    "given a target twice in level 1 / when alert / then paged once": Case(
        given=(),
        when=alert(1),
        outcome=Outcome.OPENED,
        paged=(SMS_1, EMAIL_1),
        timer=("inc-1", 0, 900),
        healthy=False,
        recorded=1,
        policy=DOUBLED,
    ),
    "given targets of level 1 also in level 2 / when timeout / then paged again": Case(
        given=(alert(1),),
        when=Fire(),
        outcome=Outcome.ESCALATED,
        paged=(EMAIL_1, SMS_1),
        timer=("inc-1", 1, 600),
        healthy=False,
        level=2,
        policy=DOUBLED,
    ),
    "given an alert just opened it / when a second alert the same moment / then no page": Case(
        given=(alert(1),),
        when=alert(2),
        outcome=Outcome.APPENDED,
        paged=(),
        timer=None,
        healthy=False,
        recorded=1,
    ),
}


@pytest.mark.parametrize("case", RULE_8.values(), ids=RULE_8.keys())
def test_rule_8_each_target_paged_once_per_step(case: Case) -> None:
    """Given a policy or alert burst that could double-page, then each target is paged once."""
    check(case)


SHRUNK = Policy("payments", (Level((SMS_2,), 60),))
GROWN = Policy("payments", (L1, Level((SMS_2,), 120), L3))

RULE_9 = {
    "given level 3, policy shrunk to 1 level / when timeout / then exhausted": Case(
        given=(alert(1), Fire(), Fire(), Edit(SHRUNK)),
        when=Fire(),
        outcome=Outcome.EXHAUSTED,
        paged=(),
        timer=None,
        healthy=False,
        status=IncidentStatus.TRIGGERED,
        policy=THREE_LEVELS,
    ),
    "given level 3, shrunk to 1 level with repeat 1 / when timeout / then new level 1": Case(
        given=(alert(1), Fire(), Fire(), Edit(Policy("payments", SHRUNK.levels, repeat=1))),
        when=Fire(),
        outcome=Outcome.REPEATED,
        paged=(SMS_2,),
        timer=("inc-1", 3, 60),
        healthy=False,
        level=1,
        policy=THREE_LEVELS,
    ),
    "given level 2 of 2, policy grown to 3 / when timeout / then level 3 paged": Case(
        given=(alert(1), Fire(), Edit(GROWN)),
        when=Fire(),
        outcome=Outcome.ESCALATED,
        paged=(TEAM_3,),
        timer=("inc-1", 2, 300),
        healthy=False,
        level=3,
    ),
    "given level 1, level 2 edited / when timeout / then the edited level 2 is paged": Case(
        given=(alert(1), Edit(GROWN)),
        when=Fire(),
        outcome=Outcome.ESCALATED,
        paged=(SMS_2,),
        timer=("inc-1", 1, 120),
        healthy=False,
        level=2,
    ),
}


@pytest.mark.parametrize("case", RULE_9.values(), ids=RULE_9.keys())
def test_rule_9_policy_is_read_at_each_step(case: Case) -> None:
    """Given a policy edited mid-incident, when the next step comes, then the edit applies."""
    check(case)


# Rule 10 (timers survive a restart) is the runtime's: the core keeps no timers.


# --- the seven scenarios of the brief ----------------------------------------------------


def test_scenario_1_alert_on_healthy_service_makes_it_unhealthy() -> None:
    """Given a healthy service, when an alert arrives, then the service is unhealthy."""
    walk = Walk(TWO_LEVELS)
    before = walk.state
    assert before.healthy

    decision = walk.send(alert(1))

    assert not decision.state.healthy
    assert decision.outcome is Outcome.OPENED
    assert walk.state.open_incident is not None
    assert walk.state.open_incident.id == "inc-1"


def test_scenario_2_level_1_notified_and_15_minute_timer_set() -> None:
    """Given a healthy service, when an alert arrives, then level 1 only and a 900 s timer."""
    walk = Walk(TWO_LEVELS)

    decision = walk.send(alert(1))

    assert notified(decision) == [SMS_1, EMAIL_1]
    assert all(n.level == 1 and n.step == 0 for n in notifies(decision))
    assert SMS_2 not in notified(decision)
    assert HOOK_2 not in notified(decision)
    assert timers(decision) == [ArmTimer("inc-1", 0, walk.now + timedelta(minutes=15))]


def test_scenario_3_ack_timeout_pages_next_level() -> None:
    """Given level 1 paged, when its 15 minutes pass unacknowledged, then level 2 is paged."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))

    decision = walk.fire()

    assert walk.now == T0 + timedelta(seconds=10, minutes=15)
    assert decision.outcome is Outcome.ESCALATED
    assert notified(decision) == [SMS_2, HOOK_2]
    assert timers(decision) == [ArmTimer("inc-1", 1, walk.now + timedelta(seconds=600))]


def test_scenario_4_ack_then_timeout_sends_nothing() -> None:
    """Given level 1 paged and then acknowledged, when the timer would have run out, nothing."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))
    acked = walk.send(Ack(by="alice"))
    assert cancels(acked) == [CancelTimer("inc-1")]

    decision = walk.fire()

    assert decision.outcome is Outcome.STALE_TIMEOUT
    assert decision.effects == ()
    assert notified(decision) == []
    assert timers(decision) == []
    assert decision.state is acked.state


def test_scenario_5_alert_on_unhealthy_service_sends_nothing() -> None:
    """Given an open incident, when another alert arrives, then nothing is paged, no timer."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))

    decision = walk.send(alert(2, message="still failing"))

    assert decision.outcome is Outcome.APPENDED
    assert notified(decision) == []
    assert timers(decision) == []
    assert [(r.incident_id, r.message) for r in records(decision)] == [("inc-1", "still failing")]
    assert decision.state.incident is not None
    assert decision.state.incident.id == "inc-1"
    assert decision.state.incident.alert_count == 2


def test_scenario_6_healthy_then_timeout_sends_nothing() -> None:
    """Given an incident resolved by healthy, when its old timer runs out, then nothing."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))
    walk.send(Healthy())

    decision = walk.fire()

    assert walk.state.healthy
    assert decision.outcome is Outcome.STALE_TIMEOUT
    assert decision.effects == ()
    assert notified(decision) == []
    assert timers(decision) == []


def test_scenario_7_healthy_resolves_the_incident() -> None:
    """Given an escalated incident, when healthy arrives, then it is resolved and nothing paged."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))
    walk.fire()

    decision = walk.send(Healthy())

    assert decision.outcome is Outcome.RESOLVED
    incident = decision.state.incident
    assert incident is not None
    assert incident.status is IncidentStatus.RESOLVED
    assert incident.resolved_at == walk.now
    assert incident.ack_deadline is None
    assert walk.state.healthy
    assert decision.state.open_incident is None
    assert cancels(decision) == [CancelTimer("inc-1")]
    assert notified(decision) == []
    assert timers(decision) == []


# --- earlier incidents, stale and duplicate timeouts -------------------------------------


def test_old_incidents_timeout_after_realert_is_ignored() -> None:
    """Given alert, healthy, alert, when the OLD incident's timeout arrives, then ignored."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))
    walk.send(Healthy())
    walk.send(alert(2))
    old_timer, new_timer = walk.armed
    assert old_timer.step == new_timer.step == 0  # same step: only the id tells them apart

    decision = walk.fire(0)

    assert decision.outcome is Outcome.STALE_TIMEOUT
    assert decision.effects == ()
    incident = walk.state.open_incident
    assert incident is not None
    assert (incident.id, incident.level, incident.step) == ("inc-2", 1, 0)
    assert incident.ack_deadline == new_timer.deadline


def test_same_timeout_delivered_twice_escalates_once() -> None:
    """Given level 1 paged, when its timeout is delivered twice, then one escalation."""
    walk = Walk(THREE_LEVELS)
    walk.send(alert(1))

    first = walk.fire(0)
    second = walk.fire(0)

    assert first.outcome is Outcome.ESCALATED
    assert notified(first) == [SMS_2, HOOK_2]
    assert second.outcome is Outcome.STALE_TIMEOUT
    assert second.effects == ()
    assert walk.state.incident is not None
    assert walk.state.incident.level == 2


@pytest.mark.parametrize("step", [-1, 1, 5], ids=["behind", "one ahead", "far ahead"])
def test_timeout_for_another_step_is_stale(step: int) -> None:
    """Given level 1 at step 0, when a timeout for another step arrives, then ignored."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))

    decision = walk.send(AckTimeout("inc-1", step))

    assert decision.outcome is Outcome.STALE_TIMEOUT
    assert decision.effects == ()
    assert notified(decision) == []
    assert timers(decision) == []


def test_timeout_on_healthy_service_is_stale() -> None:
    """Given a service that never had an incident, when a timeout arrives, then ignored."""
    walk = Walk(TWO_LEVELS)

    decision = walk.send(AckTimeout("inc-1", 0))

    assert decision.outcome is Outcome.STALE_TIMEOUT
    assert decision.effects == ()
    assert walk.state.incident is None


# --- exhaustion and repeat ---------------------------------------------------------------


def test_timeout_after_last_level_is_exhausted_and_stays_open() -> None:
    """Given the last level paged, when it times out, then nothing sent, no timer, still open."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))
    walk.fire()

    decision = walk.fire()

    assert decision.outcome is Outcome.EXHAUSTED
    assert notified(decision) == []
    assert timers(decision) == []
    incident = walk.state.open_incident
    assert incident is not None
    assert incident.status is IncidentStatus.TRIGGERED
    assert incident.ack_deadline is None


def test_repeat_2_on_two_levels_restarts_from_level_1_exactly_twice() -> None:
    """Given repeat=2 on 2 levels, when every timer runs out, then 3 rounds, then exhausted."""
    walk = Walk(Policy("payments", (L1, L2), repeat=2))
    walk.send(alert(1))

    outcomes = [walk.fire().outcome for _ in range(6)]

    assert outcomes == [
        Outcome.ESCALATED,
        Outcome.REPEATED,
        Outcome.ESCALATED,
        Outcome.REPEATED,
        Outcome.ESCALATED,
        Outcome.EXHAUSTED,
    ]
    pages = [n for d in walk.decisions for n in notifies(d)]
    assert [n.target for n in pages] == [SMS_1, EMAIL_1, SMS_2, HOOK_2] * 3
    assert [n.level for n in pages] == [1, 1, 2, 2] * 3
    assert [t.step for t in walk.armed] == [0, 1, 2, 3, 4, 5]
    assert walk.state.incident is not None
    assert walk.state.incident.round == 2
    # Nothing is left to fire: a late delivery of the last timer changes nothing.
    assert walk.fire().effects == ()


# --- acks --------------------------------------------------------------------------------


def test_ack_with_previous_incident_id_does_not_ack_new_incident() -> None:
    """Given inc-1 resolved and inc-2 open, when an ack names inc-1, then inc-2 stays triggered."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))
    walk.send(Healthy())
    walk.send(alert(2))

    decision = walk.send(Ack(incident_id="inc-1"))

    assert decision.outcome is Outcome.NO_SUCH_OPEN_INCIDENT
    assert decision.effects == ()
    assert walk.state.open_incident is not None
    assert walk.state.open_incident.status is IncidentStatus.TRIGGERED
    assert walk.state.open_incident.acknowledged_at is None
    # The timer of inc-2 was not cancelled: it still escalates.
    assert walk.fire().outcome is Outcome.ESCALATED


def test_late_ack_after_healthy_is_a_noop_and_next_alert_pages() -> None:
    """Given inc-1 resolved, when a late ack arrives, then no-op; the next alert pages normally."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))
    walk.send(Healthy())

    late = walk.send(Ack())
    assert late.outcome is Outcome.NO_SUCH_OPEN_INCIDENT
    assert late.effects == ()
    assert walk.state.healthy

    decision = walk.send(alert(2))

    assert decision.outcome is Outcome.OPENED
    assert notified(decision) == [SMS_1, EMAIL_1]
    assert timers(decision) == [ArmTimer("inc-2", 0, walk.now + timedelta(seconds=900))]
    assert walk.state.incident is not None
    assert walk.state.incident.acknowledged_at is None


@pytest.mark.parametrize(
    "second", [Ack(), Ack(incident_id="inc-1"), Ack(by="bob")], ids=["bare", "named", "by other"]
)
def test_duplicate_ack_is_idempotent(second: Ack) -> None:
    """Given an acknowledged incident, when acked again, then no effects, first ack kept."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))
    first = walk.send(Ack(by="alice"))

    decision = walk.send(second)

    assert decision.outcome is Outcome.ALREADY_ACKNOWLEDGED
    assert decision.effects == ()
    assert decision.state is first.state
    assert walk.state.incident is not None
    assert walk.state.incident.acknowledged_by == "alice"


def test_ack_records_who_and_when() -> None:
    """Given a triggered incident, when alice acks, then she and the time are on the incident."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))

    walk.send(Ack(by="alice"))

    incident = walk.state.incident
    assert incident is not None
    assert (incident.acknowledged_by, incident.acknowledged_at) == ("alice", walk.now)
    assert incident.ack_deadline is None


# --- healthy -----------------------------------------------------------------------------


def test_healthy_for_healthy_service_is_noop() -> None:
    """Given a healthy service (never or no longer failing), when healthy, then no effects."""
    walk = Walk(TWO_LEVELS)
    never = walk.send(Healthy())
    walk.send(alert(1))
    walk.send(Healthy())
    resolved_state = walk.state

    again = walk.send(Healthy())

    assert never.outcome is again.outcome is Outcome.ALREADY_HEALTHY
    assert never.effects == again.effects == ()
    assert again.state is resolved_state


def test_healthy_then_alert_opens_fresh_incident() -> None:
    """Given an escalated, acked incident resolved, when an alert arrives, then a fresh one."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1, alert_id="a1"))
    walk.fire()
    walk.send(Ack())
    walk.send(Healthy())

    decision = walk.send(alert(2, alert_id="a2"))

    incident = decision.state.incident
    assert incident is not None
    assert incident.id == "inc-2"
    assert incident.status is IncidentStatus.TRIGGERED
    assert (incident.level, incident.step, incident.round) == (1, 0, 0)
    assert incident.acknowledged_at is None
    assert incident.acknowledged_by is None
    assert incident.resolved_at is None
    assert incident.opened_at == walk.now
    assert incident.alert_count == 1
    assert set(incident.alert_ids) == {"a2"}
    assert notified(decision) == [SMS_1, EMAIL_1]
    assert timers(decision) == [ArmTimer("inc-2", 0, walk.now + timedelta(seconds=900))]


# --- policy edits and shape --------------------------------------------------------------


def test_empty_level_in_edited_policy_is_impossible() -> None:
    """Given a 3-level policy, when level 2 is edited to no targets, then DomainError(targets)."""
    with pytest.raises(DomainError) as raised:
        Policy("payments", (L1, Level((), ack_timeout_s=600), L3))
    assert raised.value.field.endswith("targets")


@pytest.mark.parametrize("repeat", [0, 1])
def test_policy_shrunk_mid_incident_counts_as_after_last_level(repeat: int) -> None:
    """Given an incident at level 3, when the policy shrinks to 1 level, then no IndexError."""
    walk = Walk(THREE_LEVELS)
    walk.send(alert(1))
    walk.fire()
    walk.fire()
    assert walk.state.incident is not None
    assert walk.state.incident.level == 3
    walk.policy = Policy("payments", (L1,), repeat=repeat)

    decision = walk.fire()

    if repeat == 0:
        assert decision.outcome is Outcome.EXHAUSTED
        assert notified(decision) == []
        assert timers(decision) == []
    else:
        assert decision.outcome is Outcome.REPEATED
        assert notified(decision) == [SMS_1, EMAIL_1]
        assert timers(decision) == [ArmTimer("inc-1", 3, walk.now + timedelta(seconds=900))]
        assert walk.state.incident is not None
        assert walk.state.incident.level == 1


def test_policy_grown_mid_incident_takes_effect_at_next_step() -> None:
    """Given level 2 of 2 paged, when the policy grows to 3 levels, then the next step pages 3."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))
    at_level_2 = walk.fire()
    assert timers(at_level_2) == [ArmTimer("inc-1", 1, walk.now + timedelta(seconds=600))]
    walk.policy = THREE_LEVELS  # the running timer keeps the old policy's 600 s

    decision = walk.fire()

    assert decision.outcome is Outcome.ESCALATED
    assert notified(decision) == [TEAM_3]
    assert timers(decision) == [ArmTimer("inc-1", 2, walk.now + timedelta(seconds=300))]


def test_same_target_in_two_levels_is_paged_at_each() -> None:
    """Given SMS_1 in level 1 and level 2, when both levels are reached, then paged twice."""
    walk = Walk(Policy("payments", (Level((SMS_1,), 60), Level((SMS_1, SMS_2), 60))))

    opened = walk.send(alert(1))
    escalated = walk.fire()

    assert notified(opened) == [SMS_1]
    assert notified(escalated) == [SMS_1, SMS_2]
    assert notifies(opened)[0].notification_id != notifies(escalated)[0].notification_id


def test_same_target_twice_in_one_level_is_paged_once() -> None:
    """Given a level listing a target twice (equal, not identical), when paged, then once."""
    twice = Level((SmsTarget("+15550001111"), EMAIL_1, SmsTarget("+15550001111")), 60)
    walk = Walk(Policy("payments", (twice,)))

    decision = walk.send(alert(1))

    assert notified(decision) == [SMS_1, EMAIL_1]
    assert len({n.notification_id for n in notifies(decision)}) == 2


# --- alert ids ---------------------------------------------------------------------------


def test_same_alert_id_twice_is_recorded_once() -> None:
    """Given alert a1 opened the incident, when a1 comes again, then one RecordAlert overall."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1, alert_id="a1"))

    again = walk.send(alert(2, alert_id="a1"))

    assert again.outcome is Outcome.DUPLICATE_ALERT
    assert again.effects == ()
    every_record = [r for d in walk.decisions for r in records(d)]
    assert [r.alert_id for r in every_record] == ["a1"]
    assert walk.state.incident is not None
    assert walk.state.incident.alert_count == 1


def test_different_alert_ids_are_both_recorded() -> None:
    """Given alert a1 opened the incident, when a2 comes, then both recorded."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1, alert_id="a1"))

    second = walk.send(alert(2, alert_id="a2"))

    assert second.outcome is Outcome.APPENDED
    every_record = [r for d in walk.decisions for r in records(d)]
    assert [(r.incident_id, r.alert_id) for r in every_record] == [("inc-1", "a1"), ("inc-1", "a2")]
    assert walk.state.incident is not None
    assert set(walk.state.incident.alert_ids) == {"a1", "a2"}


def test_alerts_without_alert_id_are_each_recorded() -> None:
    """Given an open incident, when three alerts without alert_id come, then each recorded."""
    walk = Walk(TWO_LEVELS)

    outcomes = [walk.send(alert(n)).outcome for n in (1, 2, 3)]

    assert outcomes == [Outcome.OPENED, Outcome.APPENDED, Outcome.APPENDED]
    every_record = [r for d in walk.decisions for r in records(d)]
    assert [(r.incident_id, r.alert_id) for r in every_record] == [("inc-1", None)] * 3
    assert walk.state.incident is not None
    assert walk.state.incident.alert_count == 3
    assert not walk.state.incident.alert_ids


def test_recorded_alert_keeps_message_source_and_time() -> None:
    """Given a healthy service, when an alert with a source arrives, then all of it is recorded."""
    walk = Walk(TWO_LEVELS)

    decision = walk.send(Alert("disk full", "inc-1", alert_id="a1", source="prometheus"))

    assert records(decision) == [RecordAlert("inc-1", "disk full", "a1", "prometheus", walk.now)]


# --- refused at construction -------------------------------------------------------------


def _as_any(value: object) -> Any:
    """Pass a value of the wrong type, as an adapter bug would."""
    return value


REFUSED: dict[str, tuple[Callable[[], object], str]] = {
    "policy with no levels": (lambda: Policy("payments", ()), "levels"),
    "level with no targets": (lambda: Level((), 900), "targets"),
    "timeout 0": (lambda: Level((SMS_1,), 0), "ack_timeout_s"),
    "timeout negative": (lambda: Level((SMS_1,), -5), "ack_timeout_s"),
    "timeout negative fraction": (lambda: Level((SMS_1,), -0.3), "ack_timeout_s"),
    "timeout NaN": (lambda: Level((SMS_1,), float("nan")), "ack_timeout_s"),
    "timeout not a number": (lambda: Level((SMS_1,), _as_any("900")), "ack_timeout_s"),
    "repeat -1": (lambda: Policy("payments", (L1,), repeat=-1), "repeat"),
    "repeat 10": (lambda: Policy("payments", (L1,), repeat=10), "repeat"),
    "repeat bool": (lambda: Policy("payments", (L1,), repeat=True), "repeat"),
    "repeat float": (lambda: Policy("payments", (L1,), repeat=_as_any(1.0)), "repeat"),
    "service id empty": (lambda: ServiceState(""), "service_id"),
    "service id 129 chars": (lambda: ServiceState("s" * 129), "service_id"),
    "service id with space": (lambda: ServiceState("payments api"), "service_id"),
    "service id with slash": (lambda: ServiceState("payments/api"), "service_id"),
    "service id with newline": (lambda: ServiceState("payments\n"), "service_id"),
    "service id not a string": (lambda: ServiceState(_as_any(7)), "service_id"),
    "policy id with slash": (lambda: Policy("pay/ments", (L1,)), "id"),
    "email without @": (lambda: EmailTarget("oncall.example.com"), "address"),
    "email empty": (lambda: EmailTarget(""), "address"),
    "webhook ftp": (lambda: WebhookTarget("ftp://chat.example.com/hook"), "url"),
    "webhook no scheme": (lambda: WebhookTarget("chat.example.com/hook"), "url"),
    "webhook empty": (lambda: WebhookTarget(""), "url"),
    "sms blank": (lambda: SmsTarget("  "), "phone_number"),
    "team empty": (lambda: TeamTarget(""), "team"),
    "alert message empty": (lambda: Alert("", "inc-1"), "message"),
    "alert message 1025 chars": (lambda: Alert("m" * 1025, "inc-1"), "message"),
    "alert message not a string": (lambda: Alert(_as_any(b"boom"), "inc-1"), "message"),
    "alert_id empty": (lambda: Alert("boom", "inc-1", alert_id=""), "alert_id"),
    "alert_id 256 chars": (lambda: Alert("boom", "inc-1", alert_id="a" * 256), "alert_id"),
    "new incident id blank": (lambda: Alert("boom", " "), "new_incident_id"),
}


@pytest.mark.parametrize(("build", "field_name"), REFUSED.values(), ids=REFUSED.keys())
def test_invalid_input_is_refused_naming_the_field(
    build: Callable[[], object], field_name: str
) -> None:
    """Given invalid input, when the domain object is built, then DomainError names the field."""
    with pytest.raises(DomainError) as raised:
        build()
    assert raised.value.field == field_name
    assert str(raised.value).startswith(f"{field_name}: ")
    assert isinstance(raised.value, ValueError)


ACCEPTED: dict[str, Callable[[], object]] = {
    "timeout 0.3 s": lambda: Level((SMS_1,), 0.3),
    "repeat 0": lambda: Policy("payments", (L1,), repeat=0),
    "repeat 9": lambda: Policy("payments", (L1,), repeat=9),
    "service id 128 chars": lambda: ServiceState("s" * 128),
    "service id of every allowed kind": lambda: ServiceState("Pay.ments_API-2"),
    "http webhook": lambda: WebhookTarget("http://127.0.0.1:9/hook"),
    "alert message 1024 chars": lambda: Alert("m" * 1024, "inc-1"),
    "alert message 1 char": lambda: Alert("m", "inc-1"),
    "alert_id 255 chars": lambda: Alert("boom", "inc-1", alert_id="a" * 255),
}


@pytest.mark.parametrize("build", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_boundary_input_is_accepted(build: Callable[[], object]) -> None:
    """Given input at the edge of the allowed range, when built, then no error."""
    assert build() is not None


def test_unknown_event_type_is_a_programming_error() -> None:
    """Given a value that is no Event, when decided, then it fails loudly, not silently."""
    with pytest.raises(AssertionError):
        decide(ServiceState(SERVICE), cast("Event", object()), TWO_LEVELS, T0)


# --- determinism and timeline ------------------------------------------------------------


def test_replaying_a_decision_gives_identical_effects() -> None:
    """Given the same state, event, policy and time, when decided twice, then equal decisions."""
    walk = Walk(THREE_LEVELS)
    walk.send(alert(1))
    state, now = walk.state, walk.now + timedelta(seconds=900)
    timeout = AckTimeout("inc-1", 0)

    first = decide(state, timeout, THREE_LEVELS, now)
    replay = decide(state, timeout, THREE_LEVELS, now)

    assert first == replay
    assert [n.notification_id for n in notifies(first)] == ["inc-1-1-0", "inc-1-1-1"]
    opened = decide(ServiceState(SERVICE), alert(1), THREE_LEVELS, T0)
    assert opened == decide(ServiceState(SERVICE), alert(1), THREE_LEVELS, T0)


def test_notification_ids_differ_across_steps_rounds_and_incidents() -> None:
    """Given a repeating policy and two incidents, when paging, then every id is distinct."""
    walk = Walk(Policy("payments", (L1, L2), repeat=1))
    walk.send(alert(1))
    walk.fire()
    walk.fire()
    walk.send(Healthy())
    walk.send(alert(2))

    ids = [n.notification_id for d in walk.decisions for n in notifies(d)]

    assert len(ids) == 8
    assert len(set(ids)) == len(ids)
    assert all(n.service_id == SERVICE for d in walk.decisions for n in notifies(d))
    assert all(n.message == "Too many 5xx!" for d in walk.decisions for n in notifies(d))


def test_timeline_records_each_lifecycle_event() -> None:
    """Given a walk open, escalate, repeat, ack, resolve, then each appends its timeline event."""
    walk = Walk(Policy("payments", (L1, L2), repeat=1))

    opened = walk.send(alert(1, message="boom"))
    escalated = walk.fire()
    repeated = walk.fire()
    acked = walk.send(Ack(by="alice"))
    resolved = walk.send(Healthy())

    assert timeline(opened) == ["incident.triggered"]
    assert timeline(escalated) == ["incident.escalated"]
    assert timeline(repeated) == ["incident.escalated"]
    assert timeline(acked) == ["incident.acknowledged"]
    assert timeline(resolved) == ["incident.resolved"]
    opened_at = T0 + timedelta(seconds=10)
    escalated_at = opened_at + timedelta(seconds=900)
    repeated_at = escalated_at + timedelta(seconds=600)
    acked_at = repeated_at + timedelta(seconds=10)
    resolved_at = acked_at + timedelta(seconds=10)
    details = [
        (e.incident_id, e.at, dict(e.detail))
        for d in walk.decisions
        for e in d.effects
        if isinstance(e, RecordTimeline)
    ]
    assert details == [
        ("inc-1", opened_at, {"message": "boom", "level": 1}),
        ("inc-1", escalated_at, {"from_level": 1, "level": 2, "round": 1}),
        ("inc-1", repeated_at, {"from_level": 2, "level": 1, "round": 2}),
        ("inc-1", acked_at, {"by": "alice", "level": 1}),
        ("inc-1", resolved_at, {"level": 1}),
    ]


def test_no_timeline_for_events_that_change_nothing() -> None:
    """Given every kind of no-op event, when decided, then no timeline event is appended."""
    walk = Walk(ONE_LEVEL)
    noops = [walk.send(Healthy()), walk.send(AckTimeout("inc-0", 0)), walk.send(Ack())]
    walk.send(alert(1, alert_id="a1"))
    noops += [walk.send(alert(2, alert_id="a1")), walk.fire(), walk.fire()]

    assert [d.outcome for d in noops] == [
        Outcome.ALREADY_HEALTHY,
        Outcome.STALE_TIMEOUT,
        Outcome.NO_SUCH_OPEN_INCIDENT,
        Outcome.DUPLICATE_ALERT,
        Outcome.EXHAUSTED,
        Outcome.STALE_TIMEOUT,
    ]
    assert all(timeline(d) == [] for d in noops)
    assert all(notified(d) == [] and timers(d) == [] for d in noops)


@pytest.mark.parametrize(
    "timeout", [float("inf"), float("nan"), 1e12, True], ids=["inf", "nan", "huge", "bool"]
)
def test_level_refuses_timeouts_that_cannot_make_a_deadline(timeout: float) -> None:
    """Given a timeout that is not a sane number of seconds, when a level is built, then refused."""
    with pytest.raises(DomainError) as refused:
        Level((SmsTarget("+15550001111"),), ack_timeout_s=timeout)
    assert refused.value.field == "ack_timeout_s"


@pytest.mark.parametrize("address", ["@", "a b@example.com", "oncall@", "@example.com"])
def test_email_target_refuses_what_is_not_an_address(address: str) -> None:
    """Given a malformed address, when an email target is built, then refused naming the field."""
    with pytest.raises(DomainError) as refused:
        EmailTarget(address)
    assert refused.value.field == "address"


# --- who a team target pages, and levels that reach nobody ------------------------------

TEAM_ONLY = Policy("claims-first", (Level((TEAM_3,), 300), L2))
NOBODY = Roster(4, "nobody", ())


def test_a_team_target_pages_the_rotation_in_turn_across_incidents() -> None:
    """Given a team of two in rotation, when three incidents page it, then its developers
    are paged in order, cycling, and each decision says how the rotation moved."""
    walk = Walk(Policy("claims-only", (L3,)))
    paged: list[tuple[str, int | None]] = []
    for n in range(1, 4):
        opened = walk.send(alert(n))
        (page,) = notifies(opened)
        paged.append((page.recipient, page.developer_id))
        walk.send(Healthy())
    assert paged == [("+15550003101", 31), ("+15550003102", 32), ("+15550003101", 31)]
    assert walk.rosters["claims"].cursor == 1


def test_a_level_with_nobody_to_page_is_passed_at_once() -> None:
    """Given level 1 pages a team with nobody in it, when an alert opens an incident, then
    that page fails at once, level 2 is paged in the same decision with its timer, and the
    timeline says why; nothing waits for level 1's timeout."""
    walk = Walk(Policy("p", (Level((TeamTarget("nobody"),), 300), L2)))
    walk.rosters["nobody"] = NOBODY

    decision = walk.send(alert(1))

    assert decision.outcome is Outcome.OPENED
    failed, *paged = notifies(decision)
    assert (failed.level, failed.failure) == (1, "team 'nobody' has nobody to page")
    assert [n.target for n in paged] == [SMS_2, HOOK_2]
    assert {n.level for n in paged} == {2}
    assert timers(decision) == [ArmTimer("inc-1", 1, walk.now + timedelta(seconds=600))]
    assert timeline(decision) == [
        "incident.triggered",
        "notification.failed",
        "incident.escalated",
    ]
    escalated = [e for e in decision.effects if isinstance(e, RecordTimeline)][-1]
    assert escalated.detail["reason"] == "nobody to page at level 1"
    incident = decision.state.open_incident
    assert incident is not None
    assert (incident.level, incident.step) == (2, 1)


def test_a_level_that_reaches_someone_is_not_passed() -> None:
    """Given level 1 pages an empty team and an SMS number, then the SMS goes, the team's
    page fails, and level 1's timer runs as usual."""
    walk = Walk(Policy("p", (Level((TeamTarget("nobody"), SMS_1), 300), L2)))
    walk.rosters["nobody"] = NOBODY

    decision = walk.send(alert(1))

    assert [(n.target, n.failure is None) for n in notifies(decision)] == [
        (TeamTarget("nobody"), False),
        (SMS_1, True),
    ]
    assert timers(decision) == [ArmTimer("inc-1", 0, walk.now + timedelta(seconds=300))]
    assert "incident.escalated" not in timeline(decision)


def test_a_policy_that_reaches_nobody_is_run_through_at_once() -> None:
    """Given every level names nobody, when an alert comes, then the incident opens, every
    level's page fails, and no timer is armed: the incident stays open and triggered."""
    walk = Walk(Policy("p", (Level((TeamTarget("nobody"),), 300),), repeat=1))
    walk.rosters["nobody"] = NOBODY

    decision = walk.send(alert(1))

    assert decision.outcome is Outcome.OPENED
    assert [n.level for n in notifies(decision)] == [1, 1]  # both rounds
    assert timers(decision) == []
    incident = decision.state.open_incident
    assert incident is not None
    assert incident.status is IncidentStatus.TRIGGERED
    assert incident.ack_deadline is None


def test_every_page_of_the_level_failed_escalates_now() -> None:
    """Given level 1 paged, when every page of it failed for good, then level 2 is paged
    at once, and the timeline names the reason; the same news again is stale."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))

    decision = walk.send(LevelFailed("inc-1", 0), after=timedelta(seconds=5))

    assert decision.outcome is Outcome.ESCALATED
    assert notified(decision) == [SMS_2, HOOK_2]
    assert timers(decision) == [ArmTimer("inc-1", 1, walk.now + timedelta(seconds=600))]
    (escalated,) = [e for e in decision.effects if isinstance(e, RecordTimeline)]
    assert escalated.detail["reason"] == "every page of level 1 failed"
    again = walk.send(LevelFailed("inc-1", 0))
    assert (again.outcome, again.effects) == (Outcome.STALE_TIMEOUT, ())


def test_a_failed_level_changes_nothing_once_acknowledged() -> None:
    """Given an acknowledged incident, when its level's pages all failed, then nothing."""
    walk = Walk(TWO_LEVELS)
    walk.send(alert(1))
    walk.send(Ack())

    decision = walk.send(LevelFailed("inc-1", 0))

    assert (decision.outcome, decision.effects) == (Outcome.STALE_TIMEOUT, ())


# --- notes and who did what --------------------------------------------------------------


@pytest.mark.parametrize(
    "before",
    [
        pytest.param((), id="healthy, never an incident"),
        pytest.param((alert(1),), id="triggered"),
        pytest.param((alert(1), Ack(by="alice")), id="acknowledged"),
        pytest.param((alert(1), Ack(), Healthy()), id="resolved"),
    ],
)
def test_a_note_is_a_timeline_event_and_changes_nothing_else(before: tuple[Event, ...]) -> None:
    """Given a service in any state, when a note on an incident arrives, then it is the
    incident's ``incident.note`` with text and author, and nothing else: no page, no
    timer, and the very same state."""
    walk = Walk(ONE_LEVEL)
    for event in before:
        walk.send(event)
    state = walk.state

    decision = walk.send(Note("inc-1", "restarted db1", by="bob"))

    assert decision.outcome is Outcome.NOTED
    assert decision.state is state
    [note] = decision.effects
    assert note == RecordTimeline(
        "inc-1", "incident.note", walk.now, {"text": "restarted db1", "by": "bob"}
    )


@pytest.mark.parametrize("text", ["", "x" * 4097])
def test_a_note_needs_text_of_1_to_4096_characters(text: str) -> None:
    with pytest.raises(DomainError, match="text"):
        Note("inc-1", text)


def test_acknowledgement_and_resolution_say_who_and_how_when_told() -> None:
    """Given an ack and a healthy event naming a person and the way in, then their timeline
    events name both; unnamed, the ack names only who (or nobody) and the resolution none."""
    walk = Walk(ONE_LEVEL)
    walk.send(alert(1))
    acked = walk.send(Ack(by="Alice", via="sms"))
    resolved = walk.send(Healthy(by="Bob", via="console"))
    walk.send(alert(2))
    quiet = [walk.send(Ack()), walk.send(Healthy())]

    assert [dict(e.detail) for d in (acked, resolved, *quiet) for e in records_of(d)] == [
        {"by": "Alice", "level": 1, "via": "sms"},
        {"level": 1, "by": "Bob", "via": "console"},
        {"by": None, "level": 1},
        {"level": 1},
    ]


def records_of(decision: Decision) -> list[RecordTimeline]:
    return [e for e in decision.effects if isinstance(e, RecordTimeline)]


# --- memory per incident -----------------------------------------------------------------


def test_an_incident_remembers_only_its_most_recent_alert_ids() -> None:
    """Given 5,000 distinct alert ids on one incident, then it remembers at most
    MAX_REMEMBERED_ALERT_IDS + 1 of them and at least the most recent half; a remembered
    repeat changes nothing, and a forgotten one is recorded again (the store's unique
    index keeps it once) rather than refused."""
    walk = Walk(ONE_LEVEL)
    for n in range(5_000):
        walk.send(alert(1, alert_id=f"a-{n}"), after=timedelta(0))
    incident = walk.state.open_incident
    assert incident is not None
    remembered = set(incident.alert_ids)
    assert len(remembered) <= MAX_REMEMBERED_ALERT_IDS + 1
    assert {f"a-{n}" for n in range(5_000 - MAX_REMEMBERED_ALERT_IDS // 2, 5_000)} <= remembered

    repeat = walk.send(alert(1, alert_id="a-4999"))
    assert (repeat.outcome, repeat.effects) == (Outcome.DUPLICATE_ALERT, ())
    forgotten = walk.send(alert(1, alert_id="a-0"))
    assert forgotten.outcome is Outcome.APPENDED
    assert [r.alert_id for r in records(forgotten)] == ["a-0"]
