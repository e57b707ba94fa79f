"""Training memory: the largest fits of a training (each family's lexical solver) run before torch is loaded,
and a training whose vectors are all cached never loads the text encoder."""

from __future__ import annotations

import subprocess
import sys

from fixtures_models import SAMPLE

from shoptag.core.settings import Settings
from shoptag.pipeline.encode import Encoders
from shoptag.pipeline.ingest import ingest
from shoptag.pipeline.train import train
from shoptag.pipeline.workspace import Workspace

_FIT_WATCHING_TORCH = """
import sys
import numpy as np
import shoptag.cli, shoptag.pipeline.train
from shoptag.tagger import lexical
from shoptag.tagger.head_config import HeadConfig
from shoptag.tagger.model import FitConfig, fit_tagger

print('torch' in sys.modules)
loaded_at_fit = []
fit = lexical.LexicalClassifier.fit
def watched(self, *args, **kwargs):
    loaded_at_fit.append('torch' in sys.modules)
    return fit(self, *args, **kwargs)
lexical.LexicalClassifier.fit = watched
n = 200
tags = [{'colour': [('red', 'blue', 'green')[i % 3]], 'kind': [('shirt', 'shoe')[i % 2]]} for i in range(n)]
texts = [f"{t['colour'][0]} {t['kind'][0]} no {i}" for i, t in enumerate(tags)]
vectors = np.random.default_rng(0).normal(size=(n, 16)).astype(np.float32)
val = np.arange(n) % 5 == 0
fit_tagger([str(i) for i in range(n)], vectors, texts, tags, ~val, val, {},
           FitConfig(crossfit_below=0, head=HeadConfig(epochs=2, patience=1)))
print(loaded_at_fit, 'torch' in sys.modules)
"""


def test_the_lexical_fits_run_before_torch_is_loaded():
    run = subprocess.run([sys.executable, "-c", _FIT_WATCHING_TORCH], capture_output=True, text=True, check=True)
    before, at_fits, after = run.stdout.split("\n", 2)[0], *run.stdout.split("\n")[1].rsplit(" ", 1)
    assert before == "False", "importing the training path loads torch"
    assert at_fits == "[False, False]", "a lexical fit ran with torch loaded"
    assert after == "True"  # the heads did train


def test_training_with_every_vector_cached_loads_no_encoder(tmp_path):
    settings = Settings(workspace=tmp_path / "ws", encoders={"text_model": "minilm", "device": "cpu", "onnx": False},
                        tagger={"lexical": False, "head_epochs": 2})
    workspace = Workspace(settings.workspace)
    store = workspace.open_store()
    try:
        ingest(settings, store, SAMPLE, show_progress=False)
        first = Encoders(settings.encoders, workspace.cache_dir)
        train(settings, store, first, show_progress=False)
        assert "_model" in first.text.__dict__  # the first training encoded the titles
        again = Encoders(settings.encoders, workspace.cache_dir)
        model, _ = train(settings, store, again, show_progress=False)
        assert model is not None and model.encoders["text_model"] == first.text.model_id
        assert "_model" not in again.text.__dict__ and "_onnx" not in again.text.__dict__
    finally:
        store.close()
