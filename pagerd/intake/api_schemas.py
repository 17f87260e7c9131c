"""The JSON API's bodies as msgspec Structs: decoding, field-by-field problems, OpenAPI.

The same Structs decode request bodies and generate ``/api/v1/openapi.json``, so
the document cannot drift from what the server accepts. msgspec stops at the
first error, so a body that fails is checked again field by field and element by
element (as pagerd.config does for the file) until each problem is named.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from pagerd.core.policy import (
    MAX_ACK_TIMEOUT_S,
    MAX_ALERT_ID_CHARS,
    MAX_MESSAGE_CHARS,
    MAX_REPEAT,
    SERVICE_ID,
    EmailTarget,
    PhoneNumber,
    ScheduleTarget,
    SmsTarget,
    WebhookTarget,
    anchored,
    require_phone_number,
)
from pagerd.core.schedules import MAX_SHIFT_S
from pagerd.core.values import MAX_NOTE_CHARS
from pagerd.intake.openapi import INCIDENT_ID, Operation
from pagerd.wire.explain import JSON, explain

T = TypeVar("T")

MAX_DEPTH = 32
MAX_DEVELOPERS = 1000
MAX_PROBLEMS = 20
MAX_INCIDENTS = 1000
MAX_LAYERS = 100
DEFAULT_TEAM_ALERT = "Too many 5xx!"

_NOT_BLANK = r"\S"

Name = Annotated[str, Meta(min_length=1, max_length=100, pattern=_NOT_BLANK)]
Message = Annotated[str, Meta(min_length=1, max_length=MAX_MESSAGE_CHARS, pattern=_NOT_BLANK)]
AlertId = Annotated[str, Meta(min_length=1, max_length=MAX_ALERT_ID_CHARS)]
ShortText = Annotated[str, Meta(min_length=1, max_length=255)]
NoteText = Annotated[str, Meta(min_length=1, max_length=MAX_NOTE_CHARS, pattern=_NOT_BLANK)]
ServiceId = Annotated[str, Meta(pattern=anchored(SERVICE_ID))]
Timeout = Annotated[float, Meta(gt=0, le=MAX_ACK_TIMEOUT_S)]
Time = Annotated[str, Meta(description="RFC 3339 UTC with milliseconds")]
Instant = Annotated[datetime, Meta(description="RFC 3339, with a UTC offset")]
LocalTime = Annotated[
    datetime, Meta(description="a local wall-clock time without UTC offset: 2026-12-01T09:00:00")
]
Status = Literal["triggered", "acknowledged", "resolved"]
Health = Literal["healthy", "unhealthy"]
Channel = Literal["sms", "email", "webhook"]
Delivery = Literal["pending", "held", "sent", "failed", "cancelled", "skipped"]


class _Body(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of request bodies: an unknown field is an error."""


# --- teams -----------------------------------------------------------------------------------


class TeamName(_Body):
    name: Name


class NewDeveloper(_Body):
    """A developer to add to a team."""

    name: Name
    phone_number: PhoneNumber

    def __post_init__(self) -> None:
        require_phone_number(self.phone_number)


class NewTeam(_Body):
    """A team and its developers, created in one write."""

    team: TeamName
    developers: Annotated[list[NewDeveloper], Meta(min_length=1, max_length=MAX_DEVELOPERS)]


class Team(Struct, kw_only=True):
    id: int
    name: str


class Developer(Struct, kw_only=True):
    id: int
    team_id: int
    name: str
    phone_number: str


class TeamWithDevelopers(Struct, kw_only=True):
    """A team and its developers, in rotation order."""

    team: Team
    developers: list[Developer]
    managed: bool = False  # declared in the config file: read-only here
    next_developer_id: int | None = None  # whom the rotation pages next


class TeamList(Struct, kw_only=True):
    teams: list[TeamWithDevelopers]


