"""Stage: recommendations from behaviour and content.

A `RecsModel` is built from the event log and the catalog's product vectors: the item-item co-engagement matrix
(baskets + user histories, time-decayed, top-k per item), user profiles for user-based neighbours, decayed
popularity, and the product vectors for content candidates. It is saved in the workspace (`behaviour/`) and rebuilt when events change.
A user's own history is read from the event log at request time, so a new event shows in their
recommendations at once, without a rebuild.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import scipy.sparse as sp

from shoptag.behaviour import cooccur, demand
from shoptag.behaviour.event_store import EventColumns
from shoptag.behaviour.events import TYPE_CODE
from shoptag.behaviour.recommend import (
    Weights, cobought_scores, history_vector, item_scores, neighbour_scores, profile_vector, rerank, score_parts,
    top_k, top_k_filled,
)
from shoptag.core.errors import BadInput, NotFound
from shoptag.core.files import atomic_write
from shoptag.core.settings import BehaviourSettings, Settings
from shoptag.store.records import Store

from . import derived_tags
from .encode import Encoders, encode_products
from .events import EventLog, open_event_log
from .workspace import Workspace

SimilarMode = Literal["content", "behaviour", "blend"]
# how much each kind of event says about what a person wants (returns say the opposite)
EVENT_WEIGHT = {"purchase": 1.0, "cart": 0.5, "click": 0.25, "view": 0.1, "return": -1.0}
POSITIVE = [TYPE_CODE[t] for t, w in EVENT_WEIGHT.items() if w > 0]
CONTENT_CANDIDATES = 200
FORMAT = 3


@dataclass
class Recommendation:
    id: str
    score: float
    reason: str  # repeat | cobought | content | popular | neighbours | context | catalog (a fill: nothing else scored)


@dataclass
class RecsModel:
    item_ids: np.ndarray  # str, catalog order
    similarity: sp.csr_matrix  # items × items co-engagement, top-k per row
    popularity: np.ndarray  # decayed, max 1
    vectors: np.ndarray  # float32 unit product vectors (content)
    user_ids: np.ndarray  # int64 pseudonymised ids of the users in `users`, sorted
    users: sp.csr_matrix  # users × items engagement, unit rows (user-based neighbours)
    newest: int  # time of the newest event the model saw
    version: tuple[int, ...]  # event log version it was built from
    # (family, value, units in the last `trend_days`, units in the window before) per accepted tag value
    demand: list[tuple[str, str, float, float]] = field(default_factory=list)
    _position: dict[str, int] | None = None
    _users_by_item: sp.csr_matrix | None = None

    @property
    def users_by_item(self) -> sp.csr_matrix:
        """items × users (the transpose of `users`, as rows): a user's neighbours from their own items' columns."""
        if self._users_by_item is None:
            self._users_by_item = self.users.T.tocsr()
        return self._users_by_item

    @property
    def position(self) -> dict[str, int]:
        if self._position is None:
            self._position = {pid: i for i, pid in enumerate(self.item_ids.tolist())}
        return self._position

    def user_row(self, user: int | None) -> int | None:
        """The row of a (pseudonymised) user in `users`, if the model saw them."""
        if user is None:
            return None
        row = int(np.searchsorted(self.user_ids, user))
        return row if row < len(self.user_ids) and self.user_ids[row] == user else None

def event_weights(columns: EventColumns, now: int, half_life_days: float) -> np.ndarray:
    """Each event's weight: its kind × its age decay."""
    kind = np.zeros(len(TYPE_CODE))
    for name, weight in EVENT_WEIGHT.items():
        kind[TYPE_CODE[name]] = weight
    return kind[columns.type] * cooccur.decay(columns.time, now, half_life_days)


