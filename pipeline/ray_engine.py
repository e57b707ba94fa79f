"""The Ray engine: `tag` and the encoding of `reindex` as Ray Data steps, on a local Ray or on a cluster.

It runs the local engine's stage functions (`score_batch`, `write_batch`, `search_docs`), so its results are
the local engine's; only where they run differs:

- shards: the driver streams (id, content hash, tagged hash) from the store and cuts the products that need
  tagging, in id order, into shards of `shard_size`; a shard travels as its first and last id, so the driver
  holds bounds, never the catalog;
- workers: a pool of actors (one per GPU when the cluster has GPUs, else one per CPU) each load the encoders
  once and receive the model once through the object store (`ray.put`); an actor reads its shard from the store,
  encodes it through the embedding cache (shared by every process: SQLite WAL) and scores it;
- writes: the driver takes the scored shards one at a time (`iter_batches`) and commits each in one
  transaction. SQLite takes one writer at a time: workers writing would queue on its lock, while one writer
  spends milliseconds per shard against the seconds a worker spends encoding it;
- resume: a shard's tags and its products' tagged hashes commit in the same transaction, so the store is the
  record of finished shards: the next run's cut leaves a killed run's finished shards out. A worker killed
  mid-run is restarted and its shard retried; only the driver writes, so a retried shard is written once.

The workers open the workspace at the driver's path: one machine, or a workspace on a shared file system.
Ray is an optional extra (`pip install 'shoptag[ray]'`), imported by `ray_cluster` only.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from shoptag.core.settings import Settings
from shoptag.indexer.backend import SearchBackend
from shoptag.indexer.documents import SearchDoc
from shoptag.store.records import Store, StoredProduct

from .encode import Encoders, encode_products
from .progress import progress_bar
from .ray_cluster import RayOptions, connect, ray
from .reindex import backend_key, converge
from .search_docs import search_docs
from .tag import TagReport, count_decisions, finish_report, load_tagging, model_version, score_batch, write_batch
from .workspace import Workspace


def _pool(workers: int | None) -> tuple[int, int]:
    """How many actors, and whether each takes a GPU (when the cluster has GPUs) or a CPU."""
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    return workers or gpus or max(1, int(resources.get("CPU", 1))), min(gpus, 1)


class _Worker:
    """What every actor holds for the run: the settings' encoders, the store (read only) and the cache."""

    def __init__(self, settings: Settings) -> None:
        workspace = Workspace(settings.workspace)
        self.encoders = Encoders(settings.encoders, workspace.cache_dir)
        self.store = workspace.open_store()
        self.cache = workspace.open_cache()


class _ShardTagger(_Worker):
    """Scores whole shards: the products of each that need tagging, with the model broadcast once."""

    def __init__(self, settings: Settings, shared: list, version: str, retag_all: bool) -> None:
        super().__init__(settings)
        self.model, self.system = ray.get(shared[0])  # in a list: Ray hands the reference over unresolved
        self.version = version
        self.retag_all = retag_all

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for first, last in zip(batch["first"], batch["last"]):
            products = [p for p, tagged in self.store.products_between(str(first), str(last))
                        if self.retag_all or tagged != f"{p.content_hash}@{self.version}"]
            scored = score_batch(self.model, self.store, self.encoders, self.cache, products, self.system) \
                if products else ({}, None)
            out.append(pickle.dumps((products, *scored)))
        return {"result": np.array(out, dtype=object)}


class _ShardEncoder(_Worker):
    """Encodes shards given as id lists: the vectors of a reindex's documents."""

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = []
        for ids in batch["ids"]:
            products = self.store.products([str(i) for i in ids])
            vectors, _ = encode_products(products, self.encoders, self.cache, show_progress=False)
            out.append(pickle.dumps((products, vectors)))
        return {"result": np.array(out, dtype=object)}


def _results(items: list[dict], worker: type, constructor: dict, options: RayOptions) -> Iterator:
    """Run `worker` over the shards `items` on an actor pool; the unpickled results, one shard at a time."""
    ray.data.DataContext.get_current().enable_progress_bars = False  # the run shows its own bar
    size, gpu = _pool(options.workers)
    # Ray Data restarts a killed actor and retries the shards it held (its actor pools' default
    # max_restarts=-1, max_task_retries=-1); only the driver writes, so a retried shard is written once
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        worker, fn_constructor_kwargs=constructor, batch_size=1, compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=0 if gpu else 1, num_gpus=gpu,
    )
    for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
        yield pickle.loads(batch["result"][0])


def _portable(settings: Settings) -> Settings:
    """The settings as a worker needs them: the workspace as an absolute path (workers run in other folders)."""
    return settings.model_copy(update={"workspace": settings.workspace.resolve()})


def cut_shards(store: Store, version: str, retag_all: bool, shard_size: int) -> tuple[list[dict], int, int]:
    """The shards of products needing tagging (first and last id of each), how many need it, how many don't."""
    shards: list[dict] = []
    todo = up_to_date = 0
    first = last = None
    in_shard = 0
    for pid, content_hash, tagged in store.stream_tagged_hashes():
        if not retag_all and tagged == f"{content_hash}@{version}":
            up_to_date += 1
            continue
        todo += 1
        first = pid if in_shard == 0 else first
        last, in_shard = pid, in_shard + 1
        if in_shard == shard_size:
            shards.append({"first": first, "last": last})
            in_shard = 0
    if in_shard:
        shards.append({"first": first, "last": last})
    return shards, todo, up_to_date


def tag(
    settings: Settings, store: Store, encoders: Encoders, backend: SearchBackend | None, options: RayOptions, *,
    retag_all: bool = False, show_progress: bool = True,
) -> TagReport:
    """`pipeline.tag.tag` on Ray: the same products tagged with the same tags and scores."""
    model, system = load_tagging(Workspace(settings.workspace).models_dir, encoders, settings.index)
    version = model_version(model, system)
    shards, todo, up_to_date = cut_shards(store, version, retag_all, options.shard_size)
    report = TagReport(skipped_up_to_date=up_to_date)
    key = backend_key(settings, backend) if backend is not None else None
    if shards:
        connect(options)
        constructor = {"settings": _portable(settings), "shared": [ray.put((model, system))], "version": version,
                       "retag_all": retag_all}
        with progress_bar("tag", todo, show_progress) as advance:
            for products, decisions, vectors in _results(shards, _ShardTagger, constructor, options):
                if products:
                    written = write_batch(store, encoders, products, decisions, vectors, version, backend, key)
                    count_decisions(report, written, len(products))
                advance(len(products))
    if backend is not None:
        report.search_repaired = converge(settings, store, encoders, backend)["sent"]
    return finish_report(report)


def doc_builder(options: RayOptions):
    """A `build_docs` for `pipeline.reindex.reindex` whose encoding runs on Ray; documents are built on the
    driver as each shard's vectors arrive, so it holds one shard of vectors at a time."""

    def build(store: Store, products: Sequence[StoredProduct], encoders: Encoders, settings: Settings,
              tags: Mapping[str, Mapping[str, Sequence[tuple[str, str, float]]]], show_progress: bool) -> Iterator[SearchDoc]:
        if not products:
            return
        connect(options)
        ids = [p.id for p in products]
        shards = [{"ids": ids[i : i + options.shard_size]} for i in range(0, len(ids), options.shard_size)]
        with progress_bar("build documents", len(products), show_progress) as advance:
            for batch, vectors in _results(shards, _ShardEncoder, {"settings": _portable(settings)}, options):
                yield from search_docs(store, batch, vectors, encoders.ids(), tags)
                advance(len(batch))

    return build
