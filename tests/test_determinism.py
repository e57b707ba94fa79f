"""Training is deterministic: the same labelled data give the same model (fusion weights, temperatures,
thresholds, head and lexical weights) and the same scores, run after run."""

from __future__ import annotations

import numpy as np
import torch

from shoptag.pipeline.train import fit_on, labelled_set, split_labelled
from shoptag.pipeline.workspace import Workspace
from shoptag.tagger.model import score_sources


def test_the_same_data_give_the_same_model_and_scores(trained_sample):
    settings, store, encoders = trained_sample
    data = labelled_set(store, encoders, Workspace(settings.workspace), show_progress=False)
    split = split_labelled(data, settings)
    models = [fit_on(data, ~split.masks["val"], split.masks["val"], settings, encoders) for _ in range(2)]
    first, second = models
    assert first.labelled_ids == second.labelled_ids
    for family, a in first.families.items():
        b = second.families[family]
        assert (a.weights, a.temperature, a.knn_temperature) == (b.weights, b.temperature, b.knn_temperature)
        np.testing.assert_array_equal(a.thresholds, b.thresholds)
        for name, tensor in a.head.state_dict().items():
            assert torch.equal(tensor, b.head.state_dict()[name]), (family, name)
    rows = np.arange(len(data.ids))
    scores = [score_sources(m, data.vectors.fused[rows], data.texts, data.ids) for m in models]
    for family in first.families:
        np.testing.assert_array_equal(scores[0][family].fused, scores[1][family].fused)
        for source, values in scores[0][family].sources.items():
            np.testing.assert_array_equal(values, scores[1][family].sources[source])
