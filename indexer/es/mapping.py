"""The versioned index body (settings + mappings) and search template in `es_mappings/`, filled for one index.

Files are named ``products.{version}.json`` and ``search.{version}.mustache``; a new version is a new file,
so an index always says (in ``_meta.mapping_version`` and in every document) which file it was made from.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from ..search_common import VectorDims

VECTOR_FIELDS = ("text", "image", "fused")


def _read(name: str) -> str:
    return resources.files("shoptag.es_mappings").joinpath(name).read_text(encoding="utf-8")


def index_body(version: str, dims: VectorDims, vector_index_type: str) -> dict[str, Any]:
    """``{"settings": ..., "mappings": ...}`` of `version`, with vector sizes and the kNN index type filled in.

    Without image vectors the `image_vector` field is left out.
    """
    body = json.loads(_read(f"products.{version}.json"))
    properties = body["mappings"]["properties"]
    for kind in VECTOR_FIELDS:
        field = properties[f"{kind}_vector"]
        dim = getattr(dims, kind)
        if dim is None:
            del properties[f"{kind}_vector"]
            continue
        field["dims"] = dim
        field["index_options"]["type"] = vector_index_type
    return body


def search_template(version: str) -> str:
    """The mustache source of the storefront's hybrid search template of `version`."""
    return _read(f"search.{version}.mustache")
