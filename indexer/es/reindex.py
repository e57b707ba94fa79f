"""Writing products to Elasticsearch: bulk actions, and the zero-downtime reindex behind an alias.

A full reindex (see `full_reindex` for each step) holds the alias's lock in Elasticsearch, fills a new index
``{alias}-{version}-{timestamp}`` built without replicas or refreshes while the alias keeps serving the live
one, restores both, checks the new index's document count and mapping, and only then moves the alias in one
`_aliases` call. The index it replaces stays behind ``{alias}-previous`` for `rollback`. Any rejected
document, failed check or lost cluster leaves the alias where it was.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch, TransportError, helpers

from shoptag.core.errors import Conflict, ShoptagError
from shoptag.core.settings import ESSettings

from ..documents import SearchDoc, WriteReport
from ..search_common import VectorDims, doc_fingerprint, split_attributes, tag_values
from .lock import AliasLock
from .mapping import index_body, search_template, template_body
from .search import template_id, template_script
from .server import Server

BUILD_SETTINGS = {"number_of_replicas": 0, "refresh_interval": "-1"}


class ReindexCheckFailed(ShoptagError):
    """The new index is not what was sent (count or mapping); the alias was not moved."""


class NothingToRollBack(Conflict):
    """No previous index is kept for the alias."""


def new_index_name(alias: str, version: str, now: datetime | None = None) -> str:
    """A fresh versioned index name for `alias`, e.g. ``shoptag-products-v1-20250101120000123456``."""
    now = now or datetime.now(timezone.utc)
    return f"{alias}-{version}-{now:%Y%m%d%H%M%S%f}"


def is_versioned_index(name: str, alias: str) -> bool:
    """Whether `name` was made by `new_index_name` for `alias` (of any version)."""
    return re.fullmatch(rf"{re.escape(alias)}-[a-z0-9_]+-\d{{20}}", name) is not None


def vector_value(vector: Any, as_base64: bool = False) -> list[float] | str:
    """A vector as Elasticsearch stores it, float32: base64 of big-endian float32 where the server takes it
    (9.3+), else decimals of 9 significant digits, which read back to exactly the same float32 values at about
    half the bytes of float64 text."""
    values = np.asarray(vector, dtype=np.float32)
    if as_base64:
        return base64.b64encode(values.astype(">f4").tobytes()).decode("ascii")
    wide = values.astype(np.float64)
    magnitude = np.floor(np.log10(np.abs(wide), where=wide != 0, out=np.zeros_like(wide)))
    scale = 10.0 ** (8 - magnitude)
    return (np.round(wide * scale) / scale).tolist()


def doc_source(doc: SearchDoc, mapping_version: str, *, fused: bool = True, as_base64: bool = False,
               numeric: Sequence[str] = ()) -> dict[str, Any]:
    """The indexed document: text, tags per family (with scores in `tag_details`), keyword attributes, the
    `numeric` ones as numbers, vectors, and the model ids, content hash and mapping version that tell a stale
    document from a current one. Without `fused` (a text-only index, where it equals the text vector) the fused
    vector is not sent."""
    values = tag_values(doc)
    keywords, numbers = split_attributes(doc.attributes, numeric)
    source: dict[str, Any] = {
        "id": doc.id,
        "title": doc.title,
        "description": doc.description,
        "tag_text": " ".join(v for vs in values.values() for v in vs),
        "tags": values,
        "tag_details": [
            {"family": family, "value": t.value, "score": t.score, "source": t.source}
            for family, tags in doc.tags.items()
            for t in tags
        ],
        "attributes": keywords,
        "numbers": numbers,
        "listed_at": doc.listed_at,
        "content_hash": doc.content_hash,
        "text_model": doc.text_model,
        "image_model": doc.image_model,
        "mapping_version": mapping_version,
        "fingerprint": doc_fingerprint(doc),
    }
    if doc.popularity is not None:
        source["popularity"] = doc.popularity
    vectors = [("text", doc.text_vector), ("image", doc.image_vector)] + ([("fused", doc.fused_vector)] if fused else [])
    for kind, vector in vectors:
        if vector is not None:
            source[f"{kind}_vector"] = vector_value(vector, as_base64)
    return source


def unstored_fused_fits(docs: Iterable[SearchDoc], dims: VectorDims, failed: list[tuple[str, str]]) -> Iterator[SearchDoc]:
    """`docs`, less those whose fused vector has the wrong size, which go to `failed`: a text-only index does not
    store the fused vector (it equals the text vector), so the server cannot reject a wrong one."""
    for doc in docs:
        if dims.image is None and doc.fused_vector is not None and np.shape(doc.fused_vector) != (dims.fused,):
            failed.append((doc.id, f"fused_vector has shape {np.shape(doc.fused_vector)}, expected ({dims.fused},)"))
        else:
            yield doc


def index_actions(
    docs: Iterable[SearchDoc], index: str, mapping_version: str, *, fused: bool = True, as_base64: bool = False,
    numeric: Sequence[str] = (),
) -> Iterator[dict[str, Any]]:
    """`helpers.streaming_bulk` actions writing `docs` into `index`."""
    for doc in docs:
        yield {"_op_type": "index", "_index": index, "_id": doc.id,
               "_source": doc_source(doc, mapping_version, fused=fused, as_base64=as_base64, numeric=numeric)}


def delete_actions(ids: Iterable[str], index: str) -> Iterator[dict[str, Any]]:
    for pid in ids:
        yield {"_op_type": "delete", "_index": index, "_id": pid}


def bulk_write(
    client: Elasticsearch, actions: Iterable[dict[str, Any]], settings: ESSettings, *,
    refresh: bool | str = False, heartbeat: Callable[[], None] | None = None,
) -> WriteReport:
    """Send `actions` with `streaming_bulk`, retrying items rejected with 429 with exponential backoff.

    Every rejected item ends up in `failed` with its reason; deleting a missing document is not a failure.
    Transport errors (the cluster gone) are raised, never turned into silent gaps. `heartbeat` is called at
    least every quarter of `lock_ttl` while items come back (it renews the reindex lock).
    """
    report = WriteReport()
    beat = time.monotonic()
    for ok, item in helpers.streaming_bulk(
        client,
        actions,
        chunk_size=settings.bulk_chunk_size,
        max_retries=settings.max_retries,
        initial_backoff=settings.bulk_initial_backoff,
        max_backoff=settings.bulk_max_backoff,
        raise_on_error=False,
        raise_on_exception=True,
        refresh=refresh,
    ):
        if heartbeat is not None and time.monotonic() - beat > settings.lock_ttl / 4:
            heartbeat()
            beat = time.monotonic()
        op, result = next(iter(item.items()))
        if op == "delete" and (ok or result.get("status") == 404):
            report.deleted += result.get("result") == "deleted"
        elif ok:
            report.written += 1
        else:
            report.failed.append((str(result.get("_id")), _reason(result)))
    return report


def alias_indices(client: Elasticsearch, alias: str) -> list[str]:
    """The indices `alias` points at now ([] before the first reindex)."""
    if not client.indices.exists_alias(name=alias):
        if client.indices.exists(index=alias):
            raise Conflict(f"{alias!r} is an index, not an alias; delete or rename it before reindexing")
        return []
    return sorted(client.indices.get_alias(name=alias))


def previous_alias(alias: str) -> str:
    """The alias kept on the index a full reindex replaced, for `rollback`."""
    return f"{alias}-previous"


def swap_actions(alias: str, old: list[str], new: str, previous: list[str] | None = None) -> list[dict[str, Any]]:
    """The `_aliases` actions moving `alias` from `old` to `new` in one atomic step; with `previous` (the
    indices behind ``{alias}-previous`` now), that alias moves from them to `old`."""
    actions = [{"remove": {"index": index, "alias": alias}} for index in old] + [{"add": {"index": new, "alias": alias}}]
    if previous is not None:
        kept = previous_alias(alias)
        actions += [{"remove": {"index": index, "alias": kept}} for index in previous]
        actions += [{"add": {"index": index, "alias": kept}} for index in old]
    return actions


def _created(name: str) -> str:
    """The timestamp part of a versioned index name (sorts by creation time)."""
    return name.rsplit("-", 1)[1]


def drop_orphans(client: Elasticsearch, alias: str, live: list[str], keep: list[str], also: str | None = None) -> list[str]:
    """Delete versioned indices of `alias` left by interrupted runs: those older than the `live` one and not in
    `keep` (the live and the previous index), and `also` (the index a crashed lock holder was filling).
    Called under the alias's lock, so no running reindex is filling any of them."""
    existing = client.indices.get(index=f"{alias}-*", expand_wildcards="all", allow_no_indices=True)
    newest_live = max((_created(name) for name in live), default=None)
    orphans = [name for name in existing if is_versioned_index(name, alias) and name not in keep
               and (name == also or (newest_live is not None and _created(name) < newest_live))]
    if orphans:
        client.indices.delete(index=",".join(orphans))
    return orphans


