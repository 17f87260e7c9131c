"""The /integrations webhooks over a real socket, with a real Store and Runtime behind them.

Each test sends what the tool sends (PagerDuty Events API v2, Alertmanager and
Grafana webhooks, SNS deliveries of CloudWatch alarms) and checks the effect where
it lands: incidents and alerts in the database, pages released to the outbox.
SNS messages are signed here with a key of our own, whose certificate a local
server serves; only the test's config admits that server's URL.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from pagerd.config import Config, IntegrationsConfig
from pagerd.core.domain import Incident, IncidentStatus
from pagerd.core.policy import Level, Policy, SmsTarget
from pagerd.core.records import PolicyRow, ServiceRow, WriteBatch
from pagerd.intake.api import add_api_routes
from pagerd.intake.integrations import add_integration_routes
from pagerd.runtime.router import Runtime
from pagerd.store.sqlite import Store
from pagerd.web.acklinks import AckLinks
from tests import assembly as assembling
from tests.doubles import Recorder

TOKEN = "integrations-test-token-Qy4tG7wE2r"
POLICY = Policy("p", (Level((SmsTarget("+15550000001"),), 3600.0),))
SERVICES = ("api", "db")
PD_PATH = "/integrations/pagerduty/v2/enqueue"


# --- an SNS stand-in: signing key, certificate server, subscription endpoint ---------------


def _self_signed() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.test.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM)


# The fields each type signs, in order (AWS SNS documentation), written out independently
# of pagerd.sns so the test checks that module against the documented format.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}


@dataclass
class Sns:
    """Signs envelopes as SNS does and serves the certificate; counts what is fetched."""

    key: rsa.RSAPrivateKey
    pem: bytes
    runner: web.AppRunner | None = None
    base: str = ""
    cert_fetches: int = 0
    confirmations: list[str] = field(default_factory=list)

    @property
    def cert_url(self) -> str:
        return f"{self.base}/SimpleNotificationService-test.pem"

    @property
    def cert_url_pattern(self) -> str:
        return "^" + re.escape(self.base) + r"/[^?#]*\.pem$"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/SimpleNotificationService-test.pem", self._cert)
        app.router.add_get("/confirm", self._confirm)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _cert(self, _: web.Request) -> web.Response:
        self.cert_fetches += 1
        return web.Response(body=self.pem, content_type="application/x-x509-ca-cert")

    async def _confirm(self, request: web.Request) -> web.Response:
        self.confirmations.append(request.query["Token"])
        return web.Response(text="<ConfirmSubscriptionResponse/>", content_type="text/xml")

    def sign(self, envelope: dict[str, str], version: str = "1") -> dict[str, str]:
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()
        canonical = "".join(
            f"{name}\n{envelope[name]}\n"
            for name in SIGNED_FIELDS[envelope["Type"]]
            if name in envelope
        )
        signature = self.key.sign(canonical.encode(), padding.PKCS1v15(), algorithm)
        return envelope | {
            "SignatureVersion": version,
            "Signature": base64.b64encode(signature).decode(),
            "SigningCertURL": self.cert_url,
        }

    def notification(
        self, alarm: dict[str, Any], version: str = "1", timestamp: str | None = None
    ) -> dict[str, str]:
        envelope = {
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:alarms",
            "Subject": f'ALARM: "{alarm["AlarmName"]}" in EU (Ireland)',
            "Message": json.dumps(alarm),
            "Timestamp": timestamp or sns_time(),
            "UnsubscribeURL": f"{self.base}/unsubscribe",
        }
        return self.sign(envelope, version)

    def confirmation(self, token: str = "tok-123") -> dict[str, str]:
        envelope = {
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": token,
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:alarms",
            "Message": "You have chosen to subscribe to the topic ...",
            "SubscribeURL": f"{self.base}/confirm?Action=ConfirmSubscription&Token={token}",
            "Timestamp": sns_time(),
        }
        return self.sign(envelope)


def sns_time(ago: timedelta = timedelta(0)) -> str:
    """An SNS Timestamp ``ago`` before now, as SNS writes it."""
    at = datetime.now(UTC) - ago
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alarm(name: str, state: str, reason: str = "Threshold Crossed: 5xx > 10") -> dict[str, Any]:
    return {
        "AlarmName": name,
        "AlarmDescription": None,
        "AWSAccountId": "123456789012",
        "NewStateValue": state,
        "NewStateReason": reason,
        "StateChangeTime": "2026-11-22T10:00:00.000+0000",
        "Region": "EU (Ireland)",
        "OldStateValue": "OK",
        "Trigger": {"MetricName": "5XXError", "Threshold": 10.0},
    }


@pytest.fixture
async def sns() -> AsyncIterator[Sns]:
    key, pem = _self_signed()
    stand_in = Sns(key, pem)
    await stand_in.start()
    yield stand_in
    await stand_in.stop()


# --- pagerd's HTTP side ----------------------------------------------------------------------


@dataclass
class Site:
    base: str
    http: aiohttp.ClientSession
    runtime: Runtime
    store: Store
    outbox: Recorder

    async def post(
        self, path: str, body: Any, *, raw: bytes | None = None, text_plain: bool = False
    ) -> tuple[int, Any]:
        data = raw if raw is not None else json.dumps(body).encode()
        content_type = "text/plain; charset=UTF-8" if text_plain else "application/json"
        async with self.http.post(
            self.base + path, data=data, headers={"Content-Type": content_type}
        ) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def incidents(self, service_id: str) -> list[Incident]:
        await self.runtime.drained()
        return [row.incident for row in await self.store.list_incidents(service_id=service_id)]

    async def alerts(self, service_id: str) -> int:
        await self.runtime.drained()
        rows = await self.store._fetch(
            "SELECT count(*) FROM alerts WHERE service_id = ?", (service_id,)
        )
        return int(rows[0][0])

    async def alert_ids(self, incident_id: str) -> set[str]:
        found = await self.store.get_incident(incident_id)
        assert found is not None
        return set(found[1].alert_ids)


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, integrations: IntegrationsConfig) -> AsyncIterator[Site]:
    """pagerd's application with the integration and API routes, on a free loopback port."""
    store = await Store.open(tmp_path / "pagerd.db")
    await store.write(
        WriteBatch(
            policies=(PolicyRow(POLICY, managed=True),),
            services=tuple(ServiceRow(s, s.upper(), "p", managed=True) for s in SERVICES),
        )
    )
    async with assembling.assembled(store) as assembly:
        app = assembling.web_app(
            assembly, links=AckLinks(bytes(range(32)), "https://pg.example.com"), tokens=(TOKEN,)
        )
        add_integration_routes(app, config=Config(integrations=integrations))
        add_api_routes(app)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with (
            assembling.serving(app) as base,
            aiohttp.ClientSession(headers=headers) as http,
        ):
            yield Site(base, http, assembly.runtime, store, assembly.recorder)
    await store.close()


