"""Hostile input over HTTP: deep JSON on every integration, malformed ids on every route.

The API and the integrations are served by a real aiohttp server over a real SQLite
file (tests/apisite). A sender retries a 5xx (Alertmanager does, for ever): whatever
the input, the answer is a 4xx that says what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pagerd.config import Config, LevelConfig, PolicyConfig, ServiceConfig
from pagerd.core.policy import SmsTarget
from pagerd.intake.api_schemas import MAX_DEPTH
from pagerd.intake.integrations import Invalid, cloudwatch_event
from tests.apisite import ApiSite, serve_api

CONFIG = Config(
    policies=(PolicyConfig(id="p", levels=(LevelConfig(targets=(SmsTarget("5550002"),)),)),),
    services=(ServiceConfig(id="svc", name="Service", policy="p"),),
)
INTEGRATIONS = (
    "/integrations/alertmanager/svc",
    "/integrations/grafana/svc",
    "/integrations/pagerduty/v2/enqueue",
    "/integrations/cloudwatch/svc",
)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[ApiSite]:
    async with serve_api(tmp_path / "pagerd.db", CONFIG) as served:
        yield served


def nested(depth: int, inner: str = "1") -> bytes:
    """An object whose ``alerts`` holds lists ``depth`` deep (the object is one more)."""
    return ('{"alerts":' + "[" * depth + inner + "]" * depth + "}").encode()


async def post(site: ApiSite, path: str, body: bytes) -> tuple[int, str]:
    async with site.http.post(site.base + path, data=body) as response:
        return response.status, await response.text()


@pytest.mark.parametrize("path", INTEGRATIONS)
@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 30_000])
async def test_json_nested_past_the_limit_is_a_400_on_every_integration(
    site: ApiSite, path: str, depth: int
) -> None:
    """Given JSON nested past the API's depth limit (30,000 deep is still within the body
    limit), then every integration answers 400 saying so, never a 500."""
    status, text = await post(site, path, nested(depth))

    assert status == 400, text
    assert f"nests deeper than {MAX_DEPTH} levels" in text


def test_a_cloudwatch_message_is_held_to_the_same_depth() -> None:
    """The SNS envelope's Message is JSON of its own: the limit applies to it as well."""
    message = json.dumps({"AlarmName": "x", "NewStateValue": "ALARM", "x": [[[[]]]]})
    assert cloudwatch_event(message) is not None
    with pytest.raises(Invalid) as refused:
        cloudwatch_event('{"AlarmName": "x", "x":' + "[" * 30_000 + "]" * 30_000 + "}")
    assert refused.value.status == 422
    assert "nests deeper" in refused.value.detail


async def test_json_within_the_depth_limit_is_read(site: ApiSite) -> None:
    status, text = await post(site, "/integrations/alertmanager/svc", nested(MAX_DEPTH - 1))

    assert status == 422, text  # read, and refused for its shape: alerts are objects


LONG_DIGITS = "1" * 5000
MALFORMED_IDS = [
    LONG_DIGITS,
    "9" * 20,
    "%00",
    "%FF",
    "%ED%A0%80",  # a lone surrogate, UTF-8 encoded
    "..%2F..%2Fetc",
    "a" * 3000,
    "%20",
    "-1",
    "1.5",
    "%F0%9F%9A%A8",
]
ROUTES = [
    ("GET", "/api/v1/teams/{}"),
    ("POST", "/api/v1/teams/{}/developers"),
    ("GET", "/api/v1/policies/{}"),
    ("DELETE", "/api/v1/policies/{}"),
    ("GET", "/api/v1/services/{}"),
    ("POST", "/api/v1/services/{}/alerts"),
    ("POST", "/api/v1/services/{}/ack"),
    ("POST", "/api/v1/services/{}/healthy"),
    ("GET", "/api/v1/incidents/{}"),
    ("GET", "/ack/{}"),
    ("POST", "/ack/{}"),
    ("POST", "/integrations/alertmanager/{}"),
    ("POST", "/integrations/grafana/{}"),
    ("POST", "/integrations/cloudwatch/{}"),
]
BODIES = {
    "/api/v1/teams/{}/developers": {"name": "a", "phone_number": "5550001"},
    "/api/v1/services/{}/alerts": {"message": "down"},
    "/integrations/alertmanager/{}": {"alerts": [{"status": "firing"}]},
    "/integrations/grafana/{}": {"alerts": [{"status": "firing"}]},
}


@pytest.mark.parametrize(("method", "route"), ROUTES, ids=[f"{m} {r}" for m, r in ROUTES])
async def test_a_malformed_id_anywhere_is_a_404_or_422(
    site: ApiSite, method: str, route: str
) -> None:
    """Given ids no object can have (5,000 digits, NUL, a lone surrogate, a path), then every
    route with a path parameter answers 404 or 422 (400 for a body), never a 5xx."""
    for malformed in MALFORMED_IDS:
        url = site.base + route.format(malformed)
        async with site.http.request(method, url, json=BODIES.get(route)) as response:
            text = await response.text()
            assert response.status in (400, 404, 405, 422), (malformed[:20], response.status, text)


async def test_a_team_id_of_5000_digits_is_a_404_naming_the_limit(site: ApiSite) -> None:
    for method, path in (("GET", ""), ("POST", "/developers")):
        body = BODIES["/api/v1/teams/{}/developers"] if method == "POST" else None
        status, answer = await site.call(method, f"/teams/{LONG_DIGITS}{path}", body)
        assert status == 404
        assert answer["detail"] == "no team with that id: ids have at most 19 digits"