def fit(columns: EventColumns, item_ids: np.ndarray, vectors: np.ndarray, settings: BehaviourSettings,
        version: tuple[int, int] = (0, 0)) -> RecsModel:
    """The model from events (any order) over the catalog `item_ids`; events of other items are ignored."""
    position = {pid: i for i, pid in enumerate(item_ids.tolist())}
    items = np.array([position.get(i, -1) if i is not None else -1 for i in columns.item.tolist()], dtype=np.int64)
    keep = (items >= 0) & np.isin(columns.type, POSITIVE)
    cols, items = columns.select(keep), items[keep]
    newest = int(cols.time.max()) if len(cols) else 0
    weights = event_weights(cols, newest, settings.half_life_days)
    similarity = cooccur.item_similarity(cols.session, cols.user, items, weights, len(item_ids),
                                         user_share=settings.user_share, shrink=settings.shrink,
                                         k=settings.neighbours)
    purchases = cols.type == TYPE_CODE["purchase"]
    pop = cooccur.popularity(items[purchases], cooccur.decay(cols.time[purchases], newest,
                                                             settings.popularity_half_life_days), len(item_ids))
    user_ids, users = cooccur.user_profiles(cols.user, items, weights, len(item_ids))
    return RecsModel(item_ids, similarity, pop, np.ascontiguousarray(vectors, dtype=np.float32), user_ids,
                     users.tocsr(), newest, version)


def build(settings: Settings, store: Store, encoders: Encoders, log: EventLog, *, show_progress: bool = False
          ) -> RecsModel:
    """Fit on the whole event log and save into the workspace."""
    workspace = Workspace(settings.workspace)
    products = store.products()
    cache = workspace.open_cache()
    try:
        vectors, _ = encode_products(products, encoders, cache, show_progress=show_progress)
    finally:
        cache.close()
    version = log.store.version()
    columns = log.store.columns(POSITIVE)
    model = fit(columns, np.array([p.id for p in products], dtype=object), vectors.fused, settings.behaviour, version)
    items = np.array([model.position.get(i, -1) if i is not None else -1 for i in columns.item.tolist()],
                     dtype=np.int64)
    sold = (items >= 0) & (columns.type == TYPE_CODE["purchase"])
    purchases = (items[sold], columns.time[sold], columns.quantity[sold])
    model.demand = tag_demand(store, model, purchases, settings.behaviour.trend_days)
    save(model, workspace.recs_path)
    store.set_popularity(dict(zip(model.item_ids.tolist(), model.popularity.tolist(), strict=True)))
    derived_tags.derive(store, model.item_ids, model.position, model.similarity, purchases, settings.behaviour)
    return model


def tag_demand(store: Store, model: RecsModel, purchases: tuple[np.ndarray, np.ndarray, np.ndarray],
               window_days: int) -> list[tuple[str, str, float, float]]:
    """Units sold per accepted tag value in the last `window_days` before the newest event and in the window
    before that: which tags are trending up or down. `purchases`: (catalog positions, times, quantities)."""
    recent, previous = demand.windowed_sales(*purchases, model.newest, window_days, len(model.item_ids))
    keys: dict[tuple[str, str], int] = {}
    rows, cols = [], []
    for pid, families in store.effective_tags().items():
        if pid in model.position:
            for family, values in families.items():
                for value, _, _ in values:
                    rows.append(model.position[pid])
                    cols.append(keys.setdefault((family, value), len(keys)))
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(model.item_ids), len(keys)))
    return [(f, v, t.recent, t.previous) for (f, v), t in zip(keys, demand.tag_trends(matrix, recent, previous),
                                                             strict=True)]


def save(model: RecsModel, path: Path) -> None:
    meta = {"format": FORMAT, "newest": model.newest, "version": list(model.version), "demand": model.demand}
    s = model.similarity.tocsr()
    with atomic_write(path) as handle:
        u = model.users.tocsr()
        np.savez(handle, item_ids=model.item_ids.astype(str), sim_data=s.data, sim_indices=s.indices,
                 sim_indptr=s.indptr, popularity=model.popularity, vectors=model.vectors, user_ids=model.user_ids,
                 user_data=u.data, user_indices=u.indices, user_indptr=u.indptr,
                 meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))


def load(path: Path) -> RecsModel | None:
    """The saved model, or None when there is none (or it is of an older format: it is rebuilt)."""
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        if meta.get("format") != FORMAT:
            return None
        n = len(data["item_ids"])
        similarity = sp.csr_matrix((data["sim_data"], data["sim_indices"], data["sim_indptr"]), shape=(n, n))
        users = sp.csr_matrix((data["user_data"], data["user_indices"], data["user_indptr"]),
                              shape=(len(data["user_ids"]), n))
        return RecsModel(data["item_ids"].astype(object), similarity, data["popularity"], data["vectors"],
                         data["user_ids"], users, int(meta["newest"]), tuple(int(v) for v in meta["version"]),
                         [tuple(row) for row in meta["demand"]])


