"""A FAISS index over product vectors, addressed by product id (a string), persisted atomically.

Vectors are L2-normalised by the encoders, so inner product is cosine similarity. Index types that cannot
remove vectors (HNSW) get tombstones that searches skip; the index is compacted once they pile up.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from shoptag.core.errors import Corrupt
from shoptag.core.files import atomic_write
from shoptag.core.settings import IndexSettings

from .index_choice import DEFAULT_BUDGET_BYTES, choose_factory, fill, new_index, set_search_params, train

COMPACT_RATIO = 0.2  # rebuild when this share of the vectors is tombstoned


def index_options(settings: IndexSettings) -> dict[str, object]:
    """The `VectorIndex` keyword arguments the `index` settings stand for."""
    return {"factory": settings.factory, "nprobe": settings.nprobe, "ef_search": settings.hnsw_ef_search,
            "use_gpu": settings.use_gpu, "budget_bytes": settings.memory_budget_mb * 2**20}


@contextmanager
def search_threads(n: int) -> Iterator[None]:
    """Search with at most `n` OpenMP threads (the process-wide setting, restored after): while another
    thread writes, two search threads on two cores wait on each other at every barrier."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, min(n, previous)))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def gpu_available() -> bool:
    """Whether the installed faiss was built with GPU support and sees a GPU."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


class VectorIndex:
    """FAISS index + product-id map with add, update, remove, search and atomic save/load."""

    def __init__(
        self,
        dim: int,
        factory: str = "auto",
        *,
        nprobe: int = 16,
        ef_search: int = 64,
        use_gpu: bool = False,
        expected_size: int = 0,
        budget_bytes: int = DEFAULT_BUDGET_BYTES,
    ) -> None:
        self.dim = dim
        self.factory = choose_factory(expected_size, dim, budget_bytes) if factory == "auto" else factory
        self.nprobe = nprobe
        self.ef_search = ef_search
        self.use_gpu = use_gpu and gpu_available()
        self._index = new_index(dim, self.factory)
        self._int_of: dict[str, int] = {}
        self._str_of: dict[int, str] = {}
        self._next = 0
        self._tombstones: set[int] = set()
        self._gpu_index: faiss.Index | None = None
        # the id map's inner index and the key of each of its positions, derived once per change (`_search`)
        self._inner: tuple[faiss.Index, np.ndarray] | None = None

    # ---- building -------------------------------------------------------------------------------------------
    @classmethod
    def build(cls, ids: Sequence[str], vectors: np.ndarray, factory: str = "auto", **kwargs) -> VectorIndex:
        """A new index over `vectors`, trained on a sample of them when the index type needs training, with
        `factory` `auto` chosen by size and `budget_bytes` (`index_choice.choose_factory`)."""
        vectors = _as_matrix(vectors)
        index = cls(vectors.shape[1], factory, expected_size=len(ids), **kwargs)
        index.train(vectors)
        index.add(ids, vectors)
        return index

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def train(self, vectors: np.ndarray) -> None:
        """Train an index type that needs it (IVF, PQ) on a fixed random sample of `vectors`."""
        train(self._index, _as_matrix(vectors))

    @property
    def nlist(self) -> int:
        """Inverted lists of an IVF index; 0 for other types."""
        ivf = faiss.try_extract_index_ivf(self._index)
        return int(ivf.nlist) if ivf is not None else 0

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors; an id already present is replaced (an update)."""
        vectors = _as_matrix(vectors)
        if len(ids) != len(vectors):
            raise ValueError(f"{len(ids)} ids for {len(vectors)} vectors")
        if vectors.shape[1] != self.dim:
            raise ValueError(f"vectors have {vectors.shape[1]} dimensions, the index {self.dim}")
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate ids in one add")
        if not self._index.is_trained:
            self.train(vectors)
        self.remove([i for i in ids if i in self._int_of])
        ints = np.arange(self._next, self._next + len(ids), dtype=np.int64)
        self._next += len(ids)
        for s, i in zip(ids, ints.tolist()):
            self._int_of[s] = i
            self._str_of[i] = s
        fill(self._index, vectors, ints)
        self._changed()

    def remove(self, ids: Sequence[str]) -> int:
        """Remove products by id; unknown ids are ignored. Returns how many were removed."""
        ints = [self._int_of.pop(s) for s in ids if s in self._int_of]
        if not ints:
            return 0
        for i in ints:
            del self._str_of[i]
        try:
            self._index.remove_ids(np.asarray(ints, dtype=np.int64))
        except RuntimeError:  # index type without removal (HNSW): skip at search time
            self._tombstones.update(ints)
            if len(self._tombstones) > COMPACT_RATIO * max(1, self._index.ntotal):
                self._compact()
        self._changed()
        return len(ints)

    def _compact(self) -> None:
        """Rebuild without the tombstoned vectors."""
        live = sorted(self._str_of)
        vectors = np.vstack([self._index.reconstruct(i) for i in live]) if live else np.zeros((0, self.dim), "float32")
        fresh = new_index(self.dim, self.factory)
        if len(vectors):
            train(fresh, vectors)
            fill(fresh, vectors, np.asarray(live, dtype=np.int64))
        self._index = fresh
        self._tombstones.clear()
        self._changed()

    def _changed(self) -> None:
        """Forget what was derived from the faiss index (its GPU copy, its inner index and key map)."""
        self._gpu_index = None
        self._inner = None

    # ---- reading --------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._int_of)

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._int_of

    @property
    def ids(self) -> list[str]:
        return list(self._int_of)

    def vector(self, product_id: str) -> np.ndarray:
        """The stored vector of a product (approximate for quantised index types)."""
        if product_id not in self._int_of:
            raise KeyError(product_id)
        return self._index.reconstruct(self._int_of[product_id])

    def search(
        self,
        queries: np.ndarray,
        k: int,
        exclude: Sequence[str | None] | None = None,
    ) -> tuple[list[list[str]], np.ndarray]:
        """The `k` nearest products of each query, best first, with cosine similarities.

        `exclude[i]` (a product id) never appears in row i: a product is never its own neighbour.
        Rows with fewer than `k` results are padded with similarity -inf and no id.
        """
        keys, sims = self.search_keys(queries, k, None if exclude is None else self.keys_of(exclude))
        str_of = self._str_of
        return [[str_of[i] for i in row if i >= 0] for row in keys.tolist()], sims

    def keys_of(self, ids: Sequence[str | None]) -> np.ndarray:
        """The index's int key of each product id; -1 for an id it does not hold (or None)."""
        int_of = self._int_of
        return np.fromiter((int_of.get(i, -1) if i is not None else -1 for i in ids), dtype=np.int64, count=len(ids))

    def search_keys(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`search` in int keys (see `keys_of`, `id_of_key`): (n, k) keys with -1 padding and similarities
        with -inf padding. `exclude[i]` is a key row i never returns. Array operations only, so the cost is
        faiss's own."""
        queries = _as_matrix(queries)
        n = len(queries)
        if exclude is not None and len(exclude) != n:
            raise ValueError("exclude must have one entry per query")
        if not len(self) or not n:
            return np.full((n, k), -1, dtype=np.int64), np.full((n, k), -np.inf, dtype=np.float32)
        slack = (1 if exclude is not None else 0) + min(len(self._tombstones), 4 * k)
        fetch = min(k + slack, self._index.ntotal)
        sims, keys = self._search(queries, fetch)
        keep = keys >= 0
        if exclude is not None:
            keep &= keys != np.asarray(exclude, dtype=np.int64)[:, None]
        if self._tombstones:
            keep &= ~np.isin(keys, np.fromiter(self._tombstones, dtype=np.int64, count=len(self._tombstones)))
        if fetch >= k and keep[:, :k].all():  # the common case: faiss's first k as they are
            return np.ascontiguousarray(keys[:, :k]), np.ascontiguousarray(sims[:, :k])
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept entries first, rank order kept
        keys, sims, keep = (np.take_along_axis(a, order, axis=1) for a in (keys, sims, keep))
        out_keys = np.full((n, k), -1, dtype=np.int64)
        out_sims = np.full((n, k), -np.inf, dtype=np.float32)
        width = keys.shape[1]
        out_keys[:, :width] = np.where(keep, keys, -1)
        out_sims[:, :width] = np.where(keep, sims, -np.inf)
        return out_keys, out_sims

    def id_of_key(self, key: int) -> str:
        return self._str_of[key]

    def configure(self, settings: IndexSettings) -> None:
        """Search with the `index` settings' nprobe, efSearch and GPU choice (a saved index keeps its own
        until told)."""
        self.nprobe = settings.nprobe
        self.ef_search = settings.hnsw_ef_search
        self.use_gpu = settings.use_gpu and gpu_available()
        self._changed()

    def _search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """faiss's (similarities, keys) of the `k` nearest. On CPU the id map's inner index is searched and its
        positions mapped to keys here: faiss's own mapping is a second OpenMP region per search, which on a
        busy machine made a one-product query wait several times as long as the search itself."""
        if self.use_gpu:
            set_search_params(self._index, self.nprobe, self.ef_search)
            if self._gpu_index is None:
                self._gpu_index = faiss.index_cpu_to_all_gpus(self._index)
                set_search_params(self._gpu_index, self.nprobe, self.ef_search)
            return self._gpu_index.search(queries, k)
        if self._inner is None:
            self._inner = (faiss.downcast_index(self._index.index), faiss.vector_to_array(self._index.id_map))
        inner, key_of_position = self._inner
        set_search_params(inner, self.nprobe, self.ef_search)
        sims, positions = inner.search(queries, k)
        return sims, np.where(positions >= 0, key_of_position[np.maximum(positions, 0)], -1)

    # ---- persistence ----------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        """Write index and id map as one file, atomically: a crash leaves the old file or the new one."""
        live = sorted(self._str_of)
        meta = {
            "dim": self.dim,
            "factory": self.factory,
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "next": self._next,
        }
        with atomic_write(path) as fh:
            np.savez(
                fh,
                index=faiss.serialize_index(self._index),
                ints=np.asarray(live, dtype=np.int64),
                ids=np.asarray([self._str_of[i] for i in live], dtype=object).astype(str),
                tombstones=np.asarray(sorted(self._tombstones), dtype=np.int64),
                meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            )

    @classmethod
    def load(cls, path: Path, settings: IndexSettings | None = None) -> VectorIndex:
        """The index saved at `path` (searching as `settings` say, when given); `Corrupt` naming the file when it
        is missing, cut short, overwritten or holds pickled objects (never unpickled: `allow_pickle=False`);
        rebuild it."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(data["meta"].tobytes().decode())
                index = cls(meta["dim"], meta["factory"], nprobe=meta["nprobe"], ef_search=meta["ef_search"])
                index._index = faiss.deserialize_index(data["index"])
                index._next = int(meta["next"])
                for i, s in zip(data["ints"].tolist(), data["ids"].tolist()):
                    index._int_of[s] = i
                    index._str_of[i] = s
                index._tombstones = set(data["tombstones"].tolist())
        except FileNotFoundError:
            raise Corrupt(f"{path}: vector index file is missing") from None
        except Exception as exc:  # numpy, zipfile, json and FAISS each raise their own types for a damaged file
            raise Corrupt(f"{path}: damaged vector index ({type(exc).__name__}: {exc})") from None
        if index._index.d != index.dim or index._index.ntotal < len(index._str_of):
            raise Corrupt(f"{path}: damaged vector index (its FAISS index does not match its id map)")
        if settings is not None:
            index.configure(settings)
        return index


def _as_matrix(vectors: np.ndarray) -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"expected a 2-d array of vectors, got shape {vectors.shape}")
    return vectors
