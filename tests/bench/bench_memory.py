"""Start-up time and memory with many services and open incidents (a benchmark, not a test).

The database gets 1,000,000 registered services (one policy) and 100,000 open
incidents (``triggered``, ack deadline an hour ahead, so every one arms a timer
on start-up), each with the alert that opened it and its sent page. pagerd
makes the schema; the rows go in with ``executemany``. Measured: process start
to READY=1, and the resident memory (VmRSS) at READY and once settled. pagerd's
bytecode is compiled first, as an installed package has it. Then the console's
service list (GET /api/v1/services, fetched by curl in a process of its own) is
asked for twice while /healthz is asked every 50 ms: how long the list takes, and
the slowest /healthz answer meanwhile, which is how long the event loop was held.

Run from the repository root: ``.venv/bin/python -m tests.bench.bench_memory``.
"""

from __future__ import annotations

import argparse
import asyncio
import compileall
import contextlib
import shutil
import sqlite3
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

import pagerd
from pagerd.store.schema import to_db_time
from tests.bench.common import (
    PHONE,
    POLICY_ID,
    SmsProcess,
    broker_in,
    child_pids,
    create_schema,
    pagerd_in,
    proc_status,
    py_spy,
    report,
)
from tests.harness import API_TOKEN

TARGET_READY_S = 3.0
TARGET_RSS_MIB = 1024
SETTLE_S = 3.0
READY_TIMEOUT_S = 120.0


