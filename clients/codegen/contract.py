"""Reading the contract's JSON Schema into the small set of shapes the templates need.

The contract (`worker.schema.contract_schema()`) uses a narrow subset of JSON Schema: objects of scalar, enum,
const, array, string-keyed mapping (`additionalProperties`) and `$ref` properties, nullability as
`anyOf [X, null]`, and the constraints pydantic emits (`minLength`, `maxLength`, `pattern`, `minimum`,
`maximum`, and a mapping's `maxProperties`). Anything outside that subset fails loudly here
rather than being generated wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_SCALARS = {"string": "str", "integer": "int", "number": "float", "boolean": "bool"}
# JSON Schema keyword -> pydantic Field() keyword.
_CONSTRAINTS = {
    "minLength": "min_length",
    "maxLength": "max_length",
    "pattern": "pattern",
    "minimum": "ge",
    "maximum": "le",
    "minProperties": "min_length",  # of a mapping: its number of entries
    "maxProperties": "max_length",
}


@dataclass(frozen=True)
class TypeSpec:
    """One property's type: a scalar, a literal set, a list, a mapping, or a reference to another definition."""

    kind: str  # "scalar" | "literal" | "list" | "dict" | "ref"
    name: str = ""  # python scalar name (scalar) or definition name (ref)
    values: tuple[Any, ...] = ()  # literal values
    item: TypeSpec | None = None  # list item type, a mapping's value type
    nullable: bool = False
    constraints: tuple[tuple[str, Any], ...] = ()  # (pydantic keyword, value), schema order
    key: TypeSpec | None = None  # a mapping's key type (a string)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: TypeSpec
    required: bool
    default: Any = None
    description: str | None = None

    @property
    def const(self) -> Any:
        """The single allowed value of a `const` property (the `action` discriminator), else None."""
        return self.type.values[0] if self.type.kind == "literal" and len(self.type.values) == 1 else None


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str | None
    fields: tuple[FieldSpec, ...]
    forbid_extra: bool

    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.fields if f.name == name)


@dataclass(frozen=True)
class EnumSpec:
    name: str
    description: str | None
    values: tuple[str, ...]


@dataclass
class Contract:
    version: str
    actions: dict[str, tuple[str, str]]  # action -> (input model, output model)
    stream: dict[str, str]
    error_codes: tuple[str, ...]
    models: dict[str, ModelSpec] = field(default_factory=dict)
    enums: dict[str, EnumSpec] = field(default_factory=dict)

    def models_in_dependency_order(self) -> list[ModelSpec]:
        """Every model after the models it refers to, otherwise alphabetical (stable output)."""
        ordered: list[ModelSpec] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen or name not in self.models:
                return
            seen.add(name)
            for f in self.models[name].fields:
                for ref in _refs(f.type):
                    visit(ref)
            ordered.append(self.models[name])

        for name in sorted(self.models):
            visit(name)
        return ordered


def _refs(t: TypeSpec) -> list[str]:
    if t.kind == "ref":
        return [t.name]
    if t.kind in ("list", "dict") and t.item is not None:
        return _refs(t.item)
    return []


def _ref_name(ref: str) -> str:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"unsupported $ref {ref!r}")
    return ref[len(prefix) :]


def parse_type(prop: dict[str, Any]) -> TypeSpec:
    if "anyOf" in prop:
        branches = [b for b in prop["anyOf"] if b.get("type") != "null"]
        if len(branches) != 1 or len(prop["anyOf"]) != 2:
            raise ValueError(f"only `anyOf [X, null]` is supported, got {prop['anyOf']!r}")
        inner = parse_type(branches[0])
        return TypeSpec(inner.kind, inner.name, inner.values, inner.item, True, inner.constraints, inner.key)
    if "$ref" in prop:
        return TypeSpec("ref", _ref_name(prop["$ref"]))
    if "const" in prop:
        return TypeSpec("literal", values=(prop["const"],))
    if "enum" in prop:
        return TypeSpec("literal", values=tuple(prop["enum"]))
    kind = prop.get("type")
    if kind == "array":
        return TypeSpec("list", item=parse_type(prop["items"]))
    if kind == "object" and isinstance(prop.get("additionalProperties"), dict):
        key = parse_type({"type": "string", **prop.get("propertyNames", {})})
        constraints = tuple((_CONSTRAINTS[k], prop[k]) for k in ("minProperties", "maxProperties") if k in prop)
        return TypeSpec("dict", item=parse_type(prop["additionalProperties"]), key=key, constraints=constraints)
    if kind in _SCALARS:
        constraints = tuple((_CONSTRAINTS[k], prop[k]) for k in _CONSTRAINTS if k in prop)
        return TypeSpec("scalar", _SCALARS[kind], constraints=constraints)
    raise ValueError(f"unsupported property schema {prop!r}")


def _parse_model(name: str, schema: dict[str, Any]) -> ModelSpec:
    required = set(schema.get("required", ()))
    fields = []
    for prop_name, prop in schema.get("properties", {}).items():
        fields.append(
            FieldSpec(
                name=prop_name,
                type=parse_type(prop),
                required=prop_name in required,
                default=prop.get("default"),
                description=prop.get("description"),
            )
        )
    return ModelSpec(name, schema.get("description"), tuple(fields), schema.get("additionalProperties") is False)


def load_contract(path: Path) -> Contract:
    raw = json.loads(path.read_text())
    contract = Contract(
        version=raw["version"],
        actions={name: (a["input"], a["output"]) for name, a in raw["actions"].items()},
        stream=dict(raw["stream"]),
        error_codes=tuple(raw["error_codes"]),
    )
    for name, schema in raw["$defs"].items():
        if "enum" in schema and schema.get("type") == "string":
            contract.enums[name] = EnumSpec(name, schema.get("description"), tuple(schema["enum"]))
        elif schema.get("type") == "object":
            contract.models[name] = _parse_model(name, schema)
        else:
            raise ValueError(f"unsupported definition {name!r}")
    return contract
