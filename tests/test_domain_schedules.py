"""The schedule target in the core (CONTRACT §8): whoever is on call at the moment of the page.

Pure: ``decide`` is given the schedules as ``Rota`` values and a time; the tests read
who each decision pages, and what it says when nobody is on call.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from pagerd.core.domain import (
    AckTimeout,
    Alert,
    ArmTimer,
    Decision,
    Notify,
    Outcome,
    RecordTimeline,
    ServiceState,
    decide,
)
from pagerd.core.policy import Level, Policy, ScheduleTarget, SmsTarget
from pagerd.core.schedules import Override, Overrides, Rota, Rotation, Schedule

SERVICE = "payments-api"
WEEK_S = 7 * 24 * 3600
PHONES = {101: "+15550000101", 102: "+15550000102", 103: "+15550000103"}
# Weekly, Monday 09:00 Paris: 101 from Mon 2 Mar 2026, then 102, 103, 101, ...
WEEKLY = Schedule(1, "Europe/Paris", (Rotation(datetime(2026, 3, 2, 9), WEEK_S, (101, 102, 103)),))
# Tuesday 10 Mar 2026, 10:00-12:00 Paris (CET, +01): 103 covers for 102.
TUESDAY = Override(
    1, 103, datetime(2026, 3, 10, 9, tzinfo=UTC), datetime(2026, 3, 10, 11, tzinfo=UTC)
)
ROTAS = {
    "week": Rota("week", WEEKLY, Overrides((TUESDAY,)), PHONES),
    # The rotation starts in 2030: nobody is on call before.
    "later": Rota(
        "later",
        Schedule(1, "Europe/Paris", (Rotation(datetime(2030, 1, 1), WEEK_S, (101,)),)),
        Overrides(),
        PHONES,
    ),
    # 104 is on call but not (any more) in the team.
    "stranger": Rota(
        "stranger",
        Schedule(1, "UTC", (Rotation(datetime(2026, 1, 1), WEEK_S, (104,)),)),
        Overrides(),
        PHONES,
    ),
}
WEEK = ScheduleTarget("week")
LATER = ScheduleTarget("later")
BACKUP = SmsTarget("+15550009999")


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def page(policy: Policy, when: datetime, n: int = 1) -> Decision:
    return decide(ServiceState(SERVICE), Alert("down", f"inc-{n}"), policy, when, rotas=ROTAS)


def pages(decision: Decision) -> list[Notify]:
    return [e for e in decision.effects if isinstance(e, Notify)]


def timeline(decision: Decision) -> list[RecordTimeline]:
    return [e for e in decision.effects if isinstance(e, RecordTimeline)]


def test_a_schedule_target_pages_the_developer_on_call() -> None:
    # Wed 11 Mar 2026 14:00 CET: the second week, 102's.
    decision = page(Policy("p", (Level((WEEK,), 300),)), utc("2026-03-11T13:00:00"))
    [notify] = pages(decision)
    assert (notify.channel, notify.recipient, notify.developer_id) == ("sms", PHONES[102], 102)
    assert notify.reaches_someone


def test_an_override_for_two_hours_of_tuesday_pages_its_developer_in_the_span_only() -> None:
    policy = Policy("p", (Level((WEEK,), 300),))
    paged = {
        when: pages(page(policy, utc(when)))[0].developer_id
        for when in (
            "2026-03-10T08:59:59",  # Tue 09:59:59 CET: the rotation's 102
            "2026-03-10T09:00:00",  # 10:00: the override begins
            "2026-03-10T10:30:00",
            "2026-03-10T10:59:59",
            "2026-03-10T11:00:00",  # 12:00: it ended
            "2026-03-17T09:30:00",  # a week later: no override, 103's own week
        )
    }
    assert list(paged.values()) == [102, 103, 103, 103, 102, 103]


def test_a_handover_between_levels_pages_the_new_developer_at_the_next() -> None:
    """Level 1 pages 101 before Monday 09:00; its timeout after the hand-over pages 102."""
    policy = Policy("p", (Level((WEEK,), 1800), Level((WEEK,), 1800)))
    opened = page(policy, utc("2026-03-09T07:45:00"))  # Mon 9 Mar 08:45 CET
    assert [n.developer_id for n in pages(opened)] == [101]
    escalated = decide(
        opened.state, AckTimeout("inc-1", 0), policy, utc("2026-03-09T08:15:00"), rotas=ROTAS
    )
    assert escalated.outcome is Outcome.ESCALATED
    assert [(n.level, n.developer_id) for n in pages(escalated)] == [(2, 102)]


def test_nobody_on_call_skips_the_page_and_the_levels_other_targets_still_go() -> None:
    decision = page(Policy("p", (Level((LATER, BACKUP), 300),)), utc("2026-03-11T13:00:00"))
    skipped, sms = pages(decision)
    assert skipped.skipped == "nobody is on call on schedule 'later'"
    assert (skipped.failure, skipped.recipient, skipped.developer_id) == (
        None,
        "schedule:later",
        None,
    )
    assert sms.recipient == BACKUP.phone_number
    [event] = [t for t in timeline(decision) if t.type == "notification.skipped"]
    assert event.detail == {
        "notification_id": skipped.notification_id,
        "channel": "sms",
        "level": 1,
        "reason": "nobody is on call on schedule 'later'",
    }
    assert [e for e in decision.effects if isinstance(e, ArmTimer)] != []


def test_a_level_with_nobody_on_call_is_passed_at_once() -> None:
    policy = Policy("p", (Level((LATER,), 300), Level((BACKUP,), 300)))
    now = utc("2026-03-11T13:00:00")
    decision = page(policy, now)
    assert [(n.level, n.recipient) for n in pages(decision)] == [
        (1, "schedule:later"),
        (2, BACKUP.phone_number),
    ]
    [escalated] = [t for t in timeline(decision) if t.type == "incident.escalated"]
    assert escalated.detail["reason"] == "nobody to page at level 1"
    incident = decision.state.incident
    assert incident is not None
    assert (incident.level, incident.ack_deadline) == (2, now + timedelta(seconds=300))


def test_a_policy_with_nobody_on_call_anywhere_is_run_through_at_once() -> None:
    decision = page(Policy("p", (Level((LATER,), 300),), repeat=2), utc("2026-03-11T13:00:00"))
    assert len(pages(decision)) == 3
    incident = decision.state.incident
    assert incident is not None
    assert incident.ack_deadline is None
    assert decision.outcome is Outcome.OPENED


def test_an_unknown_schedule_or_a_developer_gone_from_the_team_fails_the_page() -> None:
    policy = Policy("p", (Level((ScheduleTarget("gone"), ScheduleTarget("stranger")), 300),))
    gone, stranger = pages(page(policy, utc("2026-03-11T13:00:00")))
    assert gone.failure == "schedule 'gone' does not exist"
    assert stranger.failure == "developer 104, on call on schedule 'stranger', is not in its team"
    assert stranger.developer_id == 104
    assert not gone.reaches_someone


@given(st.integers(min_value=0, max_value=20 * WEEK_S))
def test_the_page_goes_to_whoever_on_call_names(offset_s: int) -> None:
    when = utc("2026-03-02T00:00:00") + timedelta(seconds=offset_s)
    [notify] = pages(page(Policy("p", (Level((WEEK,), 300),)), when))
    assert notify.developer_id == ROTAS["week"].on_call(when).developer_id
