"""Judged queries for the relevance benchmark, made from catalog labels, and the metrics that score a ranking.

English (fashion): each query is a seed product's article type plus one to three more of its tags (colour,
usage, gender, season), phrased as a shopper would type them: "navy blue casual shirts for men". A product's
grade is how many of the query's tags it carries, provided it carries the article type (a blue casual sock is
not an answer to "blue casual shirts", whatever else it shares); 0 otherwise.

Chinese (Taobao titles): each query is a seed product's product type (HCCX span), with its brand (HPPX span)
in front for half of the queries when it has one: "耐克 双肩包". Grade 2 for a product carrying both, 1 for
the product type alone, 0 otherwise (a product of the brand but of another type is not an answer).

A "perfect" product carries every tag of its query. nDCG@10 uses every graded product; MRR is the reciprocal
rank of the first perfect product; recall@100 is the share of perfect products in the top 100, out of at most
100 (so a query with 3,000 perfect products can still reach 1).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

ENGLISH_EXTRAS = ("baseColour", "usage", "gender", "season")
GENDER_WORDS = {"Men": "for men", "Women": "for women", "Boys": "for boys", "Girls": "for girls"}


@dataclass(frozen=True)
class JudgedQuery:
    text: str
    tags: dict[str, str]  # family -> value the query asks for
    required: str  # the family a relevant product must match
    grades: dict[str, int] = field(default_factory=dict)  # product id -> grade > 0

    @property
    def perfect(self) -> set[str]:
        top = len(self.tags)
        return {pid for pid, grade in self.grades.items() if grade == top}


def grades(tags: Mapping[str, str], required: str, catalog: Mapping[str, Mapping[str, Sequence[str]]]) -> dict[str, int]:
    """Product id -> how many of the query's `tags` it carries, for products carrying the `required` family's."""
    out = {}
    for pid, product_tags in catalog.items():
        if tags[required] not in product_tags.get(required, ()):
            continue
        out[pid] = sum(value in product_tags.get(family, ()) for family, value in tags.items())
    return out


def english_text(tags: Mapping[str, str]) -> str:
    """"navy blue casual shirts for men": colour, usage, season, article type, gender, lowercased."""
    words = [tags[f] for f in ("baseColour", "usage", "season") if f in tags] + [tags["articleType"]]
    if tags.get("gender") in GENDER_WORDS:
        words.append(GENDER_WORDS[tags["gender"]])
    return " ".join(words).lower()


def _sampled(catalog: Mapping[str, Mapping[str, Sequence[str]]], count: int, seed: int, min_perfect: int,
             required: str, pick: Callable[[random.Random, Mapping[str, Sequence[str]]], dict[str, str] | None],
             phrase: Callable[[Mapping[str, str]], str]) -> list[JudgedQuery]:
    """`count` distinct queries: `pick` chooses the tags of a random seed product (None: skip it), `phrase`
    words them; each query has at least `min_perfect` perfect products."""
    rng = random.Random(seed)
    ids = sorted(catalog)
    seen: set[str] = set()
    queries: list[JudgedQuery] = []
    for _ in range(50 * count):
        if len(queries) == count:
            break
        tags = pick(rng, catalog[rng.choice(ids)])
        if tags is None or phrase(tags) in seen:
            continue
        query = JudgedQuery(phrase(tags), tags, required, grades(tags, required, catalog))
        if len(query.perfect) >= min_perfect:
            seen.add(query.text)
            queries.append(query)
    return queries


def english_queries(catalog: Mapping[str, Mapping[str, Sequence[str]]], count: int, seed: int = 7,
                    min_perfect: int = 2) -> list[JudgedQuery]:
    """Article type plus one to three more of a seed product's tags, phrased by `english_text`."""
    def pick(rng: random.Random, product: Mapping[str, Sequence[str]]) -> dict[str, str] | None:
        if not product.get("articleType"):
            return None
        extras = [f for f in ENGLISH_EXTRAS if product.get(f) and (f != "gender" or product[f][0] in GENDER_WORDS)]
        chosen = rng.sample(extras, min(len(extras), rng.randint(1, 3)))
        return {"articleType": product["articleType"][0], **{f: product[f][0] for f in chosen}}

    return _sampled(catalog, count, seed, min_perfect, "articleType", pick, english_text)


def chinese_queries(catalog: Mapping[str, Mapping[str, Sequence[str]]], count: int, seed: int = 7,
                    min_perfect: int = 2) -> list[JudgedQuery]:
    """A seed product's product type, with its brand in front for about half of the queries."""
    def pick(rng: random.Random, product: Mapping[str, Sequence[str]]) -> dict[str, str] | None:
        if not product.get("product_type"):
            return None
        tags = {"product_type": rng.choice(list(product["product_type"]))}
        if product.get("brand") and rng.random() < 0.5:
            tags["brand"] = rng.choice(list(product["brand"]))
        return tags

    return _sampled(catalog, count, seed, min_perfect, "product_type", pick,
                    lambda tags: " ".join(filter(None, (tags.get("brand"), tags["product_type"]))))


# ---- metrics --------------------------------------------------------------------------------------------------
def ndcg_at(ranking: Sequence[str], query: JudgedQuery, k: int = 10) -> float:
    """Normalised discounted cumulative gain of the first `k` ids, gains 2^grade - 1."""
    def dcg(gains: Sequence[int]) -> float:
        return sum((2**g - 1) / math.log2(i + 2) for i, g in enumerate(gains))

    ideal = dcg(sorted(query.grades.values(), reverse=True)[:k])
    return dcg([query.grades.get(pid, 0) for pid in ranking[:k]]) / ideal if ideal else 0.0


def reciprocal_rank(ranking: Sequence[str], query: JudgedQuery) -> float:
    """1 / rank of the first perfect product (0 when none is ranked)."""
    perfect = query.perfect
    return next((1.0 / (i + 1) for i, pid in enumerate(ranking) if pid in perfect), 0.0)


def recall_at(ranking: Sequence[str], query: JudgedQuery, k: int = 100) -> float:
    """Perfect products in the first `k`, out of min(k, how many there are)."""
    perfect = query.perfect
    return len(perfect & set(ranking[:k])) / min(k, len(perfect)) if perfect else 0.0
