"""Strict inputs: a corrections line with a misspelt or missing key is a reject with its line (CLI) and a 422
(HTTP), never a silent "no value applies" that erases a tag family."""

from __future__ import annotations

import json

import pytest
from shoptag.catalog.feedback import read_corrections
from shoptag.cli import EXIT_REJECTS, app
from shoptag.core.errors import OUTCOMES, BadInput, NotFound
from shoptag.store.records import Store
from typer.testing import CliRunner


@pytest.fixture()
def cli(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no shoptag.toml of the repo's
    runner = CliRunner()
    return lambda *args: runner.invoke(app, list(args), env={"SHOPTAG_WORKSPACE": str(tmp_path / "ws")})


def test_a_feedback_typo_is_a_reject_with_its_line_and_the_family_keeps_its_tags(cli, tmp_path):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(json.dumps({"id": "P004", "title": "Red cotton shirt", "tags": {"colour": ["Red"]}}) + "\n")
    assert cli("ingest", str(catalog)).exit_code == 0
    corrections = tmp_path / "corrections.jsonl"
    corrections.write_text("\n".join([
        json.dumps({"id": "P004", "family": "colour", "value": ["Red"]}),  # `value`, not `values`
        json.dumps({"id": "P004", "family": "colour"}),  # no `values` at all
        json.dumps({"id": "P004", "family": "colour", "values": ["Red"], "note": "x"}),  # a key nobody reads
    ]) + "\n")
    result = cli("feedback", str(corrections), "--json")
    assert result.exit_code == EXIT_REJECTS, result.output
    report = json.loads(result.stdout)
    assert (report["applied"], report["rejected"]) == (0, 3)
    rejects = [json.loads(line) for line in open(report["rejects_file"], encoding="utf-8")]
    assert [r["line"] for r in rejects] == [1, 2, 3]
    assert "values: Field required" in rejects[0]["reason"] and "value: Extra inputs" in rejects[0]["reason"]
    assert "note: Extra inputs" in rejects[2]["reason"]
    store = Store(tmp_path / "ws" / "shoptag.db")
    try:
        assert [(t.family, t.value) for t in store.tags_of("P004")] == [("colour", "Red")]
    finally:
        store.close()


def test_an_explicit_empty_list_is_still_a_correction(cli, tmp_path):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(json.dumps({"id": "P004", "title": "Plain shirt", "tags": {"colour": ["Red"]}}) + "\n")
    assert cli("ingest", str(catalog)).exit_code == 0
    corrections = tmp_path / "corrections.csv"
    corrections.write_text("id,family,values\nP004,colour,\n")
    result = cli("feedback", str(corrections), "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["applied"] == 1


def test_values_as_a_string_is_a_reject_and_a_value_new_to_its_family_is_named(cli, tmp_path):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(json.dumps({"id": "P1", "title": "Red cotton shirt", "tags": {"colour": ["Red"]}}) + "\n")
    assert cli("ingest", str(catalog)).exit_code == 0
    corrections = tmp_path / "corrections.jsonl"
    corrections.write_text("\n".join(json.dumps({"id": "P1", "family": "colour", "values": v})
                                     for v in ("Teal", ["Teal"], ["Red"])) + "\n")
    result = cli("feedback", str(corrections), "--json")
    assert result.exit_code == EXIT_REJECTS, result.output
    report = json.loads(result.stdout)
    assert (report["applied"], report["rejected"], report["new_values"]) == (2, 1, ["colour=Teal"])
    (reject,) = [json.loads(line) for line in open(report["rejects_file"], encoding="utf-8")]
    assert reject["line"] == 1 and reject["reason"].startswith("bad feedback: values: Input should be a valid list")
    corrections.write_text(json.dumps({"id": "P1", "family": "colour", "values": ["Olive", "Red"]}) + "\n")
    result = cli("feedback", str(corrections))
    assert result.exit_code == 0 and "1 new value(s), held by no product before: colour=Olive" in result.stdout
    corrections = tmp_path / "corrections.csv"  # in CSV a `|`-separated cell is the list
    corrections.write_text("id,family,values\nP1,colour,Red|Olive\n")
    ((_, correction),), rejects = read_corrections(corrections)
    assert correction.values == ["Red", "Olive"] and not rejects


@pytest.mark.parametrize("toml, expected", [
    ('[service]\napikey = "s3cret"\n', "unknown setting `service.apikey`; did you mean `service.api_key`?"),
    ("[servce]\nport = 9000\n", "unknown setting `servce`; did you mean `service`?"),
    # the long name: spelling distance alone suggested `search`
    ('[elasticsearch]\nurl = "http://localhost:9200"\n', "unknown setting `elasticsearch`; did you mean `es`?"),
])
def test_an_unknown_settings_key_is_an_error_naming_the_closest_valid_key(cli, tmp_path, toml, expected):
    config = tmp_path / "shoptag.toml"
    config.write_text(toml)
    result = cli("search", "jeans", "--config", str(config))
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())


def test_an_unknown_settings_variable_is_an_error_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["search", "jeans"], env={"SHOPTAG_SERVICE__APIKEY": "s3cret"})
    assert result.exit_code == 2
    assert "did you mean `service.api_key`?" in " ".join(result.output.split())


