"""The HTTP server: health, readiness, metrics and the acknowledge-link pages.

``build_app`` makes the aiohttp application; other modules (the JSON API) add
their routes to it before ``start_http`` and reach the shared parts through
``request.app[CONTEXT]``. Errors on JSON routes are ``application/problem+json``
(``problem``); the acknowledge pages answer in HTML, since a person reads them.
"""

from __future__ import annotations

import html
import json
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, assert_never
from urllib.parse import quote

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from pagerd.core.domain import Ack, Incident, IncidentStatus, Outcome
from pagerd.core.ports import Clock, Store
from pagerd.core.records import OutboxRow, StoreError
from pagerd.core.values import Maintenance
from pagerd.runtime.answers import Committed, Refused, Retryable
from pagerd.runtime.catalogue import Catalogue
from pagerd.runtime.router import Runtime
from pagerd.telemetry import metrics
from pagerd.telemetry.logs import get_logger, mask_value
from pagerd.web.acklinks import EXPIRED, AckClaim, AckLinks, InvalidAckToken
from pagerd.web.auth import bearer_auth
from pagerd.web.limits import ConnectionGate, HttpLimits, connection_budget, protocol_factory
from pagerd.web.listener import Listener, bind
from pagerd.web.role import PROBES, READS, RETRY_AFTER_S, NodeRole

log = get_logger(__name__)

# In-flight requests get this long at shutdown; part of the unit's stop budget.
SHUTDOWN_TIMEOUT_S = 5.0
PROBLEM_JSON = "application/problem+json"


class WebContext:
    """What request handlers share; ``not_ready`` names each part not ready (empty: ready).

    On a node of a cluster (``role`` set) the runtime, catalogue and acknowledge links
    are those of what the node does now: the active node's, installed by ``serve``, or
    a standby's view of the database (``view``: no runtime). A part the node lacks
    answers 503, with ``Retry-After``.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        not_ready: Callable[[], Sequence[str]],
        store: Store | None = None,
        runtime: Runtime | None = None,
        catalogue: Catalogue | None = None,
        links: AckLinks | None = None,
        role: NodeRole | None = None,
    ) -> None:
        self.clock = clock
        self.not_ready = not_ready
        self.role = role
        self._store = store
        self._runtime = runtime
        self._catalogue = catalogue
        self._links = links

    @property
    def store(self) -> Store:
        if self._store is None:
            raise _unavailable("the database is not open yet")
        return self._store

    @property
    def store_if_open(self) -> Store | None:
        return self._store

    @property
    def runtime(self) -> Runtime:
        if self._runtime is None:
            raise _unavailable(self.role.refusal() if self.role else "not started")
        return self._runtime

    @property
    def catalogue(self) -> Catalogue:
        if self._catalogue is None:
            raise _unavailable("the catalogue is not loaded yet")
        return self._catalogue

    @property
    def links(self) -> AckLinks:
        if self._links is None:
            raise _unavailable("no acknowledge-link secret yet: no node has been active")
        return self._links

    def open_store(self, store: Store) -> None:
        """The database is open from now on (a node that waited for it)."""
        self._store = store

    def serve(
        self,
        *,
        runtime: Runtime,
        catalogue: Catalogue,
        links: AckLinks,
        not_ready: Callable[[], Sequence[str]],
    ) -> None:
        """Answer from this active node's runtime from now on."""
        self._runtime, self._catalogue, self._links = runtime, catalogue, links
        self.not_ready = not_ready

    def view(self, *, catalogue: Catalogue | None, links: AckLinks | None) -> None:
        """Answer reads from a standby's view of the database from now on (no runtime)."""
        self._runtime, self._catalogue, self._links = None, catalogue, links
        self.not_ready = list

    async def open_incident(self, service_id: str) -> Incident | None:
        """The service's open incident as committed: the actor's, or the database's."""
        if self._runtime is not None:
            return self._runtime.open_incident(service_id)
        return await self.store.open_incident_of(service_id)

    async def service_state(self, service_id: str) -> tuple[Incident | None, Maintenance | None]:
        """The service's open incident and maintenance window as committed."""
        if self._runtime is not None:
            state = self._runtime.state_of(service_id)
            return (None, None) if state is None else (state.open_incident, state.maintenance)
        # A standby runs no actors: both come from the database (the watched are few).
        incident = await self.store.open_incident_of(service_id)
        watches = await self.store.read_watches()
        window = next((w.maintenance for w in watches if w.service_id == service_id), None)
        return incident, window


