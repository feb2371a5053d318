"""Schemathesis against the service's own OpenAPI schema: every route, with and without a key.

No input it generates may produce a 5xx, and every response must match the schema the service
publishes (status codes, content types, bodies). Bounded: a few examples per operation.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.service_support import Server, make_checkpoint

KEY = "fuzz-key"


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("fuzz")
    srv = Server(make_checkpoint(root / "tiny.pt"), root / "data", SONA_API_KEYS=KEY).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def api_schema(fuzz_server: Server):
    return schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")


# No 5xx, and every response as documented. Not "positive data acceptance": a schema-valid
# upload may still be no image (an empty file), which the service refuses with a 4xx by design.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
FUZZ = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def check(case, headers: dict[str, str]) -> None:
    response = case.call(headers=headers, timeout=30)
    assert response.status_code < 500, f"{case.method} {case.path}: {response.text[:500]}"
    case.validate_response(response, checks=CHECKS)


# Schemathesis' pytest plugin does not run under pytest 9; its strategies drive hypothesis here.
@pytest.mark.slow
@pytest.mark.parametrize("authorised", [True, False], ids=["with-key", "without-key"])
def test_every_operation_conforms_to_the_schema(api_schema, authorised: bool) -> None:
    headers = {"Authorization": f"Bearer {KEY}"} if authorised else {}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @FUZZ
        @given(case=operation.as_strategy())
        def run(case) -> None:
            check(case, headers)

        run()