def build(db: Path, services: int, incidents: int) -> None:
    """Rows as pagerd would have written them; every n-th service has an open incident."""
    now = datetime.now(UTC)
    opened = to_db_time(now - timedelta(minutes=5))
    deadline = to_db_time(now + timedelta(hours=1))
    stride = max(1, services // max(1, incidents))
    unhealthy = [i * stride for i in range(min(incidents, services))]
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("PRAGMA synchronous = OFF")  # building, not benchmarking the build
        conn.executemany(
            "INSERT INTO services (id, name, policy_id, managed) VALUES (?, ?, ?, 0)",
            ((f"svc-{i:07d}", f"Service {i:07d}", POLICY_ID) for i in range(services)),
        )
        conn.executemany(
            "INSERT INTO incidents (id, service_id, message, opened_at, status, level_index,"
            " round, step, ack_deadline, acknowledged_at, acknowledged_by, resolved_at,"
            " alert_count) VALUES (?, ?, ?, ?, 'triggered', 0, 0, 0, ?, NULL, NULL, NULL, 1)",
            (
                (f"inc-{i:07d}", f"svc-{i:07d}", "Too many 5xx!", opened, deadline)
                for i in unhealthy
            ),
        )
        conn.executemany(
            "INSERT INTO alerts (incident_id, service_id, alert_id, message, source, at)"
            " VALUES (?, ?, ?, 'Too many 5xx!', 'bench', ?)",
            ((f"inc-{i:07d}", f"svc-{i:07d}", f"a-{i}", opened) for i in unhealthy),
        )
        conn.executemany(
            "INSERT INTO outbox (id, incident_id, service_id, channel, recipient, level, step,"
            " message, created_at, developer_id, status, attempts, next_attempt_at, last_error)"
            " VALUES (?, ?, ?, 'sms', ?, 1, 0, 'Too many 5xx!', ?, NULL, 'sent', 1, NULL, NULL)",
            (
                (f"inc-{i:07d}-0-0", f"inc-{i:07d}", f"svc-{i:07d}", PHONE, opened)
                for i in unhealthy
            ),
        )


async def list_services(base_url: str, token: str) -> tuple[float, int, float]:
    """(seconds, bytes, slowest /healthz answer in s) of one GET /api/v1/services."""
    slowest = 0.0

    async def ask_health(http: aiohttp.ClientSession) -> None:
        nonlocal slowest
        while True:
            asked = time.monotonic()
            async with http.get(f"{base_url}/healthz") as response:
                await response.read()
            slowest = max(slowest, time.monotonic() - asked)
            await asyncio.sleep(0.05)

    curl = shutil.which("curl")
    assert curl is not None, "curl fetches the list, outside this process's event loop"
    async with aiohttp.ClientSession() as http, asyncio.TaskGroup() as group:
        asking = group.create_task(ask_health(http))
        started = time.monotonic()
        fetch = await asyncio.create_subprocess_exec(
            *(curl, "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}"),
            *("-H", f"Authorization: Bearer {token}", f"{base_url}/api/v1/services"),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await fetch.communicate()
        seconds = time.monotonic() - started
        asking.cancel()
    status, size = out.decode().split()
    assert status == "200", f"GET /api/v1/services answered {status}"
    return seconds, int(size), slowest


def compile_pagerd() -> None:
    """Write pagerd's bytecode, as ``pip install`` does for an installed package.

    A development checkout run with PYTHONDONTWRITEBYTECODE has none, and pagerd
    then compiles every module of its own at each start: half a second more.
    """
    compileall.compile_dir(Path(pagerd.__file__).parent, quiet=1)


async def run(services: int, incidents: int, directory: Path | None, profile: Path | None) -> None:
    compile_pagerd()
    with tempfile.TemporaryDirectory(dir=directory) as tmp, SmsProcess() as sms:
        root = Path(tmp)
        async with (
            broker_in(root / "broker") as broker,
            pagerd_in(root / "pagerd", broker, sms.port) as daemon,
        ):
            await create_schema(daemon.db)
            started = time.monotonic()
            build(daemon.db, services, incidents)
            build_s = time.monotonic() - started
            db_mib = daemon.db.stat().st_size / 2**20

            started = time.monotonic()
            await daemon.start(wait_ready=False)
            with py_spy(daemon.pid, profile and profile / "pagerd-startup.txt"):
                await daemon.ready(timeout=READY_TIMEOUT_S)
            ready_s = time.monotonic() - started
            at_ready = proc_status(daemon.pid)
            await asyncio.sleep(SETTLE_S)
            settled = proc_status(daemon.pid)
            senders_kib = [proc_status(child)["VmRSS"] for child in child_pids(daemon.pid)]
            listings = [await list_services(daemon.base_url, API_TOKEN) for _ in range(2)]
            after_listing = proc_status(daemon.pid)
            stopping = time.monotonic()
            exit_code = await daemon.stop(timeout=60)
            stop_s = time.monotonic() - stopping
            logged = {e.get("event"): e for e in daemon.log_events()}
    recovered = logged.get("pagerd.ready", {}).get("open_incidents", "?")
    inside_s = logged.get("pagerd.ready", {}).get("startup_s", "?")
    report(
        f"Start-up and memory: {services:,} services, {incidents:,} open incidents"
        f" (targets: READY <= {TARGET_READY_S:.0f} s, RSS <= {TARGET_RSS_MIB:,} MiB)",
        ["figure", "value", "target"],
        [
            ("process start to READY=1", f"{ready_s:.2f} s", f"<= {TARGET_READY_S:.0f} s"),
            ("  of which serve() to READY (pagerd's own log)", f"{inside_s} s", ""),
            ("VmRSS at READY", f"{at_ready['VmRSS'] / 1024:,.0f} MiB", f"<= {TARGET_RSS_MIB} MiB"),
            (f"VmRSS {SETTLE_S:.0f} s after READY", f"{settled['VmRSS'] / 1024:,.0f} MiB", ""),
            ("VmHWM (peak RSS)", f"{settled['VmHWM'] / 1024:,.0f} MiB", ""),
            (
                f"sender processes' VmRSS ({len(senders_kib)}), settled",
                f"{sum(senders_kib) / 1024:,.0f} MiB",
                "",
            ),
            *(
                (
                    f"GET /api/v1/services, {n}",
                    f"{seconds:.2f} s, {size / 2**20:,.0f} MiB; slowest /healthz {slowest:.3f} s",
                    "",
                )
                for n, (seconds, size, slowest) in enumerate(listings, 1)
            ),
            ("VmHWM after the two lists", f"{after_listing['VmHWM'] / 1024:,.0f} MiB", ""),
            ("open incidents recovered (timers armed)", str(recovered), f"{incidents:,}"),
            ("SIGTERM to exit", f"{stop_s:.2f} s (exit {exit_code})", ""),
            ("pages sent (none due)", str(sms.pages), "0"),
            ("database build (not pagerd)", f"{build_s:.1f} s, {db_mib:,.0f} MiB", ""),
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=1_000_000)
    parser.add_argument("--incidents", type=int, default=100_000)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    parser.add_argument(
        "--profile", type=Path, default=None, help="sample pagerd's start-up with py-spy into here"
    )
    args = parser.parse_args()
    asyncio.run(run(args.services, args.incidents, args.dir, args.profile))


if __name__ == "__main__":
    main()
