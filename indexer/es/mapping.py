"""The versioned index body (settings + mappings) and search template in `es_mappings/`, filled for one index.

Files are named ``products.{version}.json`` and ``search.{version}.mustache``; a new version is a new file,
so an index always says (in ``_meta.mapping_version`` and in every document) which file it was made from.
"""

from __future__ import annotations

import json
from importlib import resources
from collections.abc import Sequence
from typing import Any

from ..search_common import VectorDims

VECTOR_FIELDS = ("text", "image", "fused")


def _read(name: str) -> str:
    return resources.files("shoptag.es_mappings").joinpath(name).read_text(encoding="utf-8")


def index_body(
    version: str, dims: VectorDims, vector_index_type: str, *, shards: int = 1, replicas: int = 1,
    refresh_interval: str = "1s", numeric: Sequence[str] = (),
) -> dict[str, Any]:
    """``{"settings": ..., "mappings": ...}`` of `version`, with shards, replicas, refresh interval, vector sizes,
    the kNN index type and one `double` field per declared numeric attribute (`numbers.<name>`) filled in.

    Without image vectors the `image_vector` field is left out, and so is `fused_vector`: the fused vector is then
    the text vector, and `similar` uses `text_vector` instead of storing the same values twice.
    """
    body = json.loads(_read(f"products.{version}.json"))
    body["settings"].update(
        {"number_of_shards": shards, "number_of_replicas": replicas, "refresh_interval": refresh_interval})
    properties = body["mappings"]["properties"]
    properties["numbers"]["properties"] = {name: {"type": "double"} for name in sorted(numeric)}
    for kind in VECTOR_FIELDS:
        field = properties[f"{kind}_vector"]
        dim = getattr(dims, kind)
        if dim is None or (kind == "fused" and dims.image is None):
            del properties[f"{kind}_vector"]
            continue
        field["dims"] = dim
        field["index_options"]["type"] = vector_index_type
    return body


def template_body(alias: str, version: str, body: dict[str, Any]) -> dict[str, Any]:
    """An index template over ``{alias}-{version}-*`` carrying `body`: an index of that pattern made by any
    write (e.g. a bulk into an index deleted under it) gets the strict, versioned mapping, never a dynamic one."""
    return {"index_patterns": [f"{alias}-{version}-*"], "priority": 500, "template": body,
            "_meta": {"shoptag": {"mapping_version": version}}}


def search_template(version: str, rrf: bool = True) -> str:
    """The mustache source of the storefront's hybrid search template of `version`: with the `rrf` retriever, or
    (`rrf` False: a licence without it) BM25 and kNN in one request with their scores added."""
    return _read(f"search.{version}.mustache" if rrf else f"search.{version}.score-sum.mustache")
