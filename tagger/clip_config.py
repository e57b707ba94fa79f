"""shoptag's own open_clip architectures, and how their text tower tokenizes Chinese.

No CLIP weights can be downloaded on every machine, so shoptag ships configurations small enough to train
from scratch: ``shoptag-tiny`` (tests, seconds on CPU), ``shoptag-small`` (the 60×80 fashion photos on a
2-core CPU) and ``shoptag-base`` (from scratch on one GPU). They are plain open_clip model configs,
registered with ``open_clip.add_model_config`` so every open_clip function (models, tokenizers,
transforms) treats them like its built-ins.

Tokenizer: all three use open_clip's default byte-level BPE (``SimpleTokenizer``, 49,408 tokens). A
Chinese character that has no merge becomes its UTF-8 bytes, so no character is ever unknown and the
text decodes back exactly. The price is length: Chinese costs ~2.4 tokens a character ("韩版宽松牛仔裤女"
is 20 tokens, "2024夏季新款纯棉短袖T恤男士圆领" 39, a 26-character title 64), while English fashion titles
take about one token a word ("Peter England Men Party Blue Jeans" is 6). Hence 64 tokens of context in
``shoptag-small`` and 77 in ``shoptag-base``; only the test config keeps 32.
The tokenizer that ships offline with the MiniLM text encoder (BERT uncased WordPiece, 30,522 tokens)
was rejected: it maps half the characters of real Chinese titles to ``[UNK]`` (5 of 8 in
"韩版宽松牛仔裤女", 7 of 7 in "黑色 运动鞋 耐克"), so the text tower could not tell 牛仔裤 from 运动鞋.
A config may still name any Hugging Face tokenizer in ``text_cfg.hf_tokenizer_name`` (e.g. a Chinese
BERT where the hub is reachable); open_clip then uses it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import open_clip

SHOPTAG_CONFIGS: dict[str, dict[str, Any]] = {
    # A 2-layer ViT on 32 px images and a 2-layer text tower: trains in seconds on CPU, for tests.
    "shoptag-tiny": {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
        "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    },
    # A small ModifiedResNet (conv nets learn colour and shape from few images faster than ViTs, and
    # a 64 px ViT with 8 px patches was 10x slower per step on CPU) and a narrow 3-layer text tower:
    # ~0.9 s per step of 128 pairs, an epoch of the 31k fashion training photos in ~4 min on 2 cores.
    "shoptag-small": {
        "embed_dim": 256,
        "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 32, "patch_size": None},
        "text_cfg": {"context_length": 64, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3},
    },
    # From scratch on a GPU: a ViT with 8 px patches on 96 px images and a 77-token text tower.
    "shoptag-base": {
        "embed_dim": 512,
        "vision_cfg": {"image_size": 96, "layers": 8, "width": 512, "head_width": 64, "patch_size": 8},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 8},
    },
}


def config_digest(model_cfg: dict[str, Any]) -> str:
    """A short hash of a model config, stable across key order."""
    return hashlib.sha256(json.dumps(model_cfg, sort_keys=True).encode()).hexdigest()[:12]


def register_config(name: str, model_cfg: dict[str, Any]) -> str:
    """Make `name` an open_clip model with `model_cfg`; returns `name`.

    open_clip reads configs only from JSON files named after the model, so the config is written
    (atomically, in a folder named by its hash, so concurrent processes agree) to the temp dir.
    """
    if open_clip.get_model_config(name) == model_cfg:
        return name
    path = Path(tempfile.gettempdir()) / "shoptag-clip-configs" / config_digest(model_cfg) / f"{name}.json"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(model_cfg))
        os.replace(tmp, path)
    open_clip.add_model_config(path)
    return name


def register_shoptag_configs() -> None:
    """Register ``shoptag-tiny``, ``shoptag-small`` and ``shoptag-base`` with open_clip (idempotent)."""
    for name, cfg in SHOPTAG_CONFIGS.items():
        register_config(name, cfg)
