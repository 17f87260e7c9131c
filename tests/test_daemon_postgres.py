"""pagerd as a real process on a real PostgreSQL database: alert, page, acknowledge by the
link in the page, SIGKILL, start again, and everything committed is still there."""

from __future__ import annotations

import asyncio
import re
import sys

import aiohttp
import pytest

from tests.conftest import PagerdFactory
from tests.harness import API_TOKEN, Monitor, Policy, SmsStandIn, eventually, sms

ONE = "+15550000001"
TWO = "+15550000002"
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}

pytestmark = pytest.mark.slow


async def incident_of(http: aiohttp.ClientSession, base: str, service: str) -> dict[str, object]:
    async with http.get(f"{base}/api/v1/services/{service}", headers=AUTH) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    incident: dict[str, object] = body["incident"] or {}
    return incident


async def test_pagerd_on_postgresql_pages_acks_and_keeps_state_across_a_kill(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn, postgres_url: str
) -> None:
    """Given two services paged at level 1 on PostgreSQL, when one is acknowledged by its
    link and pagerd is SIGKILLed and started again, then the acknowledged one stays
    acknowledged (the API and `pagerd status` say so) and pages nobody more, the other
    escalates to level 2 at its deadline, once, and a healthy event resolves the first."""
    timeout = 1.5
    daemon = make_pagerd(
        [Policy("p", [(timeout, [sms(ONE)]), (timeout, [sms(TWO)])])],
        {"a": "p", "b": "p"},
        database_url=postgres_url,
    )
    await daemon.start()
    await monitor.publish("alert", "a", "disk full")
    await monitor.publish("alert", "b", "latency")
    await eventually(lambda: len(sms_service.to(ONE)) == 2, what="level 1 pages")
    [page_a] = [p for p in sms_service.to(ONE) if "Service a" in p.message]
    link = re.search(r"(http://\S+/ack/\S+)", page_a.message)
    assert link is not None, page_a.message

    async with aiohttp.ClientSession() as http:
        async with http.post(link.group(1)) as response:
            assert response.status == 200, await response.text()
        acknowledged = await incident_of(http, daemon.base_url, "a")
        assert acknowledged["status"] == "acknowledged"

        daemon.kill()
        await daemon.start()

        assert await incident_of(http, daemon.base_url, "a") == acknowledged
        status = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "pagerd", "status"),
            *("--config", str(daemon.directory / "pagerd.toml")),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await status.communicate()
        assert status.returncode == 0
        rows = {line.split()[0]: line.split() for line in out.decode().splitlines() if line}
        assert rows["a"][:5] == ["a", "unhealthy", acknowledged["id"], "acknowledged", "1"]
        await eventually(lambda: bool(sms_service.to(TWO)), timeout=5, what="b's level 2")
        assert "Service b" in sms_service.to(TWO)[0].message
        await monitor.publish("healthy", "a", "")
        deadline = asyncio.get_running_loop().time() + 5
        while await incident_of(http, daemon.base_url, "a"):
            assert asyncio.get_running_loop().time() < deadline, "a was not resolved"
            await asyncio.sleep(0.05)
    # A page whose outcome was not committed before the kill is sent again, with its key.
    assert len({page.key for page in sms_service.to(ONE)}) == 2
    assert len({page.key for page in sms_service.to(TWO)}) == 1
    assert await daemon.stop() == 0
    errors = [e for e in daemon.log_events() if e.get("level") in ("error", "critical")]
    assert errors == []
