"""The JSON-schema subset tool parameters may use, and the validator of a call's arguments against it.

Supported keywords: type, properties, required, additionalProperties (a boolean), enum, items,
minimum, maximum, minLength, maxLength, description, title, default. The settings refuse a tool
whose schema uses anything else, so validation never passes silently on a keyword it ignores.
A hand-written subset keeps the runtime free of jsonschema and its compiled dependencies.
"""

from __future__ import annotations

from typing import Any

KEYWORDS = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "enum",
        "items",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "description",
        "title",
        "default",
    }
)
TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
    "number": (int, float),
    "integer": int,
}


def unsupported(schema: Any, path: str = "parameters") -> list[str]:
    """Where the schema leaves the supported subset (empty when it does not)."""
    if not isinstance(schema, dict):
        return [f"{path} must be an object"]
    found = [f"{path}.{key}" for key in schema if key not in KEYWORDS]
    types = schema.get("type")
    for name in types if isinstance(types, list) else [types] if types is not None else []:
        if name not in TYPES:
            found.append(f"{path}.type {name!r}")
    if "additionalProperties" in schema and not isinstance(schema["additionalProperties"], bool):
        found.append(f"{path}.additionalProperties (only true/false)")
    for key, sub in (schema.get("properties") or {}).items():
        found += unsupported(sub, f"{path}.properties.{key}")
    if "items" in schema:
        found += unsupported(schema["items"], f"{path}.items")
    return found


def _is(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("number", "integer"):
        return False  # JSON true is not a number
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, TYPES[name])


def errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """Every way `value` breaks `schema` (a schema from the supported subset), as short messages."""
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_is(value, n) for n in names):
            return [f"{path} must be {' or '.join(names)}"]
    out: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path} must be one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{path} is shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{path} is longer than {schema['maxLength']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path} is less than {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path} is more than {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        out += [f"{path}.{k} is required" for k in schema.get("required") or [] if k not in value]
        for key, sub in value.items():
            if key in props:
                out += errors(sub, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                out.append(f"{path}.{key} is not allowed")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, sub in enumerate(value):
            out += errors(sub, schema["items"], f"{path}[{i}]")
    return out
