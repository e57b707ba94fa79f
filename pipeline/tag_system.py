"""The tag system beside the learnt model: taxonomy levels decided as one path, zero-shot tags for what has
no (or too few) labelled examples, and the shop's rules.

`build_tag_system` runs in `train` (it decides which declared families are still zero-shot and keeps their
labels out of training); `apply_tag_system` runs in `tag` after the model decided, in this order: zero-shot
candidates, joint path decisions over the levels (a child implies its ancestors, shown as derived), rules.
Zero-shot tags are always "review": a person accepts them, and with enough accepted examples the family trains.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from shoptag.core.errors import NotFound, UnknownFamily
from shoptag.core.settings import Settings
from shoptag.store.records import StoredProduct
from shoptag.tagger.model import FamilyScores, TagDecision, TaggerModel
from shoptag.tagger.zero_shot import (
    PHOTO_TEMPLATE, TagPrompt, column_stats, combine, literal_matches, prompt_rows, tag_vectors, text_scores,
)
from shoptag.taxonomy.declared import DeclaredTag, read_declared
from shoptag.taxonomy.paths import decide_paths, path_columns
from shoptag.taxonomy.rules import Rule, apply_rules, parse_rules, precision_report
from shoptag.taxonomy.tree import Taxonomy, from_paths, read_taxonomy

from .encode import Encoders, ProductVectors

SYSTEM_DIR = "tag-system"
ACCEPTED_TAGS = "tags.txt"  # in the workspace: suggestions a person accepted
REVIEW_NOTE = "zero-shot: scored from the tag's name, never accepted without a person"


@dataclass
class ZeroShotFamily:
    name: str
    prompts: list[TagPrompt]
    multilabel: bool
    text: np.ndarray  # (C, d) tag vectors in the text encoder's space
    text_stats: tuple[np.ndarray, np.ndarray]  # per tag cosine mean / spread over the catalog
    photo: np.ndarray | None = None  # (C, d) tag vectors in the CLIP space, when an image tower is loaded
    photo_stats: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def values(self) -> list[str]:
        return [p.value for p in self.prompts]


@dataclass
class TagSystem:
    levels: list[str]
    paths: list[list[str]]  # allowed combinations of level values, top first
    zero_shot: dict[str, ZeroShotFamily]
    rules: list[Rule]
    encoders: dict[str, object]
    image_weight: float = 0.0
    created_at: float = field(default_factory=time.time)

    @property
    def empty(self) -> bool:
        return not (self.levels or self.zero_shot or self.rules)


# ---- declarations ---------------------------------------------------------------------------------------------
def declared_tags(settings: Settings) -> list[DeclaredTag]:
    """The shop's tags file and the suggestions accepted into the workspace."""
    out = read_declared(settings.taxonomy.tags) if settings.taxonomy.tags else []
    accepted = settings.workspace / ACCEPTED_TAGS
    return out + (read_declared(accepted) if accepted.is_file() else [])


def known_families(settings: Settings, families_in_store: set[str]) -> set[str]:
    """The families a correction or a command may name: those the store holds, the taxonomy's levels and the
    declared tags' families (a new family starts in the catalog, the taxonomy or a tags file)."""
    return families_in_store | set(settings.taxonomy.levels) | {t.family for t in declared_tags(settings)}


def check_families(settings: Settings, families_in_store: set[str], families: Sequence[str]) -> None:
    """`UnknownFamily`, naming the closest one, for a family the workspace does not know (most often a typo):
    the command line and the service refuse it alike rather than answer an empty list."""
    known = known_families(settings, families_in_store)
    for family in families:
        if family not in known:
            raise UnknownFamily(family, known)


def level_prompts(tax: Taxonomy, levels: Sequence[str]) -> tuple[dict[str, list[TagPrompt]], list[list[str]]]:
    """Per level family the names at that depth (synonyms and descriptions merged), and the allowed paths,
    cut at the number of levels."""
    prompts: dict[str, dict[str, TagPrompt]] = {lvl: {} for lvl in levels}
    for node in tax.nodes:
        if node.depth > len(levels):
            continue
        lvl = levels[node.depth - 1]
        old = prompts[lvl].get(node.name, TagPrompt(node.name))
        prompts[lvl][node.name] = TagPrompt(
            node.name, tuple(dict.fromkeys(old.synonyms + node.synonyms)), old.description or node.description
        )
    paths = sorted({n.path[: len(levels)] for n in tax.nodes})
    return {lvl: list(p.values()) for lvl, p in prompts.items()}, [list(p) for p in paths]


