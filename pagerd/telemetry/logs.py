"""Logging: structlog, JSON lines or a console format; libraries' stdlib logs alike.

Only the app layer calls `configure_logging`; every other module just calls
`get_logger(__name__)` and logs one event name per line with bound fields.

Phone numbers and email addresses are masked: in the fields that hold them, and by
value inside any other text (``mask_text``, which the senders apply too, to what a
provider said: an SMTP ``550 5.1.1 <someone@...>`` reaches the timeline,
``last_error`` and the MQTT events).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import msgspec
import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

FORMATS = ("json", "console")
LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
ROOT_LOGGER_NAME = "pagerd"

# --- masking -----------------------------------------------------------------------------

# A fixed-width mask: the number of hidden characters would itself leak information.
MASK = "*****"
_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*")
# With a leading +, a number may be written in groups ("+1 555-000-1111"); without one,
# only a bare run of 7 to 15 digits counts, so that ports, counts and dates stay legible.
# Not inside a longer token: an id, a version, a time, a path, a decimal number.
_PHONE = re.compile(r"(?<![\w.+:/-])(?:\+\d(?:[ -]?\d){5,14}|\d{7,15})(?!\w|[.:/-]\w)")
# Cheap tests first: most text has no "@", no "+" and no run of 7 digits, and the full
# patterns cost several times as much to find nothing.
_SEVEN_DIGITS = re.compile(r"\d{7}")


def mask_value(value: str) -> str:
    """Partly mask a phone number or email address so logs identify without disclosing."""
    local, at, domain = value.rpartition("@")
    if at and local:
        return f"{local[0]}{MASK}@{domain}"
    if len(value) > 7:
        return f"{value[:4]}{MASK}{value[-3:]}"
    # Too short to show both ends without showing nearly all of it.
    return MASK


def mask_text(text: str) -> str:
    """``text`` with every email address and phone number in it partly masked."""
    if "@" in text:
        text = _EMAIL.sub(_mask_match, text)
    if "+" in text or _SEVEN_DIGITS.search(text):
        text = _PHONE.sub(_mask_match, text)
    return text


def _mask_match(match: re.Match[str]) -> str:
    return mask_value(match.group())


MASKED_FIELDS = frozenset({"phone_number", "to", "recipient", "address", "email"})
REDACTED_FIELDS = frozenset({"token", "password", "authorization", "secret"})
REDACTED = "[redacted]"
# pagerd's own event names, identifiers and stamps: never personal data, not searched.
# (A library's line carries its message as its event: masked before, in _mask_message.)
_PLAIN_FIELDS = frozenset(
    {
        "event",
        "timestamp",
        "level",
        "logger",
        "service_id",
        "incident_id",
        "notification_id",
        "channel",
    }
)
_LEADING_KEYS = ("timestamp", "level", "event")
_MAX_NESTING = 8  # a structured traceback is a list of dicts of lists; nothing nests deeper


def _masked(value: object) -> object:
    match value:
        case str():
            return mask_value(value)
        case int():
            return mask_value(str(value))
        case list() | tuple():
            return [_masked(item) for item in value]
        case _:
            return value


def _masked_within(value: object, depth: int = 0) -> object:
    """``value`` with the numbers and addresses found inside its text masked."""
    if depth > _MAX_NESTING:
        return value
    match value:
        case str():
            return mask_text(value)
        case list() | tuple():
            return [_masked_within(item, depth + 1) for item in value]
        case dict():
            return {key: _masked_within(item, depth + 1) for key, item in value.items()}
        case _:
            return value


def mask_personal_data(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Processor: redact credentials, mask the fields that hold a phone number or address,
    and mask those found by value in any other text (a provider's reply, an error)."""
    for key, value in event_dict.items():
        if key in _PLAIN_FIELDS:
            continue
        if key in REDACTED_FIELDS:
            event_dict[key] = REDACTED
        elif key in MASKED_FIELDS:
            event_dict[key] = _masked(value)
        elif type(value) is str:
            event_dict[key] = mask_text(value)
        elif isinstance(value, list | tuple | dict):
            event_dict[key] = _masked_within(value)
    return event_dict


