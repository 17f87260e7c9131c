"""``pagerd migrate --from PATH --to URL``, run as a process: a SQLite database with every
kind of row, copied into a real, empty PostgreSQL database, reads the same from both."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from pagerd.core.domain import (
    Incident,
    IncidentStatus,
    Maintenance,
    RecordAlert,
    RecordTimeline,
    ServiceState,
)
from pagerd.core.policy import Level, Policy, SmsTarget, TeamTarget
from pagerd.core.records import (
    DeadLetter,
    DeveloperRow,
    OutboxRow,
    OutboxUpdate,
    OverrideRow,
    PolicyRow,
    ScheduleRow,
    ServiceRow,
    TeamRow,
    WriteBatch,
)
from pagerd.core.schedules import Override, Rotation, Schedule
from pagerd.store.postgres import PostgresStore
from pagerd.store.sqlite import Store as SqliteStore
from pagerd.web.acklinks import AckLinks, load_or_create_secret

T0 = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
POLICY = Policy("p", (Level((SmsTarget("+15550000001"), TeamTarget("claims")), 60.0),), repeat=1)


def migrate(source: Path, url: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "pagerd", "migrate", "--from", str(source), "--to", url]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)


def page(notification_id: str, incident_id: str, service_id: str, **changes: object) -> OutboxRow:
    row = OutboxRow(
        notification_id, incident_id, service_id, "sms", "+15550000001", 1, 0, "down", T0
    )
    return dataclasses.replace(row, **changes)  # type: ignore[arg-type]


@dataclass
class Source:
    path: Path
    secret: bytes


@pytest.fixture
async def source(tmp_path: Path) -> Source:
    """A single node's database: config objects, a team's rotation half-way, incidents open,
    acknowledged and resolved, deduplicated alerts, a timeline, pages in every state."""
    path = tmp_path / "pagerd.db"
    store = await SqliteStore.open(path)
    secret = await load_or_create_secret(store)
    later = T0 + timedelta(minutes=5)
    await store.write(
        WriteBatch(
            policies=(PolicyRow(POLICY, managed=True),),
            teams=(TeamRow(7, "claims", managed=False, cursor=2),),
            developers=(
                DeveloperRow(11, 7, "ana", "+15550000011"),
                DeveloperRow(12, 7, "bo", "+15550000012"),
                DeveloperRow(13, 7, "cy", "+15550000013"),
            ),
            services=tuple(
                ServiceRow(f"s{n}", f"S {n}", "p", managed=n == 0, heartbeat_s=30.0 if n else None)
                for n in range(4)
            ),
            schedules=(
                ScheduleRow(
                    "week",
                    Schedule(
                        7,
                        "Europe/Paris",
                        (
                            Rotation(datetime(2026, 3, 2, 9), 604800, (11, 12, 13)),
                            Rotation(datetime(2026, 6, 1, 9, 30), 86400, (13,)),
                        ),
                    ),
                    notify_handover=True,
                    managed=False,
                ),
            ),
            overrides=(
                OverrideRow("week", Override(4, 12, T0, later)),
                OverrideRow("week", Override(9, 11, T0, later)),
            ),
            maintenance=(("s2", Maintenance(later, "deploy")),),
            incidents=(
                ("s0", Incident("iold", "gone", T0, IncidentStatus.RESOLVED, resolved_at=later)),
                (
                    "s0",
                    Incident(
                        "iopen",
                        "down",
                        later,
                        ack_deadline=later + timedelta(60),
                        opened_by="a-1",
                    ),
                ),
                (
                    "s1",
                    Incident(
                        "iacked",
                        "slow",
                        T0,
                        IncidentStatus.ACKNOWLEDGED,
                        acknowledged_at=later,
                        acknowledged_by="ana",
                        alert_count=3,
                    ),
                ),
            ),
            alerts=(
                ("s0", RecordAlert("iopen", "down", "a-1", "prometheus", later)),
                ("s0", RecordAlert("iopen", "down", None, None, later)),
                ("s1", RecordAlert("iacked", "slow", "b-1", None, T0)),
                ("s2", RecordAlert(None, "deploying", "c-1", None, later)),
            ),
            timeline=(
                ("s0", RecordTimeline("iopen", "incident.triggered", later, {"level": 1})),
                ("s0", RecordTimeline("iopen", "notification.sent", later, {"to": "x"})),
            ),
            outbox=(
                page("iopen-0-0", "iopen", "s0"),
                page("iopen-0-1", "iopen", "s0", status="held", next_attempt_at=later),
                page("iacked-0-0", "iacked", "s1", developer_id=12),
            ),
            dead_letters=(DeadLetter(T0, "mqtt", "pagerd/alert/s9", "x", "internal error"),),
        )
    )
    await store.write(
        WriteBatch(
            outbox_updates=(OutboxUpdate("iacked-0-0", "sent", 2, None, "HTTP 503"),),
            overrides_deleted=(("week", 9),),  # the highest id handed out, deleted
        )
    )
    await store.close()
    return Source(path, secret)


async def everything(store: SqliteStore | PostgresStore) -> dict[str, object]:
    """Every read the daemon and the API make, over all the data."""
    reader = await store.service_reader()
    try:
        services = [reader.get(f"s{n}") for n in range(5)]
        using = reader.ids_using("p", 10)
    finally:
        reader.close()
    states: list[ServiceState] = []
    await store.read_open_states(states.extend)
    listed = await store.list_incidents(limit=100)
    incidents = [(row.service_id, row.incident) for row in listed]
    return {
        "policies": await store.load_policies(),
        "teams": await store.load_teams(),
        "developers": await store.load_developers(),
        "services": services,
        "using": using,
        "open": states,
        "incidents": incidents,
        "each": [await store.get_incident(i.id) for _, i in incidents],
        "timelines": [await store.timeline(i.id) for _, i in incidents],
        "notifications": [await store.notifications(i.id) for _, i in incidents],
        "incident alerts": [await store.incident_alerts(i.id, limit=100) for _, i in incidents],
        "keys": [(row.incident.opened_at, row.seq) for row in listed],
        "pending": await store.pending_outbox(100),
        "dead letters": await store.dead_letters(100),
        "count": await store.count_services(),
        "schedules": await store.load_schedules(),
        "overrides": await store.load_overrides(),
        "last override id": await store.last_override_id(),
        "watches": sorted(await store.read_watches(), key=lambda w: w.service_id),
        "service alerts": [await store.service_alerts(f"s{n}", limit=10) for n in range(3)],
    }


async def test_migrate_copies_everything_and_links_keep_working(
    source: Source, postgres_url: str
) -> None:
    done = migrate(source.path, postgres_url)
    assert done.returncode == 0, done.stderr
    assert "3 incidents" in done.stdout
    assert "4 services" in done.stdout

    sqlite = await SqliteStore.open(source.path)
    postgres = await PostgresStore.open(postgres_url)
    try:
        before = await everything(sqlite)
        assert await everything(postgres) == before
        assert before["teams"] == [TeamRow(7, "claims", managed=False, cursor=2)]
        assert before["last override id"] == 9
        assert len(before["watches"]) == 3  # type: ignore[arg-type]

        # A link sent before the move verifies after it: the secret came along.
        secret = await load_or_create_secret(postgres)
        assert secret == source.secret
        sent = AckLinks(source.secret, "http://pager").link("iopen-0-0", "iopen", T0)
        claim = AckLinks(secret, "http://pager").verify(sent.rsplit("/", 1)[1], T0)
        assert claim.incident_id == "iopen"

        # Rows written after the copy come after the copied ones.
        await postgres.write(
            WriteBatch(timeline=(("s0", RecordTimeline("iopen", "incident.note", T0, {})),))
        )
        assert [kind for _, kind, _ in await postgres.timeline("iopen")] == [
            "incident.triggered",
            "notification.sent",
            "incident.note",
        ]
    finally:
        await sqlite.close()
        await postgres.close()


async def test_migrate_refuses_a_database_that_is_not_empty(
    source: Source, postgres_url: str
) -> None:
    assert migrate(source.path, postgres_url).returncode == 0
    again = migrate(source.path, postgres_url)
    assert again.returncode == 2
    assert "not empty" in again.stderr
    assert "4 services rows" in again.stderr
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM services") == 4  # nothing doubled
    finally:
        await conn.close()


def test_migrate_refuses_a_missing_source_and_a_url_that_is_not_postgresql(
    tmp_path: Path,
) -> None:
    missing = migrate(tmp_path / "nope.db", "postgresql://pagerd@127.0.0.1:1/x")
    assert missing.returncode == 2
    assert "no SQLite database there" in missing.stderr
    wrong = migrate(tmp_path / "nope.db", "mysql://db/x")
    assert wrong.returncode == 2
    assert "postgresql:// URL" in wrong.stderr
