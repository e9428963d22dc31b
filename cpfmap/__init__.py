"""cpfmap: a declarative connector engine for the Parallels RAS Custom Provider Framework.

The embedding API (see api.py): `load`, `check`, `Provider` (one CPF call at a time against a
transport, a recording or the live backend), `packs`, `find_pack`, `verify_pack`, and the
types they use. Imported on first use, so `import cpfmap` stays cheap for the command line.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .api import Provider, check, find_pack, load, packs, verify_pack
    from .catalog import Pack, Variant
    from .errors import CpfmapError, Finding, MappingError
    from .model import CompiledMapping
    from .transport import FunctionTransport, HttpRequest, HttpResponse, Transport

_EXPORTS = {
    "Provider": "api", "check": "api", "find_pack": "api", "load": "api", "packs": "api", "verify_pack": "api",
    "Pack": "catalog", "Variant": "catalog", "CpfmapError": "errors", "Finding": "errors",
    "MappingError": "errors", "CompiledMapping": "model", "FunctionTransport": "transport", "HttpRequest": "transport",
    "HttpResponse": "transport", "Transport": "transport",
}
__all__ = ["CompiledMapping", "CpfmapError", "Finding", "FunctionTransport", "HttpRequest", "HttpResponse",
           "MappingError", "Pack", "Provider", "Transport", "Variant", "__version__", "check", "find_pack", "load",
           "packs", "verify_pack"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'cpfmap' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
