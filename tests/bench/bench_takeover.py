"""Take-over: from the SIGKILL of the active node to the first page of a new alert.

Two pagerd nodes on one PostgreSQL (a private cluster of Debian's server, its defaults:
``fsync`` and ``synchronous_commit`` on) and one mosquitto. Each round SIGKILLs the
active node and, at once, publishes an alert for a service that had none; the figure is
the time from the kill to that alert's page at the SMS stand-in (a process of its own),
so it counts what is left of the dead node's lease, the take-over (services, directory,
open incidents, pending pages) and the MQTT session taken over. The killed node is
started again and the next round waits until it stands by. CONTRACT §7's bound is the
lease plus 2 s from the dead node's last renewal, which came before the kill.

Run from the repository root: ``.venv/bin/python -m tests.bench.bench_takeover``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from pathlib import Path

import aiomqtt

from tests.bench.common import (
    PHONE,
    BenchPagerd,
    SmsProcess,
    broker_in,
    percentile,
    report,
    wait_until,
)
from tests.harness import Mosquitto, Pagerd, Policy, SmsStandIn, sms
from tests.postgres import PostgresCluster

SERVICES_AT_REST = 1_000  # registered, healthy: read anew at each take-over
OPEN_INCIDENTS = 100  # recovered at each take-over, their timers armed
SERVICE = re.compile(r"takeover-(\d+)")


async def role(daemon: Pagerd) -> str | None:
    try:
        status, body = await daemon.readyz()
    except (OSError, TimeoutError):
        return None
    return str(body.get("role")) if status == 200 else None


async def active_of(nodes: list[BenchPagerd], timeout: float) -> BenchPagerd:
    deadline = time.monotonic() + timeout
    while True:
        for daemon in nodes:
            if daemon.process is not None and await role(daemon) == "active":
                return daemon
        if time.monotonic() > deadline:
            raise TimeoutError("no node became active")
        await asyncio.sleep(0.05)


async def run(kills: int, ttl: float, directory: Path | None) -> None:
    cluster = PostgresCluster()
    await asyncio.to_thread(cluster.start)
    try:
        cluster.psql("CREATE DATABASE pagerd TEMPLATE template0")
        with tempfile.TemporaryDirectory(dir=directory) as tmp, SmsProcess() as stand_in:
            root = Path(tmp)
            async with broker_in(root / "broker") as broker:
                url = cluster.url("pagerd")
                figures = await measure(broker, stand_in, url, root, kills=kills, ttl=ttl)
    finally:
        await asyncio.to_thread(cluster.stop)
    from_kill = sorted(f[0] for f in figures)
    active_after = sorted(f[1] for f in figures)
    report(
        f"Take-over: SIGKILL of the active node to the first page of a new alert, {kills} kills,"
        f" lease_ttl_s = {ttl:g} (target: max <= {ttl + 2:g} s)",
        ["figure", "p50 s", "max s", "min s"],
        [
            (
                "kill -> page of an alert published at the kill",
                f"{percentile(from_kill, 50):.2f}",
                f"{from_kill[-1]:.2f}",
                f"{from_kill[0]:.2f}",
            ),
            (
                "kill -> the other node's /readyz 200",
                f"{percentile(active_after, 50):.2f}",
                f"{active_after[-1]:.2f}",
                f"{active_after[0]:.2f}",
            ),
        ],
    )


async def measure(
    broker: Mosquitto, stand_in: SmsProcess, url: str, root: Path, *, kills: int, ttl: float
) -> list[tuple[float, float]]:
    policy = Policy("bench", [(3600.0, [sms(PHONE)])])
    services = {f"rest-{i:05d}": "bench" for i in range(SERVICES_AT_REST)}
    services |= {f"open-{i:04d}": "bench" for i in range(OPEN_INCIDENTS)}
    services |= {f"takeover-{i:03d}": "bench" for i in range(kills)}
    nodes = []
    for name in ("a", "b"):
        (root / name).mkdir()
        nodes.append(
            BenchPagerd(
                root / name,
                broker,
                SmsStandIn(port=stand_in.port),
                [policy],
                services,
                database_url=url,
                cluster={"node_id": name, "lease_ttl_s": ttl},
            )
        )
    figures: list[tuple[float, float]] = []
    try:
        for daemon in nodes:
            await daemon.start(wait_ready=True)
        async with aiomqtt.Client("127.0.0.1", broker.port) as monitor:
            for i in range(OPEN_INCIDENTS):
                await monitor.publish(f"pagerd/alert/open-{i:04d}", b"open", qos=1)
            await wait_until(lambda: stand_in.pages >= OPEN_INCIDENTS, timeout=60, every=0.05)
            for kill in range(kills):
                victim = await active_of(nodes, timeout=30)
                other = nodes[1 - nodes.index(victim)]
                killed_at = time.monotonic()
                victim.kill()
                await monitor.publish(f"pagerd/alert/takeover-{kill:03d}", b"down", qos=1)
                await active_of([other], timeout=ttl + 30)
                active_after = time.monotonic() - killed_at
                paged = await page_of(stand_in, kill, timeout=ttl + 30)
                figures.append((paged - killed_at, active_after))
                print(f"kill {kill + 1}: page after {paged - killed_at:.2f} s", flush=True)
                await victim.start(wait_ready=True)  # READY once it stands by
    finally:
        for daemon in nodes:
            if daemon.process is not None:
                await daemon.stop()
    return figures


async def page_of(stand_in: SmsProcess, kill: int, *, timeout: float) -> float:
    """When the page of round ``kill``'s alert arrived."""
    deadline = time.monotonic() + timeout
    while True:
        for at, message, _ in stand_in.arrivals():
            found = SERVICE.search(message)
            if found and int(found.group(1)) == kill:
                return at
        if time.monotonic() > deadline:
            raise TimeoutError(f"no page for round {kill}")
        await asyncio.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--ttl", type=float, default=5.0, help="[cluster] lease_ttl_s")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    args = parser.parse_args()
    asyncio.run(run(args.kills, args.ttl, args.dir))


if __name__ == "__main__":
    main()
