"""The SQLite schema as forward migrations, numbered by ``PRAGMA user_version``.

``MIGRATIONS[n]`` takes a database at version ``n`` to version ``n + 1``, so a new
database runs them all and an up-to-date one none. Never edit a released script;
append one.
"""

from __future__ import annotations

# CHECKs spell out ORs: SQLite builds a small table for each evaluation of an IN list,
# on every insert.
MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the first schema.
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;

    CREATE TABLE policies (
        id      TEXT PRIMARY KEY,
        body    TEXT NOT NULL,   -- JSON: {"repeat", "levels": [{"ack_timeout_s", "targets"}]}
        managed INTEGER NOT NULL CHECK (managed IN (0, 1))
    );

    -- No foreign key to policies: "delete in use" is the API's 409 to give, and
    -- history must not block editing the configuration.
    CREATE TABLE services (
        id        TEXT PRIMARY KEY,
        name      TEXT NOT NULL,
        policy_id TEXT NOT NULL,
        managed   INTEGER NOT NULL CHECK (managed IN (0, 1))
    );

    CREATE TABLE teams (
        id      INTEGER PRIMARY KEY,
        name    TEXT NOT NULL UNIQUE,
        managed INTEGER NOT NULL CHECK (managed IN (0, 1)),
        cursor  INTEGER NOT NULL DEFAULT 0
    );

    CREATE TABLE developers (
        id           INTEGER PRIMARY KEY,
        team_id      INTEGER NOT NULL REFERENCES teams (id),
        name         TEXT NOT NULL,
        phone_number TEXT NOT NULL
    );
    CREATE INDEX developers_team ON developers (team_id);

    CREATE TABLE incidents (
        id              TEXT PRIMARY KEY,
        service_id      TEXT NOT NULL,
        message         TEXT NOT NULL,
        opened_at       TEXT NOT NULL,
        status          TEXT NOT NULL
                        CHECK (status = 'triggered' OR status = 'acknowledged'
                               OR status = 'resolved'),
        level_index     INTEGER NOT NULL,
        round           INTEGER NOT NULL,
        step            INTEGER NOT NULL,
        ack_deadline    TEXT,
        acknowledged_at TEXT,
        acknowledged_by TEXT,
        resolved_at     TEXT,
        alert_count     INTEGER NOT NULL
    );
    -- Start-up reads the open incidents only; they are few, history is not.
    CREATE INDEX incidents_open ON incidents (service_id) WHERE status != 'resolved';
    CREATE INDEX incidents_service_opened ON incidents (service_id, opened_at);
    CREATE INDEX incidents_opened ON incidents (opened_at);

    -- alert_id NULLs are distinct in a UNIQUE index, so anonymous alerts never collide.
    CREATE TABLE alerts (
        seq         INTEGER PRIMARY KEY,
        incident_id TEXT NOT NULL,
        service_id  TEXT NOT NULL,
        alert_id    TEXT,
        message     TEXT NOT NULL,
        source      TEXT,
        at          TEXT NOT NULL,
        UNIQUE (incident_id, alert_id)
    );
    CREATE INDEX alerts_service ON alerts (service_id);

    CREATE TABLE timeline (
        seq         INTEGER PRIMARY KEY,
        incident_id TEXT NOT NULL,
        service_id  TEXT NOT NULL,
        at          TEXT NOT NULL,
        type        TEXT NOT NULL,
        detail      TEXT NOT NULL   -- JSON object
    );
    CREATE INDEX timeline_incident ON timeline (incident_id);

    CREATE TABLE outbox (
        id              TEXT PRIMARY KEY,
        incident_id     TEXT NOT NULL,
        service_id      TEXT NOT NULL,
        channel         TEXT NOT NULL
                        CHECK (channel = 'sms' OR channel = 'email' OR channel = 'webhook'),
        recipient       TEXT NOT NULL,
        developer_id    INTEGER,
        level           INTEGER NOT NULL,
        step            INTEGER NOT NULL,
        message         TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        status          TEXT NOT NULL
                        CHECK (status = 'pending' OR status = 'sent' OR status = 'failed'),
        attempts        INTEGER NOT NULL,
        next_attempt_at TEXT,
        last_error      TEXT
    );
    CREATE INDEX outbox_status ON outbox (status, created_at);
    CREATE INDEX outbox_incident ON outbox (incident_id);
    """,
    # 1 -> 2: which services use a policy, without reading them all (deleting a policy
    # asks; services are read by id, and there may be millions).
    """
    CREATE INDEX services_policy ON services (policy_id);
    """,
    # 2 -> 3: a notification may be held for a bundle, cancelled once its incident is
    # acknowledged or resolved, or skipped (nobody on call). SQLite cannot change a
    # CHECK in place: the table is made anew and its rows copied.
    """
    CREATE TABLE outbox_v3 (
        id              TEXT PRIMARY KEY,
        incident_id     TEXT NOT NULL,
        service_id      TEXT NOT NULL,
        channel         TEXT NOT NULL
                        CHECK (channel = 'sms' OR channel = 'email' OR channel = 'webhook'),
        recipient       TEXT NOT NULL,
        developer_id    INTEGER,
        level           INTEGER NOT NULL,
        step            INTEGER NOT NULL,
        message         TEXT NOT NULL,
        created_at      TEXT NOT NULL,
        status          TEXT NOT NULL
                        CHECK (status = 'pending' OR status = 'held' OR status = 'sent'
                               OR status = 'failed' OR status = 'cancelled'
                               OR status = 'skipped'),
        attempts        INTEGER NOT NULL,
        next_attempt_at TEXT,
        last_error      TEXT
    );
    INSERT INTO outbox_v3 SELECT id, incident_id, service_id, channel, recipient,
        developer_id, level, step, message, created_at, status, attempts, next_attempt_at,
        last_error FROM outbox;
    DROP TABLE outbox;
    ALTER TABLE outbox_v3 RENAME TO outbox;
    CREATE INDEX outbox_status ON outbox (status, created_at);
    CREATE INDEX outbox_incident ON outbox (incident_id);
    """,
    # 3 -> 4: events pagerd could not take, kept for an operator (CONTRACT §9).
    """
    CREATE TABLE dead_letters (
        seq     INTEGER PRIMARY KEY,
        at      TEXT NOT NULL,
        source  TEXT NOT NULL,
        topic   TEXT NOT NULL,
        payload TEXT NOT NULL,
        reason  TEXT NOT NULL
    );
    """,
    # 4 -> 5: schedules with their rotations (layers, in order) and overrides (CONTRACT
    # §8); a service's heartbeat interval and maintenance window; the alert id that
    # opened an incident (a beat resolves only what a missed heartbeat opened); and
    # alerts on no incident, suppressed by a maintenance window. SQLite cannot drop a
    # NOT NULL in place: the alerts table is made anew and its rows copied.
    """
    CREATE TABLE schedules (
        id              TEXT PRIMARY KEY,
        team_id         INTEGER NOT NULL REFERENCES teams (id),
        time_zone       TEXT NOT NULL,
        notify_handover INTEGER NOT NULL CHECK (notify_handover IN (0, 1)),
        managed         INTEGER NOT NULL CHECK (managed IN (0, 1))
    );

    CREATE TABLE schedule_rotations (
        schedule_id   TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
        position      INTEGER NOT NULL,   -- the layer's place: a later one wins
        start         TEXT NOT NULL,      -- local wall-clock time, without offset
        shift_s       INTEGER NOT NULL,
        developer_ids TEXT NOT NULL,      -- JSON array, in turn order
        PRIMARY KEY (schedule_id, position)
    ) WITHOUT ROWID;

    -- AUTOINCREMENT: an id is never handed out twice, so ids grow with creation (the
    -- most recently created override wins) and a retried DELETE never hits a newer one.
    CREATE TABLE schedule_overrides (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        schedule_id  TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
        developer_id INTEGER NOT NULL,
        start        TEXT NOT NULL,
        "end"        TEXT NOT NULL
    );
    CREATE INDEX schedule_overrides_schedule ON schedule_overrides (schedule_id);

    ALTER TABLE services ADD COLUMN heartbeat_s REAL;
    ALTER TABLE services ADD COLUMN maintenance_until TEXT;
    ALTER TABLE services ADD COLUMN maintenance_reason TEXT;
    -- Start-up reads the services it must watch only; they are few, services are not.
    CREATE INDEX services_watched ON services (id)
        WHERE heartbeat_s IS NOT NULL OR maintenance_until IS NOT NULL;

    ALTER TABLE incidents ADD COLUMN opened_by TEXT;

    CREATE TABLE alerts_v5 (
        seq         INTEGER PRIMARY KEY,
        incident_id TEXT,                 -- NULL: suppressed by a maintenance window
        service_id  TEXT NOT NULL,
        alert_id    TEXT,
        message     TEXT NOT NULL,
        source      TEXT,
        at          TEXT NOT NULL,
        UNIQUE (incident_id, alert_id)
    );
    INSERT INTO alerts_v5 SELECT seq, incident_id, service_id, alert_id, message, source, at
        FROM alerts;
    DROP TABLE alerts;
    ALTER TABLE alerts_v5 RENAME TO alerts;
    -- A service's alerts newest first: the index holds (service_id, seq).
    CREATE INDEX alerts_service ON alerts (service_id);
    """,
    # 5 -> 6: each service's integration key, the secret a monitor may send in place of
    # an API token (CONTRACT §4). Services made before get one here: SQLite's randomblob
    # draws on a ChaCha20 generator seeded from the operating system.
    """
    ALTER TABLE services ADD COLUMN integration_key TEXT;
    UPDATE services SET integration_key = lower(hex(randomblob(16)));
    CREATE UNIQUE INDEX services_integration_key ON services (integration_key);
    """,
    # 6 -> 7: pages for the console. An incident's alerts newest first (the unique index
    # on (incident_id, alert_id) is not in arrival order); open incidents newest first,
    # however long the history behind them.
    """
    CREATE INDEX alerts_incident ON alerts (incident_id);
    CREATE INDEX incidents_open_opened ON incidents (opened_at) WHERE status != 'resolved';
    """,
)

SCHEMA_VERSION = len(MIGRATIONS)