def _unavailable(detail: str) -> web.HTTPServiceUnavailable:
    return web.HTTPServiceUnavailable(text=detail, headers={"Retry-After": RETRY_AFTER_S})


CONTEXT = web.AppKey("pagerd.web", WebContext)


def build_app(
    *,
    runtime: Runtime,
    catalogue: Catalogue,
    store: Store,
    links: AckLinks,
    not_ready: Callable[[], Sequence[str]],
    clock: Clock,
    max_body_bytes: int,
    tokens: Sequence[str] = (),
) -> web.Application:
    """The application with health, metrics and acknowledge-link routes.

    Routes under ``/api/v1`` and ``/integrations`` (added by other modules) need one
    of ``tokens``; with none configured, they are closed to everyone.
    """
    context = WebContext(
        clock=clock,
        not_ready=not_ready,
        store=store,
        runtime=runtime,
        catalogue=catalogue,
        links=links,
    )
    return make_app(context, max_body_bytes=max_body_bytes, tokens=tokens)


def make_app(
    context: WebContext, *, max_body_bytes: int, tokens: Sequence[str] = ()
) -> web.Application:
    """``build_app`` for a context made by the caller: a node of a cluster keeps one
    application across its roles, and a standby refuses writes (``_standby_gate``)."""

    async def service_of_key(key: str) -> str | None:
        return await context.store.service_of_integration_key(key)

    auth = bearer_auth(tokens, unauthorized, service_of_key)
    middlewares = [_errors, auth] if context.role is None else [_errors, _standby_gate, auth]
    app = web.Application(client_max_size=max_body_bytes, middlewares=middlewares)
    app[CONTEXT] = context
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/ack/{token}", _ack_page)
    app.router.add_post("/ack/{token}", _ack)
    return app


class HttpServer:
    """The listening sockets and the aiohttp runner behind them; ``cleanup()`` stops both."""

    def __init__(self, runner: web.AppRunner, listener: Listener, gate: ConnectionGate) -> None:
        self.runner = runner
        self.gate = gate
        self._listener = listener

    @property
    def addresses(self) -> list[Any]:
        return [sock.getsockname() for sock in self._listener.sockets]

    async def cleanup(self) -> None:
        """Stop listening, then let requests in flight finish (within the shutdown timeout)."""
        await self._listener.close()
        await self.runner.cleanup()