@pytest.fixture
async def site(tmp_path: Path, sns: Sns) -> AsyncIterator[Site]:
    integrations = IntegrationsConfig(sns_cert_url_pattern=sns.cert_url_pattern)
    async with serving(tmp_path, integrations) as served:
        yield served


# --- authentication ----------------------------------------------------------------------


async def test_integrations_need_a_token_by_header_or_key(site: Site) -> None:
    body = pd_trigger("api", "disk full", dedup_key="k1")
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.post(site.base + PD_PATH, json=body) as response:
            assert response.status == 401
        async with anonymous.post(f"{site.base}{PD_PATH}?key={TOKEN}", json=body) as response:
            assert response.status == 202
    assert [i.message for i in await site.incidents("api")] == ["disk full"]


# --- PagerDuty Events API v2 -------------------------------------------------------------


def pd_trigger(
    routing_key: str, summary: str, *, dedup_key: str | None = None, **payload: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "payload": {"summary": summary, "source": "web-01", "severity": "critical"} | payload,
        "client": "Sample Monitoring Service",  # unknown to pagerd: ignored
        "links": [{"href": "https://example.com", "text": "runbook"}],
    }
    if dedup_key is not None:
        body["dedup_key"] = dedup_key
    return body


def pd_event(routing_key: str, action: str, dedup_key: str) -> dict[str, Any]:
    return {"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key}


async def test_pagerduty_trigger_pages_and_answers_like_pagerduty(site: Site) -> None:
    status, body = await site.post(PD_PATH, pd_trigger("api", "5xx rate high", dedup_key="k-1"))

    assert status == 202
    assert body == {"status": "success", "message": "Event processed", "dedup_key": "k-1"}
    [incident] = await site.incidents("api")
    assert (incident.message, incident.status) == ("5xx rate high", IncidentStatus.TRIGGERED)
    assert await site.alert_ids(incident.id) == {"k-1"}
    assert [page.recipient for page in site.outbox.pages] == ["+15550000001"]


async def test_pagerduty_trigger_without_dedup_key_gets_one_that_resolves(site: Site) -> None:
    status, body = await site.post(PD_PATH, pd_trigger("api", "queue stuck"))
    assert status == 202
    key = body["dedup_key"]
    assert re.fullmatch(r"[0-9a-f]{32}", key)

    status, body = await site.post(PD_PATH, pd_event("api", "resolve", key))

    assert (status, body["dedup_key"]) == (202, key)
    [incident] = await site.incidents("api")
    assert incident.status is IncidentStatus.RESOLVED


async def test_pagerduty_repeated_dedup_key_changes_nothing_and_a_new_one_appends(
    site: Site,
) -> None:
    for _ in range(2):
        status, _ = await site.post(PD_PATH, pd_trigger("api", "disk 91%", dedup_key="disk"))
        assert status == 202
    assert await site.alerts("api") == 1

    status, _ = await site.post(PD_PATH, pd_trigger("api", "cpu 99%", dedup_key="cpu"))

    assert status == 202
    [incident] = await site.incidents("api")
    assert await site.alert_ids(incident.id) == {"disk", "cpu"}
    assert incident.message == "disk 91%"
    assert len(site.outbox.pages) == 1  # paged once, for the incident


async def test_pagerduty_acknowledge_acts_only_with_a_recorded_dedup_key(site: Site) -> None:
    await site.post(PD_PATH, pd_trigger("api", "latency", dedup_key="lat"))

    status, body = await site.post(PD_PATH, pd_event("api", "acknowledge", "someone-else"))
    assert (status, body["status"]) == (202, "success")
    [incident] = await site.incidents("api")
    assert incident.status is IncidentStatus.TRIGGERED

    status, _ = await site.post(PD_PATH, pd_event("api", "acknowledge", "lat"))
    assert status == 202
    [incident] = await site.incidents("api")
    assert incident.status is IncidentStatus.ACKNOWLEDGED
    assert incident.acknowledged_by == "pagerduty"


async def test_pagerduty_resolve_acts_only_with_a_recorded_dedup_key(site: Site) -> None:
    await site.post(PD_PATH, pd_trigger("api", "latency", dedup_key="lat"))

    status, _ = await site.post(PD_PATH, pd_event("api", "resolve", "other"))
    assert status == 202
    [incident] = await site.incidents("api")
    assert incident.status is IncidentStatus.TRIGGERED

    status, _ = await site.post(PD_PATH, pd_event("api", "resolve", "lat"))
    assert status == 202
    [incident] = await site.incidents("api")
    assert incident.status is IncidentStatus.RESOLVED

    # The next trigger opens a new incident, even with the same key.
    await site.post(PD_PATH, pd_trigger("api", "latency again", dedup_key="lat"))
    assert [i.status for i in await site.incidents("api")] == [
        IncidentStatus.TRIGGERED,
        IncidentStatus.RESOLVED,
    ]


async def test_pagerduty_resolve_without_an_open_incident_is_accepted(site: Site) -> None:
    status, body = await site.post(PD_PATH, pd_event("db", "resolve", "nothing-open"))

    assert (status, body["dedup_key"]) == (202, "nothing-open")
    assert await site.incidents("db") == []


async def test_pagerduty_invalid_event_lists_every_error(site: Site) -> None:
    body = {"event_action": "trigger", "payload": {"summary": " ", "severity": "fatal"}}

    status, answer = await site.post(PD_PATH, body)

    assert status == 400
    assert answer["status"] == "invalid event"
    assert answer["message"] == "Event object is invalid"
    assert answer["errors"] == [
        "'routing_key' is missing or blank",
        "'payload.summary' is missing or blank",
        "'payload.source' is missing or blank",
        "'payload.severity' is invalid (must be critical, error, warning, info)",
    ]
    assert await site.alerts("api") == 0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"{not json", "malformed JSON"),
        (b'["a list"]', "does not fit the Events API v2 schema"),
        (b'{"routing_key": "api", "event_action": "snooze"}', "'event_action' is invalid"),
        (b'{"routing_key": "api", "event_action": "resolve"}', "'dedup_key' is required"),
        (b'{"routing_key": "a b", "event_action": "resolve", "dedup_key": "k"}', "routing key"),
    ],
)
async def test_pagerduty_refuses_bad_events_with_400(site: Site, body: bytes, error: str) -> None:
    status, answer = await site.post(PD_PATH, None, raw=body)

    assert status == 400
    assert answer["status"] == "invalid event"
    assert error in " ".join(answer["errors"])