def _reason(result: dict[str, Any]) -> str:
    error = result.get("error")
    if isinstance(error, dict):
        return f"{result.get('status')} {error.get('type')}: {error.get('reason')}"
    return f"{result.get('status')} {error}"


def _body(settings: ESSettings, dims: VectorDims, numeric: Sequence[str]) -> dict[str, Any]:
    return index_body(settings.mapping_version, dims, settings.vector_index_type, shards=settings.number_of_shards,
                      replicas=settings.number_of_replicas, refresh_interval=settings.refresh_interval,
                      numeric=numeric)


def create_index(
    client: Elasticsearch, settings: ESSettings, dims: VectorDims, *, building: bool = False, name: str | None = None,
    numeric: Sequence[str] = (), rrf: bool = True,
) -> str:
    """Create a new versioned index (not yet behind the alias), after storing the index template over its
    pattern and the search template of its version (`rrf`: with the retriever, else the score-sum variant for a
    licence without it). `building`: no replicas, no refresh (`finish_build` restores the configured ones)."""
    alias, version = settings.index_alias, settings.mapping_version
    body = _body(settings, dims, numeric)
    client.indices.put_index_template(name=f"{alias}-{version}", **template_body(alias, version, body))
    client.put_script(id=template_id(alias, version), **template_script(search_template(version, rrf)))
    name = name or new_index_name(alias, version)
    if building:
        body["settings"].update(BUILD_SETTINGS)
    client.indices.create(index=name, **body)
    return name


