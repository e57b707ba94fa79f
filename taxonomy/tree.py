"""A taxonomy tree read from a file or from path-valued labels, validated with line numbers.

Formats, one category per line (blank lines and `#` comments skipped):
- Google's product taxonomy: ``1604 - Apparel & Accessories > Clothing``;
- Shopify's taxonomy: ``aa-1 : Apparel & Accessories > Clothing`` (also ``gid://shopify/TaxonomyCategory/aa-1 : ...``);
- one a shop writes: ``Apparel > Topwear > Tshirts``, optionally ``| synonyms, comma separated | description``.
A path's missing ancestors are added. One separator per file (`` > ``, `` » ``, `` / `` or `` → ``, spaced, so
that names such as "T-Shirts/Tops" keep their slash).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shoptag.core.errors import BadInput

SEPARATORS = (" > ", " » ", " / ", " → ")
MAX_NODES = 500_000
MAX_REPORTED = 20  # problems listed in one error message
_GOOGLE = re.compile(r"^\d+\s+-\s+(.*)$")
_SHOPIFY = re.compile(r"^(?:gid://shopify/TaxonomyCategory/)?[a-z]{2}(?:-\d+)*\s*:\s+(.*)$")


class TaxonomyError(BadInput, ValueError):
    """A taxonomy that cannot be used; `problems` are (line or None, message) pairs, every one found."""

    def __init__(self, source: str, problems: Sequence[tuple[int | None, str]]):
        self.problems = list(problems)
        lines = [f"  line {n}: {m}" if n is not None else f"  {m}" for n, m in self.problems[:MAX_REPORTED]]
        more = len(self.problems) - MAX_REPORTED
        if more > 0:
            lines.append(f"  ... and {more} more")
        super().__init__(f"bad taxonomy {source}: {len(self.problems)} problem(s)\n" + "\n".join(lines))


@dataclass(frozen=True)
class Node:
    path: tuple[str, ...]
    synonyms: tuple[str, ...] = ()
    description: str = ""
    line: int | None = None  # where it was declared; None for an ancestor added implicitly

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def depth(self) -> int:
        return len(self.path)


@dataclass
class Taxonomy:
    """Nodes in parent-before-child order; `parent[i]` is the index of node i's parent, -1 for a root."""

    nodes: list[Node]
    parent: np.ndarray
    _by_path: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False)
    _by_name: dict[str, list[int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._by_path = {n.path: i for i, n in enumerate(self.nodes)}
        for i, n in enumerate(self.nodes):
            self._by_name.setdefault(n.name.casefold(), []).append(i)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def depth(self) -> int:
        return max((n.depth for n in self.nodes), default=0)

    def find(self, label: str) -> int | None:
        """Index of a node named by its full path (any separator) or by a name no other node has."""
        path = split_path(label)
        if len(path) > 1 or tuple(path) in self._by_path:
            return self._by_path.get(tuple(path))
        found = self._by_name.get(label.strip().casefold(), [])
        return found[0] if len(found) == 1 else None

    def ancestors(self, i: int) -> list[int]:
        """Indices of node i's ancestors, nearest first."""
        out, p = [], int(self.parent[i])
        while p >= 0:
            out.append(p)
            p = int(self.parent[p])
        return out

    def at_depth(self, depth: int) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.depth == depth]

    def leaves(self) -> list[int]:
        has_child = np.zeros(len(self.nodes), dtype=bool)
        has_child[self.parent[self.parent >= 0]] = True
        return [int(i) for i in np.flatnonzero(~has_child)]

    def paths(self, depth: int | None = None) -> list[tuple[str, ...]]:
        """Full paths of the leaves, or of every node at `depth`: the allowed combinations of levels."""
        rows = self.leaves() if depth is None else self.at_depth(depth)
        return [self.nodes[i].path for i in rows]


def clean_name(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _separator_of(text: str) -> list[str]:
    return [s for s in SEPARATORS if s in text]


def split_path(label: str) -> list[str]:
    """A path label's names (``"A > B"`` → ["A", "B"]), whichever single separator it uses."""
    used = _separator_of(label)
    parts = label.split(used[0]) if used else [label]
    return [clean_name(p) for p in parts]


LEVEL_SEPARATORS = (" > ", " » ", " → ")  # " / " is left out: flat values use it ("Shirts / Blouses")
LEVEL_MARK = "@"  # `category@2`: level 2 of the path-valued family `category`


def level_values(family: str, value: str) -> list[tuple[str, str]]:
    """A path-valued tag as one tag per level, each a family of its own: ``category = "A > B > C"`` gives
    (category@1, A), (category@2, A > B), (category@3, A > B > C). A level's value is the path down to it, so
    two categories of the same name under different parents stay apart. A flat value gives nothing."""
    used = [s for s in LEVEL_SEPARATORS if s in value]
    if len(used) != 1:
        return []
    names = [clean_name(n) for n in value.split(used[0])]
    if not all(names):
        return []
    return [(f"{family}{LEVEL_MARK}{k}", " > ".join(names[:k])) for k in range(1, len(names) + 1)]


def _strip_id(text: str) -> str:
    for pattern in (_GOOGLE, _SHOPIFY):
        m = pattern.match(text)
        if m:
            return m.group(1)
    return text


def parse_taxonomy(lines: Iterable[str], source: str = "<text>", max_nodes: int = MAX_NODES) -> Taxonomy:
    """Read a taxonomy; every problem (cycle, duplicate path, empty name, mixed separators, too many nodes)
    is collected with its line number and raised together as one TaxonomyError."""
    problems: list[tuple[int | None, str]] = []
    declared: dict[tuple[str, ...], Node] = {}
    file_separator: tuple[str, int] | None = None
    for number, raw in enumerate(lines, start=1):
        text = raw.lstrip("\ufeff").rstrip("\r\n").strip()
        if not text or text.startswith("#"):
            continue
        fields = [f.strip() for f in _strip_id(text).split("|")]
        body = fields[0]
        used = _separator_of(body)
        if len(used) > 1:
            problems.append((number, f"mixed separators {' and '.join(repr(s.strip()) for s in used)} in one path"))
            continue
        if used:
            if file_separator is None:
                file_separator = (used[0], number)
            elif used[0] != file_separator[0]:
                problems.append((number, f"separator {used[0].strip()!r}, but line {file_separator[1]} uses "
                                         f"{file_separator[0].strip()!r}: one separator per file"))
                continue
        names = [clean_name(p) for p in (body.split(used[0]) if used else [body])]
        if any(not n for n in names):
            problems.append((number, f"empty name in path {body!r}"))
            continue
        # "Accessories > Accessories > Key chain" is a catch-all child (real catalogs have them); a name that
        # comes back further down ("A > B > A") makes a category its own ancestor
        folded = [n.casefold() for n in names]
        repeated = next((n for k, n in enumerate(names) if folded[k] in folded[: max(k - 1, 0)]), None)
        if repeated is not None:
            problems.append((number, f"cycle: {repeated!r} is its own ancestor in {body!r}"))
            continue
        path = tuple(names)
        if path in declared:
            problems.append((number, f"duplicate path {body!r} (first on line {declared[path].line})"))
            continue
        synonyms = tuple(s for s in (clean_name(x) for x in fields[1].split(",")) if s) if len(fields) > 1 else ()
        declared[path] = Node(path, synonyms, clean_name(fields[2]) if len(fields) > 2 else "", number)
        if len(declared) > max_nodes:
            problems.append((number, f"more than {max_nodes} categories: split the taxonomy or raise the limit"))
            break
    if problems:
        raise TaxonomyError(source, problems)
    if not declared:
        raise TaxonomyError(source, [(None, "no categories found")])
    return _build(declared.values(), max_nodes, source)


def _build(declared: Iterable[Node], max_nodes: int, source: str) -> Taxonomy:
    """Nodes in parent-before-child order, ancestors nobody declared added."""
    by_path: dict[tuple[str, ...], Node] = {}
    for node in declared:
        for d in range(1, node.depth):
            by_path.setdefault(node.path[:d], Node(node.path[:d]))
        by_path[node.path] = node
    if len(by_path) > max_nodes:
        raise TaxonomyError(source, [(None, f"{len(by_path)} categories with their ancestors, more than {max_nodes}")])
    nodes = sorted(by_path.values(), key=lambda n: n.depth)
    index = {n.path: i for i, n in enumerate(nodes)}
    parent = np.array([index[n.path[:-1]] if n.depth > 1 else -1 for n in nodes], dtype=np.int64)
    return Taxonomy(nodes, parent)


def read_taxonomy(path: Path, max_nodes: int = MAX_NODES) -> Taxonomy:
    """A taxonomy file (Google, Shopify or ``A > B > C`` lines)."""
    if not path.is_file():
        raise TaxonomyError(str(path), [(None, "file not found")])
    try:
        with open(path, encoding="utf-8") as f:
            return parse_taxonomy(f, str(path), max_nodes)
    except UnicodeDecodeError as e:
        raise TaxonomyError(str(path), [(None, f"not UTF-8 text ({e.reason} at byte {e.start})")]) from e


def from_paths(paths: Iterable[Sequence[str] | str], source: str = "labels") -> Taxonomy:
    """A taxonomy from path-valued labels (``"A > B > C"``) or from each product's values per level
    (``["Apparel", "Topwear", "Tshirts"]``); repeated paths are one node, a path with a gap ends before it."""
    lines = []
    for p in paths:
        names = split_path(p) if isinstance(p, str) else [clean_name(x) if x else "" for x in p]
        if "" in names:
            names = names[: names.index("")]
        if names:
            lines.append(" > ".join(n.replace(" > ", " - ") for n in names))
    return parse_taxonomy(dict.fromkeys(lines), source)
