"""The CPF reply schemas (schemas/replies/), compiled once: the engine checks its own
replies with them and the conformance runner checks any provider's.

Each schema is also compiled to a fast check (plain Python over the keywords these schemas
use): it says "valid" only where jsonschema would, and anything it is not sure of goes to
jsonschema, which decides and words the message. The engine checks every reply it sends
(thousands of guests/get per RAS poll) without paying for jsonschema, nor importing it."""
from __future__ import annotations

import functools
import json
import re
from typing import Any, Callable

from cpfmap import resources

Check = Callable[[Any], bool]
_ANNOTATIONS = frozenset(("$id", "$schema", "title", "description"))
_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def _schema(name: str) -> dict:
    return json.loads(resources.read_data("schemas", "replies", f"{name}.json"))


@functools.lru_cache(maxsize=None)
def validator(name: str) -> Any:
    import jsonschema  # only where a reply is not plainly valid, or the conformance runner checks one
    return jsonschema.Draft202012Validator(_schema(name))


@functools.lru_cache(maxsize=None)
def fast_check(name: str) -> Check:
    """True only for a value jsonschema accepts under schema `name` (False: ask jsonschema)."""
    return _compile(_schema(name)) or (lambda value: False)


def problem(name: str, value: Any) -> str | None:
    """What is wrong with value under schema `name`, as `path: message`, or None."""
    if fast_check(name)(value):
        return None
    error = next(iter(validator(name).iter_errors(value)), None)
    if error is None:
        return None
    where = "/".join(map(str, error.absolute_path)) or "result"
    return f"{where}: {error.message}"


def _compile(schema: Any) -> Check | None:
    """A sound check of the keywords it knows; None where the schema uses any other."""
    if not isinstance(schema, dict) or not set(schema) <= _ANNOTATIONS | set(_KEYWORDS):
        return None
    checks = [_KEYWORDS[key](schema[key]) for key in schema if key in _KEYWORDS]
    if any(check is None for check in checks):
        return None
    return lambda value: all(check(value) for check in checks)  # type: ignore[misc]


def _type(types: Any) -> Check | None:
    names = [types] if isinstance(types, str) else types
    if not isinstance(names, list) or not all(name in _TYPES for name in names):
        return None
    tests = [_TYPES[name] for name in names]
    return lambda value: any(test(value) for test in tests)


def _required(names: list) -> Check:
    return lambda value: not isinstance(value, dict) or all(name in value for name in names)


def _properties(properties: dict) -> Check | None:
    checks = {name: _compile(sub) for name, sub in properties.items()}
    if any(check is None for check in checks.values()):
        return None
    return lambda value: not isinstance(value, dict) or all(
        check(value[name]) for name, check in checks.items() if name in value)  # type: ignore[misc]


def _items(schema: Any) -> Check | None:
    check = _compile(schema)
    if check is None:
        return None
    return lambda value: not isinstance(value, list) or all(check(item) for item in value)


def _enum(members: list) -> Check:
    strings = frozenset(m for m in members if isinstance(m, str))   # a string equals only a string
    return lambda value: isinstance(value, str) and value in strings


def _min_length(least: int) -> Check:
    return lambda value: not isinstance(value, str) or len(value) >= least


def _pattern(pattern: str) -> Check:
    search = re.compile(pattern).search
    return lambda value: not isinstance(value, str) or search(value) is not None


def _max_properties(most: int) -> Check:
    return lambda value: not isinstance(value, dict) or len(value) <= most


def _unique(flag: bool) -> Check:
    # Strings only: among them equality is plain; anything else goes to jsonschema.
    return lambda value: not flag or not isinstance(value, list) or (
        all(isinstance(item, str) for item in value) and len(set(value)) == len(value))


_KEYWORDS: dict[str, Callable[[Any], Check | None]] = {
    "type": _type, "required": _required, "properties": _properties, "items": _items, "enum": _enum,
    "minLength": _min_length, "pattern": _pattern, "maxProperties": _max_properties, "uniqueItems": _unique,
}
