"""jieba, the Chinese word segmenter of the lexical source and the embedded full-text index, set up once per
run: its dictionary cache goes to the workspace's cache folder (not the system temp folder), and its
"Building prefix dict..." banner is not printed."""

from __future__ import annotations

import logging
from pathlib import Path

import jieba


def configure_segmenter(cache_dir: Path) -> None:
    """Keep jieba's cache under `cache_dir` and its start-up messages quiet."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    jieba.dt.tmp_dir = str(cache_dir)
    jieba.setLogLevel(logging.WARNING)
