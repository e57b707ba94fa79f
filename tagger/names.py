"""Where a text names a tag value: titles for zero-shot tagging, shoppers' queries for query understanding.

A name is found where a shopper or a seller would write it: anywhere in CJK text (no spaces between words),
as whole words, singular or plural, elsewhere ("shirt" names "Shirts"), casefolded and NFKC-normalised
(full-width letters are letters). A single CJK character names a value only as a whole word of its own, or
"包" would be read in every "包邮" (free shipping).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from .language import has_cjk


def fold(text: str) -> str:
    """The form names are matched in: NFKC, casefolded."""
    return unicodedata.normalize("NFKC", text).casefold()


def name_pattern(name: str) -> re.Pattern[str]:
    """The pattern of `name` in folded text."""
    name = fold(name).strip()
    if has_cjk(name):
        return re.compile(re.escape(name) if len(name) > 1 else r"(?<!\S)" + re.escape(name) + r"(?!\S)")
    return re.compile(r"(?<!\w)" + re.escape(_singular(name)) + r"(?:s|es)?(?!\w)")


def _singular(name: str) -> str:
    """An English plural name without its ending ("watches", "shirts", but "dress"), so the pattern's optional
    ending reads singular and plural queries alike."""
    if re.search(r"(?:ch|sh|x|z|ss)es$", name):
        return name[:-2]
    if name.endswith("s") and not name.endswith("ss") and len(name) > 3:
        return name[:-1]
    return name


def name_patterns(values: Sequence[str]) -> list[tuple[re.Pattern[str], int]]:
    """(pattern, index into `values`) of every value, longest name first: what `named_values` reads a text
    with. A path value ("Apparel > Tops > Shirts") is named by its last level."""
    names = [(fold(v.rpartition(">")[2]).strip(), i) for i, v in enumerate(values)]
    return [(name_pattern(name), i) for name, i in sorted(names, key=lambda n: (-len(n[0]), n[1])) if name]


def named_values(text: str, patterns: Sequence[tuple[re.Pattern[str], int]]) -> list[int]:
    """Indexes of the values `text` names, each stretch of text read once: where names overlap the longest
    wins ("navy blue" over "blue", "双肩包" over "包")."""
    folded = fold(text)
    taken: list[tuple[int, int]] = []
    out = []
    for pattern, index in patterns:
        for match in pattern.finditer(folded):
            start, end = match.span()
            if all(end <= s or start >= e for s, e in taken):
                taken.append((start, end))
                out.append(index)
                break
    return out
