"""Logging configuration: JSON lines, console format, masking, stdlib routing."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from pagerd.telemetry.logs import (
    REDACTED,
    RateLimitedLog,
    choose_format,
    configure_logging,
    get_logger,
    mask_text,
    mask_value,
)
from tests.harness import eventually

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo configure_logging: structlog defaults, root handlers and levels."""
    root = logging.getLogger()
    handlers, root_level = list(root.handlers), root.level
    pagerd_level = logging.getLogger("pagerd").level
    yield
    structlog.reset_defaults()
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(root_level)
    logging.getLogger("pagerd").setLevel(pagerd_level)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_have_timestamp_level_event_and_bound_fields() -> None:
    out = io.StringIO()
    configure_logging("json", "info", out)
    log = get_logger("pagerd.test").bind(service_id="payments-api")
    log.info("incident.triggered", incident_id="inc-1", level_number=1)
    log.warning("notification.failed", incident_id="inc-1")

    first, second = _lines(out)
    assert list(first)[:3] == ["timestamp", "level", "event"]
    assert TIMESTAMP.match(first["timestamp"]), first["timestamp"]
    assert first["level"] == "info"
    assert first["event"] == "incident.triggered"
    assert first["service_id"] == "payments-api"
    assert first["incident_id"] == "inc-1"
    assert first["level_number"] == 1
    assert (second["level"], second["event"]) == ("warning", "notification.failed")


def test_level_filters_pagerd_events() -> None:
    out = io.StringIO()
    configure_logging("json", "warning", out)
    log = get_logger("pagerd.test")
    log.info("alert.received")
    log.error("store.failed")
    assert [line["event"] for line in _lines(out)] == ["store.failed"]


def test_contextvars_are_merged() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    with structlog.contextvars.bound_contextvars(service_id="svc-1"):
        get_logger().info("alert.received")
    assert _lines(out)[0]["service_id"] == "svc-1"


def test_personal_data_masked_and_credentials_redacted() -> None:
    out = io.StringIO()
    configure_logging("json", "info", out)
    get_logger("pagerd.test").info(
        "notification.sent",
        phone_number="+15550001111",
        email="oncall@example.com",
        address="oncall@example.com",
        recipient="+15550001111",
        to=["oncall@example.com", "+15550001111"],
        token="s3cr3t-token",
        password="hunter2",
        authorization="Bearer abc",
        secret="xyz",
    )
    raw = out.getvalue()
    for leaked in ("15550001111", "oncall@", "s3cr3t", "hunter2", "Bearer", "xyz"):
        assert leaked not in raw
    line = _lines(out)[0]
    assert line["phone_number"] == "+155*****111"
    assert line["recipient"] == "+155*****111"
    assert line["email"] == "o*****@example.com"
    assert line["address"] == "o*****@example.com"
    assert line["to"] == ["o*****@example.com", "+155*****111"]
    for key in ("token", "password", "authorization", "secret"):
        assert line[key] == REDACTED


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("+15550001111", "+155*****111"),
        ("999999999", "9999*****999"),
        ("oncall@example.com", "o*****@example.com"),
        ("1234567", "*****"),
        ("@example.com", "@exa*****com"),
    ],
)
def test_mask_value(value: str, masked: str) -> None:
    assert mask_value(value) == masked


def _page(phone_number: str) -> None:
    # The number is a frame local: a traceback with locals would leak it.
    raise RuntimeError(f"cannot page {len(phone_number)}")


def test_exceptions_render_as_structured_tracebacks_without_locals() -> None:
    out = io.StringIO()
    configure_logging("json", "info", out)
    try:
        _page("+15550001111")
    except RuntimeError:
        get_logger("pagerd.test").exception("notification.failed")
    line = _lines(out)[0]
    assert line["level"] == "error"
    (exception,) = line["exception"]
    assert exception["exc_type"] == "RuntimeError"
    assert exception["exc_value"] == "cannot page 12"
    assert [frame["name"] for frame in exception["frames"]][-1] == "_page"
    assert "15550001111" not in out.getvalue()


def test_console_format_renders_readably() -> None:
    out = io.StringIO()
    configure_logging("console", "info", out)
    get_logger("pagerd.test").info(
        "incident.triggered", service_id="payments-api", phone_number="+15550001111"
    )
    text = out.getvalue()
    assert "incident.triggered" in text
    assert "service_id=payments-api" in text
    assert "phone_number=+155*****111" in text
    assert "\x1b[" not in text  # no colour codes into a non-terminal
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def test_stdlib_logging_routed_at_warning_and_above() -> None:
    out = io.StringIO()
    configure_logging("json", "debug", out)
    logging.getLogger("aiohttp.access").info("GET /healthz 200")
    logging.getLogger("aiomqtt").warning("connection lost: %s", "EOF")
    get_logger("pagerd.test").debug("mailbox.drained")

    lines = _lines(out)
    assert [line["event"] for line in lines] == ["connection lost: EOF", "mailbox.drained"]
    assert lines[0]["level"] == "warning"
    assert lines[0]["logger"] == "aiomqtt"
    assert TIMESTAMP.match(lines[0]["timestamp"])


def test_reconfiguring_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    get_logger().info("app.started")
    assert first.getvalue() == ""
    assert len(_lines(second)) == 1


def test_choose_format() -> None:
    assert choose_format("json", io.StringIO()) == "json"
    assert choose_format("console", io.StringIO()) == "console"
    assert choose_format("json", _Terminal()) == "console"