@pytest.mark.parametrize(("env", "expected"), [
    ({"SHOPTAG_TAGER__TARGET_PRECISION": "0.8"}, "unknown settings variable SHOPTAG_TAGER__TARGET_PRECISION; "
                                                 "did you mean SHOPTAG_TAGGER__TARGET_PRECISION?"),
    ({"SHOPTAG_ELASTICSEARCH__URL": "http://localhost:9200"}, "unknown settings variable "
                                                              "SHOPTAG_ELASTICSEARCH__URL; did you mean SHOPTAG_ES__URL?"),
    ({"SHOPTAG_CONFIG": "missing.toml"}, "settings file not found: missing.toml (from SHOPTAG_CONFIG"),
    # one underscore between section and key: it was read as nothing, and search went to the empty embedded store
    ({"SHOPTAG_ES_URL": "http://localhost:9200"}, "unknown settings variable SHOPTAG_ES_URL; did you mean "
                                                  "SHOPTAG_ES__URL? (two underscores between section and key)"),
    # the official client would raise its own traceback at the first request
    ({"SHOPTAG_ES__URL": "localhost:9200"}, "es.url: Value error, 'localhost:9200' needs a scheme, a host and a port"),
    ({"SHOPTAG_ES__URL": "http://127.0.0.1"}, "needs a scheme, a host and a port, e.g. http://localhost:9200"),
])
def test_a_misspelt_section_variable_or_a_missing_config_file_is_an_error(tmp_path, monkeypatch, env, expected):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["search", "jeans"], env=env)
    assert result.exit_code == 2
    assert expected in " ".join(result.output.split())


def test_a_page_below_one_names_the_option(cli):
    result = cli("search", "jeans", "--page", "-1")
    assert result.exit_code == 2
    assert "--page must be 1 or more, got -1" in result.output


def test_serve_beyond_loopback_without_an_api_key_refuses_to_start(cli):
    result = cli("serve", "--host", "0.0.0.0", "--port", "1")
    assert result.exit_code == 2
    assert "without an API key" in result.output and "--insecure" in result.output


@pytest.mark.parametrize("host, key, insecure, refused", [
    ("127.0.0.1", None, False, False), ("::1", None, False, False), ("localhost", None, False, False),
    ("0.0.0.0", None, False, True), ("shop.example.com", None, False, True), ("0.0.0.0", None, True, False),
    ("0.0.0.0", "k", False, False),
])
def test_which_binds_need_an_api_key(host, key, insecure, refused):
    from shoptag.core.errors import BadInput
    from shoptag.core.settings import ServiceSettings
    from shoptag.service.auth import check_exposure

    settings = ServiceSettings(api_key=key)
    if refused:
        with pytest.raises(BadInput):
            check_exposure(host, settings, insecure=insecure)
    else:
        check_exposure(host, settings, insecure=insecure)


def test_a_command_that_reads_a_workspace_refuses_a_missing_one(cli, tmp_path):
    result = cli("search", "jeans")
    assert result.exit_code == OUTCOMES[NotFound].exit_code
    text = " ".join(result.output.split())
    assert "no workspace at" in text and "shoptag ingest" in text
    assert not (tmp_path / "ws").exists(), "an empty workspace was created by accident"


def test_one_id_rule_at_ingest(cli, tmp_path):
    catalog = tmp_path / "catalog.jsonl"
    records = [{"id": "shop/cat/sku-1", "title": "ok"}, {"id": "x" * 257, "title": "too long"},
               {"id": "a\tb", "title": "control character"}, {"id": "y" * 256, "title": "at the limit"}]
    catalog.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = cli("ingest", str(catalog), "--json")
    assert result.exit_code == 3, result.output
    assert (json.loads(result.stdout)["new"], json.loads(result.stdout)["rejected"]) == (2, 2)


