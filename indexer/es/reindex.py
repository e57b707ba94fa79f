"""Writing products to Elasticsearch: bulk actions, and the zero-downtime reindex behind an alias.

A full reindex fills a new index named ``{alias}-{version}-{timestamp}`` while the alias keeps serving the
old one; only when every document went in does one `_aliases` call move the alias (remove old + add new),
and only then is the old index deleted. Any rejected document, or the cluster going away, leaves the alias
where it was.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

import numpy as np
from elasticsearch import Elasticsearch, TransportError, helpers

from shoptag.core.settings import ESSettings
from ..documents import SearchDoc, WriteReport
from ..search_common import VectorDims, doc_fingerprint, tag_values
from .mapping import index_body, search_template
from .search import template_id, template_script


def new_index_name(alias: str, version: str, now: datetime | None = None) -> str:
    """A fresh versioned index name for `alias`, e.g. ``shoptag-products-v1-20250101120000123456``."""
    now = now or datetime.now(timezone.utc)
    return f"{alias}-{version}-{now:%Y%m%d%H%M%S%f}"


def is_versioned_index(name: str, alias: str) -> bool:
    """Whether `name` was made by `new_index_name` for `alias` (of any version)."""
    return re.fullmatch(rf"{re.escape(alias)}-[a-z0-9_]+-\d{{20}}", name) is not None


def doc_source(doc: SearchDoc, mapping_version: str) -> dict[str, Any]:
    """The indexed document: text, tags per family (with scores in `tag_details`), vectors, and the model
    ids, content hash and mapping version that tell a stale document from a current one."""
    values = tag_values(doc)
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
        "attributes": doc.attributes,
        "content_hash": doc.content_hash,
        "text_model": doc.text_model,
        "image_model": doc.image_model,
        "mapping_version": mapping_version,
        "fingerprint": doc_fingerprint(doc),
    }
    for kind, vector in (("text", doc.text_vector), ("image", doc.image_vector), ("fused", doc.fused_vector)):
        if vector is not None:
            source[f"{kind}_vector"] = np.asarray(vector, dtype=np.float64).tolist()
    return source


def index_actions(docs: Iterable[SearchDoc], index: str, mapping_version: str) -> Iterator[dict[str, Any]]:
    """`helpers.streaming_bulk` actions writing `docs` into `index`."""
    for doc in docs:
        yield {"_op_type": "index", "_index": index, "_id": doc.id, "_source": doc_source(doc, mapping_version)}


def delete_actions(ids: Iterable[str], index: str) -> Iterator[dict[str, Any]]:
    for pid in ids:
        yield {"_op_type": "delete", "_index": index, "_id": pid}


def bulk_write(client: Elasticsearch, actions: Iterable[dict[str, Any]], settings: ESSettings) -> WriteReport:
    """Send `actions` with `streaming_bulk`, retrying items rejected with 429 with exponential backoff.

    Every rejected item ends up in `failed` with its reason; deleting a missing document is not a failure.
    Transport errors (the cluster gone) are raised, never turned into silent gaps.
    """
    report = WriteReport()
    for ok, item in helpers.streaming_bulk(
        client,
        actions,
        chunk_size=settings.bulk_chunk_size,
        max_retries=settings.max_retries,
        initial_backoff=settings.bulk_initial_backoff,
        max_backoff=settings.bulk_max_backoff,
        raise_on_error=False,
        raise_on_exception=True,
    ):
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
            raise ValueError(f"{alias!r} is an index, not an alias; delete or rename it before reindexing")
        return []
    return sorted(client.indices.get_alias(name=alias))


def swap_actions(alias: str, old: list[str], new: str) -> list[dict[str, Any]]:
    """The `_aliases` actions moving `alias` from `old` to `new` in one atomic step."""
    return [{"remove": {"index": index, "alias": alias}} for index in old] + [{"add": {"index": new, "alias": alias}}]


def drop_orphans(client: Elasticsearch, alias: str, keep: list[str]) -> list[str]:
    """Delete versioned indices of `alias` left by an interrupted reindex (not behind the alias)."""
    existing = client.indices.get(index=f"{alias}-*", expand_wildcards="all", allow_no_indices=True)
    orphans = [name for name in existing if is_versioned_index(name, alias) and name not in keep]
    if orphans:
        client.indices.delete(index=",".join(orphans))
    return orphans


def _reason(result: dict[str, Any]) -> str:
    error = result.get("error")
    if isinstance(error, dict):
        return f"{result.get('status')} {error.get('type')}: {error.get('reason')}"
    return f"{result.get('status')} {error}"


def create_index(client: Elasticsearch, settings: ESSettings, dims: VectorDims) -> str:
    """Create a new versioned index (not yet behind the alias) and store the search template of its version."""
    name = new_index_name(settings.index_alias, settings.mapping_version)
    client.indices.create(index=name, **index_body(settings.mapping_version, dims, settings.vector_index_type))
    client.put_script(
        id=template_id(settings.index_alias, settings.mapping_version),
        **template_script(search_template(settings.mapping_version)),
    )
    return name


def ensure_alias(client: Elasticsearch, settings: ESSettings, dims: VectorDims) -> None:
    """Make the alias exist (over a new empty index) so that the first upsert has somewhere to go."""
    if not alias_indices(client, settings.index_alias):
        new = create_index(client, settings, dims)
        client.indices.update_aliases(actions=swap_actions(settings.index_alias, [], new))


def full_reindex(client: Elasticsearch, settings: ESSettings, dims: VectorDims, docs: Iterable[SearchDoc]) -> WriteReport:
    """Rebuild into a new index and move the alias to it in one step, only if every document went in.

    On a rejected document the new index is dropped and the report lists why (written = 0: nothing went
    live). On any exception the alias stays on the old index and the exception propagates; an index left
    behind by a lost cluster is dropped by the next full reindex.
    """
    alias = settings.index_alias
    old = alias_indices(client, alias)
    drop_orphans(client, alias, keep=old)
    new = create_index(client, settings, dims)
    try:
        report = bulk_write(client, index_actions(docs, new, settings.mapping_version), settings)
        if not report.ok:
            report.written = 0
            client.indices.delete(index=new)
            return report
        client.indices.refresh(index=new)
        client.indices.update_aliases(actions=swap_actions(alias, old, new))
    except BaseException:
        _try_delete(client, new)
        raise
    if old:
        client.indices.delete(index=",".join(old))
    return report


def _try_delete(client: Elasticsearch, index: str) -> None:
    """Drop a half-built index if the cluster still answers; the caller is already failing with the cause."""
    try:
        client.options(ignore_status=404, max_retries=0).indices.delete(index=index)
    except TransportError:
        pass
