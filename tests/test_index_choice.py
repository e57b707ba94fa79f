"""The FAISS index choice: factory by size and memory budget, training on a sample, filling in chunks, recall@10
of each choice against exact search, and the settings that searches read."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from shoptag.core.errors import BadInput
from shoptag.core.settings import IndexSettings
from shoptag.vectors.faiss_index import VectorIndex, index_options, search_threads
from shoptag.vectors.index_choice import (
    EXACT_LIMIT,
    build_index,
    choose_factory,
    index_bytes,
    nlist_for,
    recall_at_k,
    set_search_params,
)

DIM = 32


def clustered(n: int, seed: int = 0) -> np.ndarray:
    """Unit vectors around 100 centres, like products around their categories."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(100, DIM))
    vectors = centres[rng.integers(0, 100, n)] + 0.35 * rng.normal(size=(n, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def test_factory_follows_size_then_memory_budget():
    assert choose_factory(EXACT_LIMIT, 384) == "Flat"
    assert choose_factory(1_000_000, 384) == "IVF4096,SQ8"
    # 1M MiniLM vectors as 8-bit codes take ~400 MB: a 256 MB budget gets product codes, the largest that fit
    pq = choose_factory(1_000_000, 384, 256 * 2**20)
    assert pq.startswith("IVF4096,PQ") and index_bytes(pq, 1_000_000, 384) <= 256 * 2**20
    assert index_bytes(choose_factory(1_000_000, 384, 64 * 2**20), 1_000_000, 384) <= 64 * 2**20
    # a small catalog whose float vectors do not fit leaves exact search
    assert choose_factory(50_000, 384, 40 * 2**20).startswith("IVF")
    with pytest.raises(BadInput, match="memory_budget_mb"):
        choose_factory(1_000_000, 384, 2**20)
    assert nlist_for(100) == 2 and nlist_for(1_000_000) == 4096


def test_each_choice_is_trained_on_a_sample_filled_in_chunks_and_measured_against_exact_search(tmp_path):
    n = 5_000
    data = np.lib.format.open_memmap(tmp_path / "vectors.npy", mode="w+", dtype=np.float32, shape=(n, DIM))
    data[:] = clustered(n)
    data.flush()
    queries = clustered(200, seed=1)
    truth = np.argsort(-queries @ data.T, axis=1)[:, :10]
    recall = {}
    for budget in (2**20, 300_000):  # exact, then 8-bit codes
        factory = choose_factory(n, DIM, budget)
        index = build_index(data, factory, chunk=1_500)
        set_search_params(index, nprobe=16, ef_search=64)
        assert index.ntotal == n and index.is_trained
        recall[factory] = recall_at_k(index.search(queries, 10)[1], truth)
    assert list(recall) == ["Flat", "IVF128,SQ8"] and recall["Flat"] == 1.0
    assert recall["IVF128,SQ8"] >= 0.95
    # product codes (slow to train: their recall on real vectors is measured by the benchmark, not here)
    assert choose_factory(n, DIM, 150_000) == "IVF128,PQ8"


def test_search_settings_are_read_when_building_and_loading(tmp_path):
    vectors = clustered(4_000)
    ids = [f"p{i}" for i in range(len(vectors))]
    settings = IndexSettings(factory="IVF64,Flat", nprobe=1)
    index = VectorIndex.build(ids, vectors, **index_options(settings))
    one_list = index.search(vectors[:100], 10)[0]
    index.configure(IndexSettings(factory="IVF64,Flat", nprobe=64))
    every_list = index.search(vectors[:100], 10)[0]
    exact = VectorIndex.build(ids, vectors, "Flat").search(vectors[:100], 10)[0]
    assert every_list == exact and one_list != exact
    index.save(tmp_path / "index.npz")
    assert VectorIndex.load(tmp_path / "index.npz").nprobe == 64
    assert VectorIndex.load(tmp_path / "index.npz", IndexSettings(nprobe=3, hnsw_ef_search=7)).nprobe == 3
    assert VectorIndex(DIM, **index_options(IndexSettings(memory_budget_mb=1)), expected_size=20_000).factory \
        .startswith("IVF")


def test_search_threads_caps_the_openmp_threads_and_restores_them_even_after_an_error():
    before = faiss.omp_get_max_threads()
    with pytest.raises(RuntimeError), search_threads(1):
        assert faiss.omp_get_max_threads() == 1
        raise RuntimeError("a failed batch")
    assert faiss.omp_get_max_threads() == before
    with search_threads(before + 8):  # never more than the process had
        assert faiss.omp_get_max_threads() == before
