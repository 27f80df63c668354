"""Property-based API testing: schemathesis over the committed OpenAPI document, against a real
uvicorn process.  At least 500 generated cases (valid and invalid); no 5xx, and every response
conforms to the document (status code, content type, headers, schema).

The server runs with STAIRCASE_SYNC_TIMEOUT=0 and STAIRCASE_MAX_PENDING_JOBS=2, so generated
computations answer 202 (or 429 when two are already pending) instead of computing for minutes.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, settings

import schemathesis
from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                 response_headers_conformance, response_schema_conformance,
                                 status_code_conformance)

from service_support import ROOT, Uvicorn

pytestmark = pytest.mark.timeout(900)

SCHEMA = schemathesis.openapi.from_dict(json.loads((ROOT / "openapi" / "openapi.json").read_text()))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
MIN_CASES = 500
CALLS = {"n": 0, "status": {}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Uvicorn({"STAIRCASE_REDIS_URL": "", "STAIRCASE_CACHE_DIR": str(tmp_path_factory.mktemp("c")),
                 "STAIRCASE_SYNC_TIMEOUT": "0", "STAIRCASE_MAX_PENDING_JOBS": "2"}).start()
    yield s
    s.stop()


@SCHEMA.parametrize()
@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_document(case, server):
    response = case.call(base_url=server.base, timeout=30)
    CALLS["n"] += 1
    CALLS["status"][response.status_code] = CALLS["status"].get(response.status_code, 0) + 1
    case.validate_response(response, checks=CHECKS)


def test_enough_cases_were_generated():
    print("schemathesis cases:", CALLS["n"], "status codes:", CALLS["status"])
    assert CALLS["n"] >= MIN_CASES, CALLS
    assert not any(code >= 500 for code in CALLS["status"]), CALLS
