"""The runtime's own ceiling: alerts decided and committed per second, no MQTT, no HTTP.

The intake benchmark's load (round-robin over the services, each service opening
one incident and appending the rest) is posted straight to the runtime, in chunks
of about what one 64 KiB read of the broker's stream holds, with a real store
and pagerd's JSON logging (at info, or ``--log-level``) into /dev/null. Pages are
recorded, not sent. What this cannot reach, intake through MQTT cannot either.

``--store`` picks the store: SQLite (the default), PostgreSQL (a private cluster of
Debian's server started for the run, ``fsync`` and ``synchronous_commit`` on, a fresh
database per run), or both, their runs alternating, with each PostgreSQL run's ratio
to the SQLite run before it. ``fence`` compares PostgreSQL as a single node commits with
PostgreSQL as a node of a cluster does (each round first checks the lease's epoch, in
its transaction); ``all`` runs the three, each ratio to the SQLite run before it.

Run from the repository root: ``.venv/bin/python -m tests.bench.bench_runtime``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pagerd.app import GC_THRESHOLDS
from pagerd.config.model import MAX_LEASE_TTL_S
from pagerd.core.domain import Alert, Outcome
from pagerd.core.policy import Level, Policy, SmsTarget
from pagerd.core.records import PolicyRow, ServiceRow, WriteBatch
from pagerd.runtime.answers import Answer, Committed
from pagerd.runtime.ids import new_incident_id
from pagerd.store.lease import Lease, Tenure
from pagerd.store.postgres import PostgresStore
from pagerd.telemetry.logs import configure_logging
from tests.assembly import assembled
from tests.bench.common import py_spy, rate, report
from tests.doubles import DrivenClock
from tests.postgres import Databases, PostgresCluster, StoreLocation

POLICY = Policy("p", (Level((SmsTarget("+15550000001"),), 60.0),))
MESSAGES_PER_READ = 600  # alerts of the intake benchmark's size in one 64 KiB read


@dataclass(frozen=True)
class Measured:
    alerts: int
    seconds: float  # until all were committed and answered
    opened: int  # incidents
    loop_cpu: float  # seconds of the event loop thread's CPU
    commits: int
    in_commits: float  # seconds from each round's start to its commit, summed


async def measure(
    location: StoreLocation, services: int, per_service: int, *, fenced: bool = False
) -> Measured:
    """Post the load and wait until every alert is committed and answered.

    ``fenced`` (PostgreSQL): as a node of a cluster commits, each round checking its
    lease's epoch in its transaction first.
    """
    store = await location.open()
    lease = None
    if fenced and isinstance(store, PostgresStore):
        lease = Lease(location.url, "bench", ttl_s=MAX_LEASE_TTL_S)
        await lease.join()
        tenure = await lease.try_acquire()
        assert isinstance(tenure, Tenure), tenure
        store.fence(tenure)
    rounds: list[float] = []
    store.on_commit(lambda units, seconds: rounds.append(seconds))
    service_ids = [f"svc-{i:05d}" for i in range(services)]
    await store.write(
        WriteBatch(
            policies=(PolicyRow(POLICY, managed=True),),
            services=tuple(ServiceRow(s, s, POLICY.id, managed=True) for s in service_ids),
        )
    )
    answered: list[Answer] = []
    load = [(s, f"a-{s}-{n}") for n in range(per_service) for s in service_ids]
    try:
        async with assembled(store, clock=DrivenClock()) as assembly:
            runtime = assembly.runtime
            rounds.clear()
            started, cpu = time.perf_counter(), time.thread_time()
            for start in range(0, len(load), MESSAGES_PER_READ):
                for service_id, alert_id in load[start : start + MESSAGES_PER_READ]:
                    alert = Alert("Too many 5xx!", new_incident_id(), alert_id, "bench")
                    runtime.submit(service_id, alert, answered.append)
                await asyncio.sleep(0)  # the next read comes in a later turn of the loop
            await runtime.drained()
            elapsed, cpu = time.perf_counter() - started, time.thread_time() - cpu
    finally:
        await store.close()
        if lease is not None:
            await lease.close()
    assert len(answered) == len(load), f"{len(answered)} of {len(load)} answered"
    committed = [r for r in answered if isinstance(r, Committed)]
    assert len(committed) == len(answered), "every alert committed"
    opened = sum(1 for r in committed if r.outcome is Outcome.OPENED)
    return Measured(len(load), elapsed, opened, cpu, len(rounds), sum(rounds))


@contextlib.contextmanager
def locations(kinds: list[str]) -> Iterator[Iterator[StoreLocation]]:
    """A fresh store of each kind in ``kinds``, in turn, for as long as the caller asks
    (``postgres-fenced`` is a PostgreSQL database too)."""
    wants_postgres = any(kind.startswith("postgres") for kind in kinds)
    cluster = PostgresCluster() if wants_postgres else None  # the server's defaults
    if cluster is not None:
        cluster.start()
    databases = None if cluster is None else Databases(cluster)
    made: list[str] = []

    def each() -> Iterator[StoreLocation]:
        while True:
            for kind in kinds:
                if kind == "sqlite" or databases is None:
                    with tempfile.TemporaryDirectory() as tmp:
                        yield StoreLocation(path=str(Path(tmp) / "pagerd.db"))
                else:
                    made.append(databases.create())
                    yield StoreLocation(url=made[-1])

    try:
        yield each()
    finally:
        if cluster is not None:
            cluster.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=5_000)
    parser.add_argument("--per-service", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3, help="runs of each store")
    parser.add_argument(
        "--store",
        choices=["sqlite", "postgres", "both", "fence", "all"],
        default="sqlite",
        help="both: SQLite and PostgreSQL; fence: PostgreSQL unfenced and fenced, as a node"
        " of a cluster commits; all: the three",
    )
    parser.add_argument(
        "--log-level", default="info", help="pagerd's log level (info, as in production)"
    )
    parser.add_argument(
        "--profile", type=Path, default=None, help="sample with py-spy into this directory"
    )
    args = parser.parse_args()
    gc.set_threshold(*GC_THRESHOLDS)  # as pagerd runs
    kinds = {
        "both": ["sqlite", "postgres"],
        "fence": ["postgres", "postgres-fenced"],
        "all": ["sqlite", "postgres", "postgres-fenced"],
    }.get(args.store, [args.store])
    with open(os.devnull, "w") as devnull, locations(kinds) as stores:
        configure_logging("json", args.log_level, devnull)
        rows = []
        last_sqlite: float | None = None
        for run, location in zip(range(1, args.runs * len(kinds) + 1), stores, strict=False):
            output = args.profile and args.profile / f"runtime-{location.kind}-{run}.txt"
            kind = location.kind
            fenced = kind == "postgres" and kinds[(run - 1) % len(kinds)] == "postgres-fenced"
            with py_spy(os.getpid(), output):
                m = asyncio.run(measure(location, args.services, args.per_service, fenced=fenced))
            ratio = "-"
            if fenced:
                kind = "postgres-fenced"
            if kind == kinds[0]:
                last_sqlite = m.seconds
            elif last_sqlite is not None:
                ratio = f"{last_sqlite / m.seconds:.2f}"  # throughput, this one / the first
            rows.append(
                (
                    str(run),
                    kind,
                    f"{m.alerts:,}",
                    f"{m.opened:,}",
                    f"{m.seconds:.2f}",
                    rate(m.alerts, m.seconds),
                    f"{m.seconds / m.alerts * 1e6:.0f}",
                    f"{m.loop_cpu:.2f}",
                    f"{m.commits:,}",
                    f"{m.in_commits:.2f}",
                    ratio,
                )
            )
    report(
        f"Runtime alone: {args.services * args.per_service:,} alerts over {args.services:,}"
        f" services, posted in reads of 600, committed to {' and '.join(kinds)}, pages recorded",
        [
            "run",
            "store",
            "alerts",
            "incidents",
            "seconds",
            "alerts/s",
            "µs per alert",
            "loop CPU s",
            "commits",
            "in commits s",
            "/ first (throughput)",
        ],
        rows,
    )


if __name__ == "__main__":
    main()