async def test_pagerduty_unknown_routing_key_is_an_invalid_event(site: Site) -> None:
    status, answer = await site.post(PD_PATH, pd_trigger("nope", "x", dedup_key="k"))

    assert status == 400
    assert answer["errors"] == [
        "Invalid routing key: no service 'nope', nor a service's integration key"
    ]


async def test_pagerduty_summary_over_1024_characters_is_cut(site: Site) -> None:
    status, _ = await site.post(PD_PATH, pd_trigger("api", "x" * 2000, dedup_key="long"))

    assert status == 202
    [incident] = await site.incidents("api")
    assert len(incident.message) == 1024
    assert incident.message.endswith("…")


# --- Alertmanager webhook v4 -------------------------------------------------------------


def am_alert(
    name: str, status: str = "firing", *, starts_at: str = "2026-11-22T10:00:00Z", **extra: Any
) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": name, "instance": "web-01", "severity": "page"},
        "annotations": {"summary": f"{name} on web-01", "runbook_url": "https://x"},
        "startsAt": starts_at,
        "endsAt": "0001-01-01T00:00:00Z" if status == "firing" else "2026-11-22T10:05:00Z",
        "generatorURL": "http://prometheus:9090/graph",
        "fingerprint": f"fp-{name}",
    } | extra


