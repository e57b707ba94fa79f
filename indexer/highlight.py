"""Marking the query's words in a product's title and description, the same way for every backend.

Highlighting runs on the page of hits, in Python, rather than in each engine: FTS5's `highlight()` would mark
the jieba-segmented, lowercased copy the embedded store indexes, not the shop's text, and Elasticsearch's
highlighter marks CJK bigrams; one function gives the storefront one behaviour whichever backend answers.

- Latin words match case-insensitively, and across the usual inflections (shoe / shoes, run / running): a word
  matches a query word when one is a prefix of the other, the shorter has at least 3 letters and they differ by
  at most 3 letters (an approximation of the Porter stemming both backends search with).
- Han text matches by substring: every query word jieba finds (search mode, so 牛仔裤 gives 牛仔 and 牛仔裤
  too) and every Han character of a query of one character, so 裙 marks 连衣裙.
"""

from __future__ import annotations

import html
import re

import jieba

HAN = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
HAN_RUN = re.compile(f"[{HAN}]+")
LATIN_WORD = re.compile(f"[^\\W{HAN}]+")
MAX_INFLECTION = 3
MIN_STEM = 3


def query_terms(text: str) -> tuple[set[str], set[str]]:
    """The query's Latin words (lowercased) and Han words, as `mark` matches them."""
    latin = {w.lower() for w in LATIN_WORD.findall(text)}
    han: set[str] = set()
    for run in HAN_RUN.findall(text):
        han.update(w for w in jieba.cut_for_search(run) if w.strip())
        if len(run) == 1:
            han.add(run)
    return latin, han


def _latin_match(word: str, terms: set[str]) -> bool:
    word = word.lower()
    if word in terms:
        return True
    for term in terms:
        short, long = sorted((word, term), key=len)
        if len(short) >= MIN_STEM and long.startswith(short) and len(long) - len(short) <= MAX_INFLECTION:
            return True
    return False


def mark(text: str, terms: tuple[set[str], set[str]], pre: str = "<em>", post: str = "</em>") -> str | None:
    """`text` (HTML-escaped) with every match of `terms` wrapped in `pre`/`post`; None when nothing matches."""
    latin, han = terms
    spans: list[tuple[int, int]] = []
    if latin:
        spans += [m.span() for m in LATIN_WORD.finditer(text) if _latin_match(m.group(), latin)]
    for word in sorted(han, key=len, reverse=True):
        spans += [(m.start(), m.start() + len(word)) for m in re.finditer(re.escape(word), text)]
    if not spans:
        return None
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out, last = [], 0
    for start, end in merged:
        out += [html.escape(text[last:start]), pre, html.escape(text[start:end]), post]
        last = end
    out.append(html.escape(text[last:]))
    return "".join(out)


def highlights(fields: dict[str, str], query: str) -> dict[str, str]:
    """Marked copies of the `fields` (name -> text) that contain a query word; fields without one are left out."""
    terms = query_terms(query)
    marked = {name: mark(text, terms) for name, text in fields.items() if text}
    return {name: value for name, value in marked.items() if value is not None}
