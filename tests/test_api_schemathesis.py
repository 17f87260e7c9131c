"""The OpenAPI document is valid, and schemathesis finds no 5xx in the API it describes.

schemathesis's client is synchronous, so the server runs on its own event loop in
a thread (tests/apisite.threaded_site), over a real SQLite file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from pagerd import __version__
from pagerd.config import (
    Config,
    DeveloperConfig,
    LevelConfig,
    PolicyConfig,
    ServiceConfig,
    TeamConfig,
)
from pagerd.core.policy import SmsTarget
from pagerd.intake.api_schemas import OPERATIONS, Problem
from pagerd.intake.openapi import openapi_document
from tests.apisite import AUTH, threaded_site

# Something to find for the ids schemathesis guesses (1, "0", ...): a team, a policy
# and a service of each kind.
CONFIG = Config(
    teams=(
        TeamConfig(name="ops", developers=(DeveloperConfig(name="op", phone_number="5550001"),)),
    ),
    policies=(PolicyConfig(id="0", levels=(LevelConfig(targets=(SmsTarget("5550002"),)),)),),
    services=(ServiceConfig(id="0", name="zero", policy="0"),),
)
SCHEMA = schemathesis.openapi.from_dict(openapi_document(OPERATIONS, __version__, Problem))


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    database: Path = tmp_path_factory.mktemp("schemathesis") / "pagerd.db"
    with threaded_site(database, CONFIG) as base:
        yield base


def test_the_served_document_is_valid_openapi(base_url: str) -> None:
    served = schemathesis.openapi.from_url(
        f"{base_url}/api/v1/openapi.json", headers=AUTH, timeout=10
    )

    served.validate()  # against the OpenAPI 3.1 meta-schema
    found = list(served.get_all_operations())
    assert all(isinstance(operation, Ok) for operation in found)
    labels = {operation.ok().label for operation in found if isinstance(operation, Ok)}
    # schemathesis leaves out the operation that serves the document it loaded.
    assert labels == {op.ok().label for op in SCHEMA.get_all_operations() if isinstance(op, Ok)} - {
        "GET /openapi.json"
    }
    assert served.raw_schema == SCHEMA.raw_schema


def test_the_document_needs_a_token(base_url: str) -> None:
    response = requests.get(f"{base_url}/api/v1/openapi.json", timeout=10)
    assert response.status_code == 401


# The live stream never ends, so it cannot be fuzzed like a request; test_live has it.
@SCHEMA.exclude(path="/events").parametrize()
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_request_makes_a_server_error(case: schemathesis.Case[Any], base_url: str) -> None:
    response = case.call(base_url=f"{base_url}/api/v1", headers=AUTH, timeout=10)
    case.validate_response(response, checks=[not_a_server_error])
