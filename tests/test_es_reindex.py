"""The full reindex protocol on noida-db: one run per alias at a time (a lock in Elasticsearch), an index
template so a stray write can never create a dynamically mapped index, count and mapping checks before the swap,
cleanup after a crash (`kill -9`), rollback, and build-time index settings. The live alias always points at a
complete index with the right mapping."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures_search import DIMS, drop_alias, es_settings

from shoptag.indexer.documents import SearchDoc, SearchQuery
from shoptag.indexer.es.backend import ESBackend
from shoptag.indexer.es.lock import LOCK_ID, ReindexLocked, lock_index
from shoptag.indexer.es.mapping import index_body
from shoptag.indexer.es.reindex import (
    NothingToRollBack, ReindexCheckFailed, alias_indices, is_versioned_index, mapping_problems, previous_alias,
)
from shoptag.pipeline.workspace import Workspace

pytestmark = pytest.mark.es


@pytest.fixture
def es(noida_server):
    """A backend on a fresh alias (small bulk chunks, so a reindex is several requests), dropped after."""
    settings = es_settings(noida_server.url, bulk_chunk_size=3)
    backend = ESBackend(settings, DIMS)
    yield backend
    backend.close()
    drop_alias(settings)


def versioned(backend: ESBackend) -> list[str]:
    alias = backend.alias
    return sorted(n for n in backend._client.indices.get(index=f"{alias}-*") if is_versioned_index(n, alias))


def building(backend: ESBackend) -> str:
    """The versioned index a running reindex is filling (neither live nor previous)."""
    kept = set(alias_indices(backend._client, backend.alias)) | set(alias_indices(backend._client, previous_alias(backend.alias)))
    (name,) = [n for n in versioned(backend) if n not in kept]
    return name


def assert_live_is_complete(backend: ESBackend, docs: list[SearchDoc], marker: str | None = None) -> None:
    (live,) = alias_indices(backend._client, backend.alias)
    client = backend._client
    assert client.count(index=live)["count"] == len(docs)
    expected = index_body("v1", DIMS, backend.settings.vector_index_type)["mappings"]
    assert mapping_problems(client.indices.get_mapping(index=live)[live]["mappings"], expected) == []
    if marker is not None:
        assert backend.search(SearchQuery(text=marker, size=50)).total == len(docs)


def retitled(docs: list[SearchDoc], marker: str) -> list[SearchDoc]:
    return [dataclasses.replace(d, title=f"{d.title} {marker}") for d in docs]


def test_a_second_reindex_while_one_runs_fails_clearly_and_the_first_completes(es, noida_server, catalog_docs):
    assert es.reindex(retitled(catalog_docs, "alpha")).ok
    other = ESBackend(es.settings, DIMS)
    refused: list[str] = []

    def docs() -> Iterator[SearchDoc]:
        for i, doc in enumerate(retitled(catalog_docs, "beta")):
            if i == 6:
                with pytest.raises(ReindexLocked, match="another reindex of .* is running") as caught:
                    other.reindex(retitled(catalog_docs, "gamma"))
                refused.append(str(caught.value))
                assert_live_is_complete(es, catalog_docs, "alpha")  # the live index is untouched meanwhile
            yield doc

    try:
        assert es.reindex(docs()).ok
    finally:
        other.close()
    assert len(refused) == 1 and "\n" not in refused[0]
    assert_live_is_complete(es, catalog_docs, "beta")
    assert len(versioned(es)) == 2  # live and previous; nothing of the refused run
    assert not es._client.exists(index=lock_index(es.alias), id=LOCK_ID)  # released


def test_an_index_deleted_while_filling_never_goes_live(es, catalog_docs):
    """What orphan cleanup once did to a running reindex: the rest of its bulk re-creates the index. The index
    template gives it the strict mapping (never dynamic floats), and the count check keeps it from going live."""
    assert es.reindex(retitled(catalog_docs, "alpha")).ok

    def docs() -> Iterator[SearchDoc]:
        for i, doc in enumerate(retitled(catalog_docs, "beta")):
            if i == 6:  # two chunks of three are in
                es._client.indices.delete(index=building(es))
            yield doc

    with pytest.raises(ReindexCheckFailed, match=r"holds \d+ documents, 12 were written.*stays on") as caught:
        es.reindex(docs())
    assert "\n" not in str(caught.value)
    assert_live_is_complete(es, catalog_docs, "alpha")
    assert len(versioned(es)) == 1  # the half-built index was dropped


def test_the_index_template_gives_a_stray_index_the_strict_mapping(es, catalog_docs):
    assert es.reindex(catalog_docs).ok
    stray = f"{es.alias}-v1-{'9' * 20}"
    es._client.index(index=stray, id="x", document={"id": "x", "text_vector": [0.5] * DIMS.text}, refresh=True)
    mapping = es._client.indices.get_mapping(index=stray)[stray]["mappings"]
    assert mapping["properties"]["text_vector"]["type"] == "dense_vector"
    assert mapping_problems(mapping, index_body("v1", DIMS, es.settings.vector_index_type)["mappings"]) == []
    with pytest.raises(Exception, match="strict"):
        es._client.index(index=stray, id="y", document={"id": "y", "surprise": 1})


def test_a_killed_reindex_is_cleaned_up_by_the_next_run(es, catalog_docs, tmp_path):
    assert es.reindex(retitled(catalog_docs, "alpha")).ok
    (old,) = alias_indices(es._client, es.alias)
    script = tmp_path / "reindex.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from fixtures_search import CATALOG, DIMS, make_doc
        from shoptag.indexer.es.backend import ESBackend
        from shoptag.core.settings import ESSettings
        settings = ESSettings.model_validate_json({es.settings.model_dump_json()!r})
        def docs():
            for i, row in enumerate(CATALOG):
                if i == 6:
                    print("half", flush=True)
                    time.sleep(600)
                yield make_doc(*row, seed=i)
        ESBackend(settings, DIMS).reindex(docs())
    """))
    child = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "half"
        time.sleep(0.5)  # the first chunks are in
        half_built = building(es)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert_live_is_complete(es, catalog_docs, "alpha")
    assert es.reindex(retitled(catalog_docs, "beta")).ok  # the dead run's lock is stale: taken over
    assert half_built not in versioned(es)
    (new,) = alias_indices(es._client, es.alias)
    assert versioned(es) == [old, new]
    assert_live_is_complete(es, catalog_docs, "beta")