def ensure_alias(
    client: Elasticsearch, settings: ESSettings, dims: VectorDims, numeric: Sequence[str] = (), *, rrf: bool = True,
) -> None:
    """Make the alias exist (over a new empty index) so that the first upsert has somewhere to go."""
    if not alias_indices(client, settings.index_alias):
        new = create_index(client, settings, dims, numeric=numeric, rrf=rrf)
        client.indices.update_aliases(actions=swap_actions(settings.index_alias, [], new))


def mapping_problems(actual: dict[str, Any], expected: dict[str, Any], path: str = "") -> list[str]:
    """How the mapping an index has differs from the one it should have (field types, vector sizes and
    similarity, analyzers, strictness), as readable lines; [] when it is the expected one."""
    problems = []
    if not path and str(actual.get("dynamic")) != str(expected.get("dynamic")):
        problems.append(f"dynamic is {actual.get('dynamic')!r}, expected {expected.get('dynamic')!r}")
    have, want = actual.get("properties", {}), expected.get("properties", {})
    for name in sorted(set(have) - set(want)):
        problems.append(f"unexpected field {path}{name} ({have[name].get('type', 'object')})")
    for name, field in want.items():
        if name not in have:
            problems.append(f"missing field {path}{name}")
            continue
        for key in ("type", "dims", "similarity", "analyzer", "search_analyzer", "element_type"):
            if key in field and have[name].get(key) != field[key]:
                problems.append(f"{path}{name}.{key} is {have[name].get(key)!r}, expected {field[key]!r}")
        if "properties" in field:
            problems += mapping_problems(have[name], field, f"{path}{name}.")
    return problems


def finish_build(client: Elasticsearch, settings: ESSettings, index: str) -> None:
    """Give a built index its configured replicas and refresh interval back, and make everything searchable."""
    client.indices.put_settings(index=index, settings={
        "number_of_replicas": settings.number_of_replicas, "refresh_interval": settings.refresh_interval})
    client.indices.refresh(index=index)


