"""Products sent to `POST /products` → validated catalog products, or one 422 naming every bad one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shoptag.catalog.records import InvalidRecord, Product, parse_record
from shoptag.core.errors import BadInput
from shoptag.core.settings import Settings

from .decodes import DecodeGate
from .schemas import ProductIn


def checked_batch(size: int, settings: Settings) -> None:
    """Refuse a batch over `service.max_batch` (a body can be under the byte limit and still too many items);
    an empty batch is refused by the body's schema."""
    if size > settings.service.max_batch:
        raise BadInput(f"batch of {size} items is over the limit of {settings.service.max_batch} "
                       "(service.max_batch): split it")


def validated_products(items: list[ProductIn], settings: Settings, decodes: DecodeGate) -> tuple[list[Product], list[str]]:
    """The products, or the reasons (one per bad item, naming its position and id) when any is bad; images are
    decoded through `decodes`, so concurrent requests never decode more than its limit at once."""
    root = settings.service.image_root
    products: list[Product] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for position, item in enumerate(items):
        record = item.record()
        try:
            _check_image_path(record, root)
            product = parse_record(record, root or settings.workspace, settings.catalog, decodes)
            if product.id in seen:
                raise InvalidRecord(f"duplicate id {product.id!r}: also item {seen[product.id]} of this batch")
        except InvalidRecord as exc:
            problems.append(f"item {position} (id {record.get('id')!r}): {exc}")
            continue
        seen[product.id] = position
        products.append(product)
    return products, problems


def _check_image_path(record: dict[str, Any], root: Path | None) -> None:
    """A local image must lie inside `service.image_root`: a request must never make the server read any file."""
    ref = record.get("image")
    if not isinstance(ref, str) or not ref.strip() or "://" in ref:
        return  # absent, or a URL: the catalog rules decide
    if root is None:
        raise InvalidRecord("image: this service takes no local image paths (service.image_root is not set)")
    if not (root / ref.strip()).resolve().is_relative_to(root.resolve()):
        raise InvalidRecord(f"image: {ref!r} is outside the service's image folder")
