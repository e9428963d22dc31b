"""The CPF reply schemas (schemas/replies/), compiled once: the engine checks its own
replies with them and the conformance runner checks any provider's."""
from __future__ import annotations

import functools
import json
from typing import Any

import jsonschema

from . import resources


@functools.lru_cache(maxsize=None)
def validator(name: str) -> jsonschema.protocols.Validator:
    schema = json.loads(resources.read_data("schemas", "replies", f"{name}.json"))
    return jsonschema.Draft202012Validator(schema)


def problem(name: str, value: Any) -> str | None:
    """What is wrong with value under schema `name`, as `path: message`, or None."""
    error = next(iter(validator(name).iter_errors(value)), None)
    if error is None:
        return None
    where = "/".join(map(str, error.absolute_path)) or "result"
    return f"{where}: {error.message}"
