"""Wiring: config → adapters → runtime, one TaskGroup, and a staged, bounded shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import msgspec
import structlog
from aiohttp import web

from pagerd.config import DEFAULT_SMS_URL, Config
from pagerd.core.domain import IncidentStatus, ServiceState
from pagerd.core.egress import EgressRule
from pagerd.core.ports import Page, Store
from pagerd.core.records import (
    OutboxRow,
    ServiceRow,
    StoreError,
)
from pagerd.intake.api import add_api_routes
from pagerd.intake.dead_letters import DeadLetters
from pagerd.intake.integrations import add_integration_routes
from pagerd.intake.mqtt import MqttLink, MqttPublisher, MqttSettings
from pagerd.notify import texts as messages
from pagerd.notify.egress import WebhookEgress
from pagerd.notify.outbox import DeliveryPolicy, Dispatcher
from pagerd.notify.pool import SenderPool
from pagerd.runtime.catalogue import (
    Catalogue,
    Declared,
    DeclaredRotation,
    DeclaredSchedule,
    DeclaredTeam,
    apply_declared,
)
from pagerd.runtime.clock import SteadyClock, SystemClock, TimerWheel
from pagerd.runtime.directory import Directory
from pagerd.runtime.handovers import Handovers
from pagerd.runtime.publishers import Publishers
from pagerd.runtime.router import Runtime
from pagerd.sending import channel_senders, sender_processes, senders_ready
from pagerd.store import open_store
from pagerd.systemd import SystemdNotifier
from pagerd.telemetry import metrics
from pagerd.web.acklinks import AckLinks, load_or_create_secret
from pagerd.web.console import add_console_routes
from pagerd.web.limits import HttpLimits, descriptor_reserve, raise_descriptor_limit
from pagerd.web.live import LiveFeed, serve_live
from pagerd.web.role import NodeRole
from pagerd.web.server import HttpServer, WebContext, build_app, start_http

log = structlog.get_logger("pagerd.app")

# Shutdown stages (with the HTTP server's 5 s, and the sender processes' 4 s: see
# pagerd.sending) sum to 22 s, under TimeoutStopSec=30.
DRAIN_TIMEOUT_S = 10.0
SENDERS_GRACE_S = 3.0
# Recovery arms the timers due this soon; the others once subscribed (READY), or after
# ARM_LATER_S if the broker is not there: well before any of them is due.
ARM_AT_ONCE = timedelta(seconds=60)
ARM_LATER_S = 5.0
# The interpreter scans its youngest objects every 700 allocations, and a message in
# flight makes dozens (envelope, futures, rows, closures): scanning less often spares the
# event loop. It is as safe: pagerd makes few reference cycles, and memory is plentiful.
GC_THRESHOLDS = (20_000, 20, 100)


def declared(config: Config) -> Declared:
    """The teams, policies and services the config file declares."""
    return Declared(
        teams=tuple(
            DeclaredTeam(t.name, tuple((d.name, d.phone_number) for d in t.developers))
            for t in config.teams
        ),
        policies=tuple(config.domain_policies().values()),
        services=tuple(
            ServiceRow(s.id, s.name or s.id, s.policy, managed=True, heartbeat_s=s.heartbeat_s)
            for s in config.services
        ),
        schedules=tuple(
            DeclaredSchedule(
                s.id,
                s.team,
                s.time_zone,
                tuple(DeclaredRotation(r.start, r.shift_s, r.developers) for r in s.rotations),
                s.notify_handover,
            )
            for s in config.schedules
        ),
        ack_timeout_s=config.escalation.ack_timeout_s,
    )


def make_composers(
    catalogue: Catalogue, public_url: str, links: AckLinks
) -> tuple[Callable[[OutboxRow], Page], Callable[[list[OutboxRow]], Page]]:
    """How a single page and a bundle of pages read, per channel."""
    name_of = catalogue.service_name

    def compose(row: OutboxRow) -> Page:
        if row.is_notice:  # a hand-over's SMS: its message is its whole text
            text = messages.clip(row.message, messages.SMS_LIMIT)
            return Page(row, "pagerd", text, subject=f"[pagerd] {row.message}", ack_url="")
        name = name_of(row.service_id)
        # Expiry counts from the row's creation, so every retry sends the same text.
        ack_url = links.link(row.id, row.incident_id, row.created_at)
        text = messages.page_text(
            service=name,
            message=row.message,
            incident_id=row.incident_id,
            level=row.level,
            ack_url=ack_url,
            limit=messages.SMS_LIMIT if row.channel == "sms" else None,
        )
        return Page(row, name, text, subject=f"[pagerd] {name}: {row.message}", ack_url=ack_url)

    def compose_bundle(rows: list[OutboxRow]) -> Page:
        head = rows[0]
        text = messages.bundle_text(
            [(name_of(r.service_id), r.message) for r in rows],
            console_url=f"{public_url}/",
            limit=messages.SMS_LIMIT if head.channel == "sms" else None,
        )
        subject = f"[pagerd] {len(rows)} more incidents"
        return Page(head, name_of(head.service_id), text, subject=subject, ack_url="")

    return compose, compose_bundle


def delivery_policy(config: Config) -> DeliveryPolicy:
    """``[notify]`` as the dispatcher needs it."""
    notify = config.notify
    return DeliveryPolicy(
        max_attempts=notify.max_attempts,
        max_age_s=notify.max_age_s,
        concurrency=notify.concurrency,
        bundle_window_s=notify.bundle_window_s,
        bundle_after=notify.bundle_after,
    )


def http_limits(config: Config, session: aiohttp.ClientSession) -> HttpLimits:
    """``[http]`` limits, keeping descriptors for every send that may be out at once."""
    concurrency = config.notify.concurrency  # SMTP connections: one per email worker
    # SMS and webhook connections, idle ones kept for reuse included: two sessions (the
    # one given, and the webhooks' checked one, made alike), each up to its pool's limit.
    pooled = session.connector.limit if session.connector is not None else 0
    outgoing = 2 * (pooled or concurrency) + concurrency
    return HttpLimits(
        request_timeout_s=config.http.request_timeout_s,
        max_connections=config.http.max_connections,
        reserved_descriptors=descriptor_reserve(outgoing),
    )


def mqtt_settings(config: Config) -> MqttSettings:
    m = config.mqtt
    return MqttSettings(
        host=m.host,
        port=m.port,
        client_id=m.client_id,
        topic_prefix=m.topic_prefix,
        username=m.username or None,
        password=config.mqtt_password(),
        tls=m.tls,
        tls_ca_file=m.ca_file or None,
        hosts=m.addresses() if m.hosts else (),
        max_message_bytes=m.max_message_bytes,
    )


async def serve(
    config: Config,
    *,
    stop: asyncio.Event,
    notifier: SystemdNotifier | None = None,
    clock: SteadyClock | None = None,
) -> int:
    """Run pagerd until ``stop`` is set; return the process exit code."""
    clock = clock or SystemClock()
    notifier = notifier or SystemdNotifier.from_env()
    if config.notify.sms.url == DEFAULT_SMS_URL:
        log.warning(
            "notify.sms_default_url",
            url=DEFAULT_SMS_URL,
            reason="SMS pages, with their phone numbers and alert text, go to this public mock "
            "service; set [notify.sms] url to your SMS provider",
        )
    if config.database.url:
        # PostgreSQL: a node among any number, acting only while it holds the lease.
        from pagerd.cluster import serve_node

        return await serve_node(config, stop=stop, notifier=notifier, clock=clock)
    started = time.monotonic()
    # The sender processes start first: they import aiohttp while the store loads.
    async with sender_processes(config) as pool:
        store = await open_store(path=config.database.path, url=config.database.url)
        store.on_commit(observe_commit)
        try:
            await apply_declared(store, declared(config))
            directory = await Directory.load(store)
            try:
                async with client_sessions(config) as (session, webhooks):
                    await run_active(
                        config,
                        store=store,
                        directory=directory,
                        session=session,
                        webhooks=webhooks,
                        pool=pool,
                        clock=clock,
                        notifier=notifier,
                        until=stop,
                        started=started,
                    )
            finally:
                directory.close()
        finally:
            await store.close()  # the last group commit
    log.info("pagerd.stopped")
    return 0


@contextlib.asynccontextmanager
async def client_sessions(
    config: Config,
) -> AsyncIterator[tuple[aiohttp.ClientSession, WebhookEgress]]:
    """The senders' HTTP sessions: msgspec writes the providers' JSON bodies, no provider's
    cookie is kept, and webhooks go out under the egress rule."""
    options: dict[str, Any] = {
        "json_serialize": _json_text,
        "cookie_jar": aiohttp.DummyCookieJar(),
    }
    rule = EgressRule.from_allow_hosts(config.notify.webhook.allow_hosts)
    async with (
        aiohttp.ClientSession(**options) as session,
        WebhookEgress(rule, session, **options) as webhooks,
    ):
        yield session, webhooks


@dataclass(frozen=True, slots=True)
class ClusterTerm:
    """What the active node of a cluster gives its runtime: the hold on the lease, and the
    node's own web context, which outlives the term (``pagerd.cluster``)."""

    may_act: Callable[[], bool]  # the lease is held: checked before each send and connect
    context: WebContext
    role: NodeRole
    subscribed: Callable[[], None]  # MQTT intake is on: the node is active and ready
    live: LiveFeed | None = None  # the node's live updates (GET /api/v1/events)


