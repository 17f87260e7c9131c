"""Fault suite: generated garbage on MQTT and HTTP never crashes pagerd or goes unanswered."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pagerd.intake.mqtt import REJECTED_PAYLOAD_BYTES
from pagerd.intake.mqtt_messages import MAX_PAYLOAD_BYTES, Rejected, parse_message
from tests.conftest import PagerdFactory
from tests.faults.common import report
from tests.harness import API_TOKEN, Monitor, Policy, SmsStandIn, eventually, sms

ONE = "+15550000001"
KNOWN = ["known", "other.svc"]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["message", "alert_id", "source", "incident_id", "by", "x"])
            | st.text(max_size=8),
            inner,
            max_size=4,
        )
    ),
    max_leaves=10,
)
PAYLOADS = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(str.encode),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.just(b"x" * (MAX_PAYLOAD_BYTES + 1)),
)


def mqtt_topic_char(char: str) -> bool:
    """Whether mosquitto accepts ``char`` in a published topic level.

    "/", "+" and "#" are syntax; control characters and Unicode non-characters are
    refused as malformed UTF-8, and the broker drops the publisher's connection.
    """
    code = ord(char)
    return not (
        char in "/+#"
        or code < 0x20
        or 0x7F <= code <= 0x9F
        or 0xFDD0 <= code <= 0xFDEF
        or code & 0xFFFE == 0xFFFE
    )


# One topic level: pagerd subscribes to {prefix}/{kind}/+ only.
SEGMENTS = st.sampled_from(KNOWN) | st.text(
    st.characters(exclude_categories=["Cs"]).filter(mqtt_topic_char),
    min_size=1,
    max_size=140,
).filter(lambda s: s != "canary")
KINDS = st.sampled_from(["alert", "ack", "healthy"])
SETTINGS = settings(
    max_examples=150,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)


def drawn(strategy: st.SearchStrategy[Any]) -> list[Any]:
    """Examples of ``strategy`` chosen by hypothesis (its shrinking does not apply here)."""
    examples: list[Any] = []

    @SETTINGS
    @given(strategy)
    def collect(example: Any) -> None:
        examples.append(example)

    collect()
    return examples


def expected_reason(topic: str, payload: bytes) -> bool:
    """Whether pagerd must refuse this message (bad input or an unknown service)."""
    try:
        intake = parse_message(topic, payload, "pagerd")
    except Rejected:
        return True
    return intake.service_id not in KNOWN


async def test_fuzzed_mqtt_messages_are_refused_with_a_reason_and_pagerd_keeps_working(
    make_pagerd: PagerdFactory, monitor: Monitor, sms_service: SmsStandIn
) -> None:
    """Given generated topics and payloads, then pagerd stays up, every refusal is on
    pagerd/rejected with a reason, and a valid alert afterwards still pages."""
    daemon = make_pagerd(
        [Policy("p", [(600.0, [sms(ONE)])])], dict.fromkeys([*KNOWN, "canary"], "p")
    )
    await daemon.start()
    samples = drawn(st.tuples(KINDS, SEGMENTS, PAYLOADS))
    refused: list[tuple[str, str]] = []
    for kind, segment, payload in samples:
        topic = f"pagerd/{kind}/{segment}"
        await monitor.client.publish(topic, payload, qos=1)
        if expected_reason(topic, payload):
            # Over the size limit it is never held, so only its size is told (CONTRACT §9).
            held = payload if len(payload) <= MAX_PAYLOAD_BYTES else b""
            text = held[:REJECTED_PAYLOAD_BYTES].decode("utf-8", "replace")
            refused.append((topic, text))

    def answered() -> set[tuple[str, str]]:
        return {(r["topic"], r["payload"]) for r in monitor.on("rejected")}

    await eventually(
        lambda: set(refused) <= answered(), timeout=20, what="a refusal for each bad message"
    )
    await monitor.publish("alert", "canary", "still alive")
    await eventually(
        lambda: any("still alive" in p.message for p in sms_service.to(ONE)),
        timeout=5,
        what="a page for a valid alert after the fuzzing",
    )
    assert daemon.process is not None
    assert daemon.process.poll() is None
    rejections = monitor.on("rejected")
    report("mqtt fuzz", messages=len(samples), refused=len(refused), answered=len(rejections))
    assert all(isinstance(r["reason"], str) and r["reason"] for r in rejections)
    events = [e["event"] for e in daemon.log_events()]
    assert "actor.failed" not in events


ENDPOINTS = [
    ("POST", "/teams"),
    ("POST", "/teams/1/developers"),
    ("POST", "/alerts"),
    ("PUT", "/policies/fuzz"),
    ("PUT", "/services/fuzz"),
    ("POST", "/services/known/alerts"),
    ("POST", "/services/known/ack"),
    ("POST", "/services/known/healthy"),
    ("POST", "/services/nope/alerts"),
]
BODIES = st.one_of(
    st.binary(max_size=300),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "message": JSON,
            "name": JSON,
            "levels": JSON,
            "repeat": JSON,
            "policy": JSON,
            "team": JSON,
            "team_id": JSON,
            "developers": JSON,
            "phone_number": JSON,
            "by": JSON,
        },
    ).map(lambda v: json.dumps(v).encode()),
)


@pytest.mark.timeout(120)
async def test_fuzzed_api_bodies_get_no_5xx_and_problem_json_4xx(
    make_pagerd: PagerdFactory, sms_service: SmsStandIn
) -> None:
    """Given generated bodies for every /api/v1 endpoint that takes one, then no answer is
    a 5xx, and every 4xx is application/problem+json with a detail."""
    daemon = make_pagerd([Policy("p", [(600.0, [sms(ONE)])])], dict.fromkeys(KNOWN, "p"))
    await daemon.start()
    samples = drawn(st.tuples(st.sampled_from(ENDPOINTS), BODIES))
    statuses: dict[int, int] = {}
    bad: list[str] = []
    headers = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        for (method, path), body in samples:
            url = f"{daemon.base_url}/api/v1{path}"
            async with session.request(method, url, data=body) as reply:
                statuses[reply.status] = statuses.get(reply.status, 0) + 1
                text = await reply.text()
                if reply.status >= 500:
                    bad.append(f"{method} {path} {body[:80]!r} -> {reply.status} {text[:200]}")
                elif reply.status >= 400:
                    problem = json.loads(text) if reply.content_type.endswith("json") else {}
                    if reply.content_type != "application/problem+json" or not problem.get(
                        "detail"
                    ):
                        bad.append(
                            f"{method} {path} -> {reply.status} {reply.content_type} {text[:200]}"
                        )
    report("http fuzz", requests=len(samples), statuses=dict(sorted(statuses.items())))
    assert bad == []
    assert daemon.process is not None
    assert daemon.process.poll() is None