def am_group(*alerts: dict[str, Any]) -> dict[str, Any]:
    firing = any(a["status"] == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": '{}:{alertname="x"}',
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": "pagerd",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": list(alerts),
        "someFutureField": {"nested": [1, 2]},
    }


AM = "/integrations/alertmanager/api"


async def test_alertmanager_firing_alerts_page_once_and_are_recorded(site: Site) -> None:
    status, body = await site.post(AM, am_group(am_alert("HighLatency"), am_alert("Errors")))

    assert status == 200
    [incident] = await site.incidents("api")
    assert body == {
        "service_id": "api",
        "incident_id": incident.id,
        "outcomes": ["opened", "appended"],
    }
    assert incident.message == "HighLatency on web-01"
    assert await site.alert_ids(incident.id) == {
        "fp-HighLatency:2026-11-22T10:00:00Z",
        "fp-Errors:2026-11-22T10:00:00Z",
    }
    assert len(site.outbox.pages) == 1


async def test_alertmanager_repeated_notification_changes_nothing(site: Site) -> None:
    group = am_group(am_alert("HighLatency"))
    await site.post(AM, group)

    status, body = await site.post(AM, group)  # repeat_interval, or a retry

    assert (status, body["outcomes"]) == (200, ["duplicate_alert"])
    assert await site.alerts("api") == 1
    assert len(site.outbox.pages) == 1


