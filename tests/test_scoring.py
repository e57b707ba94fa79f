"""The pure scoring functions: kNN vote, fusion and calibration, the head, vector fusion, vocabularies."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from shoptag.tagger.fuse import apply_temperature, choose_weights, fit_temperature, log_loss, simplex_grid
from shoptag.tagger.head import class_weights, predict_head, train_head
from shoptag.tagger.head_config import HeadConfig
from shoptag.tagger.product_vector import fuse, query_scale
from shoptag.tagger.propagate import select_labelled, vote, vote_weights
from shoptag.tagger.vocab import build_vocabs
from shoptag.vectors.faiss_index import VectorIndex
from shoptag.vectors.index_choice import TRAIN_PER_LIST


def test_vote_weights_follow_similarity_and_ignore_padding():
    w = vote_weights(np.array([[0.9, 0.5, -np.inf]], dtype=np.float32), temperature=0.1)
    assert w[0, 2] == 0
    assert w[0, 0] > w[0, 1] > 0
    assert w.sum() == pytest.approx(1.0)
    assert vote_weights(np.full((1, 3), -np.inf, dtype=np.float32), 0.1).sum() == 0


def test_vote_sums_neighbour_weights_per_tag():
    labels = sp.csr_matrix(np.array([[1, 0], [0, 1], [1, 0]], dtype=np.float32))
    rows = np.array([[0, 1, 2], [1, -1, -1]])
    weights = np.array([[0.5, 0.3, 0.2], [1.0, 0, 0]], dtype=np.float32)
    scores = vote(rows, weights, labels)
    np.testing.assert_allclose(scores, [[0.7, 0.3], [0.0, 1.0]], atol=1e-6)


def test_select_labelled_skips_unlabelled_neighbours_and_keeps_order():
    rows = np.array([[3, 0, 2, 1, -1]])
    labelled = np.array([False, True, True, True])
    sims = np.array([[0.9, 0.8, 0.7, 0.6, -np.inf]], dtype=np.float32)
    chosen, chosen_sims = select_labelled(rows, sims, labelled, k=2)
    assert chosen.tolist() == [[3, 2]]
    np.testing.assert_allclose(chosen_sims, [[0.9, 0.7]])
    few, few_sims = select_labelled(rows, sims, np.array([False, False, True, False]), k=3)
    assert few.tolist() == [[2, -1, -1]] and few_sims[0, 1:].tolist() == [-np.inf, -np.inf]


def test_knn_never_votes_with_the_product_itself():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"p{i}" for i in range(30)]
    index = VectorIndex.build(ids, vectors)
    found, sims = index.search(vectors, 5, exclude=ids)
    assert all(ids[i] not in found[i] for i in range(30))
    assert (sims[:, 0] < 0.999).all()


def test_ivf_index_trains_on_a_sample_per_list_and_still_finds_neighbours():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(16, 32)).astype(np.float32)
    vectors = centres[rng.integers(0, 16, 4 * TRAIN_PER_LIST * 8)] + 0.1 * rng.normal(size=(4 * TRAIN_PER_LIST * 8, 32))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    ids = [f"p{i}" for i in range(len(vectors))]
    index = VectorIndex.build(ids, vectors, "IVF8,Flat", nprobe=8)
    assert index.nlist == 8 and index.is_trained and len(index) == len(ids)
    found, sims = index.search(vectors[:20], 1)
    assert [f[0] for f in found] == ids[:20]  # every list probed: exact
    np.testing.assert_allclose(sims[:, 0], 1.0, atol=1e-5)
    assert VectorIndex(32, "Flat").nlist == 0


def test_fused_vector_halves_and_missing_image():
    text = np.eye(2, 4, dtype=np.float32)
    image = np.eye(2, 3, dtype=np.float32)
    fused = fuse(text, image, np.array([True, False]), image_weight=0.36)
    assert fused.shape == (2, 7)
    assert np.linalg.norm(fused[0]) == pytest.approx(1.0)
    assert not fused[1, 4:].any()  # no photo: the image half is empty, not invented
    assert query_scale(fused)[1] == pytest.approx(1 / 0.64)


def test_choose_weights_prefers_the_informative_source():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=300)
    good = np.eye(3)[y] * 0.8 + 0.2 / 3
    noise = rng.dirichlet(np.ones(3), size=300)
    weights = choose_weights({"good": good, "noise": noise}, y, multilabel=False)
    assert weights["good"] >= 0.9
    assert (0.0, 1.0) in simplex_grid(2) and (1.0, 0.0) in simplex_grid(2)


def test_temperature_fixes_overconfidence():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, size=2000)
    logits = np.eye(4)[y] * 1.0 + rng.normal(scale=1.0, size=(2000, 4))
    overconfident = apply_temperature(np.exp(logits * 4) / np.exp(logits * 4).sum(1, keepdims=True), 1.0, False)
    t = fit_temperature(overconfident, y, multilabel=False)
    assert t > 2
    assert log_loss(apply_temperature(overconfident, t, False), y, False) < log_loss(overconfident, y, False)


def test_head_learns_separable_classes_and_weights_the_tail():
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(4, 8)) * 3
    y = np.concatenate([np.zeros(300, int), np.ones(100, int), np.full(30, 2), np.full(10, 3)])
    x = (centres[y] + rng.normal(size=(len(y), 8))).astype(np.float32)
    order = rng.permutation(len(y))
    fit, val = order[:330], order[330:]
    model, report = train_head(x[fit], y[fit], x[val], y[val], 4, False, HeadConfig(epochs=80, patience=10))
    accuracy = (predict_head(model, x[val], False).argmax(1) == y[val]).mean()
    assert accuracy > 0.9
    weights = class_weights(np.bincount(y[fit], minlength=4), 0.5)
    assert weights[3] > weights[2] > weights[0]


def test_multilabel_head_outputs_independent_probabilities():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0], axis=1).astype(np.float32)
    model, _ = train_head(x[:300], y[:300], x[300:], y[300:], 2, True, HeadConfig(epochs=80, patience=10))
    p = predict_head(model, x[300:], True)
    assert ((p > 0.5) == (y[300:] > 0.5)).mean() > 0.9
    assert not np.allclose(p.sum(1), 1.0)


def test_vocab_marks_multivalued_families_and_drops_rare_values():
    vocabs = build_vocabs(
        [{"category": ["Jeans"], "scene": ["office", "party"]}, {"category": ["Jeans"], "scene": ["office"]},
         {"category": ["Watch"]}, {"category": ["Watch"]}, {"category": ["Once"]}],
        min_count=2,
    )
    assert vocabs["category"].values == ("Jeans", "Watch") and not vocabs["category"].multilabel
    assert vocabs["scene"].multilabel and vocabs["scene"].values == ("office",)
    assert vocabs["category"].single_labels([["Once"], ["Watch"], None]).tolist() == [-1, 1, -1]


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_temperature):
    rng = np.random.default_rng(5)
    logits = rng.normal(scale=2.0, size=(4000, 5))
    calibrated = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(5, p=p) for p in calibrated])
    distorted = np.exp(logits / true_temperature)  # a model that reports logits / T' needs temperature 1/T'
    distorted /= distorted.sum(1, keepdims=True)
    t = fit_temperature(distorted, y, multilabel=False)
    assert t == pytest.approx(1 / true_temperature, rel=0.05)
    np.testing.assert_allclose(apply_temperature(distorted, t, False), calibrated, atol=0.02)
