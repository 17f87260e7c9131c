"""pagerd with ``[notify] workers``: its pages go out through sender processes, end to end."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from tests.conftest import PagerdFactory
from tests.harness import Monitor, Pagerd, Policy, SmsStandIn, eventually, sms, sqlite_rows

ONE = "+15550000001"


def senders(daemon: Pagerd) -> list[int]:
    """pagerd's child processes: its sender processes."""
    assert daemon.process is not None
    pid = daemon.process.pid
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_pages_go_through_a_sender_process_and_one_killed_is_started_again(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given [notify] workers = 1, then READY comes with its sender process up, a page goes
    out with its notification's key; when that process is SIGKILLed, a new one is started
    (logged and counted) and the next incident's page goes out through it."""
    daemon = make_pagerd(
        [Policy("p", [(600.0, [sms(ONE)])])], {}, fallback_policy="p", notify={"workers": 1}
    )
    await daemon.start()
    assert await daemon.readyz() == (200, {"status": "ready"})
    (first,) = senders(daemon)
    await monitor.publish("alert", "api", "down")
    await eventually(lambda: len(sms_service.pages) == 1, what="the first page")

    os.kill(first, signal.SIGKILL)
    await eventually(
        lambda: [e for e in daemon.log_events() if e.get("event") == "sender.died"] != [],
        what="the death logged",
    )
    await eventually(lambda: len(senders(daemon)) == 1 and senders(daemon) != [first])
    assert await daemon.metric("pagerd_sender_restarts_total") == 1
    await monitor.publish("alert", "db", "down")
    await eventually(lambda: len(sms_service.pages) == 2, what="the second page")

    ids = {row[0] for row in sqlite_rows(daemon.db, "SELECT id FROM outbox")}
    assert sms_service.distinct_keys() == ids
    # The outcome is committed after the provider's answer: the page may arrive first.
    await eventually(
        lambda: sqlite_rows(daemon.db, "SELECT DISTINCT status FROM outbox") == [("sent",)],
        what="both outcomes committed as sent",
    )
    (second,) = senders(daemon)
    assert await daemon.stop() == 0
    assert not Path(f"/proc/{second}").exists()  # ended with the daemon
