"""Escalation timer lateness under load: how late level 2 is paged after level 1's ack timeout.

A two-level policy: level 1 pages number A with a short ack timeout, level 2 pages
number B (with a timeout far past the run, so nothing follows). A separate process
publishes new-incident alerts on a fixed schedule (open loop, ``--rate`` per second
for ``--seconds``), each for a service of its own, so every alert opens an incident
whose timer runs out while the load goes on; nobody acknowledges.

The deadline is the incident's ``incident.triggered`` time plus the timeout: the
``now`` that pagerd's decision used to arm the timer. After the run the database is
read (read-only) and, per incident:

- timer: ``incident.escalated`` time minus the deadline, when the ack-timeout was
  decided (before its commit);
- page sent: level 2's ``notification.sent`` time minus the deadline, when the SMS
  provider answered for B (after the escalation's commit);

all times written by pagerd's own wall clock. From the SMS stand-in's monotonic
arrival times: B's page minus A's page minus the timeout, which needs no deadline
at all, and A's page minus the alert's scheduled publish (intake lag: pagerd
keeping up or not).

Run from the repository root: ``.venv/bin/python -m tests.bench.bench_timers``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sqlite3
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.bench.common import (
    BenchPagerd,
    CpuMeter,
    Publisher,
    PublishPlan,
    SmsProcess,
    broker_in,
    create_schema,
    insert_services,
    pagerd_in,
    percentile,
    pid_of,
    report,
    wait_until,
)
from tests.harness import Policy, sms

PHONE_A = "+15550001111"
PHONE_B = "+15550002222"
POLICY_ID = "bench-escalate"
LEVEL_2_TIMEOUT_S = 900.0  # past any run: level 2 is the last page of every incident
WARMUP_RATE = 100
WARMUP_S = 1.0
DRAIN_TIMEOUT_S = 300.0
SCHEDULED = re.compile(r"t=(\d+\.\d+)")


@dataclass(frozen=True, slots=True)
class Stats:
    """Lateness of one measure over the incidents that have it, in ms."""

    measure: str
    count: int
    min_ms: float
    p50_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def of(cls, measure: str, seconds: Sequence[float]) -> Stats:
        ordered = sorted(seconds)
        if not ordered:
            nan = float("nan")
            return cls(measure, 0, nan, nan, nan, nan)
        return cls(
            measure,
            len(ordered),
            ordered[0] * 1000,
            percentile(ordered, 50) * 1000,
            percentile(ordered, 99) * 1000,
            ordered[-1] * 1000,
        )

    def row(self) -> tuple[str, ...]:
        return (
            self.measure,
            f"{self.count:,}",
            f"{self.min_ms:,.1f}",
            f"{self.p50_ms:,.1f}",
            f"{self.p99_ms:,.1f}",
            f"{self.max_ms:,.1f}",
        )


@dataclass(frozen=True, slots=True)
class FromDb:
    """What the database says of the measured incidents."""

    incidents: int
    escalated: int  # incidents with an incident.escalated
    repeated: int  # incidents.escalated events beyond one per incident
    sent_level_2: int
    timer: list[float]  # escalated - deadline, seconds
    page_sent: list[float]  # level 2 notification.sent - deadline, seconds
    opening_s: float  # first to last incident opened


@dataclass(frozen=True, slots=True)
class FromSms:
    """What the SMS stand-in received for the measured incidents."""

    pages_a: int
    pages_b: int
    resent: int
    b_after_a: list[float]  # B's arrival - A's arrival - timeout, seconds
    intake: list[float]  # A's arrival - the alert's scheduled publish, seconds


def services_for(name: str, n: int) -> tuple[str, ...]:
    return tuple(f"{name}-{i:06d}" for i in range(n))


def policy(timeout_s: float) -> Policy:
    return Policy(POLICY_ID, [(timeout_s, [sms(PHONE_A)]), (LEVEL_2_TIMEOUT_S, [sms(PHONE_B)])])


def read_only(db: Path) -> contextlib.closing[sqlite3.Connection]:
    return contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True))


def sent_level_2(db: Path, prefix: str) -> int:
    """Level-2 pages of ``prefix``'s services that pagerd has committed as sent."""
    with read_only(db) as conn:
        rows = conn.execute(
            "SELECT detail FROM timeline WHERE type = 'notification.sent' AND service_id LIKE ?",
            (f"{prefix}-%",),
        )
        return sum(json.loads(detail)["level"] == 2 for (detail,) in rows)


def from_db(db: Path, prefix: str, timeout_s: float) -> FromDb:
    """Per incident: its deadline, its escalation and its level-2 page, from the timeline."""
    triggered: dict[str, datetime] = {}
    escalated: dict[str, list[datetime]] = {}
    sent: dict[str, datetime] = {}
    with read_only(db) as conn:
        rows = conn.execute(
            "SELECT incident_id, at, type, detail FROM timeline WHERE service_id LIKE ?"
            " AND type IN ('incident.triggered', 'incident.escalated', 'notification.sent')",
            (f"{prefix}-%",),
        ).fetchall()
    for incident_id, at_text, kind, detail in rows:
        at = datetime.fromisoformat(at_text)
        if kind == "incident.triggered":
            triggered[incident_id] = at
        elif kind == "incident.escalated":
            escalated.setdefault(incident_id, []).append(at)
        elif json.loads(detail)["level"] == 2:
            sent.setdefault(incident_id, at)  # the first, if a page was ever sent twice
    timer, page_sent = [], []
    for incident_id, opened in triggered.items():
        if times := escalated.get(incident_id):
            timer.append((times[0] - opened).total_seconds() - timeout_s)
        if incident_id in sent:
            page_sent.append((sent[incident_id] - opened).total_seconds() - timeout_s)
    opened_times = sorted(triggered.values())
    return FromDb(
        incidents=len(triggered),
        escalated=len(escalated),
        repeated=sum(len(times) - 1 for times in escalated.values()),
        sent_level_2=len(sent),
        timer=timer,
        page_sent=page_sent,
        opening_s=(opened_times[-1] - opened_times[0]).total_seconds() if opened_times else 0.0,
    )


