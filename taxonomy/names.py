"""Which words can be a tag: a tag named by one character or by a stop word matches everything or nothing, so
it is refused with the reason. The same stop words keep filler out of mined keyphrases."""

from __future__ import annotations

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from .tree import clean_name

# Chinese function words and the filler of shop titles (free shipping, genuine, new season, ...)
CHINESE_STOP_WORDS = frozenset(
    "一个 没有 我们 你们 他们 自己 这个 那个 什么 因为 所以 但是 如果 可以 还是 已经 以及 其他 非常 "
    "包邮 正品 新款 特价 热卖 促销 专柜 官方 旗舰店 现货 爆款 清仓 折扣 同款 官网 授权 代购 正版 "
    "包郵 秒杀 限时 批发 送礼 厂家 直销".split()
)
SHOP_STOP_WORDS = frozenset({"new", "sale", "free", "shipping", "genuine", "original", "hot", "best", "quality", "pack", "set", "pcs"})
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) | CHINESE_STOP_WORDS | SHOP_STOP_WORDS


def tag_name_problem(name: str) -> str | None:
    """Why `name` cannot be a tag, or None when it can."""
    cleaned = clean_name(name)
    if not cleaned:
        return "empty tag name"
    if len(cleaned) == 1:
        return f"{cleaned!r} is one character: it would match far too much or nothing"
    if cleaned.casefold() in STOP_WORDS:
        return f"{cleaned!r} is a stop word: it says nothing about a product"
    return None