class TeamAlert(_Body):
    """Alert a team: its service ``team-{id}`` pages the rotation's next developer."""

    team_id: int
    message: Message = DEFAULT_TEAM_ALERT


class Notified(Struct, kw_only=True):
    developer_id: int
    name: str
    phone_number: str


class TeamAlertAccepted(Struct, kw_only=True):
    """Who was paged; empty when the team's service already had an open incident, or
    is in maintenance (then ``incident_id`` is None)."""

    incident_id: str | None
    service_id: str
    notified: list[Notified]


# --- policies --------------------------------------------------------------------------------


# The targets are the domain's (pagerd.core.policy); a team alone is named here by id too.


class TeamTargetIn(_Body, tag="team", tag_field="type"):
    """One developer of the team, in rotation; name the team by ``team`` or ``team_id``."""

    team: Name | None = None
    team_id: int | None = None


class TeamTargetOut(Struct, kw_only=True, tag="team", tag_field="type"):
    team: str
    team_id: int | None


TargetIn = SmsTarget | EmailTarget | TeamTargetIn | WebhookTarget | ScheduleTarget
TargetOut = SmsTarget | EmailTarget | TeamTargetOut | WebhookTarget | ScheduleTarget


class PolicyLevel(_Body):
    """Targets paged together; ``ack_timeout_s`` defaults to [escalation].ack_timeout_s."""

    targets: Annotated[list[TargetIn], Meta(min_length=1, max_length=100)]
    ack_timeout_s: Timeout | None = None


class PolicyBody(_Body):
    """Levels paged in order, then ``repeat`` more rounds from level 1."""

    levels: Annotated[list[PolicyLevel], Meta(min_length=1, max_length=100)]
    repeat: Annotated[int, Meta(ge=0, le=MAX_REPEAT)] = 0


class LevelOut(Struct, kw_only=True):
    ack_timeout_s: float
    targets: list[TargetOut]


class PolicyOut(Struct, kw_only=True):
    id: str
    repeat: int
    levels: list[LevelOut]
    managed: bool = False  # declared in the config file: read-only here


class PolicyList(Struct, kw_only=True):
    policies: list[PolicyOut]


# --- services and incidents ------------------------------------------------------------------


class ServiceBody(_Body):
    """A service; ``heartbeat_s`` absent keeps the service's interval, null removes it."""

    policy_id: ServiceId
    name: Name | None = None
    heartbeat_s: Timeout | UnsetType | None = UNSET


class IncidentBrief(Struct, kw_only=True):
    id: str
    message: str
    status: Status
    level: int
    opened_at: Time
    acknowledged_at: Time | None


class MaintenanceWindow(Struct, kw_only=True):
    until: Time
    reason: str | None


class ServiceOut(Struct, kw_only=True):
    id: str
    name: str
    policy_id: str
    health: Health
    incident: IncidentBrief | None
    heartbeat_s: float | None = None  # a beat is expected at least this often
    maintenance: MaintenanceWindow | None = None


class ServiceDetail(ServiceOut, kw_only=True):
    """One service, with the integration key a monitor may use in place of a token."""

    integration_key: str


class ServiceList(Struct, kw_only=True):
    """Services; with ``?limit=``, one page of them, unhealthy first, then by id, and
    ``next``, the cursor of the page after it (null after the last)."""

    services: list[ServiceOut]
    next: str | None = None


class ServiceAlert(_Body):
    message: Message
    alert_id: AlertId | None = None


class AlertAccepted(Struct, kw_only=True):
    """The incident the alert belongs to; ``opened`` if this alert opened it. None when
    the service is in maintenance: the alert is recorded on no incident."""

    incident_id: str | None
    opened: bool


class AckBody(_Body):
    """Acknowledge the open incident (only the named one, if ``incident_id`` is given)."""

    incident_id: ShortText | None = None
    by: ShortText | None = None


class Acknowledged(Struct, kw_only=True):
    incident_id: str
    status: Literal["acknowledged"] = "acknowledged"


