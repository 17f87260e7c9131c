"""The HTTP server on a real socket: health, metrics, problems, and acknowledge links.

A real Store on a SQLite file and a real Runtime with a driven clock stand
behind it, so an acknowledgement is checked where it lands: in the database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest
import structlog
from aiohttp import web

from pagerd.core.domain import Alert, Healthy, Incident, IncidentStatus, Outcome
from pagerd.core.policy import Level, Policy, SmsTarget, TeamTarget
from pagerd.core.records import DeveloperRow, PolicyRow, ServiceRow, TeamRow, WriteBatch
from pagerd.runtime.answers import Committed
from pagerd.runtime.ids import new_incident_id
from pagerd.runtime.router import Runtime
from pagerd.store.sqlite import Store
from pagerd.web.acklinks import AckLinks
from pagerd.web.server import problem
from tests.assembly import assembled, serving, web_app
from tests.doubles import T0, DrivenClock

POLICY = Policy("p", (Level((SmsTarget("+15550000001"),), 3600.0),))
TEAM_POLICY = Policy("team", (Level((TeamTarget("claims"),), 3600.0),))
MAX_BODY = 1024
TOKEN = "web-test-token-Lm5cV8bX1nJ3sD9g"
PUBLIC_URL = "https://pg.example.com"


@dataclass
class Site:
    base: str
    http: aiohttp.ClientSession
    runtime: Runtime
    store: Store
    links: AckLinks
    clock: DrivenClock
    not_ready: list[str]

    async def open_incident(
        self, message: str = "checkout is down", service_id: str = "api"
    ) -> tuple[Incident, str]:
        """An incident of the service, and the ack path of its first notification."""
        result = await self.runtime.ask(service_id, Alert(message, new_incident_id()))
        assert isinstance(result, Committed)
        assert result.outcome is Outcome.OPENED
        assert result.incident is not None
        row = result.notified[0]
        link = self.links.link(row.id, result.incident.id, self.clock.now())
        return result.incident, link.removeprefix(PUBLIC_URL)

    async def status_of(self, incident_id: str) -> Incident:
        await self.runtime.drained()
        found = await self.store.get_incident(incident_id)
        assert found is not None
        return found[1]


async def _echo(request: web.Request) -> web.Response:
    return web.json_response(await request.json())


async def _boom(_: web.Request) -> web.Response:
    raise RuntimeError("a bug")


async def _conflict(_: web.Request) -> web.Response:
    return problem(409, "Conflict", "managed by config file")


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    store = await Store.open(tmp_path / "pagerd.db")
    await store.write(
        WriteBatch(
            policies=(PolicyRow(POLICY, managed=True), PolicyRow(TEAM_POLICY, managed=True)),
            services=(
                ServiceRow("api", "Payments <API>", "p", managed=True),
                ServiceRow("claims", "Claims", "team", managed=True),
            ),
            teams=(TeamRow(1, "claims", managed=True, cursor=0),),
            developers=(DeveloperRow(1, 1, "Alice", "+15550000011"),),
        )
    )
    clock = DrivenClock()
    links = AckLinks(bytes(range(32)), PUBLIC_URL)
    not_ready = ["mqtt: not subscribed"]
    async with assembled(store, clock=clock) as assembly:
        app = web_app(
            assembly,
            links=links,
            tokens=(TOKEN,),
            not_ready=lambda: not_ready,
            max_body_bytes=MAX_BODY,
        )
        # What the full API does: add its routes to the same application.
        app.router.add_post("/api/v1/echo", _echo)
        app.router.add_get("/api/v1/boom", _boom)
        app.router.add_get("/api/v1/conflict", _conflict)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with serving(app) as base, aiohttp.ClientSession(headers=headers) as http:
            yield Site(base, http, assembly.runtime, store, links, clock, not_ready)
    await store.close()


async def get(site: Site, path: str) -> tuple[int, str, dict[str, str]]:
    async with site.http.get(site.base + path) as response:
        return response.status, await response.text(), dict(response.headers)


async def post(site: Site, path: str) -> tuple[int, str, dict[str, str]]:
    async with site.http.post(site.base + path) as response:
        return response.status, await response.text(), dict(response.headers)


async def problem_of(response: aiohttp.ClientResponse) -> dict[str, object]:
    assert response.content_type == "application/problem+json"
    body: dict[str, object] = await response.json(content_type="application/problem+json")
    assert body["type"] == "about:blank"
    assert body["status"] == response.status
    return body


# --- health, readiness, metrics -------------------------------------------------------------


async def test_healthz_answers_ok(site: Site) -> None:
    async with site.http.get(site.base + "/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}


async def test_readyz_is_503_naming_what_is_not_ready_then_200(site: Site) -> None:
    async with site.http.get(site.base + "/readyz") as response:
        assert response.status == 503
        assert "mqtt: not subscribed" in str((await problem_of(response))["detail"])

    site.not_ready.clear()
    async with site.http.get(site.base + "/readyz") as response:
        assert response.status == 200


async def test_metrics_serves_prometheus_text(site: Site) -> None:
    await site.open_incident()
    async with site.http.get(site.base + "/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = await response.text()
    assert 'pagerd_events_decided_total{outcome="opened"}' in text


# --- problems --------------------------------------------------------------------------------


async def test_unknown_path_and_wrong_method_are_problems(site: Site) -> None:
    async with site.http.get(site.base + "/api/v1/nothing") as response:
        assert response.status == 404
        await problem_of(response)
    async with site.http.delete(site.base + "/healthz") as response:
        assert response.status == 405
        await problem_of(response)
        assert "GET" in response.headers["Allow"]


async def test_a_body_over_the_limit_is_a_413_problem(site: Site) -> None:
    async with site.http.post(site.base + "/api/v1/echo", json={"a": "x" * 10}) as response:
        assert response.status == 200
    async with site.http.post(site.base + "/api/v1/echo", json={"a": "x" * MAX_BODY}) as response:
        assert response.status == 413
        assert str(MAX_BODY) in str((await problem_of(response))["detail"])


async def test_an_unexpected_error_is_a_500_problem_logged_once(site: Site) -> None:
    with structlog.testing.capture_logs() as logs:
        async with site.http.get(site.base + "/api/v1/boom") as response:
            assert response.status == 500
            body = await problem_of(response)
    assert "a bug" not in str(body)  # internals stay in the log
    failures = [entry for entry in logs if entry["event"] == "http.failed"]
    assert len(failures) == 1
    assert failures[0]["path"] == "/api/v1/boom"


async def test_problem_builds_the_contract_shape(site: Site) -> None:
    async with site.http.get(site.base + "/api/v1/conflict") as response:
        assert response.status == 409
        assert await problem_of(response) == {
            "type": "about:blank",
            "title": "Conflict",
            "status": 409,
            "detail": "managed by config file",
        }


# --- acknowledge links -----------------------------------------------------------------------


async def test_get_shows_the_incident_and_changes_nothing(site: Site) -> None:
    incident, path = await site.open_incident("checkout is down")

    status, text, headers = await get(site, path)

    assert status == 200
    assert "checkout is down" in text
    assert "Payments &lt;API&gt;" in text
    assert '<button type="submit">Acknowledge</button>' in text
    assert '<form method="post">' in text
    assert 'name="viewport"' in text
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert site.runtime.pending() == 0
    assert (await site.status_of(incident.id)).status is IncidentStatus.TRIGGERED


async def test_post_acknowledges_in_the_store_and_a_second_post_says_already(site: Site) -> None:
    incident, path = await site.open_incident()

    status, text, headers = await post(site, path)

    assert status == 200
    assert "<h1>Acknowledged</h1>" in text
    assert headers["Cache-Control"] == "no-store"
    stored = await site.status_of(incident.id)
    assert stored.status is IncidentStatus.ACKNOWLEDGED
    # In the name of the target the link was sent to (no developer: the number, masked).
    assert stored.acknowledged_by == "+155*****001"

    status, text, _ = await post(site, path)
    assert status == 200
    assert "Already acknowledged" in text
    assert "by +155*****001" in text

    status, text, _ = await get(site, path)
    assert status == 200
    assert "Already acknowledged" in text
    assert "<button" not in text


async def test_a_link_acknowledges_in_the_name_of_the_developer_it_was_sent_to(
    site: Site,
) -> None:
    """Given a team's developer paged, when the link is posted, then the incident is
    acknowledged by that developer, by name, via the SMS link."""
    incident, path = await site.open_incident(service_id="claims")

    status, text, _ = await post(site, path)

    assert status == 200
    assert (await site.status_of(incident.id)).acknowledged_by == "Alice"
    timeline = await site.store.timeline(incident.id)
    assert timeline[-1][1:] == ("incident.acknowledged", {"by": "Alice", "level": 1, "via": "sms"})
    status, text, _ = await get(site, path)
    assert "by Alice" in text


async def test_post_after_the_incident_is_resolved_is_409(site: Site) -> None:
    incident, path = await site.open_incident()
    result = await site.runtime.ask("api", Healthy())
    assert isinstance(result, Committed)
    assert result.outcome is Outcome.RESOLVED

    status, text, _ = await post(site, path)

    assert status == 409
    assert "Already resolved" in text
    assert (await site.status_of(incident.id)).status is IncidentStatus.RESOLVED


async def test_a_link_of_an_earlier_incident_never_acknowledges_a_later_one(site: Site) -> None:
    _, old_path = await site.open_incident("first")
    await site.runtime.ask("api", Healthy())
    later, _ = await site.open_incident("second")

    status, _, _ = await post(site, old_path)

    assert status == 409
    assert (await site.status_of(later.id)).status is IncidentStatus.TRIGGERED


async def test_a_forged_link_is_404_and_changes_nothing(site: Site) -> None:
    incident, path = await site.open_incident()
    last = path[-1]
    forged = path[:-1] + ("A" if last != "A" else "B")

    for send in (get, post):
        status, text, headers = await send(site, forged)
        assert status == 404
        assert "This link is not valid." in text
        assert headers["Referrer-Policy"] == "no-referrer"
    status, text, _ = await get(site, "/ack/nonsense")
    assert status == 404
    assert "This link is not valid." in text
    assert (await site.status_of(incident.id)).status is IncidentStatus.TRIGGERED


async def test_an_expired_link_is_410_and_changes_nothing(site: Site) -> None:
    incident, _ = await site.open_incident()
    nid = f"{incident.id}-0-0"
    old = site.links.link(nid, incident.id, T0 - timedelta(hours=25)).removeprefix(PUBLIC_URL)

    for send in (get, post):
        status, text, _ = await send(site, old)
        assert status == 410
        assert "This link has expired." in text
    assert (await site.status_of(incident.id)).status is IncidentStatus.TRIGGERED


async def test_html_in_the_alert_message_is_escaped(site: Site) -> None:
    _, path = await site.open_incident('<script>alert("x")</script><img src=x onerror=y>')

    for send in (get, post):
        status, text, _ = await send(site, path)
        assert status == 200
        assert "<script>" not in text
        assert "<img" not in text
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text


async def test_api_routes_refuse_requests_without_a_known_token(site: Site) -> None:
    """Given no token or a wrong one, then /api/v1 answers 401 problem+json and a challenge."""
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer wrong"}):
        async with site.http.get(site.base + "/api/v1/conflict", headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
            assert response.content_type == "application/problem+json"
            assert "wrong" not in await response.text()  # never echo a token back