def read_rules(settings: Settings) -> list[Rule]:
    path = settings.taxonomy.rules
    if path is None:
        return []
    if not path.is_file():
        raise NotFound(f"rules file not found: {path}")
    return parse_rules(path.read_text(encoding="utf-8").splitlines(), str(path))


# ---- train time -----------------------------------------------------------------------------------------------
@dataclass
class Plan:
    """What `train` does with the declared families."""

    zero_shot: dict[str, tuple[list[TagPrompt], bool]]  # family -> (prompts, multilabel)
    levels: list[str]
    paths: list[list[str]]
    rules: list[Rule]
    summary: dict


def plan(settings: Settings, labelled_tags: Sequence[Mapping[str, Sequence[str]]]) -> Plan:
    """Which declared families stay zero-shot (some value has fewer than `min_reviewed` labelled examples),
    the hierarchy's paths (from the taxonomy file, else from the labels), and the rules."""
    t = settings.taxonomy
    declared: dict[str, tuple[list[TagPrompt], bool]] = {}
    summary: dict = {}
    paths: list[list[str]] = []
    if t.file is not None:
        tax = read_taxonomy(t.file)
        levels = t.levels or ["category"]
        prompts, paths = level_prompts(tax, levels)
        declared |= {lvl: (p, False) for lvl, p in prompts.items()}
        summary["taxonomy"] = {"file": str(t.file), "categories": len(tax), "depth": tax.depth,
                               "levels": {lvl: len(p) for lvl, p in prompts.items()}}
    else:
        levels = list(t.levels)
        if levels:
            rows = [[(tags.get(lvl) or [""])[0] for lvl in levels] for tags in labelled_tags if levels[0] in tags]
            paths = [list(p) for p in from_paths(rows).paths()] if rows else []
            summary["taxonomy"] = {"from": "labels", "paths": len(paths), "levels": levels}
    for tag in declared_tags(settings):
        prompts, _ = declared.setdefault(tag.family, ([], True))
        if tag.value not in [p.value for p in prompts]:
            prompts.append(TagPrompt(tag.value, tag.synonyms, tag.description))
    counts: dict[str, Counter[str]] = {}
    for tags in labelled_tags:
        for family, values in tags.items():
            counts.setdefault(family, Counter()).update(values)
    zero_shot = {}
    for family, (prompts, multilabel) in declared.items():
        short = {p.value: counts.get(family, Counter())[p.value] for p in prompts
                 if counts.get(family, Counter())[p.value] < t.min_reviewed}
        if short:
            zero_shot[family] = (prompts, multilabel)
            summary.setdefault("zero_shot", {})[family] = {
                "values": len(prompts),
                "why": f"{len(short)} of {len(prompts)} values have fewer than {t.min_reviewed} labelled examples",
                "labelled_examples_used_for_training": 0,
            }
        else:
            summary.setdefault("trained_from_reviewed_examples", []).append(family)
    return Plan(zero_shot, levels, paths, read_rules(settings), summary)


def product_texts(p: StoredProduct) -> dict[str, str]:
    """What rules look in."""
    return {"title": p.title, "description": p.description, "text": p.text}


def rule_report(rules: Sequence[Rule], products: Sequence[StoredProduct], known: Mapping[str, Mapping[str, Sequence[str]]]) -> list[dict]:
    """Each rule's precision against the labels people gave (catalog and feedback tags)."""
    labelled = [p for p in products if p.id in known]
    return precision_report(rules, [product_texts(p) for p in labelled], [known[p.id] for p in labelled])


def build_tag_system(
    the_plan: Plan, encoders: Encoders, catalog: ProductVectors | None, image_weight: float
) -> TagSystem:
    """Encode the zero-shot tags' prompts; per-tag statistics come from the whole catalog's vectors
    (`catalog` may be None only when there is no zero-shot family)."""
    if the_plan.zero_shot and catalog is None:
        raise ValueError("zero-shot tags need the catalog's vectors")
    families = {}
    for family, (prompts, multilabel) in the_plan.zero_shot.items():
        texts, owner = prompt_rows(prompts)
        text = tag_vectors(encoders.text.encode(texts, query=True), owner, len(prompts))
        zs = ZeroShotFamily(family, prompts, multilabel, text, column_stats(catalog.text @ text.T))  # type: ignore[union-attr]
        if encoders.image is not None and catalog.image is not None and catalog.has_image.any():
            photo = tag_vectors(encoders.image.encode_text([PHOTO_TEMPLATE.format(t) for t in texts]), owner, len(prompts))
            zs.photo, zs.photo_stats = photo, column_stats(catalog.image[catalog.has_image] @ photo.T)
        families[family] = zs
    weight = image_weight if encoders.image is not None else 0.0
    return TagSystem(the_plan.levels, the_plan.paths, families, the_plan.rules, encoders.ids(), weight)