async def run_active(
    config: Config,
    *,
    store: Store,
    directory: Directory,
    session: aiohttp.ClientSession,
    webhooks: WebhookEgress,
    clock: SteadyClock,
    notifier: SystemdNotifier,
    until: asyncio.Event,
    started: float,
    pool: SenderPool | None = None,
    term: ClusterTerm | None = None,
) -> None:
    """Run the runtime, the outbox and MQTT intake until ``until`` is set.

    Pages go out through ``pool``'s sender processes, or from this loop when None.
    Alone (``term`` None) this serves HTTP too, and shuts down in stages. A cluster
    node's term ends either so (the node stops), or abandoned at once when its lease
    lapsed: then another node may act already, so nothing more is drained or sent.
    """
    settings = mqtt_settings(config)
    mqtt_publisher = MqttPublisher(settings.topic_prefix)
    # A cluster node's feed is its web app's, which outlives the term.
    live = term.live if term is not None and term.live is not None else LiveFeed()
    publisher = Publishers((mqtt_publisher, live))
    may_act = term.may_act if term is not None else _always
    senders = channel_senders(config, session, webhooks, pool)
    async with asyncio.TaskGroup() as group:
        links = AckLinks(await load_or_create_secret(store), config.http.public_url)
        catalogue = Catalogue(
            store,
            directory,
            default_ack_timeout_s=config.escalation.ack_timeout_s,
            fallback_policy=config.routing.fallback_policy,
        )
        compose, compose_bundle = make_composers(catalogue, config.http.public_url, links)

        dispatcher = Dispatcher(
            store=store,
            senders=senders,
            compose=compose,
            compose_bundle=compose_bundle,
            clock=clock,
            publisher=publisher,
            policy=delivery_policy(config),
            may_send=may_act,
        )
        timers = TimerWheel(clock)
        runtime = Runtime(
            store=store,
            directory=directory,
            clock=timers,
            outbox=dispatcher,
            publisher=publisher,
            spawner=group,
            fallback_policy=config.routing.fallback_policy,
        )
        handovers = Handovers(
            directory=directory,
            clock=timers,
            publisher=publisher,
            store=store,
            outbox=dispatcher,
            spawner=group,
        )
        catalogue.schedules.changed = handovers.changed
        dead_letters = DeadLetters(store, clock)
        link = MqttLink(settings, runtime, mqtt_publisher, dead_letters, may_connect=may_act)
        recovered, watched = await _recover(store, runtime, clock.now() + ARM_AT_ONCE)
        handovers.start()

        def not_ready() -> list[str]:
            mqtt = [] if link.subscribed.is_set() else ["mqtt: not subscribed"]
            return mqtt + (pool.not_ready() if pool is not None else [])

        # Only after recovery: an ack arriving earlier would meet an actor with no incident.
        http: HttpServer | None = None
        if term is None:
            web_app = build_app(
                runtime=runtime,
                catalogue=catalogue,
                store=store,
                links=links,
                clock=clock,
                not_ready=not_ready,
                max_body_bytes=config.http.max_body_bytes,
                tokens=config.http_tokens(),
            )
            serve_live(web_app, live)
            http = await serve_http(web_app, config, webhooks.rule, session)
        else:
            term.context.serve(
                runtime=runtime, catalogue=catalogue, links=links, not_ready=not_ready
            )
            term.role.serve()
        _resume_outbox(dispatcher, runtime, await store.pending_outbox(limit=1_000_000))
        log.info("pagerd.recovered", open_incidents=recovered, watched_services=watched)

        tasks = _Tasks(
            dispatch=group.create_task(dispatcher.run(), name="pagerd[outbox]"),
            follow=group.create_task(runtime.run(), name="pagerd[failed-levels]"),
            dead_letters=group.create_task(dead_letters.run(), name="pagerd[dead-letters]"),
            intake=group.create_task(link.run(), name="pagerd[mqtt]"),
            arming=group.create_task(_arm_timers(runtime, link), name="pagerd[arm-timers]"),
            watchdog=group.create_task(
                _idle() if term else notifier.watchdog_loop(), name="pagerd[watchdog]"
            ),
            ready=group.create_task(
                _announce_subscribed(link, term.subscribed, recovered, pool)
                if term
                else _announce_ready(link, notifier, store, started, recovered, pool=pool),
                name="pagerd[ready]",
            ),
        )
        await until.wait()
        if not may_act():
            await _abandon(tasks, runtime, handovers, dispatcher)
        else:
            await _shut_down(
                tasks,
                runtime,
                handovers=handovers,
                dispatcher=dispatcher,
                notifier=notifier,
                http=http,
            )


