"""Stage: the catalog's titles and descriptions → suggested new tags, for a person to accept.

Suggestions are written to the workspace (`suggestions.json`, numbered); `accept` appends the chosen ones to the
workspace's tags file, from which the next `train` makes them zero-shot tags (always "needs review"). Nothing
mined here is ever a live tag by itself.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from shoptag.core.errors import BadInput, NotFound
from shoptag.core.settings import Settings
from shoptag.store.records import Store
from shoptag.taxonomy.declared import DeclaredTag, parse_declared, read_declared
from shoptag.taxonomy.keyphrases import mine_phrases
from shoptag.taxonomy.suggest import suggest

from .encode import Encoders, encode_products
from .tag_system import ACCEPTED_TAGS, declared_tags
from .workspace import Workspace

SUGGESTIONS = "suggestions.json"
MAX_CANDIDATES = 2000  # the most frequent phrases are clustered; the rest are too rare to be a tag
EXAMPLES = 5


def suggest_tags(
    settings: Settings, store: Store, encoders: Encoders, *, min_products: int = 3, limit: int = 30,
    show_progress: bool = True,
) -> list[dict]:
    """Mine, rank and merge phrases; save and return the suggestions, best first."""
    workspace = Workspace(settings.workspace)
    products = store.products()
    texts = [" ".join(x for x in (p.title, p.description) if x) for p in products]
    found = mine_phrases(texts, min_products)
    phrases = sorted(found, key=lambda p: (-len(found[p]), p))[:MAX_CANDIDATES]
    if not phrases:
        return _save(workspace.root, [])
    cache = workspace.open_cache()
    try:
        vectors, _ = encode_products(products, encoders, cache, show_progress=show_progress)
    finally:
        cache.close()
    # every value a family holds (the model's "needs review" candidates too) and every declared one: a suggestion is new
    known = {v for family in store.families() for v in store.values_of(family)} | {t.value for t in declared_tags(settings)}
    merged = suggest({p: found[p] for p in phrases}, encoders.text.encode(phrases, query=True), vectors.text,
                     known=known, limit=limit)
    return _save(workspace.root, [
        {"number": n, "value": s.value, "synonyms": s.synonyms, "products": len(s.rows),
         "examples": [products[r].id for r in s.rows[:EXAMPLES]], "coherence": round(s.coherence, 4),
         "score": round(s.score, 4)}
        for n, s in enumerate(merged, start=1)
    ])


def _save(root: Path, suggestions: list[dict]) -> list[dict]:
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{SUGGESTIONS}.tmp"
    tmp.write_text(json.dumps(suggestions, ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, root / SUGGESTIONS)
    return suggestions


def accept(settings: Settings, numbers: Sequence[int], family: str) -> list[DeclaredTag]:
    """Add the suggestions numbered `numbers` (of the last `suggest_tags`) to the workspace's tags file as
    tags of `family`; returns them. Their names are checked like any declared tag."""
    root = Workspace(settings.workspace).root
    saved = root / SUGGESTIONS
    if not saved.is_file():
        raise NotFound("no suggestions yet: run `shoptag suggest-tags` first")
    by_number = {s["number"]: s for s in json.loads(saved.read_text(encoding="utf-8"))}
    missing = [n for n in numbers if n not in by_number]
    if missing:
        raise BadInput(f"no suggestion numbered {missing[0]} (there are {len(by_number)})")
    tags_file = root / ACCEPTED_TAGS
    existing = tags_file.read_text(encoding="utf-8") if tags_file.is_file() else ""
    new = [DeclaredTag(family, by_number[n]["value"], tuple(by_number[n]["synonyms"])) for n in numbers]
    text = existing + "".join(t.line_text() + "\n" for t in new)
    parse_declared(text.splitlines(), str(tags_file))  # refuses bad names and repeats before anything is written
    tmp = tags_file.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, tags_file)
    return [t for t in read_declared(tags_file) if (t.family, t.value) in {(x.family, x.value) for x in new}]
