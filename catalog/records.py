"""Catalog reader: a raw JSONL, CSV/TSV or Parquet file becomes validated, normalised products or rejects.

It writes nothing to the store; the ingest pipeline consumes `read_catalog` and writes the rejects with
`write_rejects`. Bad records never raise: each becomes a `Reject` naming its line (or row) and id and the
field at fault, and reading goes on. Only an unreadable catalog *file* raises `CatalogError`.

Record fields, in every format: `id` (required; a string, or an integer coerced to a string), `title`,
`description`, `attributes` (object of scalars), `image` (local path relative to the catalog file, or an
http(s) URL when `allow_image_urls`), `tags` (object: family -> list of values, or one value).
Any other top-level field is an attribute, so a flat CSV such as `id,title,brand,material` needs no
renaming; a name given both ways is rejected rather than silently picked.

Flat formats (CSV/TSV/Parquet) also accept:
  * `attributes` / `tags` cells holding a JSON object;
  * `attr.<name>` or `attr:<name>` columns: one attribute each;
  * `tags.<family>`, `tag.<family>`, `tags:<family>` or `tag:<family>` columns: values separated by `|`
    (Parquet may also use a list column);
  * an empty cell means "absent". Line numbers count the header as line 1 (CSV) or rows from 1 (Parquet).

Attribute values are scalars coerced to text (`true`/`false` for booleans); a nested value (object or
list) is kept as compact JSON text so nothing is lost. Duplicate ids: the first accepted record wins and
later ones are rejected with the line of the first; a record rejected for another reason claims no id.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from shoptag.indexer.atomic_file import atomic_write
from shoptag.pipeline.settings import CatalogSettings

RAW_CHARS = 2_000  # how much of a bad record a reject keeps, enough to find and fix it
FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}
CORE_FIELDS = ("id", "title", "description", "attributes", "image", "tags")
ATTR_PREFIXES = ("attr.", "attr:")
TAG_PREFIXES = ("tags.", "tag.", "tags:", "tag:")
TAG_SEPARATOR = "|"
# Tags whose content is not text, and tags that separate words; other (inline) tags join their neighbours.
_HIDDEN_TAGS = frozenset({"script", "style", "head", "title", "noscript", "template"})
_BLOCK_TAGS = frozenset(
    {"br", "p", "div", "li", "ul", "ol", "tr", "td", "th", "table", "h1", "h2", "h3", "h4", "h5", "h6",
     "hr", "section", "article", "header", "footer", "dd", "dt", "dl", "blockquote", "pre", "img"}
)
_INVISIBLE = dict.fromkeys(map(ord, "\x00\u200b\u2060\ufeff"))  # zero-width characters copied from web pages


class CatalogError(Exception):
    """The catalog file as a whole cannot be read (missing, unreadable, unknown format, no id column)."""


class InvalidRecord(ValueError):
    """One record is bad; the message names the field and is what the reject says."""


@dataclass(frozen=True, kw_only=True)
class Product:
    """One validated, normalised product. Hashes are computed here, so any Product is self-consistent."""

    id: str
    title: str
    description: str = ""
    attributes: dict[str, str] = field(default_factory=dict)  # sorted by name
    image: str | None = None  # absolute local path or URL
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)  # family -> known values, order kept
    line: int | None = None  # 1-based line (JSONL/CSV) or row (Parquet)
    image_hash: str | None = None  # sha256 of the image bytes; None without image or for a URL
    text_hash: str = field(init=False)
    content_hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_hash", _sha256(self.encoder_text()))
        object.__setattr__(self, "content_hash", _sha256(self._content_key()))

    def encoder_text(self) -> str:
        """What the text encoder embeds: title, description and attribute values, one per line."""
        parts = [self.title, self.description, *self.attributes.values()]
        return "\n".join(p for p in parts if p)

    def _content_key(self) -> str:
        """Everything that changes a tagging result; not the line nor where a local image lives."""
        image = self.image_hash if self.image_hash is not None else self.image
        key = {
            "v": 1,
            "id": self.id,
            "text": self.encoder_text(),
            "attributes": self.attributes,
            "image": image,
            "tags": {family: sorted(values) for family, values in self.tags.items()},
        }
        return json.dumps(key, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Reject:
    """A bad record: where it was, its id when known, why, and (the start of) what it was."""

    line: int | None
    product_id: str | None
    reason: str
    raw: str


def read_catalog(path: Path, settings: CatalogSettings, *, fmt: str | None = None) -> Iterator[Product | Reject]:
    """Stream products and rejects from `path`, in file order.

    The file is checked before this returns, so a missing or unreadable catalog raises `CatalogError`
    here rather than at the first `next()`. `fmt` (`jsonl`, `csv`, `tsv`, `parquet`) overrides the extension.
    """
    path = Path(path)
    kind = _format_of(path, fmt)
    _check_readable(path)
    if kind == "jsonl":
        records = _jsonl_records(path)
    elif kind == "parquet":
        _check_columns(path, _parquet_schema(path).names)
        records = _parquet_records(path)
    else:
        delimiter = "\t" if kind == "tsv" else ","
        _check_columns(path, _csv_header(path, delimiter))
        records = _csv_records(path, delimiter)
    return _validated(records, path.parent.resolve(), settings)


def parse_record(record: dict[str, Any], base: Path, settings: CatalogSettings) -> Product:
    """One record that did not come from a file (e.g. a JSON object sent to the service), validated exactly as
    a catalog line is; raises `InvalidRecord` naming the field at fault. Relative image paths resolve from `base`."""
    return _product(record, None, base, settings)


def write_rejects(rejects: Iterable[Reject], path: Path) -> int:
    """Write rejects as JSONL atomically (temp file + rename), so a crash never leaves half a file.

    Returns how many were written.
    """
    count = 0
    with atomic_write(Path(path), "w", encoding="utf-8") as out:
        for reject in rejects:
            out.write(json.dumps(asdict(reject), ensure_ascii=False) + "\n")
            count += 1
    return count


def normalize_text(text: str) -> str:
    """HTML stripped (tags dropped, entities decoded), NFKC, zero-width characters removed, whitespace collapsed."""
    if "<" in text or "&" in text:
        text = _strip_html(text)
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    return " ".join(text.split())


# --- file formats: each yields (line, raw text, record dict or an InvalidRecord) -----------------------

Parsed = tuple[int, str, dict[str, Any] | InvalidRecord]


def _format_of(path: Path, fmt: str | None) -> str:
    kind = fmt.lower().lstrip(".") if fmt else FORMATS.get(path.suffix.lower())
    if kind in ("json", "ndjson"):
        kind = "jsonl"
    if kind not in ("jsonl", "csv", "tsv", "parquet"):
        raise CatalogError(f"{path}: unknown catalog format {fmt or path.suffix!r}; use .jsonl, .csv, .tsv or .parquet")
    return kind


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise CatalogError(f"{path}: catalog file not found")
    if not path.is_file():
        raise CatalogError(f"{path}: not a file")
    try:
        with path.open("rb") as f:
            f.read(1)
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog file ({exc.strerror or exc})") from exc


def _jsonl_records(path: Path) -> Iterator[Parsed]:
    """One JSON object per line; blank lines are skipped; lines are decoded one by one so bad bytes stay local."""
    with path.open("rb") as f:
        for number, data in enumerate(f, start=1):
            if number == 1:
                data = data.removeprefix(b"\xef\xbb\xbf")
            if not data.strip():
                continue
            try:
                raw = data.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as exc:
                yield number, data[:RAW_CHARS].decode("utf-8", "replace"), InvalidRecord(
                    f"line is not valid UTF-8 (byte {exc.start}); save the catalog as UTF-8"
                )
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield number, raw, InvalidRecord(f"unparsable line: invalid JSON ({exc.msg} at column {exc.colno})")
                continue
            if not isinstance(record, dict):
                yield number, raw, InvalidRecord(f"not a JSON object (got {_type_name(record)})")
                continue
            yield number, raw, record


def _csv_records(path: Path, delimiter: str) -> Iterator[Parsed]:
    """CSV/TSV rows as flat dicts; undecodable bytes are kept as surrogates and the row rejected."""
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f, delimiter=delimiter)
        header = [name.strip() for name in next(reader)]
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield start, "", InvalidRecord(f"unparsable CSV row ({exc})")
                continue
            if not any(cell.strip() for cell in row):
                continue
            raw = json.dumps(row, ensure_ascii=False)
            if not _is_utf8(raw):
                yield start, raw.encode("utf-8", "replace").decode(), InvalidRecord(
                    "row is not valid UTF-8; save the catalog as UTF-8"
                )
            elif len(row) != len(header):
                yield start, raw, InvalidRecord(f"unparsable CSV row: {len(row)} fields, the header has {len(header)}")
            else:
                yield start, raw, _unflatten(dict(zip(header, row)))


def _parquet_records(path: Path) -> Iterator[Parsed]:
    """Parquet rows in batches, so memory stays bounded by the batch, not the file."""
    with pq.ParquetFile(path) as parquet:
        schema = parquet.schema_arrow
        maps = {f.name for f in schema if pa.types.is_map(f.type)}
        pandas_index = [name for name in schema.names if name.startswith("__index_level_")]
        number = 0
        for batch in parquet.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                for name in maps:
                    if row[name] is not None:
                        row[name] = dict(row[name])
                for name in pandas_index:
                    del row[name]
                yield number, json.dumps(row, ensure_ascii=False, default=str), _unflatten(row)


def _csv_header(path: Path, delimiter: str) -> list[str]:
    """The header row, read before streaming so a file without an `id` column fails at once."""
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        try:
            return [name.strip() for name in next(csv.reader(f, delimiter=delimiter))]
        except StopIteration:
            raise CatalogError(f"{path}: empty file, no header row") from None
        except csv.Error as exc:
            raise CatalogError(f"{path}: unreadable header ({exc})") from exc


def _parquet_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise CatalogError(f"{path}: not a readable Parquet file ({exc})") from exc


def _check_columns(path: Path, names: list[str]) -> None:
    if "id" not in names:
        raise CatalogError(f"{path}: no `id` column (columns: {', '.join(names[:20])})")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise CatalogError(f"{path}: duplicate column(s) {', '.join(duplicated)}")


def _unflatten(row: dict[str, Any]) -> dict[str, Any] | InvalidRecord:
    """A flat row (CSV/Parquet) as a record: JSON cells decoded, `attr.*` and `tags.*` columns gathered."""
    record: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    for name, value in row.items():
        if value is None or (isinstance(value, str) and not value.strip()):
            continue
        if name in ("attributes", "tags") and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                return InvalidRecord(f"{name}: cell is not valid JSON ({exc.msg})")
        attribute, family = _after_prefix(name, ATTR_PREFIXES), _after_prefix(name, TAG_PREFIXES)
        if attribute:
            attributes[attribute] = value
        elif family:
            tags[family] = value.split(TAG_SEPARATOR) if isinstance(value, str) else value
        else:
            record[name] = value
    if attributes:
        record["attributes"] = _merge(record.get("attributes"), attributes, "attributes")
    if tags:
        record["tags"] = _merge(record.get("tags"), tags, "tags")
    return record


def _after_prefix(name: str, prefixes: tuple[str, ...]) -> str | None:
    """`colour` for `tags.colour` and prefixes ("tags.", ...); None when no prefix matches."""
    for prefix in prefixes:
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None


def _merge(base: Any, extra: dict[str, Any], name: str) -> Any:
    """Join a JSON-object cell with its per-key columns; a wrong-typed base is left for validation to reject."""
    if base is None:
        return extra
    if not isinstance(base, dict):
        return base
    _no_overlap(base, extra, name)
    return {**base, **extra}


# --- validation ------------------------------------------------------------------------------------------


def _validated(records: Iterator[Parsed], base: Path, settings: CatalogSettings) -> Iterator[Product | Reject]:
    """Turn parsed records into products or rejects; keeps the first product of each id."""
    first_line: dict[str, int] = {}
    for line, raw, record in records:
        product_id = _raw_id(record)
        try:
            if isinstance(record, InvalidRecord):
                raise record
            product = _product(record, line, base, settings)
            if product.id in first_line:
                raise InvalidRecord(f"duplicate id {product.id!r}: first seen on line {first_line[product.id]}, kept")
        except InvalidRecord as exc:
            yield Reject(line=line, product_id=product_id, reason=str(exc), raw=raw[:RAW_CHARS])
            continue
        first_line[product.id] = line
        yield product


def _raw_id(record: dict[str, Any] | InvalidRecord) -> str | None:
    """The id to report for a reject, when there is a usable one."""
    if isinstance(record, InvalidRecord):
        return None
    value = record.get("id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None
    return str(value).strip() or None


def _product(record: dict[str, Any], line: int | None, base: Path, settings: CatalogSettings) -> Product:
    product_id = _id(record.get("id"))
    title = _text(record, "title", settings)
    description = _text(record, "description", settings)
    attributes = _attributes(record, settings)
    tags = _tags(record.get("tags"))
    image, image_hash = _image(record.get("image"), base, settings)
    if not title and not description and image is None:
        raise InvalidRecord("nothing to tag: no title, description or image")
    product = Product(
        id=product_id, title=title, description=description, attributes=attributes,
        image=image, tags=tags, line=line, image_hash=image_hash,
    )
    total = len(product.encoder_text())
    if total > settings.max_text_chars:
        raise InvalidRecord(
            f"text too long: title + description + attributes are {total:,} characters, "
            f"over the limit of {settings.max_text_chars:,}"
        )
    return product


def _id(value: Any) -> str:
    if value is None:
        raise InvalidRecord("missing id")
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidRecord(f"id: expected a string or integer, got {_type_name(value)}")
    product_id = str(value).strip()
    if not product_id:
        raise InvalidRecord("missing id: the id is empty")
    return product_id


def _text(record: dict[str, Any], name: str, settings: CatalogSettings) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRecord(f"{name}: expected a string, got {_type_name(value)}")
    text = normalize_text(value)
    if len(text) > settings.max_text_chars:
        raise InvalidRecord(f"{name}: text too long: {len(text):,} characters, over the limit of {settings.max_text_chars:,}")
    return text


def _attributes(record: dict[str, Any], settings: CatalogSettings) -> dict[str, str]:
    """Explicit `attributes` plus every unknown top-level field, as normalised text sorted by name."""
    explicit = record.get("attributes")
    if explicit is None:
        explicit = {}
    if not isinstance(explicit, dict):
        raise InvalidRecord(f"attributes: expected an object, got {_type_name(explicit)}")
    extra = {k: v for k, v in record.items() if k not in CORE_FIELDS and v is not None}
    _no_overlap(explicit, extra, "attributes")
    attributes: dict[str, str] = {}
    for key, value in {**explicit, **extra}.items():
        name = normalize_text(str(key))
        if value is None or not name:
            continue
        text = normalize_text(_scalar_text(value))
        if len(text) > settings.max_text_chars:
            raise InvalidRecord(
                f"attributes.{name}: text too long: {len(text):,} characters, over the limit of {settings.max_text_chars:,}"
            )
        if text:
            attributes[name] = text
    return dict(sorted(attributes.items()))


def _tags(value: Any) -> dict[str, tuple[str, ...]]:
    """Family -> normalised values, deduplicated in order; a family left with no value is dropped."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRecord(f"tags: expected an object of family -> list of values, got {_type_name(value)}")
    tags: dict[str, tuple[str, ...]] = {}
    for family, values in value.items():
        name = normalize_text(str(family))
        if values is None or not name:
            continue
        if not isinstance(values, (list, tuple)):
            values = [values]
        cleaned: dict[str, None] = {}
        for item in values:
            if isinstance(item, (dict, list, tuple, bool)) or item is None:
                raise InvalidRecord(f"tags.{name}: expected strings, got {_type_name(item)}")
            text = normalize_text(str(item))
            if text:
                cleaned[text] = None
        if cleaned:
            tags[name] = tuple(cleaned)
    return tags


