"""Chinese queries of one to four characters find every product whose title contains them, on both backends:
a table of real queries over the first 500 Taobao titles of ../shared/data/taobao-ner."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from fixtures_search import DIMS, drop_alias, es_settings

from shoptag.indexer.documents import SearchDoc, SearchQuery
from shoptag.indexer.embedded_search import EmbeddedBackend
from shoptag.indexer.es.backend import ESBackend

pytestmark = [pytest.mark.es, pytest.mark.data]
# one to four characters, each in at least one of the titles
QUERIES = ["裙", "鞋", "表", "帽", "袜", "包", "手机", "耳机", "手表", "手链", "情侣", "连衣裙", "双肩包", "运动鞋",
           "数据线", "蓝牙耳机"]


@pytest.fixture(scope="module", params=["embedded", "noida"])
def taobao_backend(request, taobao_slice, tmp_path_factory) -> Iterator[tuple[EmbeddedBackend | ESBackend, dict]]:
    rng = np.random.default_rng(0)
    docs = []
    for record in taobao_slice.records:
        vector = rng.normal(size=DIMS.text).astype(np.float32)
        docs.append(SearchDoc(id=record["id"], title=record["title"], text_vector=vector, fused_vector=vector))
    titles = {d.id: d.title.lower() for d in docs}
    if request.param == "embedded":
        backend = EmbeddedBackend(tmp_path_factory.mktemp("taobao-search"), DIMS)
        settings = None
    else:
        settings = es_settings(request.getfixturevalue("noida_server").url)
        backend = ESBackend(settings, DIMS)
    assert backend.reindex(docs).ok
    yield backend, titles
    backend.close()
    if settings is not None:
        drop_alias(settings)


@pytest.mark.parametrize("query", QUERIES)
def test_short_chinese_queries_find_every_product_containing_them(taobao_backend, query):
    backend, titles = taobao_backend
    containing = {pid for pid, title in titles.items() if query in title}
    assert containing, f"{query} is in none of the titles: the table is wrong"
    results = backend.search(SearchQuery(text=query, size=len(titles)))
    found = [h.id for h in results.hits]
    assert containing <= set(found)
    assert query in titles[found[0]]
    if len(query) == 1:  # a single character matches exactly the products containing it
        assert set(found) == containing and results.total == len(containing)
