"""JMESPath with the functions real APIs need, and checked translation tables.

Expressions are compiled once, when the mapping loads. `var('name.path')` reads the
template context (settings, params, earlier step variables) from inside an expression,
so a filter can compare against a request parameter:
    data[?type=='qemu' && to_string(vmid)==var('params.id')] | [0]
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import jmespath
import jmespath.exceptions
from jmespath import functions

from cpfmap.errors import BackendError
from cpfmap.protocol.contract import GUEST_STATES, TASK_STATES
from cpfmap.protocol.values import read_all, read_ip, read_mac, string_id, unique

TABLE_KINDS = {"guest_state": GUEST_STATES, "task_state": TASK_STATES, "any": None}


class Functions(functions.Functions):
    """Our JMESPath functions; an instance carries the context `var()` reads."""

    def __init__(self, context: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self._context = context or {}

    @functions.signature({"types": ["string"]})
    def _func_var(self, name):
        """The template variable at dotted path `name` (settings, params, earlier step
        variables), or null when any part is missing; use it to compare with a request parameter:
        `data[?to_string(vmid)==var('params.id')] | [0]`.
        Example: `var('params.id')` -> `"101"`"""
        value: Any = self._context
        for part in name.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        return value

    @functions.signature({"types": ["string"]})
    def _func_lower(self, s):
        """`s` in lower case. Example: `lower('Running')` -> `"running"`"""
        return s.lower()

    @functions.signature({"types": ["string"]})
    def _func_upper(self, s):
        """`s` in upper case. Example: `upper('vm')` -> `"VM"`"""
        return s.upper()

    @functions.signature({"types": ["string"]}, {"types": ["string"]})
    def _func_split(self, s, sep):
        """`s` split at every `sep`; an empty string gives `[]`.
        Example: `split('a,b', ',')` -> `["a", "b"]`"""
        return s.split(sep) if s else []

    @functions.signature({"types": ["string"]}, {"types": ["string", "null"]})
    def _func_regex_match(self, pattern, s):
        """true when Python regular expression `pattern` matches anywhere in `s`; false for null.
        Example: `regex_match('^ras-', name)` on `{"name": "ras-1"}` -> `true`"""
        return s is not None and re.search(pattern, s) is not None

    @functions.signature({"types": ["string"]}, {"types": ["string"]}, {"types": ["string", "null"]})
    def _func_regex_replace(self, pattern, replacement, s):
        """`s` with every match of `pattern` replaced (`\\1` refers to a group); null stays null.
        Example: `regex_replace('-', ':', mac)` on `{"mac": "aa-bb"}` -> `"aa:bb"`"""
        return None if s is None else re.sub(pattern, replacement, s)

    @functions.signature({"types": ["string"]}, {"types": ["string", "null"]})
    def _func_regex_find(self, pattern, s):
        """The first match of `pattern` in `s` (its first group if it has groups), or null.
        Example: `regex_find('vm-([0-9]+)', 'vm-101-disk')` -> `"101"`"""
        match = re.search(pattern, s) if s is not None else None
        if not match:
            return None
        return match.group(1) if match.groups() else match.group(0)

    @functions.signature({"types": ["string"]}, {"types": ["string", "null"]})
    def _func_regex_find_all(self, pattern, s):
        """Every match of `pattern` in `s` (first group if any); `[]` for null.
        Example: `regex_find_all('[0-9]+', 'a1b22')` -> `["1", "22"]`"""
        if s is None:
            return []
        return [m.group(1) if m.groups() else m.group(0) for m in re.finditer(pattern, s)]

    @functions.signature({"types": ["array"]})
    def _func_unique(self, items):
        """`items` without repeats, first occurrence kept, order kept.
        Example: `unique(['a', 'b', 'a'])` -> `["a", "b"]`"""
        return unique(items)

    @functions.signature({"types": []})
    def _func_string_id(self, value):
        """An id as RAS wants it: a string; `101` and `101.0` give `"101"`; null stays null.
        Example: `string_id(vmid)` on `{"vmid": 101}` -> `"101"`"""
        return None if value is None else string_id(value)

    @functions.signature({"types": ["array"]})
    def _func_string_ids(self, items):
        """string_id of every item, nulls dropped.
        Example: `string_ids([].vmid)` on `[{"vmid": 1}, {"vmid": 2}]` -> `["1", "2"]`"""
        return [string_id(item) for item in items if item is not None]

    @functions.signature({"types": ["object"]})
    def _func_items(self, obj):
        """An object as `[key, value]` pairs, so keys can be filtered like values.
        Example: `items(@)` on `{"a": 1}` -> `[["a", 1]]`"""
        return [[key, value] for key, value in obj.items()]

    @functions.signature({"types": ["array"]})
    def _func_from_items(self, pairs):
        """The inverse of items: `[key, value]` pairs back into an object (other entries ignored).
        Example: `from_items([['a', `1`]])` -> `{"a": 1}`"""
        return {str(pair[0]): pair[1] for pair in pairs if isinstance(pair, list) and len(pair) == 2}

    @functions.signature({"types": ["object", "null"]}, {"types": ["string"]})
    def _func_get(self, obj, key):
        """Member `key` of `obj`, for keys that are not identifiers (`net0`, `a-b`); null if absent.
        Example: `get(@, 'x-id')` on `{"x-id": 7}` -> `7`"""
        return None if obj is None else obj.get(key)

    @functions.signature({"types": ["string", "null"]}, {"types": ["string"]}, {"types": ["string"]})
    def _func_parse_kv(self, s, sep, assign):
        """`s` as an object: parts split at `sep`, each `key{assign}value` (a part without
        `assign` gives null); null gives `{}`.
        Example: `parse_kv('virtio=BC:24:11:00:00:01,bridge=vmbr0', ',', '=')` -> `{"virtio": "BC:24:11:00:00:01", "bridge": "vmbr0"}`"""
        out: dict = {}
        for part in (s or "").split(sep):
            key, found, value = part.partition(assign)
            if key.strip():
                out[key.strip()] = value.strip() if found else None
        return out

    @functions.signature({"types": ["array"]})
    def _func_macs(self, items):
        """MAC addresses in normal form (lower-case, colon-separated), without repeats; accepts
        `aa:bb:cc:dd:ee:ff`, `AA-BB-..`, Cisco's dotted `aabb.ccdd.eeff` and 12 bare hex digits; skips
        nulls and empty strings; any other value it cannot read is an error that names it.
        Example: `macs(['52-54-00-00-00-65', '5254.0000.0066'])` -> `["52:54:00:00:00:65", "52:54:00:00:00:66"]`"""
        return read_all(items, read_mac)

    @functions.signature({"types": ["array"]})
    def _func_ips(self, items):
        """IP addresses (v4 or v6; a `/prefix` or `%zone` suffix is ignored) in normal form, without
        loopback, link-local and unspecified addresses and repeats; skips nulls and empty strings;
        any other value it cannot read is an error that names it.
        Example: `ips(['10.0.0.5/24', '127.0.0.1', 'fe80::1'])` -> `["10.0.0.5"]`"""
        return read_all(items, read_ip)


@dataclass(frozen=True)
class Expression:
    """A compiled JMESPath expression and where it came from."""

    source: str
    where: str
    parsed: Any = field(repr=False, compare=False)
    path: tuple | None = field(default=None, repr=False, compare=False)  # `@`, `a`, `a.b`: field names
    reads_context: bool = field(default=True, repr=False, compare=False)  # calls var()
    functions: Any = field(default=None, repr=False, compare=False)   # a Functions subclass with a pack's own

    @classmethod
    def compile(cls, source: str, where: str, functions: Any = None) -> "Expression":
        """Raises jmespath.exceptions.ParseError on bad syntax."""
        parsed = jmespath.compile(source)
        return cls(source, where, parsed, _field_path(parsed.parsed), _calls_var(parsed.parsed), functions)

    def function_names(self) -> set[str]:
        """The functions it calls (validate checks that each exists)."""
        found, todo = set(), [self.parsed.parsed]
        while todo:
            node = todo.pop()
            if node.get("type") == "function_expression":
                found.add(node.get("value"))
            todo += [c for c in node.get("children", []) if isinstance(c, dict)]
        return found

    def var_names(self) -> list[str]:
        """The literal names this expression reads with var('name'), for validate."""
        found: list[str] = []
        todo = [self.parsed.parsed]
        while todo:
            node = todo.pop()
            if node.get("type") == "function_expression" and node.get("value") == "var":
                found += [c["value"] for c in node["children"] if c.get("type") == "literal"
                          and isinstance(c.get("value"), str)]
            todo += [c for c in node.get("children", []) if isinstance(c, dict)]
        return found

    def search(self, data: Any, context: Mapping[str, Any] | None = None) -> Any:
        if self.path is not None:   # what jmespath's field and subexpression nodes do, without its visitor
            for name in self.path:
                try:
                    data = data.get(name)
                except AttributeError:
                    return None
                if data is None:
                    return None
            return data
        options = jmespath.Options(custom_functions=(self.functions or Functions)(context))
        try:
            return self.parsed.search(data, options=options)
        except jmespath.exceptions.JMESPathError as exc:
            raise BackendError(f"{self.where}: `{self.source}` failed on the backend's data: {exc}") from None
        except BackendError as exc:  # one of our functions refused a value
            raise exc.context(self.where) from None


def known_functions(functions: Any = None) -> set[str]:
    """JMESPath's built-in functions and ours (and a pack's, given its Functions subclass)."""
    return {name[len("_func_"):] for name in dir(functions or Functions) if name.startswith("_func_")}


def _field_path(node: dict) -> tuple | None:
    if node["type"] == "current":
        return ()
    if node["type"] == "field":
        return (node["value"],)
    if node["type"] == "subexpression":
        parts = [_field_path(child) for child in node["children"]]
        if all(part is not None for part in parts):
            return tuple(name for part in parts for name in part)  # type: ignore[union-attr]
    return None


def _calls_var(node: Any) -> bool:
    if isinstance(node, dict):
        if node.get("type") == "function_expression" and node.get("value") == "var":
            return True
        return any(_calls_var(child) for child in node.get("children", ()))
    return False


@dataclass(frozen=True)
class Matcher:
    """One field condition of a table rule: a value, any of several, absent (null), or a regex."""

    values: tuple = ()
    regex: str | None = None
    absent: bool = False

    def matches(self, present: bool, value: Any) -> bool:
        if self.absent and (not present or value in (None, "")):
            return True
        if not present or value is None:
            return False
        if self.regex is not None:
            return re.search(self.regex, string_id(value)) is not None
        return string_id(value) in self.values


@dataclass(frozen=True)
class Rule:
    when: tuple  # ((field, Matcher), ...)
    then: Any

    def matches(self, obj: Mapping) -> bool:
        return all(m.matches(*_field(obj, name)) for name, m in self.when)


def _field(obj: Mapping, name: str) -> tuple[bool, Any]:
    """(present, value) of a rule's field: a member of that exact name, else a dotted path into
    nested objects (`transition.kind`)."""
    if name in obj or "." not in name:
        return name in obj, obj.get(name)
    value: Any = obj
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value


_NO_DEFAULT = object()
MAX_SEEN = 4096   # field combinations a table keeps the answer of


@dataclass(frozen=True)
class Table:
    """backend value(s) -> CPF value. A value with no entry is an error unless a default is set."""

    name: str
    kind: str
    map: tuple = ()        # ((key, value), ...)
    rules: tuple = ()      # (Rule, ...)
    default: Any = _NO_DEFAULT
    # what the rules gave for each combination of the fields they read (a pure function of
    # them): the same few combinations come back for every guest of every sweep
    _seen: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    def _key(self, value: Mapping) -> tuple | None:
        """The fields the rules read, as a key (with their types: 1 and True differ); None if a
        field holds something that is no key (a list, an object)."""
        key = []
        for name in self._fields:
            present, found = _field(value, name)
            if not isinstance(found, (str, int, float, type(None))):
                return None
            key.append((present, type(found), found))
        return tuple(key)

    @functools.cached_property
    def _fields(self) -> tuple:
        return tuple(dict.fromkeys(name for rule in self.rules for name, _ in rule.when))

    def translate(self, value: Any) -> Any:
        if self.rules:
            if not isinstance(value, Mapping):
                raise BackendError(f"table `{self.name}` translates objects, got {value!r}")
            fields = self._key(value)
            found = self._seen.get(fields, _NO_DEFAULT) if fields is not None else _NO_DEFAULT
            if found is not _NO_DEFAULT:
                return found
            for rule in self.rules:
                if rule.matches(value):
                    if fields is not None:
                        if len(self._seen) >= MAX_SEEN:
                            self._seen.clear()
                        self._seen[fields] = rule.then
                    return rule.then
            shown = {name: value.get(name) for rule in self.rules for name, _ in rule.when}
        else:
            key = string_id(value) if value is not None else None
            for entry, result in self.map:
                if entry == key:
                    return result
            shown = value
        if self.default is not _NO_DEFAULT:
            return self.default
        raise BackendError(f"backend value {shown!r} has no entry in table `{self.name}`")


# ------------------------------------------------------- HTTP replies