def current(settings: Settings, store: Store, encoders: Encoders, log: EventLog, model: RecsModel | None = None
            ) -> RecsModel:
    """A model up to date with the event log: `model` or the saved one when their event version matches, or
    when the saved one is younger than `refresh_seconds` (a user's own history is read live either way); else
    a fresh build."""
    path = Workspace(settings.workspace).recs_path
    version = log.store.version()
    if model is not None and model.version == version:
        return model
    saved = load(path)
    if saved is not None and (saved.version == version
                              or time.time() - path.stat().st_mtime < settings.behaviour.refresh_seconds):
        return saved if model is None or saved.version != model.version else model
    return build(settings, store, encoders, log)


def user_history(log: EventLog, user: str, model: RecsModel, settings: BehaviourSettings) -> np.ndarray:
    """The user's decayed engagement per catalog item, read live from the log (dense over the catalog)."""
    key = log.pseudonym(user)
    rows = log.store.user_events(key, [TYPE_CODE[t] for t in EVENT_WEIGHT], limit=settings.history_limit)
    if not rows:
        return np.zeros(len(model.item_ids))
    times = np.array([r[0] for r in rows], dtype=np.int64)
    kinds = np.array([r[1] for r in rows], dtype=np.int8)
    items = np.array([model.position.get(r[2], -1) for r in rows], dtype=np.int64)
    ok = items >= 0
    now = max(model.newest, int(times.max()))
    cols = EventColumns(times[ok], kinds[ok], np.zeros(ok.sum(), np.int64), np.zeros(ok.sum(), np.int64),
                        np.zeros(ok.sum(), object), np.ones(ok.sum()))
    weights = event_weights(cols, now, settings.half_life_days)
    return np.clip(history_vector(items[ok], weights, len(model.item_ids)), 0.0, None)


def content_scores(model: RecsModel, query: np.ndarray | None, exclude: str | None = None) -> np.ndarray:
    """Cosine of the `CONTENT_CANDIDATES` nearest products to `query` (others 0). Exact, one matrix-vector
    product: at recommendation-catalog sizes it takes well under a millisecond, where a one-query FAISS search
    pays its thread start-up on every request."""
    scores = np.zeros(len(model.item_ids))
    if query is None:
        return scores
    sims = model.vectors @ np.asarray(query, dtype=np.float32)
    if exclude is not None:
        sims[model.position[exclude]] = -np.inf
    top = np.argpartition(-sims, CONTENT_CANDIDATES)[:CONTENT_CANDIDATES] if len(sims) > CONTENT_CANDIDATES \
        else np.arange(len(sims))
    top = top[np.isfinite(sims[top])]
    scores[top] = sims[top]
    return scores


def _reasons(idx: np.ndarray, parts: dict[str, np.ndarray]) -> list[str]:
    names = list(parts)
    stacked = np.vstack([parts[n][idx] for n in names]) if len(idx) else np.zeros((len(names), 0))
    return [names[j] for j in stacked.argmax(axis=0)] if len(idx) else []


def _not_in_model(product_id: str) -> NotFound:
    """The one answer for an id the recommendation model lacks, which says how it gets in."""
    return NotFound(f"no product {product_id!r} in the recommendation model (an id of the catalog; a product "
                    "added since the last `shoptag events` joins at the next model rebuild)")


