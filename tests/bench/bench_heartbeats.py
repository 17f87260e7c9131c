"""Heartbeats at scale: 10,000 services beating every 10 s, what pagerd's CPU and commits cost.

pagerd runs as a process with a real mosquitto and SQLite; every service expects a beat
at least every 30 s (``heartbeat_s``), and a publisher in its own process sends each
one a QoS 1 beat every 10 s, evenly spread: 1,000 beats a second. After a warm-up, the
CPU time of pagerd and of mosquitto over the measured stretch is read from /proc, and
pagerd's commits and decided beats from its /metrics.

The peer, in the same run, is mosquitto: it takes in the same beats and hands each on
to pagerd, so the ratio pagerd / mosquitto says what a beat costs pagerd against what
it costs the broker, whatever the machine's speed that hour.

A second table is the runtime alone, in this process (no MQTT): beats posted to the
services' actors, against alerts posted to the same services while each has an open
incident (each appended, so each batch commits): what a beat costs that an alert
does, but for its write.

Run from the repository root: ``.venv/bin/python -m tests.bench.bench_heartbeats``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp

from pagerd.core.domain import Alert, Beat, Event
from pagerd.core.policy import Level, Policy, SmsTarget
from pagerd.core.records import PolicyRow, ServiceRow, WriteBatch
from pagerd.runtime.clock import SystemClock, TimerWheel
from pagerd.runtime.ids import new_incident_id
from pagerd.store.sqlite import Store
from tests.assembly import assembled
from tests.bench.common import (
    CTX,
    PREFIX,
    BenchMosquitto,
    CpuMeter,
    _Acks,
    _expect,
    create_schema,
    pagerd_in,
    pid_of,
    py_spy,
    report,
)
from tests.harness import SmsStandIn, free_port
from tests.mqtt_wire import CONNACK_OK, connect_packet, publish_packet

HEARTBEAT_S = 30.0
POLICY_ID = "bench"


@dataclass(frozen=True)
class BeatPlan:
    port: int
    services: int
    every_s: float
    seconds: float
    qos: int = 1


def _beat_main(plan: BeatPlan, conn: Connection) -> None:
    """Beat each service every ``every_s``, evenly spread, for ``seconds``, at ``qos``."""
    sock = socket.create_connection(("127.0.0.1", plan.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(connect_packet(f"bench-beats-{os.getpid()}"))
    if sock.recv(len(CONNACK_OK)) != CONNACK_OK:
        raise ConnectionError("the broker refused the publisher")
    topics = [f"{PREFIX}/heartbeat/s{n:05d}" for n in range(plan.services)]
    rate = plan.services / plan.every_s
    acks = _Acks(sock)
    conn.send("connected")
    conn.recv()  # "go"
    start = time.monotonic()
    total = int(plan.seconds * rate)
    max_lag = 0.0
    for i in range(total):
        scheduled = start + i / rate
        while (delay := scheduled - time.monotonic()) > 0:
            acks.read(delay)
        max_lag = max(max_lag, -delay)
        sock.sendall(publish_packet(topics[i % plan.services], b"", i % 0xFFFF + 1, qos=plan.qos))
        if plan.qos and i % 256 == 0:
            acks.read(0)
    while plan.qos and acks.count < total:
        acks.read(None)
    sock.sendall(b"\xe0\x00")
    sock.close()
    conn.send((total, time.monotonic() - start, max_lag))


async def metric(url: str, name: str, labels: str = "") -> float:
    """The value of one sample of pagerd's /metrics (0 if absent)."""
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        text = await response.text()
    wanted = f"{name}{{{labels}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def add_services(db: Path, count: int) -> None:
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.executemany(
            "INSERT INTO services (id, name, policy_id, managed, heartbeat_s)"
            " VALUES (?, ?, ?, 0, ?)",
            ((f"s{n:05d}", f"s{n:05d}", POLICY_ID, HEARTBEAT_S) for n in range(count)),
        )


