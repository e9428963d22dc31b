"""YAML documents that remember where every value came from.

A mapping is data, but its errors must point at file, line and column. `load_yaml`
returns plain Python data plus a `Source` that maps a JSON-style path
(("methods", "guests/get", "steps", 0)) to the place in the file.
"""
from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cpfmap.errors import CpfmapError, Finding, MappingError

PathKey = tuple


@dataclass
class Source:
    file: str
    lines: list[str]
    marks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)
    warnings: list[Finding] = field(default_factory=list)   # found while reading (YAML 1.1 booleans)
    digest: str = ""   # sha256 of the file's exact bytes as read (what the load cache keys on)

    def locate(self, path: PathKey) -> tuple[int, int]:
        """Line and column (1-based) of the value at path, or of its nearest parent."""
        path = tuple(path)
        while path not in self.marks and path:
            path = path[:-1]
        return self.marks.get(path, (0, 0))

    def finding(self, path: PathKey, message: str, severity: str = "error") -> Finding:
        line, column = self.locate(path)
        text = self.lines[line - 1].rstrip() if 0 < line <= len(self.lines) else ""
        return Finding(message, self.file, line, column, severity, text, json_path(path))


def json_path(path: PathKey) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


# Bounds on what we read (documented in README, "Limits"): a file larger than its limit, or a
# YAML document whose aliases expand past MAX_YAML_NODES nodes or MAX_YAML_DEPTH levels (an
# "alias bomb", or a self-referring anchor), is refused before anything walks it.
MAX_BYTES = {"mapping": 2 * 1024 * 1024, "cassette": 32 * 1024 * 1024}
MAX_OTHER_BYTES = 4 * 1024 * 1024     # settings and session files
MAX_YAML_NODES = 1_000_000             # scalars and collections, every alias counted as its full copy
MAX_YAML_DEPTH = 100


class YamlLimit(Exception):
    """A YAML document past one of our bounds; the message says which."""


class TooLarge(Exception):
    """A file past its size limit (the message says the limit)."""


def read_bytes(path: Path, limit: int) -> bytes:
    """At most `limit` bytes of a file, else TooLarge. A regular file's size is checked before a
    byte is read; a pipe or device (which has none) is read up to limit + 1 bytes, never more."""
    with path.open("rb") as stream:
        status = os.fstat(stream.fileno())
        if stat.S_ISREG(status.st_mode) and status.st_size > limit:
            raise TooLarge(limit)
        data = stream.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(limit)
    return data


def decode(data: bytes) -> str:
    """UTF-8 with or without BOM, any line ending, as text with \\n line ends."""
    return data.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")


def read_text(path: Path, what: str = "mapping") -> str:
    """File text, UTF-8 with or without BOM, any line ending, at most MAX_BYTES[what]. A mapping
    that cannot be read is a MappingError (with the file as its location); any other file a CpfmapError."""
    return decode(read_limited(path, what))


def read_limited(path: Path, what: str = "mapping") -> bytes:
    """The bytes of a file a user named, within the limit for its kind, checked to be UTF-8 (see read_text)."""
    limit = MAX_BYTES.get(what, MAX_OTHER_BYTES)
    try:
        data = read_bytes(path, limit)
        data.decode("utf-8-sig")
        return data
    except TooLarge:
        problem = f"{what} is larger than {_size(limit)} (the limit for a {what})"
    except OSError as exc:
        problem = f"cannot read {what}: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        problem = f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if what == "mapping":
        raise MappingError(Finding(problem, str(path)))
    raise CpfmapError(f"{path}: {problem}")


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):g} MiB" if n >= 1024 * 1024 else f"{n} bytes"