def _mask_message(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Processor for libraries' lines, whose event is their message, free text."""
    message = event_dict.get("event")
    if isinstance(message, str):
        event_dict["event"] = mask_text(message)
    return event_dict


def add_timestamp(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Processor: RFC 3339 UTC timestamp with milliseconds, the contract's wire format."""
    record = event_dict.get("_record")
    # Foreign (stdlib) records carry their own creation time; structlog events are "now".
    now = record.created if isinstance(record, logging.LogRecord) else time.time()
    seconds = int(now)
    millis = int((now - seconds) * 1000)
    event_dict["timestamp"] = (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
    )
    return event_dict


def _fields_first(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    # JSON keeps insertion order; timestamp, level and event first make lines scannable.
    head = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
    return {**head, **event_dict}


class _PagerdHandler(logging.StreamHandler[TextIO]):
    """The one handler pagerd installs on the root logger, so reconfiguring can find it."""


def choose_format(configured: str, stream: TextIO) -> str:
    """Console when configured so or when the stream is a terminal, else JSON."""
    if configured == "console" or stream.isatty():
        return "console"
    return "json"


def _renderer(fmt: str, stream: TextIO) -> list[Processor]:
    """Render the line; tracebacks are turned into text or data first, so that the
    masking, which comes right after, reaches the exception's message too."""
    if fmt == "console":
        # Plain text without locals: rich/better-exceptions would print frame locals
        # (phone numbers, tokens).
        return [
            structlog.processors.format_exc_info,
            mask_personal_data,
            structlog.dev.ConsoleRenderer(
                colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
            ),
        ]
    # Structured tracebacks without locals, for the same reason.
    exception_dict = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    return [
        structlog.processors.ExceptionRenderer(exception_dict),
        mask_personal_data,
        _fields_first,
        structlog.processors.JSONRenderer(serializer=_json_line),
    ]


# msgspec writes a line in a fraction of the standard library's time; anything it cannot
# encode is written as its repr, as structlog's own default does.
_encoder = msgspec.json.Encoder(enc_hook=repr)


def _json_line(event_dict: EventDict, **_: object) -> str:
    return _encoder.encode(event_dict).decode()


def configure_logging(fmt: str = "json", level: str = "info", stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging (warning and up) to one stream in one format."""
    if fmt not in FORMATS:
        msg = f"log format must be one of {', '.join(FORMATS)}, not {fmt!r}"
        raise ValueError(msg)
    if level.lower() not in LEVELS:
        msg = f"log level must be one of {', '.join(LEVELS)}, not {level!r}"
        raise ValueError(msg)
    numeric_level = LEVELS[level.lower()]
    out = sys.stdout if stream is None else stream

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        add_timestamp,
        structlog.processors.StackInfoRenderer(),
    ]
    finish = _renderer(fmt, out)
    # pagerd's own events go straight from structlog to the stream: the standard library
    # would make two LogRecords per line and walk up the stack for a caller nobody reads,
    # on every page. A filtering logger's methods below the level do nothing at all.
    structlog.configure(
        processors=[*shared, *finish],
        logger_factory=structlog.WriteLoggerFactory(out),
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # Not cached: reconfiguring (tests, reload) must reach loggers made at import time.
        cache_logger_on_first_use=False,
    )
    # Libraries (aiohttp, asyncio) speak through the standard library, at warning and up.
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, _mask_message],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *finish],
    )
    handler = _PagerdHandler(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _PagerdHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    # Unused for output, but it answers ``isEnabledFor`` for the busiest call sites.
    logging.getLogger(ROOT_LOGGER_NAME).setLevel(numeric_level)


def get_logger(name: str | None = None) -> FilteringBoundLogger:
    """A structlog logger; pass the module's ``__name__`` (under ``pagerd``)."""
    logger: FilteringBoundLogger = structlog.get_logger(name or ROOT_LOGGER_NAME)
    return logger


@dataclass(slots=True)
class _Window:
    emit: Callable[..., Any]
    suppressed: int = 0
    fields: dict[str, object] = field(default_factory=dict)


class RateLimitedLog:
    """At most one line per event name per ``interval_s``; a closing line counts the rest.

    For what a client can cause by the thousand (refused or timed-out connections,
    failed accepts): the first is logged at once, those that follow within the
    interval are only counted, and when the interval ends one line with the latest
    one's fields says how many were left out (``suppressed``). A flood that goes on
    gets one line per interval. Call it on the event loop, which closes the intervals.
    """

    def __init__(self, logger: FilteringBoundLogger, interval_s: float = 10.0) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._windows: dict[str, _Window] = {}

    def debug(self, event: str, **fields: object) -> None:
        self._log(self._logger.debug, event, fields)

    def info(self, event: str, **fields: object) -> None:
        self._log(self._logger.info, event, fields)

    def warning(self, event: str, **fields: object) -> None:
        self._log(self._logger.warning, event, fields)

    def error(self, event: str, **fields: object) -> None:
        self._log(self._logger.error, event, fields)

    def _log(self, emit: Callable[..., Any], event: str, fields: dict[str, object]) -> None:
        window = self._windows.get(event)
        if window is not None:
            window.suppressed += 1
            window.fields = fields
            return
        emit(event, **fields)
        self._open(event, _Window(emit))

    def _open(self, event: str, window: _Window) -> None:
        self._windows[event] = window
        asyncio.get_running_loop().call_later(self._interval_s, self._close, event)

    def _close(self, event: str) -> None:
        window = self._windows.pop(event)
        if window.suppressed:
            window.emit(
                event, **window.fields, suppressed=window.suppressed, interval_s=self._interval_s
            )
            self._open(event, _Window(window.emit))
