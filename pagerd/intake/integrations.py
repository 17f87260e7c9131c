"""Monitoring tools' webhooks under ``/integrations``, translated into alert/ack/healthy.

Each integration is a thin translation at the edge: parse the tool's payload into
the events MQTT and the API produce, post them through ``pagerd.web.ask``, and
answer only once they are committed. The tools retry 5xx and not 4xx, so 4xx means
"this will never be accepted" and 503 means "not committed, send it again" (which
is harmless: every event carries an alert id, and a repeated one changes nothing).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeVar, assert_never

import aiohttp
import msgspec
from aiohttp import web

from pagerd.config import Config
from pagerd.core.domain import (
    Ack,
    AckTimeout,
    Alert,
    Beat,
    BeatMissed,
    EndMaintenance,
    Event,
    Healthy,
    Incident,
    LevelFailed,
    MaintenanceOver,
    Note,
    StartMaintenance,
    Watch,
)
from pagerd.core.policy import (
    MAX_ALERT_ID_CHARS,
    MAX_MESSAGE_CHARS,
    SERVICE_ID,
    SERVICE_ID_PATTERN,
)
from pagerd.intake.api_schemas import BodyError, parse_json
from pagerd.intake.sns import (
    NOTIFICATION,
    SUBSCRIPTION_CONFIRMATION,
    UNSUBSCRIBE_CONFIRMATION,
    CertificateUnavailableError,
    MalformedEnvelopeError,
    SignatureRejectedError,
    SnsEnvelope,
    SnsVerifier,
    parse_envelope,
)
from pagerd.runtime.answers import Committed, Refused, Retryable
from pagerd.runtime.ids import new_incident_id
from pagerd.runtime.router import Runtime
from pagerd.telemetry import metrics
from pagerd.telemetry.logs import get_logger
from pagerd.web.auth import AUTHENTICATED, PAGERDUTY_ENQUEUE, refuse
from pagerd.web.server import CONTEXT, problem, unauthorized

log = get_logger(__name__)
T = TypeVar("T")

RETRY_AFTER_S = "5"
PD_SEVERITIES = ("critical", "error", "warning", "info")
PdAction = Literal["trigger", "acknowledge", "resolve"]
_PD_ACTIONS: dict[str, PdAction] = {a: a for a in ("trigger", "acknowledge", "resolve")}


class Invalid(Exception):  # noqa: N818 - the verdict on the input, as mqtt.Rejected
    """Input an integration refuses: 400 malformed JSON, 422 fields; ``code`` labels the metric."""

    def __init__(self, status: int, detail: str, code: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code


class NotCommittedError(Exception):
    """The events were not committed (or not in time): the sender should retry."""


class UnknownServiceError(LookupError):
    """No such service, and an event of this kind does not register one."""


def decode(body: bytes, schema: type[T], what: str) -> T:
    """``body`` as ``schema``: Invalid 400 if it is not JSON, 422 if it does not fit."""
    # Two steps, because msgspec reports a type error before it reaches broken JSON; the
    # first also refuses nesting past the API's depth limit (a 400, which senders do not
    # retry, where the recursion it took was a 500).
    try:
        raw = parse_json(body)
    except BodyError as error:
        raise Invalid(400, error.detail, "malformed") from None
    try:
        return msgspec.convert(raw, schema)
    except msgspec.ValidationError as error:
        raise Invalid(422, f"the payload does not fit {what}: {error}", "schema") from None


def fit_message(text: str) -> str:
    """``text`` stripped and cut to what an alert message may hold (PagerDuty cuts too)."""
    text = text.strip()
    if len(text) > MAX_MESSAGE_CHARS:
        return text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def _alert(message: str, alert_id: str, source: str) -> Alert:
    return Alert(
        message=fit_message(message),
        new_incident_id=new_incident_id(),
        alert_id=alert_id[:MAX_ALERT_ID_CHARS],
        source=source,
    )


# --- PagerDuty Events API v2 (pure) ------------------------------------------------------


class PdPayload(msgspec.Struct, frozen=True):
    summary: str = ""
    source: str = ""
    severity: str = ""


class PdEvent(msgspec.Struct, frozen=True):
    """An Events API v2 event; the fields pagerd does not use (links, images...) are ignored."""

    routing_key: str = ""
    event_action: str = ""
    dedup_key: str | None = None
    payload: PdPayload | None = None


@dataclass(frozen=True, slots=True)
class PdCommand:
    """A valid event: ``alert`` is set for a trigger."""

    routing_key: str  # a service id (with a token) or a service's integration key
    action: PdAction
    dedup_key: str
    alert: Alert | None = None


class PdInvalid(Exception):  # noqa: N818 - PagerDuty's own name: "invalid event"
    """An event PagerDuty would refuse; ``errors`` in its words."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def parse_pagerduty(body: bytes) -> PdCommand:
    """Validate an Events API v2 body as PagerDuty does; PdInvalid lists every error."""
    try:
        event = decode(body, PdEvent, "the Events API v2 schema")
    except Invalid as invalid:
        raise PdInvalid([invalid.detail]) from None
    errors: list[str] = []
    if not event.routing_key:
        errors.append("'routing_key' is missing or blank")
    elif not SERVICE_ID_PATTERN.fullmatch(event.routing_key):
        errors.append(
            f"Invalid routing key: it is a service's integration key, or a pagerd service id"
            f" ({SERVICE_ID}) with an API token"
        )
    action = _PD_ACTIONS.get(event.event_action)
    if not event.event_action:
        errors.append("'event_action' is missing or blank")
    elif action is None:
        errors.append("'event_action' is invalid (must be trigger, acknowledge or resolve)")
    dedup_key = event.dedup_key
    if dedup_key is not None and not 1 <= len(dedup_key) <= MAX_ALERT_ID_CHARS:
        errors.append(f"'dedup_key' must be 1..{MAX_ALERT_ID_CHARS} characters")
    elif dedup_key is None and action in ("acknowledge", "resolve"):
        errors.append(f"'dedup_key' is required to {action}")
    payload = event.payload or PdPayload()
    if action == "trigger":
        for name, value in (
            ("summary", payload.summary),
            ("source", payload.source),
            ("severity", payload.severity),
        ):
            if not value.strip():
                errors.append(f"'payload.{name}' is missing or blank")
        if payload.severity.strip() and payload.severity not in PD_SEVERITIES:
            errors.append(f"'payload.severity' is invalid (must be {', '.join(PD_SEVERITIES)})")
    if errors or action is None:
        raise PdInvalid(errors)
    if action != "trigger":
        assert dedup_key is not None  # required above
        return PdCommand(event.routing_key, action, dedup_key)
    # Like PagerDuty: a trigger without a key gets one, returned so the sender can resolve.
    key = dedup_key or uuid.uuid4().hex
    alert = _alert(payload.summary, key, payload.source.strip())
    return PdCommand(event.routing_key, action, key, alert)