async def test_alertmanager_all_resolved_is_healthy_and_a_mixed_group_is_not(site: Site) -> None:
    await site.post(AM, am_group(am_alert("A"), am_alert("B")))

    status, _ = await site.post(AM, am_group(am_alert("A", "resolved"), am_alert("B")))
    assert status == 200
    [incident] = await site.incidents("api")
    assert incident.status is IncidentStatus.TRIGGERED

    status, body = await site.post(
        AM, am_group(am_alert("A", "resolved"), am_alert("B", "resolved"))
    )
    assert (status, body["outcomes"]) == (200, ["resolved"])
    [incident] = await site.incidents("api")
    assert incident.status is IncidentStatus.RESOLVED


async def test_alertmanager_alert_firing_again_opens_a_new_incident(site: Site) -> None:
    await site.post(AM, am_group(am_alert("A")))
    await site.post(AM, am_group(am_alert("A", "resolved")))

    await site.post(AM, am_group(am_alert("A", starts_at="2026-11-22T11:00:00Z")))

    newer, older = await site.incidents("api")
    assert (newer.status, older.status) == (IncidentStatus.TRIGGERED, IncidentStatus.RESOLVED)
    assert await site.alert_ids(newer.id) == {"fp-A:2026-11-22T11:00:00Z"}
    assert len(site.outbox.pages) == 2


async def test_alertmanager_message_falls_back_to_description_then_alertname(site: Site) -> None:
    described = am_alert("A", annotations={"description": "disk is 95% full"})
    bare = am_alert("B", annotations={}, fingerprint="fp-b")
    await site.post(AM, am_group(described))
    await site.post("/integrations/alertmanager/db", am_group(bare))

    [api] = await site.incidents("api")
    [db] = await site.incidents("db")
    assert (api.message, db.message) == ("disk is 95% full", "B")


@pytest.mark.parametrize(
    ("raw", "status", "detail"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b'{"version": "4"}', 422, "alerts"),
        (b'{"alerts": []}', 422, "alerts: must not be empty"),
        (b'{"alerts": [{"status": "burning"}]}', 422, "status"),
        (b'{"alerts": [{"status": "firing", "labels": {"a": 1}}]}', 422, "labels"),
    ],
)
async def test_alertmanager_bad_input_is_a_4xx_problem(
    site: Site, raw: bytes, status: int, detail: str
) -> None:
    answered, body = await site.post(AM, None, raw=raw)

    assert answered == status
    assert body["status"] == status
    assert detail in body["detail"]
    assert await site.alerts("api") == 0


async def test_alertmanager_unknown_service_is_404(site: Site) -> None:
    status, body = await site.post("/integrations/alertmanager/nope", am_group(am_alert("A")))

    assert (status, body["detail"]) == (404, "unknown service 'nope'")


# --- Grafana unified alerting ------------------------------------------------------------


def grafana(status: str) -> dict[str, Any]:
    """Grafana's webhook, as its documentation shows it."""
    alert = {
        "status": status,
        "labels": {"alertname": "High memory usage", "team": "blue", "zone": "us-1"},
        "annotations": {
            "description": "The system has high memory usage",
            "runbook_url": "https://myrunbook.com/runbook/1234",
            "summary": "This alert was triggered for zone us-1",
        },
        "startsAt": "2026-11-22T09:51:03.157076+02:00",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "https://play.grafana.org/alerting/1afz29v7z/edit",
        "fingerprint": "c6eadffa33fcdf37",
        "silenceURL": "https://play.grafana.org/alerting/silence/new",
        "dashboardURL": "",
        "panelURL": "",
        "values": {"B": 44.23, "C": 1},
        "valueString": "[ var='B' labels={} value=44.23 ]",
    }
    return {
        "receiver": "pagerd",
        "status": status,
        "orgId": 1,
        "alerts": [alert],
        "groupLabels": {},
        "commonLabels": {"team": "blue"},
        "commonAnnotations": {},
        "externalURL": "https://play.grafana.org/",
        "version": "1",
        "groupKey": '{}:{alertname="High memory usage"}',
        "truncatedAlerts": 0,
        "title": "[FIRING:1]  (High memory usage blue)",
        "state": "alerting" if status == "firing" else "ok",
        "message": "**Firing**\n\nValue: B=44.23",
    }


