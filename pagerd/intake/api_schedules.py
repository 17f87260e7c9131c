"""The JSON API of CONTRACT §8: schedules and overrides, maintenance windows, heartbeats,
and a service's alerts.

Schedules are changed through the catalogue's schedule book; maintenance windows and
heartbeats are events of the service's actor, answered once committed (a beat that
changes nothing has nothing to commit, and is answered at once).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from aiohttp import web

from pagerd.core.domain import Beat, EndMaintenance, StartMaintenance
from pagerd.core.policy import DomainError
from pagerd.core.schedules import Override, Rotation, Schedule, instant
from pagerd.core.times import rfc3339
from pagerd.intake import api_schemas as wire
from pagerd.intake import api_views as views
from pagerd.intake.api_answers import (
    MAX_ID_DIGITS,
    RefusedError,
    ask,
    json_response,
    new_id,
    read_body,
    service_id_of,
)
from pagerd.runtime.schedule_book import ScheduleBook
from pagerd.telemetry import metrics
from pagerd.web.server import CONTEXT

# A window longer than this is more likely a mistake (a year for a month) than a plan.
MAX_MAINTENANCE = timedelta(days=366)


class ScheduleRoutes:
    """The handlers of CONTRACT §8's routes (``api_schemas.OPERATIONS`` names them)."""

    # --- schedules ---------------------------------------------------------------------------

    async def list_schedules(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        book = ctx.catalogue.schedules
        now = ctx.clock.now()
        schedules = [
            views.schedule_out(row, _current(book, row.id, now)) for row in book.schedules()
        ]
        return json_response(wire.ScheduleList(schedules=schedules))

    async def get_schedule(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        book = ctx.catalogue.schedules
        row = book.schedule(request.match_info["id"])
        return json_response(views.schedule_out(row, _current(book, row.id, ctx.clock.now())))

    async def put_schedule(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        book = ctx.catalogue.schedules
        schedule_id = new_id(request)
        book.refuse_managed(schedule_id)
        body = await read_body(request, wire.ScheduleBody)
        schedule = _schedule(book, body)
        row, created = await book.put(schedule_id, schedule, notify_handover=body.notify_handover)
        answer = views.schedule_out(row, _current(book, row.id, ctx.clock.now()))
        return json_response(answer, 201 if created else 200)

    async def delete_schedule(self, request: web.Request) -> web.Response:
        await request.app[CONTEXT].catalogue.schedules.delete(request.match_info["id"])
        return web.Response(status=204)

    async def add_override(self, request: web.Request) -> web.Response:
        book = request.app[CONTEXT].catalogue.schedules
        schedule_id = request.match_info["id"]
        book.schedule(schedule_id)  # 404 before the body's 422
        body = await read_body(request, wire.OverrideBody)
        override = await book.add_override(schedule_id, body.developer_id, body.start, body.end)
        return json_response(views.override_out(schedule_id, override), 201)

    async def delete_override(self, request: web.Request) -> web.Response:
        book = request.app[CONTEXT].catalogue.schedules
        schedule_id, digits = request.match_info["id"], request.match_info["override_id"]
        # Digits only (the route says so), but int() of thousands of them raises.
        if len(digits) > MAX_ID_DIGITS:
            why = f"no such override: ids have at most {MAX_ID_DIGITS} digits"
            raise RefusedError(404, f"schedule {schedule_id!r} has {why}")
        await book.delete_override(schedule_id, int(digits))
        return web.Response(status=204)

    async def on_call(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        book = ctx.catalogue.schedules
        schedule_id = request.match_info["id"]
        book.schedule(schedule_id)
        at = _instant(request.query.get("at"), "at") or ctx.clock.now()
        try:
            answer, developer = book.on_call(schedule_id, at)
        except DomainError as error:  # outside the years a schedule answers for
            raise _invalid("at", error.problem) from None
        return json_response(
            wire.OnCallOut(
                schedule_id=schedule_id,
                at=rfc3339(at),
                developer=None
                if developer is None
                else wire.OnCallDeveloper(
                    id=developer.id, name=developer.name, phone_number=developer.phone_number
                ),
                until=views.time_or_none(answer.until),
            )
        )

    # --- maintenance and heartbeats ----------------------------------------------------------

    async def start_maintenance(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        service_id = service_id_of(request)
        ctx.catalogue.service(service_id)  # 404 before the body's 422
        body = await read_body(request, wire.MaintenanceBody)
        now = ctx.clock.now()
        until = _instant_value(body.until, "until")
        if until <= now:
            raise _invalid("until", f"must be in the future, got {rfc3339(until)}")
        if until > now + MAX_MAINTENANCE:
            raise _invalid("until", f"must be within {MAX_MAINTENANCE.days} days from now")
        await ask(ctx, service_id, StartMaintenance(until, body.reason))
        metrics.ALERTS_RECEIVED.labels(source="api", kind="maintenance").inc()
        answer = wire.MaintenanceOut(
            service_id=service_id, until=rfc3339(until), reason=body.reason
        )
        return json_response(answer, 201)

    async def end_maintenance(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        service_id = service_id_of(request)
        ctx.catalogue.service(service_id)
        await ask(ctx, service_id, EndMaintenance())
        metrics.ALERTS_RECEIVED.labels(source="api", kind="maintenance").inc()
        return web.Response(status=204)

    async def heartbeat(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        service_id = service_id_of(request)
        # Any body is taken, as any MQTT payload is: a beat says only "still here".
        await ask(ctx, service_id, Beat())
        metrics.ALERTS_RECEIVED.labels(source="api", kind="heartbeat").inc()
        row = ctx.catalogue.service(service_id)
        interval = timedelta(seconds=row.heartbeat_s or 0)
        due = rfc3339(ctx.clock.now() + interval)
        return json_response(wire.HeartbeatAccepted(service_id=service_id, due=due), 202)


def _current(book: ScheduleBook, schedule_id: str, now: datetime) -> list[Override]:
    """The schedule's overrides that have not ended, in the order they were made."""
    return [o for o in book.overrides(schedule_id) if o.end > now]


def _schedule(book: ScheduleBook, body: wire.ScheduleBody) -> Schedule:
    """The domain schedule of a well-typed body; BodyError 422 names each wrong field."""
    problems = [
        wire.FieldProblem(field=where, problem=problem)
        for where, problem in book.problems(body.team_id, [r.developer_ids for r in body.rotations])
    ]
    rotations = tuple(Rotation(r.start, r.shift_s, tuple(r.developer_ids)) for r in body.rotations)
    try:
        schedule = Schedule(body.team_id, body.time_zone, rotations)
    except DomainError as error:
        problems.append(wire.FieldProblem(field=error.field, problem=error.problem))
    if problems:
        raise wire.invalid(problems)
    return schedule


# A "+" left unescaped in a query string arrives as a space: "...T10:00:00 01:00".
_UNESCAPED_PLUS = re.compile(r" (\d\d:\d\d)$")


def _instant(text: str | None, field: str) -> datetime | None:
    """A query parameter's RFC 3339 time with a UTC offset, in UTC; None if absent."""
    if text is None:
        return None
    text = _UNESCAPED_PLUS.sub(r"+\1", text)
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(field, f"must be an RFC 3339 time with a UTC offset, got {text!r}") from None
    return _instant_value(value, field)


def _instant_value(value: datetime, field: str) -> datetime:
    """``value`` in UTC if it has a UTC offset and lies within the years schedules know."""
    try:
        return instant(value, field)
    except DomainError as error:
        raise _invalid(field, error.problem) from None


def _invalid(field: str, problem: str) -> wire.BodyError:
    """The 422 of one wrong field."""
    return wire.invalid([wire.FieldProblem(field=field, problem=problem)])
