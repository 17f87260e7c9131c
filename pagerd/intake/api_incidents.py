"""The API's incidents and alerts: pages of history, one incident whole, and its notes.

Every list is a page after a cursor (``api_pages``), read by index. A note is an event
of the incident's service, decided by its actor like an acknowledgement, so that the
timeline keeps the order in which things happened.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from pagerd.core.domain import Note
from pagerd.core.records import AlertRow, IncidentRow
from pagerd.core.times import rfc3339
from pagerd.intake import api_pages as pages
from pagerd.intake import api_schemas as wire
from pagerd.intake import api_views as views
from pagerd.intake.api_answers import (
    RefusedError,
    ask,
    json_response,
    limit,
    read_body,
    service_id_of,
)
from pagerd.telemetry import metrics
from pagerd.web.auth import principal_of
from pagerd.web.server import CONTEXT

# The alerts an incident's own answer shows; the rest are a page away.
FIRST_ALERTS = 20


class IncidentRoutes:
    """The handlers of the incident and alert routes (``api_schemas.OPERATIONS``)."""

    async def list_incidents(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        query = request.query
        problems: list[wire.FieldProblem] = []
        status = pages.read_choice(query, "status", pages.STATUSES, problems)
        count = limit(query, problems)
        since = pages.read_time(query, "since", problems)
        until = pages.read_time(query, "until", problems)
        before = pages.read_incident_cursor(query, problems)
        if problems:
            raise wire.invalid(problems)
        rows = await ctx.store.list_incidents(
            service_id=query.get("service_id"),
            status=status,
            limit=count,
            before=before,
            since=since,
            until=until,
        )
        last = rows[-1] if len(rows) == count else None
        cursor = None if last is None else pages.incident_cursor(last.incident.opened_at, last.seq)
        incidents = [views.incident_out(row.service_id, row.incident) for row in rows]
        return json_response(wire.IncidentList(incidents=incidents, next=cursor))

    async def get_incident(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        store = ctx.store
        row = await _incident(request)
        incident_id = row.incident.id
        alerts = await store.incident_alerts(incident_id, limit=FIRST_ALERTS)
        rows = await store.notifications(incident_id)
        names = ctx.catalogue.developer_names(n.developer_id for n in rows)
        notifications = [views.notification_out(n, names.get(n.developer_id or 0)) for n in rows]
        # Read in the order things are committed in: the timeline last, so that it holds
        # every event of the state and the outcomes read before it.
        timeline = [
            wire.TimelineEntry(at=rfc3339(at), type=kind, detail=detail)
            for at, kind, detail in await store.timeline(incident_id)
        ]
        brief = views.incident_out(row.service_id, row.incident)
        detail = wire.IncidentDetail(
            **msgspec.structs.asdict(brief),
            alerts=[views.alert_out(alert) for alert in alerts],
            alerts_next=_next_alert(alerts, FIRST_ALERTS),
            timeline=timeline,
            notifications=notifications,
        )
        return json_response(detail)

    async def list_incident_alerts(self, request: web.Request) -> web.Response:
        problems: list[wire.FieldProblem] = []
        count = limit(request.query, problems)
        before = pages.read_seq_cursor(request.query, problems)
        row = await _incident(request)
        if problems:
            raise wire.invalid(problems)
        store = request.app[CONTEXT].store
        alerts = await store.incident_alerts(row.incident.id, limit=count, before=before)
        return _alert_page(alerts, count)

    async def list_alerts(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        service_id = service_id_of(request)
        ctx.catalogue.service(service_id)
        problems: list[wire.FieldProblem] = []
        count = limit(request.query, problems)
        before = pages.read_seq_cursor(request.query, problems)
        if problems:
            raise wire.invalid(problems)
        alerts = await ctx.store.service_alerts(service_id, limit=count, before=before)
        return _alert_page(alerts, count)

    async def add_note(self, request: web.Request) -> web.Response:
        ctx = request.app[CONTEXT]
        row = await _incident(request)
        body = await read_body(request, wire.NoteBody)
        by = principal_of(request) or body.by or "api"
        await ask(ctx, row.service_id, Note(row.incident.id, body.text, by))
        metrics.ALERTS_RECEIVED.labels(source="api", kind="note").inc()
        answer = wire.NoteAdded(incident_id=row.incident.id, text=body.text, by=by)
        return json_response(answer, 201)


async def _incident(request: web.Request) -> IncidentRow:
    """The incident the path names; 404 if there is none."""
    incident_id = request.match_info["id"]
    row = await request.app[CONTEXT].store.incident_row(incident_id)
    if row is None:
        raise RefusedError(404, f"no incident {incident_id!r}")
    return row


def _next_alert(alerts: list[AlertRow], count: int) -> str | None:
    """The cursor after a full page of alerts; None after a short one, the last."""
    return str(alerts[-1].seq) if len(alerts) == count else None


def _alert_page(alerts: list[AlertRow], count: int) -> web.Response:
    page = wire.AlertList(
        alerts=[views.alert_out(a) for a in alerts], next=_next_alert(alerts, count)
    )
    return json_response(page)
