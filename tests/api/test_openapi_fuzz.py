"""schemathesis against the server's own OpenAPI document, on a real socket: every route, with
generated valid and invalid requests, never answers a 5xx or a body its schema does not allow."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from apitools import live_server  # type: ignore[import-not-found]
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
)

from lake import Lake, Uploads
from lake.keys import ApiKeys

SAMPLE = Path(__file__).parents[1] / "data" / "sample.ndjson"
_SERVER: dict[str, str] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    lake = Lake(str(tmp_path_factory.mktemp("fuzz") / "lake"))
    uploads = Uploads(lake)
    assert uploads.run(uploads.create(SAMPLE.read_bytes()).id).status == "SUCCEEDED"
    _, key = ApiKeys(lake).create("acme")
    with live_server(lake) as url:
        _SERVER.update(url=url, key=key)
        yield _SERVER


def _schema() -> Any:
    from api.app import create_app

    return schemathesis.openapi.from_dict(create_app().openapi())


schema = _schema()


@schema.parametrize()
# 15 cases a route in CI; SHOAL_TEST_FUZZ_EXAMPLES=200 for a deeper run
@settings(
    max_examples=int(os.environ.get("SHOAL_TEST_FUZZ_EXAMPLES", "15")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_route_fails_or_breaks_its_schema(case: Any, server: dict[str, str]) -> None:
    response = case.call(base_url=server["url"], headers={"x-api-key": server["key"]}, timeout=60)
    case.validate_response(
        response,
        checks=[not_a_server_error, content_type_conformance, response_schema_conformance],
    )
