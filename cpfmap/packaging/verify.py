"""`cpfmap pack verify` and `cpfmap pack checksums`: is a pack sound, and is it the pack its
vendor shipped. Verification checks the manifest against schemas/pack.schema.json and this
engine, validates every variant (and the functionality level it advertises), replays every
shipped recording, and checks SHA256SUMS when the pack has one.

A recording is recordings/VARIANT/NAME.jsonl (the CPF requests RAS sent, one a line, each
maybe with the live reply it got, as `record --session` writes them) beside NAME.yaml (the
HTTP cassette); it passes when every request gets a `result` reply, no reply came from a
replay miss, and every recorded reply is reproduced.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from cpfmap.errors import CpfmapError, Finding, MappingError, ReplayMiss
from cpfmap.language import loader
from cpfmap.language.catalog import MANIFEST, Pack, Variant
from cpfmap.language.model import CompiledMapping
from cpfmap.language.sections import LEVELS
from cpfmap.language.source import YamlLimit, load_yaml, read_text
from cpfmap.recording import cassette, transcript
from cpfmap.runtime.provider import Provider
from cpfmap.version import __version__, version_tuple

CHECKSUMS = "SHA256SUMS"
IGNORED = ("__pycache__", ".pyc", ".gitkeep", ".DS_Store")


def verify(pack: Pack) -> list[Finding]:
    findings = _manifest_findings(pack)
    if any(f.severity == "error" for f in findings):
        return findings
    if not (pack.folder / "README.md").is_file():
        findings.append(Finding("the pack has no README.md (settings, permissions, limits)", str(pack.folder)))
    variants = pack.variants().values()
    for variant in variants:
        findings += _variant_findings(variant)
    if not any(any(v.recordings.glob("*.jsonl")) for v in variants):
        findings.append(Finding("the pack ships no recordings (recordings/VARIANT/NAME.jsonl + NAME.yaml): "
                                "nothing shows it works", str(pack.folder), severity="warning"))
    findings += _stray_recordings(pack)
    findings += checksum_findings(pack.folder)
    return findings


def _manifest_findings(pack: Pack) -> list[Finding]:
    path = pack.manifest_path
    if not path.is_file():
        return [Finding(f"the pack has no {MANIFEST} (name, version, engine, licence, maintainer, variants)",
                        str(pack.folder))]
    try:
        data, source = load_yaml(path)
    except MappingError as exc:
        return exc.findings
    located = loader.Located(data, [source])
    findings = loader.schema_findings(located, "pack.schema.json")
    if findings:
        return findings
    if data["name"] != pack.name:
        findings.append(located.finding(("name",), f"the manifest names `{data['name']}`, but the pack is found "
                                                   f"as `{pack.name}` (folder or entry point name)"))
    if not engine_fits(data["engine"]):
        findings.append(located.finding(("engine",), f"the pack needs cpfmap {data['engine']}; this is cpfmap "
                                                     f"{__version__}"))
    for name, variant in data["variants"].items():
        if not (pack.folder / variant["mapping"]).is_file():
            findings.append(located.finding(("variants", name, "mapping"), f"no file {variant['mapping']}"))
    return findings


def engine_fits(requirement: str, version: str = __version__) -> bool:
    """`>=X.Y` optionally followed by `,<Z`."""
    low, _, high = requirement.partition(",")
    ok = version_tuple(version) >= version_tuple(low)
    return ok and (not high.strip() or version_tuple(version) < version_tuple(high))


def _variant_findings(variant: Variant) -> list[Finding]:
    mapping, findings = loader.checked(variant.mapping)
    if mapping is None:
        return findings
    level = mapping.capabilities.template_method
    if variant.level is not None and variant.level != level:
        findings.append(Finding(f"variant {variant.name} advertises level {variant.level} in {MANIFEST}, but its "
                                f"mapping serves {level} (levels: {', '.join(LEVELS)})", str(variant.mapping)))
    for session in sorted(variant.recordings.glob("*.jsonl")):
        findings += replay_findings(mapping, session) + clear_secret_findings(mapping, session.with_suffix(".yaml"))
    return findings


def clear_secret_findings(mapping: CompiledMapping, cassette_file: Path) -> list[Finding]:
    """A shipped cassette must not show the value of a secret-named field (recordings are public)."""
    try:
        exchanges = cassette.clear_fields(cassette_file, mapping.connection.secret_fields,
                                          mapping.connection.public_fields)
    except (CpfmapError, yaml.YAMLError, YamlLimit, AttributeError, TypeError):
        return []   # a cassette that cannot be read: the replay says so
    shown = ", ".join(f"#{n}" for n in exchanges[:5]) + (" ..." if len(exchanges) > 5 else "")
    return [Finding(f"recording {cassette_file.name}: exchanges {shown} show the value of a secret-named field "
                    f"(README, Secrets); record again with this engine, or mask it as ***",
                    str(cassette_file))] if exchanges else []


def replay_findings(mapping: CompiledMapping, session: Path) -> list[Finding]:
    """Replay one shipped recording against a variant's mapping."""
    where = str(session)
    cassette_file = session.with_suffix(".yaml")
    if not cassette_file.is_file():
        return [Finding(f"recording {session.name} has no cassette {cassette_file.name} beside it", where)]
    try:
        provider = Provider(mapping, recording=cassette_file)
        lines = [line for line in read_text(session, "session file").split("\n") if line.strip()]
    except CpfmapError as exc:
        return [Finding(exc.message, where)]
    findings = []
    with provider:
        for number, text in enumerate(lines, 1):
            line, recorded, _ = transcript.session_line(text)
            before = provider.sent
            reply = provider.call_line(line)
            miss = any(isinstance(x.error, ReplayMiss) for x in provider.exchanges_since(before))
            if "error" in reply or miss:
                why = "a replay miss" if miss else "an error"
                findings.append(Finding(f"request {number} ({_method(line)}) got {why}: "
                                        f"{reply.get('error', {}).get('message', '')}", where, number))
            differs = transcript.difference(recorded, reply) if recorded is not None else None
            if differs:
                findings.append(Finding(f"request {number} ({_method(line)}): the replay does not reproduce the "
                                        f"recorded reply: {differs}", where, number))
    return findings


