"""The JSON API under /api/v1 (CONTRACT §4), served in process over a real SQLite file.

Each test names the behaviour it checks; the team-alert test runs the real daemon
and its SMS stand-in, since "the page arrives" is only true end to end.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from pagerd.config import (
    Config,
    DeveloperConfig,
    EscalationConfig,
    LevelConfig,
    PolicyConfig,
    ServiceConfig,
    TeamConfig,
)
from pagerd.core.policy import PHONE_NUMBER, SmsTarget, anchored
from pagerd.core.records import ServiceRow, StoreError, WriteBatch
from pagerd.intake import api_schemas
from pagerd.store import sqlite as store_module
from pagerd.telemetry.metrics import REGISTRY
from tests.apisite import ApiSite, serve_api
from tests.conftest import PagerdFactory
from tests.harness import API_TOKEN, eventually, sqlite_rows

# The brief's sample request, byte for byte.
SAMPLE = (
    b'{"team": {"name": "claims"}, '
    b'"developers": [{"name": "someone", "phone_number": "999999999"}]}'
)
CONFIG = Config(
    escalation=EscalationConfig(ack_timeout_s=600),
    teams=(
        TeamConfig(name="ops", developers=(DeveloperConfig(name="op", phone_number="5550001"),)),
    ),
    policies=(PolicyConfig(id="managed", levels=(LevelConfig(targets=(SmsTarget("5550002"),)),)),),
    services=(ServiceConfig(id="payments-api", name="Payments API", policy="managed"),),
)


def without(fields: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if k != name}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[ApiSite]:
    async with serve_api(tmp_path / "pagerd.db", CONFIG) as served:
        yield served


def team_body(name: str, *developers: tuple[str, str]) -> dict[str, Any]:
    return {
        "team": {"name": name},
        "developers": [{"name": n, "phone_number": p} for n, p in developers],
    }


def fields_of(body: dict[str, Any]) -> set[str]:
    """The fields a 422 names, checked against its ``detail``, which must name each too."""
    assert body["status"] == 422
    named = {error["field"] for error in body["errors"]}
    for field in named:
        assert f"{field}:" in body["detail"]
    return named


async def create_team(site: ApiSite, name: str, *developers: tuple[str, str]) -> dict[str, Any]:
    status, body = await site.call("POST", "/teams", team_body(name, *developers))
    assert status == 201, body
    return dict(body)


async def sms_policy(site: ApiSite, policy_id: str, phone: str = "+15550009999") -> None:
    body = {"levels": [{"targets": [{"type": "sms", "phone_number": phone}]}]}
    status, answer = await site.call("PUT", f"/policies/{policy_id}", body)
    assert status in (200, 201), answer


async def service(site: ApiSite, service_id: str, policy_id: str = "p") -> None:
    if policy_id not in site.runtime.directory.policies:
        await sms_policy(site, policy_id)
    status, answer = await site.call("PUT", f"/services/{service_id}", {"policy_id": policy_id})
    assert status in (200, 201), answer


# --- teams ---------------------------------------------------------------------------------


async def test_the_briefs_sample_request_creates_the_team_with_ids(site: ApiSite) -> None:
    headers = {"Content-Type": "application/json"}
    async with site.http.post(site.url("/teams"), data=SAMPLE, headers=headers) as response:
        assert response.status == 201
        body = await response.json()

    team_id = body["team"]["id"]
    assert isinstance(team_id, int)
    assert body["team"] == {"id": team_id, "name": "claims"}
    [developer] = body["developers"]
    assert isinstance(developer["id"], int)
    assert developer == {
        "id": developer["id"],
        "team_id": team_id,
        "name": "someone",
        "phone_number": "999999999",
    }
    assert await site.call("GET", f"/teams/{team_id}") == (200, body)
    status, listed = await site.call("GET", "/teams")
    assert status == 200
    assert body in listed["teams"]


async def test_a_team_is_written_with_its_developers_service_and_policy(site: ApiSite) -> None:
    body = await create_team(site, "claims", ("a", "5550011"), ("b", "5550012"), ("c", "5550013"))
    team_id = body["team"]["id"]

    db = site.db
    assert sqlite_rows(db, "SELECT name FROM teams WHERE id = ?", team_id) == [("claims",)]
    assert len(sqlite_rows(db, "SELECT id FROM developers WHERE team_id = ?", team_id)) == 3
    assert sqlite_rows(
        db, "SELECT name, policy_id FROM services WHERE id = ?", f"team-{team_id}"
    ) == [("claims", f"team-{team_id}")]
    status, policy = await site.call("GET", f"/policies/team-{team_id}")
    assert status == 200
    assert policy == {
        "id": f"team-{team_id}",
        "repeat": 2,  # developers - 1: each is paged once
        "levels": [
            {
                "ack_timeout_s": 600.0,  # [escalation].ack_timeout_s
                "targets": [{"type": "team", "team": "claims", "team_id": team_id}],
            }
        ],
        "managed": False,
    }


async def test_a_taken_team_name_is_409(site: ApiSite) -> None:
    await create_team(site, "claims", ("a", "5550011"))
    status, body = await site.call("POST", "/teams", team_body("claims", ("b", "5550012")))
    assert status == 409
    assert "claims" in body["detail"]
    status, _ = await site.call("POST", "/teams", team_body("ops", ("b", "5550012")))
    assert status == 409  # a team of the config file counts too


async def test_two_concurrent_creates_of_one_name_give_one_201_and_one_409(site: ApiSite) -> None:
    body = team_body("racing", ("a", "5550011"))
    answers = await asyncio.gather(*(site.call("POST", "/teams", body) for _ in range(2)))

    assert sorted(status for status, _ in answers) == [201, 409]
    assert sqlite_rows(site.db, "SELECT count(*) FROM teams WHERE name = 'racing'") == [(1,)]


async def test_concurrent_creates_of_other_names_get_distinct_ids(site: ApiSite) -> None:
    answers = await asyncio.gather(
        *(
            site.call("POST", "/teams", team_body(f"t{i}", ("a", "5550011"), ("b", "5550012")))
            for i in range(5)
        )
    )

    assert [status for status, _ in answers] == [201] * 5
    team_ids = [body["team"]["id"] for _, body in answers]
    developer_ids = [d["id"] for _, body in answers for d in body["developers"]]
    assert len(set(team_ids)) == 5
    assert len(set(developer_ids)) == 10


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        pytest.param(team_body("", ("a", "5550011")), {"team.name"}, id="empty name"),
        pytest.param(team_body("   ", ("a", "5550011")), {"team.name"}, id="blank name"),
        pytest.param(team_body("x" * 101, ("a", "5550011")), {"team.name"}, id="long name"),
        pytest.param(team_body("t", ("", "5550011")), {"developers[0].name"}, id="empty developer"),
        pytest.param(
            team_body("t", ("a", "5550011"), ("b", "12ab34")),
            {"developers[1].phone_number"},
            id="bad phone",
        ),
        pytest.param(
            team_body("t", ("a", "12345")), {"developers[0].phone_number"}, id="short phone"
        ),
        pytest.param(
            team_body("t", ("a", "5550011\n")), {"developers[0].phone_number"}, id="phone newline"
        ),
        pytest.param({"team": {"name": "t"}}, {"developers"}, id="missing developers"),
        pytest.param(team_body("t"), {"developers"}, id="no developers"),
        pytest.param({"developers": []}, {"team", "developers"}, id="missing team"),
        pytest.param(
            {"team": {"name": 5}, "developers": "everyone"},
            {"team.name", "developers"},
            id="wrong types",
        ),
        pytest.param(
            {"team": {"name": "t"}, "developers": [{"name": "a", "phone_number": 5550011}, 7]},
            {"developers[0].phone_number", "developers[1]"},
            id="wrong element types",
        ),
        pytest.param(
            {**team_body("t", ("a", "5550011")), "admin": True}, {"admin"}, id="unknown field"
        ),
        pytest.param(["not", "an", "object"], {"body"}, id="not an object"),
    ],
)
async def test_an_invalid_team_is_422_naming_each_field(
    site: ApiSite, body: Any, fields: set[str]
) -> None:
    status, answer = await site.call("POST", "/teams", body)

    assert status == 422, answer
    assert fields_of(answer) == fields
    assert sqlite_rows(site.db, "SELECT count(*) FROM teams WHERE name = 't'") == [(0,)]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b'{"team": {"name": "t"}, ', id="malformed"),
        pytest.param(b"", id="empty"),
        pytest.param(b'{"team": ' * 33 + b"1" + b"}" * 33, id="33 levels deep"),
        pytest.param(b"[" * 30_000 + b"]" * 30_000, id="30000 levels deep"),
    ],
)
async def test_malformed_or_too_deep_json_is_400(site: ApiSite, data: bytes) -> None:
    status, answer = await site.call("POST", "/teams", data=data)
    assert status == 400
    assert answer["title"] == "Bad Request"


async def test_json_32_levels_deep_is_not_refused_for_its_depth(site: ApiSite) -> None:
    nested: Any = "x"
    for _ in range(30):
        nested = [nested]
    body = {"team": {"name": nested}, "developers": []}  # 32 levels: object, object, 30 arrays
    status, answer = await site.call("POST", "/teams", body)
    assert status == 422
    assert "team.name" in fields_of(answer)


async def test_ten_thousand_developers_are_refused(site: ApiSite, tmp_path: Path) -> None:
    body = team_body("big", *((f"d{i}", "5550011") for i in range(10_000)))

    status, answer = await site.call("POST", "/teams", body)
    assert status == 413  # over the default max_body_bytes already
    assert answer["status"] == 413

    async with serve_api(tmp_path / "roomy.db", max_body_bytes=4 << 20) as roomy:
        status, answer = await roomy.call("POST", "/teams", body)
        assert status == 422
        assert fields_of(answer) == {"developers"}
        assert "at most 1000" in answer["detail"]
        # A thousand is allowed.
        status, _ = await roomy.call(
            "POST", "/teams", {**body, "developers": body["developers"][:1000]}
        )
        assert status == 201


async def test_sql_injection_strings_are_stored_literally(site: ApiSite) -> None:
    name = "Robert'); DROP TABLE teams;--"
    developer = "x' OR '1'='1"
    body = await create_team(site, name, (developer, "+15550001111"))

    assert body["team"]["name"] == name
    rows = sqlite_rows(site.db, "SELECT name FROM teams WHERE id = ?", body["team"]["id"])
    assert rows == [(name,)]
    assert sqlite_rows(site.db, "SELECT name FROM developers WHERE name = ?", developer) == [
        (developer,)
    ]
    status, listed = await site.call("GET", "/teams")
    assert status == 200
    assert {t["team"]["name"] for t in listed["teams"]} == {"ops", name}


async def test_unknown_team_is_404(site: ApiSite) -> None:
    for method, path, body in (
        ("GET", "/teams/999", None),
        ("POST", "/teams/999/developers", {"name": "a", "phone_number": "5550011"}),
        ("POST", "/alerts", {"team_id": 999}),
    ):
        status, answer = await site.call(method, path, body)
        assert status == 404, (path, answer)
    status, _ = await site.call("GET", "/teams/abc")
    assert status == 404


async def test_adding_a_developer_extends_the_rotation_and_the_repeat(site: ApiSite) -> None:
    team_id = (await create_team(site, "claims", ("a", "5550011")))["team"]["id"]

    status, developer = await site.call(
        "POST", f"/teams/{team_id}/developers", {"name": "b", "phone_number": "+4915550012"}
    )

    assert status == 201
    assert developer == {
        "id": developer["id"],
        "team_id": team_id,
        "name": "b",
        "phone_number": "+4915550012",
    }
    _, team = await site.call("GET", f"/teams/{team_id}")
    assert [d["name"] for d in team["developers"]] == ["a", "b"]
    assert team["next_developer_id"] == team["developers"][0]["id"]
    assert team["managed"] is False
    _, policy = await site.call("GET", f"/policies/team-{team_id}")
    assert policy["repeat"] == 1
    assert policy["managed"] is False
    status, answer = await site.call(
        "POST", f"/teams/{team_id}/developers", {"name": "c", "phone_number": "nope"}
    )
    assert status == 422
    assert fields_of(answer) == {"phone_number"}


async def test_a_replaced_team_policy_survives_new_developers_and_restarts(tmp_path: Path) -> None:
    database = tmp_path / "pagerd.db"
    custom = {"repeat": 0, "levels": [{"targets": [{"type": "sms", "phone_number": "5550099"}]}]}
    async with serve_api(database, CONFIG) as site:
        team_id = (await create_team(site, "claims", ("a", "5550011")))["team"]["id"]
        status, _ = await site.call("PUT", f"/policies/team-{team_id}", custom)
        assert status == 200
    async with serve_api(database, CONFIG) as site:
        status, _ = await site.call(
            "POST", f"/teams/{team_id}/developers", {"name": "b", "phone_number": "5550012"}
        )
        assert status == 201
        _, policy = await site.call("GET", f"/policies/team-{team_id}")
    assert policy["levels"][0]["targets"] == [{"type": "sms", "phone_number": "5550099"}]


async def test_a_team_of_the_config_file_is_read_only(site: ApiSite) -> None:
    ops = site.runtime.directory.team_ids["ops"]
    status, answer = await site.call(
        "POST", f"/teams/{ops}/developers", {"name": "b", "phone_number": "5550012"}
    )
    assert status == 409
    assert "managed by config file" in answer["detail"]


# --- team alerts ---------------------------------------------------------------------------


async def test_a_team_alert_pages_one_developer_and_a_second_alert_pages_nobody(
    make_pagerd: PagerdFactory,
) -> None:
    daemon = make_pagerd([], {})
    await daemon.start()
    phones = {"5550011", "5550012", "5550013"}
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    api = f"{daemon.base_url}/api/v1"
    async with aiohttp.ClientSession(headers=headers) as http:
        body = team_body("claims", *((f"dev{i}", p) for i, p in enumerate(sorted(phones))))
        async with http.post(f"{api}/teams", json=body) as response:
            assert response.status == 201
            team = await response.json()
        team_id = team["team"]["id"]

        async with http.post(f"{api}/alerts", json={"team_id": team_id}) as response:
            assert response.status == 202
            first = await response.json()

        [notified] = first["notified"]
        assert first["service_id"] == f"team-{team_id}"
        assert notified["phone_number"] in phones
        by_id = {d["id"]: d for d in team["developers"]}
        assert by_id[notified["developer_id"]]["phone_number"] == notified["phone_number"]
        await eventually(lambda: len(daemon.sms.pages) == 1, what="the page")
        [page] = daemon.sms.pages
        assert page.phone_number == notified["phone_number"]
        assert "Too many 5xx!" in page.message

        async with http.post(
            f"{api}/alerts", json={"team_id": team_id, "message": "again"}
        ) as response:
            assert response.status == 202
            second = await response.json()
        assert second["incident_id"] == first["incident_id"]
        assert second["notified"] == []
        async with http.get(f"{api}/incidents/{first['incident_id']}") as response:
            incident = await response.json()
        assert incident["alert_count"] == 2
        assert len(incident["notifications"]) == 1  # committed: the second alert paged nobody
    assert len(daemon.sms.pages) == 1


async def test_a_team_of_the_config_file_gets_its_service_at_its_first_alert(
    site: ApiSite,
) -> None:
    ops = site.runtime.directory.team_ids["ops"]
    status, answer = await site.call("POST", "/alerts", {"team_id": ops, "message": "disk full"})

    assert status == 202
    assert answer["service_id"] == f"team-{ops}"
    assert [n["phone_number"] for n in answer["notified"]] == ["5550001"]
    status, svc = await site.call("GET", f"/services/team-{ops}")
    assert status == 200
    assert svc["health"] == "unhealthy"


async def test_an_invalid_team_alert_is_422(site: ApiSite) -> None:
    status, answer = await site.call("POST", "/alerts", {"team_id": "one", "message": ""})
    assert status == 422
    assert fields_of(answer) == {"team_id", "message"}
    status, answer = await site.call("POST", "/alerts", {"message": "x" * 1025})
    assert status == 422
    assert fields_of(answer) == {"team_id", "message"}


# --- policies ------------------------------------------------------------------------------


async def test_policy_put_get_replace_and_delete(site: ApiSite) -> None:
    team_id = (await create_team(site, "claims", ("a", "5550011")))["team"]["id"]
    body = {
        "repeat": 2,
        "levels": [
            {
                "ack_timeout_s": 0.5,
                "targets": [
                    {"type": "sms", "phone_number": "+15550001111"},
                    {"type": "email", "address": "oncall@example.com"},
                ],
            },
            {
                "targets": [
                    {"type": "team", "team_id": team_id},
                    {"type": "webhook", "url": "https://chat.example.com/hook"},
                ]
            },
        ],
    }

    status, created = await site.call("PUT", "/policies/payments", body)

    assert status == 201
    assert created["id"] == "payments"
    assert created["repeat"] == 2
    assert created["levels"][0]["ack_timeout_s"] == 0.5
    assert created["levels"][1]["ack_timeout_s"] == 600.0
    assert created["levels"][1]["targets"][0] == {
        "type": "team",
        "team": "claims",
        "team_id": team_id,
    }
    assert await site.call("GET", "/policies/payments") == (200, created)
    _, listed = await site.call("GET", "/policies")
    assert created in listed["policies"]

    replaced = {"levels": [{"targets": [{"type": "team", "team": "claims"}]}]}
    status, answer = await site.call("PUT", "/policies/payments", replaced)
    assert status == 200
    assert answer["repeat"] == 0
    # The runtime reads the policy from the directory at its next step.
    stored = site.runtime.directory.policies["payments"].policy
    assert len(stored.levels) == 1

    assert await site.call("DELETE", "/policies/payments") == (204, None)
    status, _ = await site.call("GET", "/policies/payments")
    assert status == 404
    status, _ = await site.call("DELETE", "/policies/payments")
    assert status == 404
    assert "payments" not in site.runtime.directory.policies


async def test_deleting_a_policy_in_use_is_409(site: ApiSite) -> None:
    await service(site, "checkout", "shop")

    status, answer = await site.call("DELETE", "/policies/shop")

    assert status == 409
    assert "checkout" in answer["detail"]
    assert (await site.call("GET", "/policies/shop"))[0] == 200


async def test_a_policy_in_use_by_many_services_409_names_the_first_ten(site: ApiSite) -> None:
    for n in range(12):
        await service(site, f"svc-{n:02d}", "shop")

    status, answer = await site.call("DELETE", "/policies/shop")

    assert status == 409
    named = ", ".join(f"svc-{n:02d}" for n in range(10))
    assert answer["detail"] == f"policy 'shop' is in use by services {named} and more"


async def test_a_policy_of_the_config_file_is_read_only(site: ApiSite) -> None:
    body = {"levels": [{"targets": [{"type": "sms", "phone_number": "5550011"}]}]}
    for method, answer_body in (("PUT", body), ("DELETE", None)):
        status, answer = await site.call(method, "/policies/managed", answer_body)
        assert status == 409
        assert answer["detail"] == "policy 'managed' is managed by config file"
    status, policy = await site.call("GET", "/policies/managed")
    assert status == 200
    assert policy["levels"][0]["targets"] == [{"type": "sms", "phone_number": "5550002"}]
    assert policy["managed"] is True


async def test_an_invalid_policy_is_422_naming_each_field(site: ApiSite) -> None:
    body = {
        "repeat": 10,
        "levels": [
            {
                "ack_timeout_s": 0,
                "targets": [
                    {"type": "pager"},
                    {"type": "email", "address": "nobody"},
                    {"type": "sms", "phone_number": "5550011", "extra": 1},
                ],
            },
            {"targets": []},
        ],
    }
    status, answer = await site.call("PUT", "/policies/bad", body)
    assert status == 422
    assert fields_of(answer) == {
        "repeat",
        "levels[0].ack_timeout_s",
        "levels[0].targets[0].type",
        "levels[0].targets[1].address",
        "levels[0].targets[2].extra",
        "levels[1].targets",
    }

    teams = {
        "levels": [
            {
                "targets": [
                    {"type": "team", "team": "nope"},
                    {"type": "team", "team_id": 99},
                    {"type": "team"},
                ]
            }
        ]
    }
    status, answer = await site.call("PUT", "/policies/bad", teams)
    assert status == 422
    assert fields_of(answer) == {
        "levels[0].targets[0].team",
        "levels[0].targets[1].team_id",
        "levels[0].targets[2].team",
    }

    status, answer = await site.call("PUT", "/policies/bad%20id", {"levels": []})
    assert status == 422
    assert "id" in fields_of(answer)
    status, _ = await site.call("GET", "/policies/bad")
    assert status == 404


# --- services ------------------------------------------------------------------------------


async def test_service_put_and_get_with_health_and_incident(site: ApiSite) -> None:
    await sms_policy(site, "p")

    status, created = await site.call("PUT", "/services/checkout", {"policy_id": "p"})
    assert status == 201
    key = created.pop("integration_key")
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    assert created == {
        "id": "checkout",
        "name": "checkout",
        "policy_id": "p",
        "health": "healthy",
        "incident": None,
        "heartbeat_s": None,
        "maintenance": None,
    }
    status, renamed = await site.call(
        "PUT", "/services/checkout", {"name": "Checkout", "policy_id": "p"}
    )
    assert status == 200
    assert renamed["name"] == "Checkout"
    assert renamed["integration_key"] == key, "a service keeps its key when changed"

    _, alerted = await site.call("POST", "/services/checkout/alerts", {"message": "down"})
    status, unhealthy = await site.call("GET", "/services/checkout")
    assert status == 200
    assert unhealthy["health"] == "unhealthy"
    incident = unhealthy["incident"]
    assert incident["id"] == alerted["incident_id"]
    assert incident["status"] == "triggered"
    assert incident["message"] == "down"
    assert incident["level"] == 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", incident["opened_at"])
    assert incident["acknowledged_at"] is None

    await site.call("POST", "/services/checkout/ack")
    _, acked = await site.call("GET", "/services/checkout")
    assert acked["incident"]["status"] == "acknowledged"
    assert acked["incident"]["acknowledged_at"] is not None

    assert acked.pop("integration_key") == key
    _, listed = await site.call("GET", "/services")
    by_id = {s["id"]: s for s in listed["services"]}
    assert by_id["checkout"] == acked, "listed as got, without the key"
    assert by_id["payments-api"]["health"] == "healthy"


async def test_the_service_list_read_in_chunks_is_each_service_as_get_answers_it(
    site: ApiSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Given services across several chunks of the store's read, some with an open
    incident (one acknowledged, one resolved again), the list holds each once, by id,
    exactly as GET /services/{id} answers it from the actors' state."""
    monkeypatch.setattr(store_module, "SERVICES_LISTING_CHUNK", 4)
    ids = [f"svc-{n:02d}" for n in range(11)]
    for service_id in ids:
        await service(site, service_id)
    for service_id in ("svc-00", "svc-03", "svc-04", "svc-10"):
        status, _ = await site.call("POST", f"/services/{service_id}/alerts", {"message": "d"})
        assert status == 202
    await site.call("POST", "/services/svc-03/ack", {"by": "op"})
    await site.call("POST", "/services/svc-04/healthy")

    status, listed = await site.call("GET", "/services")

    assert status == 200
    stored = sorted(row[0] for row in sqlite_rows(site.db, "SELECT id FROM services"))
    assert set(ids) < set(stored)  # with the config's own services
    one_by_one = [(await site.call("GET", f"/services/{s}"))[1] for s in stored]
    assert listed["services"] == [without(s, "integration_key") for s in one_by_one]
    unhealthy = [s["id"] for s in listed["services"] if s["health"] == "unhealthy"]
    assert unhealthy == ["svc-00", "svc-03", "svc-10"]