async def test_grafana_firing_pages_and_resolved_is_healthy(site: Site) -> None:
    status, _ = await site.post("/integrations/grafana/db", grafana("firing"))

    assert status == 200
    [incident] = await site.incidents("db")
    assert incident.message == "This alert was triggered for zone us-1"
    assert await site.alert_ids(incident.id) == {
        "c6eadffa33fcdf37:2026-11-22T09:51:03.157076+02:00"
    }
    assert len(site.outbox.pages) == 1

    status, body = await site.post("/integrations/grafana/db", grafana("resolved"))

    assert (status, body["outcomes"]) == (200, ["resolved"])
    [incident] = await site.incidents("db")
    assert incident.status is IncidentStatus.RESOLVED


async def test_grafana_malformed_body_is_400(site: Site) -> None:
    status, body = await site.post("/integrations/grafana/db", None, raw=b"[1,")

    assert status == 400
    assert "malformed JSON" in body["detail"]


# --- CloudWatch through SNS ----------------------------------------------------------------

CW = "/integrations/cloudwatch/api"


async def test_signed_alarm_pages_and_signed_ok_is_healthy(site: Site, sns: Sns) -> None:
    status, body = await site.post(CW, sns.notification(alarm("api-5xx", "ALARM")), text_plain=True)

    assert status == 200, body
    [incident] = await site.incidents("api")
    assert incident.message == "api-5xx: Threshold Crossed: 5xx > 10"
    assert await site.alert_ids(incident.id) == {"api-5xx"}
    assert len(site.outbox.pages) == 1

    # SignatureVersion 2 (SHA256withRSA) as well.
    status, body = await site.post(CW, sns.notification(alarm("api-5xx", "OK"), "2"))

    assert (status, body["outcomes"]) == (200, ["resolved"])
    [incident] = await site.incidents("api")
    assert incident.status is IncidentStatus.RESOLVED
    assert sns.cert_fetches == 1  # fetched once, then cached


async def test_insufficient_data_changes_nothing(site: Site, sns: Sns) -> None:
    status, body = await site.post(CW, sns.notification(alarm("api-5xx", "INSUFFICIENT_DATA")))

    assert (status, body["outcomes"]) == (200, [])
    assert await site.incidents("api") == []


async def test_tampered_message_is_403(site: Site, sns: Sns) -> None:
    envelope = sns.notification(alarm("api-5xx", "OK"))
    envelope["Message"] = json.dumps(alarm("api-5xx", "ALARM"))  # changed after signing

    status, body = await site.post(CW, envelope)

    assert status == 403
    assert "signature" in body["detail"]
    assert await site.incidents("api") == []


@pytest.mark.parametrize(
    ("ago", "accepted"),
    [
        (timedelta(minutes=59), True),
        (timedelta(minutes=61), False),  # a captured message, replayed later
        (-timedelta(minutes=4), True),  # the sender's clock a little ahead
        (-timedelta(minutes=6), False),
    ],
    ids=["59-min-old", "61-min-old", "4-min-ahead", "6-min-ahead"],
)
async def test_a_signed_message_is_taken_only_within_an_hour_of_its_timestamp(
    site: Site, sns: Sns, ago: timedelta, accepted: bool
) -> None:
    envelope = sns.notification(alarm("api-5xx", "ALARM"), timestamp=sns_time(ago))

    status, body = await site.post(CW, envelope)

    if accepted:
        assert status == 200
        assert len(await site.incidents("api")) == 1
    else:
        assert status == 403
        assert "replayed" in body["detail"]
        assert await site.incidents("api") == []


