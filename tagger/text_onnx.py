"""sentence-transformers models run by ONNX Runtime on the CPU: the same vectors without importing torch,
transformers and sentence-transformers (about 5 s per process on 2 cores) or paying their inference overhead.

The first CPU run of a model exports it once (model, mean pooling and all, as one ONNX graph) with torch's
exporter, beside its tokenizer, into ``<cache>/<model id digest>/``, written to a temporary folder and renamed
into place. Later runs load only ``onnxruntime`` and ``tokenizers``. The export keeps the model's id: its
vectors match the torch model's to about 1e-7, so embeddings cached by either are the same vectors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

EXPORT_VERSION = 1  # bump when the export changes, so old exports are made anew
OPSET = 17


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/shoptag/onnx`` (``~/.cache/shoptag/onnx``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shoptag" / "onnx"


def export_dir(cache_dir: Path, model_id: str) -> Path:
    digest = hashlib.sha256(f"{model_id}|{EXPORT_VERSION}".encode()).hexdigest()[:16]
    return Path(cache_dir) / digest


def onnx_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def export_sentence_transformer(model: Any, model_id: str, cache_dir: Path) -> Path:
    """Export a loaded SentenceTransformer (transformer + pooling, output before normalisation) and its
    tokenizer; returns the folder. An existing export is kept."""
    import torch

    target = export_dir(cache_dir, model_id)
    if (target / "meta.json").is_file():
        return target

    class Embed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.model({"input_ids": input_ids, "attention_mask": attention_mask})["sentence_embedding"]

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        sample = model.tokenizer(["a product title", "another, longer product title"], padding=True, return_tensors="pt")
        embed = Embed().to("cpu").eval()
        # the tracer warns that shape checks become constants: they are, for every batch (test_text_onnx)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                embed, (sample["input_ids"], sample["attention_mask"]), str(staging / "model.onnx"),
                input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                              "embedding": {0: "batch"}},
                opset_version=OPSET, dynamo=False,
            )
        model.tokenizer.save_pretrained(str(staging))
        meta = {"model_id": model_id, "dim": int(model.get_embedding_dimension()),
                "max_tokens": int(model.max_seq_length), "export_version": EXPORT_VERSION}
        (staging / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(staging, target)
        except OSError:  # another process exported it first: theirs is as good
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


class OnnxSentenceEncoder:
    """Encodes with an exported model: tokenizers + ONNX Runtime, L2-normalised float32 rows."""

    def __init__(self, folder: Path, batch_size: int = 64, threads: int | None = None) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        meta = json.loads((Path(folder) / "meta.json").read_text())
        self.model_id: str = meta["model_id"]
        self.dim: int = meta["dim"]
        self.batch_size = batch_size
        self._tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        self._tokenizer.enable_truncation(meta["max_tokens"])
        self._tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        # idle threads sleep rather than spin between batches: spinning took the cores from the work that runs
        # beside encoding (tagging writes the previous batch meanwhile); encoding alone is ~6 % slower for it
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(Path(folder) / "model.onnx"), options, providers=["CPUExecutionProvider"])

    def encode(self, texts: Sequence[str], *, query: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths share a batch: less padding
        for start in range(0, len(texts), self.batch_size):
            rows = order[start : start + self.batch_size]
            encodings = self._tokenizer.encode_batch([texts[i] for i in rows])
            feeds = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            }
            out[rows] = self._session.run(None, feeds)[0]
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
