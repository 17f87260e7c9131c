"""The JSON API under ``/api/v1`` (CONTRACT §4): requests in, problems or answers out.

Alerts, acknowledgements and healthy events go to the runtime through ``ask`` and
are answered once committed: the API never writes incidents itself. Teams,
policies and services are changed through the catalogue. What the answers look
like is ``api_views``; what the bodies must be is ``api_schemas``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from aiohttp import web

from pagerd import __version__
from pagerd.core import policy as escalation
from pagerd.core.domain import Ack, Alert, Healthy, Outcome
from pagerd.core.egress import EgressRule
from pagerd.core.policy import DomainError, Policy
from pagerd.core.ports import Store
from pagerd.core.records import StoreError
from pagerd.intake import api_pages as pages
from pagerd.intake import api_schemas as wire
from pagerd.intake import api_views as views
from pagerd.intake.api_answers import MAX_ID_DIGITS, RefusedError
from pagerd.intake.api_answers import ask as _ask
from pagerd.intake.api_answers import incident_of as _incident_of
from pagerd.intake.api_answers import json_response as _json
from pagerd.intake.api_answers import limit as _limit
from pagerd.intake.api_answers import new_id as _new_id
from pagerd.intake.api_answers import read_body as _read
from pagerd.intake.api_answers import service_id_of as _service_id
from pagerd.intake.api_incidents import IncidentRoutes
from pagerd.intake.api_schedules import ScheduleRoutes
from pagerd.intake.openapi import openapi_document
from pagerd.runtime.catalogue import KEEP, Catalogue
from pagerd.runtime.ids import new_incident_id
from pagerd.runtime.refusals import (
    CatalogueError,
    ConflictError,
    InvalidError,
    NotFoundError,
    NotSavedError,
)
from pagerd.telemetry import metrics
from pagerd.telemetry.logs import get_logger
from pagerd.web.auth import principal_of
from pagerd.web.live import LIVE
from pagerd.web.server import CONTEXT, PROBLEM_JSON, problem

log = get_logger(__name__)

B = TypeVar("B")
BASE = "/api/v1"
MAX_INCIDENTS = wire.MAX_INCIDENTS
_TITLES = {
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Content",
    503: "Service Unavailable",
}
_CATALOGUE_STATUS = {NotFoundError: 404, ConflictError: 409, NotSavedError: 503}
# Any of these asks for a page of services (``limit`` defaulting), not all of them.
_PAGE_PARAMETERS = frozenset({"after", "health", "q"})


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answering(handler: Handler) -> Handler:
    """Turn refusals, body errors, catalogue errors and store failures into problems."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except wire.BodyError as error:
            _count_refusal(request, error.status, error.detail)
            return _problem(error.status, error.detail, error.problems or None)
        except InvalidError as error:
            problems = [wire.FieldProblem(field=error.field, problem=error.problem)]
            _count_refusal(request, 422, str(error))
            return _problem(422, str(error), problems)
        except CatalogueError as error:
            status = _CATALOGUE_STATUS[type(error)]
            _count_refusal(request, status, str(error))
            return _problem(status, str(error))
        except RefusedError as error:
            _count_refusal(request, error.status, error.detail)
            return _problem(error.status, error.detail)
        except StoreError as error:
            _store_failed(request, error)
            return _problem(503, "the database could not be read; try again")

    return handle


def _store_failed(request: web.Request, error: StoreError) -> None:
    """Log (its message says all; no traceback) and count a read the store failed."""
    log.error("api.store_failed", path=request.path, error=str(error))
    metrics.HTTP_STORE_FAILURES.inc()


def _count_refusal(request: web.Request, status: int, detail: str) -> None:
    metrics.HTTP_REFUSED.labels(status=str(status)).inc()
    log.info("api.refused", method=request.method, path=request.path, status=status, detail=detail)


def _problem(
    status: int, detail: str, errors: list[wire.FieldProblem] | None = None
) -> web.Response:
    if errors is None:
        return problem(status, _TITLES.get(status, "Error"), detail)
    body = wire.Problem(
        type="about:blank", title=_TITLES[status], status=status, detail=detail, errors=errors
    )
    return web.Response(status=status, body=msgspec.json.encode(body), content_type=PROBLEM_JSON)


async def _integration_key(store: Store, service_id: str) -> str:
    key = await store.integration_key(service_id)
    if key is None:  # the catalogue knows it: the database must have it too
        raise StoreError(f"service {service_id!r} has no integration key in the database")
    return key


