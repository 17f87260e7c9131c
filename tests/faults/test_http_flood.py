"""Fault suite: 2,000 stalled HTTP connections held for a minute under 200 alerts/s."""

from __future__ import annotations

import asyncio
import json
import re
import statistics
import sys
import time

import aiohttp
import pytest

from tests.conftest import PagerdFactory
from tests.faults.common import report
from tests.faults.firehose import Firehose, alert
from tests.harness import REPO, Mosquitto, Page, Policy, SmsStandIn, eventually, sms

ONE = "+15550000001"
ALERTS_PER_S = 200
# As the issue has it: 2,000 stalled connections held for a minute.
STALLED = 2_000
LOADED_S = 60
# As long as the loaded run: the p99 of a shorter one would see fewer of the machine's
# hiccups, and flatter it.
UNLOADED_S = LOADED_S
KEY = re.compile(r"fault ([a-z]+-\d+)")
# The machine's own noise: the unloaded p99 alone varied from 26 to 258 ms between runs on
# one host, and the attacker shares its two cores. Within this of the unloaded p99 the
# loaded one passes even where it is over twice it.
NOISE_MS = 100.0


def p99_ms(latencies: list[float]) -> float:
    return round(statistics.quantiles(latencies, n=100)[98] * 1000, 1)


async def alerts_to_pages(
    broker: Mosquitto, sms_service: SmsStandIn, phase: str, seconds: float
) -> list[float]:
    """Publish ALERTS_PER_S for ``seconds``, each for a new service (one incident, one page
    each); wait for every page; return each publish-to-page latency, in seconds."""
    count = int(ALERTS_PER_S * seconds)
    messages = [alert(f"{phase}-{i}", f"{phase}-{i}") for i in range(count)]
    hose = Firehose(broker.port, messages, rate=ALERTS_PER_S)
    await hose.run(timeout=seconds + 60)

    def paged() -> dict[str, Page]:
        found: dict[str, Page] = {}
        for page in sms_service.pages:
            match = KEY.search(page.message)
            if match and match.group(1).startswith(f"{phase}-"):
                found.setdefault(match.group(1), page)
        return found

    await eventually(lambda: len(paged()) == count, timeout=60, what=f"every {phase} page")
    pages = paged()
    assert set(pages) == hose.acked == set(hose.sent_at)
    return [pages[key].at - hose.sent_at[key] for key in pages]


async def metric(base_url: str, name: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"{base_url}/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.timeout(360)
async def test_stalled_http_connections_do_not_delay_pages(
    make_pagerd: PagerdFactory, broker: Mosquitto, sms_service: SmsStandIn
) -> None:
    """Given 200 alerts/s, each opening an incident that pages once, measured first with no
    other load, then while 2,000 connections that each sent half a request are held (and
    reopened as pagerd cuts or refuses them) for a minute, then every page arrives both
    times, and the loaded p99 publish-to-page latency is within twice the unloaded one
    (or within NOISE_MS of it, where twice is less than the machine's noise)."""
    daemon = make_pagerd(
        [Policy("p", [(3600.0, [sms(ONE)])])],
        {},
        fallback_policy="p",
        notify={"bundle_window_s": 0},
    )
    await daemon.start()
    unloaded = await alerts_to_pages(broker, sms_service, "calm", UNLOADED_S)

    attacker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.faults.stall",
        str(daemon.http_port),
        str(STALLED),
        str(LOADED_S + 10),
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
    )
    assert attacker.stdout is not None
    try:
        async with asyncio.timeout(30):
            assert await attacker.stdout.readline() == b"holding\n"
        started = time.monotonic()
        loaded = await alerts_to_pages(broker, sms_service, "flood", LOADED_S)
        loaded_for_s = time.monotonic() - started
        async with asyncio.timeout(LOADED_S + 60):
            outcomes = json.loads(await attacker.stdout.readline())
    finally:
        if attacker.returncode is None:
            attacker.kill()
        await attacker.wait()

    refused = await metric(daemon.base_url, "pagerd_http_connections_refused_total")
    cut = await metric(daemon.base_url, "pagerd_http_timeouts_total")
    failed = await metric(
        daemon.base_url, 'pagerd_notifications_total{channel="sms",outcome="failed"}'
    )
    http_lines = [e for e in daemon.log_events() if e["event"].startswith("http.")]
    report(
        "2,000 stalled HTTP connections, 200 alerts/s",
        pages_unloaded=len(unloaded),
        pages_loaded=len(loaded),
        p50_unloaded_ms=round(statistics.median(unloaded) * 1000, 1),
        p50_loaded_ms=round(statistics.median(loaded) * 1000, 1),
        p99_unloaded_ms=p99_ms(unloaded),
        p99_loaded_ms=p99_ms(loaded),
        max_loaded_ms=round(max(loaded) * 1000, 1),
        refused=int(refused),
        cut_at_request_timeout=int(cut),
        attacker=outcomes,
        loaded_for_s=round(loaded_for_s, 1),
        http_log_lines=len(http_lines),
    )
    assert len(unloaded) == ALERTS_PER_S * UNLOADED_S
    assert len(loaded) == ALERTS_PER_S * LOADED_S
    assert refused > 0
    assert cut > 0
    assert failed == 0
    # A line per kind (refused, timed out) per 10 s, and one closing each burst.
    assert len(http_lines) <= 4 * (UNLOADED_S + LOADED_S + 30) / 10, http_lines[:10]
    calm = p99_ms(unloaded)
    assert p99_ms(loaded) <= max(2 * calm, calm + NOISE_MS), (p99_ms(loaded), calm)