def recommend(settings: Settings, model: RecsModel, log: EventLog, user: str | None, k: int,
              context: str | None = None) -> tuple[list[Recommendation], bool]:
    """Top-k for a user (and whether they were known): k items whenever the catalog has k (sparse scores are
    filled from popularity, then catalog order). Unknown users get what is popular, around `context` (a product
    id) when given; an unknown user is never an error, an unknown `context` is (`NotFound`)."""
    s = settings.behaviour
    if context is not None and context not in model.position:
        raise _not_in_model(context)
    history = np.zeros(len(model.item_ids))
    own_row = None
    if user:
        history = user_history(log, user, model, s)
        own_row = model.user_row(log.pseudonym(user))
    known = bool(history.any())
    if known:
        content = content_scores(model, profile_vector(history, model.vectors))
        neighbours = neighbour_scores(history, model.users, model.users_by_item, s.similar_users, own_row)
        weights = Weights(s.weight_repeat, s.weight_cobought, s.weight_content, s.weight_popular, s.weight_neighbours)
        parts = score_parts(history, cobought_scores(history, model.similarity), model.popularity, content,
                            neighbours, weights)
        scores = sum(parts.values())
        idx = top_k_filled(scores, k, model.popularity)
        return [Recommendation(model.item_ids[i], float(scores[i]), r if scores[i] > 0 else "catalog")
                for i, r in zip(idx, _reasons(idx, parts), strict=True)], True
    if context is not None:
        i = model.position[context]
        content = content_scores(model, model.vectors[i], context)
        around = item_scores(model.similarity[i].toarray().ravel(), content, s.blend_behaviour_weight)
        scores = 0.5 * around + 0.5 * model.popularity
        scores[i] = 0.0
        idx = top_k_filled(scores, k, content, exclude=np.array([i]))
        return [Recommendation(model.item_ids[j], float(scores[j]), "context" if scores[j] > 0 else "catalog")
                for j in idx], False
    idx = top_k_filled(model.popularity, k, np.zeros(len(model.item_ids)))
    return [Recommendation(model.item_ids[j], float(model.popularity[j]),
                           "popular" if model.popularity[j] > 0 else "catalog") for j in idx], False


def check_similar_options(mode: str, filtered: bool, diversified: bool) -> None:
    """Tag filters and diversity act on the search backend's neighbours (`content`); the recommendation model
    behind `behaviour` and `blend` has neither, so asking for them there is refused rather than ignored."""
    if mode != "content" and (filtered or diversified):
        raise BadInput(f"tag filters and diversity apply to mode content only, not {mode}")


def similar(model: RecsModel, product_id: str, k: int, mode: SimilarMode, behaviour_weight: float
            ) -> list[Recommendation]:
    """Item-to-item neighbours by co-engagement (`behaviour`) or blended with content (`blend`); an item with
    no history gets content neighbours in `blend` mode."""
    if product_id not in model.position:
        raise _not_in_model(product_id)
    i = model.position[product_id]
    row = model.similarity[i].toarray().ravel()
    if mode == "behaviour":
        scores, reason = row, "cobought"
    else:
        scores = item_scores(row, content_scores(model, model.vectors[i], product_id), behaviour_weight)
        reason = "blend" if row.any() else "content"
    idx = top_k(scores, k, exclude=np.array([i]))
    return [Recommendation(model.item_ids[j], float(scores[j]), reason) for j in idx]


def rerank_for_user(settings: Settings, model: RecsModel, log: EventLog, user: str, ids: list[str],
                    scores: np.ndarray) -> list[int]:
    """Order of `ids` (hits of a search or `similar`) after adding the user's affinity: the cosine of each hit to
    the user's profile vector, weighted by `rerank_strength`. Unknown users keep the order."""
    history = user_history(log, user, model, settings.behaviour)
    profile = profile_vector(history, model.vectors)
    if profile is None or not ids:
        return list(range(len(ids)))
    rows = [model.position.get(pid) for pid in ids]
    affinity = np.array([float(model.vectors[r] @ profile) if r is not None else 0.0 for r in rows])
    return rerank(np.asarray(scores, dtype=np.float64), affinity, settings.behaviour.rerank_strength).tolist()


class RecsCache:
    """The service's model, checked against the event log at most every `refresh_seconds` (a user's own history
    is read live on every request, so their new events count at once)."""

    def __init__(self, settings: Settings, store: Store, encoders: Encoders) -> None:
        self.settings, self.store, self.encoders = settings, store, encoders
        self.log = open_event_log(settings)
        self._model: RecsModel | None = None
        self._checked = -float("inf")
        self._lock = threading.Lock()

    def get(self) -> RecsModel:
        with self._lock:
            now = time.monotonic()
            if self._model is None or now - self._checked >= self.settings.behaviour.refresh_seconds:
                self._model = current(self.settings, self.store, self.encoders, self.log, self._model)
                self._checked = now
            return self._model

    def peek(self) -> RecsModel | None:
        """The model loaded so far, without building one (for metrics scrapes)."""
        return self._model

    def close(self) -> None:
        self.log.close()