@pytest.mark.parametrize(
    "change",
    [
        {"SigningCertURL": "https://evil.example/SimpleNotificationService-test.pem"},
        {"SignatureVersion": "3"},
        {"Signature": "not base64!"},
        {"Signature": ""},
    ],
    ids=["cert-url-not-matching", "unknown-version", "not-base64", "unsigned"],
)
async def test_bad_signature_fields_are_403(site: Site, sns: Sns, change: dict[str, str]) -> None:
    envelope = sns.notification(alarm("api-5xx", "ALARM")) | change

    with structlog.testing.capture_logs() as logs:
        status, _ = await site.post(CW, envelope)

    assert status == 403
    assert await site.incidents("api") == []
    assert sns.cert_fetches == 0  # refused before any fetch
    assert [e["event"] for e in logs if e["event"] == "sns.signature_rejected"]


async def test_cert_url_must_match_the_pattern_whole(site: Site, sns: Sns) -> None:
    envelope = sns.notification(alarm("api-5xx", "ALARM"))
    envelope["SigningCertURL"] += "?x=.pem"

    status, _ = await site.post(CW, envelope)

    assert status == 403
    assert sns.cert_fetches == 0


async def test_the_default_pattern_refuses_a_local_certificate(tmp_path: Path, sns: Sns) -> None:
    async with serving(tmp_path, IntegrationsConfig()) as site:
        status, body = await site.post(CW, sns.notification(alarm("api-5xx", "ALARM")))

    assert status == 403
    assert "does not match sns_cert_url_pattern" in body["detail"]
    assert sns.cert_fetches == 0


async def test_a_message_that_is_not_an_alarm_is_422(site: Site, sns: Sns) -> None:
    envelope = sns.sign(
        {
            "Type": "Notification",
            "MessageId": "m-1",
            "TopicArn": "arn:aws:sns:eu-west-1:123456789012:alarms",
            "Message": "hello",
            "Timestamp": sns_time(),
        }
    )

    status, body = await site.post(CW, envelope)

    assert status == 422
    assert "not a CloudWatch alarm" in body["detail"]


async def test_a_body_that_is_not_an_sns_message_is_400(site: Site) -> None:
    status, body = await site.post(CW, {"hello": "world"})

    assert status == 400
    assert "not an SNS message" in body["detail"]


async def test_subscription_confirmation_is_logged_not_confirmed_by_default(
    site: Site, sns: Sns
) -> None:
    envelope = sns.confirmation("tok-1")

    with structlog.testing.capture_logs() as logs:
        status, body = await site.post(CW, envelope, text_plain=True)

    assert (status, body["status"]) == (200, "subscription_logged")
    [logged] = [e for e in logs if e["event"] == "sns.subscription_confirmation"]
    assert logged["subscribe_url"] == envelope["SubscribeURL"]
    assert logged["service_id"] == "api"
    assert sns.confirmations == []


async def test_subscription_is_confirmed_when_enabled(tmp_path: Path, sns: Sns) -> None:
    integrations = IntegrationsConfig(
        sns_cert_url_pattern=sns.cert_url_pattern, sns_confirm_subscriptions=True
    )
    async with serving(tmp_path, integrations) as site:
        tampered = sns.confirmation("tok-2") | {"Token": "tok-evil"}
        status, _ = await site.post(CW, tampered)
        assert status == 403

        status, body = await site.post(CW, sns.confirmation("tok-2"))

    assert (status, body["status"]) == (200, "subscription_confirmed")
    assert sns.confirmations == ["tok-2"]


async def test_subscription_for_an_unknown_service_is_404(site: Site, sns: Sns) -> None:
    status, _ = await site.post("/integrations/cloudwatch/nope", sns.confirmation())

    assert status == 404
    assert sns.confirmations == []