def test_ingest_lists_every_reject_or_says_how_many_more(cli, tmp_path):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(f'{{"id": "p{i}"}}\n' for i in range(14)))  # nothing to tag: 14 rejects
    result = cli("ingest", str(catalog))
    assert result.exit_code == EXIT_REJECTS
    assert "and 4 more in the rejects file" in " ".join(result.output.split())


def test_the_quick_start_says_what_evaluate_by_image_needs():
    """With default settings (no image tower) `evaluate --modality image` refuses; the README must say so."""
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = readme.index("--modality image")
    assert "IMAGE_MODEL" in readme[start : readme.index("shoptag search", start)]


def test_an_image_over_the_pixel_limit_is_rejected_before_it_is_decoded(cli, tmp_path):
    from PIL import Image

    Image.new("1", (8000, 6000)).save(tmp_path / "huge.png")  # 48 MP in a few KB
    Image.new("RGB", (64, 48), (200, 30, 30)).save(tmp_path / "small.png")
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(json.dumps({"id": "big", "title": "poster", "image": "huge.png"}) + "\n"
                       + json.dumps({"id": "ok", "title": "poster", "image": "small.png"}) + "\n")
    result = cli("ingest", str(catalog))
    assert result.exit_code == EXIT_REJECTS
    assert "48 MP, over the limit of 40 MP" in " ".join(result.output.split())


@pytest.mark.parametrize("command", ["ingest", "feedback", "events"])
def test_a_missing_input_file_is_not_found_in_one_line(cli, tmp_path, command):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(json.dumps({"id": "p1", "title": "Red cotton shirt"}) + "\n")
    assert cli("ingest", str(catalog)).exit_code == 0
    missing = tmp_path / "nowhere" / "missing.jsonl"
    result = cli(command, str(missing))
    assert result.exit_code == OUTCOMES[NotFound].exit_code, result.output
    assert result.output.strip().count("\n") == 0 and str(missing) in " ".join(result.output.split())
    assert "not found" in result.output and "Traceback" not in result.output


# ---- output that does not mislead --------------------------------------------------------------------------------
def test_a_bogus_backend_is_an_error_not_the_embedded_store(cli):
    result = cli("reindex", "--backend", "bogus")
    assert result.exit_code == OUTCOMES[BadInput].exit_code
    assert "bad --backend 'bogus'" in " ".join(result.output.split())


def test_serve_and_datasets_speak_json(cli, tmp_path):
    refused = cli("serve", "--host", "0.0.0.0", "--port", "1", "--json")
    assert refused.exit_code == OUTCOMES[BadInput].exit_code
    assert json.loads(refused.stdout)["kind"] == "BadInput"
    missing = cli("datasets", "fashion", "--out", str(tmp_path / "c.jsonl"), "--data-dir", str(tmp_path / "no"), "--json")
    assert missing.exit_code == OUTCOMES[NotFound].exit_code and "data folder not found" in json.loads(missing.stdout)["error"]


@pytest.mark.slow
def test_serve_prints_its_startup_summary_as_one_json_line(tmp_path):
    import os
    import subprocess
    import sys

    from loopback import free_port

    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({"id": f"p{i}", "title": f"shirt {i}"}) + "\n" for i in range(3)))
    env = {**os.environ, "SHOPTAG_WORKSPACE": str(tmp_path / "ws"), "HF_HUB_OFFLINE": "1",
           "SHOPTAG_CONFIG": ""}
    run = lambda *args, **kw: subprocess.Popen([sys.executable, "-m", "shoptag.cli", *args], cwd=tmp_path, env=env,  # noqa: E731
                                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)
    assert run("ingest", str(catalog)).wait(timeout=120) == 0
    port = free_port()
    server = run("serve", "--port", str(port), "--json")
    try:
        summary = json.loads(server.stdout.readline())
    finally:
        server.kill()
        server.wait()
    assert summary["url"] == f"http://127.0.0.1:{port}"
    assert (summary["products"], summary["indexed"], summary["model"], summary["api_key"]) == (3, 3, None, False)


def test_rejects_name_the_file_and_word_json_errors_once(cli, tmp_path):
    (tmp_path / "fake.jpg").write_bytes(b"this is not a picture")
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(json.dumps({"id": "ok", "title": "shirt", "tags": {"colour": ["Red"]}}) + "\n"
                       + json.dumps({"id": "pic", "title": "poster", "image": "fake.jpg"}) + "\n"
                       + '{"id": "cut", "title": "unterminated\n')
    result = cli("ingest", str(catalog))
    assert result.exit_code == EXIT_REJECTS
    text = " ".join(result.output.split())
    assert f"corrupt or unsupported image {tmp_path / 'fake.jpg'} (not an image format Pillow reads)" in text
    assert "Unterminated string starting at column" in text
    assert "BytesIO" not in text and "at at" not in text


