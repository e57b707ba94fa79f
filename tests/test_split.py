"""The grouped split: near-duplicates never straddle train and test, and the split says what it merged."""

from __future__ import annotations

import numpy as np

from shoptag.tagger.split import grouped_split, normalise_title


def _side(masks: dict, row: int) -> str:
    return next(name for name, mask in masks.items() if mask[row])


def test_same_normalised_title_lands_on_one_side():
    titles = [f"Product {i}" for i in range(300)]
    # 50 titles each repeated with other case, spacing and punctuation: what id-hash splits tear apart
    titles += [f"  PRODUCT, {i}! " for i in range(50)]
    ids = [f"p{i}" for i in range(len(titles))]
    split = grouped_split(ids, titles, 0.15, 0.15)
    for i in range(50):
        assert _side(split.masks, i) == _side(split.masks, 300 + i)
    assert split.groups == 300 and split.merged_products == 100 and split.largest == 2
    assert sum(m.sum() for m in split.masks.values()) == len(ids)
    assert 20 < split.masks["test"].sum() < 90  # about 15 %
    assert normalise_title("Ｔ恤  男款!") == normalise_title("t恤 男款")


def test_near_vectors_join_groups_and_far_ones_do_not():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 32)).astype(np.float32)
    twins = base[:40] + 0.01 * rng.normal(size=(40, 32)).astype(np.float32)  # cosine ~0.9999
    vectors = np.vstack([base, twins])
    ids = [f"v{i}" for i in range(240)]
    titles = [f"title {i}" for i in range(240)]  # all different: only the vectors can tell
    split = grouped_split(ids, titles, 0.15, 0.15, vectors, similarity=0.98)
    assert split.merged_by_vector == 40 and split.groups == 200
    for i in range(40):
        assert _side(split.masks, i) == _side(split.masks, 200 + i)
    apart = grouped_split(ids, titles, 0.15, 0.15)
    assert apart.groups == 240
    straddling = sum(_side(apart.masks, i) != _side(apart.masks, 200 + i) for i in range(40))
    assert straddling > 5  # without grouping, twins do land on both sides


def test_a_group_keeps_its_split_when_the_catalog_grows():
    ids = [f"p{i}" for i in range(400)]
    titles = [f"item {i % 300}" for i in range(400)]
    small = grouped_split(ids[:300], titles[:300], 0.15, 0.15)
    large = grouped_split(ids, titles, 0.15, 0.15)
    for row in range(300):
        assert _side(small.masks, row) == _side(large.masks, row)
