"""Strict validation of Elasticsearch request bodies against the official OpenAPI spec.

The spec is turned into one JSON Schema (draft 2020-12) document:
- `oneOf` becomes `anyOf` (the spec's alternatives overlap), `nullable` becomes an alternative with null;
- min/maxProperties on an `allOf` part count only that part's own keys (`_one_of_keys`: how the spec renders
  "exactly one of", e.g. `mapping` / `runtime` of a dynamic template beside its `match` conditions);
- every object schema that declares `properties` (itself or through its `allOf` bases) and no
  `additionalProperties` rejects unknown keys, so a misspelt field fails. Because the spec models
  inheritance as `allOf: [base, own part]`, the check (`unevaluatedProperties: false`) goes on the schema a
  value is validated against, and the bases it is built from are referenced in an open form;
- discriminated unions (mapping property types, analyzers, ...) validate against the alternative their tag
  names, instead of trying all of them;
- `_types.query_dsl.TermsQuery` and `_types.SortOptions` stay open: their field names are keys (a TypeScript
  index signature that the OpenAPI rendering loses; the spec has no `FieldSort` schema at all).

Bulk bodies are ndjson: each action line is validated against the bulk operation schema, update payloads
against `UpdateAction`; document sources are free-form (the index mapping, `dynamic: strict`, checks those).
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

# ../shared/es-spec beside the checkout, or $SHOPTAG_ES_SPEC
SPEC = Path(os.environ.get("SHOPTAG_ES_SPEC", Path(__file__).resolve().parents[2] / "shared" / "es-spec"
                           / "elasticsearch-openapi.json.gz"))
OPEN_SCHEMAS = {"_types.query_dsl.TermsQuery", "_types.SortOptions"}
REF = "#/components/schemas/"
# friendly operation names -> (method, path template) in the spec
OPERATIONS = {
    "indices.create": ("put", "/{index}"),
    "search": ("post", "/{index}/_search"),
    "put_script": ("put", "/_scripts/{id}"),
    "indices.update_aliases": ("post", "/_aliases"),
    "mget": ("post", "/{index}/_mget"),
    "count": ("post", "/{index}/_count"),
}
BULK_ACTIONS = {"index", "create", "update", "delete"}


class ESRequestValidator:
    """Validates request bodies by operation name, or by the (method, path) a client actually sent."""

    def __init__(self, spec_path: Path = SPEC) -> None:
        with gzip.open(spec_path, "rt", encoding="utf-8") as fh:
            self.spec = json.load(fh)
        schemas = self.spec["components"]["schemas"]
        self._schemas = schemas
        defs: dict[str, Any] = {}
        for name, schema in schemas.items():
            defs[name] = self._convert(schema, strict=self._is_closed(schema) and name not in OPEN_SCHEMAS)
            defs["open:" + name] = self._convert(schema, strict=False)
        self._defs = defs
        self._validators: dict[str, Draft202012Validator] = {}
        self._routes = self._compile_routes()

    # ---- public API -----------------------------------------------------------------------------------------
    def validate(self, operation: str, body: Any) -> None:
        """Raise `ValidationError` unless `body` is a valid request body of `operation` (e.g. "search")."""
        if operation == "bulk":
            self.validate_bulk(body)
            return
        method, path = OPERATIONS[operation]
        self._validate_schema(self._body_schema(method, path), body, operation)

    def validate_bulk(self, lines: list[dict[str, Any]] | str | bytes) -> None:
        """Validate a bulk body: a list of parsed lines or the ndjson text."""
        if isinstance(lines, (str, bytes)):
            text = lines.decode() if isinstance(lines, bytes) else lines
            lines = [json.loads(line) for line in text.splitlines() if line.strip()]
        position = 0
        while position < len(lines):
            action = lines[position]
            self._validate_schema({"$ref": "#/$defs/_global.bulk.OperationContainer"}, action, "bulk action")
            (op,) = action
            position += 1
            if op == "delete":
                continue
            if position >= len(lines):
                raise ValidationError(f"bulk {op} action without its source line")
            if op == "update":
                self._validate_schema({"$ref": "#/$defs/_global.bulk.UpdateAction"}, lines[position], "bulk update")
            elif not isinstance(lines[position], dict):
                raise ValidationError(f"bulk {op} source must be an object")
            position += 1

    def validate_request(self, method: str, target: str, body: bytes | None) -> str:
        """Validate what a client sent; returns the operation id it matched. Bodiless requests pass."""
        path = target.split("?", 1)[0]
        operation_id, spec_path = self._route(method.lower(), path)
        if not body:
            return operation_id
        if spec_path.endswith("/_bulk"):
            self.validate_bulk(body)
        else:
            self._validate_schema(self._body_schema(method.lower(), spec_path), json.loads(body), operation_id)
        return operation_id

    # ---- schema conversion ----------------------------------------------------------------------------------
    def _is_closed(self, schema: Any, seen: frozenset[int] = frozenset()) -> bool:
        """Declares properties (itself or via allOf bases) and nowhere allows additional ones."""
        has_props, is_open = self._shape(schema, seen)
        return has_props and not is_open

    def _shape(self, schema: Any, seen: frozenset[int]) -> tuple[bool, bool]:
        if not isinstance(schema, dict) or id(schema) in seen:
            return False, False
        seen = seen | {id(schema)}
        if "$ref" in schema:
            name = schema["$ref"].removeprefix(REF)
            if name in OPEN_SCHEMAS:
                return True, True
            return self._shape(self._schemas[name], seen)
        has_props = "properties" in schema
        is_open = "additionalProperties" in schema and schema["additionalProperties"] is not False
        for part in schema.get("allOf", []):
            part_props, part_open = self._shape(part, seen)
            has_props |= part_props
            is_open |= part_open
        return has_props, is_open

    def _convert(self, node: Any, *, strict: bool, in_all_of: bool = False) -> Any:
        """Copy of `node` as JSON Schema 2020-12 (see the module docstring)."""
        if not isinstance(node, dict):
            return node
        if "discriminator" in node and "mapping" in node["discriminator"]:
            return self._dispatch(node["discriminator"], in_all_of=in_all_of)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key == "$ref":
                name = value.removeprefix(REF)
                out[key] = f"#/$defs/{'open:' if in_all_of else ''}{name}"
            elif key == "allOf":
                out[key] = [self._convert(item, strict=False, in_all_of=True) for item in value]
            elif key in ("oneOf", "anyOf"):
                out["anyOf"] = [self._convert(item, strict=self._is_closed(item)) for item in value]
            elif key in ("properties", "patternProperties"):
                out[key] = {k: self._convert(v, strict=self._is_closed(v)) for k, v in value.items()}
            elif key in ("items", "additionalProperties", "not"):
                out[key] = self._convert(value, strict=self._is_closed(value))
            elif key in ("discriminator", "example", "examples", "externalDocs", "nullable", "x-state"):
                continue
            else:
                out[key] = copy.deepcopy(value)
        if in_all_of and "properties" in node and {"minProperties", "maxProperties"} & set(node):
            for key in ("minProperties", "maxProperties"):
                out.pop(key, None)
            out.update(_one_of_keys(node))
        if strict and not in_all_of:
            out["unevaluatedProperties"] = False
        if node.get("nullable"):
            return {"anyOf": [out, {"type": "null"}]}
        return out

    def _dispatch(self, discriminator: dict[str, Any], *, in_all_of: bool) -> dict[str, Any]:
        """A discriminated union validated against the one alternative its tag names (fast, and its errors are
        about that alternative); a value without the tag may be any of them."""
        tag, mapping = discriminator["propertyName"], discriminator["mapping"]
        prefix = "#/$defs/" + ("open:" if in_all_of else "")
        branches = {value: prefix + ref.removeprefix(REF) for value, ref in mapping.items()}
        return {
            "properties": {tag: {"enum": sorted(branches)}},
            "allOf": [
                {"if": {"properties": {tag: {"const": value}}, "required": [tag]}, "then": {"$ref": ref}}
                for value, ref in sorted(branches.items())
            ],
            "if": {"not": {"required": [tag]}},
            "then": {"anyOf": [{"$ref": ref} for ref in sorted(set(branches.values()))]},
        }

    # ---- validation -----------------------------------------------------------------------------------------
    def _body_schema(self, method: str, path: str) -> dict[str, Any]:
        request = self.spec["paths"][path][method]["requestBody"]
        if "$ref" in request:
            request = self.spec["components"]["requestBodies"][request["$ref"].rsplit("/", 1)[1]]
        schema = request["content"]["application/json"]["schema"]
        return self._convert(schema, strict=self._is_closed(schema))

    def _validate_schema(self, schema: dict[str, Any], instance: Any, what: str) -> None:
        key = json.dumps(schema, sort_keys=True)
        validator = self._validators.get(key)
        if validator is None:
            validator = self._validators[key] = Draft202012Validator({**schema, "$defs": self._defs})
        errors = list(_flatten(validator.iter_errors(instance)))
        if errors:
            error = min(errors, key=_telling)
            raise ValidationError(f"{what}: {error.message} at {list(error.absolute_path)}")

    def _compile_routes(self) -> list[tuple[re.Pattern[str], int, str, str]]:
        routes = []
        for spec_path, item in self.spec["paths"].items():
            pattern = re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(spec_path)) + "$")
            literal = sum(1 for part in spec_path.split("/") if part and not part.startswith("{"))
            for method, operation in item.items():
                if isinstance(operation, dict) and "operationId" in operation:
                    routes.append((pattern, literal, method, spec_path))
        return routes

    def _route(self, method: str, path: str) -> tuple[str, str]:
        matches = [(lit, sp) for pattern, lit, m, sp in self._routes if m == method and pattern.match(path)]
        if not matches:
            raise ValidationError(f"no {method.upper()} {path} in the Elasticsearch API")
        _, spec_path = max(matches)
        return self.spec["paths"][spec_path][method]["operationId"], spec_path


def _one_of_keys(node: dict[str, Any]) -> dict[str, Any]:
    """An allOf part's property counts, limited to its own keys. The spec renders a TypeScript container variant
    (exactly one of `mapping` / `runtime` in a `DynamicTemplate`, beside `match` and the other conditions of
    another part) as min/maxProperties on that part, which JSON Schema applies to the whole object: a valid
    dynamic template with a `match` condition would fail. Here they count only the part's declared keys."""
    keys = sorted(node["properties"])
    rules: dict[str, Any] = {}
    if node.get("minProperties", 0) >= 1:
        rules["anyOf"] = [{"required": [key]} for key in keys]
    if node.get("maxProperties") == 1:
        rules["not"] = {"anyOf": [{"required": [a, b]} for i, a in enumerate(keys) for b in keys[i + 1 :]]}
    return rules


def _flatten(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    """Errors and, recursively, the errors of the alternatives (anyOf) behind them."""
    for error in errors:
        yield error
        yield from _flatten(error.context or [])


def _telling(error: ValidationError) -> tuple[int, int, int]:
    """Sort key putting first the error that best names the mistake: an unknown key (the deepest, and in the
    alternative with the fewest of them, i.e. the one meant), then a missing one, then the deepest of the rest."""
    kind = {"unevaluatedProperties": 0, "required": 1}.get(str(error.validator), 2)
    return kind, -len(error.absolute_path), len(error.message)
