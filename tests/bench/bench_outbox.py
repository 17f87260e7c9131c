"""Pages per second through the outbox, and decision-to-page latency.

200 incidents open at once, ten rounds each (repeat = 9), bundling off; the SMS
stand-in runs in a process of its own. Two loads:

- saturated: five phones per round and a 0.05 s ack timeout offer 10,000 pages far
  faster than they can go out, so pages/s is the outbox's capacity (and latency
  is mostly queueing);
- paced: one phone per round and a 1 s timeout offer 200 pages/s, so latency is
  what one page costs from decision to the stand-in.

    .venv/bin/python -m tests.bench.bench_outbox [--incidents 200] [--concurrency 16]
        [--workers 2 --workers 0]

Beside the rates, the CPU each page cost pagerd's main process (its event loop, and
SQLite's thread) and its sender processes, from /proc: on a shared machine a page's
CPU moves less than its rate. ``--workers`` runs each load with that many sender
processes (0: sending on the event loop), alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt

from tests.bench.common import (
    SmsProcess,
    broker_in,
    children_cpu,
    cpu_seconds,
    percentile,
    rate,
    report,
)
from tests.harness import Pagerd, Policy, SmsStandIn, sms, sqlite_rows

ROUNDS = 10  # repeat = 9
LOADS = {"saturated": (5, 0.05), "paced": (1, 1.0)}  # phones per round, ack timeout


async def run(load: str, incidents: int, concurrency: int, workers: int | None) -> list[str]:
    targets, timeout = LOADS[load]
    with tempfile.TemporaryDirectory() as tmp, SmsProcess() as stand_in:
        root = Path(tmp)
        async with broker_in(root / "broker") as broker:
            phones = [sms(f"+1555000{i:04d}") for i in range(targets)]
            services = {f"svc-{i}": "storm" for i in range(incidents)}
            (root / "pagerd").mkdir()
            daemon = Pagerd(
                root / "pagerd",
                broker,
                SmsStandIn(port=stand_in.port),
                [Policy("storm", [(timeout, phones)], repeat=ROUNDS - 1)],
                services,
                notify={"bundle_window_s": 0, "concurrency": concurrency}
                | ({} if workers is None else {"workers": workers}),
            )
            await daemon.start()
            assert daemon.process is not None
            pid = daemon.process.pid
            main_before, senders_before = cpu_seconds(pid), children_cpu(pid)
            try:
                expected = incidents * targets * ROUNDS
                async with aiomqtt.Client("127.0.0.1", broker.port) as client:
                    await asyncio.gather(
                        *(client.publish(f"pagerd/alert/{s}", b"storm", qos=1) for s in services)
                    )
                deadline = time.monotonic() + 300
                while stand_in.pages < expected and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                main_cpu = cpu_seconds(pid) - main_before
                senders_cpu = sum(
                    used - senders_before.get(child, 0.0)
                    for child, used in children_cpu(pid).items()
                )
                # Arrival times are monotonic in the stand-in's process; the same clock here.
                wall_offset = time.time() - time.monotonic()
                arrivals = stand_in.arrivals()
                rows = sqlite_rows(daemon.db, "SELECT id, created_at FROM outbox")
            finally:
                await daemon.stop()

    first_arrival: dict[str, float] = {}
    for at, _, key in arrivals:
        first_arrival.setdefault(key, at + wall_offset)
    latencies = sorted(
        first_arrival[nid] - _epoch(created) for nid, created in rows if nid in first_arrival
    )
    times = sorted(first_arrival.values())
    seconds = times[-1] - times[0] if len(times) > 1 else 0.0
    pages = max(1, len(first_arrival))
    return [
        load,
        "-" if workers is None else str(workers),
        str(incidents),
        str(concurrency),
        f"{len(first_arrival):,} / {expected:,}",
        rate(len(first_arrival), seconds),
        f"{percentile(latencies, 50) * 1000:.1f}",
        f"{percentile(latencies, 99) * 1000:.1f}",
        f"{latencies[-1] * 1000:.1f}" if latencies else "-",
        f"{main_cpu / pages * 1e6:.0f}",
        f"{senders_cpu / pages * 1e6:.0f}",
    ]


def _epoch(stored: str) -> float:
    return datetime.strptime(stored, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--incidents", type=int, default=200)
    parser.add_argument("--concurrency", type=int, action="append")
    parser.add_argument("--workers", type=int, action="append", help="default: pagerd's")
    parser.add_argument("--loads", choices=list(LOADS), action="append", help="default: all")
    args = parser.parse_args()
    rows = [
        asyncio.run(run(load, args.incidents, c, w))
        for load in args.loads or LOADS
        for c in args.concurrency or [16]
        for w in args.workers or [None]
    ]
    report(
        "Outbox: pages through to the SMS stand-in",
        [
            "load",
            "workers",
            "incidents",
            "sends/channel",
            "pages",
            "pages/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "main µs CPU/page",
            "senders µs CPU/page",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
