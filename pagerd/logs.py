"""Logging: structlog over the standard library, JSON lines or a console format.

Only the app layer calls `configure_logging`; every other module just calls
`get_logger(__name__)` and logs one event name per line with bound fields.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

FORMATS = ("json", "console")
LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
ROOT_LOGGER_NAME = "pagerd"

MASKED_FIELDS = frozenset({"phone_number", "to", "recipient", "address", "email"})
REDACTED_FIELDS = frozenset({"token", "password", "authorization", "secret"})
REDACTED = "[redacted]"
# A fixed-width mask: the number of hidden characters would itself leak information.
_MASK = "*****"
_LEADING_KEYS = ("timestamp", "level", "event")


def mask_value(value: str) -> str:
    """Partly mask a phone number or email address so logs identify without disclosing."""
    local, at, domain = value.rpartition("@")
    if at and local:
        return f"{local[0]}{_MASK}@{domain}"
    if len(value) > 7:
        return f"{value[:4]}{_MASK}{value[-3:]}"
    # Too short to show both ends without showing nearly all of it.
    return _MASK


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


def mask_personal_data(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """Processor: mask phone numbers and addresses, redact credentials."""
    for key in event_dict.keys() & (MASKED_FIELDS | REDACTED_FIELDS):
        if key in REDACTED_FIELDS:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _masked(event_dict[key])
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
    if fmt == "console":
        # plain_traceback: rich/better-exceptions would print frame locals (phone numbers, tokens).
        return [
            structlog.dev.ConsoleRenderer(
                colors=stream.isatty(), exception_formatter=structlog.dev.plain_traceback
            )
        ]
    # Structured tracebacks without locals, for the same reason.
    exception_dict = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
    return [
        structlog.processors.ExceptionRenderer(exception_dict),
        _fields_first,
        structlog.processors.JSONRenderer(),
    ]


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
        structlog.stdlib.add_log_level,
        add_timestamp,
        structlog.processors.StackInfoRenderer(),
    ]
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: reconfiguring (tests, reload) must reach loggers made at import time.
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            mask_personal_data,
            *_renderer(fmt, out),
        ],
    )
    handler = _PagerdHandler(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _PagerdHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    # Libraries (aiohttp, aiomqtt) speak at warning and up; pagerd at the configured level.
    root.setLevel(max(logging.WARNING, numeric_level))
    logging.getLogger(ROOT_LOGGER_NAME).setLevel(numeric_level)


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger; pass the module's ``__name__`` (under ``pagerd``)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name or ROOT_LOGGER_NAME)
    return logger
