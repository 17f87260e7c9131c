"""Durable intake: alerts per second committed and acknowledged (a benchmark, not a test).

50,000 QoS 1 alerts over 5,000 services, each with an ``alert_id``, round-robin
over the services, so each service opens one incident and pages once. Measured:

- backlog: pagerd is stopped while the alerts are queued in the broker for its
  persistent session; the clock runs from READY=1 until pagerd has committed and
  acknowledged every alert. pagerd reaches the broker through a relay that counts
  its PUBACKs (the database shows a commit before pagerd has sent its PUBACK), and
  the broker's $SYS figures tell when it holds nothing more for pagerd (it frees a
  message once acknowledged; 1 s ticks). Then pagerd is stopped and its session
  resumed by another client: what that client is sent was not acknowledged.
- live: pagerd runs while a separate process publishes as fast as it can; the
  clock runs from the first publish until every alert is committed and acknowledged.
- the same two with a bare aiomqtt subscriber doing no work: the ceiling that the
  broker and the MQTT client allow on this machine.

Run from the repository root: ``.venv/bin/python -m tests.bench.bench_intake``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.bench.common import (
    AckCounter,
    BrokerWatch,
    CpuMeter,
    Publisher,
    PublishPlan,
    RawSubscriber,
    SmsProcess,
    alerts_committed,
    broker_in,
    count,
    create_schema,
    drain_session,
    insert_services,
    pagerd_in,
    pid_of,
    py_spy,
    rate,
    report,
    wait_until,
)

TARGET_PER_S = 8_000
MAX_PACKET_IDS = 65_535
RUN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Figures:
    case: str
    alerts: int
    seconds: float
    notes: str


@dataclass(frozen=True)
class Load:
    services: int
    per_service: int

    @property
    def total(self) -> int:
        return self.services * self.per_service

    def service_ids(self) -> tuple[str, ...]:
        return tuple(f"svc-{i:05d}" for i in range(self.services))

    def plan(self, port: int) -> PublishPlan:
        return PublishPlan(port, self.service_ids(), self.per_service)


def unacknowledged(messages: list[tuple[str, bytes]]) -> str:
    """How many messages the broker still held for pagerd's session, and the first few."""
    if not messages:
        return "0"
    shown = ", ".join(f"{topic} {body.decode(errors='replace')}" for topic, body in messages[:2])
    return f"{len(messages)} (e.g. {shown})"


async def _publish_and_wait(publisher: Publisher, load: Load) -> float:
    """Send everything; return the seconds until the broker acknowledged the last one."""
    publisher.go()
    published = await publisher.result(RUN_TIMEOUT_S)
    assert published.acked == load.total, f"broker acknowledged {published.acked}/{load.total}"
    return published.last_acked_at - published.first_at


async def pagerd_backlog(root: Path, load: Load, sms: SmsProcess, profile: Path | None) -> Figures:
    async with (
        broker_in(root / "broker") as broker,
        AckCounter(broker.port) as acks,
        BrokerWatch(broker.port) as watch,
        pagerd_in(root / "pagerd", broker, sms.port) as daemon,
    ):
        daemon.mqtt_port = acks.port
        await create_schema(daemon.db)
        insert_services(daemon.db, load.service_ids())
        # A first start makes the persistent session and its subscriptions in the broker.
        await daemon.start()
        assert await daemon.stop() == 0
        with Publisher(load.plan(broker.port)) as publisher:
            publish_s = await _publish_and_wait(publisher, load)

        pages_before = sms.pages
        acks.reset()
        await daemon.start()
        ready_at = time.monotonic()
        cpu = CpuMeter(
            {"pagerd": daemon.pid, "mosquitto": pid_of(broker.process), "bench": os.getpid()},
            children={"pagerd senders": daemon.pid},
        )
        with py_spy(daemon.pid, profile and profile / "pagerd-backlog.txt"), cpu:
            committed_at = await wait_until(
                lambda: alerts_committed(daemon.db) >= load.total, timeout=RUN_TIMEOUT_S, every=0.02
            )
            await wait_until(lambda: acks.acknowledged() >= load.total, timeout=RUN_TIMEOUT_S)
        paged_at = await wait_until(
            lambda: sms.pages - pages_before >= load.services, timeout=RUN_TIMEOUT_S
        )
        empty_at = await watch.empty_after(acks.last_at, timeout=RUN_TIMEOUT_S)
        assert await daemon.stop() == 0
        redelivered = unacknowledged(await drain_session(broker.port, "pagerd-test"))
        alerts = count(daemon.db, "SELECT count(*) FROM alerts")
        incidents = count(daemon.db, "SELECT count(*) FROM incidents")
    return Figures(
        "pagerd, backlog (from READY=1)",
        alerts,
        acks.last_at - ready_at,
        f"all committed at +{committed_at - ready_at:.2f} s; the broker held nothing at"
        f" +{empty_at - ready_at:.1f} s ($SYS, 1 s ticks); {redelivered} redelivered after"
        f" stop; {acks.pubacks - load.total} PUBACKs repeated, {acks.connections}"
        f" connection(s); {incidents:,} incidents, {sms.pages - pages_before:,} pages"
        f" ({sms.distinct_keys(pages_before):,} distinct) by +{paged_at - ready_at:.2f} s;"
        f" broker took the backlog at {rate(load.total, publish_s)}/s; {cpu.summary()}",
    )


