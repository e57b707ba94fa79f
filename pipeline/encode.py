"""Stage: products → text, image and fused vectors, through the embedding cache."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from shoptag.core.settings import EncoderSettings
from shoptag.indexer.search_common import VectorDims
from shoptag.store.records import StoredProduct
from shoptag.tagger.embedding_cache import EmbeddingCache, encode_with_cache
from shoptag.tagger.product_vector import fuse
from shoptag.tagger.text_encoder import TextEncoder, load_text_encoder
from shoptag.tagger.text_onnx import default_cache_dir

from .progress import progress_bar


class Encoders:
    """The configured encoders, loaded on first use (a run that finds every vector cached loads none).
    The ONNX export goes to `encoders.onnx_cache`, else `cache_dir/onnx` (the workspace's cache folder),
    else the user cache folder."""

    def __init__(self, settings: EncoderSettings, cache_dir: Path | None = None) -> None:
        self.settings = settings
        self.cache_dir = cache_dir

    @cached_property
    def text(self) -> TextEncoder:
        s = self.settings
        fallback = self.cache_dir / "onnx" if self.cache_dir is not None else default_cache_dir()
        onnx_cache = (s.onnx_cache or fallback) if s.onnx else None
        return load_text_encoder(s.text_model, s.device, s.batch_size, onnx_cache=onnx_cache)

    @cached_property
    def image(self):  # ImageEncoder | None; imported lazily: open_clip is slow to import
        if not self.settings.image_model:
            return None
        from shoptag.tagger.image_encoder import ImageEncoder

        return ImageEncoder(
            self.settings.image_model, self.settings.image_checkpoint, self.settings.device, self.settings.image_batch_size
        )

    def dims(self) -> VectorDims:
        """The sizes of the vectors these encoders make, which a search index must be built for."""
        text = self.text.dim
        image = self.image.dim if self.image is not None else None
        return VectorDims(text=text, image=image, fused=text + (image or 0))

    def ids(self) -> dict[str, object]:
        """What a trained model records: vectors from other encoders or weights are stale."""
        return {
            "text_model": self.text.model_id,
            "image_model": self.image.model_id if self.image is not None else None,
            "image_weight": self.settings.image_weight if self.image is not None else 0.0,
        }


@dataclass
class ProductVectors:
    text: np.ndarray
    image: np.ndarray | None
    has_image: np.ndarray
    fused: np.ndarray

    def modality(self, row: int) -> str:
        """What the product's vector was made from: its image counts only when an image tower encoded it."""
        return "text+image" if self.image is not None and self.has_image[row] else "text"


def _encode_cached(
    label: str, items: Sequence, hashes: Sequence[str], encoder, cache: EmbeddingCache, batch_size: int,
    show_progress: bool, length: Callable[[object], int] | None = None,
) -> tuple[np.ndarray, int]:
    """One modality through the cache, with its progress bar."""
    with progress_bar(f"encode {label}", len(items), show_progress) as advance:
        return encode_with_cache(
            items, hashes, model_id=encoder.model_id, dim=encoder.dim, encode=encoder.encode, cache=cache,
            batch_size=batch_size, length=length, on_batch=advance,
        )


def encode_products(
    products: Sequence[StoredProduct],
    encoders: Encoders,
    cache: EmbeddingCache,
    *,
    show_progress: bool = True,
) -> tuple[ProductVectors, dict[str, int]]:
    """Vectors of `products`, encoding only what the cache lacks; also how many were encoded per modality."""
    settings = encoders.settings
    text, text_encoded = _encode_cached(
        "text", [p.text for p in products], [p.text_hash for p in products], encoders.text, cache,
        settings.batch_size, show_progress, len,
    )
    has_image = np.array([bool(p.image and p.image_hash) for p in products], dtype=bool)
    image, image_encoded = None, 0
    if encoders.image is not None:
        rows = np.flatnonzero(has_image)
        image = np.zeros((len(products), encoders.image.dim), dtype=np.float32)
        image[rows], image_encoded = _encode_cached(
            "images", [products[r].image for r in rows], [products[r].image_hash for r in rows], encoders.image,
            cache, settings.image_batch_size, show_progress,
        )
    fused = fuse(text, image, has_image, settings.image_weight)
    return ProductVectors(text, image, has_image, fused), {"text": text_encoded, "image": image_encoded}
