"""YAML documents that remember where every value came from.

A mapping is data, but its errors must point at file, line and column. `load_yaml`
returns plain Python data plus a `Source` that maps a JSON-style path
(("methods", "guests/get", "steps", 0)) to the place in the file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import CpfmapError, Finding, MappingError

PathKey = tuple


@dataclass
class Source:
    file: str
    lines: list[str]
    marks: dict[PathKey, tuple[int, int]] = field(default_factory=dict)

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


def read_text(path: Path, what: str = "mapping") -> str:
    """File text, UTF-8 with or without BOM, any line ending. A mapping that cannot be read is
    a MappingError (with the file as its location); any other file a CpfmapError."""
    try:
        data = path.read_bytes()
        return data.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")
    except OSError as exc:
        problem = f"cannot read {what}: {exc.strerror or exc}"
    except UnicodeDecodeError as exc:
        problem = f"{what} is not UTF-8 text ({exc.reason} at byte {exc.start})"
    if what == "mapping":
        raise MappingError(Finding(problem, str(path)))
    raise CpfmapError(f"{path}: {problem}")


def load_yaml(path: Path) -> tuple[Any, Source]:
    text = read_text(path)
    source = Source(str(path), text.split("\n"))
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise MappingError(Finding("the mapping file is empty", str(path)))
        data = loader.construct_document(node)
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
        loader.dispose()
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
