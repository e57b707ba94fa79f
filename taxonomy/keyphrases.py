"""Candidate tag phrases mined from product titles and descriptions, with the products each occurs in.

Text with Chinese characters: jieba's TF-IDF and TextRank keywords of each product; other text: word n-grams
(1-3 words) that neither start nor end with a stop word. A phrase must occur in `min_products` products to be a candidate.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from .names import STOP_WORDS, tag_name_problem

_CJK = re.compile(r"[\u3400-\u9fff]")
_WORD = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*", re.UNICODE)
KEYWORDS_PER_PRODUCT = 8
NOUNISH = ("n", "nr", "ns", "nt", "nz", "vn", "an", "eng")


def _chinese_phrases(text: str) -> set[str]:
    import jieba.analyse

    found = set(jieba.analyse.extract_tags(text, topK=KEYWORDS_PER_PRODUCT, allowPOS=NOUNISH))
    found |= set(jieba.analyse.textrank(text, topK=KEYWORDS_PER_PRODUCT, allowPOS=NOUNISH))
    return {p for p in found if not p.isdigit()}


def _english_phrases(text: str, max_words: int = 3) -> set[str]:
    words = [w.lower() for w in _WORD.findall(text)]
    out = set()
    for n in range(1, max_words + 1):
        for i in range(len(words) - n + 1):
            gram = words[i : i + n]
            if gram[0] in STOP_WORDS or gram[-1] in STOP_WORDS or any(w.isdigit() for w in gram):
                continue
            out.add(" ".join(gram))
    return out


def mine_phrases(texts: Sequence[str], min_products: int = 3) -> dict[str, list[int]]:
    """Candidate phrase -> rows of the products whose text contains it (phrases a tag name may not be are
    left out). Each text is mined by its own script: jieba where it has Chinese characters, n-grams elsewhere,
    so a catalog of Chinese and English products gets both."""
    rows: dict[str, list[int]] = defaultdict(list)
    chinese: set[str] = set()
    for row, text in enumerate(texts):
        found = _chinese_phrases(text) if _CJK.search(text) else _english_phrases(text)
        for phrase in found:
            rows[phrase].append(row)
        chinese |= {p for p in found if _CJK.search(p)}
    # a Chinese keyword of some products is also in other titles where it was not ranked in the top few
    for phrase in [p for p in chinese if len(rows[p]) >= min_products]:
        rows[phrase] = [row for row, text in enumerate(texts) if phrase in text]
    return {p: r for p, r in rows.items() if len(r) >= min_products and tag_name_problem(p) is None}
