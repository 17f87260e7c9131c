"""Wiring of a node among several on one PostgreSQL database (CONTRACT §7).

A node is standby until it holds the lease (``pagerd.store.lease``), then active until
it loses it or stops, then standby again. Its HTTP server, its presence on the broker
(``pagerd.intake.presence``) and the watchdog live as long as the process; the
runtime, the outbox and MQTT intake live one active term each (``app.run_active``).

- Standby: the store commits nothing (``store.fence(None)``); reads are served from
  the database through a view refreshed when older than ``VIEW_MAX_AGE_S``; writes are
  refused (``pagerd.web.role``). The node looks at the lease every ``ttl / 4`` (at
  most 1 s), and again just after the holder's lease would expire.
- Taking over: the lease's epoch fences every commit from now on; the node reads every
  service anew, applies the declared objects, builds its directory, recovers open
  incidents (timers at their deadlines) and pending pages, and only then connects to
  MQTT with the shared client id, taking over the session.
- Losing the lease (not renewed within ``lease_ttl_s``, or found taken): from that
  moment the node's own clock refuses every send, connect and commit; the term is
  abandoned at once, and the node stands by again.
- Stopping: an active node drains and commits as a single node does, then releases
  the lease, so a standby takes over without waiting for it to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable

import aiohttp
import structlog

from pagerd.app import (
    ClusterTerm,
    client_sessions,
    declared,
    mqtt_settings,
    observe_commit,
    run_active,
    serve_http,
)
from pagerd.config import Config
from pagerd.core.records import StoreError
from pagerd.intake.presence import Presence
from pagerd.notify.egress import WebhookEgress
from pagerd.notify.pool import SenderPool
from pagerd.runtime.catalogue import Catalogue, apply_declared
from pagerd.runtime.clock import SteadyClock
from pagerd.runtime.directory import Directory
from pagerd.sending import sender_processes, senders_ready
from pagerd.store.lease import (
    Holder,
    Lease,
    NodeIdInUse,
    NodeReplaced,
    Tenure,
    application_name,
    new_instance,
)
from pagerd.store.postgres import PostgresStore
from pagerd.systemd import SystemdNotifier
from pagerd.telemetry import metrics
from pagerd.web.acklinks import SECRET_META_KEY, AckLinks
from pagerd.web.live import LiveFeed, serve_live
from pagerd.web.role import NodeRole
from pagerd.web.server import WebContext, make_app

log = structlog.get_logger("pagerd.cluster")

EXIT_BAD_CONFIG = 2  # CONTRACT §1: a node id another live node uses is the config's fault
DATABASE_RETRY_S = 1.0
# A standby's answers to reads may be this old (the catalogue is read anew after it).
VIEW_MAX_AGE_S = 5.0


async def serve_node(
    config: Config, *, stop: asyncio.Event, notifier: SystemdNotifier, clock: SteadyClock
) -> int:
    """Run a node of a cluster until ``stop`` is set; return the process exit code."""
    role = NodeRole(config.cluster.node_id)
    context = WebContext(clock=clock, not_ready=list, role=role)
    app = make_app(context, max_body_bytes=config.http.max_body_bytes, tokens=config.http_tokens())
    live = LiveFeed()  # the console's live updates, fed by each active term's runtime
    serve_live(app, live)
    presence = Presence(mqtt_settings(config), config.cluster.node_id, clock)
    # The senders' sessions and processes live as long as the node: the HTTP server keeps
    # descriptors for their connections, and every active term sends through them.
    async with sender_processes(config) as pool, client_sessions(config) as (session, webhooks):
        http = await serve_http(app, config, webhooks.rule, session)
        node = _Node(
            config,
            pool=pool,
            role=role,
            context=context,
            live=live,
            presence=presence,
            notifier=notifier,
            clock=clock,
            stop=stop,
        )
        try:
            async with asyncio.TaskGroup() as group:
                watchdog = group.create_task(notifier.watchdog_loop(), name="pagerd[watchdog]")
                announcing = group.create_task(presence.run(), name="pagerd[presence]")
                try:
                    code = await node.run(session, webhooks)
                finally:
                    for task in (announcing, watchdog):
                        task.cancel()
        finally:
            await http.cleanup()
    log.info("pagerd.stopped", node_id=role.node_id)
    return code


class _Node:
    """One process's life as a node: standby, active, standby, ... until stopped."""

    def __init__(
        self,
        config: Config,
        *,
        pool: SenderPool | None,
        role: NodeRole,
        context: WebContext,
        live: LiveFeed,
        presence: Presence,
        notifier: SystemdNotifier,
        clock: SteadyClock,
        stop: asyncio.Event,
    ) -> None:
        self._config = config
        self._pool = pool  # sender processes, or None: pages go from the loop
        self._role = role
        self._context = context
        self._feed = live
        self._presence = presence
        self._notifier = notifier
        self._clock = clock
        self._stop = stop
        self._started = time.monotonic()
        self._settled = False  # READY=1 sent: the node found its place once
        self._view: _StandbyView | None = None
        # This process among the nodes: its lease and every session it opens say so.
        self._instance = new_instance()

    async def run(self, session: aiohttp.ClientSession, webhooks: WebhookEgress) -> int:
        store = await self._open_store()
        if store is None:
            return 0
        cluster = self._config.cluster
        url = self._config.database.url
        lease = Lease(url, cluster.node_id, cluster.lease_ttl_s, instance=self._instance)
        try:
            return await self._live(store, lease, session, webhooks)
        finally:
            self._notifier.stopping()
            with contextlib.suppress(StoreError):
                await lease.leave()
            await lease.close()
            await store.close()

    async def _live(
        self,
        store: PostgresStore,
        lease: Lease,
        session: aiohttp.ClientSession,
        webhooks: WebhookEgress,
    ) -> int:
        try:
            if not await self._unless_stopped(lease.join()):
                return 0
            # READY, standby or active, only once pages can go out: and a node that
            # cannot send does not take the lease from one that can.
            if not await self._unless_stopped(senders_ready(self._pool)):
                return 0
            while not self._stop.is_set():
                tenure = await self._stand_by(store, lease)
                if tenure is None:
                    break
                await self._act(store, lease, tenure, session, webhooks)
        except (NodeIdInUse, NodeReplaced) as refusal:
            log.error("cluster.node_id_in_use", node_id=self._role.node_id, error=str(refusal))  # noqa: TRY400
            self._notifier.status(f"refused: {refusal}")
            return EXIT_BAD_CONFIG
        return 0

    # --- the database ------------------------------------------------------------------

    async def _open_store(self) -> PostgresStore | None:
        """The store, once the database can be reached; None if stopped first."""
        last = ""
        while not self._stop.is_set():
            try:
                store = await PostgresStore.open(
                    self._config.database.url,
                    application_name=application_name(self._instance, self._role.node_id),
                )
            except StoreError as error:
                reason = f"database: {error}"
                metrics.LEASE_EVENTS.labels(event="look_failed").inc()
                if reason != last:  # once per distinct failure, not once a second
                    log.warning("cluster.database_unreachable", error=str(error))
                    self._notifier.status(f"standby: waiting for the database: {error}")
                last = reason
                self._role.saw(None, reason)
                await self._pause(DATABASE_RETRY_S)
                continue
            store.on_commit(observe_commit)
            store.fence(None)  # a standby commits nothing
            self._context.open_store(store)
            return store
        return None

    # --- standby -----------------------------------------------------------------------

    async def _stand_by(self, store: PostgresStore, lease: Lease) -> Tenure | None:
        """Serve reads and look at the lease until this node takes it (None: stopped)."""
        store.fence(None)
        store.forget_write_error()
        view = self._view = _StandbyView(self._config, store, self._context)
        self._role.refresh_view = view.refresh
        self._context.view(catalogue=None, links=None)
        self._presence.announce("standby")
        reason: str | None = None
        while not self._stop.is_set():
            wait: float
            try:
                seen = await lease.try_acquire(reason)
            except StoreError as error:
                metrics.LEASE_EVENTS.labels(event="look_failed").inc()
                if reason is None:
                    log.warning("cluster.look_failed", error=str(error))
                reason = f"database: {error}"
                self._role.saw(None, reason)
                wait = lease.next_look_s(None)
            else:
                if reason is not None:
                    log.info("cluster.database_reachable")
                if isinstance(seen, Tenure):
                    return seen
                reason = None
                self._role.saw(seen.node_id, None)
                self._standing_by(seen)
                wait = lease.next_look_s(seen)
            await self._pause(wait)
        return None

    def _standing_by(self, holder: Holder) -> None:
        if holder.node_id is None or holder.remaining_s <= 0:
            return  # nobody acts: this node may take over in a moment
        self._notifier.status(f"standby: {holder.node_id} is active")
        if not self._settled:
            self._ready(f"standby: {holder.node_id} is active")

    def _ready(self, status: str) -> None:
        self._settled = True
        self._notifier.ready()
        self._notifier.status(status)
        log.info(
            "pagerd.ready",
            role=self._role.role,
            startup_s=round(time.monotonic() - self._started, 3),
        )

    # --- active ------------------------------------------------------------------------

    async def _act(
        self,
        store: PostgresStore,
        lease: Lease,
        tenure: Tenure,
        session: aiohttp.ClientSession,
        webhooks: WebhookEgress,
    ) -> None:
        """Take over, act until the lease is lost or the node stops, and hand it back."""
        node_id = self._role.node_id
        log.info("cluster.lease_acquired", node_id=node_id, epoch=tenure.epoch)
        metrics.LEASE_EVENTS.labels(event="acquired").inc()
        store.fence(tenure)
        self._role.taking_over(tenure)
        self._role.refresh_view = None
        self._notifier.status(f"active: taking over (epoch {tenure.epoch})")
        keeper = asyncio.create_task(lease.keep(tenure), name="pagerd[lease]")
        term_end = asyncio.Event()
        watcher = asyncio.create_task(self._watch(keeper, term_end), name="pagerd[lease-watch]")
        directory: Directory | None = None
        if self._view is not None:
            self._view.close()
        try:
            directory = await self._take_over(store)
            if directory is not None:
                self._presence.announce("active")
                try:
                    await run_active(
                        self._config,
                        store=store,
                        directory=directory,
                        session=session,
                        webhooks=webhooks,
                        clock=self._clock,
                        notifier=self._notifier,
                        until=term_end,
                        started=self._started,
                        pool=self._pool,
                        term=ClusterTerm(
                            tenure.held, self._context, self._role, self._subscribed, self._feed
                        ),
                    )
                except* StoreError as failed:
                    # The database failed while the term began (recovery reads): the node
                    # stands by and tries again, rather than exit.
                    log.error("cluster.take_over_failed", error=str(failed.exceptions[0]))  # noqa: TRY400
                    metrics.LEASE_EVENTS.labels(event="take_over_failed").inc()
                    directory.close()
                    directory = None
                finally:
                    if directory is not None:
                        directory.close()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
        if tenure.held() and (self._stop.is_set() or directory is None):
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
            # After the last commit: a standby may take over at once.
            with contextlib.suppress(StoreError):
                await lease.release(tenure)
            metrics.LEASE_EVENTS.labels(event="released").inc()
            self._role.stand_by("stopping" if self._stop.is_set() else "take-over failed")
            return
        why = await self._lost(keeper, tenure)
        self._role.stand_by(f"lost the lease: {why}")

    async def _take_over(self, store: PostgresStore) -> Directory | None:
        """Everything another node committed, read anew; None if the database failed."""
        try:
            await store.refresh_services()
            # The node that becomes active applies the declared objects (CONTRACT §7).
            await apply_declared(store, declared(self._config))
            return await Directory.load(store)
        except StoreError as error:
            log.error("cluster.take_over_failed", error=str(error))  # noqa: TRY400
            metrics.LEASE_EVENTS.labels(event="take_over_failed").inc()
            return None

    async def _watch(self, keeper: asyncio.Task[str], term_end: asyncio.Event) -> None:
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({keeper, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            term_end.set()

    async def _lost(self, keeper: asyncio.Task[str], tenure: Tenure) -> str:
        tenure.end()
        if not keeper.done():
            keeper.cancel()
        results = await asyncio.gather(keeper, return_exceptions=True)
        result = results[0]
        if isinstance(result, BaseException):
            if isinstance(result, NodeReplaced):
                raise result
            why = "not renewed within lease_ttl_s"
        else:
            why = result
        log.error("cluster.lease_lost", node_id=self._role.node_id, epoch=tenure.epoch, reason=why)
        metrics.LEASE_EVENTS.labels(event="lost").inc()
        self._notifier.status(f"standby: lost the lease: {why}")
        return why

    def _subscribed(self) -> None:
        if not self._settled:
            self._ready("active")
        self._notifier.status("active")

    # --- waiting -----------------------------------------------------------------------

    async def _pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``; return early when the node is stopped."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stop.wait()

    async def _unless_stopped(self, work: Awaitable[None]) -> bool:
        """Whether ``work`` was done before the node was stopped."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not task.done():
                task.cancel()
            await asyncio.gather(task, stopping, return_exceptions=True)
        if task.cancelled():
            return False
        task.result()  # raises what the work raised
        return True


class _StandbyView:
    """What a standby answers reads from: the catalogue and the acknowledge-link secret
    as the database holds them, read anew when older than ``VIEW_MAX_AGE_S``."""

    def __init__(self, config: Config, store: PostgresStore, context: WebContext) -> None:
        self._config = config
        self._store = store
        self._context = context
        self._read_at: float | None = None
        self._directory: Directory | None = None
        self._lock = asyncio.Lock()

    async def refresh(self) -> None:
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():
                return
            await self._store.refresh_services()
            directory = await Directory.load(self._store)
            catalogue = Catalogue(
                self._store,
                directory,
                default_ack_timeout_s=self._config.escalation.ack_timeout_s,
                fallback_policy=self._config.routing.fallback_policy,
            )
            secret = await self._store.get_meta(SECRET_META_KEY)
            links = None
            if secret is not None:
                with contextlib.suppress(ValueError):
                    links = AckLinks(bytes.fromhex(secret), self._config.http.public_url)
            stale, self._directory = self._directory, directory
            if stale is not None:
                stale.close()
            self._context.view(catalogue=catalogue, links=links)
            self._read_at = time.monotonic()

    def close(self) -> None:
        """Read no more (the node takes over, with a directory of its own)."""
        self._read_at = time.monotonic() + 1e9  # never refreshed again
        if self._directory is not None:
            self._directory.close()
            self._directory = None

    def _fresh(self) -> bool:
        return self._read_at is not None and time.monotonic() - self._read_at < VIEW_MAX_AGE_S
