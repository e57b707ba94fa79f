"""The HTTP API fuzzed from its own OpenAPI document (schemathesis): no 500s, no hangs, every response as the
schema says; plus the bodies a schema-driven fuzzer does not reach (nesting past any recursion limit)."""

from __future__ import annotations

import shutil
import sqlite3
from urllib.parse import quote
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from schemathesis import checks
from hypothesis import HealthCheck, given
from hypothesis import settings as fuzz_settings
from service_helpers import API_KEY, service_settings, thread_server
from shoptag.pipeline.workspace import Workspace

AUTH = {"X-API-Key": API_KEY}
# what the API promises: no 5xx, only documented status codes, content types, bodies and headers. Not that every
# schema-valid body is accepted: a product with nothing to tag or a duplicate id is a 422 the schema cannot state
CHECKS = [checks.not_a_server_error, checks.status_code_conformance, checks.content_type_conformance,
          checks.response_schema_conformance, checks.response_headers_conformance]


@pytest.fixture(scope="module")
def served(trained_sample, tmp_path_factory) -> Iterator[str]:
    """The service on a copy of the trained sample workspace (its index is built at start)."""
    source = Workspace(trained_sample[0].workspace)
    root = tmp_path_factory.mktemp("fuzzed") / "ws"
    shutil.copytree(source.root, root, ignore=shutil.ignore_patterns("*-wal", "*-shm"))
    for name in ("shoptag.db", "embeddings.db"):  # consistent copies of the live SQLite files
        with sqlite3.connect(source.root / name) as src, sqlite3.connect(root / name) as dst:
            src.backup(dst)
    settings = service_settings(root)
    with thread_server(settings) as url:
        yield url


@pytest.mark.slow
def test_the_api_answers_every_generated_request_as_its_schema_says(served):
    """Every operation of the service's own OpenAPI document, with generated valid and invalid requests."""
    schema = schemathesis.openapi.from_url(f"{served}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    for operation in operations:

        @given(case=operation.as_strategy())
        @fuzz_settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                       database=None)
        def answers_as_documented(case) -> None:
            case.call_and_validate(headers=AUTH, timeout=60, checks=CHECKS)

        answers_as_documented()


@pytest.mark.slow
@pytest.mark.parametrize("path", ["/products", "/feedback"])
def test_a_body_nested_past_the_recursion_limit_is_a_client_error(served, path):
    body = b'{"id": "deep", "title": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"  # under service.max_body_bytes
    response = httpx.post(f"{served}{path}", content=body, headers={**AUTH, "Content-Type": "application/json"},
                          timeout=60)
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]


@pytest.mark.slow
def test_a_feedback_typo_is_a_422_naming_the_keys(served):
    response = httpx.post(f"{served}/feedback", json={"id": "sp-001", "family": "colour", "value": ["Red"]},
                          headers=AUTH, timeout=60)
    assert response.status_code == 422, response.text
    detail = " ".join(response.json()["detail"])
    assert "values: Field required" in detail and "value: Extra inputs are not permitted" in detail


@pytest.mark.slow
def test_every_valid_id_can_be_read_and_deleted_over_http(served):
    pid = "shop/cat 1/sku-" + "x" * 200  # `/` and spaces are valid, 215 characters
    created = httpx.post(f"{served}/products", json={"id": pid, "title": "Blue denim jeans"}, headers=AUTH, timeout=120)
    assert created.status_code == 200, created.text
    path = quote(pid, safe="")
    assert httpx.get(f"{served}/products/{path}", timeout=60).json()["id"] == pid
    assert httpx.get(f"{served}/similar/{path}", timeout=60).status_code == 200
    assert httpx.delete(f"{served}/products/{path}", headers=AUTH, timeout=60).json() == {"id": pid, "deleted": True}
    too_long = httpx.post(f"{served}/products", json={"id": "x" * 257, "title": "t"}, headers=AUTH, timeout=60)
    assert too_long.status_code == 422
