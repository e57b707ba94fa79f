"""A small, explicit rule layer a shop writes, applied after the model.

One rule a line (blank lines and `#` comments skipped):
    title contains "孕妇" -> style: maternity        (also `description contains`, `text contains`)
    never gender=Boys when masterCategory=Home
An `add` rule gives its tag to every product whose field contains the phrase (case-insensitive); a `never` rule
turns a model tag into "needs review" when the product has the other tag. People's tags are never touched:
rules act on model decisions only. `precision_report` measures each rule against the labels that exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from shoptag.core.errors import BadInput

from .names import tag_name_problem

FIELDS = ("title", "description", "text")
_ADD = re.compile(r'^(title|description|text)\s+contains\s+"([^"]+)"\s*->\s*([^:]+?)\s*:\s*(.+?)\s*$')
_NEVER = re.compile(r"^never\s+([^=]+?)\s*=\s*(.+?)\s+when\s+([^=]+?)\s*=\s*(.+?)\s*$")


class RuleError(BadInput, ValueError):
    """Rules that cannot be used; `problems` are (line, message) pairs."""

    def __init__(self, source: str, problems: Sequence[tuple[int, str]]):
        self.problems = list(problems)
        super().__init__(f"bad rules {source}:\n" + "\n".join(f"  line {n}: {m}" for n, m in problems))


@dataclass(frozen=True)
class Rule:
    line: int
    text: str
    kind: str  # "add" | "never"
    family: str  # the family the rule gives or forbids a tag in
    value: str
    field: str = ""  # add: where the phrase is looked for
    phrase: str = ""
    when_family: str = ""  # never: the tag that forbids it
    when_value: str = ""

    def matches(self, texts: Mapping[str, str], tags: Mapping[str, Sequence[str]]) -> bool:
        """Whether the rule's condition holds for a product (its texts per field, its tags per family)."""
        if self.kind == "add":
            return self.phrase.casefold() in texts.get(self.field, "").casefold()
        return self.when_value in tags.get(self.when_family, ()) and self.value in tags.get(self.family, ())


def parse_rules(lines: Iterable[str], source: str = "<rules>") -> list[Rule]:
    rules, problems = [], []
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if m := _ADD.match(text):
            field, phrase, family, value = m.groups()
            if (why := tag_name_problem(value)) is not None:
                problems.append((number, why))
                continue
            rules.append(Rule(number, text, "add", family.strip(), value, field=field, phrase=phrase))
        elif m := _NEVER.match(text):
            family, value, when_family, when_value = (g.strip() for g in m.groups())
            rules.append(Rule(number, text, "never", family, value, when_family=when_family, when_value=when_value))
        else:
            problems.append((number, f'not a rule: {text!r} (expected `title contains "..." -> family: value` '
                                     "or `never family=value when family=value`)"))
    if problems:
        raise RuleError(source, problems)
    return rules


@dataclass(frozen=True)
class RuleEffect:
    rule: Rule
    family: str
    value: str
    action: str  # "added" | "blocked"


def apply_rules(
    rules: Sequence[Rule], texts: Mapping[str, str], tags: Mapping[str, Sequence[str]], human_families: set[str]
) -> list[RuleEffect]:
    """What the rules do to one product: `tags` are its accepted tags (people's and the model's); families in
    `human_families` (people tagged them) never change. Adds come first, so a `never` rule also stops a rule's
    tag."""
    effects, current = [], {f: list(v) for f, v in tags.items()}
    for rule in (r for r in rules if r.kind == "add"):
        if rule.family not in human_families and rule.matches(texts, current) and rule.value not in current.get(rule.family, ()):
            effects.append(RuleEffect(rule, rule.family, rule.value, "added"))
            current.setdefault(rule.family, []).append(rule.value)
    for rule in (r for r in rules if r.kind == "never"):
        if rule.family not in human_families and rule.matches(texts, current):
            effects.append(RuleEffect(rule, rule.family, rule.value, "blocked"))
            current[rule.family] = [v for v in current[rule.family] if v != rule.value]
    return effects


def precision_report(
    rules: Sequence[Rule], texts: Sequence[Mapping[str, str]], labels: Sequence[Mapping[str, Sequence[str]]]
) -> list[dict]:
    """Per rule, over the products labelled in its family: how often it fires and how often it is right.
    An add rule is right when the label has its value; a never rule (fired on the labels of its condition) is
    right when the label does not have the forbidden value."""
    out = []
    for rule in rules:
        fired = correct = 0
        for t, lab in zip(texts, labels):
            if rule.family not in lab:
                continue
            if rule.kind == "add":
                hit, right = rule.matches(t, {}), rule.value in lab[rule.family]
            else:
                hit = rule.when_value in lab.get(rule.when_family, ())
                right = rule.value not in lab[rule.family]
            fired += hit
            correct += hit and right
        out.append({
            "line": rule.line, "rule": rule.text, "fired_on_labelled": fired, "correct": correct,
            "precision": round(correct / fired, 4) if fired else None,
        })
    return out
