"""Page latency: from an alert's scheduled publish to the SMS stand-in receiving the page.

At each offered rate a separate process publishes for ``--seconds`` on a fixed
schedule (open loop: the n-th alert is due at ``start + n / rate`` whether or not
pagerd keeps up), each alert for a service of its own, so each one opens an
incident and pages once. The alert's message carries its scheduled time; the
stand-in, in a process of its own, notes the arrival time on the same monotonic
clock. Latency is arrival minus scheduled time, so a late publisher or a slow
pagerd both count (no coordinated omission). Beside it, pagerd's CPU per page: of its
event loop's thread, and of all of it (its threads and sender processes). At a rate
pagerd keeps up with, that moves much less between runs than throughput at saturation.

``--store`` picks where pagerd keeps its state: SQLite (the default), PostgreSQL (a
private cluster of Debian's server started for the run, its defaults: ``fsync`` and
``synchronous_commit`` on, a fresh database per run, pagerd a node of a cluster of one),
or both, their runs alternating, each PostgreSQL figure with its ratio to the SQLite
run before it (p50 / p99; above 1: slower).

Run from the repository root: ``.venv/bin/python -m tests.bench.bench_latency``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from pagerd.store.postgres import PostgresStore
from tests.bench.common import (
    POLICY_ID,
    Publisher,
    PublishPlan,
    SmsProcess,
    broker_in,
    children_cpu,
    cpu_seconds,
    create_schema,
    insert_services,
    loop_cpu_seconds,
    pagerd_in,
    percentile,
    py_spy,
    report,
    wait_until,
)
from tests.postgres import Databases, PostgresCluster

TARGET_RATE = 1_000
TARGET_P99_MS = 25.0
WARMUP_RATE = 200
WARMUP_S = 2.0
DRAIN_TIMEOUT_S = 120.0
SCHEDULED = re.compile(r"t=(\d+\.\d+)")


@dataclass(frozen=True, kw_only=True)
class Figures:
    rate: int
    sent: int
    paged: int  # distinct notifications (Idempotency-Key); latency counts the first arrival
    resent: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    paged_per_s: float  # distinct pages over first scheduled send to last arrival
    publisher_lag_ms: float
    loop_us: float  # CPU of pagerd's event-loop thread per page, from first send to last page
    pagerd_us: float  # CPU of pagerd in all, its threads and sender processes, per page


def services_for(name: str, n: int) -> tuple[str, ...]:
    return tuple(f"{name}-{i:06d}" for i in range(n))


async def offer(
    sms: SmsProcess, port: int, pid: int, name: str, *, rate: int, seconds: float
) -> Figures:
    """Publish at ``rate`` per second for ``seconds``; wait for every page; measure."""
    services = services_for(name, round(rate * seconds))
    already = sms.pages
    loop_before, pagerd_before = loop_cpu_seconds(pid), _pagerd_cpu(pid)
    with Publisher(PublishPlan(port, services, rate=float(rate))) as publisher:
        publisher.go()
        published = await publisher.result(seconds + DRAIN_TIMEOUT_S)
    await wait_until(
        lambda: sms.pages - already >= len(services), timeout=DRAIN_TIMEOUT_S, every=0.05
    )
    loop_cpu, pagerd_cpu = loop_cpu_seconds(pid) - loop_before, _pagerd_cpu(pid) - pagerd_before
    first: dict[str, tuple[float, float]] = {}  # key -> (scheduled, arrived), first arrival
    arrivals = sms.arrivals()[already:]
    for arrived, message, key in arrivals:
        found = SCHEDULED.search(message)
        assert found, f"page without a scheduled time: {message!r}"
        first.setdefault(key, (float(found.group(1)), arrived))
    latencies = sorted(arrived - scheduled for scheduled, arrived in first.values())
    last_arrival = max(arrived for _, arrived in first.values())
    return Figures(
        rate=rate,
        sent=published.count,
        paged=len(first),
        resent=len(arrivals) - len(first),
        p50_ms=percentile(latencies, 50) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=latencies[-1] * 1000,
        paged_per_s=len(first) / (last_arrival - published.first_at),
        publisher_lag_ms=published.max_lag_s * 1000,
        loop_us=loop_cpu / len(first) * 1e6,
        pagerd_us=pagerd_cpu / len(first) * 1e6,
    )


def _pagerd_cpu(pid: int) -> float:
    """pagerd's CPU seconds so far, with its sender processes' (``[notify] workers``)."""
    return cpu_seconds(pid) + sum(children_cpu(pid).values())


async def run(
    rates: list[int],
    seconds: float,
    directory: Path | None,
    profile: Path | None,
    *,
    kinds: list[str],
    runs: int,
) -> None:
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(dir=directory) as tmp, databases(kinds) as urls:
        for run_number in range(1, runs + 1):
            by_kind: dict[str, list[Figures]] = {}
            for kind in kinds:
                root = Path(tmp) / f"{kind}-{run_number}"
                url = next(urls) if kind == "postgres" else ""
                by_kind[kind] = await one_run(rates, seconds, root, profile, url)
            for index, rate in enumerate(rates):
                for kind, figures in by_kind.items():
                    f = figures[index]
                    ratio = "-"
                    if kind == "postgres" and "sqlite" in by_kind:
                        base = by_kind["sqlite"][index]
                        ratio = f"{f.p50_ms / base.p50_ms:.2f} / {f.p99_ms / base.p99_ms:.2f}"
                    rows.append(
                        (
                            str(run_number),
                            kind,
                            f"{rate:,}",
                            f"{f.sent:,}",
                            f"{f.paged:,} ({f.resent})",
                            f"{f.p50_ms:,.1f}",
                            f"{f.p99_ms:,.1f}",
                            f"{f.max_ms:,.1f}",
                            f"{f.paged_per_s:,.0f}",
                            f"{f.publisher_lag_ms:.1f}",
                            f"{f.loop_us:,.0f} / {f.pagerd_us:,.0f}",
                            ratio,
                        )
                    )
    report(
        "Page latency, publish (scheduled) to SMS stand-in, one new incident per alert"
        f" (target p99 <= {TARGET_P99_MS:.0f} ms at {TARGET_RATE:,}/s)",
        [
            "run",
            "store",
            "offered/s",
            "alerts",
            "pages (resent)",
            "p50 ms",
            "p99 ms",
            "max ms",
            "paged/s",
            "publisher lag max ms",
            "CPU µs/page: loop / all",
            "PG/SQLite p50 / p99",
        ],
        rows,
    )


async def one_run(
    rates: list[int], seconds: float, root: Path, profile: Path | None, url: str
) -> list[Figures]:
    """Every rate against a fresh broker and a fresh pagerd on SQLite, or on ``url``."""
    figures: list[Figures] = []
    with SmsProcess() as sms:
        async with (
            broker_in(root / "broker") as broker,
            pagerd_in(root / "pagerd", broker, sms.port, database_url=url) as daemon,
        ):
            everyone = services_for("warm", round(WARMUP_RATE * WARMUP_S))
            for rate in rates:
                everyone += services_for(f"r{rate}", round(rate * seconds))
            if url:
                await insert_services_postgres(url, everyone)
            else:
                await create_schema(daemon.db)
                insert_services(daemon.db, everyone)
            await daemon.start()
            try:
                # Warm-up, not reported: first connections to the broker and the stand-in.
                await offer(
                    sms, broker.port, daemon.pid, "warm", rate=WARMUP_RATE, seconds=WARMUP_S
                )
                for rate in rates:
                    name = f"pagerd-{'postgres' if url else 'sqlite'}-{rate}-per-s.txt"
                    with py_spy(daemon.pid, profile and profile / name):
                        figures.append(
                            await offer(
                                sms, broker.port, daemon.pid, f"r{rate}", rate=rate, seconds=seconds
                            )
                        )
                    # Let the "sent" commits of the last pages settle before the next rate.
                    await asyncio.sleep(1.0)
            finally:
                await daemon.stop()
    return figures


@contextlib.contextmanager
def databases(kinds: list[str]) -> Iterator[Iterator[str]]:
    """A fresh PostgreSQL database for each run that asks (a private cluster, its defaults:
    ``fsync`` and ``synchronous_commit`` on), if ``kinds`` names PostgreSQL."""
    if "postgres" not in kinds:
        yield iter(())
        return
    cluster = PostgresCluster()
    cluster.start()
    made = Databases(cluster)

    def each() -> Iterator[str]:
        while True:
            yield made.create()

    try:
        yield each()
    finally:
        cluster.stop()


async def insert_services_postgres(url: str, service_ids: tuple[str, ...]) -> None:
    """Create the schema with pagerd's own store, then register services as the API would."""
    store = await PostgresStore.open(url)
    await store.close()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "INSERT INTO services (id, name, policy_id, managed)"
            " SELECT s, s, $2, false FROM unnest($1::text[]) AS s",
            list(service_ids),
            POLICY_ID,
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--rate", type=int, action="append", help="default: 100 (a reference), 500, 1000, 2000"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    parser.add_argument(
        "--profile", type=Path, default=None, help="sample pagerd with py-spy into this directory"
    )
    parser.add_argument("--store", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--runs", type=int, default=1, help="runs of each store, alternating")
    args = parser.parse_args()
    kinds = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    rates = args.rate or [100, 500, 1_000, 2_000]
    asyncio.run(run(rates, args.seconds, args.dir, args.profile, kinds=kinds, runs=args.runs))


if __name__ == "__main__":
    main()
