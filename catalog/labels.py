"""Labels a user holds out: a JSONL file of `{"id": ..., "tags": {family: [values]}}`, one product a line.

`shoptag evaluate --labels FILE` scores the tagger on these products: they are kept out of training and
tuning, whatever tags the store holds for them, and their tags come from the file.
"""

from __future__ import annotations

import json
from pathlib import Path

from shoptag.core.errors import BadInput

from .records import normalize_text


class LabelsError(BadInput, ValueError):
    """The held-out labels file cannot be read; the message names the line."""


def read_labels(path: Path) -> dict[str, dict[str, list[str]]]:
    """Product id -> family -> values (normalised like catalog tags). An empty list means no value applies."""
    if not path.is_file():
        raise LabelsError(f"labels file not found: {path}")
    labels: dict[str, dict[str, list[str]]] = {}
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LabelsError(f"{path}:{line_no}: not JSON ({exc.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("tags"), dict) or record.get("id") in (None, ""):
                raise LabelsError(f'{path}:{line_no}: expected {{"id": ..., "tags": {{family: [values]}}}}')
            tags: dict[str, list[str]] = {}
            for family, values in record["tags"].items():
                values = values if isinstance(values, list) else [values]
                if not all(isinstance(v, str) for v in values):
                    raise LabelsError(f"{path}:{line_no}: tags.{family}: expected a list of strings")
                tags[normalize_text(family)] = list(dict.fromkeys(t for v in values if (t := normalize_text(v))))
            labels[str(record["id"])] = tags
    if not labels:
        raise LabelsError(f"{path}: no labelled product")
    return labels