@dataclass(frozen=True, slots=True)
class _Tasks:
    """The tasks of one run, stopped in stages."""

    dispatch: asyncio.Task[None]
    follow: asyncio.Task[None]
    dead_letters: asyncio.Task[None]
    intake: asyncio.Task[None]
    arming: asyncio.Task[None]
    watchdog: asyncio.Task[None]
    ready: asyncio.Task[None]


async def _shut_down(
    tasks: _Tasks,
    runtime: Runtime,
    *,
    handovers: Handovers,
    dispatcher: Dispatcher,
    notifier: SystemdNotifier,
    http: HttpServer | None,
) -> None:
    """Stop in stages: intake, then drain the mailboxes, then let sends in flight finish."""
    log.info("pagerd.stopping", pending=runtime.pending())
    notifier.stopping()
    # 1. stop intake: what is not yet acknowledged is redelivered by the broker.
    await _cancel(tasks.intake, tasks.ready, tasks.arming, tasks.dead_letters)
    if http is not None:
        await http.cleanup()
    # 2. drain mailboxes: every accepted message committed.
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            await runtime.drained()
    except TimeoutError:
        log.error(  # noqa: TRY400 - a deadline, not an error with a traceback
            "pagerd.drain_timeout", pending=runtime.pending()
        )
        runtime.cancel_all()
    runtime.stop_timers()
    handovers.stop()
    dispatcher.stop_retries()
    # 3. give sends in flight a moment; one cut off is resent on start with the same key.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(SENDERS_GRACE_S):
            await dispatcher.idle()
    await _cancel(tasks.dispatch, tasks.follow, tasks.watchdog)