# --- Alertmanager and Grafana webhooks (pure) ----------------------------------------------


class GroupedAlert(msgspec.Struct, frozen=True, rename="camel"):
    status: Literal["firing", "resolved"]
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    annotations: dict[str, str] = msgspec.field(default_factory=dict)
    starts_at: str = ""
    fingerprint: str = ""


class AlertGroup(msgspec.Struct, frozen=True):
    """Alertmanager's webhook (v4) and Grafana's: what pagerd reads of them; the rest is ignored."""

    alerts: tuple[GroupedAlert, ...]


def alert_group_events(body: bytes, *, source: str) -> tuple[Alert, ...] | Healthy:
    """One Alert per firing alert; Healthy if every alert of the group is resolved."""
    group = decode(body, AlertGroup, "the webhook schema")
    if not group.alerts:
        raise Invalid(422, "alerts: must not be empty", "schema")
    firing = [a for a in group.alerts if a.status == "firing"]
    if not firing:
        return Healthy()
    return tuple(_alert(_grouped_message(a, source), _grouped_alert_id(a), source) for a in firing)


def _grouped_message(alert: GroupedAlert, source: str) -> str:
    for text in (
        alert.annotations.get("summary"),
        alert.annotations.get("description"),
        alert.labels.get("alertname"),
    ):
        if text and text.strip():
            return text
    return f"alert from {source}"


def _grouped_alert_id(alert: GroupedAlert) -> str:
    # startsAt is part of it: an alert firing again after it resolved is a new alert.
    fingerprint = alert.fingerprint or _labels_fingerprint(alert.labels)
    return f"{fingerprint}:{alert.starts_at}"


