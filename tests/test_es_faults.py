"""Elasticsearch faults against real noida-db processes: down at start, gone mid-reindex, a rejected bulk item.
Whatever happens, the alias points at a complete index and no product is lost."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

import numpy as np
import pytest
from fixtures_search import DIMS, NUMERIC, drop_alias, es_settings, free_port

from shoptag.core.errors import BackendUnavailable
from shoptag.core.settings import Settings
from shoptag.indexer.backends import open_backend
from shoptag.indexer.documents import SearchDoc, SearchQuery
from shoptag.indexer.es.backend import ESBackend
from shoptag.indexer.es.client import make_client
from shoptag.indexer.es.reindex import alias_indices, is_versioned_index

pytestmark = pytest.mark.es
SECRETS = ("s3cret-api-key-value", "hunter2-password")


def versioned(client, alias: str) -> list[str]:
    """The versioned indices of `alias` that exist."""
    return sorted(name for name in client.indices.get(index=f"{alias}-*") if is_versioned_index(name, alias))


@pytest.mark.parametrize("auth", ["fields", "url"])
def test_server_down_at_start_is_a_clear_error_without_secrets(auth):
    port = free_port()  # nothing listens here
    if auth == "fields":
        es = {"url": f"http://127.0.0.1:{port}", "username": "shop", "password": SECRETS[1], "max_retries": 1}
    else:  # credentials inside the URL are moved out of it before the client or an error sees them
        es = {"url": f"http://shop:{SECRETS[1]}@127.0.0.1:{port}", "max_retries": 1}
    with pytest.raises(BackendUnavailable) as caught:
        open_backend(Settings(es=es), DIMS)
    message = str(caught.value)
    assert f"http://127.0.0.1:{port}" in message and "unreachable" in message
    assert SECRETS[1] not in message and "shop" not in message


def test_secrets_never_reach_logs_or_reprs(noida_server, caplog):
    settings = es_settings(noida_server.url, api_key=SECRETS[0])
    caplog.set_level(logging.DEBUG)
    backend = ESBackend(settings, DIMS, numeric=NUMERIC)
    try:
        backend.search(SearchQuery(text="anything"))
        assert caplog.records  # the client did log its requests
        text = caplog.text + repr(settings) + repr(backend._client) + str(settings.model_dump()) + str(settings)
        assert all(secret not in text for secret in SECRETS)
    finally:
        backend.close()
    basic = es_settings(f"http://shop:{SECRETS[1]}@127.0.0.1:1")
    client = make_client(basic)
    assert SECRETS[1] not in repr(client) and SECRETS[1] not in str(client.transport.node_pool.all())


def test_server_gone_mid_reindex_keeps_the_alias_on_the_complete_old_index(noida_factory, catalog_docs):
    server = noida_factory()
    settings = es_settings(server.url, bulk_chunk_size=3, max_retries=1)
    backend = ESBackend(settings, DIMS, numeric=NUMERIC)
    assert backend.reindex(catalog_docs).ok
    (old_index,) = alias_indices(backend._client, settings.index_alias)

    def docs_then_outage() -> Iterator[SearchDoc]:
        for i, doc in enumerate(catalog_docs):
            if i == 7:  # two chunks of three are in the new index by now
                server.stop()
            yield dataclasses.replace(doc, title="half-built")

    with pytest.raises(BackendUnavailable, match="unreachable"):
        backend.reindex(docs_then_outage())
    backend.close()

    server.start()
    backend = ESBackend(settings, DIMS, numeric=NUMERIC)
    try:
        assert alias_indices(backend._client, settings.index_alias) == [old_index]
        assert backend.count() == len(catalog_docs)
        assert [h.id for h in backend.search(SearchQuery(text="牛仔")).hits] == ["cn-jeans"]
        assert backend.search(SearchQuery(text="half-built")).hits == []
        # the next reindex succeeds: the half-built index (named by the lock the failed run left) is dropped,
        # the replaced one is kept for rollback
        assert backend.reindex(catalog_docs).ok
        (new_index,) = alias_indices(backend._client, settings.index_alias)
        assert new_index != old_index
        assert versioned(backend._client, settings.index_alias) == [old_index, new_index]
        assert backend.count() == len(catalog_docs)
    finally:
        backend.close()
        drop_alias(settings)


def test_rejected_bulk_item_is_reported_and_the_alias_not_moved(noida_server, catalog_docs):
    settings = es_settings(noida_server.url, bulk_chunk_size=4)
    backend = ESBackend(settings, DIMS, numeric=NUMERIC)
    try:
        assert backend.reindex(catalog_docs).ok
        (old_index,) = alias_indices(backend._client, settings.index_alias)
        wrong = dataclasses.replace(catalog_docs[5], text_vector=np.ones(DIMS.text * 2, dtype=np.float32))
        # the server, not our own checks, rejects it: the Elasticsearch backend sends vectors as they are
        report = backend.reindex([*catalog_docs[:5], wrong, *catalog_docs[6:]])
        assert [pid for pid, _ in report.failed] == [wrong.id]
        assert "dimension" in report.failed[0][1]
        assert report.written == 0
        assert alias_indices(backend._client, settings.index_alias) == [old_index]
        assert versioned(backend._client, settings.index_alias) == [old_index]
        assert backend.count() == len(catalog_docs)
    finally:
        backend.close()
        drop_alias(settings)


def test_unavailable_after_start_is_the_same_clear_error(noida_factory, catalog_docs):
    server = noida_factory()
    settings = es_settings(server.url, max_retries=1)
    backend = ESBackend(settings, DIMS, numeric=NUMERIC)
    backend.upsert(catalog_docs)
    server.stop()
    try:
        with pytest.raises(BackendUnavailable, match=f"127.0.0.1:{server.port}"):
            backend.search(SearchQuery(text="watch"))
        with pytest.raises(BackendUnavailable):
            backend.upsert(catalog_docs[:1])
    finally:
        backend.close()
