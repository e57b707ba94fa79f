"""The CLI as a user runs it: help everywhere, JSON output, exit codes, and the image path end to end."""

from __future__ import annotations

import json
import shutil

import pytest
from fixtures_models import REPO, SAMPLE
from typer.testing import CliRunner

from shoptag.cli import EXIT_REJECTS, EXIT_USAGE, app

COMMANDS = ["ingest", "train", "tag", "explain", "feedback", "evaluate", "search", "similar", "reindex", "check",
            "backup", "restore", "datasets", "train-clip", "serve", "review", "audit", "model", "events", "recommend",
            "suggest-tags", "rules"]


@pytest.fixture()
def run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no shoptag.toml of the repo's
    runner = CliRunner()

    def invoke(*args: str, env: dict | None = None):
        return runner.invoke(app, list(args), env={"SHOPTAG_WORKSPACE": str(tmp_path / "ws"), **(env or {})})

    return invoke


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(run, command):
    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_help_reads_as_written(run):
    """Arguments named as in click's usage lines (CATALOG, not `{catalog}`), flags without a `<bool>`, `[ray]`
    not eaten as markup, and each command's first sentence whole in the list of commands."""
    for command in [*COMMANDS, "export"]:
        text = run(command, "--help").output
        (usage,) = [line for line in text.splitlines() if line.strip().startswith("Usage:")]
        assert "{" not in usage and "<bool>" not in text and "list[str]" not in text, (command, text)
    assert "ingest [OPTIONS] CATALOG" in run("ingest", "--help").output
    assert "pip install 'shoptag[ray]'" in " ".join(run("tag", "--help").output.split())
    assert "..." not in run("--help").output.split("Commands:")[1]


def test_rejects_give_exit_code_3_and_json_counts(run):
    result = run("ingest", str(REPO / "examples" / "bad_catalog.jsonl"), "--json")
    assert result.exit_code == EXIT_REJECTS
    data = json.loads(result.stdout)
    assert (data["new"], data["rejected"]) == (2, 14)


def test_bad_usage_gives_exit_code_2_and_unknown_ids_4(run):
    assert run("ingest", str(SAMPLE)).exit_code == 0
    assert run("search", "jeans", "--tag", "no-equals-sign").exit_code == EXIT_USAGE
    for bad, says in ((["--size", "0"], "size must be"), (["--page", "0"], "--page must be 1 or more"),
                      (["--page", "500"], "cursor"), (["--sort", "cheapest"], "unknown sort"),
                      (["--range", "price=50:10"], "above max"), (["--range", "price=cheap:10"], "not a number"),
                      (["--range", "weight=1:2"], "not a numeric attribute"), (["--attr", "nope=1"], "unknown attribute"),
                      (["--cursor", "garbage"], "damaged"), (["--diversity", "shuffle"], "unknown diversity")):
        result = run("search", "jeans", *bad)
        assert result.exit_code == EXIT_USAGE and says in result.output and "Traceback" not in result.output, bad
    too_long = run("search", "x" * 501)  # the service's limit too
    assert too_long.exit_code == EXIT_USAGE and "at most 500" in too_long.output
    assert run("reindex", "--backend", "es").exit_code == EXIT_USAGE  # no Elasticsearch URL set
    missing = run("explain", "no-such-id", "--json")
    assert missing.exit_code == 4 and json.loads(missing.stdout) == {"error": "unknown product id 'no-such-id'",
                                                                     "kind": "NotFound"}


def test_images_through_the_whole_pipeline(run, tmp_path):
    """train-clip a tiny tower on the sample's photos, then tag with text + image vectors."""
    ckpt = tmp_path / "clip"
    result = run("train-clip", str(SAMPLE), "--out", str(ckpt), "--model", "shoptag-tiny", "--epochs", "1",
                 "--batch-size", "4", "--max-steps", "2", "--json")
    assert result.exit_code == 0, result.output
    checkpoints = sorted(ckpt.glob("*.pt"))
    assert checkpoints
    # a copy of the sample where sp-001, which has a photo, is not labelled: the model must tag it
    shutil.copytree(SAMPLE.parent / "images", tmp_path / "images")
    records = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
    records = [{k: v for k, v in r.items() if not (r["id"] == "sp-001" and k == "tags")} for r in records]
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
    env = {"SHOPTAG_ENCODERS__IMAGE_MODEL": "shoptag-tiny", "SHOPTAG_ENCODERS__IMAGE_CHECKPOINT": str(checkpoints[-1]),
           "SHOPTAG_ENCODERS__TEXT_MODEL": "use-multilingual"}
    for step in (["ingest", str(catalog)], ["train"], ["tag"]):
        result = run(*step, env=env)
        assert result.exit_code == 0, result.output
    explained = json.loads(run("explain", "sp-001", "--json", env=env).stdout)  # sp-001 has a photo
    modalities = {t["evidence"]["modality"] for ts in explained["tags"].values() for t in ts if "evidence" in t}
    assert modalities == {"text+image"}
    no_photo = json.loads(run("explain", "sp-008", "--json", env=env).stdout)
    assert {t["evidence"]["modality"] for ts in no_photo["tags"].values() for t in ts if "evidence" in t} == {"text"}
    # the image tower's id is part of the model: another checkpoint makes the saved model stale
    stale = run("tag", env={**env, "SHOPTAG_ENCODERS__IMAGE_CHECKPOINT": ""})
    assert stale.exit_code == 5 and "train" in stale.output  # Conflict


def test_search_before_anything_is_indexed_says_what_to_run(run):
    assert run("ingest", str(SAMPLE)).exit_code == 0
    result = run("search", "jeans")
    assert result.exit_code == 0 and "0 matches" in result.stdout, result.output
    assert "nothing is indexed yet (70 products in the store): run `shoptag tag`" in result.stdout
    assert run("reindex").exit_code == 0
    assert "nothing is indexed" not in run("search", "jeans").stdout
    none = run("search", "jeans", "--range", "price=99999:")  # nothing matches, but the index is not the reason
    assert none.exit_code == 0 and "0 matches" in none.stdout and "nothing is indexed" not in none.stdout, none.output


def test_json_output_is_strict_json_with_nan_as_null(capsys):
    from dataclasses import dataclass

    from shoptag.cli import _emit

    @dataclass
    class Hit:
        id: str
        score: float

    _emit(True, {"f1": float("nan"), "buckets": [{"f1_macro": float("inf")}], "hits": [Hit("a", 0.5)]}, lambda: None)
    printed = capsys.readouterr().out

    def refuse(constant: str):
        raise AssertionError(f"not strict JSON: {constant}")

    assert json.loads(printed, parse_constant=refuse) == {"f1": None, "buckets": [{"f1_macro": None}],
                                                         "hits": [{"id": "a", "score": 0.5}]}