def from_sms(arrivals: list[tuple[float, str, str]], timeout_s: float) -> FromSms:
    """Pair each incident's first level-1 and level-2 arrival by Idempotency-Key."""
    # The key is the notification id, "<incident id>-<step>-<position>": step 0 pages A.
    first: dict[tuple[str, str], tuple[float, str]] = {}
    for arrived, message, key in arrivals:
        incident_id, step, _ = key.rsplit("-", 2)
        first.setdefault((incident_id, step), (arrived, message))
    b_after_a, intake = [], []
    for (incident_id, step), (arrived, message) in first.items():
        if step != "0":
            continue
        if found := SCHEDULED.search(message):
            intake.append(arrived - float(found.group(1)))
        if (b := first.get((incident_id, "1"))) is not None:
            b_after_a.append(b[0] - arrived - timeout_s)
    return FromSms(
        pages_a=sum(step == "0" for _, step in first),
        pages_b=sum(step == "1" for _, step in first),
        resent=len(arrivals) - len(first),
        b_after_a=b_after_a,
        intake=intake,
    )


async def offer(
    sms: SmsProcess, daemon: BenchPagerd, port: int, name: str, *, rate: float, seconds: float
) -> tuple[list[tuple[float, str, str]], float]:
    """Publish one new-incident alert per service; wait for both pages of each, all committed.

    Returns the stand-in's arrivals for these incidents and the publisher's worst lag.
    """
    services = services_for(name, round(rate * seconds))
    already = sms.pages
    with Publisher(PublishPlan(port, services, rate=rate)) as publisher:
        publisher.go()
        published = await publisher.result(seconds + DRAIN_TIMEOUT_S)
    # An incident missing its escalation fails the wait: that is the finding.
    await wait_until(
        lambda: sms.pages - already >= 2 * len(services), timeout=DRAIN_TIMEOUT_S, every=0.1
    )
    await wait_until(
        lambda: sent_level_2(daemon.db, name) >= len(services), timeout=30.0, every=0.2
    )
    return sms.arrivals()[already:], published.max_lag_s


async def run(rate: int, seconds: float, timeout_s: float, directory: Path | None) -> None:
    expected = round(rate * seconds)
    with tempfile.TemporaryDirectory(dir=directory) as tmp, SmsProcess() as sms:
        root = Path(tmp)
        async with (
            broker_in(root / "broker") as broker,
            pagerd_in(root / "pagerd", broker, sms.port, policy(timeout_s)) as daemon,
        ):
            await create_schema(daemon.db)
            insert_services(
                daemon.db, services_for("warm", round(WARMUP_RATE * WARMUP_S)), POLICY_ID
            )
            insert_services(daemon.db, services_for("run", expected), POLICY_ID)
            await daemon.start()
            try:
                # Warm-up, not reported: first connections, and a first round of timers.
                await offer(sms, daemon, broker.port, "warm", rate=WARMUP_RATE, seconds=WARMUP_S)
                pids = {"pagerd": daemon.pid, "mosquitto": pid_of(broker.process)}
                with CpuMeter(pids | {"bench": os.getpid()}) as cpu:
                    arrivals, lag_s = await offer(
                        sms, daemon, broker.port, "run", rate=rate, seconds=seconds
                    )
            finally:
                await daemon.stop()
            db = from_db(daemon.db, "run", timeout_s)
    paged = from_sms(arrivals, timeout_s)
    report(
        f"Escalation timer lateness: {expected:,} new incidents offered at {rate:,}/s,"
        f" level 1 ack timeout {timeout_s:g} s, nobody acknowledges",
        ["measure", "incidents", "min ms", "p50 ms", "p99 ms", "max ms"],
        [
            Stats.of("timer fired: incident.escalated - deadline", db.timer).row(),
            Stats.of("level-2 page sent: notification.sent - deadline", db.page_sent).row(),
            Stats.of("SMS stand-in: B arrival - A arrival - timeout", paged.b_after_a).row(),
            Stats.of("intake, not lateness: A arrival - scheduled publish", paged.intake).row(),
        ],
    )
    missing = expected - db.escalated
    print(
        f"\nescalations: expected {expected:,}, seen {db.escalated:,} ({missing:,} missing,"
        f" {db.repeated:,} repeated); incidents {db.incidents:,};"
        f" level-2 pages committed sent {db.sent_level_2:,};"
        f" SMS stand-in: A {paged.pages_a:,}, B {paged.pages_b:,}, {paged.resent:,} resent"
    )
    print(
        f"incidents opened over {db.opening_s:.2f} s"
        f" ({db.incidents / max(db.opening_s, 1e-9):,.0f}/s against {rate:,}/s offered);"
        f" publisher lag max {lag_s * 1000:.1f} ms; {cpu.summary()}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=int, default=1_000, help="new incidents offered per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="how long to publish")
    parser.add_argument("--timeout-s", type=float, default=2.0, help="level 1 ack timeout")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary files go")
    args = parser.parse_args()
    if args.rate <= 0 or args.seconds <= 0 or args.timeout_s <= 0:
        parser.error("--rate, --seconds and --timeout-s must be positive")
    asyncio.run(run(args.rate, args.seconds, args.timeout_s, args.dir))


if __name__ == "__main__":
    main()
