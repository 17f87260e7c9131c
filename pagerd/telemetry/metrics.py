"""Prometheus metrics, on one registry that ``/metrics`` serves."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

ALERTS_RECEIVED = Counter(
    "pagerd_alerts_received", "Events accepted at the edge.", ["source", "kind"], registry=REGISTRY
)
ALERTS_REJECTED = Counter(
    "pagerd_alerts_rejected",
    "Messages refused at the edge.",
    ["source", "reason"],
    registry=REGISTRY,
)
EVENTS_DECIDED = Counter(
    "pagerd_events_decided",
    "Events decided by the escalation core.",
    ["outcome"],
    registry=REGISTRY,
)
ACTOR_FAILURES = Counter(
    "pagerd_actor_failures", "Batches an actor failed to handle.", registry=REGISTRY
)
COMMIT_FAILURES = Counter(
    "pagerd_commit_failures", "Actor writes the store refused.", registry=REGISTRY
)
READ_FAILURES = Counter(
    "pagerd_read_failures",
    "Messages left unacknowledged because the store could not be read.",
    registry=REGISTRY,
)
COMMIT_BATCH_UNITS = Histogram(
    "pagerd_commit_batch_units",
    "Units of work per group commit.",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000),
    registry=REGISTRY,
)
COMMIT_SECONDS = Histogram(
    "pagerd_commit_seconds",
    "Duration of one group commit.",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
ACTORS_ALIVE = Gauge("pagerd_actors_alive", "Service actors in memory.", registry=REGISTRY)
INCIDENTS_OPEN = Gauge("pagerd_incidents_open", "Open incidents.", registry=REGISTRY)
NOTIFICATIONS = Counter(
    "pagerd_notifications",
    "Notification attempts by channel and outcome.",
    ["channel", "outcome"],
    registry=REGISTRY,
)
OUTBOX_DEPTH = Gauge("pagerd_outbox_depth", "Notifications waiting to be sent.", registry=REGISTRY)
INTAKE_TO_PAGE_SECONDS = Histogram(
    "pagerd_intake_to_page_seconds",
    "From an event's arrival to its page leaving pagerd.",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
    registry=REGISTRY,
)
MQTT_CONNECTED = Gauge(
    "pagerd_mqtt_connected", "1 while subscribed to the broker.", registry=REGISTRY
)
MQTT_CONNECTION_FAILURES = Counter(
    "pagerd_mqtt_connection_failures",
    "Broker connections that could not be made or were lost, by kind"
    " (connect, refused, subscribe, protocol, keepalive, lost).",
    ["kind"],
    registry=REGISTRY,
)
MQTT_INTAKE_PAUSES = Counter(
    "pagerd_mqtt_intake_pauses",
    "Times MQTT intake paused because the actors' mailboxes were full.",
    registry=REGISTRY,
)
HTTP_UNAUTHORIZED = Counter(
    "pagerd_http_unauthorized",
    "Requests refused for a missing or unknown token.",
    registry=REGISTRY,
)
HTTP_REFUSED = Counter(
    "pagerd_http_refused",
    "API requests refused (bad body, unknown object, conflict), by status.",
    ["status"],
    registry=REGISTRY,
)
HTTP_STORE_FAILURES = Counter(
    "pagerd_http_store_failures",
    "API requests the store failed: answered 503, or a list cut off after it began.",
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "pagerd_dead_letters",
    "Events kept as dead letters: failed inside pagerd, or refused for pagerd's own reason.",
    ["source"],
    registry=REGISTRY,
)
WEBHOOK_ADDRESSES_REFUSED = Counter(
    "pagerd_webhook_addresses_refused",
    "Webhook connections refused by the egress rule ([notify.webhook] allow_hosts).",
    registry=REGISTRY,
)
CONSOLE_SIGN_INS = Counter(
    "pagerd_console_sign_ins",
    "Console sign-in attempts, by outcome: signed_in, refused (wrong token), limited (429).",
    ["outcome"],
    registry=REGISTRY,
)
HTTP_CONNECTIONS = Gauge(
    "pagerd_http_connections", "HTTP connections open (admitted).", registry=REGISTRY
)
HTTP_MAX_CONNECTIONS = Gauge(
    "pagerd_http_max_connections",
    "HTTP connections admitted at most: [http] max_connections, lowered to fit the descriptors.",
    registry=REGISTRY,
)
HTTP_CONNECTIONS_REFUSED = Counter(
    "pagerd_http_connections_refused",
    "HTTP connections closed at once because max_connections were open.",
    registry=REGISTRY,
)
HTTP_TIMEOUTS = Counter(
    "pagerd_http_timeouts",
    "HTTP connections cut for not sending a whole request within [http] request_timeout_s,"
    " by what was still missing (request: nothing sent; headers; body).",
    ["waiting_for"],
    registry=REGISTRY,
)
HTTP_ACCEPT_ERRORS = Counter(
    "pagerd_http_accept_errors",
    "Connections the listening socket could not accept (out of descriptors, buffers, memory).",
    ["errno"],
    registry=REGISTRY,
)
HTTP_TLS_HANDSHAKE_FAILURES = Counter(
    "pagerd_http_tls_handshake_failures",
    "HTTPS connections closed because their TLS handshake failed or took too long.",
    registry=REGISTRY,
)
HTTP_PROTOCOL_ERRORS = Counter(
    "pagerd_http_protocol_errors",
    "Requests aiohttp could not parse or answer (malformed HTTP), answered 400 or 500.",
    registry=REGISTRY,
)
NOTIFICATION_LOCAL_ERRORS = Counter(
    "pagerd_notification_local_errors",
    "Sends that failed on pagerd's own host (out of descriptors, buffers, memory): retried"
    " soon, not counted as attempts.",
    ["channel"],
    registry=REGISTRY,
)
LIVE_CLIENTS = Gauge(
    "pagerd_live_clients", "Console streams of live updates open.", registry=REGISTRY
)
LIVE_CLIENTS_DROPPED = Counter(
    "pagerd_live_clients_dropped",
    "Live update streams ended because their client read too slowly.",
    registry=REGISTRY,
)

# --- more than one node (CONTRACT §7) --------------------------------------------------------

ROLE = Gauge(
    "pagerd_role",
    "1 for this node's role: active (holds the lease and acts) or standby.",
    ["role"],
    registry=REGISTRY,
)
LEASE_EVENTS = Counter(
    "pagerd_lease_events",
    "This node's lease: acquired, lost, released; renew_failed, look_failed (the database"
    " did not answer), take_over_failed.",
    ["event"],
    registry=REGISTRY,
)
FENCED_ROUNDS = Counter(
    "pagerd_fenced_commits",
    "Commit rounds refused because this node does not hold the lease.",
    registry=REGISTRY,
)

# --- sender processes (pagerd.notify.pool) ---------------------------------------------------

SENDER_RESTARTS = Counter(
    "pagerd_sender_restarts",
    "Sender processes that died (killed, crashed, link broken) and were started again.",
    registry=REGISTRY,
)
SENDER_START_FAILURES = Counter(
    "pagerd_sender_start_failures",
    "Sender processes that could not be started or were not ready in time (tried again).",
    registry=REGISTRY,
)
SENDER_RESENT = Counter(
    "pagerd_sender_resent",
    "Attempts in flight in a sender process that died, handed to another (same page, same"
    " Idempotency-Key).",
    registry=REGISTRY,
)
