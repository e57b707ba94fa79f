"""Fixtures: a trained, tagged and indexed workspace with a queue to review (the sample catalog plus unlabelled
products, one of them with markup in its title), shared by the review API and the browser tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from service_helpers import SAMPLE, build_workspace, service_settings
from shoptag.core.settings import Settings

HOSTILE_ID = "xss-1"
# ingest strips tags and decodes entities, so markup reaches the store (and the page) from encoded titles
HOSTILE_RAW = '&lt;script&gt;window.__pwned = 1&lt;/script&gt;&lt;img src=x onerror="window.__pwned = 2"&gt; 牛仔裤 &amp; "q"'
HOSTILE_TITLE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> 牛仔裤 & "q"'
UNLABELLED = [
    (HOSTILE_ID, HOSTILE_RAW),
    *[(f"extra-{i:02d}", title) for i, title in enumerate([
        "Slim fit stretch jeans, washed blue", "连帽卫衣 加绒 黑色", "Leather strap analogue watch", "碎花雪纺连衣裙 夏季",
        "Running sneakers, white mesh", "Canvas backpack with laptop sleeve", "Classic white cotton shirt",
        "女士直筒牛仔裤 浅蓝", "Silver bracelet watch for women", "Striped linen summer dress",
        "Black denim jacket", "Wool knit scarf, grey", "儿童运动鞋 透气", "Navy blazer, slim cut",
    ])],
]


def review_catalog(folder: Path) -> Path:
    """The sample catalog (images beside it) plus the unlabelled products above."""
    for item in SAMPLE.parent.iterdir():
        if item.is_dir():
            shutil.copytree(item, folder / item.name)
    path = folder / "catalog.jsonl"
    lines = SAMPLE.read_text(encoding="utf-8").splitlines()
    photo = {"extra-06": {"image": "images/shirt-white.jpg"}}
    lines += [json.dumps({"id": pid, "title": title, **photo.get(pid, {})}, ensure_ascii=False) for pid, title in UNLABELLED]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def review_workspace(tmp_path_factory) -> Settings:
    """Trained, tagged and indexed once; each test that writes takes its own copy."""
    root = tmp_path_factory.mktemp("review-base")
    settings = service_settings(root / "ws")  # a lower target precision: some tags auto-accepted (for audits)
    settings = settings.model_copy(update={"tagger": settings.tagger.model_copy(update={"target_precision": 0.6})})
    build_workspace(settings, catalog=review_catalog(root))
    return settings


def copy_of(base: Settings, target: Path) -> Settings:
    shutil.copytree(base.workspace, target)
    return base.model_copy(update={"workspace": target})
