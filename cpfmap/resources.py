"""cpfmap's own data files (schemas, bundled packs, scaffold), found with importlib.resources
so they are found the same way from a source checkout, an editable install and a wheel.

A file that is missing means a broken installation: the error says which file and what to do.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import InternalError

REINSTALL = "cpfmap is installed without its data files; reinstall it (pip install --force-reinstall cpfmap)"


def package_dir() -> Path:
    """The folder of the installed cpfmap package (a real folder: cpfmap is never zip-imported)."""
    return Path(str(resources.files("cpfmap")))


def data_path(*parts: str) -> Path:
    """The path of a data file or folder inside the package; InternalError when it is missing."""
    path = package_dir().joinpath(*parts)
    if not path.exists():
        raise InternalError(f"{'/'.join(parts)} not found in {package_dir()}: {REINSTALL}")
    return path


def read_data(*parts: str) -> str:
    return data_path(*parts).read_text(encoding="utf-8")


def bundled_packs_dir() -> Path:
    """The packs that ship inside cpfmap; an empty folder is allowed, a missing one is not."""
    return data_path("packs")