class HealthyBody(_Body):
    """The service is healthy; ``by`` names who says so, if a person does."""

    by: ShortText | None = None


class MadeHealthy(Struct, kw_only=True):
    service_id: str
    health: Literal["healthy"] = "healthy"
    resolved_incident_id: str | None


class IncidentOut(Struct, kw_only=True):
    id: str
    service_id: str
    message: str
    status: Status
    level: int
    opened_at: Time
    acknowledged_at: Time | None
    acknowledged_by: str | None
    resolved_at: Time | None
    alert_count: int


class IncidentList(Struct, kw_only=True):
    """Incidents newest first; ``next`` is the cursor of the page after it."""

    incidents: list[IncidentOut]
    next: str | None = None


class TimelineEntry(Struct, kw_only=True):
    at: Time
    type: str
    detail: dict[str, Any]


class NotificationOut(Struct, kw_only=True):
    id: str
    channel: Channel
    to: str
    level: int
    status: Delivery
    attempts: int
    last_error: str | None
    developer_id: int | None = None  # paged as a team's or schedule's developer
    name: str | None = None  # that developer's name


class AlertOut(Struct, kw_only=True):
    at: Time
    message: str
    alert_id: str | None
    source: str | None
    incident_id: str | None
    suppressed: bool  # recorded during a maintenance window, on no incident


class AlertList(Struct, kw_only=True):
    """A page of alerts, newest first; ``next`` is the cursor of the page after it."""

    alerts: list[AlertOut]
    next: str | None


class IncidentDetail(IncidentOut, kw_only=True):
    """The incident, its first page of alerts (newest first), timeline and notifications."""

    alerts: list[AlertOut]
    alerts_next: str | None  # the cursor of the next page, at /incidents/{id}/alerts
    timeline: list[TimelineEntry]
    notifications: list[NotificationOut]


class NoteBody(_Body):
    """A note on the incident's timeline; ``by`` defaults to ``api`` (a console session's
    own name is used instead)."""

    text: NoteText
    by: ShortText | None = None


class NoteAdded(Struct, kw_only=True):
    incident_id: str
    type: Literal["incident.note"] = "incident.note"
    text: str
    by: str


class DeadLetterOut(Struct, kw_only=True):
    at: Time
    source: str
    topic: str
    payload: str
    reason: str


class DeadLetterList(Struct, kw_only=True):
    """Events pagerd could not take, newest first."""

    dead_letters: list[DeadLetterOut]


# --- schedules, maintenance, heartbeats (CONTRACT §8) ---------------------------------------


class RotationIn(_Body):
    """A layer: ``developer_ids`` take turns of ``shift_s`` local seconds from ``start``."""

    start: LocalTime
    shift_s: Annotated[int, Meta(gt=0, le=MAX_SHIFT_S)]
    developer_ids: Annotated[list[int], Meta(min_length=1, max_length=MAX_DEVELOPERS)]


class ScheduleBody(_Body):
    """Who of a team is on call when: rotations are layers, a later one wins."""

    team_id: int
    time_zone: Annotated[str, Meta(min_length=1, max_length=100)]
    rotations: Annotated[list[RotationIn], Meta(max_length=MAX_LAYERS)]
    notify_handover: bool = False  # an SMS to each developer as their turn begins


class RotationOut(Struct, kw_only=True):
    start: str  # local wall-clock time
    shift_s: int
    developer_ids: list[int]


class OverrideOut(Struct, kw_only=True):
    id: int
    schedule_id: str
    developer_id: int
    start: Time
    end: Time


class ScheduleOut(Struct, kw_only=True):
    """A schedule, and its overrides that have not ended, in the order they were made."""

    id: str
    team_id: int
    time_zone: str
    rotations: list[RotationOut]
    notify_handover: bool
    managed: bool  # declared in the config file: read-only here (its overrides are not)
    overrides: list[OverrideOut]


