"""Each way Elasticsearch can fail a user is one clear line: CLI exit code from the error table (no traceback),
HTTP 502/503 with a JSON body; bulk requests answered 429 are retried with back-off, never dropped."""

from __future__ import annotations

import json

import pytest
from es_proxy import ESProxy, Persona
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fixtures_search import DIMS, drop_alias, es_settings, free_port
from typer.testing import CliRunner

from shoptag.cli import _plain, app
from shoptag.core.errors import BackendRefused, BackendUnavailable, outcome
from shoptag.indexer.documents import Hit
from shoptag.indexer.es.backend import ESBackend
from shoptag.service.errors import install_error_handlers
from shoptag.pipeline.workspace import Workspace

pytestmark = pytest.mark.es


@pytest.fixture
def proxy(noida_server):
    proxies: list[ESProxy] = []

    def start(**persona: object) -> ESProxy:
        proxies.append(ESProxy(noida_server.url, Persona(**persona)))
        return proxies[-1]

    yield start
    for running in proxies:
        running.close()


def cli_error(tmp_path, monkeypatch, url: str, **env: str) -> tuple[int, str]:
    """Run a command that talks to Elasticsearch (`reindex --rollback`); its exit code and output."""
    monkeypatch.chdir(tmp_path)
    Workspace(tmp_path / "ws").open_store().close()  # commands that read a workspace refuse a missing one
    result = CliRunner().invoke(app, ["reindex", "--rollback"], env={
        "SHOPTAG_WORKSPACE": str(tmp_path / "ws"), "SHOPTAG_ES__URL": url, "SHOPTAG_ES__MAX_RETRIES": "1",
        "SHOPTAG_ES__INDEX_ALIAS": "errors-test", **env})
    return result.exit_code, result.output


@pytest.mark.parametrize("case", ["refused", "tls", "auth", "overloaded", "opensearch"])
def test_cli_errors_are_one_line(proxy, tmp_path, monkeypatch, case):
    env: dict[str, str] = {}
    if case == "refused":
        url, expected = f"http://127.0.0.1:{free_port()}", "is unreachable"
    elif case == "tls":  # https to a plain-http server
        url, expected = proxy().url.replace("http://", "https://"), "the TLS connection failed"
    elif case == "auth":
        url, expected = proxy(password="right").url, "rejected the credentials (401)"
        env = {"SHOPTAG_ES__USERNAME": "shop", "SHOPTAG_ES__PASSWORD": "s3cret-wrong"}
    elif case == "overloaded":
        url, expected = proxy(reject_all=True).url, "is overloaded (429"
    else:
        url, expected = proxy(version="2.17.1", distribution="opensearch").url, "the server is OpenSearch 2.17.1"
    code, output = cli_error(tmp_path, monkeypatch, url, **env)
    assert code == outcome(BackendUnavailable("")).exit_code, output
    assert expected in output and "Traceback" not in output and "s3cret" not in output
    assert len(output.strip().splitlines()) == 1, output


def test_service_answers_backend_errors_as_json(proxy):
    service = FastAPI()
    install_error_handlers(service)
    backend = ESBackend(es_settings(proxy(reject_all=True).url, max_retries=0), DIMS)

    @service.get("/count")
    def count() -> int:
        return backend.count()

    @service.get("/down")
    def down() -> int:
        raise BackendUnavailable("Elasticsearch at http://127.0.0.1:1 is unreachable (ConnectionError)")

    client = TestClient(service)
    try:
        overloaded = client.get("/count")
        assert overloaded.status_code == 502
        assert "overloaded (429" in overloaded.json()["detail"]
        assert client.get("/down").status_code == 503 and "unreachable" in client.get("/down").json()["detail"]
    finally:
        backend.close()


def test_bulk_requests_answered_429_are_retried_never_dropped(proxy, catalog_docs):
    server = proxy(reject_bulk=3)
    settings = es_settings(server.url, max_retries=1, bulk_initial_backoff=0.05, bulk_max_backoff=0.1)
    backend = ESBackend(settings, DIMS)
    try:
        report = backend.upsert(catalog_docs)
        assert report.ok and report.written == len(catalog_docs) == backend.count()
        bulks = [r for r in server.received if r.path.split("?")[0].endswith("/_bulk")]
        assert len(bulks) == 4  # three 429s, then accepted
    finally:
        backend.close()
        drop_alias(settings)


def test_json_output_of_hits_is_data_not_a_repr():
    hits = [Hit(id="a", score=0.5, title="裙", tags={"color": ["red"]})]
    (printed,) = json.loads(json.dumps(_plain(hits), ensure_ascii=False))
    assert {k: printed[k] for k in ("id", "score", "title", "tags")} == {
        "id": "a", "score": 0.5, "title": "裙", "tags": {"color": ["red"]}}


def test_a_refused_request_names_the_server_answer():
    assert issubclass(BackendRefused, BackendUnavailable)
    assert outcome(BackendRefused("x")).http_status == 502
