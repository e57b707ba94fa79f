"""How much an id-hash split flatters held-out scores: the share of test products whose normalised title is
also a training product's title, for the id-hash split and for the grouped split (titles only, no vectors).

    .venv/bin/python bench/split_leak.py        # needs ../shared/data (or SHOPTAG_DATA_DIR)
"""

from __future__ import annotations

import numpy as np

from shoptag.pipeline.datasets import default_data_dir, fashion_records, taobao_records
from shoptag.tagger.split import grouped_split, normalise_title, split_mask


def leak(keys: np.ndarray, masks: dict[str, np.ndarray]) -> float:
    """Share of test products with a same-title twin in training."""
    train = set(keys[masks["train"]])
    return float(np.mean([k in train for k in keys[masks["test"]]]))


def main() -> None:
    data = default_data_dir()
    for name, records in (("fashion", fashion_records(data)), ("taobao", taobao_records(data, split="all"))):
        ids, titles = [r["id"] for r in records], [r["title"] for r in records]
        keys = np.array([normalise_title(t) for t in titles])
        grouped = grouped_split(ids, titles, 0.15, 0.15)
        print(f"{name}: {len(ids)} products, {grouped.groups} title groups, {grouped.merged_products} products share "
              f"a group (largest {grouped.largest}); test products with a same-title twin in training: "
              f"id-hash {leak(keys, split_mask(ids, 0.15, 0.15)):.3f}, grouped {leak(keys, grouped.masks):.3f}")


if __name__ == "__main__":
    main()