class ScheduleList(Struct, kw_only=True):
    schedules: list[ScheduleOut]


class OverrideBody(_Body):
    """During [start, end) ``developer_id`` is on call, whatever the rotations say."""

    developer_id: int
    start: Instant
    end: Instant


class OnCallDeveloper(Struct, kw_only=True):
    id: int
    name: str
    phone_number: str


class OnCallOut(Struct, kw_only=True):
    """Who is on call at ``at`` (null: nobody), until when (null: without end)."""

    schedule_id: str
    at: Time
    developer: OnCallDeveloper | None
    until: Time | None


class MaintenanceBody(_Body):
    """Alerts open no incident and page nobody until ``until``."""

    until: Instant
    reason: Message | None = None


class MaintenanceOut(MaintenanceWindow, kw_only=True):
    service_id: str


class HeartbeatAccepted(Struct, kw_only=True):
    """The beat is taken; the next is due by ``due``."""

    service_id: str
    due: Time


class Problem(Struct, kw_only=True):
    """RFC 9457 problem details; ``errors`` names each invalid field of a 422."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldProblem] | None = None


class FieldProblem(Struct, kw_only=True):
    field: str
    problem: str


# --- decoding --------------------------------------------------------------------------------


class BodyError(Exception):
    """The body is unusable: 400 (not JSON, too deep) or 422 (``problems`` by field)."""

    def __init__(self, status: int, detail: str, problems: Sequence[FieldProblem] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.problems = list(problems)


def invalid(problems: list[FieldProblem]) -> BodyError:
    """The 422 naming each field of ``problems``."""
    shown = problems[:MAX_PROBLEMS]
    detail = "; ".join(f"{p.field}: {p.problem}" for p in shown)
    if len(problems) > len(shown):
        detail += "; and more"
    return BodyError(422, detail, shown)


def parse_json(raw: bytes) -> object:
    """The body as plain JSON values; BodyError 400 if it is not JSON or nests too deep."""
    if not raw.strip():
        raise BodyError(400, "the request needs a JSON body")
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as error:  # includes numbers out of range
        raise BodyError(400, f"malformed JSON: {error}") from None
    except RecursionError:
        raise BodyError(400, f"JSON nests deeper than {MAX_DEPTH} levels") from None
    if _depth(value) > MAX_DEPTH:
        raise BodyError(400, f"JSON nests deeper than {MAX_DEPTH} levels")
    return value


def _depth(value: object) -> int:
    """How many arrays and objects deep ``value`` nests (iterative: depth is what we check)."""
    deepest = 0
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children: Any = item.values() if isinstance(item, dict) else item
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if depth <= MAX_DEPTH:
                stack.extend((child, depth + 1) for child in children)
    return deepest


def decode_body(raw: bytes, tp: type[T], *, empty: T | None = None) -> T:
    """Decode and check a request body; BodyError names what is wrong.

    ``empty`` is the value of an empty body, where the body is optional.
    """
    if empty is not None and not raw.strip():
        return empty
    value = parse_json(raw)
    try:
        return msgspec.convert(value, tp)
    except msgspec.ValidationError:
        found = explain(value, tp, JSON, limit=MAX_PROBLEMS + 1)
        raise invalid([FieldProblem(field=p.field, problem=p.problem) for p in found]) from None


# The API's routes: add_api_routes routes each to the _Api method of its name.
_BODY = (400, 413, 422)
_STATUSES = {"enum": ["open", *typing.get_args(Status)]}
_LIMIT = {"name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_INCIDENTS}}
_CURSOR = {"type": "string", "description": "the next cursor of an earlier page"}
_TIME = {"type": "string", "format": "date-time"}
OPERATIONS = (
    Operation("POST", "/teams", "create_team", "Create a team, its developers and its service",
              {201: (TeamWithDevelopers, "created, with ids")}, NewTeam,
              problems=(*_BODY, 409, 503)),
    Operation("GET", "/teams", "list_teams", "Every team", {200: (TeamList, "the teams")}),
    Operation("GET", r"/teams/{id:\d+}", "get_team", "One team",
              {200: (TeamWithDevelopers, "the team")}, problems=(404,)),
    Operation("POST", r"/teams/{id:\d+}/developers", "add_developer",
              "Add a developer to the team's rotation", {201: (Developer, "added")},
              NewDeveloper, problems=(*_BODY, 404, 409, 503)),
    Operation("POST", "/alerts", "alert_team", "Alert a team: page its next developer",
              {202: (TeamAlertAccepted, "committed; who was paged")}, TeamAlert,
              problems=(*_BODY, 404, 503)),
    Operation("GET", "/policies", "list_policies", "Every escalation policy",
              {200: (PolicyList, "the policies")}),
    Operation("PUT", "/policies/{id}", "put_policy", "Create or replace a policy",
              {200: (PolicyOut, "replaced"), 201: (PolicyOut, "created")}, PolicyBody,
              problems=(*_BODY, 409, 503)),
    Operation("GET", "/policies/{id}", "get_policy", "One policy",
              {200: (PolicyOut, "the policy")}, problems=(404,)),
    Operation("DELETE", "/policies/{id}", "delete_policy", "Delete a policy no service uses",
              {204: (None, "deleted")}, problems=(404, 409, 503)),
    Operation("GET", "/services", "list_services",
              "Services, their health and incident: all, or a page of them",
              {200: (ServiceList, "the services")}, problems=(422,),
              query=({**_LIMIT, "description": "one page of this many, unhealthy first; else all"},
                     {"name": "after", "schema": _CURSOR},
                     {"name": "health", "schema": {"enum": ["unhealthy", "healthy"]}},
                     {"name": "q", "schema": {"type": "string", "maxLength": 100},
                      "description": "text in the id or name"})),
    Operation("PUT", "/services/{id}", "put_service", "Create or change a service",
              {200: (ServiceDetail, "changed"), 201: (ServiceDetail, "created")}, ServiceBody,
              problems=(*_BODY, 409, 503)),
    Operation("GET", "/services/{id}", "get_service",
              "One service, its health, incident and integration key",
              {200: (ServiceDetail, "the service")}, problems=(404, 503)),
    Operation("POST", "/services/{id}/integration-key", "replace_integration_key",
              "Give the service a new integration key; the old one stops working at once",
              {200: (ServiceDetail, "the service with its new key")}, problems=(404, 503)),
    Operation("POST", "/services/{id}/alerts", "alert_service", "Alert a service",
              {202: (AlertAccepted, "committed")}, ServiceAlert, problems=(*_BODY, 404, 503)),
    Operation("POST", "/services/{id}/ack", "ack_service", "Acknowledge its open incident",
              {200: (Acknowledged, "acknowledged, now or before")}, AckBody,
              body_required=False, problems=(*_BODY, 404, 409, 503)),
    Operation("POST", "/services/{id}/healthy", "healthy_service",
              "The service is healthy: resolve its open incident",
              {200: (MadeHealthy, "healthy")}, HealthyBody, body_required=False,
              problems=(*_BODY, 404, 503)),
    Operation("GET", "/services/{id}/alerts", "list_alerts",
              "The service's alerts, newest first, a page at a time",
              {200: (AlertList, "a page of alerts")}, problems=(404, 422),
              query=(_LIMIT, {"name": "after", "schema": _CURSOR})),
    Operation("GET", "/incidents", "list_incidents", "Incidents, newest first, a page at a time",
              {200: (IncidentList, "the incidents")}, problems=(422,),
              query=({"name": "service_id", "schema": {"type": "string"}},
                     {"name": "status", "schema": _STATUSES,
                      "description": "open is triggered or acknowledged"},
                     {"name": "since", "schema": _TIME, "description": "opened at or after"},
                     {"name": "until", "schema": _TIME, "description": "opened before"},
                     _LIMIT,
                     {"name": "after", "schema": _CURSOR})),
    Operation("GET", "/incidents/{id}", "get_incident",
              "One incident: its first alerts, timeline and notifications",
              {200: (IncidentDetail, "the incident")}, problems=(404,), id_schema=INCIDENT_ID),
    Operation("GET", "/incidents/{id}/alerts", "list_incident_alerts",
              "The incident's alerts, newest first, a page at a time",
              {200: (AlertList, "a page of alerts")}, problems=(404, 422), id_schema=INCIDENT_ID,
              query=(_LIMIT, {"name": "after", "schema": _CURSOR})),
    Operation("POST", "/incidents/{id}/notes", "add_note", "Write a note on the incident",
              {201: (NoteAdded, "committed to the timeline")}, NoteBody,
              problems=(*_BODY, 404, 503), id_schema=INCIDENT_ID),
    Operation("GET", "/dead-letters", "list_dead_letters",
              "Events pagerd could not take, kept for an operator, newest first",
              {200: (DeadLetterList, "the dead letters")}, problems=(422,),
              query=({"name": "limit", "schema": {"type": "integer", "minimum": 1,
                                                  "maximum": MAX_INCIDENTS}},)),
    Operation("POST", "/services/{id}/maintenance", "start_maintenance",
              "Put the service in maintenance: its alerts open no incident",
              {201: (MaintenanceOut, "the window")}, MaintenanceBody,
              problems=(*_BODY, 404, 409, 503)),
    Operation("DELETE", "/services/{id}/maintenance", "end_maintenance",
              "End the service's maintenance window", {204: (None, "ended, or there was none")},
              problems=(404, 409, 503)),
    Operation("POST", "/services/{id}/heartbeat", "heartbeat", "A heartbeat of the service",
              {202: (HeartbeatAccepted, "taken")}, problems=(404, 409, 503)),
    Operation("GET", "/schedules", "list_schedules", "Every schedule",
              {200: (ScheduleList, "the schedules")}),
    Operation("PUT", "/schedules/{id}", "put_schedule", "Create or replace a schedule",
              {200: (ScheduleOut, "replaced"), 201: (ScheduleOut, "created")}, ScheduleBody,
              problems=(*_BODY, 409, 503)),
    Operation("GET", "/schedules/{id}", "get_schedule", "One schedule",
              {200: (ScheduleOut, "the schedule")}, problems=(404,)),
    Operation("DELETE", "/schedules/{id}", "delete_schedule",
              "Delete a schedule no policy pages, with its overrides",
              {204: (None, "deleted")}, problems=(404, 409, 503)),
    Operation("POST", "/schedules/{id}/overrides", "add_override",
              "Put a developer on call for a span, whatever the rotations say",
              {201: (OverrideOut, "created; the most recently created override wins")},
              OverrideBody, problems=(*_BODY, 404, 503)),
    Operation("DELETE", r"/schedules/{id}/overrides/{override_id:\d+}", "delete_override",
              "Delete an override", {204: (None, "deleted")}, problems=(404, 503)),
    Operation("GET", "/schedules/{id}/oncall", "on_call", "Who is on call at an instant",
              {200: (OnCallOut, "who, and until when")}, problems=(404, 422),
              query=({"name": "at", "schema": {"type": "string", "format": "date-time"}},)),
    Operation("GET", "/events", "events",
              "Live updates: service and timeline events as Server-Sent Events",
              {200: (None, ("text/event-stream: event service (health and open incident),"
                            " event timeline (an incident's event, as on MQTT) and event"
                            " oncall (a schedule's on-call, as on MQTT)"))},
              problems=(503,)),
    Operation("GET", "/openapi.json", "openapi", "This document", {200: (None, "OpenAPI 3.1")}),
)  # fmt: skip
