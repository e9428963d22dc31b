"""packaging: packs as things that ship.

Owns `pack verify` and checksums (verify.py) and distribution (distribution.py: pip-installable
pack projects, offline bundles for Provider Agents). Imports authoring (the scaffold), runtime
and everything below it. Finding packs by name is language/catalog.py's: loading needs it.
"""
