"""Fixtures for end-to-end tests: each test gets its own broker, SMS stand-in and daemon."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Monitor, Mosquitto, Pagerd, Policy, SmsStandIn


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "broker")
    mosquitto.directory.mkdir()
    await mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@pytest.fixture
async def sms_service() -> AsyncIterator[SmsStandIn]:
    stand_in = SmsStandIn()
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


@pytest.fixture
async def monitor(broker: Mosquitto) -> AsyncIterator[Monitor]:
    watcher = Monitor(broker)
    async with watcher.connected():
        yield watcher


PagerdFactory = Callable[..., Pagerd]


@pytest.fixture
async def make_pagerd(
    tmp_path: Path, broker: Mosquitto, sms_service: SmsStandIn
) -> AsyncIterator[PagerdFactory]:
    made: list[Pagerd] = []

    def make(policies: list[Policy], services: dict[str, str], **options: Any) -> Pagerd:
        directory = tmp_path / f"pagerd-{len(made)}"
        directory.mkdir()
        daemon = Pagerd(directory, broker, sms_service, policies, services, **options)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.process is not None:
            with contextlib.suppress(Exception):
                await daemon.stop()
