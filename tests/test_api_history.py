"""The API's pages and notes (CONTRACT §4, issue 19): services a page at a time, a
service's and an incident's alerts, incidents by cursor and time range, and notes
decided by the service's actor. Served in process over a real SQLite file; the stores'
own reads are tested against SQLite and PostgreSQL in test_store.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from pagerd.core.domain import Incident
from pagerd.core.records import WriteBatch
from tests.apisite import ApiSite, serve_api


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[ApiSite]:
    async with serve_api(tmp_path / "pagerd.db") as served:
        yield served


async def ok(site: ApiSite, method: str, path: str, body: Any = None) -> Any:
    status, answer = await site.call(method, path, body)
    assert status < 300, (status, answer)
    return answer


async def services(site: ApiSite, *ids: str) -> None:
    body = {"levels": [{"targets": [{"type": "sms", "phone_number": "+15550009999"}]}]}
    await ok(site, "PUT", "/policies/p", body)
    for service_id in ids:
        await ok(
            site, "PUT", f"/services/{service_id}", {"policy_id": "p", "name": f"{service_id} name"}
        )


async def alert(site: ApiSite, service_id: str, message: str = "down") -> str:
    """Alert the service; the id of its incident."""
    answer = await ok(site, "POST", f"/services/{service_id}/alerts", {"message": message})
    return str(answer["incident_id"])


def problems(answer: Any) -> dict[str, str]:
    assert answer["status"] == 422, answer
    return {e["field"]: e["problem"] for e in answer["errors"]}


async def every_page(site: ApiSite, path: str, key: str) -> list[list[Any]]:
    """Each page of a listing, following ``next`` until it is null."""
    found: list[list[Any]] = []
    cursor = None
    while True:
        joiner = "&" if "?" in path else "?"
        url = path if cursor is None else f"{path}{joiner}after={quote(cursor)}"
        answer = await ok(site, "GET", url)
        found.append(answer[key])
        cursor = answer["next"]
        if cursor is None:
            return found


# --- services ----------------------------------------------------------------------------


async def test_services_come_a_page_at_a_time_unhealthy_first(site: ApiSite) -> None:
    """Given five services, two unhealthy, when listed two at a time, then the unhealthy
    come first, then the healthy, each by id, every service once, and the last page's
    ``next`` is null; a search and a health filter narrow the pages."""
    await services(site, "api", "billing", "cache", "db", "edge")
    for service_id in ("edge", "cache"):
        await ok(site, "POST", f"/services/{service_id}/alerts", {"message": "down"})

    pages = await every_page(site, "/services?limit=2", "services")
    assert [[s["id"] for s in page] for page in pages] == [
        ["cache", "edge"],
        ["api", "billing"],
        ["db"],
    ]
    assert [s["health"] for s in pages[0]] == ["unhealthy", "unhealthy"]
    assert pages[0][0]["incident"]["message"] == "down"
    assert pages[1][0] == {
        "id": "api",
        "name": "api name",
        "policy_id": "p",
        "health": "healthy",
        "incident": None,
        "heartbeat_s": None,
        "maintenance": None,
    }
    healthy = await every_page(site, "/services?limit=2&health=healthy", "services")
    assert [[s["id"] for s in page] for page in healthy] == [["api", "billing"], ["db"]]
    found = await ok(site, "GET", "/services?q=GE%20NAME&limit=10")  # in the name, any case
    assert [s["id"] for s in found["services"]] == ["edge"]
    assert found["next"] is None
    found = await ok(site, "GET", "/services?health=unhealthy&q=ca")  # limit defaults
    assert [s["id"] for s in found["services"]] == ["cache"]
    everything = await ok(site, "GET", "/services")  # no limit: all, as before
    assert [s["id"] for s in everything["services"]] == ["api", "billing", "cache", "db", "edge"]
    assert everything["next"] is None
    # A page shows each service as the full listing does.
    paged = {s["id"]: s for page in pages for s in page}
    assert paged == {s["id"]: s for s in everything["services"]}


async def test_a_services_page_names_each_wrong_parameter(site: ApiSite) -> None:
    await services(site, "api")
    status, answer = await site.call("GET", "/services?limit=0&health=sick&after=nope")
    assert status == 422
    assert set(problems(answer)) == {"limit", "health", "after"}
    _, answer = await site.call("GET", "/services?health=healthy&after=u.api")
    assert problems(answer) == {"after": "must be the next cursor of an earlier page"}
    _, answer = await site.call("GET", "/services?q=" + "x" * 101)
    assert set(problems(answer)) == {"q"}


# --- alerts --------------------------------------------------------------------------------


async def test_a_services_alerts_come_newest_first_a_page_at_a_time(site: ApiSite) -> None:
    """Given alerts on two incidents of a service, then its alerts come newest first, with
    their incident, source and alert id, three a page."""
    await services(site, "api")
    first = await ok(site, "POST", "/services/api/alerts", {"message": "a1", "alert_id": "x"})
    await ok(site, "POST", "/services/api/alerts", {"message": "a2"})
    await ok(site, "POST", "/services/api/healthy")
    second = await ok(site, "POST", "/services/api/alerts", {"message": "b1"})
    for n in (2, 3):
        await ok(site, "POST", "/services/api/alerts", {"message": f"b{n}"})

    pages = await every_page(site, "/services/api/alerts?limit=3", "alerts")
    assert [[a["message"] for a in page] for page in pages] == [["b3", "b2", "b1"], ["a2", "a1"]]
    oldest = pages[1][1]
    assert oldest["incident_id"] == first["incident_id"]
    assert (oldest["alert_id"], oldest["source"], oldest["suppressed"]) == ("x", "api", False)
    assert {a["incident_id"] for a in pages[0]} == {second["incident_id"]}
    status, _ = await site.call("GET", "/services/nothing/alerts")
    assert status == 404
    _, answer = await site.call("GET", "/services/api/alerts?after=-1")
    assert set(problems(answer)) == {"after"}


async def test_an_incident_shows_its_newest_alerts_and_pages_to_the_rest(site: ApiSite) -> None:
    """Given an incident that absorbed 25 alerts, then its answer has the 20 newest with a
    cursor, and its alerts route gives the 5 before them, then nothing more."""
    await services(site, "api")
    opened = await ok(site, "POST", "/services/api/alerts", {"message": "alert 0"})
    incident_id = opened["incident_id"]
    for n in range(1, 25):
        await ok(site, "POST", "/services/api/alerts", {"message": f"alert {n}"})

    incident = await ok(site, "GET", f"/incidents/{incident_id}")
    assert incident["alert_count"] == 25
    assert [a["message"] for a in incident["alerts"]] == [f"alert {n}" for n in range(24, 4, -1)]
    rest = await ok(site, "GET", f"/incidents/{incident_id}/alerts?after={incident['alerts_next']}")
    assert [a["message"] for a in rest["alerts"]] == [f"alert {n}" for n in range(4, -1, -1)]
    assert rest["next"] is None
    status, _ = await site.call("GET", "/incidents/nope/alerts")
    assert status == 404


# --- incidents -----------------------------------------------------------------------------


async def test_incidents_come_a_page_at_a_time_within_a_time_range(site: ApiSite) -> None:
    """Given five incidents, when listed two at a time, then each comes once, newest first;
    ``open`` is triggered or acknowledged."""
    await services(site, "a", "b", "c", "d", "e")
    ids = [await alert(site, service_id) for service_id in ("a", "b", "c", "d", "e")]
    await ok(site, "POST", "/services/b/ack")
    await ok(site, "POST", "/services/c/healthy")

    pages = await every_page(site, "/incidents?limit=2", "incidents")
    assert [[i["id"] for i in page] for page in pages] == [ids[:2:-1], ids[2:0:-1], ids[:1]]
    open_ones = await every_page(site, "/incidents?limit=2&status=open", "incidents")
    assert [i["id"] for page in open_ones for i in page] == [ids[4], ids[3], ids[1], ids[0]]

    _, answer = await site.call("GET", "/incidents?since=yesterday&until=2026-12-01T10:00")
    assert set(problems(answer)) == {"since", "until"}
    _, answer = await site.call("GET", "/incidents?after=12.x")
    assert set(problems(answer)) == {"after"}


async def test_incidents_opened_within_since_and_until_only(site: ApiSite) -> None:
    """Given incidents opened an hour apart, then since is inclusive and until exclusive,
    in any UTC offset, a "+" sent unescaped included."""
    at = [datetime(2026, 12, 1, 10, tzinfo=UTC) + timedelta(hours=n) for n in range(4)]
    await site.store.write(
        WriteBatch(incidents=tuple(("api", Incident(f"i{n}", "down", t)) for n, t in enumerate(at)))
    )
    window = await ok(site, "GET", "/incidents?since=2026-12-01T11:00:00Z&until=2026-12-01T13:00Z")
    assert [i["id"] for i in window["incidents"]] == ["i2", "i1"]
    window = await ok(site, "GET", "/incidents?since=2026-12-01T12:00:00+01:00")
    assert [i["id"] for i in window["incidents"]] == ["i3", "i2", "i1"]


# --- notes ---------------------------------------------------------------------------------


async def test_a_note_takes_its_place_in_the_timeline_of_an_open_or_resolved_incident(
    site: ApiSite,
) -> None:
    """Given an acknowledged incident, when notes are added (one by a name, one by nobody
    in particular), then each is an incident.note in the timeline after the events before
    it, published like them; a resolved incident takes notes too."""
    await services(site, "api")
    incident_id = await alert(site, "api")
    await ok(site, "POST", "/services/api/ack", {"by": "alice"})

    status, answer = await site.call(
        "POST", f"/incidents/{incident_id}/notes", {"text": "restarting db1", "by": "alice"}
    )
    assert status == 201
    assert answer == {
        "incident_id": incident_id,
        "type": "incident.note",
        "text": "restarting db1",
        "by": "alice",
    }
    await ok(site, "POST", "/services/api/healthy")
    answer = await ok(site, "POST", f"/incidents/{incident_id}/notes", {"text": "root cause: disk"})
    assert answer["by"] == "api"

    timeline = (await ok(site, "GET", f"/incidents/{incident_id}"))["timeline"]
    assert [(e["type"], e["detail"].get("text")) for e in timeline] == [
        ("incident.triggered", None),
        ("incident.acknowledged", None),
        ("incident.note", "restarting db1"),
        ("incident.resolved", None),
        ("incident.note", "root cause: disk"),
    ]
    assert timeline[2]["detail"] == {"text": "restarting db1", "by": "alice"}
    assert timeline[1]["detail"] == {"by": "alice", "level": 1, "via": "api"}


async def test_a_note_is_refused_for_an_unknown_incident_or_without_text(site: ApiSite) -> None:
    await services(site, "api")
    incident_id = await alert(site, "api")
    status, _ = await site.call("POST", "/incidents/nope/notes", {"text": "x"})
    assert status == 404
    _, answer = await site.call("POST", f"/incidents/{incident_id}/notes", {"text": "  "})
    assert set(problems(answer)) == {"text"}
    _, answer = await site.call("POST", f"/incidents/{incident_id}/notes", {"txt": "x"})
    assert set(problems(answer)) >= {"txt"}
    assert [
        e["type"] for e in (await ok(site, "GET", f"/incidents/{incident_id}"))["timeline"]
    ] == ["incident.triggered"]


async def test_an_incident_names_the_developer_each_page_went_to(site: ApiSite) -> None:
    """Given a team's rotation paged, then the notification names its developer."""
    team = await ok(
        site,
        "POST",
        "/teams",
        {"team": {"name": "claims"}, "developers": [{"name": "Alice", "phone_number": "5550011"}]},
    )
    answer = await ok(site, "POST", "/alerts", {"team_id": team["team"]["id"]})
    incident = await ok(site, "GET", f"/incidents/{answer['incident_id']}")
    [page] = incident["notifications"]
    assert (page["developer_id"], page["name"]) == (team["developers"][0]["id"], "Alice")


async def test_a_resolution_from_the_api_names_who_when_given(site: ApiSite) -> None:
    await services(site, "api")
    incident_id = await alert(site, "api")
    await ok(site, "POST", "/services/api/healthy", {"by": "carol"})
    timeline = (await ok(site, "GET", f"/incidents/{incident_id}"))["timeline"]
    assert timeline[-1]["detail"] == {"level": 1, "by": "carol", "via": "api"}