@pytest.mark.parametrize(("fmt", "level"), [("xml", "info"), ("json", "loud")])
def test_rejects_unknown_format_or_level(fmt: str, level: str) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        configure_logging(fmt, level, io.StringIO())


# --- masking by value ------------------------------------------------------------------------

SMTP_REPLY = "550 5.1.1 <someone@example.com>: Recipient address rejected: User unknown"


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (SMTP_REPLY, "550 5.1.1 <s*****@example.com>: Recipient address rejected: User unknown"),
        ("the 'To' number +15550001111 is not valid", "the 'To' number +155*****111 is not valid"),
        ("call +1 555-000-1111.", "call +1 5*****111."),
        ("developer 999999999 paged", "developer 9999*****999 paged"),
        ("to a@b.example, b@c.example", "to a*****@b.example, b*****@c.example"),
        # pagerd's own ids, times, addresses and sizes are left as they are.
        ("2026-11-22T10:00:00.123Z", "2026-11-22T10:00:00.123Z"),
        ("notification 01HZXINCIDENT00-0-0 HTTP 503", "notification 01HZXINCIDENT00-0-0 HTTP 503"),
        ("127.0.0.1:8080 after 65536 bytes", "127.0.0.1:8080 after 65536 bytes"),
        ("Python 3.11.7, 1732269600.25 s", "Python 3.11.7, 1732269600.25 s"),
        ("/var/lib/pagerd/12345678/db", "/var/lib/pagerd/12345678/db"),
        ("", ""),
    ],
)
def test_mask_text_masks_numbers_and_addresses_inside_text(text: str, masked: str) -> None:
    assert mask_text(text) == masked


_LOCAL = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,20}", fullmatch=True)
_DOMAIN = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z]{2,6}){1,2}", fullmatch=True)
_PHONE = st.from_regex(r"\+?[1-9][0-9]{6,14}", fullmatch=True)
_WORDS = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


@given(
    before=_WORDS,
    after=_WORDS,
    address=st.one_of(st.builds("{}@{}".format, _LOCAL, _DOMAIN), _PHONE),
)
def test_mask_text_never_lets_an_address_or_number_through(
    before: str, after: str, address: str
) -> None:
    """Given a phone number or address anywhere in text, set off by spaces, then it is
    never in the masked text."""
    assert address not in mask_text(f"{before} {address} {after}")


def _refuse(address: str) -> None:
    raise ValueError(f"no mailbox {address}")


def test_log_lines_mask_numbers_and_addresses_by_value() -> None:
    """Given a provider's reply in any field, a library's message and an exception naming
    someone, then no address or number reaches the log; ids stay readable."""
    out = io.StringIO()
    configure_logging("json", "info", out)
    log = get_logger("pagerd.test")
    log.warning(
        "notification.retrying",
        service_id="12345678",
        incident_id="01HZXINCIDENT00",
        detail=SMTP_REPLY,
        errors=[{"problem": "number +15550001111 unknown"}],
    )
    logging.getLogger("aiosmtplib").warning("refused: %s", "someone@example.com")
    try:
        _refuse("someone@example.com")
    except ValueError:
        log.exception("notification.dispatch_error")

    raw = out.getvalue()
    for leaked in ("someone@", "15550001111"):
        assert leaked not in raw
    first, second, third = _lines(out)
    assert first["service_id"] == "12345678"
    assert first["detail"] == mask_text(SMTP_REPLY)
    assert first["errors"] == [{"problem": "number +155*****111 unknown"}]
    assert second["event"] == "refused: s*****@example.com"
    assert third["exception"][0]["exc_value"] == "no mailbox s*****@example.com"


def test_console_lines_mask_exceptions_too() -> None:
    out = io.StringIO()
    configure_logging("console", "info", out)
    try:
        _refuse("someone@example.com")
    except ValueError:
        get_logger("pagerd.test").exception("notification.dispatch_error")
    assert "someone@" not in out.getvalue()
    assert "s*****@example.com" in out.getvalue()


async def test_a_flood_of_one_event_is_one_line_then_one_that_counts_the_rest() -> None:
    """Given 500 refusals within an interval, then one line at once, one at the interval's
    end with the count left out and the latest fields, and nothing once it is quiet."""
    out = io.StringIO()
    configure_logging("json", "info", out)
    limited = RateLimitedLog(get_logger("pagerd.test"), interval_s=0.2)
    for n in range(500):
        limited.warning("http.connection_refused", peer=f"10.0.0.{n % 250}")
    limited.error("http.accept_failed", errno="EMFILE")  # another kind: its own line

    first = _lines(out)
    assert [(line["event"], line.get("peer")) for line in first] == [
        ("http.connection_refused", "10.0.0.0"),
        ("http.accept_failed", None),
    ]
    assert "suppressed" not in first[0]
    await eventually(lambda: len(_lines(out)) == 3, timeout=2, what="the closing line")
    closing = _lines(out)[2]
    assert closing["event"] == "http.connection_refused"
    assert (closing["level"], closing["suppressed"], closing["peer"]) == (
        "warning",
        499,
        "10.0.0.249",
    )
    await asyncio.sleep(0.5)  # two more intervals, nothing new: nothing more written
    assert len(_lines(out)) == 3

    limited.warning("http.connection_refused", peer="10.0.0.1")  # later: a fresh line at once
    assert "suppressed" not in _lines(out)[3]
