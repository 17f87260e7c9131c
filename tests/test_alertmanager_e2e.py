"""A real client nobody here wrote: Debian's Prometheus Alertmanager, sending to pagerd.

Alertmanager runs as a process on free loopback ports, with two receivers: its
webhook, pointed at ``/integrations/alertmanager/{service}`` with an API token, and
its PagerDuty integration, whose Events API v2 URL is pagerd's enqueue endpoint and
whose routing key is the service's integration key, as for PagerDuty. Alerts pushed
into Alertmanager's API must page through pagerd, and resolving them must resolve
pagerd's incidents.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import PagerdFactory
from tests.harness import (
    API_TOKEN,
    Pagerd,
    Policy,
    SmsStandIn,
    eventually,
    free_port,
    sms,
    sqlite_rows,
)

pytestmark = pytest.mark.slow

WEBHOOK_SERVICE = "am-webhook"
PAGERDUTY_SERVICE = "am-pagerduty"
WEBHOOK_PHONE = "+15550000101"
PAGERDUTY_PHONE = "+15550000102"
INSTALL_HINT = (
    "prometheus-alertmanager is not installed; this test needs Debian's "
    "`apt-get install prometheus-alertmanager` (CI installs it)"
)


def alertmanager_binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found is None:
        pytest.fail(INSTALL_HINT)
    return found


def alertmanager_config(pagerd: Pagerd, integration_key: str) -> str:
    """Route by the ``via`` label: the webhook receiver, or the PagerDuty one, which
    sends only what it would send PagerDuty (no token)."""
    auth = {"authorization": {"type": "Bearer", "credentials": API_TOKEN}}
    config = {
        "route": {
            "receiver": "webhook",
            "group_by": ["alertname"],
            "group_wait": "0s",
            "group_interval": "1s",
            "repeat_interval": "1h",
            "routes": [{"receiver": "pagerduty", "matchers": ['via="pagerduty"']}],
        },
        "receivers": [
            {
                "name": "webhook",
                "webhook_configs": [
                    {
                        "url": f"{pagerd.base_url}/integrations/alertmanager/{WEBHOOK_SERVICE}",
                        "send_resolved": True,
                        "http_config": auth,
                    }
                ],
            },
            {
                "name": "pagerduty",
                "pagerduty_configs": [
                    {
                        "routing_key": integration_key,
                        "url": f"{pagerd.base_url}/integrations/pagerduty/v2/enqueue",
                        "send_resolved": True,
                    }
                ],
            },
        ],
    }
    return json.dumps(config, indent=2)  # YAML is a superset of JSON


@dataclass
class Alertmanager:
    directory: Path
    pagerd: Pagerd
    integration_key: str  # of PAGERDUTY_SERVICE
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.directory / "alertmanager.log"

    async def start(self) -> None:
        binary = alertmanager_binary()
        self.directory.mkdir()
        config = self.directory / "alertmanager.yml"
        config.write_text(alertmanager_config(self.pagerd, self.integration_key))
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.path={self.directory / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",  # no gossip: a single, standalone instance
                    "--log.level=debug",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        await self._ready()

    async def _ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as http:
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise AssertionError(f"alertmanager exited:\n{self.tail()}")
                try:
                    async with http.get(f"{self.url}/-/ready") as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"alertmanager not ready:\n{self.tail()}")
                await asyncio.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text().splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    async def push(self, alerts: list[dict[str, Any]]) -> None:
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.url}/api/v2/alerts", json=alerts) as response,
        ):
            assert response.status == 200, await response.text()


def alert(name: str, via: str, starts_at: datetime, ends_at: datetime | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "labels": {"alertname": name, "via": via, "instance": "web-01"},
        "annotations": {"summary": f"{name} on web-01"},
        "startsAt": starts_at.isoformat().replace("+00:00", "Z"),
        "generatorURL": "http://prometheus.example/graph",
    }
    if ends_at is not None:
        body["endsAt"] = ends_at.isoformat().replace("+00:00", "Z")
    return body


@pytest.fixture
async def pagerd(make_pagerd: PagerdFactory) -> Pagerd:
    daemon = make_pagerd(
        [
            Policy("webhook-oncall", [(3600.0, [sms(WEBHOOK_PHONE)])]),
            Policy("pagerduty-oncall", [(3600.0, [sms(PAGERDUTY_PHONE)])]),
        ],
        {WEBHOOK_SERVICE: "webhook-oncall", PAGERDUTY_SERVICE: "pagerduty-oncall"},
    )
    await daemon.start()
    return daemon  # make_pagerd stops it


@pytest.fixture
async def alertmanager(tmp_path: Path, pagerd: Pagerd) -> AsyncIterator[Alertmanager]:
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.get(f"{pagerd.base_url}/api/v1/services/{PAGERDUTY_SERVICE}") as response,
    ):
        key = (await response.json())["integration_key"]
    manager = Alertmanager(tmp_path / "alertmanager", pagerd, key)
    try:
        await manager.start()
        yield manager
    finally:
        manager.stop()


def incidents(daemon: Pagerd) -> dict[str, str]:
    """service id → status of its latest incident."""
    rows = sqlite_rows(daemon.db, "SELECT service_id, status FROM incidents ORDER BY opened_at")
    return {str(service_id): str(status) for service_id, status in rows}


async def test_alertmanager_webhook_and_pagerduty_page_then_resolve(
    pagerd: Pagerd, alertmanager: Alertmanager, sms_service: SmsStandIn
) -> None:
    started = datetime.now(UTC) - timedelta(minutes=1)
    firing = [
        alert("CheckoutErrors", "webhook", started, None),
        alert("QueueStuck", "pagerduty", started, None),
    ]

    await alertmanager.push(firing)

    def why() -> str:
        return f"\n--- alertmanager ---\n{alertmanager.tail()}\n--- pagerd ---\n{pagerd.tail()}"

    try:
        await eventually(
            lambda: bool(sms_service.to(WEBHOOK_PHONE) and sms_service.to(PAGERDUTY_PHONE)),
            timeout=20,
            what="a page for each service",
        )
    except AssertionError as error:
        raise AssertionError(f"{error}{why()}") from None
    assert "CheckoutErrors on web-01" in sms_service.to(WEBHOOK_PHONE)[0].message
    # Alertmanager's PagerDuty summary is its default template: "[FIRING:1] QueueStuck ...".
    assert "QueueStuck" in sms_service.to(PAGERDUTY_PHONE)[0].message
    assert incidents(pagerd) == {WEBHOOK_SERVICE: "triggered", PAGERDUTY_SERVICE: "triggered"}

    ended = datetime.now(UTC) - timedelta(seconds=1)
    await alertmanager.push(
        [
            alert("CheckoutErrors", "webhook", started, ended),
            alert("QueueStuck", "pagerduty", started, ended),
        ]
    )

    try:
        await eventually(
            lambda: (
                incidents(pagerd) == {WEBHOOK_SERVICE: "resolved", PAGERDUTY_SERVICE: "resolved"}
            ),
            timeout=20,
            what="both incidents resolved",
        )
    except AssertionError as error:
        raise AssertionError(f"{error}: {incidents(pagerd)}{why()}") from None
    # Each service was paged once: repeats and the resolution page nobody.
    assert len(sms_service.to(WEBHOOK_PHONE)) == len(sms_service.to(PAGERDUTY_PHONE)) == 1
