"""The parsed mapping, remembered between processes: a serve process of an unchanged mapping
starts without parsing its YAML or its templates again.

One file per mapping in the cache folder (`CPFMAP_CACHE_DIR`, default `~/.cache/cpfmap` or
`%LOCALAPPDATA%\\cpfmap`): the merged YAML data with its line marks (spec.Located) and the
names each template reads, kept only after the mapping loaded without an error. Its name is
a hash of the engine (its version, the Python version, the versions of PyYAML, Jinja2 and
jmespath, and the bytes of every engine source file and schema) and of the mapping file's
exact bytes; inside, the hash of the exact bytes of every file it extends. Any change gives
another name or a mismatch: the mapping is then read, checked and compiled as if nothing
were kept.

A cache hit skips the schema and template checks, so whoever can write the cache decides
what runs: an entry is used only when the folder and the file belong to the user running
cpfmap and nobody else can write them (POSIX: owner and mode bits from os.stat; Windows:
the folder is inside the user's own profile, %LOCALAPPDATA% or %USERPROFILE%), and the
entry is a regular file (not a link, FIFO or device), read with a bound. Anything else is
ignored and logged. A file that cannot be read or unpickled, holds anything but plain data
and these few classes, or does not match is ignored; files are written to a temporary name
and renamed, so processes starting together never read half a file.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import logging
import os
import pickle
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

from cpfmap import resources
from cpfmap.language.source import MAX_BYTES, TooLarge, read_bytes
from cpfmap.version import __version__

FORMAT = 2
MAX_ENTRY_BYTES = 64 * 1024 * 1024   # a kept mapping is a few MiB at most (a mapping is <= 2 MiB of YAML)
LIBRARIES = ("PyYAML", "Jinja2", "jmespath")   # what parses and compiles a mapping: an upgrade invalidates
_ALLOWED = {("cpfmap.language.loader", "Located"), ("cpfmap.language.source", "Source"), ("cpfmap.errors", "Finding"),
            ("builtins", "frozenset"), ("builtins", "set"), ("datetime", "datetime"), ("datetime", "date"),
            ("datetime", "timezone"), ("datetime", "timedelta")}
log = logging.getLogger("cpfmap")
WINDOWS = os.name == "nt"


def folder() -> Path | None:
    chosen = os.environ.get("CPFMAP_CACHE_DIR")
    if chosen:
        return Path(chosen)
    base = os.environ.get("LOCALAPPDATA") or os.environ.get("XDG_CACHE_HOME") or (
        str(Path.home() / ".cache") if Path.home().is_dir() else None)
    return Path(base) / "cpfmap" if base else None


def trusted_folder() -> Path | None:
    """The cache folder if only this user can have written in it, else None (logged)."""
    where = folder()
    if where is None or not where.exists():
        return where   # nothing kept yet: remember() creates it owner-only
    problem = _untrusted(where, directory=True)
    if problem:
        log.warning("mapping cache %s ignored: %s", where, problem)
        return None
    return where


def _untrusted(path: Path, directory: bool) -> str | None:
    """Why a cache folder or file may hold what someone else wrote; None when it cannot."""
    try:
        status = path.lstat()
    except OSError as exc:
        return f"cannot stat it ({exc.strerror or exc})"
    if stat.S_ISLNK(status.st_mode) and not directory:
        return "it is a link"
    if directory:
        status = path.stat()   # a folder may be reached through a link the user made (~/.cache)
    if directory and not stat.S_ISDIR(status.st_mode):
        return "it is not a folder"
    if not directory and not stat.S_ISREG(status.st_mode):
        return "it is not a regular file"
    return _foreign_windows(path) if WINDOWS else _foreign_posix(status)


def _foreign_posix(status: os.stat_result) -> str | None:
    if status.st_uid != os.getuid():
        return f"it belongs to user id {status.st_uid}, not to this user ({os.getuid()})"
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "others can write it"
    return None


def _foreign_windows(path: Path) -> str | None:
    """Windows has no owner bits in os.stat: only a folder in the user's own profile is trusted
    (ACLs there give other ordinary users no access)."""
    homes = [Path(os.environ[name]) for name in ("LOCALAPPDATA", "USERPROFILE") if os.environ.get(name)]
    resolved = path.resolve()
    if any(resolved.is_relative_to(home.resolve()) for home in homes):
        return None
    return "on Windows only a folder inside the user's own profile (%LOCALAPPDATA%) is trusted"


def _versions() -> str:
    found = []
    for name in LIBRARIES:
        try:
            found.append(f"{name}={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name}=?")
    return ",".join(found)


@functools.lru_cache(maxsize=1)
def engine_digest() -> str:
    digest = hashlib.sha256(f"{FORMAT}\0{__version__}\0{sys.version}\0{_versions()}\0".encode())
    root = resources.package_dir()
    # every module of every stage (a file moved into a subpackage still counts), and the schemas
    files = sorted([*root.rglob("*.py"), *resources.data_path("schemas").rglob("*.json")])
    for path in files:
        digest.update(path.relative_to(root.parent).as_posix().encode() + b"\0" + path.read_bytes() + b"\1")
    return digest.hexdigest()


def file_digest(path: Path) -> str | None:
    """sha256 of a mapping file's exact bytes; None if it cannot be read within the mapping limit."""
    try:
        return hashlib.sha256(read_bytes(path, MAX_BYTES["mapping"])).hexdigest()
    except (OSError, TooLarge):
        return None


