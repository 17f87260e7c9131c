"""Store throughput: alert-shaped units per second through group commit (not a test).

Each unit is what one alert on an open incident commits: one incident upsert,
one alert, one timeline row, one outbox row. Many writers run at once, as the
service actors do. Run: ``.venv/bin/python tests/bench/bench_store.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import timeit
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pagerd.core.domain import Incident, RecordAlert, RecordTimeline
from pagerd.core.records import OutboxRow, WriteBatch
from pagerd.store.sqlite import Store

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def unit(writer: int, n: int) -> WriteBatch:
    """The n-th alert of writer's service, on that service's open incident."""
    service_id, incident_id = f"svc-{writer}", f"inc-{writer}"
    # Every decision has its own ``now``, as in the daemon; the incident keeps its opened_at.
    now = T0 + timedelta(seconds=n, microseconds=writer)
    incident = Incident(incident_id, "Too many 5xx!", T0, alert_count=n + 1)
    alert = RecordAlert(incident_id, "Too many 5xx!", f"a-{n}", "bench", now)
    event = RecordTimeline(incident_id, "alert.received", now, {"alert_id": f"a-{n}"})
    return WriteBatch(
        incidents=((service_id, incident),),
        alerts=((service_id, alert),),
        timeline=((service_id, event),),
        outbox=(
            OutboxRow(
                id=f"{incident_id}-{n}-0",
                incident_id=incident_id,
                service_id=service_id,
                channel="sms",
                recipient="+15550001111",
                level=1,
                step=n,
                message="Too many 5xx!",
                created_at=now,
            ),
        ),
    )


async def run(path: Path, units: int, writers: int) -> None:
    store = await Store.open(path)
    rounds: list[tuple[int, float]] = []
    store.on_commit(lambda n, seconds: rounds.append((n, seconds)))
    per_writer = units // writers
    # Built beforehand: making the rows is the runtime's cost, not the store's.
    batches = [[unit(w, n) for n in range(per_writer)] for w in range(writers)]

    async def writer(mine: list[WriteBatch]) -> None:
        for batch in mine:
            await store.write(batch)

    started = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for w, mine in enumerate(batches):
            group.create_task(writer(mine), name=f"bench[writer={w}]")
    elapsed = time.perf_counter() - started
    await store.close()

    total = per_writer * writers
    commit_time = sum(seconds for _, seconds in rounds)
    rate = total / elapsed
    print(f"{total} units from {writers} writers in {elapsed:.2f} s: {rate:,.0f} units/s")
    print(
        f"{len(rounds)} commits, {total / len(rounds):,.0f} units per commit on average,"
        f" {commit_time:.2f} s inside transactions"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=50_000)
    parser.add_argument("--writers", type=int, default=5_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the database")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        asyncio.run(run(Path(tmp) / "bench.db", args.units, args.writers))
    # Figures only compare on comparable CPUs; this says how fast this one runs Python.
    reference = min(timeit.repeat("sum(range(1000))", number=1000, repeat=5)) * 1000
    print(f"CPU reference: sum(range(1000)) takes {reference:.1f} us here")


if __name__ == "__main__":
    main()
