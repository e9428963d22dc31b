"""The escape hatch: Python a pack ships for what YAML cannot say, declared by its mapping.

    python:
      module: filters.py       # a path inside the folder of the mapping file that declares it
      filters: [vendor_sum]    # names the module's FILTERS dict provides as template filters

The module is loaded only from inside that folder (no absolute path, no `..`, no link that
leads out), under a private module name, when the mapping loads: `validate`, `serve` and
`pack verify` all load it, so an import error or a missing name is a mapping error with the
file and line. Its filters join the built-in ones but may not replace them. The checksum
file of a pack covers it like every other file; `packs show` lists it. Loading it runs its code:
install packs you trust (see the README's pack section).
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any, Callable

MAX_MODULE_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Extension:
    file: str                      # the module, resolved
    sha256: str
    filters: dict[str, Callable]
    functions: Any = None   # a Functions subclass with the module's JMESPath functions, or None
    signers: dict = field(default_factory=dict)   # AUTH: name -> sign(request, settings) -> headers


class ExtensionError(Exception):
    """A module that cannot be used; `key` names the mapping key at fault."""

    def __init__(self, message: str, key: str = "module") -> None:
        super().__init__(message)
        self.key = key


def module_path(folder: Path, declared: str) -> Path:
    """The module file `declared` names, which must stay inside `folder` (Windows or POSIX syntax)."""
    parts = PureWindowsPath(declared).parts if "\\" in declared else Path(declared).parts
    if not declared.strip() or PureWindowsPath(declared).is_absolute() or Path(declared).is_absolute() \
            or PureWindowsPath(declared).drive or ".." in parts:
        raise ExtensionError(f"python module `{declared}` must be a relative path inside the mapping's folder")
    home = folder.resolve()
    path = home.joinpath(*parts).resolve()
    if not path.is_relative_to(home):
        raise ExtensionError(f"python module `{declared}` leads outside the mapping's folder")
    if path.suffix != ".py" or not path.is_file():
        raise ExtensionError(f"python module `{declared}`: no such .py file in {home}")
    if path.stat().st_size > MAX_MODULE_BYTES:
        raise ExtensionError(f"python module `{declared}` is larger than {MAX_MODULE_BYTES} bytes")
    return path


def load(folder: Path, raw: dict, reserved: set[str]) -> Extension:
    """Import the declared module and take the filters the mapping names from it."""
    path = module_path(folder, str(raw.get("module", "")))
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    module = _import(path, digest)
    provided = getattr(module, "FILTERS", None)
    wanted = [str(n) for n in raw.get("filters") or []]
    if wanted and not isinstance(provided, dict):
        raise ExtensionError(f"{path.name} has no FILTERS dict (name -> function)", "filters")
    filters = {}
    for name in wanted:
        if name in reserved:
            raise ExtensionError(f"filter `{name}` is built in; a pack's filter may not replace it", "filters")
        if not callable(provided.get(name)):
            raise ExtensionError(f"{path.name} provides no filter `{name}` (FILTERS has: "
                                 f"{', '.join(sorted(map(str, provided))) or 'nothing'})", "filters")
        filters[name] = provided[name]
    signers = _named(module, path, "AUTH", [str(n) for n in raw.get("auth") or []], "auth")
    return Extension(str(path), digest, filters, _functions(module, path, [str(n) for n in raw.get("functions") or []]),
                     signers)


def _named(module: Any, path: Path, table: str, wanted: list[str], key: str) -> dict:
    """The callables `wanted` from the module's dict `table`."""
    provided = getattr(module, table, None)
    if wanted and not isinstance(provided, dict):
        raise ExtensionError(f"{path.name} has no {table} dict (name -> function)", key)
    missing = [n for n in wanted if not callable(provided.get(n))]
    if missing:
        raise ExtensionError(f"{path.name} provides no {table} entry `{missing[0]}` ({table} has: "
                             f"{', '.join(sorted(map(str, provided))) or 'nothing'})", key)
    return {n: provided[n] for n in wanted}


JMESPATH_TYPES = {"string", "number", "boolean", "array", "object", "null", "any", "expref",
                  "array-string", "array-number"}


def _functions(module: Any, path: Path, wanted: list[str]) -> Any:
    """A Functions subclass with the module's FUNCTIONS (name -> (function, [argument types]))."""
    if not wanted:
        return None
    import jmespath.functions

    from cpfmap.language.expressions import Functions, known_functions
    provided = getattr(module, "FUNCTIONS", None)
    if not isinstance(provided, dict):
        raise ExtensionError(f"{path.name} has no FUNCTIONS dict (name -> (function, [argument types]))", "functions")
    members = {}
    for name in wanted:
        entry = provided.get(name)
        if name in known_functions():
            raise ExtensionError(f"JMESPath function `{name}` is built in; a pack's may not replace it", "functions")
        if not (isinstance(entry, tuple) and len(entry) == 2 and callable(entry[0])
                and all(t in JMESPATH_TYPES for t in entry[1])):
            raise ExtensionError(f"{path.name}: FUNCTIONS[{name!r}] must be (function, [argument types]) with types "
                                 f"from {', '.join(sorted(JMESPATH_TYPES))}", "functions")
        func, types = entry
        members["_func_" + name] = jmespath.functions.signature(*({"types": [t] if t != "any" else []}
                                                                  for t in types))(_method(func))
    return type("PackFunctions", (Functions,), members)


def _method(func: Callable) -> Callable:
    def call(self: Any, *args: Any) -> Any:
        return func(*args)
    call.__doc__ = func.__doc__
    return call


def _import(path: Path, digest: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"cpfmap_pack_{path.stem}_{digest[:12]}", path)
    if spec is None or spec.loader is None:
        raise ExtensionError(f"{path.name} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # under its private name, so dataclasses and pickling work in it
    try:
        spec.loader.exec_module(module)
    except Exception as exc:   # the pack's code: any failure is a finding, never a traceback
        sys.modules.pop(spec.name, None)
        raise ExtensionError(f"{path.name} failed to load: {type(exc).__name__}: {exc}") from None
    return module


def declared_in(located: Any) -> Path:
    """The folder of the mapping file that declares `python` (the most derived one by default)."""
    for source in located.sources:
        if ("python",) in source.marks:
            return Path(source.file).resolve().parent
    return Path(located.sources[0].file).resolve().parent
