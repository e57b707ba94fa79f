"""The one product record schema and its validation: a parsed record becomes a normalised `Product` or a `Reject`.

Used for catalog files (`catalog.readers`) and for records sent to the service (`parse_record`), so both are
validated by the same code. Bad records never raise out of `validated`: each becomes a `Reject` naming its
line (or row) and id and the field at fault.

Record fields, in every format: `id` (required; a string, or an integer coerced to a string), `title`,
`description`, `attributes` (object of scalars), `image` (local path relative to the catalog file, or an
http(s) URL when `allow_image_urls`), `tags` (object: family -> list of values, or one value).
Any other top-level field is an attribute, so a flat CSV such as `id,title,brand,material` needs no
renaming; a name given both ways is rejected rather than silently picked.

Attribute values are scalars coerced to text (`true`/`false` for booleans); a nested value (object or
list) is kept as compact JSON text so nothing is lost. Duplicate ids: the first accepted record wins and
later ones are rejected with the line of the first; a record rejected for another reason claims no id.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import unicodedata
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError
from shoptag.core.settings import CatalogSettings

# The id rule, the same for `shoptag ingest`, POST /products and every path that names a product: 1 to
# MAX_ID_CHARS characters after trimming, no control characters; `/` and any other character are fine.
MAX_ID_CHARS = 256
RAW_CHARS = 2_000  # how much of a bad record a reject keeps, enough to find and fix it
CORE_FIELDS = ("id", "title", "description", "attributes", "image", "tags")
# Tags whose content is not text, and tags that separate words; other (inline) tags join their neighbours.
_HIDDEN_TAGS = frozenset({"script", "style", "head", "title", "noscript", "template"})
_BLOCK_TAGS = frozenset(
    {"br", "p", "div", "li", "ul", "ol", "tr", "td", "th", "table", "h1", "h2", "h3", "h4", "h5", "h6",
     "hr", "section", "article", "header", "footer", "dd", "dt", "dl", "blockquote", "pre", "img"}
)
_INVISIBLE = dict.fromkeys(map(ord, "\x00\u200b\u2060\ufeff"))  # zero-width characters copied from web pages


class InvalidRecord(ValueError):
    """One record is bad; the message names the field and is what the reject says."""


# what a reader yields per line or row: (line, raw text, record dict or why it could not be parsed)
Parsed = tuple[int, str, dict[str, Any] | InvalidRecord]


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


def parse_record(record: dict[str, Any], base: Path, settings: CatalogSettings,
                 decoding: AbstractContextManager[Any] = nullcontext()) -> Product:
    """One record that did not come from a file (e.g. a JSON object sent to the service), validated exactly as
    a catalog line is; raises `InvalidRecord` naming the field at fault. Relative image paths resolve from `base`.
    Its image is decoded inside `decoding` (the service bounds how many decode at once)."""
    return _product(record, None, base, settings, decoding)


def normalize_text(text: str) -> str:
    """HTML stripped (tags dropped, entities decoded), NFKC, zero-width characters removed, whitespace collapsed."""
    if "<" in text or "&" in text:
        text = _strip_html(text)
    text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE)
    return " ".join(text.split())


def validated(records: Iterator[Parsed], base: Path, settings: CatalogSettings) -> Iterator[Product | Reject]:
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


def _product(record: dict[str, Any], line: int | None, base: Path, settings: CatalogSettings,
             decoding: AbstractContextManager[Any] = nullcontext()) -> Product:
    product_id = _id(record.get("id"))
    title = _text(record, "title", settings)
    description = _text(record, "description", settings)
    attributes = _attributes(record, settings)
    tags = _tags(record.get("tags"))
    image, image_hash = _image(record.get("image"), base, settings, decoding)
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
        raise InvalidRecord(f"id: expected a string or integer, got {type_name(value)}")
    product_id = str(value).strip()
    if not product_id:
        raise InvalidRecord("missing id: the id is empty")
    if len(product_id) > MAX_ID_CHARS:
        raise InvalidRecord(f"id: {len(product_id):,} characters, over the limit of {MAX_ID_CHARS}")
    if any(unicodedata.category(c) == "Cc" for c in product_id):
        raise InvalidRecord("id: contains a control character (line break, tab, NUL...)")
    return product_id


def _text(record: dict[str, Any], name: str, settings: CatalogSettings) -> str:
    value = record.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidRecord(f"{name}: expected a string, got {type_name(value)}")
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
        raise InvalidRecord(f"attributes: expected an object, got {type_name(explicit)}")
    extra = {k: v for k, v in record.items() if k not in CORE_FIELDS and v is not None}
    no_overlap(explicit, extra, "attributes")
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
        if text and name in settings.numeric_attributes and not _is_number(text):
            # a declared numeric attribute is indexed as a number: text there would be a mapping error at index
            # time (Elasticsearch) or a silently missing price (embedded), so the record is rejected here
            raise InvalidRecord(f"attributes.{name}: {text[:40]!r} is not a number, and {name!r} is a numeric "
                                "attribute (catalog.numeric_attributes)")
        if text:
            attributes[name] = text
    return dict(sorted(attributes.items()))


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _tags(value: Any) -> dict[str, tuple[str, ...]]:
    """Family -> normalised values, deduplicated in order. An explicit empty list is kept: it says no value
    of the family applies (a label, not a gap); a family whose values are all blank is dropped."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRecord(f"tags: expected an object of family -> list of values, got {type_name(value)}")
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
                raise InvalidRecord(f"tags.{name}: expected strings, got {type_name(item)}")
            text = normalize_text(str(item))
            if text:
                cleaned[text] = None
        if cleaned or not values:
            tags[name] = tuple(cleaned)
    return tags


