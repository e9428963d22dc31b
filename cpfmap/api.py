"""The embedding API, for tooling and tests that drive cpfmap from Python (re-exported by the
`cpfmap` package):

    import cpfmap
    mapping = cpfmap.load("proxmox-ve:linked")             # file, pack folder or pack name
    with cpfmap.Provider(mapping, recording="inventory.yaml") as provider:
        provider.call("provider/connect", {"settings": {...}})
        reply = provider.call("guests/list")                # {"result": {...}} or {"error": {...}}

A reply is exactly what RAS would read on stdout (as a dict). Errors at load time raise
`MappingError` (with every finding); errors of a call are in the reply, never raised.

The top of the package beside cli/: it may import any stage; `Provider` is assembled in
runtime/provider.py, the same way `cpfmap serve` assembles it.
"""
from __future__ import annotations

from pathlib import Path

from cpfmap.errors import Finding
from cpfmap.language import catalog, loader
from cpfmap.language.model import CompiledMapping
from cpfmap.runtime.provider import Provider

__all__ = ["Provider", "check", "find_pack", "load", "packs", "verify_pack"]


def load(target: str | Path) -> CompiledMapping:
    """A compiled mapping from a mapping file, a pack folder or a pack reference (NAME or
    NAME:VARIANT); raises MappingError with every finding."""
    return loader.load(target)


def check(target: str | Path) -> list[Finding]:
    """What `cpfmap validate` reports for one mapping: errors and warnings."""
    return loader.check(target)


def packs() -> list[catalog.Pack]:
    """Every pack a name can find, in lookup order (the first of each name)."""
    return list(catalog.listed(catalog.discover()))


def find_pack(name_or_folder: str) -> catalog.Pack:
    return catalog.pack_at(name_or_folder)


def verify_pack(name_or_folder: str) -> list[Finding]:
    """What `cpfmap pack verify` reports; the pack is sound when no finding is an error."""
    from cpfmap.packaging import verify
    return verify.verify(catalog.pack_at(name_or_folder))


