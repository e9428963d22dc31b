"""cpfmap's own data files, found the same way from a source checkout, an editable install and
a wheel: the JSON Schemas (`schemas/`) and the bundled packs (`mappings/`) sit at the top of a
source checkout, beside the package, and the build maps them into the package (`cpfmap/schemas`,
`cpfmap/mappings`) so an installed wheel carries them; the `new-pack` scaffold lives in
`cpfmap/authoring/scaffold`.

A file that is missing means a broken installation: the error says which file and what to do.
Imports only errors.py.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from cpfmap.errors import InternalError

REINSTALL = "cpfmap is installed without its data files; reinstall it (pip install --force-reinstall cpfmap)"
TOP_LEVEL = ("schemas", "mappings")  # folders of the source checkout that the wheel carries inside the package
SCAFFOLD = ("authoring", "scaffold")


def package_dir() -> Path:
    """The folder of the installed cpfmap package (a real folder: cpfmap is never zip-imported)."""
    return Path(str(resources.files("cpfmap")))


def _base(first: str) -> Path:
    """Where a data path starts: inside the package (a wheel), else the checkout beside it."""
    root = package_dir()
    if first in TOP_LEVEL and not (root / first).is_dir():
        return root.parent
    return root


def data_path(*parts: str) -> Path:
    """The path of a data file or folder; InternalError when it is missing."""
    path = _base(parts[0]).joinpath(*parts)
    if not path.exists():
        raise InternalError(f"{'/'.join(parts)} not found in {_base(parts[0])}: {REINSTALL}")
    return path


def read_data(*parts: str) -> str:
    return data_path(*parts).read_text(encoding="utf-8")


def bundled_packs_dir() -> Path:
    """The packs that ship inside cpfmap; an empty folder is allowed, a missing one is not."""
    return data_path("mappings")
