"""CONTRACT §4 integration keys: every service has one; a monitor may send it in place of
an API token, for that service only (a PagerDuty event's routing_key, or ?key=)."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pagerd.config import IntegrationsConfig
from pagerd.core.records import ServiceRow, WriteBatch
from pagerd.store import migrations
from pagerd.store.sqlite import Store as SqliteStore
from tests.postgres import StoreLocation
from tests.test_integrations import PD_PATH, TOKEN, Site, pd_trigger, serving

KEY = re.compile(r"[0-9a-f]{32}")


# --- the store -----------------------------------------------------------------------------


async def test_each_new_service_gets_a_key_of_its_own_and_keeps_it(
    store_location: StoreLocation,
) -> None:
    store = await store_location.open()
    try:
        rows = tuple(ServiceRow(s, s, "p", managed=False) for s in ("a", "b"))
        await store.write(WriteBatch(services=rows))
        a, b = await store.integration_key("a"), await store.integration_key("b")
        assert a is not None
        assert b is not None
        assert KEY.fullmatch(a)
        assert KEY.fullmatch(b)
        assert a != b

        await store.write(WriteBatch(services=(ServiceRow("a", "A", "q", managed=True),)))
        assert await store.integration_key("a") == a, "changing a service keeps its key"
        assert await store.service_of_integration_key(a) == "a"
        assert await store.service_of_integration_key(b) == "b"
        assert await store.service_of_integration_key("0" * 32) is None
        assert await store.integration_key("nope") is None

        new = await store.replace_integration_key("a")
        assert KEY.fullmatch(new)
        assert new != a
        assert await store.integration_key("a") == new
        assert await store.service_of_integration_key(a) is None, "the old key is gone"
        assert await store.service_of_integration_key(new) == "a"
    finally:
        await store.close()


async def test_services_made_before_keys_existed_get_one_at_migration(tmp_path: Path) -> None:
    """Given a database at schema version 5 with services, when pagerd opens it, then each
    service has a key of its own."""
    path = tmp_path / "pagerd.db"
    db = sqlite3.connect(path)
    db.executescript("".join(migrations.MIGRATIONS[:5]))
    db.executemany(
        "INSERT INTO services (id, name, policy_id, managed) VALUES (?, ?, 'p', 0)",
        [(f"s{n}", f"s{n}") for n in range(50)],
    )
    db.execute("PRAGMA user_version = 5")
    db.commit()
    db.close()

    store = await SqliteStore.open(path)
    try:
        keys = [await store.integration_key(f"s{n}") for n in range(50)]
    finally:
        await store.close()
    assert all(k is not None and KEY.fullmatch(k) for k in keys), keys
    assert len(set(keys)) == 50


# --- over HTTP -----------------------------------------------------------------------------


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    async with serving(tmp_path, IntegrationsConfig()) as served:
        yield served


async def key_of(site: Site, service_id: str) -> str:
    key = await site.store.integration_key(service_id)
    assert key is not None
    return key


async def anonymous_post(url: str, body: Any) -> tuple[int, Any, str]:
    """POST ``body`` with no token: (status, JSON answer, WWW-Authenticate)."""
    async with aiohttp.ClientSession() as anonymous, anonymous.post(url, json=body) as response:
        return (
            response.status,
            await response.json(content_type=None),
            response.headers.get("WWW-Authenticate", ""),
        )


async def test_a_pagerduty_event_needs_only_the_integration_key(site: Site) -> None:
    """A stock PagerDuty client sends no token: the routing_key alone names and
    authenticates the service, as it does at PagerDuty."""
    key = await key_of(site, "db")

    status, answer, _ = await anonymous_post(site.base + PD_PATH, pd_trigger(key, "disk full"))

    assert status == 202, answer
    assert answer["status"] == "success"
    [incident] = await site.incidents("db")
    assert incident.message == "disk full"
    assert await site.incidents("api") == []


async def test_with_a_token_the_routing_key_may_be_a_service_id_or_a_key(site: Site) -> None:
    key = await key_of(site, "db")
    assert (await site.post(PD_PATH, pd_trigger("api", "by id", dedup_key="1")))[0] == 202
    assert (await site.post(PD_PATH, pd_trigger(key, "by key", dedup_key="2")))[0] == 202
    assert [i.message for i in await site.incidents("api")] == ["by id"]
    assert [i.message for i in await site.incidents("db")] == ["by key"]


@pytest.mark.parametrize(
    "routing_key", [pytest.param("api", id="a service id"), pytest.param("0" * 32, id="no key")]
)
async def test_without_a_token_any_other_routing_key_is_unauthorized(
    site: Site, routing_key: str
) -> None:
    status, answer, challenge = await anonymous_post(
        site.base + PD_PATH, pd_trigger(routing_key, "down")
    )
    assert (status, challenge) == (401, 'Bearer realm="pagerd"')
    assert answer["detail"].startswith(
        "no token, and the routing_key is no service's integration key"
    )
    assert await site.incidents("api") == []


async def test_an_invalid_event_is_explained_only_to_a_sender_with_a_key(site: Site) -> None:
    key = await key_of(site, "db")
    invalid = {"event_action": "trigger", "payload": {"summary": "no source"}}

    keyed = await anonymous_post(site.base + PD_PATH, invalid | {"routing_key": key})
    unkeyed = await anonymous_post(site.base + PD_PATH, invalid | {"routing_key": "0" * 32})

    assert keyed[0] == 400
    assert "'payload.source' is missing or blank" in keyed[1]["errors"]
    assert unkeyed[0] == 401


@pytest.mark.parametrize("route", ["alertmanager", "grafana"])
async def test_key_query_takes_the_services_own_integration_key_only(
    site: Site, route: str
) -> None:
    db_key, api_key = await key_of(site, "db"), await key_of(site, "api")
    firing = {
        "status": "firing",
        "alerts": [{"status": "firing", "labels": {"alertname": "DiskFull"}}],
    }

    own = await anonymous_post(f"{site.base}/integrations/{route}/db?key={db_key}", firing)
    other = await anonymous_post(f"{site.base}/integrations/{route}/db?key={api_key}", firing)

    assert own[0] == 200, own
    assert other[0] == 401
    assert other[1]["detail"].startswith(
        "unknown key: neither an API token nor service 'db''s integration key"
    )
    assert len(await site.incidents("db")) == 1


async def test_a_replaced_key_stops_working_at_once(site: Site) -> None:
    old = await key_of(site, "db")
    async with site.http.post(f"{site.base}/api/v1/services/db/integration-key") as response:
        assert response.status == 200
        detail = await response.json()
    new = detail["integration_key"]
    assert KEY.fullmatch(new)
    assert new != old
    assert detail["id"] == "db"

    before = await anonymous_post(site.base + PD_PATH, pd_trigger(old, "down"))
    after = await anonymous_post(site.base + PD_PATH, pd_trigger(new, "down"))

    assert (before[0], after[0]) == (401, 202)
    async with site.http.get(f"{site.base}/api/v1/services/db") as response:
        assert (await response.json())["integration_key"] == new


async def test_replacing_the_key_of_no_service_is_404(site: Site) -> None:
    async with site.http.post(f"{site.base}/api/v1/services/nope/integration-key") as response:
        assert response.status == 404
        assert (await response.json())["detail"] == "no service 'nope'"


async def test_the_api_itself_takes_no_integration_key(site: Site) -> None:
    key = await key_of(site, "db")
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{site.base}/api/v1/services/db", headers=headers) as response,
    ):
        assert response.status == 401
    assert key != TOKEN