def test_a_live_lock_of_another_host_is_respected_until_it_expires(es, catalog_docs):
    assert es.reindex(catalog_docs).ok
    lock = {"owner": "elsewhere:1:abc", "host": "elsewhere", "pid": 1, "index": f"{es.alias}-v1-{'1' * 20}",
            "started": int(time.time() * 1000), "expires": int(time.time() * 1000) + 60_000}
    es._client.index(index=lock_index(es.alias), id=LOCK_ID, document=lock, refresh=True)
    with pytest.raises(ReindexLocked, match="elsewhere:1:abc"):
        es.reindex(catalog_docs)
    es._client.index(index=lock_index(es.alias), id=LOCK_ID, document={**lock, "expires": 0}, refresh=True)
    assert es.reindex(catalog_docs).ok
    assert_live_is_complete(es, catalog_docs)


def test_rollback_swaps_back_to_the_replaced_index_in_one_step(es, catalog_docs):
    with pytest.raises(NothingToRollBack, match="no previous index"):
        es.rollback()
    assert es.reindex(retitled(catalog_docs, "alpha")).ok
    assert es.reindex(retitled(catalog_docs, "beta")).ok
    first, second = versioned(es)
    assert es.rollback() == (second, first)
    assert_live_is_complete(es, catalog_docs, "alpha")
    assert alias_indices(es._client, previous_alias(es.alias)) == [second]
    assert es.rollback() == (first, second)  # and back again
    assert_live_is_complete(es, catalog_docs, "beta")
    assert es.reindex(retitled(catalog_docs, "gamma")).ok  # a reindex after a rollback keeps live + previous
    assert len(versioned(es)) == 2


def test_a_build_has_no_replicas_or_refresh_and_gets_them_back_before_the_swap(noida_server, catalog_docs):
    settings = es_settings(noida_server.url, bulk_chunk_size=3, number_of_shards=2, number_of_replicas=2,
                           refresh_interval="7s")
    backend = ESBackend(settings, DIMS)
    during: list[dict] = []

    def docs() -> Iterator[SearchDoc]:
        for i, doc in enumerate(catalog_docs):
            if i == 6:
                name = building(backend)
                during.append(backend._client.indices.get_settings(index=name)[name]["settings"]["index"])
            yield doc

    try:
        assert backend.reindex(docs()).ok
        (live,) = alias_indices(backend._client, settings.index_alias)
        after = backend._client.indices.get_settings(index=live)[live]["settings"]["index"]
    finally:
        backend.close()
        drop_alias(settings)
    assert (during[0]["number_of_replicas"], during[0]["refresh_interval"]) == ("0", "-1")
    assert (after["number_of_shards"], after["number_of_replicas"], after["refresh_interval"]) == ("2", "2", "7s")


def test_upserts_do_not_force_a_refresh_unless_asked(noida_server, catalog_docs):
    for wait, interval, visible in ((False, "-1", 0), (True, "1s", 3)):
        settings = es_settings(noida_server.url, refresh_interval=interval, wait_for_refresh=wait)
        backend = ESBackend(settings, DIMS)
        try:
            backend.upsert(catalog_docs[:3])
            assert backend.search(SearchQuery(size=50)).total == visible
        finally:
            backend.close()
            drop_alias(settings)


def test_cli_rollback(es, catalog_docs, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from shoptag.cli import app

    monkeypatch.chdir(tmp_path)
    env = {"SHOPTAG_WORKSPACE": str(tmp_path / "ws"), "SHOPTAG_ES__URL": es.settings.url,
           "SHOPTAG_ES__INDEX_ALIAS": es.alias}
    runner = CliRunner()
    Workspace(tmp_path / "ws").open_store().close()  # commands that read a workspace refuse a missing one
    nothing = runner.invoke(app, ["reindex", "--rollback"], env=env)
    assert nothing.exit_code == 5 and "no previous index is kept" in nothing.output  # a Conflict
    assert "Traceback" not in nothing.output and len(nothing.output.strip().splitlines()) == 1
    assert es.reindex(retitled(catalog_docs, "alpha")).ok and es.reindex(retitled(catalog_docs, "beta")).ok
    first, second = versioned(es)
    moved = runner.invoke(app, ["reindex", "--rollback", "--json"], env=env)
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.stdout) == {"from": second, "to": first}
    assert_live_is_complete(es, catalog_docs, "alpha")
