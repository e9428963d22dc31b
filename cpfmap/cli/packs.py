"""The distribution commands of the command line: `packs` (list, show, verify, checksums; also
spelled `pack`), `bundle`, and `new-pack --project`. commands.py registers them."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from cpfmap.errors import CpfmapError
from cpfmap.language import catalog
from cpfmap.language.source import read_text
from cpfmap.packaging import distribution

if TYPE_CHECKING:
    from cpfmap.cli.streams import Streams


def add_commands(sub: Any) -> None:
    """Add `packs` and `bundle` to the command line's sub-parsers."""
    packs = sub.add_parser("packs", aliases=["pack"], help="list packs; show, verify or checksum one",
                           description="packs [list] | packs show NAME | pack verify PACK | pack checksums FOLDER")
    packs.add_argument("--format", choices=("text", "json"), default="text", help="listing format")
    actions = packs.add_subparsers(dest="action", metavar="ACTION", help="list (the default), show, verify, checksums")
    listing = actions.add_parser("list", help="every pack found, in lookup order (the default)")
    listing.add_argument("--format", choices=("text", "json"), default=argparse.SUPPRESS, help="listing format")
    show = actions.add_parser("show", help="a pack's manifest and README path")
    show.add_argument("pack", help="pack name or folder")
    verify = actions.add_parser("verify", help="manifest, every variant, every recording, checksums")
    verify.add_argument("pack", help="pack name or folder")
    verify.add_argument("--format", choices=("text", "json"), default=argparse.SUPPRESS,
                        help="text: file:line:column: severity: message; json: the findings")
    sums = actions.add_parser("checksums", help="write the pack's SHA256SUMS (checked by verify)")
    sums.add_argument("pack", help="pack folder")
    bundle = sub.add_parser("bundle", help="an offline install bundle for Provider Agents")
    bundle.add_argument("--out", type=Path, help="folder to write (default: cpfmap-bundle-PLATFORM)")
    bundle.add_argument("--platform", default="windows-x64", choices=sorted(distribution.PLATFORMS),
                        help="the agents' platform (default windows-x64)")
    bundle.add_argument("--python", action="append", dest="pythons", metavar="X.Y",
                        help=f"Python version to fetch wheels for (repeat; default {', '.join(distribution.PYTHONS)})")
    bundle.add_argument("--pack", action="append", dest="packs", default=[], metavar="NAME",
                        help="pack to include (name or folder; repeat); bundled packs are in cpfmap's wheel already")
    bundle.add_argument("--wheel", type=Path, help="cpfmap's wheel (default: built from the source checkout)")
    bundle.add_argument("--find-links", action="append", default=[], metavar="DIR",
                        help="also look for wheels here (passed to pip download)")
    bundle.add_argument("--no-index", action="store_true", help="fetch from --find-links only, not the package index")
    bundle.add_argument("--zip", action="store_true", help="write OUT.zip instead of a folder")


def cmd_packs(args: argparse.Namespace, streams: Streams, **_: object) -> int:
    action = getattr(args, "action", None) or "list"
    return PACK_ACTIONS[action](args, streams)


def _list(args: argparse.Namespace, streams: Streams) -> int:
    found = catalog.discover()
    described = [catalog.describe(pack, found) for pack in catalog.listed(found)]
    if args.format == "json":
        streams.out(json.dumps({"packs": described, "problems": found.problems}, indent=2) + "\n")
        return 0
    for entry in described:
        streams.out(_pack_lines(entry))
    for problem in found.problems:
        streams.out(f"problem: {problem}\n")
    return 0


def _pack_lines(entry: dict[str, Any]) -> str:
    variants = ", ".join(f"{name} ({level or 'level not declared'})" for name, level in entry["variants"].items())
    version = entry["version"] or ("(no version)" if entry["manifest"] else "(no pack.yaml)")
    lines = [f"{entry['name']} {version}  from {entry['origin']}  {entry['folder']}",
             f"  variants: {variants or 'none'}",
             f"  provenance: {'; '.join(entry['provenance']) or 'not declared'}"]
    lines += [f"  also found (hidden by this one): {where}" for where in entry["shadows"]]
    lines += [f"  problem: {entry['problem']}"] if "problem" in entry else []
    return "\n".join(lines) + "\n"