def _image(value: Any, base: Path, settings: CatalogSettings,
           decoding: AbstractContextManager[Any]) -> tuple[str | None, str | None]:
    """(absolute path or URL, sha256 of the bytes); a local file must exist, fit the limit and decode fully."""
    if value is None:
        return None, None
    if not isinstance(value, str):
        raise InvalidRecord(f"image: expected a path or URL string, got {type_name(value)}")
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
    with decoding:
        _check_decodes(data, path, settings.max_image_pixels)
    return str(path), hashlib.sha256(data).hexdigest()


def _check_decodes(data: bytes, path: Path, max_pixels: int) -> None:
    """The header's size against `max_pixels` before any pixel is decoded; then `verify` checks structure and
    a full decode (of a JPEG at 1/8 scale, which reads every byte) finds a truncated file."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
            if width * height > max_pixels:
                raise InvalidRecord(f"image: {path} is {width}×{height} = {width * height / 1e6:.0f} MP, over the "
                                    f"limit of {max_pixels / 1e6:g} MP (catalog.max_image_pixels)")
            im.verify()
        with Image.open(io.BytesIO(data)) as im:
            im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))  # JPEG only; others decode whole
            im.load()
    except InvalidRecord:
        raise
    except UnidentifiedImageError:  # its message names the buffer (`<_io.BytesIO object at 0x…>`), not the file
        raise InvalidRecord(f"image: corrupt or unsupported image {path} (not an image format Pillow reads)") \
            from None
    except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, ValueError, DecompressionBomb...)
        raise InvalidRecord(f"image: corrupt or unsupported image {path} ({type(exc).__name__}: {exc})") from None


# --- small helpers ---------------------------------------------------------------------------------------


def no_overlap(a: dict[str, Any], b: dict[str, Any], name: str) -> None:
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


def json_error(exc: json.JSONDecodeError) -> str:
    """A JSON syntax error in words: `invalid JSON (Unterminated string starting at column 5)`; json's own
    messages may end in "at", so the column is not joined with a second one."""
    return f"invalid JSON ({exc.msg.removesuffix(' at')} at column {exc.colno})"


def type_name(value: Any) -> str:
    """JSON's name for a Python value's type, which is what catalog authors know."""
    names = {dict: "object", list: "array", tuple: "array", str: "string", bool: "boolean",
             int: "integer", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


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
