"""Property tests of the catalog and feedback readers: any bytes in, every non-blank line stored or rejected
with its line number, never a crash, never a good record lost."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shoptag.catalog.feedback import read_corrections
from shoptag.catalog.readers import read_catalog
from shoptag.catalog.records import Product, Reject
from shoptag.core.settings import Settings
from shoptag.pipeline.ingest import ingest
from shoptag.pipeline.workspace import Workspace

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
# one line of garbage: bytes without a line break, JSON of any shape, or JSON nested past any recursion limit
garbage = st.one_of(
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" ")),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.integers(2_000, 200_000).map(lambda depth: b'{"id": "deep", "title": ' + b"[" * depth + b"]" * depth + b"}"),
    st.integers(2_000, 50_000).map(lambda depth: b"[" * depth),
)
good_product = st.builds(
    lambda n, title: {"id": f"good-{n}", "title": title, "tags": {"colour": ["Red"]}},
    st.integers(0, 10**6), st.text(st.characters(categories=("L", "N", "Zs")), min_size=1, max_size=40).filter(str.strip),
)


def _lines(draw_lines: list[bytes | dict]) -> tuple[bytes, dict[int, str]]:
    """The file's bytes and, per line number, the id of each good record on it."""
    out, good = [], {}
    for number, line in enumerate(draw_lines, start=1):
        if isinstance(line, dict):
            good[number] = line["id"]
            line = json.dumps(line, ensure_ascii=False).encode()
        out.append(line)
    return b"\n".join(out) + b"\n", good


@FUZZ
@given(st.lists(st.one_of(garbage, good_product), max_size=12, unique_by=lambda x: x["id"] if isinstance(x, dict) else id(x)))
def test_any_catalog_bytes_are_stored_or_rejected_with_their_line(lines):
    data, good = _lines(lines)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "catalog.jsonl"
        path.write_bytes(data)
        settings_ = Settings(workspace=Path(tmp) / "ws")
        outcomes = list(read_catalog(path, settings_.catalog))
        nonblank = {n for n, line in enumerate(data.split(b"\n")[:-1], start=1) if line.strip()}
        assert sorted(o.line for o in outcomes) == sorted(nonblank)  # one outcome per line, each with its number
        products = {o.id: o.line for o in outcomes if isinstance(o, Product)}
        for number, pid in good.items():
            assert products.get(pid) == number or any(
                isinstance(o, Reject) and o.line == number and "duplicate id" in o.reason for o in outcomes)
        store = Workspace(settings_.workspace).open_store()
        try:
            report = ingest(settings_, store, path, show_progress=False)
            assert set(store.product_ids()) == set(products)
            assert report.rejected == sum(isinstance(o, Reject) for o in outcomes)
        finally:
            store.close()


correction = st.builds(
    lambda n, family, values: {"id": f"p{n}", "family": family, "values": values},
    st.integers(0, 999), st.sampled_from(["colour", "category", "品类"]),
    st.lists(st.text(st.characters(categories=("L", "N")), min_size=1, max_size=12), max_size=3),
)
# a correction with a typo: a key the schema does not know, or `values` missing
typo = correction.flatmap(lambda c: st.sampled_from([
    {k if k != "values" else "value": v for k, v in c.items()},
    {k: v for k, v in c.items() if k != "values"},
    {**c, "valeus": c["values"]},
]))


@FUZZ
@given(st.lists(st.one_of(garbage, correction.map(lambda c: ("good", c)), typo.map(lambda c: ("typo", c))),
                max_size=12))
def test_any_feedback_bytes_are_applied_or_rejected_with_their_line(lines):
    data, expected = [], {}
    for number, line in enumerate(lines, start=1):
        if isinstance(line, tuple):
            expected[number] = line
            line = json.dumps(line[1], ensure_ascii=False).encode()
        data.append(line)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "feedback.jsonl"
        path.write_bytes(b"\n".join(data) + b"\n")
        corrections, rejects = read_corrections(path)
        items = [(line, c.id, c.family, c.values) for line, c in corrections]
    nonblank = {n for n, line in enumerate(data, start=1) if line.strip()}
    assert sorted([i[0] for i in items] + [r.line for r in rejects]) == sorted(nonblank)
    by_line = {i[0]: i for i in items}
    for number, (kind, record) in expected.items():
        if kind == "good":
            assert by_line[number][1:] == (record["id"], record["family"], [v.strip() for v in record["values"]])
        else:
            assert number not in by_line, f"line {number} {record} was applied"
