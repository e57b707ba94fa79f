"""`shoptag export`: every product's winning tags with score, status and source, in three formats, streamed."""

from __future__ import annotations

import csv
import json
import re

import pyarrow.parquet as pq
from typer.testing import CliRunner

from shoptag.cli import EXIT_USAGE, app
from shoptag.pipeline.export import export


def test_export_writes_every_product_with_its_winning_tags(trained_sample, tmp_path):
    settings, store, _ = trained_sample
    report = export(store, tmp_path / "tags.jsonl", "jsonl")
    lines = [json.loads(line) for line in (tmp_path / "tags.jsonl").read_text(encoding="utf-8").splitlines()]
    assert report.products == len(lines) == store.count_products()
    assert [r["id"] for r in lines] == sorted(store.product_ids())
    by_id = {r["id"]: r["tags"] for r in lines}
    effective = store.effective_tags()
    for pid, families in by_id.items():
        for family, tags in families.items():
            # the same winners as the store's own rule: one source per family, feedback > catalog > model
            assert len({t["source"] for t in tags}) == 1
            accepted = sorted(t["value"] for t in tags if t["status"] == "accepted")
            assert accepted == sorted(v for v, _, _ in effective.get(pid, {}).get(family, []))
    sources = {t["source"] for tags in by_id.values() for ts in tags.values() for t in ts}
    assert sources == {"catalog", "model"}
    assert report.tags == sum(len(ts) for tags in by_id.values() for ts in tags.values())


def test_export_filters_and_formats_agree(trained_sample, tmp_path):
    _, store, _ = trained_sample
    every = export(store, tmp_path / "all.csv", "csv")
    review = export(store, tmp_path / "review.csv", "csv", status="review", families=["category"])
    rows = list(csv.DictReader((tmp_path / "review.csv").open(encoding="utf-8")))
    assert rows and {r["status"] for r in rows} == {"review"} and {r["family"] for r in rows} == {"category"}
    assert review.tags == len(rows) < every.tags
    export(store, tmp_path / "all.parquet", "parquet")
    table = pq.read_table(tmp_path / "all.parquet")
    assert table.num_rows == every.tags
    assert table.column_names == ["id", "family", "value", "score", "status", "source"]


def test_export_cli_streams_to_stdout_and_checks_its_options(trained_sample, monkeypatch, tmp_path):
    settings, store, _ = trained_sample
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    env = {"SHOPTAG_WORKSPACE": str(settings.workspace), "SHOPTAG_ENCODERS__TEXT_MODEL": "use-multilingual"}
    result = runner.invoke(app, ["export", "--status", "accepted"], env=env)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == store.count_products()
    assert all(t["status"] == "accepted" for r in lines for ts in r["tags"].values() for t in ts)
    assert runner.invoke(app, ["export", "--format", "xml"], env=env).exit_code == EXIT_USAGE
    assert runner.invoke(app, ["export", "--format", "parquet"], env=env).exit_code == EXIT_USAGE  # needs --out


def test_export_says_its_time_is_the_write_alone(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(json.dumps({"id": "P1", "title": "Red shirt", "tags": {"colour": ["Red"]}}) + "\n")
    runner, env = CliRunner(), {"SHOPTAG_WORKSPACE": str(tmp_path / "ws")}
    assert runner.invoke(app, ["ingest", str(catalog)], env=env).exit_code == 0
    result = runner.invoke(app, ["export", "--out", str(tmp_path / "tags.jsonl")], env=env)
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"exported 1 products, 1 tags → \S+tags\.jsonl; the write took [\d.]+ s \([\d,]+ products/s\), "
                        r"start-up not counted", result.stdout.strip()), result.stdout
    report = json.loads(runner.invoke(app, ["export", "--out", str(tmp_path / "t.csv"), "--format", "csv", "--json"],
                                      env=env).stdout)
    assert {"write_seconds", "write_products_per_second"} <= set(report) and "seconds" not in report