def _image(value: Any, base: Path, settings: CatalogSettings) -> tuple[str | None, str | None]:
    """(absolute path or URL, sha256 of the bytes); a local file must exist, fit the limit and decode fully."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        raise InvalidRecord(f"image: expected a path or URL string, got {_type_name(value)}")
    ref = value.strip()
    if not ref:
        return None, None
    if "://" in ref:
        scheme = ref.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise InvalidRecord(f"image: unsupported URL scheme {scheme!r} in {ref!r}; use a local path or http(s)")
        if not settings.allow_image_urls:
            raise InvalidRecord(f"image: URL {ref!r} not allowed (catalog.allow_image_urls is off); use a local file")
        return ref, None
    path = (base / ref).resolve()
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InvalidRecord(f"image: {path} is not a file")
        if size > settings.max_image_bytes:
            raise InvalidRecord(f"image: {path} is {size:,} bytes, over the limit of {settings.max_image_bytes:,}")
        data = path.read_bytes()
    except FileNotFoundError:
        raise InvalidRecord(f"image: file not found: {path}") from None
    except OSError as exc:
        raise InvalidRecord(f"image: cannot read {path} ({exc.strerror or exc})") from None
    _check_decodes(data, path)
    return str(path), hashlib.sha256(data).hexdigest()


def _check_decodes(data: bytes, path: Path) -> None:
    """`verify` checks structure; only a full decode finds a truncated file, so do both."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, DecompressionBomb...)
        raise InvalidRecord(f"image: corrupt or unsupported image {path} ({type(exc).__name__}: {exc})") from None


# --- small helpers ---------------------------------------------------------------------------------------


def _no_overlap(a: dict[str, Any], b: dict[str, Any], name: str) -> None:
    both = sorted(set(a) & set(b))
    if both:
        raise InvalidRecord(f"{name}: {', '.join(map(repr, both))} given twice (inside `{name}` and as its own field)")


def _scalar_text(value: Any) -> str:
    """An attribute value as text: booleans as JSON spells them, nested values as compact JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, dict, list, tuple)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=str)
    return str(value)


def _type_name(value: Any) -> str:
    """JSON's name for a Python value's type, which is what catalog authors know."""
    names = {dict: "object", list: "array", tuple: "array", str: "string", bool: "boolean",
             int: "integer", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class _TextExtractor(HTMLParser):
    """Collects the visible text of an HTML fragment; block elements become spaces."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def _strip_html(text: str) -> str:
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)
