"""Load a mapping: resolve, read YAML (with `extends`), validate against the schema,
compile every template and expression, and check it means something.

Everything that can be wrong with a mapping is reported here, before the first request,
as findings with file, line and column.
"""
from __future__ import annotations

import difflib
import hashlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from cpfmap import resources
from cpfmap.errors import Finding, InternalError, MappingError
from cpfmap.language.source import Source, json_path, load_yaml

DEFAULT_MAPPING = "mapping.yaml"


@lru_cache(maxsize=None)
def schema(name: str = "mapping.schema.json") -> dict:
    """A schema of schemas/; a missing one is a MappingError, so `serve` answers with it."""
    try:
        return json.loads(resources.read_data("schemas", name))
    except InternalError as exc:
        raise MappingError(Finding(exc.message, name)) from None


def resolve(target: str | Path) -> Path:
    """A mapping file, a pack folder (its default mapping) or a pack reference, NAME or
    NAME:VARIANT, looked up as catalog.py says."""
    from cpfmap.language import catalog
    path = Path(target)
    if catalog.is_pack_folder(path):
        path = catalog.folder_mapping(path)
    elif not path.is_file():
        path = catalog.mapping_for(str(target)) or path
    if not path.is_file():
        found = catalog.discover()
        hint = f"; packs: {', '.join(found.names())}" if found.names() else ""
        hint += "".join(f"; {problem}" for problem in found.problems)
        raise MappingError(Finding(f"no mapping at `{target}` (a file, a pack folder or a pack name{hint})",
                                   str(target)))
    return path


class Located:
    """Merged data from a chain of files; finds the file and line of any path."""

    def __init__(self, data: Any, sources: list[Source]) -> None:
        self.data = data
        self.sources = sources  # the most derived file first

    def finding(self, path: tuple, message: str, severity: str = "error") -> Finding:
        for source in self.sources:
            if tuple(path) in source.marks:
                return source.finding(path, message, severity)
        return self.sources[0].finding(path, message, severity)


def read(target: str | Path) -> Located:
    """YAML of the mapping and every file it extends, merged."""
    path = resolve(target)
    return _read(path, (), path.resolve().parent)


def _inside(path: Path, home: Path) -> bool:
    """`extends` may name a file in the folder tree of the mapping being loaded, or of a known pack."""
    from cpfmap.language import catalog
    if path.is_relative_to(home):
        return True
    return any(path.is_relative_to(pack.folder.resolve()) for pack in catalog.discover().packs)


def _read(path: Path, seen: tuple, home: Path) -> Located:
    data, source = load_yaml(path)
    if not isinstance(data, dict):
        raise MappingError(source.finding((), "a mapping is a YAML object (key: value lines)"))
    parent = data.get("extends")
    if parent is None:
        return Located(data, [source])
    if not isinstance(parent, str):
        raise MappingError(source.finding(("extends",), "`extends` names a mapping file"))
    base_path = (path.parent / parent).resolve()
    if not _inside(base_path, home):
        # Never read (nor echo in an error) a file outside the pack: `extends: /etc/passwd`.
        raise MappingError(source.finding(("extends",), f"`extends`: {parent} is outside the pack's folder "
                                          f"({home}) and every known pack; refused"))
    if base_path in seen or base_path == path.resolve():
        raise MappingError(source.finding(("extends",), f"`extends` loops back to {parent}"))
    if not base_path.is_file():
        raise MappingError(source.finding(("extends",), f"`extends`: no file {base_path}"))
    base = _read(base_path, seen + (path.resolve(),), home)
    merged = merge(base.data, {k: v for k, v in data.items() if k != "extends"})
    return Located(merged, [source] + base.sources)


