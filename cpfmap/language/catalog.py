"""Packs: where they are found, what their manifest (pack.yaml) says, which mapping a
variant is.

A pack is a folder with a default `mapping.yaml`, optional variant mappings, a README,
`recordings/` and a manifest `pack.yaml` (schema: schemas/pack.schema.json). A pack name is
looked up, first match wins, in:

1. the folders listed in the CPFMAP_PACKS environment variable (os.pathsep-separated), each
   holding pack folders;
2. installed distributions declaring an entry point in the group `cpfmap.packs` (name: the
   pack name; value: an importable package whose folder is the pack folder);
3. the packs bundled with cpfmap.

An explicit path (a mapping file or a pack folder) never goes through this lookup. A name found
twice is reported (`cpfmap packs`, and a warning when it is served), never silently shadowed.
`NAME:VARIANT` names a variant (`proxmox-ve:linked`); the bare name is the `default` variant.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from cpfmap import resources
from cpfmap.errors import ConfigError, Finding, InternalError, MappingError
from cpfmap.language.source import load_yaml

ENTRY_POINT_GROUP = "cpfmap.packs"
ENV = "CPFMAP_PACKS"
MANIFEST = "pack.yaml"
DEFAULT_MAPPING = "mapping.yaml"
DEFAULT_VARIANT = "default"
REFERENCE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9-]{1,40})(?::(?P<variant>[a-z0-9][a-z0-9-]{0,40}))?$")
log = logging.getLogger("cpfmap")


@dataclass(frozen=True)
class Variant:
    name: str
    mapping: Path
    level: str | None  # as the manifest advertises it; None without a manifest
    recordings: Path


@dataclass(frozen=True)
class Pack:
    name: str
    folder: Path
    origin: str  # "path", "CPFMAP_PACKS", "entry point (DIST)" or "bundled"

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def manifest(self) -> dict[str, Any] | None:
        """The manifest's data, None when the pack has none; MappingError when it is not YAML."""
        if not self.manifest_path.is_file():
            return None
        data, _ = load_yaml(self.manifest_path)
        return data if isinstance(data, dict) else {}

    def variants(self) -> dict[str, Variant]:
        """From the manifest; without one: mapping.yaml is `default`, every other *.yaml a variant."""
        manifest = self.manifest()
        if manifest is not None and isinstance(manifest.get("variants"), dict):
            return {name: self._variant(name, spec) for name, spec in manifest["variants"].items()
                    if isinstance(spec, dict)}
        files = sorted((p for p in self.folder.glob("*.yaml") if p.name != MANIFEST),
                       key=lambda p: (p.name != DEFAULT_MAPPING, p.name))
        names = [DEFAULT_VARIANT if p.name == DEFAULT_MAPPING else p.stem for p in files]
        return {name: self._variant(name, {"mapping": p.name}) for name, p in zip(names, files)}

    def _variant(self, name: str, spec: Mapping[str, Any]) -> Variant:
        recordings = spec.get("recordings") or f"recordings/{name}"
        return Variant(name, self.inside(spec.get("mapping", DEFAULT_MAPPING), f"variant {name}: mapping"),
                       spec.get("level"), self.inside(recordings, f"variant {name}: recordings"))

    def inside(self, relative: object, what: str) -> Path:
        """A path the manifest names, confined to the pack folder on every OS's path syntax: no
        absolute path, `..`, drive (`C:\\`, `C:x`) or UNC (`\\\\server\\share`) path, and no link out."""
        text = str(relative)
        windows, posix = PureWindowsPath(text), PurePosixPath(text)
        if not text or windows.anchor or windows.drive or posix.is_absolute() or ".." in windows.parts \
                or "\0" in text:
            raise MappingError(Finding(f"{what} `{text}` is not a path inside the pack folder; refused",
                                       str(self.manifest_path)))
        path = self.folder.joinpath(*windows.parts)
        if not path.resolve().is_relative_to(self.folder.resolve()):
            raise MappingError(Finding(f"{what} `{text}` leads out of the pack folder (a link); refused",
                                       str(self.manifest_path)))
        return path

    def variant(self, name: str | None) -> Variant:
        variants = self.variants()
        chosen = variants.get(name or DEFAULT_VARIANT)
        if chosen is None:
            raise MappingError(Finding(f"pack {self.name} has no variant `{name or DEFAULT_VARIANT}`; "
                                       f"variants: {', '.join(variants) or 'none'}", str(self.folder)))
        return chosen


@dataclass
class Catalog:
    """Every pack found, in lookup order (duplicates included), and what could not be read."""

    packs: list[Pack] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def find(self, name: str) -> Pack | None:
        return next((p for p in self.packs if p.name == name), None)

    def shadowed(self, pack: Pack) -> list[Pack]:
        """The packs of the same name that `pack` hides (later in lookup order)."""
        same = [p for p in self.packs if p.name == pack.name]
        return same[same.index(pack) + 1:] if pack in same else []

    def names(self) -> list[str]:
        return sorted({p.name for p in self.packs})


def discover(environ: Mapping[str, str] | None = None) -> Catalog:
    catalog = Catalog()
    environ = os.environ if environ is None else environ
    for folder in filter(None, environ.get(ENV, "").split(os.pathsep)):
        catalog.packs += _packs_in(Path(folder), ENV, catalog.problems)
    catalog.packs += _entry_point_packs(catalog.problems)
    try:
        catalog.packs += _packs_in(resources.bundled_packs_dir(), "bundled", catalog.problems)
    except InternalError as exc:
        catalog.problems.append(exc.message)
    return catalog


