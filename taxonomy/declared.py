"""Tags a shop declares without examples: ``family: value | synonyms | description`` lines.

Seasonal or new tags ("occasion: Valentine's gift | romantic present, gift for her") and suggestions a person
accepted. Each becomes a zero-shot tag of its family; bad lines are reported with their numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .names import tag_name_problem
from .tree import TaxonomyError, clean_name


@dataclass(frozen=True)
class DeclaredTag:
    family: str
    value: str
    synonyms: tuple[str, ...] = ()
    description: str = ""
    line: int | None = None

    def line_text(self) -> str:
        """The tag as a line of a tags file."""
        parts = [f"{self.family}: {self.value}", ", ".join(self.synonyms)]
        if self.description:
            parts.append(self.description)
        return " | ".join(parts).rstrip(" |")


def parse_declared(lines: Iterable[str], source: str = "<tags>") -> list[DeclaredTag]:
    tags: list[DeclaredTag] = []
    problems: list[tuple[int | None, str]] = []
    seen: dict[tuple[str, str], int] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.lstrip("\ufeff").strip()
        if not text or text.startswith("#"):
            continue
        fields = [f.strip() for f in text.split("|")]
        family, sep, value = fields[0].partition(":")
        family, value = clean_name(family), clean_name(value)
        if not sep or not family:
            problems.append((number, f"expected `family: value | synonyms | description`, got {text!r}"))
            continue
        if (why := tag_name_problem(value)) is not None:
            problems.append((number, why))
            continue
        key = (family, value.casefold())
        if key in seen:
            problems.append((number, f"{family}: {value} is already declared on line {seen[key]}"))
            continue
        seen[key] = number
        synonyms = tuple(s for s in (clean_name(x) for x in fields[1].split(",")) if s) if len(fields) > 1 else ()
        bad = [(s, why) for s in synonyms if (why := tag_name_problem(s))]
        if bad:
            problems.append((number, f"synonym {bad[0][1]}"))
            continue
        tags.append(DeclaredTag(family, value, synonyms, clean_name(fields[2]) if len(fields) > 2 else "", number))
    if problems:
        raise TaxonomyError(source, problems)
    return tags


def read_declared(path: Path) -> list[DeclaredTag]:
    if not path.is_file():
        raise TaxonomyError(str(path), [(None, "file not found")])
    with open(path, encoding="utf-8") as f:
        return parse_declared(f, str(path))