def merge(base: dict, override: dict, depth: int = 2) -> dict:
    """Two levels deep: sections merge by entry, and an entry (a method, a fragment, a
    setting, a connection option) is replaced whole; null removes it."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif depth > 1 and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value, depth - 1)
        else:
            out[key] = value
    return out


# ------------------------------------------------------------- schema check

def schema_findings(located: Located, schema_name: str = "mapping.schema.json") -> list[Finding]:
    import jsonschema  # only where a mapping is checked: a serve process of a checked one skips it
    import jsonschema.exceptions
    validator = jsonschema.Draft202012Validator(schema(schema_name))
    findings = []
    for error in sorted(validator.iter_errors(located.data), key=lambda e: list(map(str, e.absolute_path))):
        if error.context:
            error = _best_branch(error)
        path = tuple(error.absolute_path)
        extra = _unknown_keys(error)
        for key in extra or [None]:
            where = path + (key, "<key>") if key is not None else path
            findings.append(located.finding(where, _explain(error, key)))
    return findings


def _best_branch(error: Any) -> Any:
    """Of a oneOf's failures, the one from a branch that takes the value's type: an extraction
    object with a bad option reports the option, not "is not of type 'string'"."""
    fitting = [e for e in error.context if e.validator != "type" or e.relative_path]
    import jsonschema.exceptions
    return jsonschema.exceptions.best_match(fitting or error.context)


def _unknown_keys(error: Any) -> list:
    if error.validator != "additionalProperties" or not isinstance(error.instance, dict):
        return []
    allowed = set(_properties(error))
    return [k for k in error.instance if k not in allowed]


def _properties(error: Any) -> list[str]:
    schema = error.schema if isinstance(error.schema, dict) else {}
    return list((schema.get("properties") or {}).keys())


def _explain(error: Any, key: str | None = None) -> str:
    where = json_path(tuple(error.absolute_path))
    if key is not None:
        allowed = _properties(error)
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"; did you mean `{close[0]}`?" if close else f"; allowed: {', '.join(allowed)}"
        return f"unknown key `{key}` in {where}{hint}"
    return f"{where}: {error.message}"


def load(target: str | Path):
    """The compiled mapping, or MappingError with every finding."""
    from cpfmap.language import loadcache
    from cpfmap.language.sections import compile_mapping
    path = resolve(target)
    entry = loadcache.key(path)
    kept = loadcache.recall(entry)
    if kept is not None:   # these exact files loaded without an error under this exact engine
        mapping, findings = compile_mapping(*kept)
        if not any(f.severity == "error" for f in findings):
            return mapping
    located = read(path)
    marker = _checked_marker(located)
    if marker is None or loadcache.read_entry(marker) is None:
        problems = schema_findings(located)
        if problems:
            raise MappingError(problems)
    mapping, findings = compile_mapping(located)
    errors = [f for f in findings if f.severity == "error"]
    if errors:
        raise MappingError(findings)
    _remember(marker)
    loadcache.remember(entry, located, mapping.templates.names)
    return mapping


# ---------------------------------------------- the schema check, remembered

def _checked_marker(located: Located) -> Path | None:
    """A file whose presence says: these exact mapping files passed the schema check of this
    exact engine and schema. Any change to either gives another name. None: no cache folder."""
    from cpfmap.language import loadcache
    from cpfmap.version import __version__
    folder = loadcache.trusted_folder()
    if folder is None or not all(source.digest for source in located.sources):
        return None
    digest = hashlib.sha256(f"{__version__}\0{loadcache.engine_digest()}\0".encode())
    digest.update(json.dumps(schema(), sort_keys=True).encode("utf-8"))
    for source in located.sources:
        digest.update(f"{source.file}\0{source.digest}\1".encode("utf-8"))
    return folder / f"checked-{digest.hexdigest()}"


def _remember(marker: Path | None) -> None:
    from cpfmap.language import loadcache
    if marker is None or marker.exists():
        return
    try:
        loadcache.write_entry(marker, b"")
    except OSError:
        pass  # a read-only home: check every time


def check(target: str | Path) -> list[Finding]:
    """Every finding (errors and warnings) for `validate`."""
    return checked(target)[1]


def checked(target: str | Path) -> tuple[Any, list[Finding]]:
    """(the compiled mapping or None when it has errors, every finding): one compilation for both."""
    from cpfmap.language.sections import compile_mapping
    try:
        located = read(target)
    except MappingError as exc:
        return None, exc.findings
    notes = [w for source in located.sources for w in source.warnings]
    problems = schema_findings(located)
    if problems:
        return None, problems + notes
    mapping, findings = compile_mapping(located)
    return (None if any(f.severity == "error" for f in findings) else mapping), findings + notes
