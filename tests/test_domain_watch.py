"""Maintenance windows and heartbeats in the core (CONTRACT §8), table-driven like §6.

Each case is Given (events from a healthy service, with their times) / When (one event)
/ Then (the outcome, the effects by kind, who is paged, and what the state holds). No
event loop, no I/O: time is a fixed instant moved by timedelta.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pagerd.core.domain import (
    HEARTBEAT_ALERT_ID,
    Ack,
    Alert,
    Beat,
    BeatMissed,
    Decision,
    EndMaintenance,
    Event,
    Healthy,
    Maintenance,
    MaintenanceOver,
    Notify,
    Outcome,
    RecordAlert,
    RecordMaintenance,
    RecordTimeline,
    ServiceState,
    StartMaintenance,
    Watch,
    decide,
    heartbeat_message,
)
from pagerd.core.policy import Level, Policy, SmsTarget

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
SERVICE = "cron-backup"
PHONE = SmsTarget("+15550001111")
POLICY = Policy("p", (Level((PHONE,), 300),))
HOUR = T0 + timedelta(hours=1)
BEAT_S = 30.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def alert(n: int, alert_id: str | None = None) -> Alert:
    return Alert("disk full", f"inc-{n}", alert_id=alert_id)


def missed(due_s: float, n: int = 9) -> BeatMissed:
    """The heartbeat due ``due_s`` seconds after T0 did not come."""
    return BeatMissed(at(due_s), f"inc-{n}")


@dataclass(frozen=True, slots=True)
class Case:
    """Given ``given`` ((seconds after T0, event), from a healthy service), when ``when``
    at ``when_s``: then ``outcome``, the effects' kinds in order, and the state.

    The given events see ``heartbeat_s`` = BEAT_S; ``heartbeat_s`` is what the When sees
    (None: the service has none, or it was removed)."""

    given: tuple[tuple[float, Event], ...]
    when: Event
    when_s: float
    outcome: Outcome
    effects: tuple[str, ...]
    healthy: bool
    maintenance: Maintenance | None = None
    beat_due_s: float | None = None  # seconds after T0, None: not set
    heartbeat_s: float | None = BEAT_S
    same_state: bool = False  # the decision hands back the very state it was given


def run(case: Case) -> tuple[ServiceState, Decision]:
    state = ServiceState(SERVICE)
    for seconds, event in case.given:
        state = decide(state, event, POLICY, at(seconds), heartbeat_s=BEAT_S).state
    return state, decide(state, case.when, POLICY, at(case.when_s), heartbeat_s=case.heartbeat_s)


def kinds(decision: Decision) -> tuple[str, ...]:
    return tuple(
        f"timeline:{e.type}" if isinstance(e, RecordTimeline) else type(e).__name__
        for e in decision.effects
    )


WINDOW = Maintenance(HOUR, "deploy")
IN_WINDOW = ((0.0, StartMaintenance(HOUR, "deploy")),)

MAINTENANCE = {
    "given healthy / when a window starts / then it is recorded, nothing paged": Case(
        given=(),
        when=StartMaintenance(HOUR, "deploy"),
        when_s=0,
        outcome=Outcome.MAINTENANCE_STARTED,
        effects=("RecordMaintenance",),
        healthy=True,
        maintenance=WINDOW,
    ),
    "given a window / when the same window is asked again / then nothing to write": Case(
        given=IN_WINDOW,
        when=StartMaintenance(HOUR, "deploy"),
        when_s=5,
        outcome=Outcome.MAINTENANCE_STARTED,
        effects=(),
        healthy=True,
        maintenance=WINDOW,
        same_state=True,
    ),
    "given a window / when another is asked / then it replaces the first": Case(
        given=IN_WINDOW,
        when=StartMaintenance(HOUR + timedelta(hours=1)),
        when_s=5,
        outcome=Outcome.MAINTENANCE_STARTED,
        effects=("RecordMaintenance",),
        healthy=True,
        maintenance=Maintenance(HOUR + timedelta(hours=1)),
    ),
    "given a window / when an alert comes / then recorded on no incident, nobody paged": Case(
        given=IN_WINDOW,
        when=alert(1),
        when_s=60,
        outcome=Outcome.SUPPRESSED,
        effects=("RecordAlert",),
        healthy=True,
        maintenance=WINDOW,
        same_state=True,
    ),
    "given an open incident, then a window / when an alert comes / then it goes on": Case(
        given=((0.0, alert(1)), (1.0, StartMaintenance(HOUR))),
        when=alert(2),
        when_s=60,
        outcome=Outcome.APPENDED,
        effects=("RecordAlert",),
        healthy=False,
        maintenance=Maintenance(HOUR),
    ),
    "given a window past its end, its timer not yet decided / when an alert comes / "
    "then the window ends and the alert pages at once": Case(
        given=IN_WINDOW,
        when=alert(1),
        when_s=3600,
        outcome=Outcome.OPENED,
        effects=(
            "RecordMaintenance",
            "RecordAlert",
            "timeline:incident.triggered",
            "Notify",
            "ArmTimer",
        ),
        healthy=False,
    ),
    "given a window past its end and an open incident / when a repeated alert comes / "
    "then the window ends, nothing else": Case(
        given=((0.0, alert(1, "a")), (1.0, StartMaintenance(HOUR))),
        when=alert(2, "a"),
        when_s=3600,
        outcome=Outcome.DUPLICATE_ALERT,
        effects=("RecordMaintenance",),
        healthy=False,
    ),
    "given a window / when its timer runs out / then it ends": Case(
        given=IN_WINDOW,
        when=MaintenanceOver(HOUR),
        when_s=3600,
        outcome=Outcome.MAINTENANCE_ENDED,
        effects=("RecordMaintenance",),
        healthy=True,
    ),
    "given a window replaced / when the first one's timer runs out / then it is stale": Case(
        given=(*IN_WINDOW, (1.0, StartMaintenance(HOUR + timedelta(hours=1)))),
        when=MaintenanceOver(HOUR),
        when_s=3600,
        outcome=Outcome.STALE_TIMEOUT,
        effects=(),
        healthy=True,
        maintenance=Maintenance(HOUR + timedelta(hours=1)),
        same_state=True,
    ),
    "given a window ended early / when its timer runs out / then it is stale": Case(
        given=(*IN_WINDOW, (1.0, EndMaintenance())),
        when=MaintenanceOver(HOUR),
        when_s=3600,
        outcome=Outcome.STALE_TIMEOUT,
        effects=(),
        healthy=True,
        same_state=True,
    ),
    "given a window / when it is ended / then it is recorded gone": Case(
        given=IN_WINDOW,
        when=EndMaintenance(),
        when_s=10,
        outcome=Outcome.MAINTENANCE_ENDED,
        effects=("RecordMaintenance",),
        healthy=True,
    ),
    "given no window / when one is ended / then nothing changes": Case(
        given=(),
        when=EndMaintenance(),
        when_s=10,
        outcome=Outcome.NO_MAINTENANCE,
        effects=(),
        healthy=True,
        same_state=True,
    ),
    "given a window / when a window ending in the past is asked / then it ends now": Case(
        given=IN_WINDOW,
        when=StartMaintenance(at(5)),
        when_s=10,
        outcome=Outcome.MAINTENANCE_ENDED,
        effects=("RecordMaintenance",),
        healthy=True,
    ),
    "given an open incident and a window / when acknowledged / then as always": Case(
        given=((0.0, alert(1)), *IN_WINDOW),
        when=Ack(by="alice"),
        when_s=10,
        outcome=Outcome.ACKNOWLEDGED,
        effects=("CancelTimer", "timeline:incident.acknowledged"),
        healthy=False,
        maintenance=WINDOW,
    ),
    "given an open incident and a window / when healthy / then resolved as always": Case(
        given=((0.0, alert(1)), *IN_WINDOW),
        when=Healthy(),
        when_s=10,
        outcome=Outcome.RESOLVED,
        effects=("CancelTimer", "timeline:incident.resolved"),
        healthy=True,
        maintenance=WINDOW,
    ),
}

WATCHED = ((0.0, Watch()),)

HEARTBEATS = {
    "given a service with heartbeat_s / when watched / then the first beat is due an "
    "interval from now, nothing to write": Case(
        given=(),
        when=Watch(),
        when_s=0,
        outcome=Outcome.WATCHED,
        effects=(),
        healthy=True,
        beat_due_s=BEAT_S,
    ),
    "given a watched service / when its heartbeat_s is removed / then it is not watched": Case(
        given=WATCHED,
        when=Watch(),
        when_s=5,
        outcome=Outcome.WATCHED,
        effects=(),
        healthy=True,
        heartbeat_s=None,
    ),
    "given a watch due at 30 s / when watched again at 0 s / then nothing changes": Case(
        given=WATCHED,
        when=Watch(),
        when_s=0,
        outcome=Outcome.WATCHED,
        effects=(),
        healthy=True,
        beat_due_s=BEAT_S,
        same_state=True,
    ),
    "given a watched service / when a beat comes / then the next is due later, "
    "nothing to write": Case(
        given=WATCHED,
        when=Beat(),
        when_s=10,
        outcome=Outcome.BEAT,
        effects=(),
        healthy=True,
        beat_due_s=10 + BEAT_S,
    ),
    "given a service without heartbeat_s / when a beat comes / then it is unexpected": Case(
        given=(),
        when=Beat(),
        when_s=10,
        outcome=Outcome.BEAT_UNEXPECTED,
        effects=(),
        healthy=True,
        heartbeat_s=None,
        same_state=True,
    ),
    "given a watched service / when its beat is missed / then the heartbeat's alert "
    "opens an incident and pages; no deadline until the next beat": Case(
        given=WATCHED,
        when=missed(BEAT_S),
        when_s=BEAT_S,
        outcome=Outcome.OPENED,
        effects=("RecordAlert", "timeline:incident.triggered", "Notify", "ArmTimer"),
        healthy=False,
    ),
    "given a beat after the watch / when the first deadline's miss comes / then it is stale": Case(
        given=(*WATCHED, (10.0, Beat())),
        when=missed(BEAT_S),
        when_s=BEAT_S,
        outcome=Outcome.STALE_TIMEOUT,
        effects=(),
        healthy=True,
        beat_due_s=10 + BEAT_S,
        same_state=True,
    ),
    "given a miss / when the same miss comes again / then it is stale: one alert": Case(
        given=(*WATCHED, (BEAT_S, missed(BEAT_S))),
        when=missed(BEAT_S, n=10),
        when_s=BEAT_S + 1,
        outcome=Outcome.STALE_TIMEOUT,
        effects=(),
        healthy=False,
        same_state=True,
    ),
    "given heartbeat_s removed / when the miss comes / then it is stale": Case(
        given=WATCHED,
        when=missed(BEAT_S),
        when_s=BEAT_S,
        outcome=Outcome.STALE_TIMEOUT,
        effects=(),
        healthy=True,
        beat_due_s=BEAT_S,
        heartbeat_s=None,
        same_state=True,
    ),
    "given a missed heartbeat's incident / when a beat comes / then it is resolved": Case(
        given=(*WATCHED, (BEAT_S, missed(BEAT_S))),
        when=Beat(),
        when_s=40,
        outcome=Outcome.RESOLVED,
        effects=("CancelTimer", "timeline:incident.resolved"),
        healthy=True,
        beat_due_s=40 + BEAT_S,
    ),
    "given an incident another alert opened, then a miss / when a beat comes / then the "
    "incident stays open": Case(
        given=(*WATCHED, (1.0, alert(1)), (BEAT_S, missed(BEAT_S))),
        when=Beat(),
        when_s=40,
        outcome=Outcome.BEAT,
        effects=(),
        healthy=False,
        beat_due_s=40 + BEAT_S,
    ),
    "given an open incident / when its beat is missed / then the alert is appended": Case(
        given=(*WATCHED, (1.0, alert(1))),
        when=missed(BEAT_S),
        when_s=BEAT_S,
        outcome=Outcome.APPENDED,
        effects=("RecordAlert",),
        healthy=False,
    ),
    "given a window / when a beat is missed / then the alert is suppressed": Case(
        given=(*WATCHED, (1.0, StartMaintenance(HOUR))),
        when=missed(BEAT_S),
        when_s=BEAT_S,
        outcome=Outcome.SUPPRESSED,
        effects=("RecordAlert",),
        healthy=True,
        maintenance=Maintenance(HOUR),
    ),
    "given a suppressed miss / when a beat comes / then the watch goes on": Case(
        given=(*WATCHED, (1.0, StartMaintenance(HOUR)), (BEAT_S, missed(BEAT_S))),
        when=Beat(),
        when_s=40,
        outcome=Outcome.BEAT,
        effects=(),
        healthy=True,
        maintenance=Maintenance(HOUR),
        beat_due_s=40 + BEAT_S,
    ),
}


@pytest.mark.parametrize(
    "case", [*MAINTENANCE.values(), *HEARTBEATS.values()], ids=[*MAINTENANCE, *HEARTBEATS]
)
def test_maintenance_and_heartbeats(case: Case) -> None:
    before, decision = run(case)
    assert decision.outcome is case.outcome
    assert kinds(decision) == case.effects
    state = decision.state
    assert state.healthy is case.healthy
    assert state.maintenance == case.maintenance
    expected_due = None if case.beat_due_s is None else at(case.beat_due_s)
    assert state.beat_due == expected_due
    assert (state is before) is case.same_state


def test_a_suppressed_alert_is_recorded_whole_on_no_incident() -> None:
    state = decide(ServiceState(SERVICE), StartMaintenance(HOUR, "deploy"), POLICY, T0).state
    decision = decide(state, Alert("disk full", "inc-1", "a-1", "nagios"), POLICY, at(1))
    assert decision.effects == (RecordAlert(None, "disk full", "a-1", "nagios", at(1)),)


def test_a_missed_beat_raises_the_heartbeats_alert() -> None:
    state = decide(ServiceState(SERVICE), Watch(), POLICY, T0, heartbeat_s=1.5).state
    decision = decide(state, BeatMissed(at(1.5), "inc-7"), POLICY, at(1.6), heartbeat_s=1.5)
    incident = decision.state.incident
    assert incident is not None
    assert (incident.id, incident.message, incident.opened_by) == (
        "inc-7",
        "no heartbeat for 1.5 s",
        HEARTBEAT_ALERT_ID,
    )
    [recorded] = [e for e in decision.effects if isinstance(e, RecordAlert)]
    assert (recorded.alert_id, recorded.source) == ("heartbeat", "heartbeat")
    [resolved] = [
        e
        for e in decide(decision.state, Beat(), POLICY, at(2), heartbeat_s=1.5).effects
        if isinstance(e, RecordTimeline)
    ]
    assert resolved.detail == {"level": 1, "by": "heartbeat"}


def test_the_heartbeat_message_names_the_interval_as_people_write_it() -> None:
    assert heartbeat_message(30.0) == "no heartbeat for 30 s"
    assert heartbeat_message(1.5) == "no heartbeat for 1.5 s"


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=3599, allow_nan=False),
            st.sampled_from(["alert", "ack", "healthy", "beat", "miss"]),
        ),
        max_size=30,
    )
)
def test_during_a_window_a_healthy_service_pages_nobody(
    steps: list[tuple[float, str]],
) -> None:
    """Whatever a healthy service receives during its window, no incident opens and
    nobody is paged; every alert is recorded, on no incident."""
    state = decide(ServiceState(SERVICE), StartMaintenance(HOUR), POLICY, T0).state
    state = decide(state, Watch(), POLICY, T0, heartbeat_s=BEAT_S).state
    alerts = 0
    for n, (seconds, kind) in enumerate(sorted(steps)):
        now = at(seconds)
        events: dict[str, Event] = {
            "alert": alert(n),
            "ack": Ack(),
            "healthy": Healthy(),
            "beat": Beat(),
            "miss": BeatMissed(state.beat_due or now, f"inc-{n}"),
        }
        event = events[kind]
        decision = decide(state, event, POLICY, now, heartbeat_s=BEAT_S)
        assert not any(isinstance(e, Notify) for e in decision.effects)
        recorded = [e for e in decision.effects if isinstance(e, RecordAlert)]
        assert all(r.incident_id is None for r in recorded)
        alerts += len(recorded)
        state = decision.state
        assert state.healthy
        assert state.maintenance == Maintenance(HOUR)
    assert alerts >= sum(kind == "alert" for _, kind in steps)


def test_recorded_maintenance_names_the_window() -> None:
    decision = decide(ServiceState(SERVICE), StartMaintenance(HOUR, "deploy"), POLICY, T0)
    assert decision.effects == (RecordMaintenance(Maintenance(HOUR, "deploy")),)
