"""CONTRACT §3 intake, without a broker: which topics and payloads pagerd accepts,
what each becomes, and the code of every refusal."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from pagerd.core.domain import Ack, Alert, Healthy, Incident, ServiceState
from pagerd.intake.dead_letters import DeadLetters
from pagerd.intake.mqtt import MqttLink, MqttPublisher, MqttSettings
from pagerd.intake.mqtt_messages import (
    MAX_PAYLOAD_BYTES,
    Intake,
    Rejected,
    asked_request_id,
    parse_message,
    parse_topic,
)
from pagerd.runtime.answers import Answer, Reply, Retryable
from tests.doubles import DrivenClock, Recorder

PREFIX = "pagerd"
ALERT = "pagerd/alert/api"
ACK = "pagerd/ack/api"
HEALTHY = "pagerd/healthy/api"


def alert_of(payload: bytes | str) -> Alert:
    """The Alert event parse_message makes of ``payload`` on the alert topic."""
    raw = payload.encode() if isinstance(payload, str) else payload
    intake = parse_message(ALERT, raw, PREFIX)
    assert (intake.kind, intake.service_id) == ("alert", "api")
    assert isinstance(intake.event, Alert)
    return intake.event


def refusal(topic: str, payload: bytes | str) -> Rejected:
    """The Rejected that parse_message raises for this message."""
    raw = payload.encode() if isinstance(payload, str) else payload
    with pytest.raises(Rejected) as caught:
        parse_message(topic, raw, PREFIX)
    return caught.value


# --- topics --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("pagerd/alert/api", ("alert", "api")),
        ("pagerd/ack/payments-api", ("ack", "payments-api")),
        ("pagerd/healthy/A.b_c-9", ("healthy", "A.b_c-9")),
        ("pagerd/alert/" + "s" * 128, ("alert", "s" * 128)),
    ],
)
def test_topic_names_kind_and_service(topic: str, expected: tuple[str, str]) -> None:
    assert parse_topic(topic, PREFIX) == expected


def test_topic_prefix_is_the_configured_one() -> None:
    assert parse_topic("site/ops/alert/api", "site/ops") == ("alert", "api")
    with pytest.raises(Rejected):
        parse_topic("pagerd/alert/api", "site/ops")


@pytest.mark.parametrize(
    "topic",
    [
        pytest.param("other/alert/api", id="wrong prefix"),
        pytest.param("pagerdx/alert/api", id="prefix is a whole level"),
        pytest.param("alert/api", id="no prefix"),
        pytest.param("pagerd/alert", id="no service level"),
        pytest.param("pagerd/alert/api/extra", id="extra level"),
        pytest.param("pagerd/state/api", id="a kind pagerd publishes"),
        pytest.param("pagerd/resolve/api", id="unknown kind"),
        pytest.param("pagerd/ALERT/api", id="kind is case-sensitive"),
        pytest.param("pagerd/alert/", id="empty service id"),
        pytest.param("pagerd/alert/bad id", id="space in service id"),
        pytest.param("pagerd/alert/bad$id", id="dollar in service id"),
        pytest.param("pagerd/alert/caf\u00e9", id="non-ASCII service id"),
        pytest.param("pagerd/alert/" + "s" * 129, id="129-char service id"),
    ],
)
def test_topic_that_does_not_parse_is_refused(topic: str) -> None:
    with pytest.raises(Rejected) as caught:
        parse_topic(topic, PREFIX)
    assert caught.value.code == "topic"
    # The same verdict whatever the payload: the topic is checked first.
    assert refusal(topic, b"\xff" * (MAX_PAYLOAD_BYTES + 1)).code == "topic"


def test_refused_service_id_is_named_with_the_rule() -> None:
    error = refusal("pagerd/alert/bad$id", "down")
    assert "bad$id" in error.reason
    assert "[A-Za-z0-9._-]{1,128}" in error.reason


# --- accepted payloads ---------------------------------------------------------------------


def test_json_alert_with_every_field() -> None:
    event = alert_of(json.dumps({"message": "5xx at 12%", "alert_id": "a-1", "source": "prom"}))
    assert (event.message, event.alert_id, event.source) == ("5xx at 12%", "a-1", "prom")
    assert event.new_incident_id


def test_json_alert_with_message_only() -> None:
    event = alert_of('{"message": "disk full"}')
    assert (event.message, event.alert_id, event.source) == ("disk full", None, None)


def test_json_alert_ignores_unknown_fields() -> None:
    # Monitors send what they have; only the healthy body is strict (nothing to misread).
    assert alert_of('{"message": "m", "severity": "critical"}').message == "m"


def test_each_alert_gets_its_own_new_incident_id() -> None:
    assert alert_of("down").new_incident_id != alert_of("down").new_incident_id


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        pytest.param("disk full on /var", "disk full on /var", id="plain text"),
        pytest.param("  \n disk full\t\n", "disk full", id="trimmed"),
        pytest.param("caf\u00e9 \u2615 down", "caf\u00e9 \u2615 down", id="UTF-8"),
        pytest.param("not {json", "not {json", id="brace inside text"),
    ],
)
def test_plain_text_alert_is_the_message(payload: str, message: str) -> None:
    event = alert_of(payload)
    assert (event.message, event.alert_id, event.source) == (message, None, None)


@pytest.mark.parametrize(
    ("message", "alert_id"),
    [
        pytest.param("m" * 1024, None, id="message of 1024 chars"),
        pytest.param("\u00e9" * 1024, None, id="1024 two-byte chars (counted in chars)"),
        pytest.param("m", "i" * 255, id="alert_id of 255 chars"),
    ],
)
def test_json_alert_at_the_limits_is_accepted(message: str, alert_id: str | None) -> None:
    body: dict[str, str] = {"message": message}
    if alert_id is not None:
        body["alert_id"] = alert_id
    event = alert_of(json.dumps(body))
    assert (event.message, event.alert_id) == (message, alert_id)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(b"", Ack(), id="empty"),
        pytest.param(b"  \n", Ack(), id="whitespace"),
        pytest.param(b"{}", Ack(), id="empty object"),
        pytest.param(b'{"incident_id": "inc-1"}', Ack(incident_id="inc-1"), id="incident_id"),
        pytest.param(b'{"by": "alice"}', Ack(by="alice"), id="by"),
        pytest.param(
            b'{"incident_id": "inc-1", "by": "alice"}', Ack("inc-1", "alice"), id="incident_id+by"
        ),
    ],
)
def test_ack_payloads(payload: bytes, expected: Ack) -> None:
    assert parse_message(ACK, payload, PREFIX) == Intake(ACK, "ack", "api", expected)


@pytest.mark.parametrize("payload", [b"", b" \r\n", b"{}", b" { } "])
def test_healthy_payloads(payload: bytes) -> None:
    assert parse_message(HEALTHY, payload, PREFIX) == Intake(HEALTHY, "healthy", "api", Healthy())


def test_payload_of_exactly_64_kib_is_accepted() -> None:
    # JSON padded with whitespace: the size limit, not the schema, is what is tested.
    body = b'{"by": "alice"}'
    payload = body + b" " * (MAX_PAYLOAD_BYTES - len(body))
    assert len(payload) == 64 * 1024
    assert parse_message(ACK, payload, PREFIX).event == Ack(by="alice")


# --- refused payloads ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("topic", "payload", "code", "says"),
    [
        pytest.param(ACK, b"{}" + b" " * (64 * 1024 - 1), "too_large", "65537", id="64 KiB + 1"),
        pytest.param(ALERT, b"x" * (1024 * 1024), "too_large", "65536", id="1 MiB"),
        pytest.param(ALERT, b"\xff\xfe down", "not_utf8", "UTF-8", id="not UTF-8"),
        pytest.param(ALERT, "caf\u00e9".encode("latin-1"), "not_utf8", "UTF-8", id="latin-1"),
        pytest.param(ACK, b"\xc3", "not_utf8", "UTF-8", id="truncated UTF-8 on ack"),
        pytest.param(ALERT, b'{"message": "down"', "malformed", "JSON", id="unclosed object"),
        pytest.param(ALERT, b"{message: down}", "malformed", "JSON", id="unquoted key"),
        pytest.param(ALERT, b'{"message": "a"} x', "malformed", "JSON", id="trailing data"),
        pytest.param(ACK, b"alice", "malformed", "JSON", id="ack as text"),
        pytest.param(HEALTHY, b"ok", "malformed", "JSON", id="healthy as text"),
        pytest.param(ALERT, b"[1]", "schema", "object", id="alert array"),
        pytest.param(ALERT, b'["down"]', "schema", "object", id="alert array of text"),
        pytest.param(ACK, b"[1]", "schema", "object", id="ack array"),
        pytest.param(ACK, b'"alice"', "schema", "object", id="ack string"),
        pytest.param(HEALTHY, b"[]", "schema", "object", id="healthy array"),
        pytest.param(HEALTHY, b"null", "schema", "object", id="healthy null"),
        pytest.param(ALERT, b'{"alert_id": "a"}', "schema", "message", id="message missing"),
        pytest.param(ALERT, b'{"message": 5}', "schema", "message", id="message not a string"),
        pytest.param(ALERT, b'{"message": null}', "schema", "message", id="message null"),
        pytest.param(ALERT, b'{"message": ""}', "schema", "message", id="empty message"),
        pytest.param(ALERT, b'{"message": "   "}', "schema", "blank", id="blank message"),
        pytest.param(
            ALERT, json.dumps({"message": "m" * 1025}), "schema", "1024", id="message 1025 chars"
        ),
        pytest.param(ALERT, "m" * 1025, "schema", "1024", id="plain text 1025 chars"),
        pytest.param(ALERT, b"", "schema", "message", id="empty alert"),
        pytest.param(ALERT, b" \n\t", "schema", "message", id="blank alert"),
        pytest.param(
            ALERT,
            json.dumps({"message": "m", "alert_id": "i" * 256}),
            "schema",
            "alert_id",
            id="alert_id 256 chars",
        ),
        pytest.param(
            ALERT, b'{"message": "m", "alert_id": ""}', "schema", "alert_id", id="empty alert_id"
        ),
        pytest.param(
            ALERT, b'{"message": "m", "alert_id": 7}', "schema", "alert_id", id="alert_id number"
        ),
        pytest.param(
            ALERT, b'{"message": "m", "source": []}', "schema", "source", id="source not a string"
        ),
        pytest.param(ACK, b'{"incident_id": 1}', "schema", "incident_id", id="incident_id number"),
        pytest.param(ACK, b'{"by": false}', "schema", "by", id="by not a string"),
        pytest.param(HEALTHY, b'{"x": 1}', "schema", "x", id="healthy unknown field"),
        pytest.param(
            HEALTHY, b'{"message": "fine"}', "schema", "message", id="healthy with message"
        ),
        pytest.param(
            HEALTHY, b'{"request_id": "a/b"}', "schema", "request_id", id="request_id a topic"
        ),
        pytest.param(
            ACK, json.dumps({"request_id": "r" * 65}), "schema", "request_id", id="request_id 65"
        ),
        pytest.param(ALERT, b'{"message": "m", "request_id": 1}', "schema", "request_id", id="r1"),
    ],
)
def test_bad_payload_is_refused_with_its_code(
    topic: str, payload: bytes | str, code: str, says: str
) -> None:
    error = refusal(topic, payload)
    assert error.code == code
    assert says in error.reason, error.reason
    assert str(error) == error.reason


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        (ALERT, b'{"request_id": "cli-1", "message": "down"}'),
        (ACK, b'{"request_id": "cli-1"}'),
        (HEALTHY, b'{"request_id": "cli-1"}'),
    ],
)
def test_a_request_id_asks_for_a_verdict(topic: str, payload: bytes) -> None:
    assert parse_message(topic, payload, PREFIX).request_id == "cli-1"


@pytest.mark.parametrize(
    ("payload", "asked"),
    [
        pytest.param(b'{"request_id": "cli-1", "message": ""}', "cli-1", id="refused, asked"),
        pytest.param(b'{"request_id": "cli-1", "alert_id": 7}', "cli-1", id="schema, asked"),
        pytest.param(b'{"request_id": "a/b"}', None, id="not a valid id"),
        pytest.param(b'{"request_id": ""}', None, id="empty id"),
        pytest.param(b'{"request_id": "cli-1"', None, id="malformed JSON"),
        pytest.param(b"down", None, id="plain text"),
    ],
)
def test_a_refused_message_is_answered_if_it_asked_validly(payload: bytes, asked: str) -> None:
    assert asked_request_id(payload) == asked


def test_size_is_checked_before_encoding() -> None:
    # An oversized payload is refused for its size, not for whatever is wrong inside it.
    assert refusal(ALERT, b"\xff" * (MAX_PAYLOAD_BYTES + 1)).code == "too_large"


class _Answering:
    """A runtime that answers every event at once with ``answer``."""

    full = False

    def __init__(self, answer: Answer) -> None:
        self.answer = answer

    def submit(self, service_id: str, event: object, reply: Reply | None = None) -> None:
        assert reply is not None
        reply(self.answer)


def test_a_message_not_committed_is_left_for_redelivery() -> None:
    """Given the runtime could not commit an alert (its service could not be read), then
    the message is neither acknowledged nor rejected: a reconnect is asked for, so the
    broker redelivers it."""
    answer = Retryable("api", "the service could not be read: disk I/O error")
    settings = MqttSettings("127.0.0.1", 1883, "pagerd-test", "pagerd")
    runtime = _Answering(answer)
    dead_letters = DeadLetters(Recorder(), DrivenClock())  # type: ignore[arg-type]
    link = MqttLink(settings, runtime, MqttPublisher("pagerd"), dead_letters)  # type: ignore[arg-type]

    link._receive(None, 0, "pagerd/alert/api", b"down", 7)  # type: ignore[arg-type]

    assert link._redeliver.is_set()
    assert link._acks == []


class _Client:
    """What ``publish_state`` reaches of a connected client: publish_nowait."""

    def __init__(self, *, connected: bool = True) -> None:
        self.connected = connected
        self.published: list[tuple[str, dict[str, Any]]] = []

    def publish_nowait(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> bool:
        assert (qos, retain) == (1, True)
        if self.connected:
            self.published.append((topic, json.loads(payload)))
        return self.connected


class _Live:
    """What republishing reads of the runtime: live states and the clock."""

    def __init__(self, states: dict[str, ServiceState]) -> None:
        self.states = states
        self.clock = SimpleNamespace(now=lambda: AT)

    def live_states(self) -> list[ServiceState]:
        return list(self.states.values())

    def state_of(self, service_id: str) -> ServiceState | None:
        return self.states.get(service_id)


AT = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)
OPEN = Incident("01INC", "down", AT)


async def test_states_are_republished_all_on_first_connection_then_only_as_changed() -> None:
    """Given live actors, the first connection republishes every live state; a state that
    changes while disconnected (even one whose actor retired as healthy meanwhile) is
    published on the next connection, and nothing else is."""
    publisher = MqttPublisher("pagerd")
    runtime = _Live({"api": ServiceState("api", OPEN), "db": ServiceState("db", OPEN)})
    first = _Client()
    publisher.connected(first)  # type: ignore[arg-type]
    await publisher.republish(first, runtime)  # type: ignore[arg-type]
    assert sorted(t for t, _ in first.published) == ["pagerd/state/api", "pagerd/state/db"]

    publisher.connected(None)  # disconnected: "api" turns healthy, and its actor retires
    publisher.publish_state("api", ServiceState("api", None), AT)
    runtime.states.pop("api")
    second = _Client()
    publisher.connected(second)  # type: ignore[arg-type]
    await publisher.republish(second, runtime)  # type: ignore[arg-type]
    assert [(t, p["health"]) for t, p in second.published] == [("pagerd/state/api", "healthy")]


def test_a_state_the_connection_could_not_take_waits_for_the_next_one() -> None:
    """Given a connection that ended before the link noticed, a state published on it is
    kept for the next connection instead of being lost."""
    publisher = MqttPublisher("pagerd")
    publisher.connected(_Client(connected=False))  # type: ignore[arg-type]

    publisher.publish_state("api", ServiceState("api", OPEN), AT)

    assert publisher._unpublished == {"api": (ServiceState("api", OPEN), AT)}
