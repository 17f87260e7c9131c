"""Fixtures for end-to-end tests: each test gets its own broker, SMS stand-in and daemon."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright

from tests.browser import CHROMIUM_ARGS
from tests.harness import (
    Monitor,
    Mosquitto,
    Pagerd,
    Policy,
    SmsStandIn,
    free_port,
    make_tls_files,
    mosquitto_password_file,
)
from tests.postgres import Databases, PostgresCluster, StoreLocation, postgres_bin


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    mosquitto = Mosquitto(tmp_path / "broker")
    mosquitto.directory.mkdir()
    await mosquitto.start()
    yield mosquitto
    mosquitto.stop()


@dataclass(frozen=True)
class Secured:
    """mosquitto with a user and no anonymous access, a TLS listener beside the plain one."""

    broker: Mosquitto
    tls_port: int
    ca: Path


@pytest.fixture
async def secured(tmp_path: Path) -> AsyncIterator[Secured]:
    tls = make_tls_files(tmp_path / "tls")
    passwords = mosquitto_password_file(tmp_path / "passwords", "alice", "s3cret")
    tls_port = free_port()
    broker = Mosquitto(
        tmp_path / "secured-broker",
        extra_conf=f"allow_anonymous false\npassword_file {passwords}\n"
        "allow_zero_length_clientid false\n" + tls.listener(tls_port),
    )
    broker.directory.mkdir()
    await broker.start()
    yield Secured(broker, tls_port, tls.ca)
    broker.stop()


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


# --- PostgreSQL: one private cluster per session, a fresh database per test ---------------


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[Databases]:
    try:
        postgres_bin()
    except RuntimeError as missing:
        pytest.fail(str(missing), pytrace=False)
    # The tests never crash the machine, so flushing to disk would only make them slow;
    # the store's sessions still run with synchronous_commit on (test_store_postgres).
    cluster = PostgresCluster(settings={"fsync": "off", "full_page_writes": "off"})
    cluster.start()
    try:
        yield Databases(cluster)
    finally:
        cluster.stop()


@pytest.fixture
async def postgres_url(postgres_databases: Databases) -> AsyncIterator[str]:
    """The URL of a new, empty database, dropped after the test."""
    url = await postgres_databases.create_async()
    yield url
    await postgres_databases.drop_async(url)


@pytest.fixture(params=["sqlite", "postgres"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """Where a test's store lives: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return StoreLocation(path=str(tmp_path / "state" / "pagerd.db"))
    return StoreLocation(url=request.getfixturevalue("postgres_url"))


# --- the browser of the console's tests -------------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    """Debian's chromium, headless."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()