def test_an_image_sent_as_bytes_is_named_by_its_size_not_a_buffer_repr():
    from shoptag.tagger.image_encoder import ImageDecodeError, open_image

    with pytest.raises(ImageDecodeError) as caught:
        open_image(b"not a picture", position=3)
    assert str(caught.value) == "cannot read image item 3 <13 bytes>: not an image in a format Pillow reads"


def test_highlighted_titles_print_as_text_in_a_terminal(cli, tmp_path):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text(json.dumps({"id": "P1", "title": "Women's Jeans & Co"}) + "\n")
    assert cli("ingest", str(catalog)).exit_code == 0 and cli("reindex").exit_code == 0
    result = cli("search", "jeans", "--highlight")
    assert result.exit_code == 0 and "P1  Women's <em>Jeans</em> & Co" in result.output, result.output


def test_catalog_text_that_looks_like_terminal_markup_prints_as_it_is(cli, tmp_path):
    catalog = tmp_path / "catalog.jsonl"
    title = "Denim Jeans [/b] sale [red]new"
    catalog.write_text(json.dumps({"id": "P1", "title": title, "attributes": {"brand": "[/i] Acme"}}) + "\n"
                       + json.dumps({"id": "P2", "title": "Jeans"}) + "\n" + json.dumps({"id": "[/u]", "title": 5}) + "\n")
    assert cli("ingest", str(catalog)).exit_code == EXIT_REJECTS and cli("reindex").exit_code == 0
    assert "id '[/u]'" in cli("ingest", str(catalog)).output  # its reject line, printed as it is
    assert "brand: [/i] Acme (1)" in cli("search", "", "--attr-facet", "brand").output
    for args in (["similar", "P2", "--k", "1"], ["explain", "P1"]):  # a closing tag crashed rich: a traceback
        result = cli(*args)
        assert result.exit_code == 0 and title in result.output, (args, result.output)


def test_a_field_sort_prints_the_value_it_orders_by(cli, tmp_path):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({"id": f"P{i}", "title": f"Shirt {i}", "attributes": attrs}) + "\n"
                               for i, attrs in enumerate([{"price": "12.5"}, {"price": "9"}, {}])))
    assert cli("ingest", str(catalog)).exit_code == 0 and cli("reindex").exit_code == 0
    result = cli("search", "", "--sort", "price_asc")  # not a column of 0.0000 scores
    assert result.exit_code == 0, result.output
    assert [line.rsplit("  ", 1)[-1] for line in result.output.splitlines()[1:4]] == ["price 9", "price 12.5", "no price"]
    result = cli("search", "", "--sort", "newest", "--size", "1")
    assert "  listed 20" in result.output, result.output


def test_a_misspelt_family_is_an_error_naming_the_closest_one(cli, tmp_path):
    catalog = tmp_path / "catalog.jsonl"
    catalog.write_text("".join(json.dumps({"id": f"P{i}", "title": f"Cotton shirt {i}", "tags": {"colour": ["Red"]}}) + "\n"
                               for i in range(3)))
    assert cli("ingest", str(catalog)).exit_code == 0
    for args in (["search", "shirt", "--tag", "colur=Blue"], ["search", "shirt", "--facet", "colr"],
                 ["audit", "--family", "colr"], ["review", "--family", "Colour"], ["export", "--family", "color"]):
        result = cli(*args)
        assert result.exit_code == OUTCOMES[BadInput].exit_code, (args, result.output)
        assert "unknown family" in result.output and "(did you mean colour?)" in result.output, (args, result.output)
    result = cli("audit", "--family", "colour", "--results")  # a known family that was never audited says so
    assert result.exit_code == 0 and "no audit of colour yet" in result.output, result.output
    corrections = tmp_path / "feedback.jsonl"
    corrections.write_text(json.dumps({"id": "P1", "family": "colur", "values": ["Blue"]}) + "\n"
                           + json.dumps({"id": "P2", "family": "colour", "values": ["Blue"]}) + "\n")
    result = cli("feedback", str(corrections), "--json")
    assert result.exit_code == EXIT_REJECTS, result.output
    report = json.loads(result.stdout)
    assert (report["applied"], report["rejected"]) == (1, 1)
    assert "feedback-feedback" not in report["rejects_file"]
    (reject,) = [json.loads(line) for line in open(report["rejects_file"], encoding="utf-8")]
    assert reject["line"] == 1 and reject["reason"] == "unknown family 'colur' (did you mean colour?)"
