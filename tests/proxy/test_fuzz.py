"""Property-based fuzzing of the live proxy from its own /openapi.json (Schemathesis).

Every operation but the endless streams (SSE) gets a bounded number of generated requests
against a real stack; each response must not be a server error and must conform to the
document: a documented status, its media type, its schema and its headers.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.proxy import ProxyStack, proxy_stack

pytestmark = pytest.mark.timeout(300)

#: generated requests per operation (bounded: the suite stays quick on 2 cores)
EXAMPLES = 25


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyStack]:
    with proxy_stack(tmp_path_factory.mktemp("fuzz") / "home") as s:
        yield s


#: the operations that stream without end (``x-endless-stream``): a fuzzer cannot read
#: them to the end; tests/proxy/test_contract.py covers them
ENDLESS = ["/v1/state/watch", "/v1/logs/tail"]


@pytest.fixture(scope="module")
def api_schema(fuzz_stack: ProxyStack) -> Any:
    return schemathesis.openapi.from_url(fuzz_stack.url + "/openapi.json")


def test_the_endless_streams_are_marked(api_schema: Any) -> None:
    marked = [
        path
        for path, methods in api_schema.raw_schema["paths"].items()
        if any(op.get("x-endless-stream") for op in methods.values())
    ]
    assert marked == ENDLESS


schema = schemathesis.pytest.from_fixture("api_schema").exclude(path=ENDLESS)


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_every_response_conforms_and_none_is_a_server_error(
    case: Any, fuzz_stack: ProxyStack
) -> None:
    if case.query:
        # a caller-chosen ``timeout`` shorter than the broker's answer for an unknown service
        # (its request_timeout) is a correct 504: the generated cases wait the default
        case.query.pop("timeout", None)
    response = case.call(timeout=15, headers=fuzz_stack.auth)  # as admin: past the 401s
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}"
    )
    case.validate_response(
        response,
        checks=[
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
            response_headers_conformance,
        ],
    )
