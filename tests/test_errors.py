"""The one error table, `core.errors.OUTCOMES`, as both sides apply it: each row's CLI exit code and `--json`
error, each row's HTTP status and body from the service, the copy in docs/DESIGN.md, and real failures that
must land on their row."""

from __future__ import annotations

import json
import re
import socket

import numpy as np
import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from fixtures_models import REPO
from typer.testing import CliRunner

from shoptag.cli import app, mapped_errors
from shoptag.core.errors import (
    OUTCOMES, BackendRefused, BackendUnavailable, BadInput, Conflict, Corrupt, NotFound, ShoptagError, UnknownFamily,
    outcome,
)
from shoptag.service.errors import install_error_handlers
from shoptag.vectors.faiss_index import VectorIndex

# the contract as documented; a change to the table must change this and docs/DESIGN.md on purpose
DOCUMENTED = {
    BadInput: (2, 422),
    NotFound: (4, 404),
    Conflict: (5, 409),
    BackendUnavailable: (6, 503),
    BackendRefused: (6, 502),
    Corrupt: (7, 500),
    ShoptagError: (1, 500),
}


class _Unlisted(Conflict):
    """A subclass without a row of its own takes its nearest listed ancestor's."""


def test_the_table_is_the_documented_one():
    assert {cls: (o.exit_code, o.http_status) for cls, o in OUTCOMES.items()} == DOCUMENTED
    assert outcome(_Unlisted("x")) == OUTCOMES[Conflict]
    rows = re.findall(r"^\| `(\w+)`[^|]*\| (\d+) \| (\d+) \|", (REPO / "docs" / "DESIGN.md").read_text(), re.M)
    assert {name: (int(code), int(status)) for name, code, status in rows} == {
        cls.__name__: row for cls, row in DOCUMENTED.items()}


def _failing_cli(error: ShoptagError) -> typer.Typer:
    cli = typer.Typer()

    @cli.command()
    @mapped_errors
    def fail(as_json: bool = typer.Option(False, "--json")) -> None:
        raise error

    return cli


@pytest.mark.parametrize("cls", [*DOCUMENTED, _Unlisted])
def test_cli_exit_code_and_json_error_of_each_row(cls):
    error = cls(f"{cls.__name__} happened: fix [this]")
    runner = CliRunner()
    plain = runner.invoke(_failing_cli(error), [])
    assert plain.exit_code == outcome(error).exit_code and plain.stdout == ""
    assert f"{cls.__name__} happened: fix [this]" in plain.stderr
    as_json = runner.invoke(_failing_cli(error), ["--json"])
    assert as_json.exit_code == outcome(error).exit_code
    assert json.loads(as_json.stdout) == {"error": str(error), "kind": cls.__name__}


@pytest.fixture(scope="module")
def failing_service() -> TestClient:
    service = FastAPI()
    install_error_handlers(service)

    @service.get("/fail/{name}")
    def fail(name: str) -> None:
        raise {cls.__name__: cls for cls in [*DOCUMENTED, _Unlisted]}[name](f"{name} happened")

    @service.get("/bug")
    def bug() -> None:
        raise ZeroDivisionError("a bug")

    return TestClient(service, raise_server_exceptions=False)


@pytest.mark.parametrize("cls", [*DOCUMENTED, _Unlisted])
def test_service_status_and_body_of_each_row(failing_service, cls):
    response = failing_service.get(f"/fail/{cls.__name__}")
    assert response.status_code == outcome(cls("x")).http_status
    assert response.json()["detail"] == f"{cls.__name__} happened"


def test_service_hides_a_bug_behind_a_generic_500(failing_service):
    response = failing_service.get("/bug")
    assert response.status_code == 500 and "a bug" not in response.text


# ---- real failures land on their row ----------------------------------------------------------------------------
@pytest.fixture()
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None):
        return runner.invoke(app, list(args), env={"SHOPTAG_WORKSPACE": str(tmp_path / "ws"), **(env or {})})

    return invoke


def test_bad_settings_and_unknown_things_from_the_cli(run, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[tagger\nknn_k = 3\n")
    result = run("explain", "x", "--config", str(bad), "--json")
    assert result.exit_code == 2 and json.loads(result.stdout)["kind"] == "BadInput"
    assert run("explain", "x", env={"SHOPTAG_TAGGER__KNN_K": "many"}).exit_code == 2
    assert run("datasets", "nope", "--out", str(tmp_path / "c.jsonl"), "--data-dir", str(tmp_path)).exit_code == 2
    missing_data = run("datasets", "fashion", "--out", str(tmp_path / "c.jsonl"), "--data-dir", str(tmp_path / "no"))
    assert missing_data.exit_code == 4
    assert run("ingest", str(tmp_path / "missing.jsonl")).exit_code == 4  # a missing input file is NotFound


@pytest.mark.slow
def test_untrained_workspace_and_unreachable_elasticsearch(run):
    """`tag` before `train` is a Conflict; an Elasticsearch that does not answer is BackendUnavailable."""
    assert run("ingest", str(REPO / "examples" / "sample_catalog.jsonl")).exit_code == 0
    untrained = run("tag", "--json")
    assert untrained.exit_code == 5 and "shoptag train" in json.loads(untrained.stdout)["error"]
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    down = run("reindex", "--json", env={"SHOPTAG_ES__URL": f"http://127.0.0.1:{port}", "SHOPTAG_ES__MAX_RETRIES": "0",
                                         "SHOPTAG_ES__REQUEST_TIMEOUT": "2"})
    assert down.exit_code == 6 and json.loads(down.stdout)["kind"] == "BackendUnavailable"


def test_a_damaged_vector_index_is_corrupt(tmp_path):
    damaged = tmp_path / "index.npz"
    VectorIndex.build(["a", "b"], np.eye(2, dtype=np.float32)).save(damaged)
    assert VectorIndex.load(damaged).vector("b").tolist() == [0.0, 1.0]
    damaged.write_bytes(damaged.read_bytes()[:100])
    with pytest.raises(Corrupt, match="index.npz"):
        VectorIndex.load(damaged)
    with pytest.raises(Corrupt, match="missing.npz"):
        VectorIndex.load(tmp_path / "missing.npz")


def test_an_unknown_family_names_the_closest_or_the_levels_there_are():
    known = {"category", "category@1", "category@2", "colour"}
    assert str(UnknownFamily("colur", known)) == "unknown family 'colur' (did you mean colour?)"
    assert str(UnknownFamily("category@9", known)) == ("unknown family 'category@9' "
                                                       "(category has the levels category@1, category@2)")
    assert str(UnknownFamily("colour@1", known)) == ("unknown family 'colour@1' "
                                                     "(colour has no levels: its values are not paths such as 'A > B > C')")
