"""Stage: products → text, image and fused vectors, through the embedding cache."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from shoptag.core.settings import EncoderSettings
from shoptag.indexer.search_common import VectorDims
from shoptag.store.records import StoredProduct
from shoptag.tagger.embedding_cache import EmbeddingCache, encode_with_cache, fill_cache
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

    def take(self, rows: Sequence[int]) -> ProductVectors:
        """The vectors of these products only."""
        return ProductVectors(self.text[rows], None if self.image is None else self.image[rows], self.has_image[rows],
                              self.fused[rows])


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


def encode_ahead(
    products: Sequence[StoredProduct], encoders: Encoders, open_cache: Callable[[], EmbeddingCache],
) -> Iterator[list[StoredProduct]]:
    """`products` in groups as their vectors are ready in the cache: the cached ones at once, the others as a
    background thread encodes them (per modality one length-sorted pass over all of them, so the encoder's
    batches are the ones it would make over the whole catalog) and writes each slice to the cache. The caller
    scores and writes while the encoder works. Closing the generator ends the encoding after its current slice
    (use it under `contextlib.closing`)."""
    modalities = [("text", encoders.text, products, [p.text for p in products], [p.text_hash for p in products],
                   encoders.settings.batch_size, len)]
    if encoders.image is not None:
        pictured = [p for p in products if p.image and p.image_hash]
        modalities.append(("image", encoders.image, pictured, [p.image for p in pictured],
                           [p.image_hash for p in pictured], encoders.settings.image_batch_size, None))
    cache = open_cache()
    try:
        missing = {name: cache.missing(encoder.model_id, hashes) for name, encoder, _, _, hashes, _, _ in modalities}
    finally:
        cache.close()
    waiting: dict[tuple[str, str], list[str]] = {}  # (modality, hash) -> ids of the products needing it
    needs: dict[str, int] = {}
    for name, _, group, _, hashes, _, _ in modalities:
        for product, key in zip(group, hashes):
            if key in missing[name]:
                waiting.setdefault((name, key), []).append(product.id)
                needs[product.id] = needs.get(product.id, 0) + 1
    yield [p for p in products if p.id not in needs]
    if not needs:
        return
    by_id = {p.id: p for p in products}
    slices: queue.Queue = queue.Queue()
    stop = threading.Event()

    def encode_all() -> None:
        worker_cache = open_cache()
        try:
            for name, encoder, _, items, hashes, batch_size, length in modalities:
                for keys in fill_cache(items, hashes, missing[name], model_id=encoder.model_id, encode=encoder.encode,
                                       cache=worker_cache, batch_size=batch_size, length=length):
                    slices.put((name, keys))
                    if stop.is_set():
                        return
        except BaseException as exc:  # raised again on the caller's thread
            slices.put(exc)
        finally:
            worker_cache.close()
            slices.put(None)

    worker = threading.Thread(target=encode_all, name="shoptag-encode", daemon=True)
    worker.start()
    try:
        while (message := slices.get()) is not None:
            if isinstance(message, BaseException):
                raise message
            name, keys = message
            ready = []
            for key in keys:
                for pid in waiting.pop((name, key), ()):
                    needs[pid] -= 1
                    if not needs[pid]:
                        ready.append(by_id[pid])
            yield ready
    finally:
        stop.set()
        worker.join()
