"""The JSON API under ``/api/v1`` (CONTRACT §4).

Alerts, acknowledgements and healthy events go to the service's actor through
``ask`` and are answered once committed: the API never writes incidents itself.
Teams, policies and services are written to the store first and then into the
runtime's Directory, which actors read at every step, so an edit takes effect
from the next step. Those writes take one lock, so that a check (a policy in
use, a team's developer count) still holds when its write commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import typing
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TypeVar, assert_never, cast

import msgspec
from aiohttp import web

from pagerd import __version__
from pagerd.config import Config
from pagerd.core import policy as domain
from pagerd.core.domain import Ack, Alert, Event, Healthy, Incident, Outcome
from pagerd.core.policy import DomainError, Policy
from pagerd.core.records import (
    DeveloperRow,
    OutboxRow,
    PolicyRow,
    ServiceRow,
    StoreError,
    TeamRow,
    WriteBatch,
)
from pagerd.core.times import rfc3339
from pagerd.intake import api_schemas as wire
from pagerd.runtime.answers import Committed, Refused, Retryable
from pagerd.runtime.directory import Directory, team_policy, team_service_id
from pagerd.runtime.ids import new_incident_id
from pagerd.telemetry import metrics
from pagerd.telemetry.logs import get_logger
from pagerd.web.server import CONTEXT, PROBLEM_JSON, WebContext, problem

log = get_logger(__name__)

B = TypeVar("B")
BASE = "/api/v1"
MAX_INCIDENTS = wire.MAX_INCIDENTS
_PHONE = re.compile(r"\+?[0-9]{6,15}")
_PHONE_PROBLEM = "must be a phone number: an optional + and 6 to 15 digits"
_TEAM_SERVICE = re.compile(r"team-([1-9][0-9]*)")
_TITLES = {
    400: "Bad Request",
    404: "Not Found",
    409: "Conflict",
    422: "Unprocessable Content",
    503: "Service Unavailable",
}
MANAGED = "managed by config file"


def _custom_policy_key(team_id: int) -> str:
    # Set when PUT /api/v1/policies/team-{id} replaces the team's own policy: from then
    # on, adding a developer no longer rewrites it.
    return f"team_policy_custom:{team_id}"


class RefusedError(Exception):
    """A request the API turns down, answered as a problem."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _answering(handler: Handler) -> Handler:
    """Turn refusals, body errors and store failures into problems."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except wire.BodyError as error:
            _count_refusal(request, error.status, error.detail)
            return _problem(error.status, error.detail, error.problems or None)
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


NAMED_USERS = 10  # services a 409 names when a policy in use cannot be deleted


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(value), content_type="application/json"
    )


async def _read(request: web.Request, tp: type[B], *, empty: B | None = None) -> B:
    # aiohttp raises 413 past client_max_size; web's middleware makes it a problem.
    return wire.decode_body(await request.read(), tp, empty=empty)


def add_api_routes(app: web.Application, *, config: Config) -> None:
    """Add the ``/api/v1`` routes; handlers find runtime, store and clock in ``app[CONTEXT]``."""
    api = _Api(config)
    for op in wire.OPERATIONS:
        handler: Handler = getattr(api, op.name)
        app.router.add_route(op.method, BASE + op.path, _answering(handler))


class _Api:
    def __init__(self, config: Config) -> None:
        self.default_timeout_s = config.escalation.ack_timeout_s
        self.fallback_policy = config.routing.fallback_policy
        self.writes = asyncio.Lock()
        self.document = msgspec.json.encode(wire.openapi_document(wire.OPERATIONS, __version__))

    # --- teams -------------------------------------------------------------------------------

    async def create_team(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        body = await _read(request, wire.NewTeam)
        _check_phones(body.developers, "developers")
        directory = ctx.runtime.directory
        name = body.team.name
        # Reserved before any await: a second create of the same name is a 409 at once.
        team_id = directory.reserve_team(name)
        if team_id is None:
            raise RefusedError(409, f"team name {name!r} is taken")
        ids = directory.reserve_developer_ids(len(body.developers))
        try:
            team = TeamRow(team_id, name, managed=False, cursor=0)
            developers = tuple(
                DeveloperRow(i, team_id, d.name, d.phone_number)
                for i, d in zip(ids, body.developers, strict=True)
            )
            async with self.writes:
                services, policies = await self._team_service(ctx, team, len(developers))
                batch = WriteBatch(
                    teams=(team,), developers=developers, services=services, policies=policies
                )
                await _write(ctx, batch)
                directory.put_team(team)
                directory.add_developers(developers)
                _apply(directory, services, policies)
        finally:
            directory.release_team(name, team_id)
            directory.release_developer_ids(ids)
        log.info("team.created", team_id=team_id, developers=len(developers))
        return _json(_team_out(team, developers), 201)

    async def list_teams(self, request: web.Request) -> web.Response:
        directory = request.app[CONTEXT].runtime.directory
        teams = [
            _team_out(team, directory.developers.get(team.id, ()))
            for team in sorted(directory.teams.values(), key=lambda t: t.id)
        ]
        return _json(wire.TeamList(teams=teams))

    async def get_team(self, request: web.Request) -> web.Response:
        directory = request.app[CONTEXT].runtime.directory
        team = _team(directory, request)
        return _json(_team_out(team, directory.developers.get(team.id, ())))

    async def add_developer(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        directory = ctx.runtime.directory
        team = _team(directory, request)
        if team.managed:
            raise RefusedError(409, f"team {team.name!r} is {MANAGED}")
        body = await _read(request, wire.NewDeveloper)
        _check_phones([body], "")
        async with self.writes:
            (developer_id,) = directory.reserve_developer_ids(1)
            try:
                developer = DeveloperRow(developer_id, team.id, body.name, body.phone_number)
                count = len(directory.developers.get(team.id, ())) + 1
                services, policies = await self._team_service(ctx, team, count)
                batch = WriteBatch(developers=(developer,), services=services, policies=policies)
                await _write(ctx, batch)
                directory.add_developers((developer,))
                _apply(directory, services, policies)
            finally:
                directory.release_developer_ids((developer_id,))
        log.info("developer.added", team_id=team.id, developer_id=developer_id)
        return _json(_developer_out(developer), 201)

    async def alert_team(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        body = await _read(request, wire.TeamAlert)
        directory = ctx.runtime.directory
        team = directory.teams.get(body.team_id)
        if team is None:
            raise RefusedError(404, f"no team with id {body.team_id}")
        service_id = team_service_id(team.id)
        if directory.policy_for(service_id) is None:
            # A team from the config file gets its service at its first alert.
            async with self.writes:
                count = len(directory.developers.get(team.id, ()))
                services, policies = await self._team_service(ctx, team, count)
                if services or policies:
                    await _write(ctx, WriteBatch(services=services, policies=policies))
                    _apply(directory, services, policies)
        result = await _ask(ctx, service_id, Alert(body.message, new_incident_id(), source="api"))
        metrics.ALERTS_RECEIVED.labels(source="api", kind="alert").inc()
        names = {d.id: d.name for d in directory.developers.get(team.id, ())}
        notified = [
            wire.Notified(
                developer_id=row.developer_id,
                name=names.get(row.developer_id, ""),
                phone_number=row.recipient,
            )
            for row in result.notified
            if row.developer_id is not None
        ]
        incident = _incident_of(result)
        answer = wire.TeamAlertAccepted(
            incident_id=incident.id, service_id=service_id, notified=notified
        )
        return _json(answer, 202)

    async def _team_service(
        self, ctx: WebContext, team: TeamRow, developers: int
    ) -> tuple[tuple[ServiceRow, ...], tuple[PolicyRow, ...]]:
        """The rows that make or bring up to date the team's own service and policy."""
        directory = ctx.runtime.directory
        service_id = team_service_id(team.id)
        services: tuple[ServiceRow, ...] = ()
        if service_id not in directory.services:
            services = (ServiceRow(service_id, team.name, service_id, managed=False),)
        derived = team_policy(team.id, team.name, developers, self.default_timeout_s)
        existing = directory.policies.get(service_id)
        if existing is not None and (
            existing.managed
            or existing.policy == derived
            or await ctx.store.get_meta(_custom_policy_key(team.id)) is not None
        ):
            return services, ()
        return services, (PolicyRow(derived, managed=False),)

    # --- policies ----------------------------------------------------------------------------

    async def list_policies(self, request: web.Request) -> web.Response:
        directory = request.app[CONTEXT].runtime.directory
        rows = sorted(directory.policies.values(), key=lambda r: r.policy.id)
        return _json(wire.PolicyList(policies=[_policy_out(directory, r.policy) for r in rows]))

    async def get_policy(self, request: web.Request) -> web.Response:
        directory = request.app[CONTEXT].runtime.directory
        row = directory.policies.get(request.match_info["id"])
        if row is None:
            raise RefusedError(404, f"no policy {request.match_info['id']!r}")
        return _json(_policy_out(directory, row.policy))

    async def put_policy(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        directory = ctx.runtime.directory
        policy_id = _new_id(request)
        _refuse_managed(directory.policies.get(policy_id), f"policy {policy_id!r}")
        body = await _read(request, wire.PolicyBody)
        policy = self._policy(directory, policy_id, body)
        team = _TEAM_SERVICE.fullmatch(policy_id)
        meta = () if team is None else ((_custom_policy_key(int(team.group(1))), "1"),)
        async with self.writes:
            existing = directory.policies.get(policy_id)
            _refuse_managed(existing, f"policy {policy_id!r}")
            row = PolicyRow(policy, managed=False)
            await _write(ctx, WriteBatch(policies=(row,), meta=meta))
            directory.policies[policy_id] = row
        log.info("policy.saved", policy_id=policy_id, created=existing is None)
        return _json(_policy_out(directory, policy), 201 if existing is None else 200)

    async def delete_policy(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        directory = ctx.runtime.directory
        policy_id = request.match_info["id"]
        async with self.writes:
            row = directory.policies.get(policy_id)
            if row is None:
                raise RefusedError(404, f"no policy {policy_id!r}")
            _refuse_managed(row, f"policy {policy_id!r}")
            users = directory.services.using(policy_id, limit=NAMED_USERS + 1)
            if users:
                named = ", ".join(users[:NAMED_USERS])
                more = " and more" if len(users) > NAMED_USERS else ""
                raise RefusedError(409, f"policy {policy_id!r} is in use by services {named}{more}")
            if policy_id == self.fallback_policy:
                raise RefusedError(409, f"policy {policy_id!r} is [routing] fallback_policy")
            await _write(ctx, WriteBatch(policies_deleted=(policy_id,)))
            del directory.policies[policy_id]
        log.info("policy.deleted", policy_id=policy_id)
        return web.Response(status=204)

    def _policy(self, directory: Directory, policy_id: str, body: wire.PolicyBody) -> Policy:
        """The domain policy of a well-typed body; BodyError 422 names each wrong field."""
        problems: list[wire.FieldProblem] = []
        levels: list[domain.Level] = []
        for i, level in enumerate(body.levels):
            targets = [
                _target(directory, target, f"levels[{i}].targets[{j}]", problems)
                for j, target in enumerate(level.targets)
            ]
            if None in targets:
                continue  # reported; a level short of them is not a problem of its own
            timeout = self.default_timeout_s if level.ack_timeout_s is None else level.ack_timeout_s
            try:
                levels.append(domain.Level(tuple(t for t in targets if t), timeout))
            except DomainError as error:
                problems.append(
                    wire.FieldProblem(field=f"levels[{i}].{error.field}", problem=error.problem)
                )
        if problems:
            raise wire.invalid(problems)
        try:
            policy = Policy(policy_id, tuple(levels), body.repeat)
        except DomainError as error:
            raise wire.invalid(
                [wire.FieldProblem(field=error.field, problem=error.problem)]
            ) from None
        return policy

    # --- services ----------------------------------------------------------------------------

    async def list_services(self, request: web.Request) -> web.StreamResponse:
        """``ServiceList``, written a chunk at a time as the store reads it.

        Services can number a million; their listing is ~100 MiB of JSON, which the
        console asks for every 2 s. Built here whole, it held the event loop (and every
        page and escalation behind it) for 13 s. A first read that fails is a 503;
        a later one can only cut the answer off, which the client sees as incomplete.
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
                await response.write(b"]}")
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

    async def get_service(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        service_id = request.match_info["id"]
        row = ctx.runtime.directory.services.get(service_id)
        if row is None:
            raise RefusedError(404, f"no service {service_id!r}")
        return _json(_service_out(ctx, row))

    async def put_service(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        directory = ctx.runtime.directory
        service_id = _new_id(request)
        _refuse_managed(directory.services.get(service_id), f"service {service_id!r}")
        body = await _read(request, wire.ServiceBody)
        async with self.writes:
            existing = directory.services.get(service_id)
            _refuse_managed(existing, f"service {service_id!r}")
            if body.policy_id not in directory.policies:
                why = f"no policy {body.policy_id!r}"
                raise wire.invalid([wire.FieldProblem(field="policy_id", problem=why)])
            name = body.name or (service_id if existing is None else existing.name)
            row = ServiceRow(service_id, name, body.policy_id, managed=False)
            await _write(ctx, WriteBatch(services=(row,)))
            directory.services.put(row)
        log.info("service.saved", service_id=service_id, created=existing is None)
        return _json(_service_out(ctx, row), 201 if existing is None else 200)

    async def alert_service(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        service_id = _service_id(request)
        body = await _read(request, wire.ServiceAlert)
        event = Alert(body.message, new_incident_id(), alert_id=body.alert_id, source="api")
        result = await _ask(ctx, service_id, event)
        metrics.ALERTS_RECEIVED.labels(source="api", kind="alert").inc()
        incident = _incident_of(result)
        opened = result.outcome is Outcome.OPENED
        return _json(wire.AlertAccepted(incident_id=incident.id, opened=opened), 202)

    async def ack_service(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        service_id = _service_id(request)
        body = await _read(request, wire.AckBody, empty=wire.AckBody())
        result = await _ask(ctx, service_id, Ack(body.incident_id, body.by or "api"))
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
        await _read(request, wire.HealthyBody, empty=wire.HealthyBody())
        result = await _ask(ctx, service_id, Healthy())
        metrics.ALERTS_RECEIVED.labels(source="api", kind="healthy").inc()
        resolved = None
        if result.outcome is Outcome.RESOLVED:
            resolved = _incident_of(result).id
        return _json(wire.MadeHealthy(service_id=service_id, resolved_incident_id=resolved))

    # --- incidents ---------------------------------------------------------------------------

    async def list_incidents(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        query = request.query
        problems: list[wire.FieldProblem] = []
        status = query.get("status")
        statuses = typing.get_args(wire.Status)
        if status is not None and status not in statuses:
            problems.append(
                wire.FieldProblem(field="status", problem=f"must be one of {', '.join(statuses)}")
            )
        limit = 100
        if "limit" in query:
            text = query["limit"]
            if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_INCIDENTS:
                limit = int(text)
            else:
                problems.append(
                    wire.FieldProblem(
                        field="limit", problem=f"must be an integer 1..{MAX_INCIDENTS}"
                    )
                )
        if problems:
            raise wire.invalid(problems)
        rows = await ctx.store.list_incidents(
            service_id=query.get("service_id"), status=status, limit=limit
        )
        return _json(wire.IncidentList(incidents=[_incident_out(s, i) for s, i in rows]))

    async def get_incident(self, request: web.Request) -> web.Response:
        store = request.app[CONTEXT].store
        incident_id = request.match_info["id"]
        found = await store.get_incident(incident_id)
        if found is None:
            raise RefusedError(404, f"no incident {incident_id!r}")
        service_id, incident = found
        timeline = [
            wire.TimelineEntry(at=rfc3339(at), type=kind, detail=detail)
            for at, kind, detail in await store.timeline(incident_id)
        ]
        notifications = [_notification_out(row) for row in await store.notifications(incident_id)]
        brief = _incident_out(service_id, incident)
        detail = wire.IncidentDetail(
            **msgspec.structs.asdict(brief), timeline=timeline, notifications=notifications
        )
        return _json(detail)

    async def openapi(self, _: web.Request) -> web.Response:
        return web.Response(body=self.document, content_type="application/json")


# --- helpers ---------------------------------------------------------------------------------


async def _ask(ctx: WebContext, service_id: str, event: Event) -> Committed:
    """Hand the event to the runtime; the answer once committed, else a refusal."""
    answer = await ctx.runtime.ask(service_id, event)
    match answer:
        case Committed():
            return answer
        case Refused(code="unknown_service", reason=reason):
            raise RefusedError(404, reason)
        case Refused(reason=reason):
            raise RefusedError(409, reason)
        case Retryable(reason=reason):
            log.warning("api.not_committed", service_id=service_id, error=reason)
            raise RefusedError(503, f"not saved ({reason}); sending it again is harmless")
        case _:
            assert_never(answer)


async def _write(ctx: WebContext, batch: WriteBatch) -> None:
    try:
        await ctx.store.write(batch)
    except StoreError as error:
        log.error("api.write_failed", error=str(error))  # noqa: TRY400 - no traceback to add
        raise RefusedError(503, "the change was not saved; try again") from None


def _apply(
    directory: Directory, services: Iterable[ServiceRow], policies: Iterable[PolicyRow]
) -> None:
    for policy in policies:
        directory.policies[policy.policy.id] = policy
    for service in services:
        directory.services.put(service)


def _refuse_managed(row: PolicyRow | ServiceRow | None, what: str) -> None:
    if row is not None and row.managed:
        raise RefusedError(409, f"{what} is {MANAGED}")


def _new_id(request: web.Request) -> str:
    """The id in the path of a PUT, which must be a valid id."""
    value = request.match_info["id"]
    try:
        return domain.validate_service_id(value, "id")
    except DomainError as error:
        raise wire.invalid([wire.FieldProblem(field=error.field, problem=error.problem)]) from None


def _service_id(request: web.Request) -> str:
    service_id = request.match_info["id"]
    if not domain.SERVICE_ID_PATTERN.fullmatch(service_id):
        raise RefusedError(404, f"no service {service_id!r}: ids match [A-Za-z0-9._-]{{1,128}}")
    return service_id


def _team(directory: Directory, request: web.Request) -> TeamRow:
    team_id = int(request.match_info["id"])
    team = directory.teams.get(team_id)
    if team is None:
        raise RefusedError(404, f"no team with id {team_id}")
    return team


def _check_phones(developers: Iterable[wire.NewDeveloper], path: str) -> None:
    # The schema's pattern ends in $, which in Python also accepts a final newline.
    problems = [
        wire.FieldProblem(
            field=f"{path}[{i}].phone_number" if path else "phone_number",
            problem=_PHONE_PROBLEM,
        )
        for i, d in enumerate(developers)
        if not _PHONE.fullmatch(d.phone_number)
    ]
    if problems:
        raise wire.invalid(problems)


def _target(
    directory: Directory, target: wire.Target, path: str, problems: list[wire.FieldProblem]
) -> domain.Target | None:
    """The domain target, or None with its problems recorded."""
    try:
        match target:
            case wire.SmsTarget(phone_number=phone):
                return _sms_target(phone)
            case wire.EmailTarget(address=address):
                return domain.EmailTarget(address)
            case wire.WebhookTarget(url=url):
                return domain.WebhookTarget(url)
            case wire.TeamTarget():
                return domain.TeamTarget(_team_name(directory, target))
            case _:
                assert_never(target)
    except DomainError as error:
        problems.append(wire.FieldProblem(field=f"{path}.{error.field}", problem=error.problem))
        return None


def _sms_target(phone: str) -> domain.SmsTarget:
    if not _PHONE.fullmatch(phone):
        raise DomainError("phone_number", _PHONE_PROBLEM)
    return domain.SmsTarget(phone)


def _team_name(directory: Directory, target: wire.TeamTarget) -> str:
    """The name of the team a target names by ``team_id`` or ``team``; DomainError if none."""
    if target.team_id is not None:
        team = directory.teams.get(target.team_id)
        if team is None:
            raise DomainError("team_id", f"no team with id {target.team_id}")
        if target.team is not None and target.team != team.name:
            raise DomainError("team", f"is not the name of team {target.team_id} ({team.name!r})")
        return team.name
    if target.team is None:
        raise DomainError("team", "is required: name the team by team or team_id")
    if target.team not in directory.team_ids:
        raise DomainError("team", f"no team named {target.team!r}")
    return target.team


# --- answers ---------------------------------------------------------------------------------


def _developer_out(row: DeveloperRow) -> wire.Developer:
    return wire.Developer(
        id=row.id, team_id=row.team_id, name=row.name, phone_number=row.phone_number
    )


def _team_out(team: TeamRow, developers: Iterable[DeveloperRow]) -> wire.TeamWithDevelopers:
    members = list(developers)
    return wire.TeamWithDevelopers(
        team=wire.Team(id=team.id, name=team.name),
        developers=[_developer_out(d) for d in members],
        managed=team.managed,
        next_developer_id=members[team.cursor % len(members)].id if members else None,
    )


def _policy_out(directory: Directory, policy: Policy) -> wire.PolicyOut:
    levels = [
        wire.LevelOut(
            ack_timeout_s=level.ack_timeout_s,
            targets=[_target_out(directory, t) for t in level.targets],
        )
        for level in policy.levels
    ]
    row = directory.policies.get(policy.id)
    managed = row is not None and row.managed
    return wire.PolicyOut(id=policy.id, repeat=policy.repeat, levels=levels, managed=managed)


def _target_out(directory: Directory, target: domain.Target) -> wire.Target:
    match target:
        case domain.SmsTarget(phone_number=phone):
            return wire.SmsTarget(phone_number=phone)
        case domain.EmailTarget(address=address):
            return wire.EmailTarget(address=address)
        case domain.WebhookTarget(url=url):
            return wire.WebhookTarget(url=url)
        case domain.TeamTarget(team=team):
            return wire.TeamTarget(team=team, team_id=directory.team_ids.get(team))
        case _:
            assert_never(target)


def _service_out(ctx: WebContext, row: ServiceRow) -> wire.ServiceOut:
    incident = ctx.runtime.open_incident(row.id)
    brief = None
    if incident is not None:
        brief = wire.IncidentBrief(
            id=incident.id,
            message=incident.message,
            status=incident.status.value,
            level=incident.level,
            opened_at=rfc3339(incident.opened_at),
            acknowledged_at=_time(incident.acknowledged_at),
        )
    return wire.ServiceOut(
        id=row.id,
        name=row.name,
        policy_id=row.policy_id,
        health="healthy" if incident is None else "unhealthy",
        incident=brief,
    )


def _incident_of(answer: Committed) -> Incident:
    assert answer.incident is not None  # alerts and acks that succeed name their incident
    return answer.incident


def _incident_out(service_id: str, incident: Incident) -> wire.IncidentOut:
    return wire.IncidentOut(
        id=incident.id,
        service_id=service_id,
        message=incident.message,
        status=incident.status.value,
        level=incident.level,
        opened_at=rfc3339(incident.opened_at),
        acknowledged_at=_time(incident.acknowledged_at),
        acknowledged_by=incident.acknowledged_by,
        resolved_at=_time(incident.resolved_at),
        alert_count=incident.alert_count,
    )


def _notification_out(row: OutboxRow) -> wire.NotificationOut:
    return wire.NotificationOut(
        id=row.id,
        # The store's CHECK constraints allow these values only.
        channel=cast(wire.Channel, row.channel),
        to=row.recipient,
        level=row.level,
        status=cast(wire.Delivery, row.status),
        attempts=row.attempts,
        last_error=row.last_error,
    )


def _time(at: datetime | None) -> str | None:
    return None if at is None else rfc3339(at)