async def _abandon(
    tasks: _Tasks, runtime: Runtime, handovers: Handovers, dispatcher: Dispatcher
) -> None:
    """The lease lapsed: another node may act already, and every send and commit of this
    one is refused by now. Stop at once: nothing is drained, nothing waited for."""
    log.info("pagerd.abandoning", pending=runtime.pending())
    await _cancel(tasks.intake, tasks.ready, tasks.arming, tasks.dead_letters)
    runtime.stop_timers()
    handovers.stop()
    runtime.cancel_all()
    dispatcher.stop_retries()
    await _cancel(tasks.dispatch, tasks.follow, tasks.watchdog)


def _always() -> bool:
    return True


async def _idle() -> None:
    """A task that waits to be cancelled (a cluster node pings the watchdog itself)."""
    await asyncio.Event().wait()


async def _recover(store: Store, runtime: Runtime, arm_before: datetime) -> tuple[int, int]:
    """Actors for the open incidents (their timers due before ``arm_before`` armed), then
    for the services with a heartbeat or a maintenance window; how many of each."""
    recovered = 0

    def recover(states: list[ServiceState]) -> None:
        nonlocal recovered
        recovered += runtime.recover(states, arm_before=arm_before)

    with _collection_paused():
        await store.read_open_states(recover)
        watched = runtime.watch(await store.read_watches())
    return recovered, watched