def add_api_routes(app: web.Application, *, egress: EgressRule | None = None) -> None:
    """Add the ``/api/v1`` routes; handlers find what they need in ``app[CONTEXT]``.

    ``egress`` is the rule a webhook target's URL must pass (default: no allow_hosts).
    """
    api = _Api(egress or EgressRule())
    for op in wire.OPERATIONS:
        handler: Handler = getattr(api, op.name)
        app.router.add_route(op.method, BASE + op.path, _answering(handler))


class _Api(ScheduleRoutes, IncidentRoutes):
    def __init__(self, egress: EgressRule) -> None:
        self.egress = egress
        document = openapi_document(wire.OPERATIONS, __version__, wire.Problem)
        self.document = msgspec.json.encode(document)

    # --- teams -------------------------------------------------------------------------------

    async def create_team(self, request: web.Request) -> web.Response:
        catalogue = request.app[CONTEXT].catalogue
        body = await _read(request, wire.NewTeam)
        developers = [(d.name, d.phone_number) for d in body.developers]
        team, rows = await catalogue.create_team(body.team.name, developers)
        return _json(views.team_out(team, rows), 201)

    async def list_teams(self, request: web.Request) -> web.Response:
        catalogue = request.app[CONTEXT].catalogue
        teams = [views.team_out(t, catalogue.developers(t.id)) for t in catalogue.teams()]
        return _json(wire.TeamList(teams=teams))

    async def get_team(self, request: web.Request) -> web.Response:
        catalogue = request.app[CONTEXT].catalogue
        team = catalogue.team(_team_id(request))
        return _json(views.team_out(team, catalogue.developers(team.id)))

    async def add_developer(self, request: web.Request) -> web.Response:
        catalogue = request.app[CONTEXT].catalogue
        team = catalogue.team(_team_id(request))
        catalogue.refuse_managed_team(team.id)
        body = await _read(request, wire.NewDeveloper)
        developer = await catalogue.add_developer(team.id, body.name, body.phone_number)
        return _json(views.developer_out(developer), 201)

    async def alert_team(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        body = await _read(request, wire.TeamAlert)
        service_id = await ctx.catalogue.team_service(body.team_id)
        result = await _ask(ctx, service_id, Alert(body.message, new_incident_id(), source="api"))
        metrics.ALERTS_RECEIVED.labels(source="api", kind="alert").inc()
        names = {d.id: d.name for d in ctx.catalogue.developers(body.team_id)}
        notified = [
            wire.Notified(
                developer_id=row.developer_id,
                name=names.get(row.developer_id, ""),
                phone_number=row.recipient,
            )
            for row in result.notified
            if row.developer_id is not None
        ]
        # None when the team's service is in maintenance: the alert opened nothing.
        incident_id = None if result.incident is None else result.incident.id
        answer = wire.TeamAlertAccepted(
            incident_id=incident_id, service_id=service_id, notified=notified
        )
        return _json(answer, 202)

    # --- policies ----------------------------------------------------------------------------

    async def list_policies(self, request: web.Request) -> web.Response:
        catalogue = request.app[CONTEXT].catalogue
        policies = [
            views.policy_out(catalogue, row.policy, managed=row.managed)
            for row in catalogue.policies()
        ]
        return _json(wire.PolicyList(policies=policies))

    async def get_policy(self, request: web.Request) -> web.Response:
        catalogue = request.app[CONTEXT].catalogue
        row = catalogue.policy(request.match_info["id"])
        return _json(views.policy_out(catalogue, row.policy, managed=row.managed))

    async def put_policy(self, request: web.Request) -> web.Response:
        catalogue = request.app[CONTEXT].catalogue
        policy_id = _new_id(request)
        catalogue.refuse_managed_policy(policy_id)
        body = await _read(request, wire.PolicyBody)
        policy = _policy(catalogue, policy_id, body, self.egress)
        created = await catalogue.put_policy(policy)
        return _json(views.policy_out(catalogue, policy, managed=False), 201 if created else 200)

    async def delete_policy(self, request: web.Request) -> web.Response:
        await request.app[CONTEXT].catalogue.delete_policy(request.match_info["id"])
        return web.Response(status=204)

    # --- services ----------------------------------------------------------------------------

    async def list_services(self, request: web.Request) -> web.StreamResponse:
        """A page of services with ``?limit=``, else every one (``_every_service``)."""
        query = request.query
        if "limit" not in query and not query.keys() & _PAGE_PARAMETERS:
            return await _every_service(request)
        problems: list[wire.FieldProblem] = []
        count = _limit(query, problems)
        health = pages.read_choice(query, "health", pages.HEALTHS, problems)
        text = pages.read_text(query, problems)
        after = pages.read_service_cursor(query, problems)
        if after is not None and health is not None and after[0] != (health == "unhealthy"):
            problems.append(wire.FieldProblem(field="after", problem=pages.NOT_A_CURSOR))
        if problems:
            raise wire.invalid(problems)
        store = request.app[CONTEXT].store
        # Unhealthy first, then healthy, each by id; the cursor says which part it is in.
        parts = [True, False] if health is None else [health == "unhealthy"]
        if after is not None:
            parts = parts[parts.index(after[0]) :]
        documents: list[bytes] = []
        found = 0
        cursor = None
        for unhealthy in parts:
            start = after[1] if after is not None and after[0] == unhealthy else ""
            page = await store.services_page(
                unhealthy=unhealthy, after=start, limit=count - found, text=text
            )
            if page.count:
                documents.append(page.documents)
                found += page.count
                assert page.last_id is not None  # a page with services has a last one
                cursor = pages.service_cursor(unhealthy, page.last_id)
            if found == count:
                break
        next_page = msgspec.json.encode(cursor if found == count else None)
        body = b'{"services":[' + b",".join(documents) + b'],"next":' + next_page + b"}"
        return web.Response(body=body, content_type="application/json")

    async def get_service(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        row = ctx.catalogue.service(request.match_info["id"])
        # A standby runs no actors: it reads the open incident from the database.
        key = await _integration_key(ctx.store, row.id)
        return _json(views.service_detail(row, *await ctx.service_state(row.id), key))

    async def put_service(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        service_id = _new_id(request)
        ctx.catalogue.refuse_managed_service(service_id)
        body = await _read(request, wire.ServiceBody)
        before = ctx.catalogue.directory.services.get(service_id)
        heartbeat_s = KEEP if isinstance(body.heartbeat_s, msgspec.UnsetType) else body.heartbeat_s
        row, created = await ctx.catalogue.put_service(
            service_id, body.name, body.policy_id, heartbeat_s
        )
        if row.heartbeat_s != (None if before is None else before.heartbeat_s):
            ctx.runtime.rewatch(service_id)  # a full interval from now before a beat is missed
        key = await _integration_key(ctx.store, row.id)
        out = views.service_detail(row, *await ctx.service_state(row.id), key)
        return _json(out, 201 if created else 200)

    async def replace_integration_key(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        row = ctx.catalogue.service(request.match_info["id"])
        key = await ctx.store.replace_integration_key(row.id)
        log.info("service.integration_key_replaced", service_id=row.id)  # never the key
        return _json(views.service_detail(row, *await ctx.service_state(row.id), key))

    async def alert_service(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        service_id = _service_id(request)
        body = await _read(request, wire.ServiceAlert)
        event = Alert(body.message, new_incident_id(), alert_id=body.alert_id, source="api")
        result = await _ask(ctx, service_id, event)
        metrics.ALERTS_RECEIVED.labels(source="api", kind="alert").inc()
        opened = result.outcome is Outcome.OPENED
        # None when the service is in maintenance: the alert is recorded on no incident.
        incident_id = None if result.incident is None else result.incident.id
        return _json(wire.AlertAccepted(incident_id=incident_id, opened=opened), 202)

    async def ack_service(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        service_id = _service_id(request)
        body = await _read(request, wire.AckBody, empty=wire.AckBody())
        principal = principal_of(request)
        by, via = (principal, "console") if principal else (body.by or "api", "api")
        result = await _ask(ctx, service_id, Ack(body.incident_id, by, via))
        metrics.ALERTS_RECEIVED.labels(source="api", kind="ack").inc()
        if result.outcome not in (Outcome.ACKNOWLEDGED, Outcome.ALREADY_ACKNOWLEDGED):
            which = (
                "no open incident"
                if body.incident_id is None
                else (f"incident {body.incident_id!r} is not open")
            )
            raise RefusedError(409, f"{which} on service {service_id!r}")
        return _json(wire.Acknowledged(incident_id=_incident_of(result).id))

    async def healthy_service(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        service_id = _service_id(request)
        body = await _read(request, wire.HealthyBody, empty=wire.HealthyBody())
        principal = principal_of(request)
        # A monitor says nothing of who; a person resolving from the console is named.
        by, via = (principal, "console") if principal else (body.by, "api" if body.by else None)
        result = await _ask(ctx, service_id, Healthy(by, via))
        metrics.ALERTS_RECEIVED.labels(source="api", kind="healthy").inc()
        resolved = None
        if result.outcome is Outcome.RESOLVED:
            resolved = _incident_of(result).id
        return _json(wire.MadeHealthy(service_id=service_id, resolved_incident_id=resolved))

    # --- dead letters -----------------------------------------------------------------------

    async def list_dead_letters(self, request: web.Request) -> web.Response:
        problems: list[wire.FieldProblem] = []
        limit = _limit(request.query, problems)
        if problems:
            raise wire.invalid(problems)
        letters = await request.app[CONTEXT].store.dead_letters(limit)
        return _json(wire.DeadLetterList(dead_letters=[views.dead_letter_out(d) for d in letters]))

    async def events(self, request: web.Request) -> web.StreamResponse:
        feed = request.app.get(LIVE)
        if feed is None:
            raise RefusedError(503, "live updates are not served here")
        return await feed.stream(request)

    async def openapi(self, _: web.Request) -> web.Response:
        return web.Response(body=self.document, content_type="application/json")


# --- helpers ---------------------------------------------------------------------------------


async def _every_service(request: web.Request) -> web.StreamResponse:
    """``ServiceList`` of every service, written a chunk at a time as the store reads it.

    Services can number a million, ~100 MiB of JSON: built here whole, it would hold the
    event loop, and every page and escalation behind it. A first read that fails is a
    503; a later one can only cut the answer off, which the client sees as incomplete.
    """
    ctx = request.app[CONTEXT]
    async with contextlib.aclosing(ctx.store.services_listing()) as chunks:
        chunk = await anext(chunks, b"")  # StoreError here: a 503 problem, as elsewhere
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        try:
            await response.prepare(request)
            await response.write(b'{"services":[' + chunk)
            async for chunk in chunks:
                await response.write(b"," + chunk)
            await response.write(b'],"next":null}')
        except StoreError as error:
            _store_failed(request, error)
            # Closing before the chunked body's end tells the client it is incomplete.
            if request.transport is not None:
                request.transport.close()
        except ConnectionResetError:
            # The client left mid-list (a console closed): not pagerd's failure, which
            # the web layer would otherwise log as one, with its traceback.
            log.info("api.client_gone", path=request.path)
    return response


def _team_id(request: web.Request) -> int:
    text = request.match_info["id"]  # digits: the route says so
    # Ids are SQLite integers, at most 19 digits; int() of thousands of digits raised.
    if len(text) > MAX_ID_DIGITS:
        raise RefusedError(404, f"no team with that id: ids have at most {MAX_ID_DIGITS} digits")
    return int(text)


def _policy(
    catalogue: Catalogue, policy_id: str, body: wire.PolicyBody, egress: EgressRule
) -> Policy:
    """The domain policy of a well-typed body; BodyError 422 names each wrong field."""
    problems: list[wire.FieldProblem] = []
    levels: list[escalation.Level] = []
    for i, level in enumerate(body.levels):
        targets = [
            _target(catalogue, target, f"levels[{i}].targets[{j}]", problems, egress)
            for j, target in enumerate(level.targets)
        ]
        if None in targets:
            continue  # reported; a level short of them is not a problem of its own
        default = catalogue.default_ack_timeout_s
        timeout = default if level.ack_timeout_s is None else level.ack_timeout_s
        try:
            levels.append(escalation.Level(tuple(t for t in targets if t), timeout))
        except DomainError as error:
            problems.append(
                wire.FieldProblem(field=f"levels[{i}].{error.field}", problem=error.problem)
            )
    if problems:
        raise wire.invalid(problems)
    try:
        return Policy(policy_id, tuple(levels), body.repeat)
    except DomainError as error:
        raise wire.invalid([wire.FieldProblem(field=error.field, problem=error.problem)]) from None


def _target(
    catalogue: Catalogue,
    target: wire.TargetIn,
    path: str,
    problems: list[wire.FieldProblem],
    egress: EgressRule,
) -> escalation.Target | None:
    """The domain target (a team's named by id, resolved), or None with its problem recorded."""
    if isinstance(target, escalation.WebhookTarget):
        refusal = egress.url_refusal(target.url)
        if refusal is None:
            return target
        problems.append(wire.FieldProblem(field=f"{path}.url", problem=refusal))
        return None
    if isinstance(target, escalation.ScheduleTarget):
        if target.schedule in catalogue.directory.schedules:
            return target
        problem = f"no schedule {target.schedule!r}"
        problems.append(wire.FieldProblem(field=f"{path}.schedule", problem=problem))
        return None
    if not isinstance(target, wire.TeamTargetIn):
        return target  # decoded as the domain's own, which checked itself
    try:
        return escalation.TeamTarget(catalogue.team_name(team_id=target.team_id, team=target.team))
    except (DomainError, InvalidError) as error:
        problems.append(wire.FieldProblem(field=f"{path}.{error.field}", problem=error.problem))
        return None