def key(path: Path) -> Path | None:
    """Where what loading this mapping parses is kept: a name from the engine and the mapping
    file's bytes as they are now (None: no trusted cache folder, or the file cannot be read)."""
    where = trusted_folder()
    data = file_digest(path) if where is not None else None
    if data is None:
        return None
    name = hashlib.sha256(f"{engine_digest()}\0{path.resolve()}\0{data}".encode()).hexdigest()
    return where / f"mapping-{name}.pickle"


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not kept in a mapping cache")
        return super().find_class(module, name)


def recall(entry: Path | None) -> tuple[Any, dict] | None:
    """(located, template names) kept for this exact mapping and engine, or None."""
    if entry is None:
        return None
    data = read_entry(entry)
    if data is None:
        return None
    try:
        kept = _Unpickler(io.BytesIO(data)).load()
    except Exception:   # noqa: BLE001 - damaged or foreign: only a missed cache
        return None
    if not isinstance(kept, dict) or kept.get("format") != FORMAT or not _unchanged(kept.get("files")):
        return None
    return kept["located"], kept["names"]


def read_entry(entry: Path) -> bytes | None:
    """A kept file's bytes if it is a regular file only this user can have written, within a bound;
    None (logged unless it is simply missing) otherwise. Never opens a FIFO, device or link."""
    if not entry.exists() and not entry.is_symlink():
        return None
    problem = _untrusted(entry, directory=False)
    if problem is None:
        try:
            return _read_regular(entry)
        except (OSError, TooLarge) as exc:
            problem = f"cannot read it within {MAX_ENTRY_BYTES} bytes ({exc})"
    log.warning("mapping cache entry %s ignored: %s", entry, problem)
    return None


def _read_regular(entry: Path) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    handle = os.open(entry, flags)   # O_NONBLOCK: a FIFO swapped in after the check does not hang the open
    with os.fdopen(handle, "rb") as stream:
        if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            raise OSError("not a regular file")
        data = stream.read(MAX_ENTRY_BYTES + 1)
    if len(data) > MAX_ENTRY_BYTES:
        raise TooLarge(MAX_ENTRY_BYTES)
    return data


def _unchanged(files: Any) -> bool:
    """Every file the mapping was read from still has the exact bytes it had (the file, then what it extends)."""
    if not isinstance(files, list):
        return False
    try:
        return all(isinstance(digest, str) and file_digest(Path(name)) == digest for name, digest in files)
    except (TypeError, ValueError):
        return False


def remember(entry: Path | None, located: Any, names: dict) -> None:
    """Keep what loading the mapping parsed (best effort: a read-only home keeps nothing)."""
    if entry is None:
        return
    try:
        files = [(source.file, source.digest) for source in located.sources]
        if not all(digest for _, digest in files):
            return
        data = pickle.dumps({"format": FORMAT, "located": located, "names": names, "files": files},
                            protocol=pickle.HIGHEST_PROTOCOL)
        write_entry(entry, data)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        pass


def write_entry(entry: Path, data: bytes) -> None:
    """Write a kept file owner-only, in an owner-only folder, atomically (temporary name, then rename)."""
    entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if _untrusted(entry.parent, directory=True):
        return
    handle, temporary = tempfile.mkstemp(dir=entry.parent, prefix=".mapping-", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, entry)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