async def serve_http(
    app: web.Application,
    config: Config,
    egress: EgressRule,
    session: aiohttp.ClientSession,
) -> HttpServer:
    """The API, the console and the integrations beside the health routes, served."""
    add_api_routes(app, egress=egress)
    add_console_routes(app, config=config)
    add_integration_routes(app, config=config)
    host, port = config.http.host_port()
    limits = http_limits(config, session)
    return await start_http(app, host, port, limits=limits, tls=config.secrets.http_tls)


def _resume_outbox(dispatcher: Dispatcher, runtime: Runtime, rows: list[OutboxRow]) -> None:
    """Send again what was not delivered; cancel what an acknowledgement or resolution
    made moot before its cancellation was committed (a crash in between)."""
    live: list[OutboxRow] = []
    moot: list[OutboxRow] = []
    for row in rows:
        if row.is_notice:  # a hand-over's SMS is of no incident: never moot
            live.append(row)
            continue
        incident = runtime.open_incident(row.service_id)
        still = incident is not None and incident.id == row.incident_id
        pending = still and incident is not None and incident.status is IncidentStatus.TRIGGERED
        (live if pending else moot).append(row)
    dispatcher.release(live)
    dispatcher.cancel(moot, "no longer open and unacknowledged")


@contextlib.contextmanager
def _collection_paused() -> Iterator[None]:
    """No cyclic garbage collection while start-up builds its long-lived objects.

    Recovery makes a few objects per open incident, all of them kept: each collection
    along the way would scan them all again. They are frozen afterwards, out of the way
    of later collections too.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


async def _announce_ready(
    link: MqttLink,
    notifier: SystemdNotifier,
    store: Store,
    started: float,
    recovered: int,
    *,
    pool: SenderPool | None,
) -> None:
    await link.subscribed.wait()
    await senders_ready(pool)  # READY promises pages can go out
    seconds = round(time.monotonic() - started, 3)
    notifier.ready()
    notifier.status(f"ready: {recovered} open incidents recovered in {seconds}s")
    log.info("pagerd.ready", startup_s=seconds, open_incidents=recovered)
    # Counted once ready, as it reads an index of every service; a figure for the log
    # is no reason to stop.
    with contextlib.suppress(StoreError):
        log.info("pagerd.services", services=await store.count_services())


async def _announce_subscribed(
    link: MqttLink, subscribed: Callable[[], None], recovered: int, pool: SenderPool | None
) -> None:
    await link.subscribed.wait()
    await senders_ready(pool)
    log.info("pagerd.active", open_incidents=recovered)
    subscribed()


async def _arm_timers(runtime: Runtime, link: MqttLink) -> None:
    # Not on the way to READY: every open incident's timer, armed a chunk at a time.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(ARM_LATER_S):
            await link.subscribed.wait()
    await runtime.arm_timers()


async def _cancel(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        # We cancelled these ourselves; a cancellation of our own shows at the next await.
        with contextlib.suppress(asyncio.CancelledError):
            await task


def observe_commit(units: int, seconds: float) -> None:
    """Count a group commit (the store's ``on_commit``)."""
    metrics.COMMIT_BATCH_UNITS.observe(units)
    metrics.COMMIT_SECONDS.observe(seconds)


def install_signal_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT only set the stop event; shutdown runs in the main task."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


def _json_text(body: object) -> str:
    return msgspec.json.encode(body).decode()


async def main(config: Config) -> int:
    """The daemon's entry point under ``asyncio.run``."""
    gc.set_threshold(*GC_THRESHOLDS)
    raise_descriptor_limit()
    stop = asyncio.Event()
    install_signal_handlers(stop)
    return await serve(config, stop=stop)