class BoundedLoader(yaml.SafeLoader):
    """SafeLoader with two differences: a plain mapping key that YAML 1.1 would read as a
    boolean (on, off, yes, no, true, false...) stays the text the author wrote, so a table
    `{on: powered_on}` matches the backend's "on"; and `bounded_node` refuses documents that
    expand past our limits."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.yaml11_booleans: list[yaml.ScalarNode] = []   # values like `on` that YAML 1.1 makes booleans

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        node.value = [(_text_key(k), v) for k, v in node.value]
        return super().construct_mapping(node, deep)

    def construct_yaml_bool(self, node: yaml.ScalarNode) -> bool:
        if node.style is None and node.value.lower() not in ("true", "false"):
            self.yaml11_booleans.append(node)
        return super().construct_yaml_bool(node)

    def bounded_node(self) -> yaml.Node | None:
        try:
            node = self.get_single_node()
        except RecursionError:
            raise YamlLimit(f"nested more than {MAX_YAML_DEPTH} levels deep") from None
        if node is not None:
            _expanded_size(node, {}, set(), 0)
        return node


_BOOL_TAG = "tag:yaml.org,2002:bool"
BoundedLoader.add_constructor(_BOOL_TAG, BoundedLoader.construct_yaml_bool)


def _text_key(node: yaml.Node) -> yaml.Node:
    if isinstance(node, yaml.ScalarNode) and node.tag == _BOOL_TAG and node.style is None:
        return yaml.ScalarNode("tag:yaml.org,2002:str", node.value, node.start_mark, node.end_mark)
    return node


def _expanded_size(node: yaml.Node, memo: dict, active: set, depth: int) -> int:
    """Nodes in the document once every alias is copied out; linear in the file's own nodes."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise YamlLimit(f"an alias refers to itself (line {node.start_mark.line + 1})")
    if depth > MAX_YAML_DEPTH:
        raise YamlLimit(f"nested more than {MAX_YAML_DEPTH} levels deep (line {node.start_mark.line + 1})")
    active.add(key)
    children = node.value if isinstance(node, yaml.SequenceNode) else \
        [part for pair in node.value for part in pair] if isinstance(node, yaml.MappingNode) else []
    total = 1
    for child in children:
        total += _expanded_size(child, memo, active, depth + 1)
        if total > MAX_YAML_NODES:
            raise YamlLimit(f"expands to more than {MAX_YAML_NODES} values (too many aliases: an alias bomb?)")
    active.discard(key)
    memo[key] = total
    return total


class TextLoader(BoundedLoader):
    """For settings files, which stand for what RAS sends (text): a scalar is the text written
    (`0123`, `on`, `2024-01-01` and `1e3` stay as written); only null stays null."""

    def construct_text(self, node: yaml.ScalarNode) -> str:
        return node.value


for _tag in ("bool", "int", "float", "timestamp"):
    TextLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", TextLoader.construct_text)


def parse_yaml(text: str, loader_class: type[BoundedLoader] = BoundedLoader) -> Any:
    """Data of a YAML document (cassettes, settings) within our bounds; YamlLimit or
    yaml.YAMLError otherwise."""
    loader = loader_class(text)
    try:
        node = loader.bounded_node()
        return None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml(path: Path) -> tuple[Any, Source]:
    data = read_limited(path)
    text = decode(data)
    source = Source(str(path), text.split("\n"), digest=hashlib.sha256(data).hexdigest())
    loader = None
    try:
        loader = BoundedLoader(text)  # the reader refuses control characters right here
        node = loader.bounded_node()
        if node is None:
            raise MappingError(Finding("the mapping file is empty", str(path)))
        data = loader.construct_document(node)
    except YamlLimit as exc:
        raise MappingError(Finding(f"YAML refused: {exc}", str(path))) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        if exc.context_mark is not None and exc.problem_mark is not None and exc.context_mark.line != mark.line:
            problem += f" (it started at line {exc.context_mark.line + 1}, column {exc.context_mark.column + 1})"
        raise MappingError(source_finding(source, line, col, f"YAML syntax: {problem}")) from None
    except yaml.YAMLError as exc:
        raise MappingError(Finding(f"YAML syntax: {exc}", str(path))) from None
    finally:
        if loader is not None:
            loader.dispose()
    for scalar in loader.yaml11_booleans:
        line, col = scalar.start_mark.line + 1, scalar.start_mark.column + 1
        meaning = "true" if scalar.value.lower() in ("yes", "on", "y") else "false"
        finding = source_finding(source, line, col, f"`{scalar.value}` is read as the boolean {meaning} (YAML "
                                 f"1.1); quote it ('{scalar.value}') if you mean the text, or write {meaning}")
        finding.severity = "warning"
        source.warnings.append(finding)
    duplicates: list[Finding] = []
    _walk(node, (), source, duplicates)
    if duplicates:
        raise MappingError(duplicates)
    return data, source


def source_finding(source: Source, line: int, col: int, message: str) -> Finding:
    text = source.lines[line - 1].rstrip() if 0 < line <= len(source.lines) else ""
    return Finding(message, source.file, line, col, "error", text)


def _walk(node: yaml.Node, path: PathKey, source: Source, problems: list[Finding],
          key_mark: tuple[int, int] | None = None) -> None:
    block = isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style
    # A block collection starts at its first child: point at its key instead.
    source.marks[path] = key_mark if block and key_mark else (node.start_mark.line + 1, node.start_mark.column + 1)
    if isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, path + (index,), source, problems)
    elif isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            if key in seen:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                problems.append(source_finding(source, line, col, f"duplicate key `{key}`"))
            seen.add(key)
            source.marks[path + (key, "<key>")] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            _walk(value_node, path + (key,), source, problems,
                  (key_node.start_mark.line + 1, key_node.start_mark.column + 1))