async def run(
    services: int,
    every_s: float,
    seconds: float,
    warmup_s: float,
    *,
    qos: int,
    profile: Path | None,
) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-heartbeats-") as tmp:
        root = Path(tmp)
        broker = BenchMosquitto(root / "broker")
        broker.directory.mkdir()
        await broker.start()
        sms = SmsStandIn(port=free_port())
        await sms.start()
        try:
            async with pagerd_in(root / "pagerd", broker, sms.port) as daemon:
                daemon.directory.mkdir(parents=True, exist_ok=True)
                await create_schema(daemon.db)
                add_services(daemon.db, services)
                await daemon.start()
                metrics_url = f"{daemon.base_url}/metrics"
                conn, child = CTX.Pipe()
                plan = BeatPlan(broker.port, services, every_s, warmup_s + seconds, qos)
                beater = CTX.Process(target=_beat_main, args=(plan, child), daemon=True)
                beater.start()
                _expect(conn, "connected")
                conn.send("go")
                await asyncio.sleep(warmup_s)
                commits_before = await metric(metrics_url, "pagerd_commit_seconds_count")
                beats_before = await metric(
                    metrics_url, "pagerd_events_decided_total", 'outcome="beat"'
                )
                assert broker.process is not None
                pids = {"pagerd": daemon.pid, "mosquitto": pid_of(broker.process)}
                collapsed = None if profile is None else profile / "heartbeats.txt"
                with py_spy(daemon.pid, collapsed, gil_only=True), CpuMeter(pids) as meter:
                    await asyncio.sleep(seconds)
                commits = await metric(metrics_url, "pagerd_commit_seconds_count") - commits_before
                beats = (
                    await metric(metrics_url, "pagerd_events_decided_total", 'outcome="beat"')
                    - beats_before
                )
                while not conn.poll():
                    await asyncio.sleep(0.05)
                sent, sent_s, max_lag = conn.recv()
                beater.join(timeout=5)
                opened = await metric(metrics_url, "pagerd_incidents_open")
                await daemon.stop()
        finally:
            await sms.stop()
            broker.stop()
    pagerd_cpu = meter.used["pagerd"] / seconds
    broker_cpu = meter.used["mosquitto"] / seconds
    report(
        f"Heartbeats: {services:,} services beating every {every_s:g} s at QoS {qos}"
        f" (heartbeat_s {HEARTBEAT_S:g}), measured over {seconds:g} s after {warmup_s:g} s",
        ["figure", "value"],
        [
            ("beats offered / s", f"{services / every_s:,.0f}"),
            (
                "beats sent / s (publisher)",
                f"{sent / sent_s:,.0f} (latest {max_lag * 1000:.0f} ms late)",
            ),
            ("beats decided / s (pagerd)", f"{beats / seconds:,.0f}"),
            ("commits / s (pagerd)", f"{commits / seconds:,.2f}"),
            ("pagerd CPU, share of one core", f"{pagerd_cpu:.1%}"),
            ("mosquitto CPU, share of one core (peer)", f"{broker_cpu:.1%}"),
            ("pagerd / mosquitto", f"{pagerd_cpu / broker_cpu:.2f}" if broker_cpu else "-"),
            ("pagerd CPU per beat", f"{meter.used['pagerd'] / max(beats, 1) * 1e6:.0f} µs"),
            ("incidents opened (expected 0)", f"{opened:.0f}"),
            ("pages sent (expected 0)", f"{len(sms.pages)}"),
        ],
    )


async def runtime_alone(services: int, events: int, chunk: int = 100) -> None:
    """µs of the event loop's CPU per beat and per appended alert, posted to the runtime."""
    policy = Policy(POLICY_ID, (Level((SmsTarget("+15550001111"),), 3600.0),))
    ids = [f"s{n:05d}" for n in range(services)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-heartbeats-runtime-") as tmp:
        store = await Store.open(Path(tmp) / "pagerd.db")
        commits: list[float] = []
        store.on_commit(lambda _units, seconds: commits.append(seconds))
        await store.write(
            WriteBatch(
                policies=(PolicyRow(policy, managed=False),),
                services=tuple(ServiceRow(i, i, POLICY_ID, False, HEARTBEAT_S) for i in ids),
            )
        )
        try:
            async with assembled(store, clock=TimerWheel(SystemClock())) as assembly:
                runtime = assembly.runtime
                runtime.watch(await store.read_watches())
                for service_id in ids:  # each service's incident, for the alerts to append to
                    runtime.submit(service_id, Alert("down", new_incident_id()))
                await runtime.drained()
                for kind in ("beat", "alert", "beat", "alert"):
                    commits.clear()
                    started, cpu = time.perf_counter(), time.thread_time()
                    for n in range(events):
                        event: Event = Beat() if kind == "beat" else Alert("down", "unused")
                        runtime.submit(ids[n % services], event)
                        if n % chunk == chunk - 1:
                            await asyncio.sleep(0)
                    await runtime.drained()
                    cpu = time.thread_time() - cpu
                    wall = time.perf_counter() - started
                    rows.append((kind, cpu, wall, len(commits)))
        finally:
            await store.close()
    beat_cpu = min(cpu for kind, cpu, _, _ in rows if kind == "beat")
    alert_cpu = min(cpu for kind, cpu, _, _ in rows if kind == "alert")
    report(
        f"The runtime alone: {events:,} events posted to {services:,} actors, {chunk} a turn",
        ["event", "loop CPU per event", "wall per event", "commits", "against an alert"],
        [
            (
                kind,
                f"{cpu / events * 1e6:.1f} µs",
                f"{wall / events * 1e6:.1f} µs",
                f"{count:,}",
                f"{(beat_cpu if kind == 'beat' else alert_cpu) / alert_cpu:.2f}",
            )
            for kind, cpu, wall, count in rows
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between beats")
    parser.add_argument("--seconds", type=float, default=60.0, help="the measured stretch")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--qos", type=int, choices=(0, 1), default=1, help="of the beats")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy samples into DIR")
    args = parser.parse_args()
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    every, seconds, warmup = args.every, args.seconds, args.warmup
    asyncio.run(run(args.services, every, seconds, warmup, qos=args.qos, profile=args.profile))
    asyncio.run(runtime_alone(args.services, events=50_000))


if __name__ == "__main__":
    main()