def _show(args: argparse.Namespace, streams: Streams) -> int:
    pack = catalog.pack_at(args.pack)
    streams.out(f"# {pack.name} from {pack.origin}: {pack.folder}\n")
    readme = pack.folder / "README.md"
    streams.out(f"# README: {readme if readme.is_file() else 'none'}\n")
    if not pack.manifest_path.is_file():
        streams.out(f"# no {catalog.MANIFEST}; variants: {', '.join(pack.variants())}\n")
        return 0
    streams.out(read_text(pack.manifest_path))   # bounded as a mapping is
    for line in _python_modules(pack):
        streams.out(line + "\n")
    return 0


def _python_modules(pack: catalog.Pack) -> list[str]:
    """The Python each variant's mapping declares (the escape hatch), with its SHA-256."""
    import hashlib

    import yaml
    out = []
    for name, variant in pack.variants().items():
        try:
            data = yaml.safe_load(read_text(variant.mapping)) or {}   # bounded as a mapping is
        except (CpfmapError, yaml.YAMLError):
            continue
        python = data.get("python") if isinstance(data, dict) else None
        if not isinstance(python, dict):
            continue
        module = variant.mapping.parent / str(python.get("module", "")).replace("\\", "/")
        digest = hashlib.sha256(module.read_bytes()).hexdigest() if module.is_file() else "missing"
        provides = "; ".join(f"{key}: {', '.join(map(str, python.get(key) or [])) or 'none'}"
                             for key in ("filters", "functions", "auth"))
        out.append(f"# python ({name}): {python.get('module')} sha256 {digest}; {provides}")
    return out


def _verify(args: argparse.Namespace, streams: Streams) -> int:
    pack = catalog.pack_at(args.pack)
    from cpfmap.packaging import verify  # imported here: `cpfmap serve` builds its parser without it
    findings = verify.verify(pack)
    errors = [f for f in findings if f.severity == "error"]
    if args.format == "json":
        streams.out(json.dumps({"pack": pack.name, "folder": str(pack.folder), "ok": not errors,
                                "findings": [f.as_dict() for f in findings]}, indent=2) + "\n")
        return 1 if errors else 0
    for finding in findings:
        streams.out(finding.format() + "\n")
    verdict = "FAILED" if errors else "ok"
    streams.out(f"{pack.name} ({pack.folder}): {verdict} ({len(errors)} errors, "
                f"{len(findings) - len(errors)} warnings)\n")
    return 1 if errors else 0


def _checksums(args: argparse.Namespace, streams: Streams) -> int:
    pack = catalog.pack_at(args.pack)
    from cpfmap.packaging import verify
    target = verify.write_checksums(pack.folder)
    streams.out(f"wrote {target} ({len(verify.pack_files(pack.folder))} files)\n")
    return 0


PACK_ACTIONS: dict[str, Callable[[argparse.Namespace, Streams], int]] = {
    "list": _list, "show": _show, "verify": _verify, "checksums": _checksums}


def cmd_bundle(args: argparse.Namespace, streams: Streams, **_: object) -> int:
    platform = distribution.PLATFORMS[args.platform]
    found = catalog.discover()
    pip_args = [arg for folder in args.find_links for arg in ("--find-links", folder)]
    request = distribution.BundleRequest(
        out=args.out or Path(f"cpfmap-bundle-{platform.name}"), platform=platform,
        pythons=tuple(args.pythons or distribution.PYTHONS), packs=[catalog.pack_at(p, found) for p in args.packs],
        wheel=args.wheel, pip_args=pip_args + (["--no-index"] if args.no_index else []), zip=args.zip)
    written = distribution.bundle(request)
    streams.out(f"wrote {written} ({platform.name}, Python {', '.join(request.pythons)})\n")
    return 0


def cmd_new_project(args: argparse.Namespace, streams: Streams) -> int:
    project = distribution.new_project(args.name, args.dir)
    package = project / "src" / distribution.package_name(args.name)
    streams.out(f"created {project} (a pip-installable pack; the pack is {package})\n"
                f"next: cd {project} && python -m pip install -e '.[test]' && cpfmap pack verify {args.name}\n")
    return 0


COMMANDS: dict[str, Callable[..., int]] = {"packs": cmd_packs, "pack": cmd_packs, "bundle": cmd_bundle}
