"""Which FAISS index a set of vectors gets, from its size and a memory budget, and building it in bounded memory.

Exact search (`Flat`) up to `EXACT_LIMIT` vectors, when their float32 copies fit the budget; then an inverted
file of 8-bit scalar-quantised vectors (`IVF{nlist},SQ8`, a quarter of the memory; recall@10 at the default
`nprobe` is in docs/BENCHMARKS.md); when even that does not fit, product quantisation (`IVF{nlist},PQ{m}`) with
the most sub-quantisers the budget allows. HNSW is never chosen here: it needs more memory than `Flat` and cannot
remove vectors; name it in `index.factory` to use it.

An index is trained on a fixed random sample (k-means needs no more than a few dozen vectors per list) and filled
in chunks, so `vectors` may be a memory-mapped array larger than memory.
"""

from __future__ import annotations

import math

import faiss
import numpy as np

from shoptag.core.errors import BadInput

EXACT_LIMIT = 100_000  # below this many vectors exact search is fast enough and needs no training
DEFAULT_BUDGET_BYTES = 2 * 2**30
# k-means sample per inverted list when an IVF index is trained: faiss alone takes up to 256, i.e. all 1M
# vectors at 4,096 lists, and spends minutes on centroids that 64 per list place as well
TRAIN_PER_LIST = 64
PQ_TRAIN = 256 * 39  # faiss's own minimum for 8-bit product quantiser codebooks
FILL_CHUNK = 65_536  # vectors added per call when filling an index
ID_BYTES = 16  # per vector: the inverted list's int64 id and the id map's


def nlist_for(n: int) -> int:
    """Inverted lists for `n` vectors: the power of two nearest 4·√n, at most n / 39 (faiss's k-means minimum)."""
    wanted = 2 ** round(math.log2(4 * math.sqrt(max(n, 1))))
    return int(max(1, min(wanted, 2 ** int(math.log2(max(n // 39, 1))))))


def index_bytes(factory: str, n: int, dim: int) -> int:
    """Approximate memory of `n` vectors in an index made by `choose_factory` (codes, ids and centroids)."""
    if factory == "Flat":
        return n * (4 * dim + 8)
    coarse, code = factory.split(",")
    centroids = int(coarse.removeprefix("IVF")) * dim * 4
    per_vector = dim if code == "SQ8" else int(code.removeprefix("PQ"))
    return n * (per_vector + ID_BYTES) + centroids


def choose_factory(n: int, dim: int, budget_bytes: int = DEFAULT_BUDGET_BYTES) -> str:
    """The faiss factory string for `n` vectors of `dim` dimensions within `budget_bytes` of memory; `BadInput`
    when not even the smallest product-quantised codes fit."""
    if n <= EXACT_LIMIT and index_bytes("Flat", n, dim) <= budget_bytes:
        return "Flat"
    nlist = nlist_for(n)
    sq8 = f"IVF{nlist},SQ8"
    if index_bytes(sq8, n, dim) <= budget_bytes:
        return sq8
    for m in (m for m in range(dim // 2, 0, -1) if dim % m == 0 and m in (64, 48, 32, 24, 16, 8, 4)):
        pq = f"IVF{nlist},PQ{m}"
        if index_bytes(pq, n, dim) <= budget_bytes:
            return pq
    raise BadInput(f"{n:,} vectors of {dim} dimensions do not fit in {budget_bytes / 2**20:,.0f} MB even as product"
                   " codes: raise index.memory_budget_mb")


def new_index(dim: int, factory: str) -> faiss.IndexIDMap2:
    """An empty inner-product index of `factory` addressed by int64 ids."""
    return faiss.IndexIDMap2(faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT))


def train(index: faiss.IndexIDMap2, vectors: np.ndarray, seed: int = 0) -> None:
    """Train an index type that needs it on a fixed random sample of `vectors` (`TRAIN_PER_LIST` per inverted
    list, at least what a product quantiser needs); no-op for a trained index."""
    if index.is_trained:
        return
    ivf = faiss.try_extract_index_ivf(index)
    cap = TRAIN_PER_LIST * (ivf.nlist if ivf is not None else 1)
    if ivf is not None and isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ):
        cap = max(cap, PQ_TRAIN)
    rows = np.arange(len(vectors))
    if len(vectors) > cap:
        rows = np.sort(np.random.default_rng(seed).choice(len(vectors), cap, replace=False))
    index.train(np.ascontiguousarray(vectors[rows], dtype=np.float32))


def fill(index: faiss.IndexIDMap2, vectors: np.ndarray, ids: np.ndarray, chunk: int = FILL_CHUNK) -> None:
    """Add `vectors` under int64 `ids`, `chunk` at a time (a memory-mapped array is read a chunk at a time)."""
    for start in range(0, len(vectors), chunk):
        index.add_with_ids(np.ascontiguousarray(vectors[start : start + chunk], dtype=np.float32),
                           np.ascontiguousarray(ids[start : start + chunk], dtype=np.int64))


def build_index(vectors: np.ndarray, factory: str, ids: np.ndarray | None = None, *, seed: int = 0,
                chunk: int = FILL_CHUNK) -> faiss.IndexIDMap2:
    """A `factory` index over `vectors` (ids 0..n-1 unless given): trained on a sample, filled in chunks."""
    index = new_index(vectors.shape[1], factory)
    train(index, vectors, seed)
    fill(index, vectors, np.arange(len(vectors), dtype=np.int64) if ids is None else np.asarray(ids), chunk)
    return index


def set_search_params(index: faiss.Index, nprobe: int, ef_search: int) -> None:
    """Apply `nprobe` (IVF) or `ef_search` (HNSW) to an index, through an id map."""
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap) else index
    if isinstance(inner, faiss.IndexIVF):
        inner.nprobe = nprobe
    elif isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = ef_search


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean share of each row's true k nearest ids (`truth`, exact search) among the ids `found` (n, k)."""
    k = truth.shape[1]
    hits = [len(np.intersect1d(f[f >= 0], t[:k], assume_unique=False)) for f, t in zip(found, truth)]
    return float(np.mean(hits) / k) if len(hits) else 1.0
