"""Fault suite: pagerd's sender processes SIGKILLed under 1,000 alerts/s."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import pytest

from tests.conftest import PagerdFactory
from tests.faults.common import alert_figures, count, page_figures, report
from tests.faults.firehose import Firehose, alert
from tests.harness import Mosquitto, Pagerd, Policy, SmsStandIn, eventually, sms, sqlite_rows

ONE = "+15550000001"
ALERTS_PER_S = 1_000
ALERTS = 10_000  # each for a service of its own: one incident, one page each
KILLS = 4
PROVIDER_DELAY_S = 0.05  # each page is in flight a while, so a kill cuts some off


def sender_pids(daemon: Pagerd) -> list[int]:
    """pagerd's sender processes that are ready: its children it logged as started."""
    assert daemon.process is not None
    pid = daemon.process.pid
    children = {
        int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    }
    started = {int(str(line["pid"])) for line in logged(daemon, "sender.started")}
    return sorted(children & started)


def logged(daemon: Pagerd, event: str) -> list[dict[str, object]]:
    return [line for line in daemon.log_events() if line.get("event") == event]


@pytest.mark.timeout(240)
async def test_sender_sigkill_under_load_loses_no_page_and_repeats_none_with_a_new_key(
    make_pagerd: PagerdFactory, broker: Mosquitto, sms_service: SmsStandIn
) -> None:
    """Given ~1,000 alerts/s, each a new incident paging one person by SMS through a
    provider that takes 50 ms, when a sender process is SIGKILLed every 1-2 s, four
    times, then each is restarted (pagerd itself runs on), every incident's page
    arrives, the outbox says sent for each, and a page that arrived twice did so with
    the same Idempotency-Key: no page lost, none repeated under a new key."""
    services = [f"svc-{i}" for i in range(ALERTS)]
    daemon = make_pagerd(
        [Policy("p", [(600.0, [sms(ONE)])])],
        {},
        fallback_policy="p",
        notify={"bundle_window_s": 0, "concurrency": 64, "workers": 2},
    )
    sms_service.delays = [PROVIDER_DELAY_S] * (2 * ALERTS)
    await daemon.start()
    pagerd_pid = daemon.process.pid if daemon.process else 0
    hose = Firehose(
        broker.port, [alert(s, f"a-{i}") for i, s in enumerate(services)], rate=ALERTS_PER_S
    )
    publishing = asyncio.create_task(hose.run(timeout=120))
    killed: list[int] = []
    for _ in range(KILLS):
        await asyncio.sleep(random.uniform(1.0, 2.0))
        await eventually(lambda: len(sender_pids(daemon)) == 2, timeout=20, what="2 senders")
        victim = random.choice(sender_pids(daemon))
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
    await publishing

    await eventually(
        lambda: count(daemon.db, "SELECT count(*) FROM outbox WHERE status = 'sent'") == ALERTS,
        timeout=90,
        what="every page sent",
    )
    await asyncio.sleep(0.5)  # let a page that would be a duplicate arrive
    assert daemon.process is not None
    assert daemon.process.poll() is None, "pagerd itself died"
    assert daemon.process.pid == pagerd_pid
    died = logged(daemon, "sender.died")
    outbox = {row[0] for row in sqlite_rows(daemon.db, "SELECT id FROM outbox")}
    alerts = alert_figures(daemon.db, hose.acked)
    pages = page_figures(sms_service)
    resent = sum(int(str(line["resent"])) for line in died)
    report(
        "sender sigkill",
        kills=len(killed),
        restarts=len(died),
        resent=resent,
        **alerts,
        **pages,
        outbox=len(outbox),
    )
    assert sorted(int(str(line["pid"])) for line in died) == sorted(killed)
    assert alerts["lost"] == 0
    assert alerts["duplicated"] == 0
    assert len(outbox) == ALERTS  # one page per incident
    # Every page arrived, and only with its own notification's key.
    assert sms_service.distinct_keys() == outbox
    # A repeat is a page a dead process had in flight, resent: never more than those.
    assert pages["duplicates"] <= resent
    assert logged(daemon, "notification.retrying") == []  # no attempt counted against it
    assert len(sender_pids(daemon)) == 2
    assert await daemon.stop() == 0
