"""Which script a catalog is written in, so an English-only text encoder on Chinese titles is said out loud.

shoptag does not switch encoders by itself: the encoder decides every vector, cache entry and trained model,
so changing it is the user's call. Ingest counts the products whose text has CJK characters and, when most
do and the configured encoder is English-only, warns with the multilingual choices.
"""

from __future__ import annotations

import re

_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]")
ENGLISH_ONLY = frozenset({"minilm"})  # aliases of encoders trained on English text only
MULTILINGUAL = ("use-multilingual", "e5-small")
MOSTLY = 0.5  # share of products above which a catalog counts as CJK


def has_cjk(text: str) -> bool:
    """Whether `text` has a Chinese, Japanese or Korean character."""
    return _CJK.search(text) is not None


def encoder_warning(text_model: str, cjk_products: int, products: int) -> str | None:
    """A warning when most products are written in CJK and `text_model` is an English-only encoder."""
    if not products or cjk_products / products <= MOSTLY or text_model not in ENGLISH_ONLY:
        return None
    return (
        f"{cjk_products} of {products} products are written in Chinese, Japanese or Korean, but the text encoder "
        f"{text_model!r} is English-only: its vectors will carry little meaning. Choose a multilingual encoder "
        f"({' or '.join(MULTILINGUAL)}), e.g. SHOPTAG_ENCODERS__TEXT_MODEL={MULTILINGUAL[0]} or "
        f'text_model = "{MULTILINGUAL[0]}" under [encoders] in shoptag.toml.'
    )