def _method(line: str) -> str:
    try:
        return str(json.loads(line).get("method"))
    except (ValueError, AttributeError):
        return "not a JSON object"


def _stray_recordings(pack: Pack) -> list[Finding]:
    """A recordings/ subfolder that no variant replays would be silently skipped."""
    known = {v.recordings.resolve() for v in pack.variants().values()}
    root = pack.folder / "recordings"
    folders = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    return [Finding(f"recordings/{p.name} belongs to no variant (variants: {', '.join(pack.variants())})", str(p))
            for p in folders if p.resolve() not in known]


# ---------------------------------------------------------------- checksums

def pack_files(folder: Path) -> list[Path]:
    """Every file of the pack that a checksum covers, as paths relative to the folder."""
    return sorted(p.relative_to(folder) for p in folder.rglob("*")
                  if p.is_file() and p.name != CHECKSUMS and not any(part.endswith(IGNORED) for part in p.parts))


def digest(path: Path) -> str:
    with path.open("rb") as stream:   # streamed: a pack file of any size costs a small buffer
        return hashlib.file_digest(stream, "sha256").hexdigest()


def write_checksums(folder: Path) -> Path:
    """SHA256SUMS in `sha256sum` format (forward slashes), so `sha256sum -c` checks it too."""
    lines = [f"{digest(folder / rel)}  {rel.as_posix()}\n" for rel in pack_files(folder)]
    target = folder / CHECKSUMS
    target.write_text("".join(lines), encoding="utf-8", newline="\n")
    return target


def checksum_findings(folder: Path) -> list[Finding]:
    listing = folder / CHECKSUMS
    if not listing.is_file():
        return []
    expected = {}
    for number, line in enumerate(read_text(listing, "checksum file").split("\n"), 1):
        if line.strip():
            hexdigest, _, name = line.partition("  ")
            expected[name.strip()] = (hexdigest.strip().lower(), number)
    actual = {rel.as_posix(): rel for rel in pack_files(folder)}
    findings = [Finding(f"{name} is listed but missing", str(listing), n) for name, (_, n) in expected.items()
                if name not in actual]
    findings += [Finding(f"{name} is not listed in {CHECKSUMS}", str(folder / name)) for name in actual
                 if name not in expected]
    findings += [Finding(f"{name} differs from the checksum shipped (sha256 {want})", str(folder / name))
                 for name, (want, _) in expected.items() if name in actual and digest(folder / actual[name]) != want]
    return findings