async def pagerd_live(root: Path, load: Load, sms: SmsProcess, profile: Path | None) -> Figures:
    async with (
        broker_in(root / "broker") as broker,
        AckCounter(broker.port) as acks,
        BrokerWatch(broker.port) as watch,
        pagerd_in(root / "pagerd", broker, sms.port) as daemon,
    ):
        daemon.mqtt_port = acks.port
        await create_schema(daemon.db)
        insert_services(daemon.db, load.service_ids())
        pages_before = sms.pages
        await daemon.start()
        cpu = CpuMeter(
            {"pagerd": daemon.pid, "mosquitto": pid_of(broker.process), "bench": os.getpid()},
            children={"pagerd senders": daemon.pid},
        )
        with (
            Publisher(load.plan(broker.port)) as publisher,
            py_spy(daemon.pid, profile and profile / "pagerd-live.txt"),
            cpu,
        ):
            publisher.go()
            committed_at = await wait_until(
                lambda: alerts_committed(daemon.db) >= load.total, timeout=RUN_TIMEOUT_S, every=0.02
            )
            await wait_until(lambda: acks.acknowledged() >= load.total, timeout=RUN_TIMEOUT_S)
            published = await publisher.result(RUN_TIMEOUT_S)
        empty_at = await watch.empty_after(acks.last_at, timeout=RUN_TIMEOUT_S)
        assert await daemon.stop() == 0
        redelivered = unacknowledged(await drain_session(broker.port, "pagerd-test"))
        alerts = count(daemon.db, "SELECT count(*) FROM alerts")
    start = published.first_at
    publish_s = published.last_acked_at - start
    return Figures(
        "pagerd, live (from first publish)",
        alerts,
        acks.last_at - start,
        f"all committed at +{committed_at - start:.2f} s; the broker held nothing at"
        f" +{empty_at - start:.1f} s ($SYS, 1 s ticks); {redelivered} redelivered after stop;"
        f" {acks.pubacks - load.total} PUBACKs repeated, {acks.connections} connection(s);"
        f" publisher sent all in {publish_s:.2f} s ({rate(load.total, publish_s)}/s);"
        f" {sms.pages - pages_before:,} pages so far; {cpu.summary()}",
    )


async def raw_backlog(root: Path, load: Load) -> Figures:
    async with broker_in(root / "broker") as broker:
        raw = RawSubscriber(broker.port)
        try:
            await raw.received(raw.start(0), RUN_TIMEOUT_S)  # makes the session
            with Publisher(load.plan(broker.port)) as publisher:
                await _publish_and_wait(publisher, load)
            conn = raw.start(load.total)
            with CpuMeter({"subscriber": raw.pid, "mosquitto": pid_of(broker.process)}) as cpu:
                got = await raw.received(conn, RUN_TIMEOUT_S)
        finally:
            raw.close()
    return Figures(
        "bare aiomqtt subscriber, backlog",
        got.count,
        got.done_at - got.subscribed_at,
        f"auto PUBACK on receipt, no work: the ceiling; {cpu.summary()}",
    )


async def raw_live(root: Path, load: Load) -> Figures:
    async with broker_in(root / "broker") as broker:
        raw = RawSubscriber(broker.port)
        try:
            conn = raw.start(load.total)
            cpu = CpuMeter({"subscriber": raw.pid, "mosquitto": pid_of(broker.process)})
            with Publisher(load.plan(broker.port)) as publisher, cpu:
                publisher.go()
                got = await raw.received(conn, RUN_TIMEOUT_S)
                published = await publisher.result(RUN_TIMEOUT_S)
        finally:
            raw.close()
    publish_s = published.last_acked_at - published.first_at
    return Figures(
        "bare aiomqtt subscriber, live",
        got.count,
        got.done_at - published.first_at,
        f"publisher sent all in {publish_s:.2f} s ({rate(load.total, publish_s)}/s);"
        f" {cpu.summary()}",
    )


async def run(load: Load, cases: list[str], directory: Path | None, profile: Path | None) -> None:
    figures: list[Figures] = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp, SmsProcess() as sms:
        root = Path(tmp)
        for case in cases:
            match case:
                case "backlog":
                    figures.append(await pagerd_backlog(root / case, load, sms, profile))
                case "live":
                    figures.append(await pagerd_live(root / case, load, sms, profile))
                case "raw-backlog":
                    figures.append(await raw_backlog(root / case, load))
                case "raw-live":
                    figures.append(await raw_live(root / case, load))
                case _:
                    raise ValueError(case)
    report(
        f"Durable intake: {load.total:,} alerts over {load.services:,} services"
        f" (target >= {TARGET_PER_S:,} alerts/s committed and acknowledged)",
        ["case", "alerts", "seconds", "alerts/s", "notes"],
        [
            (f.case, f"{f.alerts:,}", f"{f.seconds:.2f}", rate(f.alerts, f.seconds), f.notes)
            for f in figures
        ],
    )


CASES = ["backlog", "live", "raw-backlog", "raw-live"]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=5_000)
    parser.add_argument("--per-service", type=int, default=10)
    parser.add_argument("--case", choices=CASES, action="append", help="default: all")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    parser.add_argument(
        "--profile", type=Path, default=None, help="sample pagerd with py-spy into this directory"
    )
    args = parser.parse_args()
    load = Load(args.services, args.per_service)
    if load.total > MAX_PACKET_IDS:
        parser.error(f"at most {MAX_PACKET_IDS:,} alerts: PUBACKs are told apart by packet id")
    asyncio.run(run(load, args.case or CASES, args.dir, args.profile))


if __name__ == "__main__":
    main()
