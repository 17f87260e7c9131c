"""Who is on call (pagerd.core.schedules) against CONTRACT §8 and docs/schedules.md.

Hand-written tables check the weekly rotation across the DST changes of Europe/Paris
and America/New_York, from the wall clock; hypothesis checks the rules (overrides
win, later layers win, shifts tile time) and compares ``on_call`` with a slow
reference that walks every shift.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pagerd.core.policy import DomainError
from pagerd.core.schedules import (
    LATEST,
    MAX_HANDOVERS,
    MAX_SHIFT_S,
    NO_OVERRIDES,
    OnCall,
    Override,
    Overrides,
    Rotation,
    Schedule,
    next_handovers,
    on_call,
)

WEEK_S = 7 * 24 * 3600
DAY_S = 24 * 3600
TEAM = 1


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def weekly(zone: str, start: str, developer_ids: tuple[int, ...]) -> Schedule:
    return Schedule(TEAM, zone, (Rotation(datetime.fromisoformat(start), WEEK_S, developer_ids),))


def rotation(zone: str, start: str, shift_s: int, developer_ids: tuple[int, ...]) -> Schedule:
    return Schedule(TEAM, zone, (Rotation(datetime.fromisoformat(start), shift_s, developer_ids),))


# --- a weekly Monday 09:00 rotation across DST, from the wall clock ----------------------

# Europe/Paris 2026: CET (+01) until Sun 29 Mar 01:00Z, CEST (+02) until Sun 25 Oct 01:00Z.
# Weeks from Mon 2 Mar 09:00: 101, 102, 103, 101, ...; the week of Mon 19 Oct is the 33rd.
PARIS = weekly("Europe/Paris", "2026-03-02T09:00:00", (101, 102, 103))
PARIS_TABLE = [
    # (instant, the wall clock there, who, until)
    ("2026-03-23T07:59:59", "Mon 23 Mar 08:59:59 CET", 103, "2026-03-23T08:00:00"),
    ("2026-03-23T08:00:00", "Mon 23 Mar 09:00 CET", 101, "2026-03-30T07:00:00"),
    ("2026-03-29T00:59:59", "Sun 29 Mar 01:59:59 CET", 101, "2026-03-30T07:00:00"),
    ("2026-03-29T01:00:00", "Sun 29 Mar 03:00 CEST", 101, "2026-03-30T07:00:00"),
    ("2026-03-30T06:59:59", "Mon 30 Mar 08:59:59 CEST", 101, "2026-03-30T07:00:00"),
    ("2026-03-30T07:00:00", "Mon 30 Mar 09:00 CEST", 102, "2026-04-06T07:00:00"),
    ("2026-03-30T07:30:00", "Mon 30 Mar 09:30 CEST", 102, "2026-04-06T07:00:00"),
    ("2026-03-30T07:59:59", "Mon 30 Mar 09:59:59 CEST", 102, "2026-04-06T07:00:00"),
    ("2026-04-06T06:59:59", "Mon 6 Apr 08:59:59 CEST", 102, "2026-04-06T07:00:00"),
    ("2026-04-06T07:00:00", "Mon 6 Apr 09:00 CEST", 103, "2026-04-13T07:00:00"),
    ("2026-10-19T06:59:59", "Mon 19 Oct 08:59:59 CEST", 103, "2026-10-19T07:00:00"),
    ("2026-10-19T07:00:00", "Mon 19 Oct 09:00 CEST", 101, "2026-10-26T08:00:00"),
    ("2026-10-25T00:59:59", "Sun 25 Oct 02:59:59 CEST, first pass", 101, "2026-10-26T08:00:00"),
    ("2026-10-25T01:00:00", "Sun 25 Oct 02:00 CET, second pass", 101, "2026-10-26T08:00:00"),
    ("2026-10-26T07:00:00", "Mon 26 Oct 08:00 CET", 101, "2026-10-26T08:00:00"),
    ("2026-10-26T07:59:59", "Mon 26 Oct 08:59:59 CET", 101, "2026-10-26T08:00:00"),
    ("2026-10-26T08:00:00", "Mon 26 Oct 09:00 CET", 102, "2026-11-02T08:00:00"),
    ("2026-11-02T07:59:59", "Mon 2 Nov 08:59:59 CET", 102, "2026-11-02T08:00:00"),
    ("2026-11-02T08:00:00", "Mon 2 Nov 09:00 CET", 103, "2026-11-09T08:00:00"),
    ("2026-11-09T08:00:00", "Mon 9 Nov 09:00 CET", 101, "2026-11-16T08:00:00"),
]

# America/New_York 2026: EST (-05) until Sun 8 Mar 07:00Z, EDT (-04) until Sun 1 Nov 06:00Z.
# Weeks from Mon 2 Feb 09:00: 201, 202, 203, 201, ...; the week of Mon 26 Oct is the 38th.
NEW_YORK = weekly("America/New_York", "2026-02-02T09:00:00", (201, 202, 203))
NEW_YORK_TABLE = [
    ("2026-03-02T13:59:59", "Mon 2 Mar 08:59:59 EST", 201, "2026-03-02T14:00:00"),
    ("2026-03-02T14:00:00", "Mon 2 Mar 09:00 EST", 202, "2026-03-09T13:00:00"),
    ("2026-03-08T06:59:59", "Sun 8 Mar 01:59:59 EST", 202, "2026-03-09T13:00:00"),
    ("2026-03-08T07:00:00", "Sun 8 Mar 03:00 EDT", 202, "2026-03-09T13:00:00"),
    ("2026-03-09T12:59:59", "Mon 9 Mar 08:59:59 EDT", 202, "2026-03-09T13:00:00"),
    ("2026-03-09T13:00:00", "Mon 9 Mar 09:00 EDT", 203, "2026-03-16T13:00:00"),
    ("2026-03-09T13:30:00", "Mon 9 Mar 09:30 EDT", 203, "2026-03-16T13:00:00"),
    ("2026-03-16T12:59:59", "Mon 16 Mar 08:59:59 EDT", 203, "2026-03-16T13:00:00"),
    ("2026-03-16T13:00:00", "Mon 16 Mar 09:00 EDT", 201, "2026-03-23T13:00:00"),
    ("2026-03-23T13:00:00", "Mon 23 Mar 09:00 EDT", 202, "2026-03-30T13:00:00"),
    ("2026-10-26T12:59:59", "Mon 26 Oct 08:59:59 EDT", 202, "2026-10-26T13:00:00"),
    ("2026-10-26T13:00:00", "Mon 26 Oct 09:00 EDT", 203, "2026-11-02T14:00:00"),
    ("2026-11-01T05:59:59", "Sun 1 Nov 01:59:59 EDT, first pass", 203, "2026-11-02T14:00:00"),
    ("2026-11-01T06:00:00", "Sun 1 Nov 01:00 EST, second pass", 203, "2026-11-02T14:00:00"),
    ("2026-11-01T06:30:00", "Sun 1 Nov 01:30 EST, second pass", 203, "2026-11-02T14:00:00"),
    ("2026-11-02T13:00:00", "Mon 2 Nov 08:00 EST", 203, "2026-11-02T14:00:00"),
    ("2026-11-02T13:59:59", "Mon 2 Nov 08:59:59 EST", 203, "2026-11-02T14:00:00"),
    ("2026-11-02T14:00:00", "Mon 2 Nov 09:00 EST", 201, "2026-11-09T14:00:00"),
    ("2026-11-09T13:59:59", "Mon 9 Nov 08:59:59 EST", 201, "2026-11-09T14:00:00"),
    ("2026-11-09T14:00:00", "Mon 9 Nov 09:00 EST", 202, "2026-11-16T14:00:00"),
]


@pytest.mark.parametrize(
    ("schedule", "at", "wall", "developer", "until"),
    [(PARIS, *row) for row in PARIS_TABLE] + [(NEW_YORK, *row) for row in NEW_YORK_TABLE],
    ids=[f"Paris {row[1]}" for row in PARIS_TABLE]
    + [f"New York {row[1]}" for row in NEW_YORK_TABLE],
)
def test_a_weekly_rotation_hands_over_at_0900_local_across_dst(
    schedule: Schedule, at: str, wall: str, developer: int, until: str
) -> None:
    answer = on_call(schedule, NO_OVERRIDES, utc(at))

    assert answer.developer_id == developer, wall
    assert answer.until == utc(until), wall
    assert answer.since is not None
    assert answer.since <= utc(at)


def test_the_instants_of_the_tables_are_the_wall_clock_times_they_name() -> None:
    for zone, table in (("Europe/Paris", PARIS_TABLE), ("America/New_York", NEW_YORK_TABLE)):
        for at, wall, _, _ in table:
            local = utc(at).astimezone(ZoneInfo(zone))
            for part in (local.strftime("%a %-d %b %H:%M"), local.strftime(" %Z")):
                assert part in wall, (at, wall)


# --- hand-overs at wall times that do not exist, or happen twice ------------------------


def test_a_handover_in_a_spring_forward_gap_happens_at_the_first_instant_after_it() -> None:
    # Paris, Sun 29 Mar 2026: 02:00 CET jumps to 03:00 CEST at 01:00Z; 02:30 never happens.
    daily = rotation("Europe/Paris", "2026-03-27T02:30:00", DAY_S, (1, 2, 3))

    before = on_call(daily, NO_OVERRIDES, utc("2026-03-29T00:59:59"))
    after = on_call(daily, NO_OVERRIDES, utc("2026-03-29T01:00:00"))

    assert before == OnCall(2, utc("2026-03-28T01:30:00"), utc("2026-03-29T01:00:00"))
    assert after == OnCall(3, utc("2026-03-29T01:00:00"), utc("2026-03-30T00:30:00"))


def test_a_handover_in_a_fall_back_fold_happens_at_its_first_occurrence() -> None:
    # Paris, Sun 25 Oct 2026: 02:00-03:00 happens twice, first CEST (00:00Z), then CET.
    daily = rotation("Europe/Paris", "2026-10-23T02:30:00", DAY_S, (1, 2, 3))

    first_pass = on_call(daily, NO_OVERRIDES, utc("2026-10-25T00:30:00"))

    # The shift that begins in the fold is 25 hours long: no second hand-over at 02:30 CET.
    assert first_pass == OnCall(3, utc("2026-10-25T00:30:00"), utc("2026-10-26T01:30:00"))
    # 02:10 CET, in the second pass: the clocks showed 02:30 already, an hour ago.
    assert on_call(daily, NO_OVERRIDES, utc("2026-10-25T01:10:00")) == first_pass
    assert on_call(daily, NO_OVERRIDES, utc("2026-10-25T01:30:00")) == first_pass


def test_new_york_handovers_at_a_missing_and_at_a_repeated_time() -> None:
    missing = rotation("America/New_York", "2026-03-07T02:30:00", DAY_S, (1, 2))
    repeated = rotation("America/New_York", "2026-10-31T01:30:00", DAY_S, (1, 2))

    # 02:30 on Sun 8 Mar does not exist: the hand-over is at 03:00 EDT, 07:00Z.
    assert on_call(missing, NO_OVERRIDES, utc("2026-03-08T06:59:59")).developer_id == 1
    assert on_call(missing, NO_OVERRIDES, utc("2026-03-08T07:00:00")).developer_id == 2
    # 01:30 on Sun 1 Nov happens twice: the hand-over is at the first, 01:30 EDT, 05:30Z.
    assert on_call(repeated, NO_OVERRIDES, utc("2026-11-01T05:29:59")).developer_id == 1
    assert on_call(repeated, NO_OVERRIDES, utc("2026-11-01T05:30:00")) == OnCall(
        2, utc("2026-11-01T05:30:00"), utc("2026-11-02T06:30:00")
    )


def test_shifts_shorter_than_a_gap_that_fall_in_it_are_skipped() -> None:
    # Half-hour shifts: the 02:00 and 02:30 hand-overs both happen at 03:00 CEST (01:00Z),
    # so the developers of those two shifts (3 and 4) are skipped this once.
    half_hours = rotation("Europe/Paris", "2026-03-29T01:00:00", 1800, (1, 2, 3, 4, 5))

    answers = next_handovers(half_hours, NO_OVERRIDES, utc("2026-03-29T00:00:00"), 3)

    assert answers == (
        OnCall(2, utc("2026-03-29T00:30:00"), utc("2026-03-29T01:00:00")),
        OnCall(5, utc("2026-03-29T01:00:00"), utc("2026-03-29T01:30:00")),
        OnCall(1, utc("2026-03-29T01:30:00"), utc("2026-03-29T02:00:00")),
    )


def test_a_shift_that_begins_in_a_fold_runs_to_the_next_handover_after_it() -> None:
    half_hours = rotation("Europe/Paris", "2026-10-25T02:00:00", 1800, (1, 2, 3))

    # 02:00 CEST (00:00Z), 02:30 CEST (00:30Z), then 03:00 CET (02:00Z): 90 minutes,
    # through the second pass of 02:00-03:00 (01:00Z-02:00Z).
    for at in ("2026-10-25T00:30:00", "2026-10-25T01:10:00", "2026-10-25T01:59:59"):
        assert on_call(half_hours, NO_OVERRIDES, utc(at)) == OnCall(
            2, utc("2026-10-25T00:30:00"), utc("2026-10-25T02:00:00")
        ), at


# --- overrides and layers ----------------------------------------------------------------


def test_a_two_hour_override_on_a_tuesday() -> None:
    # Tue 31 Mar 2026 14:00-16:00 in Paris (CEST): 12:00Z-14:00Z. The week's rotation is 102.
    paris = ZoneInfo("Europe/Paris")
    cover = Override(
        1,
        developer_id=109,
        start=datetime(2026, 3, 31, 14, 0, tzinfo=paris),
        end=datetime(2026, 3, 31, 16, 0, tzinfo=paris),
    )
    overrides = Overrides([cover])

    assert on_call(PARIS, overrides, utc("2026-03-31T11:59:59")) == OnCall(
        102, utc("2026-03-30T07:00:00"), utc("2026-03-31T12:00:00")
    )
    assert on_call(PARIS, overrides, utc("2026-03-31T12:00:00")) == OnCall(
        109, utc("2026-03-31T12:00:00"), utc("2026-03-31T14:00:00")
    )
    assert on_call(PARIS, overrides, utc("2026-03-31T13:59:59.999999")).developer_id == 109
    assert on_call(PARIS, overrides, utc("2026-03-31T14:00:00")) == OnCall(
        102, utc("2026-03-31T14:00:00"), utc("2026-04-06T07:00:00")
    )
    assert cover.start == utc("2026-03-31T12:00:00")  # kept in UTC


def test_where_overrides_overlap_the_most_recently_created_wins() -> None:
    older = Override(7, 301, utc("2026-03-31T10:00:00"), utc("2026-03-31T18:00:00"))
    newer = Override(8, 302, utc("2026-03-31T12:00:00"), utc("2026-03-31T14:00:00"))
    overrides = Overrides([newer, older])

    def who(at: str) -> OnCall:
        return on_call(PARIS, overrides, utc(at))

    assert who("2026-03-31T11:00:00") == OnCall(
        301, utc("2026-03-31T10:00:00"), utc("2026-03-31T12:00:00")
    )
    assert who("2026-03-31T12:00:00") == OnCall(
        302, utc("2026-03-31T12:00:00"), utc("2026-03-31T14:00:00")
    )
    assert who("2026-03-31T15:00:00") == OnCall(
        301, utc("2026-03-31T14:00:00"), utc("2026-03-31T18:00:00")
    )
    assert who("2026-03-31T18:00:00").developer_id == 102


def test_an_older_override_inside_a_newer_one_never_shows() -> None:
    newer = Override(2, 302, utc("2026-03-31T10:00:00"), utc("2026-03-31T18:00:00"))
    older = Override(1, 301, utc("2026-03-31T12:00:00"), utc("2026-03-31T14:00:00"))

    answer = on_call(PARIS, Overrides([older, newer]), utc("2026-03-31T13:00:00"))

    assert answer == OnCall(302, utc("2026-03-31T10:00:00"), utc("2026-03-31T18:00:00"))


def test_a_later_layer_takes_over_from_its_start_and_nobody_is_on_call_before_any() -> None:
    schedule = Schedule(
        TEAM,
        "Europe/Paris",
        (
            Rotation(datetime(2026, 4, 10, 0), WEEK_S, (106,)),  # a later layer began first
            Rotation(datetime(2026, 3, 2, 9), WEEK_S, (101, 102, 103)),
            Rotation(datetime(2026, 4, 1, 18), DAY_S, (104, 105)),
        ),
    )

    def who(at: str) -> OnCall:
        return on_call(schedule, NO_OVERRIDES, utc(at))

    assert who("2026-03-02T07:59:59") == OnCall(None, None, utc("2026-03-02T08:00:00"))
    assert who("2026-04-01T15:59:59") == OnCall(
        102, utc("2026-03-30T07:00:00"), utc("2026-04-01T16:00:00")
    )
    assert who("2026-04-02T16:00:00") == OnCall(
        105, utc("2026-04-02T16:00:00"), utc("2026-04-03T16:00:00")
    )
    assert who("2026-04-10T12:00:00").developer_id == 104  # never 106


def test_a_schedule_compares_by_value_whatever_sequences_it_was_given() -> None:
    given_lists = Schedule(TEAM, "UTC", [Rotation(datetime(2026, 3, 2), DAY_S, [1, 2])])  # type: ignore[arg-type]

    assert given_lists == Schedule(TEAM, "UTC", (Rotation(datetime(2026, 3, 2), DAY_S, (1, 2)),))
    assert hash(given_lists) == hash(Schedule(TEAM, "UTC", given_lists.rotations))


def test_two_layers_that_begin_together_answer_with_the_later() -> None:
    start = datetime(2026, 3, 2, 9)
    schedule = Schedule(
        TEAM,
        "UTC",
        (Rotation(start, DAY_S, (1,)), Rotation(start, DAY_S, (2,)), Rotation(start, DAY_S, (3,))),
    )

    assert on_call(schedule, NO_OVERRIDES, utc("2026-03-02T09:00:00")).developer_id == 3


def test_next_handovers_counts_rotation_and_override_boundaries() -> None:
    cover = Override(1, 109, utc("2026-03-31T12:00:00"), utc("2026-03-31T14:00:00"))

    handovers = next_handovers(PARIS, Overrides([cover]), utc("2026-03-30T12:00:00"), 3)

    assert handovers == (
        OnCall(109, utc("2026-03-31T12:00:00"), utc("2026-03-31T14:00:00")),
        OnCall(102, utc("2026-03-31T14:00:00"), utc("2026-04-06T07:00:00")),
        OnCall(103, utc("2026-04-06T07:00:00"), utc("2026-04-13T07:00:00")),
    )
    assert next_handovers(PARIS, NO_OVERRIDES, utc("2026-03-30T12:00:00"), 0) == ()


def test_next_handovers_stop_where_the_answer_stops_changing() -> None:
    only_overrides = Schedule(TEAM, "UTC", ())
    cover = Override(1, 109, utc("2026-03-31T12:00:00"), utc("2026-03-31T14:00:00"))
    yearly = Schedule(TEAM, "UTC", (Rotation(datetime(8999, 1, 1), MAX_SHIFT_S, (1, 2)),))

    assert next_handovers(only_overrides, Overrides([cover]), utc("2026-03-30T00:00:00"), 3) == (
        OnCall(109, utc("2026-03-31T12:00:00"), utc("2026-03-31T14:00:00")),
        OnCall(None, utc("2026-03-31T14:00:00"), None),
    )
    # The next hand-over falls past the last instant pagerd answers for.
    assert next_handovers(yearly, NO_OVERRIDES, utc("8999-06-01T00:00:00"), 3) == ()
    assert on_call(yearly, NO_OVERRIDES, utc("8999-06-01T00:00:00")).until == utc(
        "9000-01-02T00:00:00"
    )
    assert utc("9000-01-01T00:00:00") == LATEST


# --- validation --------------------------------------------------------------------------

GOOD_ROTATION = Rotation(datetime(2026, 3, 2, 9), WEEK_S, (1, 2))
AT = utc("2026-03-31T12:00:00")


def schedule_with(**rotation_fields: Any) -> Callable[[], object]:
    fields: dict[str, Any] = {"start": GOOD_ROTATION.start, "shift_s": WEEK_S}
    fields["developer_ids"] = (1, 2)
    fields.update(rotation_fields)
    return lambda: Schedule(TEAM, "Europe/Paris", (GOOD_ROTATION, Rotation(**fields)))


def zone(key: Any) -> Callable[[], object]:
    return lambda: Schedule(TEAM, key, (GOOD_ROTATION,))


def override(**fields: Any) -> Callable[[], object]:
    values: dict[str, Any] = {"id": 1, "developer_id": 1, "start": AT}
    values["end"] = AT + timedelta(hours=2)
    values.update(fields)
    return lambda: Override(**values)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (zone("Mars/Olympus_Mons"), "time_zone"),
        (zone("europe/paris"), "time_zone"),
        (zone(""), "time_zone"),
        (zone("../../etc/passwd"), "time_zone"),
        (zone("Europe"), "time_zone"),  # a directory of the zone database
        (zone("localtime"), "time_zone"),
        (zone("right/Europe/Paris"), "time_zone"),
        (zone("x" * 300), "time_zone"),
        (zone("Europe/Paris\x00"), "time_zone"),
        (zone(None), "time_zone"),
        (lambda: Schedule("team", "UTC", ()), "team_id"),  # type: ignore[arg-type]
        (schedule_with(shift_s=0), "rotations[1].shift_s"),
        (schedule_with(shift_s=-3600), "rotations[1].shift_s"),
        (schedule_with(shift_s=MAX_SHIFT_S + 1), "rotations[1].shift_s"),
        (schedule_with(shift_s=3600.5), "rotations[1].shift_s"),
        (schedule_with(shift_s=True), "rotations[1].shift_s"),
        (schedule_with(developer_ids=()), "rotations[1].developer_ids"),
        (schedule_with(developer_ids=(1, "2")), "rotations[1].developer_ids[1]"),
        (schedule_with(start=datetime(2026, 3, 2, 9, tzinfo=UTC)), "rotations[1].start"),
        (schedule_with(start="2026-03-02T09:00:00"), "rotations[1].start"),
        (schedule_with(start=datetime(1899, 12, 31)), "rotations[1].start"),
        (schedule_with(start=datetime(9000, 1, 1)), "rotations[1].start"),
        (override(end=AT), "end"),
        (override(end=AT - timedelta(seconds=1)), "end"),
        (override(start=datetime(2026, 3, 31, 12)), "start"),
        (override(end=datetime(9999, 1, 1, tzinfo=UTC)), "end"),
        (override(id=True), "id"),
        (override(developer_id="alice"), "developer_id"),
        (lambda: Overrides([Override(3, 1, AT, AT + timedelta(hours=1))] * 2), "overrides[1].id"),
        (lambda: on_call(PARIS, NO_OVERRIDES, datetime(2026, 3, 31, 12)), "at"),
        (lambda: on_call(PARIS, NO_OVERRIDES, utc("1899-12-31T23:59:59")), "at"),
        (lambda: on_call(PARIS, NO_OVERRIDES, utc("9000-01-01T00:00:00")), "at"),
        # Past datetime's own range once in UTC: refused, not an OverflowError.
        (
            lambda: on_call(PARIS, NO_OVERRIDES, datetime.fromisoformat("9999-12-31T23:59-05:00")),
            "at",
        ),
        (
            lambda: on_call(PARIS, NO_OVERRIDES, datetime.fromisoformat("0001-01-01T00:00+05:00")),
            "at",
        ),
        (lambda: next_handovers(PARIS, NO_OVERRIDES, datetime(2026, 3, 31), 3), "after"),
        (lambda: next_handovers(PARIS, NO_OVERRIDES, AT, -1), "count"),
        (lambda: next_handovers(PARIS, NO_OVERRIDES, AT, MAX_HANDOVERS + 1), "count"),
        (lambda: next_handovers(PARIS, NO_OVERRIDES, AT, 2.0), "count"),  # type: ignore[arg-type]
    ],
)
def test_a_refusal_names_the_field(make: Callable[[], object], field: str) -> None:
    with pytest.raises(DomainError) as refused:
        make()

    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: ")
    assert refused.value.problem


@given(st.text(max_size=40))
def test_any_time_zone_name_is_a_zone_or_a_refusal_naming_time_zone(key: str) -> None:
    try:
        Schedule(TEAM, key, (GOOD_ROTATION,))
    except DomainError as refused:
        field = refused.field
    else:
        field = "time_zone"
    assert field == "time_zone"


# --- properties --------------------------------------------------------------------------

ZONES = (
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",  # a 30-minute DST change
    "Pacific/Chatham",  # +12:45 / +13:45
    "Antarctica/Troll",  # a 2-hour DST change
    "Pacific/Apia",  # skipped Fri 30 Dec 2011 whole
    "America/Sao_Paulo",
    "Africa/Casablanca",  # four changes in some years
    "Europe/Dublin",  # "negative DST" in the zone data
    "America/St_Johns",
    "Asia/Kolkata",
    "UTC",
)


@functools.cache
def transitions(key: str) -> tuple[datetime, ...]:
    """Each instant at which ``key``'s offset changed, 2010-2028, to the second."""
    tz = ZoneInfo(key)

    def offset_at(at: datetime) -> timedelta | None:
        return at.astimezone(tz).utcoffset()

    found = []
    day = utc("2010-01-01T00:00:00")
    while day < utc("2028-01-01T00:00:00"):
        low, high = day, day + timedelta(days=1)
        if offset_at(low) != offset_at(high):
            while high - low > timedelta(seconds=1):
                middle = low + timedelta(seconds=(high - low) // timedelta(seconds=2))
                low, high = (low, middle) if offset_at(middle) != offset_at(low) else (middle, high)
            found.append(high)
        day += timedelta(days=1)
    return tuple(found) or (utc("2026-03-29T01:00:00"),)


@dataclass(frozen=True)
class Case:
    """A random schedule near a change of its zone's offset, and an instant to ask about."""

    schedule: Schedule
    overrides: tuple[Override, ...]
    at: datetime
    horizon: datetime  # every shift the reference walks ends before this


@st.composite
def cases(draw: st.DrawFn, layers: int = 3, overrides: int = 4, min_layers: int = 0) -> Case:
    key = draw(st.sampled_from(ZONES))
    tz = ZoneInfo(key)
    anchor = draw(st.sampled_from(transitions(key)))
    window_s = draw(st.sampled_from([DAY_S, 3 * DAY_S, 20 * DAY_S, 90 * DAY_S]))
    shortest = max(1, window_s // 200)
    local_anchor = anchor.astimezone(tz).replace(tzinfo=None)
    # The wall time the clocks reached just before they changed: a gap begins there, a
    # fold ends there.
    edge = (anchor - timedelta(seconds=1)).astimezone(tz).replace(tzinfo=None)

    def seconds_around(low: int, high: int) -> st.SearchStrategy[timedelta]:
        whole = st.integers(low, high).map(lambda s: timedelta(seconds=s))
        fine = st.integers(low * 10**6, high * 10**6).map(lambda us: timedelta(microseconds=us))
        return whole | fine

    rotations = draw(
        st.lists(
            st.builds(
                Rotation,
                start=seconds_around(-window_s, window_s).map(lambda d: local_anchor + d)
                | st.builds(
                    lambda minutes, days: edge + timedelta(minutes=minutes, days=-days),
                    st.integers(-180, 180),
                    st.integers(0, window_s // DAY_S),
                ),
                shift_s=st.sampled_from([900, 1800, 3600, 5400, 7200, DAY_S, WEEK_S]).filter(
                    lambda s: shortest <= s <= window_s
                )
                | st.integers(shortest, window_s),
                developer_ids=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple),
            ),
            min_size=min_layers,
            max_size=layers,
        )
    )
    spans = draw(
        st.lists(
            st.tuples(
                seconds_around(-window_s, 2 * window_s),
                st.integers(1, window_s),
                st.integers(7, 9),
            ),
            max_size=overrides,
        )
    )
    chosen = tuple(
        Override(index, developer, anchor + begin, anchor + begin + timedelta(seconds=length))
        for index, (begin, length, developer) in enumerate(spans)
    )
    at = anchor + draw(seconds_around(-window_s, 2 * window_s) | seconds_around(-7200, 7200))
    return Case(
        Schedule(TEAM, key, tuple(rotations)), chosen, at, anchor + timedelta(seconds=6 * window_s)
    )


# --- the reference: a slow walk over every shift -----------------------------------------


def first_showing(tz: ZoneInfo, wall: datetime) -> datetime:
    """The first instant at which the clocks show ``wall`` or later, by trial and by scan."""
    shown = [
        instant
        for fold in (0, 1)
        if (instant := wall.replace(tzinfo=tz, fold=fold).astimezone(UTC))
        .astimezone(tz)
        .replace(tzinfo=None)
        == wall
    ]
    if shown:
        return min(shown)
    # Nobody's clock ever shows ``wall``: scan minutes, then seconds, for the first after.
    # Clocks change on whole seconds: scan those.
    at = wall.replace(tzinfo=UTC, second=0, microsecond=0) - timedelta(hours=15)

    def showing(instant: datetime) -> bool:
        return instant.astimezone(tz).replace(tzinfo=None) >= wall

    while not showing(at + timedelta(minutes=1)):
        at += timedelta(minutes=1)
    while not showing(at):
        at += timedelta(seconds=1)
    return at


class Reference:
    """on_call by brute force: every hand-over of every layer listed, every override tried."""

    def __init__(self, case: Case) -> None:
        self.case = case
        tz = ZoneInfo(case.schedule.time_zone)
        self.handovers: list[list[datetime]] = []
        for layer in case.schedule.rotations:
            walked = [first_showing(tz, layer.start)]
            turn = 0
            while walked[-1] <= case.horizon:
                turn += 1
                walked.append(
                    first_showing(tz, layer.start + timedelta(seconds=turn * layer.shift_s))
                )
            self.handovers.append(walked)

    def source(self, at: datetime) -> tuple[int | None, tuple[object, ...]]:
        """Who, and what names them: an override's id, or a layer and its shift."""
        covering = [o for o in self.case.overrides if o.start <= at < o.end]
        if covering:
            winner = max(covering, key=lambda o: o.id)
            return winner.developer_id, ("override", winner.id)
        for index in reversed(range(len(self.handovers))):
            walked = self.handovers[index]
            if walked[0] <= at:
                turn = max(k for k, handover in enumerate(walked) if handover <= at)
                ids = self.case.schedule.rotations[index].developer_ids
                return ids[turn % len(ids)], ("layer", index, turn)
        return None, ()

    def boundaries(self) -> list[datetime]:
        points = {o.start for o in self.case.overrides} | {o.end for o in self.case.overrides}
        for walked in self.handovers:
            points.update(walked)
        return sorted(points)

    def on_call(self, at: datetime) -> OnCall:
        developer, source = self.source(at)
        points = self.boundaries()
        until = next((p for p in points if p > at and self.source(p)[1] != source), None)
        since = next(
            (
                p
                for p in reversed(points)
                if p <= at and self.source(p - timedelta(microseconds=1))[1] != source
            ),
            None,
        )
        return OnCall(developer, since, until)


SLOW = settings(deadline=None, max_examples=100)


@SLOW
@given(cases())
def test_on_call_agrees_with_a_walk_over_every_shift(case: Case) -> None:
    answer = on_call(case.schedule, Overrides(case.overrides), case.at)

    assert answer == Reference(case).on_call(case.at)


@SLOW
@given(cases(), st.data())
def test_an_override_always_wins(case: Case, data: st.DataObject) -> None:
    overrides = case.overrides or (Override(99, 9, case.at, case.at + timedelta(hours=1)),)
    chosen = data.draw(st.sampled_from(overrides))
    at = chosen.start + (chosen.end - chosen.start) * data.draw(st.floats(0, 0.999))
    newest = max((o for o in overrides if o.start <= at < o.end), key=lambda o: o.id)

    answer = on_call(case.schedule, Overrides(overrides), at)

    assert answer.developer_id == newest.developer_id


@SLOW
@given(cases(overrides=0))
def test_a_later_layer_wins_over_an_earlier_one_where_it_names_someone(case: Case) -> None:
    alone = [
        on_call(Schedule(TEAM, case.schedule.time_zone, (layer,)), NO_OVERRIDES, case.at)
        for layer in case.schedule.rotations
    ]
    named = [answer.developer_id for answer in alone if answer.developer_id is not None]

    answer = on_call(case.schedule, NO_OVERRIDES, case.at)

    assert answer.developer_id == (named[-1] if named else None)


def offset(tz: ZoneInfo, at: datetime) -> timedelta:
    return at.astimezone(tz).utcoffset() or timedelta(0)


@SLOW
@given(cases(layers=1, overrides=0, min_layers=1), st.integers(1, 40))
def test_one_rotations_shifts_tile_time_in_member_order(case: Case, steps: int) -> None:
    layer = case.schedule.rotations[0]
    distinct = Rotation(layer.start, layer.shift_s, tuple(range(10, 10 + len(layer.developer_ids))))
    schedule = Schedule(TEAM, case.schedule.time_zone, (distinct,))
    tz = ZoneInfo(schedule.time_zone)
    members = distinct.developer_ids

    answer = on_call(schedule, NO_OVERRIDES, case.at)
    for _ in range(steps):
        assert answer.until is not None
        holds_to = answer.until - timedelta(microseconds=1)
        assert on_call(schedule, NO_OVERRIDES, holds_to) == answer
        if answer.since is not None:
            assert on_call(schedule, NO_OVERRIDES, answer.since) == answer
        following = on_call(schedule, NO_OVERRIDES, answer.until)
        assert following.since == answer.until  # no gap, no overlap
        turn = -1 if answer.developer_id is None else members.index(answer.developer_id)
        if following.developer_id != members[(turn + 1) % len(members)]:
            # Only shifts that lie wholly in a spring-forward gap are skipped.
            assert offset(tz, holds_to) < offset(tz, answer.until)
        answer = following


@SLOW
@given(cases(), st.integers(0, 6))
def test_answers_hold_from_since_to_until_and_next_handovers_chain(case: Case, count: int) -> None:
    overrides = Overrides(case.overrides)

    answer = on_call(case.schedule, overrides, case.at)
    handovers = next_handovers(case.schedule, overrides, case.at, count)

    assert answer.since is None or answer.since <= case.at
    assert answer.until is None or answer.until > case.at
    previous = answer
    for handover in handovers:
        assert handover.since == previous.until
        assert handover.since is not None
        assert handover.until is None or handover.until > handover.since
        previous = handover
    assert len(handovers) == count or previous.until is None