def _packs_in(root: Path, origin: str, problems: list[str]) -> list[Pack]:
    if not root.is_dir():
        problems.append(f"{origin}: {root} is not a folder")
        return []
    return [Pack(p.name, p, origin) for p in sorted(root.iterdir()) if is_pack_folder(p)]


def is_pack_folder(path: Path) -> bool:
    return path.is_dir() and ((path / DEFAULT_MAPPING).is_file() or (path / MANIFEST).is_file())


def _entry_point_packs(problems: list[str]) -> Iterator[Pack]:
    """Packs of installed distributions, read from their metadata: no pack's code runs, and one
    broken entry is reported and skipped."""
    try:
        found = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as exc:  # noqa: BLE001 - a broken distribution's metadata breaks no pack
        problems.append(f"entry points {ENTRY_POINT_GROUP}: cannot be read ({type(exc).__name__}: {exc})")
        return
    for ep in found:
        try:
            dist = ep.dist.name if ep.dist is not None else "?"
            folder = _package_folder(ep)
        except Exception as exc:  # noqa: BLE001 - as above
            dist, folder = f"?: {type(exc).__name__}: {exc}", None
        if folder is None or not is_pack_folder(folder):
            problems.append(f"entry point {ep.name} = {ep.value} ({dist}): not an importable package holding a pack")
            continue
        yield Pack(ep.name, folder, f"entry point ({dist})")


def _package_folder(ep: importlib.metadata.EntryPoint) -> Path | None:
    """The folder of an entry point's package, found without importing it (nor its parents):
    from the distribution's file list (RECORD), else from the top-level name's spec alone,
    which finds a module without running it."""
    parts = ep.value.split(":")[0].strip().split(".")
    if not all(part.isidentifier() for part in parts):
        return None
    files = (ep.dist.files or []) if ep.dist is not None else []
    if any(tuple(f.parts[:len(parts)]) == tuple(parts) and len(f.parts) > len(parts) for f in files):
        folder = Path(str(ep.dist.locate_file("/".join(parts))))
        if folder.is_dir():
            return folder
    spec = importlib.util.find_spec(parts[0])
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    folder = Path(locations[0]).joinpath(*parts[1:]) if locations else None
    return folder if folder is not None and folder.is_dir() else None


def parse_reference(text: str) -> tuple[str, str | None] | None:
    """`NAME` or `NAME:VARIANT` as (name, variant); None if text cannot be a pack reference."""
    match = REFERENCE.match(text)
    return (match["name"], match["variant"]) if match else None


def mapping_for(reference: str, catalog: Catalog | None = None) -> Path | None:
    """The mapping file a pack reference names; None when no pack has that name."""
    parsed = parse_reference(reference)
    if parsed is None:
        return None
    catalog = catalog or discover()
    pack = catalog.find(parsed[0])
    if pack is None:
        return None
    for hidden in catalog.shadowed(pack):
        log.warning("pack %s is found twice: using %s (%s), not %s (%s)", pack.name, pack.folder, pack.origin,
                    hidden.folder, hidden.origin)
    return pack.variant(parsed[1]).mapping


def folder_mapping(folder: Path) -> Path:
    """An explicit pack folder: its default variant's mapping."""
    return Pack(folder.name, folder, "path").variant(None).mapping if (folder / MANIFEST).is_file() \
        else folder / DEFAULT_MAPPING


def pack_at(target: str, catalog: Catalog | None = None) -> Pack:
    """A pack by folder path or name (for `packs show` and `pack verify`)."""
    path = Path(target)
    if is_pack_folder(path):
        folder = path.resolve()
        manifest = Pack(folder.name, folder, "path").manifest() or {}
        name = manifest.get("name")
        return Pack(name if isinstance(name, str) else folder.name, folder, "path")
    catalog = catalog or discover()
    pack = catalog.find(target)
    if pack is None:
        raise ConfigError(f"no pack `{target}` (a pack folder or one of: {', '.join(catalog.names()) or 'none'})")
    return pack


def describe(pack: Pack, catalog: Catalog) -> dict[str, Any]:
    """One pack as `cpfmap packs` lists it; a manifest that cannot be read is a `problem`."""
    entry: dict[str, Any] = {"name": pack.name, "version": None, "origin": pack.origin, "folder": str(pack.folder),
                             "manifest": pack.manifest_path.is_file(), "variants": {}, "provenance": [],
                             "shadows": [f"{p.folder} ({p.origin})" for p in catalog.shadowed(pack)]}
    try:
        manifest = pack.manifest() or {}
        entry["variants"] = {v.name: v.level for v in pack.variants().values()}
    except MappingError as exc:
        return {**entry, "problem": exc.message}
    provenance = manifest.get("provenance")
    entry["version"] = manifest.get("version")
    entry["provenance"] = [_provenance(p) for p in provenance if isinstance(p, dict)] \
        if isinstance(provenance, list) else []
    return entry


def _provenance(entry: Mapping[str, Any]) -> str:
    return " ".join(str(entry[k]) for k in ("kind", "source", "version") if entry.get(k))


def listed(catalog: Catalog) -> Iterable[Pack]:
    """The packs a name finds (the first of each name), in lookup order."""
    seen: set[str] = set()
    for pack in catalog.packs:
        if pack.name not in seen:
            seen.add(pack.name)
            yield pack
