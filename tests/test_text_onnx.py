"""ONNX Runtime encoding of a sentence-transformers model: the same vectors as torch, exported once."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from shoptag.tagger.text_encoder import load_text_encoder
from shoptag.tagger.text_onnx import export_dir

TITLES = [
    "Nike Men Blue T-shirt",
    "男士修身直筒牛仔裤 深蓝色",
    "Puma Women Black Sports Shoes with a cushioned sole, a breathable mesh upper and a long description " * 3,
    "",
    "Titan Women Silver Watch",
    "ONLY 女士 高腰 阔腿裤 2024 春季新款",
]


def test_onnx_vectors_match_torch_for_every_length_and_batch(minilm, tmp_path):
    onnx = load_text_encoder("minilm", device="cpu", batch_size=4, onnx_cache=tmp_path)
    assert onnx.model_id == minilm.model_id  # the same vectors: the embedding cache shares them
    texts = TITLES * 3
    got, want = onnx.encode(texts), minilm.encode(texts)
    assert got.shape == want.shape == (len(texts), minilm.dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert (export_dir(tmp_path, minilm.model_id) / "model.onnx").is_file()


def test_a_later_process_encodes_from_the_export_without_importing_torch(minilm, tmp_path):
    load_text_encoder("minilm", device="cpu", onnx_cache=tmp_path).encode(["export once"])
    script = (
        "import sys; from pathlib import Path; import numpy as np\n"
        "from shoptag.tagger.text_encoder import load_text_encoder\n"
        f"enc = load_text_encoder('minilm', device='cpu', onnx_cache=Path({str(tmp_path)!r}))\n"
        "np.save(sys.argv[1], enc.encode(['Nike Men Blue T-shirt']))\n"
        "print('torch' in sys.modules, 'sentence_transformers' in sys.modules)\n"
    )
    out = tmp_path / "v.npy"
    run = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, check=True)
    assert run.stdout.split() == ["False", "False"]
    np.testing.assert_allclose(np.load(out)[0], minilm.encode(["Nike Men Blue T-shirt"])[0], atol=2e-5)


def test_without_a_cache_the_encoder_stays_on_torch(minilm):
    assert minilm.onnx_cache is None
    assert minilm._onnx is None
