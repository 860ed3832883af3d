"""Output schemas of semantic operators: pydantic models built from user declarations."""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, Field, ValidationError, create_model

from pz_dagster.errors import SchemaError

# Columns every record carries; operators may not declare them as outputs.
RECORD_ID = "record_id"
ERROR = "error"
RESERVED_COLUMNS = frozenset({RECORD_ID, ERROR})

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

TYPE_NAMES: dict[str, Any] = {
    "str": str,
    "string": str,
    "int": int,
    "integer": int,
    "float": float,
    "number": float,
    "bool": bool,
    "boolean": bool,
    "list[str]": list[str],
    "list[int]": list[int],
    "list[float]": list[float],
}


class FieldSpec(BaseModel, frozen=True):
    """One output column declared as ``{name, type, desc}``.

    >>> FieldSpec(name="sender", type="str", desc="the sender's email address").name
    'sender'
    """

    name: str
    type: str = "str"
    desc: str = Field(min_length=1)


def check_column_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.match(name) or keyword.iskeyword(name):
        raise SchemaError(
            f"invalid column name {name!r}: use letters, digits and underscores, "
            "not starting with a digit"
        )
    if name in RESERVED_COLUMNS:
        raise SchemaError(f"column name {name!r} is reserved by pz-dagster; choose another name")


def output_model(
    fields: type[BaseModel] | Iterable[Mapping[str, Any] | FieldSpec], model_name: str = "Output"
) -> type[BaseModel]:
    """Turn a pydantic model or a list of ``{name, type, desc}`` into a pydantic model class.

    >>> M = output_model([{"name": "sender", "type": "str", "desc": "email address"}])
    >>> list(M.model_fields)
    ['sender']
    """
    if isinstance(fields, type) and issubclass(fields, BaseModel):
        if not fields.model_fields:
            raise SchemaError(f"output model {fields.__name__} declares no fields")
        for name in fields.model_fields:
            check_column_name(name)
        return fields
    if isinstance(fields, (str, bytes)) or not isinstance(fields, Iterable):
        raise SchemaError(
            "fields must be a pydantic model class or a list of {name, type, desc} mappings, "
            f"got {type(fields).__name__}"
        )
    specs: list[FieldSpec] = []
    for item in fields:
        try:
            spec = item if isinstance(item, FieldSpec) else FieldSpec.model_validate(dict(item))
        except (ValidationError, TypeError, ValueError) as exc:
            raise SchemaError(
                f"bad field declaration {item!r}: each field needs a name, a type among "
                f"{sorted(TYPE_NAMES)} and a non-empty desc ({exc.__class__.__name__})"
            ) from None
        check_column_name(spec.name)
        if spec.type not in TYPE_NAMES:
            raise SchemaError(
                f"field {spec.name!r} has unknown type {spec.type!r}; use one of {sorted(TYPE_NAMES)}"
            )
        specs.append(spec)
    if not specs:
        raise SchemaError("a semantic map needs at least one output field")
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SchemaError(f"output fields declared twice: {dupes}")
    definitions = {s.name: (TYPE_NAMES[s.type], Field(description=s.desc)) for s in specs}
    return create_model(model_name, **definitions)  # type: ignore[call-overload]


def describe_fields(model: type[BaseModel]) -> list[tuple[str, str, str]]:
    """(name, type, description) per field, for prompts and explain()."""
    out = []
    for name, info in model.model_fields.items():
        ann = info.annotation
        type_name = getattr(ann, "__name__", None) if not hasattr(ann, "__args__") else str(ann)
        out.append((name, type_name or str(ann), info.description or ""))
    return out


def coerce_value(value: Any, typ: Any) -> Any:
    """``value`` as a column of type ``typ`` stores it: ints widen to float, anything becomes
    text for a str column; a value that does not fit (text for an int column) raises TypeError."""
    if value is None or typ is Any:
        return value
    if typ is str:
        return value if isinstance(value, str) else str(value)
    if typ is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if typ is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if typ is bool and isinstance(value, bool):
        return value
    if getattr(typ, "__origin__", None) is list and isinstance(value, list):
        (item,) = typ.__args__
        return [coerce_value(v, item) for v in value]
    raise TypeError(f"{value!r} is not a {getattr(typ, '__name__', typ)}")