async def start_http(
    app: web.Application,
    host: str,
    port: int,
    *,
    limits: HttpLimits | None = None,
    tls: ssl.SSLContext | None = None,
) -> HttpServer:
    """Serve ``app`` on host:port within ``limits``, over HTTPS with ``tls``; the caller
    awaits ``cleanup()`` at shutdown.

    Connections come through pagerd's own listener (pagerd.web.listener), which admits
    or refuses each, into aiohttp's protocol with a request deadline (pagerd.web.limits).
    """
    limits = limits or HttpLimits()
    runner = web.AppRunner(app, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    assert runner.server is not None  # set by setup()
    gate = ConnectionGate(connection_budget(limits), limits.request_timeout_s)
    try:
        sockets = await bind(host, port)
        listener = Listener(sockets, protocol_factory(runner.server, gate), gate, tls)
    except BaseException:
        await runner.cleanup()
        raise
    listener.start()
    http = HttpServer(runner, listener, gate)
    log.info(
        "http.listening",
        addresses=[str(a) for a in http.addresses],
        max_connections=gate.max_connections,
        request_timeout_s=limits.request_timeout_s,
        tls=tls is not None,
    )
    return http


# --- problems and the error middleware ----------------------------------------------------


def unauthorized(reason: str) -> web.Response:
    detail = (
        f"{reason}: send Authorization: Bearer <token> (a token from [http] tokens);"
        " on /integrations, a service's integration key does for that service"
    )
    return problem(401, "Unauthorized", detail)


def problem(
    status: int, title: str, detail: str, *, headers: dict[str, str] | None = None
) -> web.Response:
    """An RFC 9457 ``application/problem+json`` response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_JSON,
        headers=headers,
    )


_DEFAULT_DETAIL = {
    404: "there is nothing at this path",
    405: "this path does not accept this method",
}


def _is_page(request: web.Request) -> bool:
    return request.path == "/ack" or request.path.startswith("/ack/")


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own errors and unexpected failures, as problem+json (or a page under /ack)."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        if _is_page(request):
            return _refusal_page(error.status, error.reason)
        text = error.text or ""
        detail = (
            _DEFAULT_DETAIL.get(error.status, text) if text.startswith(f"{error.status}:") else text
        )
        headers = {k: v for k, v in error.headers.items() if k in ("Allow", "Retry-After")}
        return problem(error.status, error.reason, detail, headers=headers)
    except StoreError as error:  # a read that could not be done: the client may try again
        log.error("http.store_failed", method=request.method, path=request.path, error=str(error))  # noqa: TRY400 - its message says all
        metrics.HTTP_STORE_FAILURES.inc()
        detail = "the database could not be read; try again"
        return problem(503, "Service Unavailable", detail, headers={"Retry-After": "5"})
    except Exception as error:
        if isinstance(error, ConnectionError) and request.transport is None:
            # The client left, or was cut at request_timeout_s, before its body was in:
            # nobody is there to answer, and a cut is already counted and logged.
            log.debug("http.client_gone", method=request.method, path=request.path)
            return web.Response(status=400)
        log.exception("http.failed", method=request.method, path=request.path)
        if _is_page(request):
            return _refusal_page(500, "Something went wrong")
        return problem(500, "Internal Server Error", "the request failed; the error is logged")


@web.middleware
async def _standby_gate(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """On a node that is not serving as the active one: writes 503, reads from the database."""
    context = request.app[CONTEXT]
    role = context.role
    if role is None or role.serving:
        return await handler(request)
    if request.method not in READS:
        metrics.HTTP_REFUSED.labels(status="503").inc()
        detail = role.refusal()
        log.info("http.standby_refused", method=request.method, path=request.path)
        headers = {"Retry-After": RETRY_AFTER_S}
        if _is_page(request):
            page = _refusal_page(503, "Try again in a moment", _STANDBY_PAGE)
            page.headers.update(headers)
            return page
        return problem(503, "Service Unavailable", detail, headers=headers)
    if role.refresh_view is not None and request.path not in PROBES:
        try:
            await role.refresh_view()
        except StoreError as error:
            metrics.HTTP_STORE_FAILURES.inc()
            log.error("http.store_failed", path=request.path, error=str(error))  # noqa: TRY400
            raise _unavailable(f"the database cannot be read: {error}") from None
    return await handler(request)


_STANDBY_PAGE = (
    "This pagerd node is standing by for another. Nothing was changed: try again in a"
    " moment (acknowledging twice is harmless)."
)


# --- health, readiness, metrics -----------------------------------------------------------


async def _healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    context = request.app[CONTEXT]
    missing = list(context.not_ready())
    store = context.store_if_open
    if store is not None and store.write_error is not None:
        missing.append(f"database: {store.write_error}")
    if context.role is not None:
        status, body = context.role.readiness(missing)
        return web.json_response(body, status=status)
    if missing:
        return problem(503, "Not Ready", "; ".join(missing))
    return web.json_response({"status": "ready"})


async def _metrics(_: web.Request) -> web.Response:
    return web.Response(
        body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


# --- acknowledge links ---------------------------------------------------------------------

# A mail or SMS link scanner fetches with GET: GET only shows, and POST acknowledges.


async def _ack_page(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    found = await _claimed_incident(request, ctx)
    if isinstance(found, web.Response):
        return found
    _, service_id, incident = found
    page = _IncidentPage(ctx.catalogue.service_name(service_id), await _paged(ctx, incident.id))
    match incident.status:
        case IncidentStatus.TRIGGERED:
            return page.show(
                200,
                "Acknowledge this incident?",
                incident,
                note="Acknowledging stops the escalation. The incident stays open until"
                " the service is healthy again.",
                button=True,
            )
        case IncidentStatus.ACKNOWLEDGED:
            return page.show(200, "Already acknowledged", incident, note=_acked_note(incident))
        case IncidentStatus.RESOLVED:
            return page.show(200, "Already resolved", incident, note=_RESOLVED)
        case _:
            assert_never(incident.status)


async def _ack(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    found = await _claimed_incident(request, ctx)
    if isinstance(found, web.Response):
        return found
    claim, service_id, incident = found
    name = ctx.catalogue.service_name(service_id)
    if incident.status is IncidentStatus.RESOLVED:
        page = _IncidentPage(name, await _paged(ctx, incident.id))
        return page.show(409, "Already resolved", incident, note=_RESOLVED)
    by, via = await _link_holder(ctx, claim)
    answer = await ctx.runtime.ask(service_id, Ack(claim.incident_id, by, via))
    match answer:
        case Refused(code="unknown_service"):
            return _refusal_page(404, "Service not found", "The service of this incident is gone.")
        case Refused(reason=reason):
            return _refusal_page(409, "Not acknowledged", reason)
        case Retryable(reason=reason):
            log.warning("ack_link.not_committed", service_id=service_id, reason=reason)
            return _refusal_page(503, "Not confirmed", _NOT_CONFIRMED)
        case Committed():
            pass
        case _:
            assert_never(answer)
    metrics.ALERTS_RECEIVED.labels(source="ack_link", kind="ack").inc()
    current = answer.incident if answer.incident is not None else incident
    page = _IncidentPage(name, await _paged(ctx, incident.id))
    if answer.outcome is Outcome.ACKNOWLEDGED:
        return page.show(200, "Acknowledged", current, note="Escalation stopped.")
    if answer.outcome is Outcome.ALREADY_ACKNOWLEDGED:
        return page.show(200, "Already acknowledged", current, note=_acked_note(current))
    # No open incident with this id: it was resolved (a later one is never acknowledged).
    return page.show(409, "Already resolved", incident, note=_RESOLVED)


async def _claimed_incident(
    request: web.Request, ctx: WebContext
) -> tuple[AckClaim, str, Incident] | web.Response:
    """The token's claim and its incident, or the page that refuses the link."""
    try:
        claim = ctx.links.verify(request.match_info["token"], ctx.clock.now())
    except InvalidAckToken as error:
        expired = error.reason == EXPIRED
        metrics.ALERTS_REJECTED.labels(
            source="ack_link", reason="expired" if expired else "invalid"
        ).inc()
        log.info("ack_link.refused", reason=error.reason)
        status = 410 if expired else 404
        title = "Link expired" if expired else "Link not valid"
        detail = error.reason.capitalize() + "."
        if expired:
            detail += " Use the link of a newer page, or acknowledge with `pagerd ack`."
        return _refusal_page(status, title, detail)
    found = await ctx.store.get_incident(claim.incident_id)
    if found is None:
        return _refusal_page(404, "Incident not found", "This incident is not known here.")
    service_id, incident = found
    return claim, service_id, incident


async def _link_holder(ctx: WebContext, claim: AckClaim) -> tuple[str, str | None]:
    """Whom the page with this link was sent to, as an acknowledgement names them (the
    developer; else the target, partly masked), and by which channel.

    Whoever opens a link acknowledges in the name of the person it was sent to: that is
    all a link can tell, and what "who acknowledged" means in PagerDuty and GoAlert too.
    """
    pages = await ctx.store.notifications(claim.incident_id)
    page = next((p for p in pages if p.id == claim.notification_id), None)
    if page is None:  # the link outlived its page's row: the notification is all we know
        return f"link {claim.notification_id}", None
    names = ctx.catalogue.developer_names((page.developer_id,))
    return _recipient(page, names), page.channel


def _recipient(page: OutboxRow, names: dict[int, str]) -> str:
    """A page's recipient as people see it: the developer's name, else the target masked
    (a webhook by its host)."""
    if page.developer_id is not None and page.developer_id in names:
        return names[page.developer_id]
    if page.channel == "webhook":
        return URL(page.recipient).host or "a webhook"
    return mask_value(page.recipient)


async def _paged(ctx: WebContext, incident_id: str) -> list[str]:
    """Who the incident paged, how, and how it went: what the person holding a link
    needs to know of the others (names and masked targets only)."""
    pages = await ctx.store.notifications(incident_id)
    names = ctx.catalogue.developer_names(p.developer_id for p in pages)
    channels = {"sms": "SMS", "email": "email", "webhook": "webhook"}
    return [
        f"{_recipient(p, names)} by {channels.get(p.channel, p.channel)}, level {p.level}:"
        f" {p.status}"
        for p in pages
    ]


_RESOLVED = "The service is healthy again; there is nothing to acknowledge."
_NOT_CONFIRMED = (
    "pagerd could not confirm the acknowledgement. Try again in a moment: acknowledging"
    " twice is harmless."
)


def _acked_note(incident: Incident) -> str:
    who = f" by {incident.acknowledged_by}" if incident.acknowledged_by else ""
    when = f" at {_when(incident.acknowledged_at)}" if incident.acknowledged_at else ""
    return f"It was acknowledged{who}{when}."


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --- HTML ------------------------------------------------------------------------------------

# The console's sheet (pagerd.console serves it), so these pages look like the console.
STYLESHEET = "/console/style.css"

_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": "default-src 'none'; style-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
}


