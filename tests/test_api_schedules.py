"""The API of CONTRACT §8, served in process over a real SQLite file: schedules, overrides,
who is on call, maintenance windows, heartbeats and a service's alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pagerd.config import (
    Config,
    DeveloperConfig,
    LevelConfig,
    PolicyConfig,
    RotationConfig,
    ScheduleConfig,
    ServiceConfig,
    TeamConfig,
)
from pagerd.core.policy import SmsTarget
from tests.apisite import ApiSite, serve_api
from tests.harness import eventually
from tests.test_schedules import NEW_YORK_TABLE, PARIS_TABLE

WEEK_S = 7 * 24 * 3600
CONFIG = Config(
    teams=(
        TeamConfig(
            name="ops",
            developers=(
                DeveloperConfig(name="op", phone_number="5550001"),
                DeveloperConfig(name="op2", phone_number="5550003"),
            ),
        ),
    ),
    policies=(PolicyConfig(id="managed", levels=(LevelConfig(targets=(SmsTarget("5550002"),)),)),),
    services=(ServiceConfig(id="payments-api", name="Payments API", policy="managed"),),
    schedules=(
        ScheduleConfig(
            id="ops-daily",
            team="ops",
            time_zone="UTC",
            rotations=(
                RotationConfig(start=datetime(2026, 1, 1), shift_s=86400, developers=("op", "op2")),
            ),
        ),
    ),
)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[ApiSite]:
    async with serve_api(tmp_path / "pagerd.db", CONFIG) as served:
        yield served


async def team(site: ApiSite, name: str = "claims", size: int = 3) -> list[int]:
    """A new team of ``size`` developers; their ids, in order."""
    body = {
        "team": {"name": name},
        "developers": [
            {"name": f"{name}{n}", "phone_number": f"+1555000{n:04d}"} for n in range(size)
        ],
    }
    status, created = await site.call("POST", "/teams", body)
    assert status == 201, created
    return [d["id"] for d in created["developers"]]


def weekly(team_id: int, zone: str, start: str, developer_ids: list[int]) -> dict[str, Any]:
    return {
        "team_id": team_id,
        "time_zone": zone,
        "rotations": [{"start": start, "shift_s": WEEK_S, "developer_ids": developer_ids}],
    }


async def team_id_of(site: ApiSite, developer_id: int) -> int:
    _, teams = await site.call("GET", "/teams")
    return next(
        int(t["team"]["id"])
        for t in teams["teams"]
        if developer_id in [d["id"] for d in t["developers"]]
    )


def fields(body: dict[str, Any]) -> set[str]:
    assert body["status"] == 422, body
    named = {error["field"] for error in body["errors"]}
    for field in named:
        assert f"{field}:" in body["detail"]
    return named


# --- who is on call, across DST (the first test) ------------------------------------


@pytest.mark.parametrize(
    ("zone", "start", "table"),
    [
        ("Europe/Paris", "2026-03-02T09:00:00", PARIS_TABLE),
        ("America/New_York", "2026-02-02T09:00:00", NEW_YORK_TABLE),
    ],
    ids=["Europe/Paris", "America/New_York"],
)
async def test_a_weekly_rotation_of_three_answers_20_instants_across_two_dst_changes(
    site: ApiSite, zone: str, start: str, table: list[tuple[str, str, int, str]]
) -> None:
    developers = await team(site)
    team_id = await team_id_of(site, developers[0])
    status, created = await site.call(
        "PUT", "/schedules/week", weekly(team_id, zone, start, developers)
    )
    assert status == 201, created
    # The tables name developers 101/102/103 (Paris) and 201/202/203 (New York).
    by_turn = {turn: developers[turn % 100 - 1] for turn in (101, 102, 103, 201, 202, 203)}
    assert len(table) == 20
    for at, wall, turn, until in table:
        status, answer = await site.call("GET", f"/schedules/week/oncall?at={at}Z")
        assert status == 200, answer
        assert answer["developer"]["id"] == by_turn[turn], wall
        assert answer["until"] == f"{until}.000Z", wall
        assert answer["at"] == f"{at}.000Z"
        assert answer["schedule_id"] == "week"


async def test_oncall_names_the_developer_and_defaults_to_now(site: ApiSite) -> None:
    developers = await team(site, size=1)
    team_id = await team_id_of(site, developers[0])
    body = weekly(team_id, "UTC", "2020-01-06T09:00:00", developers)
    assert (await site.call("PUT", "/schedules/one", body))[0] == 201
    status, answer = await site.call("GET", "/schedules/one/oncall")
    assert status == 200
    assert answer["developer"] == {
        "id": developers[0],
        "name": "claims0",
        "phone_number": "+15550000000",
    }
    at = datetime.fromisoformat(answer["at"])
    assert abs(at - datetime.now(UTC)) < timedelta(minutes=1)
    # A rotation of one: the answer changes only at its hand-overs, to the same developer.
    assert answer["until"] is not None


async def test_before_any_rotation_starts_nobody_is_on_call(site: ApiSite) -> None:
    developers = await team(site, size=1)
    team_id = await team_id_of(site, developers[0])
    body = weekly(team_id, "UTC", "2030-01-07T09:00:00", developers)
    await site.call("PUT", "/schedules/later", body)
    status, answer = await site.call("GET", "/schedules/later/oncall?at=2029-12-31T00:00:00Z")
    assert status == 200
    assert answer["developer"] is None
    assert answer["until"] == "2030-01-07T09:00:00.000Z"


async def test_an_offset_whose_plus_was_not_escaped_is_read_as_meant(site: ApiSite) -> None:
    """curl users write ?at=...+01:00, which a query string reads as a space."""
    _, escaped = await site.call(
        "GET", "/schedules/ops-daily/oncall?at=2026-05-01T10:00:00%2B02:00"
    )
    _, unescaped = await site.call(
        "GET", "/schedules/ops-daily/oncall?at=2026-05-01T10:00:00+02:00"
    )
    assert escaped == unescaped
    assert escaped["at"] == "2026-05-01T08:00:00.000Z"


@pytest.mark.parametrize(
    "at",
    ["yesterday", "2026-03-10T10:00:00", "1066-10-14T09:00:00Z", "9999-12-31T23:59:59-05:00"],
    ids=["not a time", "no offset", "before 1900", "past datetime's range in UTC"],
)
async def test_a_bad_at_is_422(site: ApiSite, at: str) -> None:
    status, answer = await site.call("GET", f"/schedules/ops-daily/oncall?at={at}")
    assert status == 422
    assert fields(answer) == {"at"}


async def test_oncall_of_an_unknown_schedule_is_404(site: ApiSite) -> None:
    status, answer = await site.call("GET", "/schedules/nope/oncall")
    assert status == 404
    assert answer["detail"] == "no schedule 'nope'"


# --- schedules: made, read, replaced, deleted -------------------------------------------------


async def test_a_schedule_is_created_read_replaced_listed_and_deleted(site: ApiSite) -> None:
    developers = await team(site)
    team_id = await team_id_of(site, developers[0])
    body = weekly(team_id, "Europe/Paris", "2026-12-01T09:00:00", developers)
    status, created = await site.call("PUT", "/schedules/week", body)
    assert status == 201
    assert created == {
        "id": "week",
        "team_id": team_id,
        "time_zone": "Europe/Paris",
        "rotations": [
            {"start": "2026-12-01T09:00:00", "shift_s": WEEK_S, "developer_ids": developers}
        ],
        "notify_handover": False,
        "managed": False,
        "overrides": [],
    }
    assert await site.call("GET", "/schedules/week") == (200, created)

    body["notify_handover"] = True
    body["rotations"].append(
        {"start": "2027-01-04T09:00:00", "shift_s": 86400, "developer_ids": developers[:1]}
    )
    status, replaced = await site.call("PUT", "/schedules/week", body)
    assert status == 200
    assert replaced["notify_handover"] is True
    assert len(replaced["rotations"]) == 2

    status, listed = await site.call("GET", "/schedules")
    assert status == 200
    assert [s["id"] for s in listed["schedules"]] == ["ops-daily", "week"]
    assert listed["schedules"][1] == replaced

    assert (await site.call("DELETE", "/schedules/week"))[0] == 204
    assert (await site.call("GET", "/schedules/week"))[0] == 404
    assert (await site.call("DELETE", "/schedules/week"))[0] == 404


async def test_an_invalid_schedule_is_422_naming_each_field(site: ApiSite) -> None:
    developers = await team(site, size=2)
    team_id = await team_id_of(site, developers[0])
    others = await team(site, "other", size=1)
    body: dict[str, Any] = {
        "team_id": team_id,
        "time_zone": "Europe/Paris",
        "rotations": [
            {
                "start": "2026-12-01T09:00:00",
                "shift_s": WEEK_S,
                "developer_ids": [developers[0], others[0]],
            },
        ],
    }
    status, answer = await site.call("PUT", "/schedules/bad", body)
    assert status == 422
    assert fields(answer) == {"rotations[0].developer_ids[1]"}
    assert f"developer {others[0]} is not in team {team_id}" in answer["detail"]

    body["rotations"][0]["developer_ids"] = developers
    cases = {
        "team_id": {**body, "team_id": 999},
        "time_zone": {**body, "time_zone": "Mars/Olympus_Mons"},
        "rotations[0].start": {
            **body,
            "rotations": [
                {"start": "2026-12-01T09:00:00+01:00", "shift_s": 60, "developer_ids": developers}
            ],
        },
        "rotations[0].shift_s": {
            **body,
            "rotations": [
                {"start": "2026-12-01T09:00:00", "shift_s": 0, "developer_ids": developers}
            ],
        },
        "rotations[0].developer_ids": {
            **body,
            "rotations": [{"start": "2026-12-01T09:00:00", "shift_s": 60, "developer_ids": []}],
        },
        "rotations[0].unknown": {
            **body,
            "rotations": [
                {
                    "start": "2026-12-01T09:00:00",
                    "shift_s": 60,
                    "developer_ids": developers,
                    "unknown": 1,
                }
            ],
        },
    }
    for field, wrong in cases.items():
        status, answer = await site.call("PUT", "/schedules/bad", wrong)
        assert status == 422, field
        assert fields(answer) == {field}, answer
    assert (await site.call("PUT", "/schedules/not%20an%20id", body))[0] == 422
    assert (await site.call("GET", "/schedules/bad"))[0] == 404


async def test_a_schedule_of_the_config_file_is_read_only_but_takes_overrides(
    site: ApiSite,
) -> None:
    status, declared = await site.call("GET", "/schedules/ops-daily")
    assert status == 200
    assert declared["managed"] is True
    team_id = declared["team_id"]
    body = weekly(team_id, "UTC", "2026-01-01T00:00:00", declared["rotations"][0]["developer_ids"])
    for method, answer in [
        ("PUT", await site.call("PUT", "/schedules/ops-daily", body)),
        ("DELETE", await site.call("DELETE", "/schedules/ops-daily")),
    ]:
        assert answer[0] == 409, method
        assert answer[1]["detail"] == "schedule 'ops-daily' is managed by config file"
    developer = declared["rotations"][0]["developer_ids"][1]
    override = {
        "developer_id": developer,
        "start": "2026-05-01T00:00:00Z",
        "end": "2026-05-02T00:00:00Z",
    }
    status, made = await site.call("POST", "/schedules/ops-daily/overrides", override)
    assert status == 201, made


async def test_a_schedule_a_policy_pages_cannot_be_deleted(site: ApiSite) -> None:
    level = {"targets": [{"type": "schedule", "schedule": "ops-daily"}]}
    status, policy = await site.call("PUT", "/policies/follow", {"levels": [level]})
    assert status == 201, policy
    assert policy["levels"][0]["targets"] == [{"type": "schedule", "schedule": "ops-daily"}]

    developers = await team(site, size=1)
    team_id = await team_id_of(site, developers[0])
    await site.call(
        "PUT", "/schedules/mine", weekly(team_id, "UTC", "2026-01-05T09:00:00", developers)
    )
    for policy_id in ("b-uses", "a-uses"):
        level = {"targets": [{"type": "schedule", "schedule": "mine"}]}
        assert (await site.call("PUT", f"/policies/{policy_id}", {"levels": [level]}))[0] == 201
    status, answer = await site.call("DELETE", "/schedules/mine")
    assert status == 409
    assert answer["detail"] == "schedule 'mine' is in use by policies a-uses, b-uses"

    for policy_id in ("a-uses", "b-uses"):
        assert (await site.call("DELETE", f"/policies/{policy_id}"))[0] == 204
    assert (await site.call("DELETE", "/schedules/mine"))[0] == 204


async def test_a_policy_paging_an_unknown_schedule_is_422(site: ApiSite) -> None:
    level = {
        "targets": [
            {"type": "sms", "phone_number": "+15550001111"},
            {"type": "schedule", "schedule": "nope"},
        ]
    }
    status, answer = await site.call("PUT", "/policies/p", {"levels": [level]})
    assert status == 422
    assert fields(answer) == {"levels[0].targets[1].schedule"}
    assert "no schedule 'nope'" in answer["detail"]


# --- overrides ------------------------------------------------------------------------------


async def test_an_override_for_two_hours_of_tuesday_is_on_call_in_its_span_only(
    site: ApiSite,
) -> None:
    developers = await team(site)
    team_id = await team_id_of(site, developers[0])
    body = weekly(team_id, "Europe/Paris", "2026-03-02T09:00:00", developers)
    await site.call("PUT", "/schedules/week", body)
    # Tuesday 10 March 2026, 10:00-12:00 Paris (CET): the third developer covers.
    override = {
        "developer_id": developers[2],
        "start": "2026-03-10T10:00:00+01:00",
        "end": "2026-03-10T12:00:00+01:00",
    }
    status, made = await site.call("POST", "/schedules/week/overrides", override)
    assert status == 201
    assert made == {
        "id": made["id"],
        "schedule_id": "week",
        "developer_id": developers[2],
        "start": "2026-03-10T09:00:00.000Z",
        "end": "2026-03-10T11:00:00.000Z",
    }

    async def on_call(at: str) -> tuple[int, str]:
        _, answer = await site.call("GET", f"/schedules/week/oncall?at={at}")
        return answer["developer"]["id"], answer["until"]

    assert await on_call("2026-03-10T08:59:59Z") == (developers[1], "2026-03-10T09:00:00.000Z")
    assert await on_call("2026-03-10T09:00:00Z") == (developers[2], "2026-03-10T11:00:00.000Z")
    assert await on_call("2026-03-10T10:59:59Z") == (developers[2], "2026-03-10T11:00:00.000Z")
    assert await on_call("2026-03-10T11:00:00Z") == (developers[1], "2026-03-16T08:00:00.000Z")

    assert (await site.call("DELETE", f"/schedules/week/overrides/{made['id']}"))[0] == 204
    assert (await on_call("2026-03-10T10:00:00Z"))[0] == developers[1]
    assert (await site.call("DELETE", f"/schedules/week/overrides/{made['id']}"))[0] == 404


async def test_the_most_recently_created_override_wins_and_ids_grow(site: ApiSite) -> None:
    developers = await team(site)
    team_id = await team_id_of(site, developers[0])
    await site.call(
        "PUT", "/schedules/week", weekly(team_id, "UTC", "2026-03-02T09:00:00", developers)
    )
    made = []
    for developer in (developers[1], developers[2]):
        override = {
            "developer_id": developer,
            "start": "2026-03-10T00:00:00Z",
            "end": "2026-03-11T00:00:00Z",
        }
        made.append((await site.call("POST", "/schedules/week/overrides", override))[1])
    assert made[0]["id"] < made[1]["id"]
    _, answer = await site.call("GET", "/schedules/week/oncall?at=2026-03-10T12:00:00Z")
    assert answer["developer"]["id"] == developers[2]
    # A deleted id is never handed out again.
    await site.call("DELETE", f"/schedules/week/overrides/{made[1]['id']}")
    override = {
        "developer_id": developers[0],
        "start": "2026-03-10T00:00:00Z",
        "end": "2026-03-11T00:00:00Z",
    }
    _, third = await site.call("POST", "/schedules/week/overrides", override)
    assert third["id"] > made[1]["id"]


async def test_a_schedule_shows_its_overrides_that_have_not_ended(site: ApiSite) -> None:
    developers = await team(site)
    team_id = await team_id_of(site, developers[0])
    await site.call(
        "PUT", "/schedules/week", weekly(team_id, "UTC", "2026-03-02T09:00:00", developers)
    )
    now = datetime.now(UTC)
    spans = [
        (now - timedelta(days=2), now - timedelta(days=1)),
        (now - timedelta(hours=1), now + timedelta(hours=1)),
    ]
    for start, end in spans:
        override = {
            "developer_id": developers[0],
            "start": start.isoformat(),
            "end": end.isoformat(),
        }
        assert (await site.call("POST", "/schedules/week/overrides", override))[0] == 201
    _, shown = await site.call("GET", "/schedules/week")
    assert [o["end"][:16] for o in shown["overrides"]] == [spans[1][1].strftime("%Y-%m-%dT%H:%M")]


async def test_an_invalid_override_is_refused_naming_the_field(site: ApiSite) -> None:
    developers = await team(site, size=2)
    team_id = await team_id_of(site, developers[0])
    await site.call(
        "PUT", "/schedules/week", weekly(team_id, "UTC", "2026-03-02T09:00:00", developers)
    )
    good = {
        "developer_id": developers[0],
        "start": "2026-03-10T09:00:00Z",
        "end": "2026-03-10T11:00:00Z",
    }
    cases = {
        "developer_id": {**good, "developer_id": 999},
        "end": {**good, "end": "2026-03-10T08:00:00Z"},
        "start": {**good, "start": "2026-03-10T09:00:00"},
    }
    for field, wrong in cases.items():
        status, answer = await site.call("POST", "/schedules/week/overrides", wrong)
        assert status == 422, field
        assert fields(answer) == {field}, answer
    assert (await site.call("POST", "/schedules/nope/overrides", good))[0] == 404
    assert (await site.call("DELETE", "/schedules/nope/overrides/1"))[0] == 404
    assert (await site.call("DELETE", "/schedules/week/overrides/" + "9" * 5000))[0] == 404


# --- maintenance, heartbeats and a service's alerts -------------------------------------------


async def test_a_maintenance_window_records_alerts_on_no_incident(site: ApiSite) -> None:
    until = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    body = {"until": until.isoformat(), "reason": "deploy 4.2"}
    status, window = await site.call("POST", "/services/payments-api/maintenance", body)
    assert status == 201, window
    shown_until = until.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert window == {"service_id": "payments-api", "until": shown_until, "reason": "deploy 4.2"}
    _, service = await site.call("GET", "/services/payments-api")
    assert service["maintenance"] == {"until": shown_until, "reason": "deploy 4.2"}
    _, listed = await site.call("GET", "/services")
    listed_one = next(s for s in listed["services"] if s["id"] == "payments-api")
    assert listed_one == {k: v for k, v in service.items() if k != "integration_key"}

    for n in range(3):
        status, accepted = await site.call(
            "POST", "/services/payments-api/alerts", {"message": f"down {n}", "alert_id": "a"}
        )
        assert (status, accepted) == (202, {"incident_id": None, "opened": False})
    assert site.kept.pages == []
    _, service = await site.call("GET", "/services/payments-api")
    assert (service["health"], service["incident"]) == ("healthy", None)

    status, alerts = await site.call("GET", "/services/payments-api/alerts?limit=2")
    assert status == 200
    assert [a["message"] for a in alerts["alerts"]] == ["down 2", "down 1"]
    assert all(a["suppressed"] and a["incident_id"] is None for a in alerts["alerts"])
    assert alerts["alerts"][0]["alert_id"] == "a"
    assert alerts["alerts"][0]["source"] == "api"
    _, rest = await site.call(
        "GET", f"/services/payments-api/alerts?limit=2&after={alerts['next']}"
    )
    assert [a["message"] for a in rest["alerts"]] == ["down 0"]
    assert rest["next"] is None

    assert (await site.call("DELETE", "/services/payments-api/maintenance"))[0] == 204
    _, service = await site.call("GET", "/services/payments-api")
    assert service["maintenance"] is None
    status, accepted = await site.call("POST", "/services/payments-api/alerts", {"message": "down"})
    assert accepted["opened"] is True
    assert len(site.kept.pages) == 1
    _, alerts = await site.call("GET", "/services/payments-api/alerts")
    assert alerts["alerts"][0]["incident_id"] == accepted["incident_id"]
    assert alerts["alerts"][0]["suppressed"] is False
    # Ending a window that is not there is no error: the service is out of maintenance.
    assert (await site.call("DELETE", "/services/payments-api/maintenance"))[0] == 204


async def test_a_bad_maintenance_window_is_refused(site: ApiSite) -> None:
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
    for body, field in [
        ({"until": past}, "until"),
        ({"until": far}, "until"),
        ({"until": "2030-01-01T00:00:00"}, "until"),
        ({"until": "soon"}, "until"),
        ({"reason": "x"}, "until"),
        ({"until": far, "reason": ""}, "reason"),
        ({"until": "9999-12-31T23:59:59-23:59"}, "until"),
    ]:
        status, answer = await site.call("POST", "/services/payments-api/maintenance", body)
        assert status == 422, body
        assert field in fields(answer), body
    status, _ = await site.call("POST", "/services/nope/maintenance", {"until": far})
    assert status == 404
    assert (await site.call("DELETE", "/services/nope/maintenance"))[0] == 404


async def test_heartbeat_s_is_set_kept_and_removed_through_put(site: ApiSite) -> None:
    await site.call(
        "PUT",
        "/policies/p",
        {"levels": [{"targets": [{"type": "sms", "phone_number": "+15550001111"}]}]},
    )
    status, made = await site.call("PUT", "/services/cron", {"policy_id": "p", "heartbeat_s": 60})
    assert (status, made["heartbeat_s"]) == (201, 60)
    _, kept = await site.call("PUT", "/services/cron", {"policy_id": "p", "name": "Cron"})
    assert kept["heartbeat_s"] == 60
    _, removed = await site.call("PUT", "/services/cron", {"policy_id": "p", "heartbeat_s": None})
    assert removed["heartbeat_s"] is None
    for wrong in (0, -1, "often", 10**9):
        status, answer = await site.call(
            "PUT", "/services/cron", {"policy_id": "p", "heartbeat_s": wrong}
        )
        assert status == 422
        assert fields(answer) == {"heartbeat_s"}


async def test_a_beat_is_202_and_a_service_without_heartbeat_s_refuses_it(site: ApiSite) -> None:
    await site.call(
        "PUT",
        "/policies/p",
        {"levels": [{"targets": [{"type": "sms", "phone_number": "+15550001111"}]}]},
    )
    await site.call("PUT", "/services/cron", {"policy_id": "p", "heartbeat_s": 60})
    status, beat = await site.call("POST", "/services/cron/heartbeat", data=b"any payload at all")
    assert status == 202
    assert beat["service_id"] == "cron"
    due = datetime.fromisoformat(beat["due"])
    assert timedelta(seconds=59) < due - datetime.now(UTC) <= timedelta(seconds=60)

    status, answer = await site.call("POST", "/services/payments-api/heartbeat")
    assert status == 409
    assert answer["detail"] == "service 'payments-api' expects no heartbeat: it has no heartbeat_s"
    assert (await site.call("POST", "/services/nope/heartbeat"))[0] == 404


async def test_a_missed_beat_opens_an_incident_and_the_next_beat_resolves_it(site: ApiSite) -> None:
    await site.call(
        "PUT",
        "/policies/p",
        {"levels": [{"targets": [{"type": "sms", "phone_number": "+15550001111"}]}]},
    )
    await site.call("PUT", "/services/cron", {"policy_id": "p", "heartbeat_s": 0.3})

    async def health() -> str:
        _, service = await site.call("GET", "/services/cron")
        return str(service["health"])

    await eventually(lambda: len(site.kept.pages) == 1, what="the missed beat's page")
    assert "no heartbeat for 0.3 s" in site.kept.pages[0].message
    assert await health() == "unhealthy"
    _, alerts = await site.call("GET", "/services/cron/alerts")
    [missed] = alerts["alerts"]
    assert (missed["alert_id"], missed["source"], missed["message"]) == (
        "heartbeat",
        "heartbeat",
        "no heartbeat for 0.3 s",
    )
    assert (await site.call("POST", "/services/cron/heartbeat"))[0] == 202
    assert await health() == "healthy"


async def test_alerts_of_an_unknown_service_or_a_bad_cursor_are_refused(site: ApiSite) -> None:
    assert (await site.call("GET", "/services/nope/alerts"))[0] == 404
    status, answer = await site.call("GET", "/services/payments-api/alerts?after=x&limit=0")
    assert status == 422
    assert fields(answer) == {"after", "limit"}