def _labels_fingerprint(labels: dict[str, str]) -> str:
    canonical = json.dumps(labels, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


# --- CloudWatch alarms (pure) --------------------------------------------------------------


class CloudWatchAlarm(msgspec.Struct, frozen=True, rename="pascal"):
    alarm_name: str
    new_state_value: str
    new_state_reason: str = ""


def cloudwatch_event(message: str) -> Alert | Healthy | None:
    """ALARM alerts, OK is healthy, INSUFFICIENT_DATA is None (nothing to do)."""
    try:
        alarm = msgspec.convert(parse_json(message.encode()), CloudWatchAlarm)
    except BodyError as error:
        raise Invalid(422, f"Message is not a CloudWatch alarm: {error.detail}", "schema") from None
    except msgspec.ValidationError as error:
        raise Invalid(422, f"Message is not a CloudWatch alarm: {error}", "schema") from None
    name = alarm.alarm_name.strip()
    if not name:
        raise Invalid(422, "Message is not a CloudWatch alarm: AlarmName is blank", "schema")
    match alarm.new_state_value:
        case "ALARM":
            reason = alarm.new_state_reason.strip()
            return _alert(f"{name}: {reason}" if reason else name, name, "cloudwatch")
        case "OK":
            return Healthy()
        case "INSUFFICIENT_DATA":
            return None
        case other:
            raise Invalid(
                422, f"NewStateValue {other!r} is not ALARM, OK or INSUFFICIENT_DATA", "schema"
            )


# --- committing ------------------------------------------------------------------------------


def _kind(event: Event) -> str:
    match event:
        case Alert():
            return "alert"
        case Ack():
            return "ack"
        case Healthy():
            return "healthy"
        case AckTimeout() | LevelFailed() | MaintenanceOver() | BeatMissed():
            return "timeout"
        case StartMaintenance() | EndMaintenance():
            return "maintenance"
        case Beat() | Watch():
            return "heartbeat"
        case Note():
            return "note"
        case _:
            assert_never(event)


async def commit(
    runtime: Runtime, service_id: str, events: Sequence[Event], *, source: str
) -> list[Committed]:
    """Hand ``events`` to the runtime in order; return once all are committed.

    Raises UnknownServiceError, or NotCommittedError if any was not committed (a
    service without a policy included: the tool retries until the operator mends it).
    """
    # gather starts its tasks in order, so the events reach the mailbox in order, and
    # the actor commits them together.
    answers = await asyncio.gather(*(runtime.ask(service_id, event) for event in events))
    committed: list[Committed] = []
    for answer in answers:
        match answer:
            case Committed():
                committed.append(answer)
            case Refused(code="unknown_service"):
                raise UnknownServiceError(answer.reason)
            case Refused(reason=reason) | Retryable(reason=reason):
                raise NotCommittedError(reason)
            case _:
                assert_never(answer)
    for event in events:
        metrics.ALERTS_RECEIVED.labels(source=source, kind=_kind(event)).inc()
    return committed


def _accepts(runtime: Runtime, service_id: str, *, alert: bool) -> bool:
    """Whether an event for ``service_id`` would be taken (an alert may register it)."""
    if not SERVICE_ID_PATTERN.fullmatch(service_id):
        return False
    return runtime.accepts(service_id, _ANY_ALERT if alert else Healthy())


_ANY_ALERT = Alert("any", "any")  # what accepts() asks about: an event of this kind


def _reject(source: str, status: int, detail: str, code: str) -> web.Response:
    metrics.ALERTS_REJECTED.labels(source=source, reason=code).inc()
    log.info("integration.rejected", source=source, reason=code, detail=detail)
    title = {400: "Bad Request", 403: "Forbidden", 404: "Not Found"}.get(
        status, "Unprocessable Content"
    )
    return problem(status, title, detail)


def _unknown_service(source: str, service_id: str) -> web.Response:
    return _reject(source, 404, f"unknown service {service_id!r}", "unknown_service")


def _not_committed(source: str, service_id: str, why: str) -> web.Response:
    log.warning("integration.not_committed", source=source, service_id=service_id, error=why)
    detail = f"not committed ({why}); send it again"
    return problem(503, "Service Unavailable", detail, headers={"Retry-After": RETRY_AFTER_S})


def _summary(service_id: str, results: list[Committed]) -> web.Response:
    incident = next((r.incident for r in reversed(results) if r.incident is not None), None)
    return web.json_response(
        {
            "service_id": service_id,
            "incident_id": None if incident is None else incident.id,
            "outcomes": [r.outcome.value for r in results],
        }
    )


# --- handlers --------------------------------------------------------------------------------


def _pd_invalid(errors: list[str]) -> web.Response:
    metrics.ALERTS_REJECTED.labels(source="pagerduty", reason="invalid").inc()
    log.info("integration.rejected", source="pagerduty", reason="invalid", detail=errors)
    body = {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
    return web.json_response(body, status=400)


def _no_such_routing_key(routing_key: str) -> str:
    return f"Invalid routing key: no service {routing_key!r}, nor a service's integration key"


def _pd_accepted(dedup_key: str) -> web.Response:
    body = {"status": "success", "message": "Event processed", "dedup_key": dedup_key}
    return web.json_response(body, status=202)


async def _pagerduty(request: web.Request) -> web.StreamResponse:
    runtime = request.app[CONTEXT].runtime
    body = await request.read()
    try:
        command = parse_pagerduty(body)
    except PdInvalid as invalid:
        # Only a sender with a credential learns what is wrong with its event.
        if not request[AUTHENTICATED] and not await _keyed(request, _routing_key_of(body)):
            return refuse(request, _NO_CREDENTIAL, unauthorized)
        return _pd_invalid(invalid.errors)
    service_id = await _routed_service(request, command)
    if service_id is None:
        if not request[AUTHENTICATED]:
            return refuse(request, _NO_CREDENTIAL, unauthorized)
        # PagerDuty answers an unknown routing key with 400 "invalid event": clients such
        # as Alertmanager log its errors and do not retry, which is right for a wrong key.
        return _pd_invalid([_no_such_routing_key(command.routing_key)])
    event: Event
    match command.action:
        case "trigger":
            assert command.alert is not None
            event = command.alert
        case "acknowledge" | "resolve":
            # As PagerDuty: an acknowledge or resolve acts only on an open alert with this
            # dedup_key, so one sender's resolve cannot end an incident it did not raise.
            incident = runtime.open_incident(service_id)
            if incident is None or not await _raised(request, incident, command.dedup_key):
                log.info(
                    "pagerduty.no_open_alert",
                    service_id=service_id,
                    action=command.action,
                    dedup_key=command.dedup_key,
                )
                return _pd_accepted(command.dedup_key)
            if command.action == "acknowledge":
                event = Ack(incident_id=incident.id, by="pagerduty")
            else:
                event = Healthy()
        case _:
            assert_never(command.action)
    try:
        await commit(runtime, service_id, [event], source="pagerduty")
    except UnknownServiceError:
        return _pd_invalid([_no_such_routing_key(command.routing_key)])
    except NotCommittedError as error:
        return _not_committed("pagerduty", service_id, str(error))
    return _pd_accepted(command.dedup_key)


_NO_CREDENTIAL = "no token, and the routing_key is no service's integration key"


class _Routed(msgspec.Struct):
    routing_key: str = ""


def _routing_key_of(body: bytes) -> str:
    """The routing_key of an event that is otherwise invalid, if it has one."""
    try:
        return msgspec.json.decode(body, type=_Routed).routing_key
    except (msgspec.DecodeError, msgspec.ValidationError):
        return ""


async def _keyed(request: web.Request, routing_key: str) -> bool:
    if not routing_key:
        return False
    return await request.app[CONTEXT].store.service_of_integration_key(routing_key) is not None


async def _routed_service(request: web.Request, command: PdCommand) -> str | None:
    """The service a PagerDuty event is for: with a token, the service its routing_key
    names (an alert may register it); else, or if none, the one whose integration key
    the routing_key is. None if neither."""
    runtime = request.app[CONTEXT].runtime
    key = command.routing_key
    if request[AUTHENTICATED] and runtime.accepts(key, Healthy()):
        return key
    if (keyed := await request.app[CONTEXT].store.service_of_integration_key(key)) is not None:
        return keyed
    if request[AUTHENTICATED] and _accepts(runtime, key, alert=command.alert is not None):
        return key
    return None


async def _raised(request: web.Request, incident: Incident, alert_id: str) -> bool:
    """Whether ``incident`` has an alert ``alert_id``: remembered, or else recorded."""
    if alert_id in incident.alert_ids:
        return True
    return await request.app[CONTEXT].store.has_alert(incident.id, alert_id)


async def _alert_group(request: web.Request, source: str) -> web.Response:
    runtime = request.app[CONTEXT].runtime
    service_id = request.match_info["service_id"]
    try:
        found = alert_group_events(await request.read(), source=source)
    except Invalid as invalid:
        return _reject(source, invalid.status, invalid.detail, invalid.code)
    events: tuple[Event, ...] = (found,) if isinstance(found, Healthy) else found
    if not _accepts(runtime, service_id, alert=not isinstance(found, Healthy)):
        return _unknown_service(source, service_id)
    try:
        results = await commit(runtime, service_id, events, source=source)
    except UnknownServiceError:
        return _unknown_service(source, service_id)
    except NotCommittedError as error:
        return _not_committed(source, service_id, str(error))
    return _summary(service_id, results)


async def _alertmanager(request: web.Request) -> web.Response:
    return await _alert_group(request, "alertmanager")


async def _grafana(request: web.Request) -> web.Response:
    return await _alert_group(request, "grafana")


@dataclass(frozen=True, slots=True)
class _Sns:
    verifier: SnsVerifier
    confirm_subscriptions: bool


_SNS = web.AppKey("pagerd.integrations.sns", _Sns)


async def _cloudwatch(request: web.Request) -> web.Response:
    runtime = request.app[CONTEXT].runtime
    sns = request.app[_SNS]
    service_id = request.match_info["service_id"]
    try:
        envelope = parse_envelope(await request.read())
    except MalformedEnvelopeError as error:
        return _reject("cloudwatch", 400, str(error), "malformed")
    # Only an alarm could register a service; a subscription is for a service we know.
    if not _accepts(runtime, service_id, alert=True):
        return _unknown_service("cloudwatch", service_id)
    try:
        await sns.verifier.verify(envelope)
    except SignatureRejectedError as error:
        log.warning("sns.signature_rejected", service_id=service_id, reason=str(error))
        return _reject("cloudwatch", 403, f"SNS signature rejected: {error}", "signature")
    except MalformedEnvelopeError as error:
        return _reject("cloudwatch", 400, str(error), "malformed")
    except CertificateUnavailableError as error:
        return _not_committed("cloudwatch", service_id, str(error))
    if envelope.type == NOTIFICATION:
        return await _sns_notification(runtime, service_id, envelope)
    if envelope.type == SUBSCRIPTION_CONFIRMATION:
        return await _sns_subscription(sns, service_id, envelope)
    assert envelope.type == UNSUBSCRIBE_CONFIRMATION  # the only other type that verifies
    log.info("sns.unsubscribed", service_id=service_id, topic_arn=envelope.topic_arn)
    return web.json_response({"status": "unsubscribed"})


async def _sns_notification(
    runtime: Runtime, service_id: str, envelope: SnsEnvelope
) -> web.Response:
    try:
        event = cloudwatch_event(envelope.message)
    except Invalid as invalid:
        return _reject("cloudwatch", invalid.status, invalid.detail, invalid.code)
    if event is None:
        log.info("cloudwatch.insufficient_data", service_id=service_id)
        return web.json_response({"service_id": service_id, "incident_id": None, "outcomes": []})
    try:
        results = await commit(runtime, service_id, [event], source="cloudwatch")
    except UnknownServiceError:
        return _unknown_service("cloudwatch", service_id)
    except NotCommittedError as error:
        return _not_committed("cloudwatch", service_id, str(error))
    return _summary(service_id, results)


async def _sns_subscription(sns: _Sns, service_id: str, envelope: SnsEnvelope) -> web.Response:
    url = envelope.subscribe_url or ""
    log.info(
        "sns.subscription_confirmation",
        service_id=service_id,
        topic_arn=envelope.topic_arn,
        subscribe_url=url,
        confirming=sns.confirm_subscriptions,
    )
    if not sns.confirm_subscriptions:
        # The operator confirms by opening the logged SubscribeURL.
        return web.json_response({"status": "subscription_logged", "subscribe_url": url})
    try:
        await sns.verifier.confirm(url)
    except (aiohttp.ClientError, TimeoutError) as error:
        return _not_committed("cloudwatch", service_id, f"confirming the subscription: {error!r}")
    log.info("sns.subscription_confirmed", service_id=service_id, topic_arn=envelope.topic_arn)
    return web.json_response({"status": "subscription_confirmed"})


def add_integration_routes(app: web.Application, *, config: Config) -> None:
    """Add the ``/integrations`` routes; handlers find runtime and store in ``app[CONTEXT]``."""
    settings = config.integrations
    app[_SNS] = _Sns(
        SnsVerifier(settings.sns_cert_url_pattern),
        confirm_subscriptions=settings.sns_confirm_subscriptions,
    )

    async def close(app: web.Application) -> None:
        await app[_SNS].verifier.close()

    app.on_cleanup.append(close)
    app.router.add_post(PAGERDUTY_ENQUEUE, _pagerduty)
    app.router.add_post("/integrations/alertmanager/{service_id}", _alertmanager)
    app.router.add_post("/integrations/grafana/{service_id}", _grafana)
    app.router.add_post("/integrations/cloudwatch/{service_id}", _cloudwatch)