def check_index(client: Elasticsearch, index: str, written: int, expected_mapping: dict[str, Any]) -> list[str]:
    """Why `index` must not go live: a document count other than what was written, or another mapping."""
    problems = []
    count = int(client.count(index=index)["count"])
    if count != written:
        problems.append(f"it holds {count} documents, {written} were written")
    mapping = client.indices.get_mapping(index=index)[index]["mappings"]
    problems += mapping_problems(mapping, expected_mapping)
    return problems


def full_reindex(
    client: Elasticsearch, settings: ESSettings, dims: VectorDims, docs: Iterable[SearchDoc], server: Server,
    numeric: Sequence[str] = (),
) -> WriteReport:
    """Rebuild into a new index and move the alias to it in one step, only if it is complete and right.

    1. Take the alias's lock (`ReindexLocked` if another run holds it; a dead or expired holder's lock is taken
       over and the index it was filling dropped), and drop versioned indices older than the live one.
    2. Store the index template over ``{alias}-{version}-*`` (so an index auto-created by a stray write gets the
       strict mapping), the search template, and create the new index without replicas or refreshes.
    3. Stream the documents in (`bulk_write`). A rejected document: drop the new index, leave the alias, return
       the report (written = 0).
    4. Restore replicas and refresh interval, refresh, and check the count and the mapping
       (`ReindexCheckFailed`, alias untouched, if either is off).
    5. One `_aliases` call: the alias to the new index, ``{alias}-previous`` to the one it replaces; then delete
       the index that was previous before. Finally release the lock.
    """
    alias = settings.index_alias
    body = _body(settings, dims, numeric)
    lock = AliasLock(client, alias, settings.lock_ttl)
    name = new_index_name(alias, settings.mapping_version)
    stale = lock.acquire(name)
    try:
        live = alias_indices(client, alias)
        previous = alias_indices(client, previous_alias(alias))
        drop_orphans(client, alias, live, keep=live + previous, also=stale.index if stale else None)
        new = create_index(client, settings, dims, building=True, name=name, numeric=numeric,
                           rrf=server.rrf is not False)
        try:
            unfit: list[tuple[str, str]] = []
            actions = index_actions(unstored_fused_fits(docs, dims, unfit), new, settings.mapping_version,
                                    fused=dims.image is not None, as_base64=server.base64_vectors, numeric=numeric)
            report = bulk_write(client, actions, settings, heartbeat=lock.renew)
            report.failed = unfit + report.failed
            if not report.ok:
                report.written = 0
                client.indices.delete(index=new)
                return report
            finish_build(client, settings, new)
            problems = check_index(client, new, report.written, body["mappings"])
            if problems:
                raise ReindexCheckFailed(f"the new index {new} did not go live: {'; '.join(problems)}; "
                                         f"{alias!r} stays on {', '.join(live) or 'nothing'}")
            client.indices.update_aliases(actions=swap_actions(alias, live, new, previous))
        except BaseException:
            _try_delete(client, new)
            raise
        if previous:
            client.indices.delete(index=",".join(previous))
        return report
    finally:
        lock.release()


def rollback(client: Elasticsearch, settings: ESSettings) -> tuple[str, str]:
    """Move the alias back to the index the last full reindex replaced, in one `_aliases` call (the replaced
    and the current index trade places, so a second rollback undoes the first). Returns (from, to)."""
    alias = settings.index_alias
    lock = AliasLock(client, alias, settings.lock_ttl)
    stale = lock.acquire("")
    try:
        live, previous = alias_indices(client, alias), alias_indices(client, previous_alias(alias))
        drop_orphans(client, alias, live, keep=live + previous, also=stale.index if stale else None)
        if not previous or not live:
            raise NothingToRollBack(f"no previous index is kept for {alias!r}; nothing to roll back to")
        client.indices.update_aliases(actions=swap_actions(alias, live, previous[0], previous))
        return live[0], previous[0]
    finally:
        lock.release()


def _try_delete(client: Elasticsearch, index: str) -> None:
    """Drop a half-built index if the cluster still answers; the caller is already failing with the cause."""
    try:
        client.options(ignore_status=404, max_retries=0).indices.delete(index=index)
    except TransportError:
        pass
