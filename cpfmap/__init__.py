"""cpfmap: a declarative connector engine for the Parallels RAS Custom Provider Framework.

The embedding API (see api.py): `load`, `check`, `Provider` (one CPF call at a time against a
transport, a recording or the live backend), `packs`, `find_pack`, `verify_pack`, and the
types they use. Imported on first use, so `import cpfmap` stays cheap for the command line.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from cpfmap.version import __version__

if TYPE_CHECKING:
    from cpfmap.api import Provider, check, find_pack, load, packs, verify_pack
    from cpfmap.errors import CpfmapError, Finding, MappingError
    from cpfmap.http.transport import FunctionTransport, HttpRequest, HttpResponse, Transport
    from cpfmap.language.catalog import Pack, Variant
    from cpfmap.language.model import CompiledMapping

_EXPORTS = {
    "Provider": "api", "check": "api", "find_pack": "api", "load": "api", "packs": "api", "verify_pack": "api",
    "Pack": "language.catalog", "Variant": "language.catalog", "CpfmapError": "errors", "Finding": "errors",
    "MappingError": "errors", "CompiledMapping": "language.model", "FunctionTransport": "http.transport",
    "HttpRequest": "http.transport", "HttpResponse": "http.transport", "Transport": "http.transport",
}
__all__ = ["CompiledMapping", "CpfmapError", "Finding", "FunctionTransport", "HttpRequest", "HttpResponse",
           "MappingError", "Pack", "Provider", "Transport", "Variant", "__version__", "check", "find_pack", "load",
           "packs", "verify_pack"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cpfmap' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