# ---- persistence ----------------------------------------------------------------------------------------------
def save_tag_system(system: TagSystem, models_dir: Path) -> Path:
    """Written aside, then renamed into place: a reader sees the old system or the new one."""
    models_dir.mkdir(parents=True, exist_ok=True)
    final, tmp = models_dir / SYSTEM_DIR, models_dir / f"{SYSTEM_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    arrays: dict[str, np.ndarray] = {}
    for i, zs in enumerate(system.zero_shot.values()):
        arrays |= {f"{i}.text": zs.text, f"{i}.text_mean": zs.text_stats[0], f"{i}.text_std": zs.text_stats[1]}
        if zs.photo is not None and zs.photo_stats is not None:
            arrays |= {f"{i}.photo": zs.photo, f"{i}.photo_mean": zs.photo_stats[0], f"{i}.photo_std": zs.photo_stats[1]}
    np.savez(tmp / "vectors.npz", **arrays)
    meta = {
        "levels": system.levels, "paths": system.paths, "encoders": system.encoders,
        "image_weight": system.image_weight, "created_at": system.created_at,
        "rules": [r.text for r in system.rules],
        "zero_shot": [
            {"name": zs.name, "multilabel": zs.multilabel,
             "prompts": [[p.value, list(p.synonyms), p.description] for p in zs.prompts]}
            for zs in system.zero_shot.values()
        ],
    }
    (tmp / "system.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1))
    old = models_dir / f"{SYSTEM_DIR}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def remove_tag_system(models_dir: Path) -> None:
    shutil.rmtree(models_dir / SYSTEM_DIR, ignore_errors=True)


def tag_system_stamp(models_dir: Path) -> int | None:
    """What identifies the saved tag system (its file's modification time; None: there is none): a process that
    keeps one loaded reloads it when this changes."""
    try:
        return (models_dir / SYSTEM_DIR / "system.json").stat().st_mtime_ns
    except FileNotFoundError:
        return None


def load_tag_system(models_dir: Path) -> TagSystem | None:
    folder = models_dir / SYSTEM_DIR
    if not (folder / "system.json").is_file():
        return None
    meta = json.loads((folder / "system.json").read_text())
    arrays = np.load(folder / "vectors.npz", allow_pickle=False)
    families = {}
    for i, f in enumerate(meta["zero_shot"]):
        prompts = [TagPrompt(v, tuple(s), d) for v, s, d in f["prompts"]]
        zs = ZeroShotFamily(f["name"], prompts, f["multilabel"], arrays[f"{i}.text"],
                            (arrays[f"{i}.text_mean"], arrays[f"{i}.text_std"]))
        if f"{i}.photo" in arrays:
            zs.photo, zs.photo_stats = arrays[f"{i}.photo"], (arrays[f"{i}.photo_mean"], arrays[f"{i}.photo_std"])
        families[f["name"]] = zs
    rules = parse_rules(meta["rules"], "saved rules")
    return TagSystem(meta["levels"], meta["paths"], families, rules, meta["encoders"], meta["image_weight"], meta["created_at"])


# ---- tag time -------------------------------------------------------------------------------------------------
def zero_shot_scores(zs: ZeroShotFamily, vectors: ProductVectors, texts: Sequence[str], image_weight: float) -> np.ndarray:
    prompts = zs.prompts
    text = text_scores(vectors.text @ zs.text.T, literal_matches(texts, prompts), zs.text_stats, zs.multilabel)
    photo = None
    if zs.photo is not None and vectors.image is not None:
        photo = text_scores(vectors.image @ zs.photo.T, None, zs.photo_stats, zs.multilabel)
    return combine(text, photo, vectors.has_image, image_weight)


def _zero_shot_decisions(zs: ZeroShotFamily, scores: np.ndarray, texts: Sequence[str], row: int, modality: str) -> list[TagDecision]:
    """Candidates for review: the best value (single-valued), or every value scoring 0.5 (multi-valued)."""
    s = scores[row]
    cols = [int(c) for c in np.flatnonzero(s >= 0.5)] if zs.multilabel else [int(s.argmax())]
    named = literal_matches([texts[row]], [zs.prompts[c] for c in cols])[0] if cols else []
    return [
        TagDecision(zs.name, zs.values[c], float(s[c]), "review",
                    {"zero_shot": {"note": REVIEW_NOTE, "named_in_text": bool(n)}, "modality": modality})
        for c, n in zip(cols, named)
    ]


def _level_inputs(
    system: TagSystem, model: TaggerModel | None, scores: Mapping[str, FamilyScores], zs_scores: Mapping[str, np.ndarray]
) -> list[tuple[int, str, list[str], np.ndarray, np.ndarray]]:
    """(position in the path, family, values, scores, thresholds) of the levels scored in this batch."""
    out = []
    for k, lvl in enumerate(system.levels):
        if model is not None and lvl in scores and lvl in model.families:
            fm = model.families[lvl]
            if not fm.vocab.multilabel:
                out.append((k, lvl, list(fm.vocab.values), scores[lvl].fused, fm.thresholds))
        elif lvl in zs_scores and not system.zero_shot[lvl].multilabel:
            zs = system.zero_shot[lvl]
            out.append((k, lvl, zs.values, zs_scores[lvl], np.full(len(zs.values), np.inf)))
    return out


def _path_decisions(
    system: TagSystem, levels: list[tuple[int, str, list[str], np.ndarray, np.ndarray]],
    decisions: dict[str, list[TagDecision]], ids: Sequence[str],
) -> None:
    """Replace the level families' decisions by the best joint path's (in place)."""
    columns = path_columns([[p[k] if k < len(p) else "" for k, *_ in levels] for p in system.paths], [v for _, _, v, _, _ in levels])
    if not len(columns):
        return
    d = decide_paths([s for *_, s, _ in levels], [t for *_, t in levels], columns)
    for row, pid in enumerate(ids):
        before = {x.family: x for x in decisions[pid]}
        names = [levels[j][2][c] for j, c in enumerate(d.columns[row]) if c >= 0]
        deepest = max((j for j in range(len(levels)) if d.accepted[row, j] and not d.derived[row, j]), default=None)
        kept = [x for x in decisions[pid] if x.family not in {lvl for _, lvl, *_ in levels}]
        for j, (_, lvl, values, s, _) in enumerate(levels):
            c = int(d.columns[row, j])
            if c < 0:
                continue
            old = before.get(lvl)
            evidence = dict(old.evidence) if old is not None and old.value == values[c] else (
                {"replaced": old.value} if old is not None else {})
            evidence["path"] = " > ".join(names)
            evidence["path_score"] = round(float(d.joint[row]), 4)
            if d.derived[row, j] and deepest is not None:
                evidence["derived_from"] = f"{levels[deepest][1]}={levels[deepest][2][d.columns[row, deepest]]}"
            kept.append(TagDecision(lvl, values[c], float(s[row, c]), "accepted" if d.accepted[row, j] else "review", evidence))
        decisions[pid] = kept


def _rule_decisions(
    rules: Sequence[Rule], decisions: list[TagDecision], product: StoredProduct, human: Mapping[str, Sequence[str]]
) -> list[TagDecision]:
    tags: dict[str, list[str]] = {f: list(v) for f, v in human.items()}
    for x in decisions:
        if x.status == "accepted":
            tags.setdefault(x.family, []).append(x.value)
    effects = apply_rules(rules, product_texts(product), tags, set(human))
    out = list(decisions)
    for e in effects:
        why = {"rule": e.rule.text, "line": e.rule.line}
        if e.action == "added":
            out = [x for x in out if not (x.family == e.family and x.value == e.value)]
            out.append(TagDecision(e.family, e.value, 1.0, "accepted", {"rule": why}))
        else:
            out = [replace(x, status="review", evidence={**x.evidence, "blocked_by_rule": why})
                   if x.family == e.family and x.value == e.value else x for x in out]
    return out


def apply_tag_system(
    system: TagSystem, model: TaggerModel | None, scores: Mapping[str, FamilyScores],
    decisions: dict[str, list[TagDecision]], products: Sequence[StoredProduct], vectors: ProductVectors,
    human: Mapping[str, Mapping[str, Sequence[str]]],
) -> dict[str, list[TagDecision]]:
    """The model's decisions of a batch, with zero-shot candidates, path-consistent levels and rules applied.
    `human`: per product id, the families people tagged (rules leave those alone)."""
    texts = [p.text for p in products]
    learnt = set(model.families) if model is not None else set()
    zs_scores = {f: zero_shot_scores(zs, vectors, texts, system.image_weight)
                 for f, zs in system.zero_shot.items() if f not in learnt}
    out = {p.id: list(decisions.get(p.id, [])) for p in products}
    for row, p in enumerate(products):
        for f, s in zs_scores.items():
            out[p.id] += _zero_shot_decisions(system.zero_shot[f], s, texts, row, vectors.modality(row))
    levels = _level_inputs(system, model, scores, zs_scores)
    if len(levels) >= 2 and system.paths:
        _path_decisions(system, levels, out, [p.id for p in products])
    if system.rules:
        out = {p.id: _rule_decisions(system.rules, out[p.id], p, human.get(p.id, {})) for p in products}
    return out
