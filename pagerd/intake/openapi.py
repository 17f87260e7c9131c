"""The OpenAPI 3.1 document of ``/api/v1``, generated from the routes' Structs.

The Structs that decode the request bodies and encode the answers are the schemas, so
the document cannot drift from what the server accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import Struct

from pagerd.core.policy import SERVICE_ID, anchored

# --- the OpenAPI document --------------------------------------------------------------------

_REF = "#/components/schemas/{name}"
_PROBLEMS = {
    400: "malformed JSON, or nested deeper than 32 levels",
    401: "no token, or an unknown one",
    404: "no such object",
    409: "conflict",
    413: "body over [http] max_body_bytes",
    422: "invalid fields, each named",
    503: "not committed; try again",
}
_ROUTE_PARAM = re.compile(r"\{(\w+)(?::([^{}]*))?\}")
SERVICE_ID_SCHEMA = {"type": "string", "pattern": anchored(SERVICE_ID)}
INCIDENT_ID = {"type": "string", "minLength": 1}


@dataclass(frozen=True, slots=True)
class Operation:
    """One route: how aiohttp routes it and how the OpenAPI document describes it."""

    method: str
    path: str  # below /api/v1, as aiohttp writes it: {id:\d+} is a positive integer
    name: str  # the operationId, and the name of the method that handles it
    summary: str
    answers: Mapping[int, tuple[type[Struct] | None, str]]
    body: type[Struct] | None = None
    body_required: bool = True
    problems: tuple[int, ...] = ()
    id_schema: Mapping[str, object] = field(default_factory=lambda: SERVICE_ID_SCHEMA)
    query: tuple[Mapping[str, object], ...] = ()


def openapi_document(
    operations: Iterable[Operation], version: str, problem: type[Struct]
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``/api/v1``, from the Structs that decode and encode it;
    ``problem`` is the body of every error answer."""
    operations = list(operations)
    types_used: set[type[Struct]] = {problem}
    for op in operations:
        types_used.update(tp for tp, _ in op.answers.values() if tp is not None)
        if op.body is not None:
            types_used.add(op.body)
    ordered = sorted(types_used, key=lambda tp: tp.__name__)
    _, schemas = msgspec.json.schema_components(ordered, ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        path = _ROUTE_PARAM.sub(lambda m: "{" + m.group(1) + "}", op.path)
        paths.setdefault(path, {})[op.method.lower()] = _operation(op, problem)
    return {
        "openapi": "3.1.0",
        "info": {"title": "pagerd", "version": version},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _ref(tp: type[Struct]) -> dict[str, str]:
    return {"$ref": _REF.format(name=tp.__name__)}


def _operation(op: Operation, problem_type: type[Struct]) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (tp, description) in op.answers.items():
        responses[str(status)] = {"description": description}
        if tp is not None:
            responses[str(status)]["content"] = {"application/json": {"schema": _ref(tp)}}
    problem = {"application/problem+json": {"schema": _ref(problem_type)}}
    for status in (401, *op.problems):
        responses[str(status)] = {"description": _PROBLEMS[status], "content": problem}
    parameters: list[dict[str, object]] = []
    for m in _ROUTE_PARAM.finditer(op.path):
        integer = m.group(2) == r"\d+"
        schema = {"type": "integer", "minimum": 1} if integer else dict(op.id_schema)
        parameters.append({"name": m.group(1), "in": "path", "required": True, "schema": schema})
    parameters += [{"in": "query", "required": False, **q} for q in op.query]
    operation: dict[str, Any] = {
        "operationId": op.name,
        "summary": op.summary,
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if op.body is not None:
        operation["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    return operation
