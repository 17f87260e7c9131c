"""Stateful property test of the escalation core: random event sequences against CONTRACT §6.

A hypothesis state machine feeds ``decide`` alerts, acks, ack timeouts (live and
stale), healthy events and policy edits on a forward-only clock, keeps the
history of every decision, and checks the §6 safety rules after each step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pagerd.core.domain import (
    Ack,
    AckTimeout,
    Alert,
    AlertIds,
    ArmTimer,
    CancelTimer,
    Decision,
    Event,
    Healthy,
    Incident,
    IncidentStatus,
    Note,
    Notify,
    Outcome,
    RecordTimeline,
    ServiceState,
    decide,
)
from pagerd.core.policy import (
    EmailTarget,
    Level,
    OnCall,
    Policy,
    Roster,
    SmsTarget,
    TeamTarget,
    WebhookTarget,
)

SERVICE_ID = "payments-api"
START = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

# A small pool, so the same target turns up twice in a level and in several levels.
TARGETS = (
    SmsTarget("+15550000001"),
    SmsTarget("+15550000002"),
    EmailTarget("oncall@example.com"),
    TeamTarget("claims"),
    WebhookTarget("https://chat.example.com/hook"),
)
levels = st.builds(
    Level,
    targets=st.lists(st.sampled_from(TARGETS), min_size=1, max_size=3).map(tuple),
    ack_timeout_s=st.floats(min_value=0.3, max_value=900),
)
policies = st.builds(
    Policy,
    id=st.just("payments"),
    levels=st.lists(levels, min_size=1, max_size=4).map(tuple),
    repeat=st.integers(min_value=0, max_value=3),
)
# Mostly short hops, so several events land within one ack timeout.
advances = st.one_of(
    st.just(0.0), st.floats(min_value=0, max_value=5), st.floats(min_value=0, max_value=1000)
).map(lambda seconds: timedelta(seconds=seconds))
alert_ids = st.none() | st.sampled_from(["a1", "a2", "a3"])
# Never of the form the incident counter produces, so "random" never names a real incident.
random_ids = st.text(alphabet="xyz", min_size=1, max_size=3)
id_kinds = st.sampled_from(["current", "old", "random"])

NO_OP_OUTCOMES = {
    Outcome.DUPLICATE_ALERT,
    Outcome.ALREADY_ACKNOWLEDGED,
    Outcome.NO_SUCH_OPEN_INCIDENT,
    Outcome.STALE_TIMEOUT,
    Outcome.ALREADY_HEALTHY,
}
ROSTERS = {"claims": Roster(3, "claims", (OnCall(31, "+15550003101"),))}


@dataclass(frozen=True, slots=True)
class Step:
    """One decision of the run, kept so a failure can be read against its history."""

    before: ServiceState
    event: Event
    policy: Policy
    now: datetime
    decision: Decision


class EscalationMachine(RuleBasedStateMachine):
    """Drives ``decide`` for one service and checks CONTRACT §6 after every decision."""

    def __init__(self) -> None:
        super().__init__()
        self.state = ServiceState(SERVICE_ID)
        self.policy: Policy | None = None
        self.now = START
        self.counter = 0
        self.history: list[Step] = []
        self.incident_ids: list[str] = []  # in opening order
        self.resolved: set[str] = set()
        self.acked: set[str] = set()
        self.exhausted: set[str] = set()
        self.open_alert_ids: set[str] = set()
        self.level: dict[str, int] = {}  # 1-based level last paged, per incident
        self.rounds: dict[str, int] = {}  # times level 1 was paged, per incident
        self.paged_steps: set[tuple[str, int]] = set()
        self.notification_ids: set[str] = set()
        self.armed_policy: Policy | None = None  # policy in force when the live timer was armed

    # --- rules ---------------------------------------------------------------------------

    @initialize(policy=policies)
    def start(self, policy: Policy) -> None:
        self.policy = policy

    @rule(policy=policies)
    def edit_policy(self, policy: Policy) -> None:
        self.policy = policy

    @rule(alert_id=alert_ids, dt=advances)
    def alert(self, alert_id: str | None, dt: timedelta) -> None:
        self.now += dt
        # The counter moves only when an incident opens, so opened ids are inc-0, inc-1, ...
        event = Alert("HTTP 5xx above 5%", f"inc-{self.counter}", alert_id=alert_id)
        self._apply(event)

    @rule(
        kind=st.sampled_from(["current", "old", "random", "none"]),
        pick=st.integers(0, 50),
        random_id=random_ids,
        by=st.none() | st.just("alice"),
        dt=advances,
    )
    def ack(self, kind: str, pick: int, random_id: str, by: str | None, dt: timedelta) -> None:
        self.now += dt
        incident_id = None if kind == "none" else self._pick_id(kind, pick, random_id)
        self._apply(Ack(incident_id, by))

    @rule(
        kind=id_kinds,
        pick=st.integers(0, 50),
        random_id=random_ids,
        step=st.integers(0, 10),
        dt=advances,
    )
    def timeout(self, kind: str, pick: int, random_id: str, step: int, dt: timedelta) -> None:
        self.now += dt
        incident_id = self._pick_id(kind, pick, random_id)
        incident = self.state.open_incident
        deadline = None if incident is None else incident.ack_deadline
        if (
            incident is not None
            and deadline is not None
            and (incident.id, incident.step) == (incident_id, step)
        ):
            # This is the armed timer: a real one cannot fire before its deadline.
            self.now = max(self.now, deadline)
        self._apply(AckTimeout(incident_id, step))

    @precondition(lambda self: self._armed() is not None)
    @rule(times=st.integers(1, 4), dt=advances)
    def fire_armed_timer(self, times: int, dt: timedelta) -> None:
        # Several in a row, so incidents reach deep levels and later rounds before an edit.
        for _ in range(times):
            incident = self._armed()
            if incident is None or incident.ack_deadline is None:
                return
            self.now = max(self.now, incident.ack_deadline) + dt
            self._apply(AckTimeout(incident.id, incident.step))

    @rule(dt=advances)
    def healthy(self, dt: timedelta) -> None:
        self.now += dt
        self._apply(Healthy())

    @rule(kind=id_kinds, pick=st.integers(0, 50), random_id=random_ids, dt=advances)
    def note(self, kind: str, pick: int, random_id: str, dt: timedelta) -> None:
        self.now += dt
        self._apply(Note(self._pick_id(kind, pick, random_id), "looking", by="alice"))

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def state_is_consistent(self) -> None:
        """The state agrees with the model; also checked after each decision of a rule."""
        self._at_most_one_open_incident()
        self._unhealthy_iff_open()
        self._status_matches_model()
        self._timer_armed_exactly_while_paging()
        self._rounds_match_level_one_pages()

    def _at_most_one_open_incident(self) -> None:
        unresolved = [i for i in self.incident_ids if i not in self.resolved]
        assert len(unresolved) <= 1, unresolved
        incident = self.state.open_incident
        assert unresolved == ([] if incident is None else [incident.id])

    def _unhealthy_iff_open(self) -> None:
        model_open = bool(self.incident_ids) and self.incident_ids[-1] not in self.resolved
        assert self.state.healthy is not model_open
        assert (self.state.open_incident is not None) is model_open

    def _status_matches_model(self) -> None:
        incident = self.state.open_incident
        if incident is not None:
            expected = (
                IncidentStatus.ACKNOWLEDGED
                if incident.id in self.acked
                else IncidentStatus.TRIGGERED
            )
            assert incident.status is expected

    def _timer_armed_exactly_while_paging(self) -> None:
        incident = self.state.incident
        armed = incident is not None and incident.ack_deadline is not None
        assert armed is (self._model_live_id() is not None)
        if incident is not None and incident.ack_deadline is not None:
            assert self.armed_policy is not None
            # The policy may have been edited since: check against the one that armed the timer.
            assert incident.level_index < len(self.armed_policy.levels)

    def _rounds_match_level_one_pages(self) -> None:
        incident = self.state.open_incident
        if incident is not None:
            assert incident.round + 1 == self.rounds[incident.id]
            assert incident.level == self.level[incident.id]

    # --- helpers -------------------------------------------------------------------------

    def _armed(self) -> Incident | None:
        incident = self.state.open_incident
        return incident if incident is not None and incident.ack_deadline is not None else None

    def _model_live_id(self) -> str | None:
        """The incident the model says has a live timer: open, unacknowledged, not exhausted."""
        if not self.incident_ids:
            return None
        latest = self.incident_ids[-1]
        if latest in self.resolved or latest in self.acked or latest in self.exhausted:
            return None
        return latest

    def _pick_id(self, kind: str, pick: int, random_id: str) -> str:
        incident = self.state.open_incident
        old = [i for i in self.incident_ids if incident is None or i != incident.id]
        if kind == "current" and incident is not None:
            return incident.id
        if kind == "old" and old:
            return old[pick % len(old)]
        return random_id

    def _apply(self, event: Event) -> None:
        policy = self.policy
        assert policy is not None
        before = self.state
        # The team always has someone: paging nobody is tested in test_domain.
        decision = decide(before, event, policy, self.now, ROSTERS)
        self.history.append(Step(before, event, policy, self.now, decision))
        self._check_outcome(before, event, policy, decision)
        self._check_notifications(before, policy, decision)
        self._check_timer_effects(before, policy, decision)
        self._update_model(event, policy, decision)
        self.state = decision.state
        self.state_is_consistent()

    def _expected_outcome(self, before: ServiceState, event: Event, policy: Policy) -> Outcome:
        incident = before.open_incident
        match event:
            case Alert():
                if incident is None:
                    return Outcome.OPENED
                if event.alert_id is not None and event.alert_id in self.open_alert_ids:
                    return Outcome.DUPLICATE_ALERT
                return Outcome.APPENDED
            case Ack():
                if incident is None or event.incident_id not in (None, incident.id):
                    return Outcome.NO_SUCH_OPEN_INCIDENT
                if incident.id in self.acked:
                    return Outcome.ALREADY_ACKNOWLEDGED
                return Outcome.ACKNOWLEDGED
            case AckTimeout():
                live = self._model_live_id()
                if incident is None or live != event.incident_id or incident.step != event.step:
                    return Outcome.STALE_TIMEOUT
                if self.level[live] < len(policy.levels):
                    return Outcome.ESCALATED
                if self.rounds[live] - 1 < policy.repeat:
                    return Outcome.REPEATED
                return Outcome.EXHAUSTED
            case Healthy():
                return Outcome.ALREADY_HEALTHY if incident is None else Outcome.RESOLVED
            case Note():
                return Outcome.NOTED
            case _:
                raise AssertionError(event)

    def _check_outcome(
        self, before: ServiceState, event: Event, policy: Policy, decision: Decision
    ) -> None:
        assert decision.outcome is self._expected_outcome(before, event, policy)
        if decision.outcome is Outcome.NOTED:
            # A note is its timeline event and nothing else, whatever the state.
            assert decision.state is before
            assert [type(e) for e in decision.effects] == [RecordTimeline]
        if decision.outcome in NO_OP_OUTCOMES:
            # A stale timeout, a foreign ack, a duplicate alert: nothing happens at all.
            assert decision.effects == ()
            assert decision.state == before

    def _check_notifications(
        self, before: ServiceState, policy: Policy, decision: Decision
    ) -> None:
        notes = [e for e in decision.effects if isinstance(e, Notify)]
        pages = decision.outcome in {Outcome.OPENED, Outcome.ESCALATED, Outcome.REPEATED}
        assert bool(notes) is pages
        if not notes:
            return
        after = decision.state.open_incident
        assert after is not None
        assert {n.incident_id for n in notes} == {after.id}
        assert after.id not in self.acked
        assert after.id not in self.resolved
        assert {(n.step, n.level) for n in notes} == {(after.step, after.level)}
        level = notes[0].level
        assert 1 <= level <= len(policy.levels)
        # Each distinct target of the level exactly once, in order (§6.1, §6.8).
        targets = [n.target for n in notes]
        assert len(set(targets)) == len(targets)
        assert tuple(targets) == policy.levels[level - 1].distinct_targets()
        assert (after.id, after.step) not in self.paged_steps
        ids = [n.notification_id for n in notes]
        assert len(set(ids)) == len(ids)
        assert self.notification_ids.isdisjoint(ids)
        assert all(n.service_id == SERVICE_ID for n in notes)
        match decision.outcome:
            case Outcome.OPENED | Outcome.REPEATED:
                assert level == 1
                assert self.rounds.get(after.id, 0) + 1 <= policy.repeat + 1
            case Outcome.ESCALATED:
                assert level == self.level[after.id] + 1
            case _:
                raise AssertionError(decision.outcome)

    def _check_timer_effects(
        self, before: ServiceState, policy: Policy, decision: Decision
    ) -> None:
        arms = [e for e in decision.effects if isinstance(e, ArmTimer)]
        cancels = [e for e in decision.effects if isinstance(e, CancelTimer)]
        paged = any(isinstance(e, Notify) for e in decision.effects)
        after = decision.state.incident
        assert len(arms) == (1 if paged else 0)
        if arms:
            assert after is not None
            assert after.ack_deadline is not None
            assert (arms[0].incident_id, arms[0].step, arms[0].deadline) == (
                after.id,
                after.step,
                after.ack_deadline,
            )
            assert after.level_index < len(policy.levels)
            timeout_s = policy.levels[after.level_index].ack_timeout_s
            assert arms[0].deadline == self.now + timedelta(seconds=timeout_s)
        elif after is not None and after.ack_deadline is not None:
            # No new timer: the armed one is untouched.
            assert before.incident is not None
            assert (before.incident.id, before.incident.step, before.incident.ack_deadline) == (
                after.id,
                after.step,
                after.ack_deadline,
            )
        was_armed = before.incident is not None and before.incident.ack_deadline is not None
        stopped = decision.outcome in {Outcome.ACKNOWLEDGED, Outcome.RESOLVED}
        assert len(cancels) == (1 if was_armed and stopped else 0)
        if cancels:
            assert before.incident is not None
            assert cancels[0].incident_id == before.incident.id

    def _update_model(self, event: Event, policy: Policy, decision: Decision) -> None:
        incident = decision.state.incident
        match decision.outcome:
            case Outcome.OPENED:
                assert incident is not None
                assert incident.id not in self.incident_ids
                self.incident_ids.append(incident.id)
                self.counter += 1
                self.open_alert_ids = set()
            case Outcome.ACKNOWLEDGED:
                assert incident is not None
                self.acked.add(incident.id)
            case Outcome.EXHAUSTED:
                assert incident is not None
                self.exhausted.add(incident.id)
            case Outcome.RESOLVED:
                assert incident is not None
                self.resolved.add(incident.id)
            case _:
                pass
        if isinstance(event, Alert) and event.alert_id is not None:
            self.open_alert_ids.add(event.alert_id)
        notes = [e for e in decision.effects if isinstance(e, Notify)]
        if notes:
            assert incident is not None
            self.level[incident.id] = notes[0].level
            if notes[0].level == 1:
                self.rounds[incident.id] = self.rounds.get(incident.id, 0) + 1
            self.paged_steps.add((incident.id, notes[0].step))
            self.notification_ids.update(n.notification_id for n in notes)
            self.armed_policy = policy


EscalationMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEscalation = EscalationMachine.TestCase


# --- AlertIds: a set that grows in O(log n) -------------------------------------------------


@given(st.lists(st.text(alphabet="abcdef", min_size=1, max_size=3), max_size=300))
def test_alert_ids_behave_as_the_set_of_ids_added(ids: list[str]) -> None:
    grown = AlertIds()
    for alert_id in ids:
        before = grown
        grown = grown.with_id(alert_id)
        assert alert_id not in before or grown is before  # an id seen before changes nothing
    assert set(grown) == set(ids)
    assert grown == AlertIds(reversed(ids))  # equal as sets, whatever the order of adding
    assert len(grown) == len(set(ids))
    assert sorted(grown) == sorted(set(ids))
    assert all(alert_id in grown for alert_id in ids)
    assert "zzz" not in grown
    assert hash(grown) == hash(AlertIds(ids))


def test_alert_ids_stay_in_logarithmically_many_parts() -> None:
    grown = AlertIds(["seed"])
    for n in range(5_000):
        grown = grown.with_id(f"a{n}")
    # Sizes halve along the parts, as a binary counter's digits: at most log2(n) + 1.
    assert len(grown._parts) <= math.log2(len(grown)) + 1
    assert repr(AlertIds(["b", "a"])) == "AlertIds(['a', 'b'])"