def _page(status: int, title: str, body_html: str) -> web.Response:
    """A whole page; ``body_html`` must already be escaped."""
    text = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<title>{html.escape(title)} · pagerd</title><link rel="stylesheet" href="{STYLESHEET}">'
        "</head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body_html}</main></body></html>\n"
    )
    return web.Response(
        status=status,
        text=text,
        content_type="text/html",
        charset="utf-8",
        headers=_PAGE_HEADERS,
    )


def _refusal_page(status: int, title: str, detail: str = "") -> web.Response:
    return _page(status, title, f"<p>{html.escape(detail)}</p>" if detail else "")


@dataclass(frozen=True, slots=True)
class _IncidentPage:
    """The page an acknowledge link shows of its incident."""

    service: str
    paged: list[str]

    def show(
        self, status: int, title: str, incident: Incident, *, note: str, button: bool = False
    ) -> web.Response:
        rows = (
            ("Service", self.service),
            ("Alert", incident.message),
            ("Level", str(incident.level)),
            ("Status", incident.status.value),
            ("Opened", _when(incident.opened_at)),
            ("Incident", incident.id),
        )
        details = "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in rows)
        form = (
            '<form method="post"><button type="submit">Acknowledge</button></form>'
            if button
            else ""
        )
        paged = "".join(f"<li>{html.escape(who)}</li>" for who in self.paged)
        paged_html = f'<h2>Paged</h2><ul class="paged">{paged}</ul>' if paged else ""
        console = html.escape(f"/#/incidents/{quote(incident.id, safe='')}")
        link = f'<p><a href="{console}">Open this incident in the console</a></p>'
        body = f"<dl>{details}</dl><p>{html.escape(note)}</p>{form}{paged_html}{link}"
        return _page(status, title, body)
