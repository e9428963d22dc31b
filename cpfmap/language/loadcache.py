"""The parsed mapping, remembered between processes: a serve process of an unchanged mapping
starts without parsing its YAML or its templates again.

One file per mapping in the cache folder (`CPFMAP_CACHE_DIR`, default `~/.cache/cpfmap` or
`%LOCALAPPDATA%\\cpfmap`): the merged YAML data with its line marks (spec.Located) and the
names each template reads, kept only after the mapping loaded without an error. Its name is
a hash of the engine (its version, the Python version, and the bytes of every engine source
file and schema) and of the mapping file; inside, the hash of every file it extends. Any
change gives another name or a mismatch: the mapping is then read, checked and compiled as
if nothing were kept. A file that cannot be read or unpickled, holds anything but plain
data and these few classes, or does not match is ignored; files are written to a temporary
name and renamed, so processes starting together never read half a file.
"""
from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import sys
import tempfile
from pathlib import Path
from typing import Any

from cpfmap import resources
from cpfmap.errors import CpfmapError
from cpfmap.language.source import read_text
from cpfmap.version import __version__

FORMAT = 1
_ALLOWED = {("cpfmap.language.loader", "Located"), ("cpfmap.language.source", "Source"), ("cpfmap.errors", "Finding"),
            ("builtins", "frozenset"), ("builtins", "set"), ("datetime", "datetime"), ("datetime", "date"),
            ("datetime", "timezone"), ("datetime", "timedelta")}


def folder() -> Path | None:
    chosen = os.environ.get("CPFMAP_CACHE_DIR")
    if chosen:
        return Path(chosen)
    base = os.environ.get("LOCALAPPDATA") or os.environ.get("XDG_CACHE_HOME") or (
        str(Path.home() / ".cache") if Path.home().is_dir() else None)
    return Path(base) / "cpfmap" if base else None


@functools.lru_cache(maxsize=1)
def engine_digest() -> str:
    digest = hashlib.sha256(f"{FORMAT}\0{__version__}\0{sys.version}\0".encode())
    root = resources.package_dir()
    # every module of every stage (a file moved into a subpackage still counts), and the schemas
    files = sorted([*root.rglob("*.py"), *resources.data_path("schemas").rglob("*.json")])
    for path in files:
        digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0" + path.read_bytes() + b"\1")
    return digest.hexdigest()


def key(path: Path) -> Path | None:
    """Where what loading this mapping parses is kept: a name from the engine and the mapping
    file's bytes as they are now (None: no cache folder, or the file cannot be read)."""
    where = folder()
    if where is None:
        return None
    try:
        data = path.read_bytes()
    except OSError:
        return None
    name = hashlib.sha256(f"{engine_digest()}\0{path.resolve()}\0".encode() + data).hexdigest()
    return where / f"mapping-{name}.pickle"


def _text_digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not kept in a mapping cache")
        return super().find_class(module, name)


def recall(entry: Path | None) -> tuple[Any, dict] | None:
    """(located, template names) kept for this exact mapping and engine, or None."""
    if entry is None:
        return None
    try:
        kept = _Unpickler(io.BytesIO(entry.read_bytes())).load()
    except Exception:   # noqa: BLE001 - missing, damaged or foreign: only a missed cache
        return None
    if not isinstance(kept, dict) or kept.get("format") != FORMAT or not _unchanged(kept.get("files")):
        return None
    return kept["located"], kept["names"]


def _unchanged(files: Any) -> bool:
    """Every file the mapping was read from still has the text it had (the file, then what it extends)."""
    if not isinstance(files, list):
        return False
    try:
        return all(_text_digest(read_text(Path(name)).split("\n")) == digest for name, digest in files)
    except (CpfmapError, TypeError, ValueError):
        return False


def remember(entry: Path | None, located: Any, names: dict) -> None:
    """Keep what loading the mapping parsed (best effort: a read-only home keeps nothing)."""
    if entry is None:
        return
    try:
        files = [(source.file, _text_digest(source.lines)) for source in located.sources]
        data = pickle.dumps({"format": FORMAT, "located": located, "names": names, "files": files},
                            protocol=pickle.HIGHEST_PROTOCOL)
        entry.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".mapping-", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temporary, entry)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        pass
