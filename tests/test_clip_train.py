"""CLIP training on CPU: the loss falls, the checkpoint loads back, a capped run resumes exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_clip import TINY_RUN, TinyRun, make_shape_pairs

from shoptag.core.settings import EncoderSettings, Settings
from shoptag.pipeline.train_clip import run_train_clip
from shoptag.tagger.clip_train import fashion_pairs, held_out_recall, retrieval_recall
from shoptag.tagger.image_encoder import ImageEncoder
from shoptag.tagger.split import split_of


def test_retrieval_recall_ranks_the_true_text_and_counts_ties_in_its_favour() -> None:
    texts = np.eye(3, dtype=np.float32)
    images = np.array([[1, 0, 0], [1, 0.5, 0], [0, 0, 1]], dtype=np.float32)  # image 1 prefers text 0
    assert retrieval_recall(images, texts, ks=(1, 2)) == {"recall@1": pytest.approx(2 / 3), "recall@2": 1.0}
    tied = np.array([[1, 0, 0], [1, 0, 0]], dtype=np.float32)  # a duplicate title: same vector twice
    assert retrieval_recall(np.eye(3, dtype=np.float32)[:2], tied, ks=(1,)) == {"recall@1": 1.0}
    assert retrieval_recall(images, texts, ks=(1,), targets=np.array([0, 0, 2])) == {"recall@1": 1.0}


def test_training_lowers_the_loss_and_learns_held_out_pairs(tiny_run: TinyRun) -> None:
    report = tiny_run.report
    assert report.steps == len(report.losses) == TINY_RUN["epochs"] * (240 // TINY_RUN["batch_size"])
    assert np.mean(report.losses[-5:]) < np.mean(report.losses[:5]) - 0.5
    first, last = report.epochs[0], report.epochs[-1]
    assert last.train_loss < first.train_loss
    assert report.n_val_titles == 12 and last.recall_at_1 > 2 / 12  # chance is 1/12
    assert last.recall_at_10 >= first.recall_at_10


def test_checkpoint_loads_back_into_the_encoder_with_the_trained_weights(tiny_run: TinyRun) -> None:
    report = tiny_run.report
    from_model = ImageEncoder("shoptag-tiny", checkpoint=str(report.model_path), device="cpu")
    from_state = ImageEncoder("shoptag-tiny", checkpoint=str(report.checkpoint_path), device="cpu")
    assert from_model.model_id == report.model_id
    images = [image for image, _ in tiny_run.val]
    np.testing.assert_array_equal(from_model.encode(images), from_state.encode(images))
    recall = held_out_recall(from_model, tiny_run.val)
    assert recall["recall@1"] == pytest.approx(report.epochs[-1].recall_at_1)
    assert recall["recall@10"] == pytest.approx(report.epochs[-1].recall_at_10)


def test_a_capped_run_resumes_from_its_step_and_ends_like_an_uncapped_one(tmp_path: Path) -> None:
    pairs = make_shape_pairs(5, seed=3)
    items = [(f"p{i}", image, title) for i, (image, title) in enumerate(pairs)]
    settings = Settings(encoders=EncoderSettings(device="cpu"))
    run = {"epochs": 2, "batch_size": 12, "lr": 3e-3, "model_name": "shoptag-tiny"}

    capped = run_train_clip(items, tmp_path / "capped", settings, max_steps=5, **run)
    resumed = run_train_clip(items, tmp_path / "capped", settings, **run)
    straight = run_train_clip(items, tmp_path / "straight", settings, **run)

    splits = [split_of(product_id, 0.15, 0.15) for product_id, _, _ in items]
    assert (straight.n_train, straight.n_val) == (splits.count("train"), splits.count("val"))
    assert capped.steps == 5 and resumed.resumed_from_step == 5
    assert resumed.steps == straight.steps == 2 * (straight.n_train // 12) == 6
    np.testing.assert_allclose(resumed.losses, straight.losses, rtol=1e-4)
    assert [e.step for e in resumed.epochs] == [3, 5, 6]  # epoch 2 was cut at step 5, then finished
    state = torch.load(resumed.checkpoint_path, weights_only=True)
    assert state["step"] == 6 and state["model_cfg"]["embed_dim"] == 32


def test_fashion_pairs_reads_photos_and_titles_from_the_zip(data_dir: Path) -> None:
    triples = list(fashion_pairs(data_dir / "fashion", limit=5))
    assert len(triples) == 5
    for product_id, image, title in triples:
        assert product_id.isdigit() and image[:2] == b"\xff\xd8" and title
