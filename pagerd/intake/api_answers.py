"""What every handler of the JSON API shares: reading a body, asking the runtime, answering.

Errors are answered as problems by the API's wrapper (``pagerd.intake.api``): a handler
raises ``RefusedError``, a body error or a catalogue error, and returns JSON otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar, assert_never

import msgspec
from aiohttp import web

from pagerd.core import policy as escalation
from pagerd.core.domain import Event, Incident
from pagerd.core.policy import DomainError
from pagerd.intake import api_schemas as wire
from pagerd.runtime.answers import Committed, Refused, Retryable
from pagerd.telemetry.logs import get_logger
from pagerd.web.server import WebContext

log = get_logger("pagerd.intake.api")

B = TypeVar("B")
MAX_INCIDENTS = wire.MAX_INCIDENTS
MAX_ID_DIGITS = 19  # a team's, developer's or override's id is a 64-bit integer


class RefusedError(Exception):
    """A request the API turns down, answered as a problem."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def json_response(value: object, status: int = 200) -> web.Response:
    return web.Response(
        status=status, body=msgspec.json.encode(value), content_type="application/json"
    )


async def read_body(request: web.Request, tp: type[B], *, empty: B | None = None) -> B:
    # aiohttp raises 413 past client_max_size; web's middleware makes it a problem.
    return wire.decode_body(await request.read(), tp, empty=empty)


async def ask(ctx: WebContext, service_id: str, event: Event) -> Committed:
    """Hand the event to the runtime; the answer once committed, else a refusal."""
    answer = await ctx.runtime.ask(service_id, event)
    match answer:
        case Committed():
            return answer
        case Refused(code="unknown_service", reason=reason):
            raise RefusedError(404, reason)
        case Refused(reason=reason):
            raise RefusedError(409, reason)
        case Retryable(reason=reason):
            log.warning("api.not_committed", service_id=service_id, error=reason)
            raise RefusedError(503, f"not saved ({reason}); sending it again is harmless")
        case _:
            assert_never(answer)


def incident_of(answer: Committed) -> Incident:
    assert answer.incident is not None  # alerts and acks that succeed name their incident
    return answer.incident


def limit(query: Mapping[str, str], problems: list[wire.FieldProblem]) -> int:
    """``?limit=`` of a listing (default 100), or a problem recorded."""
    text = query.get("limit")
    if text is None:
        return 100
    if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_INCIDENTS:
        return int(text)
    problems.append(
        wire.FieldProblem(field="limit", problem=f"must be an integer 1..{MAX_INCIDENTS}")
    )
    return 100


def new_id(request: web.Request) -> str:
    """The id in the path of a PUT, which must be a valid id."""
    value = request.match_info["id"]
    try:
        return escalation.validate_service_id(value, "id")
    except DomainError as error:
        raise wire.invalid([wire.FieldProblem(field=error.field, problem=error.problem)]) from None


def service_id_of(request: web.Request) -> str:
    """The service id in the path; 404 if it cannot be one."""
    service_id = request.match_info["id"]
    if not escalation.SERVICE_ID_PATTERN.fullmatch(service_id):
        raise RefusedError(404, f"no service {service_id!r}: ids match {escalation.SERVICE_ID}")
    return service_id