def store_failures() -> float:
    return REGISTRY.get_sample_value("pagerd_http_store_failures_total") or 0.0


async def test_a_service_list_whose_first_read_fails_is_a_503_problem(
    site: ApiSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(*_: object) -> list[Any]:
        raise StoreError("read failed: disk I/O error")

    monkeypatch.setattr(site.store, "_fetch", failing)
    failures = store_failures()
    status, answer = await site.call("GET", "/services")
    assert status == 503
    assert answer["detail"] == "the database could not be read; try again"
    assert store_failures() == failures + 1


async def test_a_service_list_whose_later_read_fails_is_cut_off_not_completed(
    site: ApiSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the answer has begun, a failed read can only end it early: the client must
    see it incomplete rather than a well-formed, shorter list."""
    monkeypatch.setattr(store_module, "SERVICES_LISTING_CHUNK", 2)
    for service_id in ("a", "b", "c", "d", "e"):
        await service(site, service_id)
    reads = 0
    real_fetch = site.store._fetch

    async def second_read_fails(sql: str, params: Any = ()) -> list[Any]:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise StoreError("read failed: disk I/O error")
        return await real_fetch(sql, params)

    monkeypatch.setattr(site.store, "_fetch", second_read_fails)
    failures = store_failures()
    async with site.http.get(site.url("/services")) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert reads == 2
    assert store_failures() == failures + 1
    # The connection was the one cut; the API answers the next request.
    status, listed = await site.call("GET", "/services")
    assert status == 200
    assert len(listed["services"]) == len(sqlite_rows(site.db, "SELECT id FROM services"))


async def test_a_client_leaving_mid_list_is_noted_not_an_error(
    site: ApiSite, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a list of many chunks, when the client closes its connection after the
    first bytes, then pagerd notes it at info, logs no error, and answers the next one."""
    monkeypatch.setattr(store_module, "SERVICES_LISTING_CHUNK", 10)
    rows = tuple(ServiceRow(f"s{n:04d}", "x" * 200, "p", managed=False) for n in range(2_000))
    await sms_policy(site, "p")
    await site.store.write(WriteBatch(services=rows))
    caplog.set_level(logging.ERROR)

    with structlog.testing.capture_logs() as logs:
        async with (
            aiohttp.ClientSession(headers=site.http.headers) as leaving,
            leaving.get(site.url("/services")) as response,
        ):
            assert response.status == 200
            await response.content.read(1_000)
        await eventually(
            lambda: any(e["event"] == "api.client_gone" for e in logs), what="the leaving noted"
        )

    assert [e for e in logs if e["log_level"] == "error"] == []
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    status, listed = await site.call("GET", "/services")
    assert status == 200
    assert len(listed["services"]) == len(sqlite_rows(site.db, "SELECT id FROM services"))


async def test_an_invalid_or_read_only_service_put_is_refused(site: ApiSite) -> None:
    status, answer = await site.call("PUT", "/services/checkout", {"policy_id": "nope"})
    assert status == 422
    assert fields_of(answer) == {"policy_id"}
    status, answer = await site.call("PUT", "/services/checkout", {"name": "", "policy": "x"})
    assert status == 422
    assert fields_of(answer) == {"name", "policy", "policy_id"}
    status, answer = await site.call("PUT", "/services/payments-api", {"policy_id": "managed"})
    assert status == 409
    assert "managed by config file" in answer["detail"]
    status, answer = await site.call("PUT", "/services/" + "x" * 129, {"policy_id": "managed"})
    assert status == 422
    assert fields_of(answer) == {"id"}
    status, _ = await site.call("GET", "/services/checkout")
    assert status == 404


async def test_service_alerts_ack_and_healthy(site: ApiSite) -> None:
    await service(site, "checkout")

    status, first = await site.call(
        "POST", "/services/checkout/alerts", {"message": "down", "alert_id": "a1"}
    )
    assert status == 202
    assert first["opened"] is True
    status, second = await site.call(
        "POST", "/services/checkout/alerts", {"message": "still", "alert_id": "a1"}
    )
    assert status == 202
    assert second == {"incident_id": first["incident_id"], "opened": False}
    incident_id = first["incident_id"]

    status, answer = await site.call("POST", "/services/checkout/ack", {"incident_id": "other"})
    assert status == 409
    status, answer = await site.call("POST", "/services/checkout/ack", {"by": "alice"})
    assert (status, answer) == (200, {"incident_id": incident_id, "status": "acknowledged"})
    status, answer = await site.call("POST", "/services/checkout/ack", {"incident_id": incident_id})
    assert (status, answer) == (200, {"incident_id": incident_id, "status": "acknowledged"})

    status, answer = await site.call("POST", "/services/checkout/healthy")
    assert (status, answer) == (
        200,
        {"service_id": "checkout", "health": "healthy", "resolved_incident_id": incident_id},
    )
    status, answer = await site.call("POST", "/services/checkout/healthy", {})
    assert answer["resolved_incident_id"] is None
    status, _ = await site.call("POST", "/services/checkout/ack")
    assert status == 409

    found = await site.store.get_incident(incident_id)
    assert found is not None
    assert found[1].acknowledged_by == "alice"
    assert found[1].alert_count == 1  # the same alert_id twice is recorded once


async def test_service_events_refuse_unknown_services_and_bad_bodies(site: ApiSite) -> None:
    for kind in ("alerts", "ack", "healthy"):
        status, _ = await site.call(
            "POST", f"/services/nothing/{kind}", {"message": "x"} if kind == "alerts" else None
        )
        assert status == 404, kind
    await service(site, "checkout")
    status, answer = await site.call(
        "POST", "/services/checkout/alerts", {"message": " ", "alert_id": ""}
    )
    assert status == 422
    assert fields_of(answer) == {"message", "alert_id"}
    status, answer = await site.call("POST", "/services/checkout/healthy", {"now": True})
    assert status == 422
    assert fields_of(answer) == {"now"}
    status, answer = await site.call("POST", "/services/checkout/alerts", data=b"{")
    assert status == 400
    assert site.runtime.pending() == 0
    assert await site.store.list_incidents(service_id="checkout") == []


# --- incidents -----------------------------------------------------------------------------


async def test_incidents_are_listed_newest_first_with_filters(site: ApiSite) -> None:
    await service(site, "a")
    await service(site, "b")
    _, first = await site.call("POST", "/services/a/alerts", {"message": "one"})
    await site.call("POST", "/services/a/healthy")
    _, second = await site.call("POST", "/services/b/alerts", {"message": "two"})
    _, third = await site.call("POST", "/services/a/alerts", {"message": "three"})

    async def ids(query: str) -> list[str]:
        status, body = await site.call("GET", f"/incidents{query}")
        assert status == 200
        return [i["id"] for i in body["incidents"]]

    newest_first = [third["incident_id"], second["incident_id"], first["incident_id"]]
    assert await ids("") == newest_first
    assert await ids("?service_id=a") == [third["incident_id"], first["incident_id"]]
    assert await ids("?status=resolved") == [first["incident_id"]]
    assert await ids("?status=triggered&service_id=b") == [second["incident_id"]]
    assert await ids("?limit=2") == newest_first[:2]
    assert await ids("?service_id=%27%20OR%201%3D1--") == []
    status, body = await site.call("GET", "/incidents?status=opened&limit=0")
    assert status == 422
    assert fields_of(body) == {"status", "limit"}


async def test_an_incident_has_its_timeline_and_notifications(site: ApiSite) -> None:
    await service(site, "checkout")
    _, alerted = await site.call("POST", "/services/checkout/alerts", {"message": "down"})
    incident_id = alerted["incident_id"]
    await site.call("POST", "/services/checkout/ack", {"by": "alice"})

    status, incident = await site.call("GET", f"/incidents/{incident_id}")

    assert status == 200
    assert incident["id"] == incident_id
    assert incident["service_id"] == "checkout"
    assert incident["message"] == "down"
    assert incident["status"] == "acknowledged"
    assert incident["acknowledged_by"] == "alice"
    assert [e["type"] for e in incident["timeline"]] == [
        "incident.triggered",
        "incident.acknowledged",
    ]
    assert incident["timeline"][0]["detail"] == {"message": "down", "level": 1}
    assert all(re.fullmatch(r".+\.\d{3}Z", e["at"]) for e in incident["timeline"])
    assert incident["notifications"] == [
        {
            "id": site.kept.pages[0].id,
            "channel": "sms",
            "to": "+15550009999",
            "level": 1,
            "status": "pending",
            "attempts": 0,
            "last_error": None,
            "developer_id": None,
            "name": None,
        }
    ]
    status, _ = await site.call("GET", "/incidents/nope")
    assert status == 404


# --- authentication and the document -------------------------------------------------------


async def test_every_api_and_integration_route_answers_401_without_a_token(site: ApiSite) -> None:
    # The served application has both add_api_routes and add_integration_routes (apisite.build).
    walked: set[str] = set()
    async with aiohttp.ClientSession() as anonymous:
        for route in site.app.router.routes():
            path = route.resource.canonical if route.resource is not None else ""
            if not path.startswith(("/api/v1", "/integrations")):
                continue
            url = site.base + re.sub(r"\{[^}]*\}", "1", path)
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                async with anonymous.request(
                    route.method, url, headers=headers, json={}
                ) as response:
                    assert response.status == 401, (route.method, path)
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
            walked.add(f"{route.method} {path}")
    canonical = re.compile(r"\{(\w+)[^}]*\}")
    documented = {
        f"{op.method} /api/v1" + canonical.sub(r"{\1}", op.path) for op in api_schemas.OPERATIONS
    }
    assert documented <= walked
    assert any(" /integrations/" in route for route in walked)


async def test_the_openapi_document_is_served(site: ApiSite) -> None:
    status, document = await site.call("GET", "/openapi.json")
    assert status == 200
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    assert schemas["NewTeam"]["required"] == ["team", "developers"]
    assert schemas["NewDeveloper"]["properties"]["phone_number"]["pattern"] == anchored(
        PHONE_NUMBER
    )
    assert set(document["paths"]) >= {"/teams", "/alerts", "/policies/{id}", "/incidents/{id}"}
    assert json.loads(json.dumps(document)) == document


async def test_a_refusal_is_counted_by_status(site: ApiSite) -> None:
    """Every refusal shows in the metrics, by status."""

    def refused_422() -> float:
        value = REGISTRY.get_sample_value("pagerd_http_refused_total", {"status": "422"})
        return value or 0.0

    before = refused_422()
    status, _ = await site.call("POST", "/teams", {"team": {"name": ""}, "developers": []})
    assert status == 422
    assert refused_422() == before + 1
