"""Sandboxed, strict Jinja2 for the leaves of YAML structures.

A string leaf that is exactly one `{{ expression }}` evaluates to the expression's native
value (an int stays an int, a list a list): types come from the data, never from re-parsing
rendered text. Any other string with `{{` or `{%` renders to text. Strings in URL paths are
rendered with every inserted value percent-encoded.
"""
from __future__ import annotations

import base64
import datetime
import functools
import re
import time
import unicodedata
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg

from cpfmap.errors import BackendError
from cpfmap.language.encoding import ENCODING_FILTERS, format_time

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.S)


def encode_name(value: str, allowed: str = "A-Za-z0-9_", escape: str = "-") -> str:
    """A reversible encoding for names a backend restricts (snapshot names): every character
    outside the character class `allowed`, and `escape` itself, becomes `escape` + two hex
    digits per UTF-8 byte. decode_name undoes it.
    Example: `{{ 'RAS Template Snapshot' | encode_name }}` -> `"RAS-20Template-20Snapshot"`"""
    keep = re.compile(f"[{allowed}]")
    out = []
    for char in str(value):
        if char != escape and keep.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"{escape}{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def decode_name(value: str, escape: str = "-") -> str:
    """The inverse of encode_name (use the same `escape`); a name it cannot decode is an error.
    Example: `{{ 'RAS-20Template-20Snapshot' | decode_name }}` -> `"RAS Template Snapshot"`"""
    hexed = re.sub(re.escape(escape) + r"([0-9A-F]{2})", lambda m: f"%{m.group(1)}", str(value))
    return urllib.parse.unquote(hexed, errors="strict")


def dns_name(value: Any, fallback: str = "vm") -> str:
    """A name valid as a DNS name (what PVE's `dns-name` format takes): accents dropped, every
    run of characters other than letters, digits and `-` inside a dot-separated label becomes
    one `-`, labels trimmed of `-` and cut to 63 characters, empty labels dropped;
    `fallback` if nothing is left. Predictable, not reversible.
    Example: `{{ 'RAS Host_01 (Büro)' | dns_name }}` -> `"RAS-Host-01-Buro"`"""
    text = unicodedata.normalize("NFKD", str(value)).encode("ascii", "ignore").decode("ascii")
    labels = [re.sub(r"[^A-Za-z0-9-]+", "-", label).strip("-")[:63].strip("-") for label in text.split(".")]
    return ".".join(label for label in labels if label) or fallback


def _b64encode(value: Any) -> str:
    """Base64 of the value's UTF-8 text (for hand-built Basic or token headers).
    Example: `{{ 'user:pw' | b64encode }}` -> `"dXNlcjpwdw=="`"""
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def _regex_replace(value: Any, pattern: str, replacement: str) -> str:
    """The value as text with every match of Python regular expression `pattern` replaced
    (`\\1` refers to a group).
    Example: `{{ 'vm-101' | regex_replace('^vm-', '') }}` -> `"101"`"""
    return re.sub(pattern, replacement, str(value))


def _regex_search(value: Any, pattern: str) -> str | None:
    """The first match of `pattern` in the value's text (its first group if it has groups),
    or none.
    Example: `{{ 'UPID:pve1:0001' | regex_search('^UPID:([^:]+)') }}` -> `"pve1"`"""
    match = re.search(pattern, str(value))
    if not match:
        return None
    return match.group(1) if match.groups() else match.group(0)


_ISO = re.compile(r"(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:?\d{2})?$")


def timestamp(value: Any) -> float:
    """Seconds since 1970 (UTC) of an ISO 8601 / RFC 3339 date and time, as APIs give token and
    job times (`2026-01-01T10:00:00.000000Z`); no offset means UTC; a number passes through.
    Subtract two to get a lifetime: `{{ (auth.expires_at | timestamp) - (auth.issued_at | timestamp) }}`.
    Text that is not such a time is an error naming it.
    Example: `{{ '1970-01-01T01:00:30.5+01:00' | timestamp }}` -> `30.5`"""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    match = _ISO.match(text) if len(text) <= 40 else None
    if match is None:
        raise BackendError(f"timestamp: {text[:40]!r} is not an ISO 8601 date and time")
    zone = match.group(8) or "Z"
    offset = 0 if zone == "Z" else (1 if zone[0] == "+" else -1) * (int(zone[1:3]) * 60 + int(zone[-2:])) * 60
    try:
        year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
        moment = datetime.datetime(year, month, day, hour, minute, second, tzinfo=datetime.timezone.utc)
    except ValueError:
        raise BackendError(f"timestamp: {text!r} is not a valid date and time") from None
    return moment.timestamp() + float(match.group(7) or 0) - offset


@dataclass(frozen=True)
class Kept:
    """A request value sent as written, even a null: `{literal: X}`, or `json_null` in a template
    (`{{ {'os-start': json_null} }}`), where a null member would be left out."""
    value: Any


JSON_NULL = Kept(None)


class RawPath(str):
    """A path (or URL below base_url) inserted whole into a request path: see raw_path."""


_PATH_SAFE = "/?&=%:@!$'()*+,;~-._"
_BAD_PATH = re.compile(r"[\x00-\x20\x7f\\#]|%(?![0-9A-Fa-f]{2})")


def raw_path(value: Any) -> RawPath:
    """Opt out of percent-encoding for a path taken whole from a variable or a backend link
    (`/jobs/17/result`, `https://host/api/jobs/17`): its slashes, ?, & and = and its %XX escapes
    are kept. Still safe: a full URL must be below base_url (checked when sent), and a path with
    `.` or `..` segments, a backslash, a space, a control character or `#` is refused. A request
    path that is only `{{ link | raw_path }}` may also be a path from the host root.
    Example: `{{ '/jobs/7/result' | raw_path }}` -> `"/jobs/7/result"`"""
    text = str(value)
    segments = urllib.parse.unquote(urllib.parse.urlsplit(text).path).split("/")
    if _BAD_PATH.search(text) or any(part in (".", "..") for part in segments):
        raise BackendError(f"raw_path refuses {text!r}: dot segments, backslashes, spaces, control "
                           "characters, '#' and stray '%' cannot go into a path whole")
    return RawPath(text)


FILTERS: dict[str, Callable] = {
    "encode_name": encode_name, "decode_name": decode_name, "b64encode": _b64encode, "dns_name": dns_name,
    "regex_replace": _regex_replace, "regex_search": _regex_search, "raw_path": raw_path, "timestamp": timestamp,
    **ENCODING_FILTERS,
}


MAX_REPEAT = 1_000_000   # items or characters a `*` may build
MAX_EXPONENT = 10_000


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja folds constant expressions while it compiles: it would run a catastrophic regex
    filter or build `'a' * 10**10` at load time, in `validate`, without any bound. Here no
    operator or plain filter is folded (every binary operator is intercepted, every plain
    filter needs the context), and `*` and `**` are bounded when they run."""

    intercepted_binops = frozenset(("+", "-", "*", "/", "//", "%", "**"))

    def getattr(self, obj: Any, attribute: str) -> Any:
        """`x.key` of a plain dict is its item, as the sandbox would find it after failing the
        attribute (dict methods such as `items` still go the sandbox's way)."""
        if type(obj) is dict and attribute in obj and attribute not in _DICT_MEMBERS:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*" and _repeat_size(left, right) > MAX_REPEAT:
            raise ValueError(f"`*` would build more than {MAX_REPEAT} items")
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"`**` with an exponent over {MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)


def _repeat_size(left: Any, right: Any) -> int:
    for seq, times in ((left, right), (right, left)):
        if isinstance(seq, (str, list, tuple, bytes)) and isinstance(times, int):
            return len(seq) * times
    return 0


def _unfoldable(func: Callable) -> Callable:
    """The filter, taking the context it ignores: Jinja never runs such a filter while compiling."""
    @functools.wraps(func)
    def call(context: Any, *args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)
    return jinja2.pass_context(call)


class Placeholder(str):
    """A value `explain` cannot know because it comes from a reply: shown as `<what>`. Its
    members are placeholders too (`{{ vm.node }}` shows `<vm.node from step 2>`), and it is
    never percent-encoded, so the reader sees where a value will come from."""

    def __getattr__(self, name: str) -> "Placeholder":
        if name.startswith("_"):
            raise AttributeError(name)
        return self._member(name)

    def __getitem__(self, key: Any) -> Any:
        return self._member(str(key)) if isinstance(key, (str, int)) else str.__getitem__(self, key)

    def _member(self, name: str) -> "Placeholder":
        text = str(self)
        head, _, tail = text[1:-1].partition(" ")
        return Placeholder(f"<{head}.{name}{' ' + tail if tail else ''}>")


def _quote_path(value: Any) -> str:
    if isinstance(value, RawPath):
        return urllib.parse.quote(value, safe=_PATH_SAFE)
    if isinstance(value, Placeholder):
        return str(value)
    if isinstance(value, bool):
        value = "1" if value else "0"
    return urllib.parse.quote(str(value), safe="")


class Templates:
    """The two environments of one mapping: text and URL path (percent-encoding)."""

    def __init__(self, filters: Mapping[str, Callable] | None = None, names: dict | None = None) -> None:
        self.text = self._env(None, filters)
        self.path = self._env(_quote_path, filters)
        self.wall: Callable[[], float] = time.time   # what now() reads; the provider may inject another
        for env in (self.text, self.path):
            env.globals["now"] = self._now
        self._lazy: dict[tuple, _Lazy] = {}
        # (text, path?) -> the names it reads, for every template that parsed and uses only known
        # filters and tests; given (loadcache.py), those of an unchanged mapping are not parsed again.
        self.names: dict[tuple[str, bool], frozenset] = dict(names or {})

    def _now(self, fmt: str = "iso") -> Any:
        """now(format='iso'): the current UTC time: `iso` (2026-12-07T13:00:00Z), `amz`
        (20261207T130000Z), `epoch` (whole seconds), `epoch_ms`, `http` (an HTTP date), or a strftime
        pattern."""
        return format_time(self.wall(), fmt)

    @staticmethod
    def _env(finalize: Callable | None, filters: Mapping[str, Callable] | None) -> jinja2.Environment:
        env = _Sandbox(undefined=jinja2.StrictUndefined, autoescape=False,
                       keep_trailing_newline=True, finalize=finalize, optimized=False)
        env.filters.update(FILTERS)
        env.globals["json_null"] = JSON_NULL
        env.filters.update(filters or {})
        for name, func in env.filters.items():
            if _PassArg.from_obj(func) is None:
                env.filters[name] = _unfoldable(func)
        return env

    def compile(self, source: str, where: str, *, path: bool = False) -> "Template":
        """Parse one string leaf now (raises jinja2.TemplateSyntaxError on bad syntax, and
        TemplateAssertionError for an unknown filter or test); generate its code on first use,
        once per distinct text, so a serve process starts without compiling what it never runs."""
        env = self.path if path else self.text
        match = _SINGLE_EXPR.match(source)
        native = bool(match and "{{" not in match["expr"] and "{%" not in match["expr"] and not path)
        key = (source, path, native)
        names = self.names.get((source, path))
        if names is None:
            ast = env.parse("{{ " + match["expr"].strip() + " }}" if native else source)
            _check_known(env, ast, source)
            names = self.names[(source, path)] = frozenset(jinja2.meta.find_undeclared_variables(ast))
        full: Callable[[], Callable]
        if native:
            text = "{{ " + match["expr"].strip() + " }}"
            full = lambda: _runner(  # noqa: E731
                env, env.compile_expression(match["expr"].strip(), undefined_to_none=False)._template, text, True)
        else:
            text = source
            full = lambda: _runner(env, env.from_string(source), source, False)  # noqa: E731
        return Template(source, where, self._shared(key, lambda: _plain_or(env, text, native, full)), names, native)

    def _shared(self, key: tuple, build: Callable) -> "_Lazy":
        lazy = self._lazy.get(key)
        if lazy is None:
            lazy = self._lazy[key] = _Lazy(build)
        return lazy


def _check_known(env: jinja2.Environment, ast: Any, source: str) -> None:
    """What jinja's code generation would refuse: filters and tests that do not exist."""
    for node in ast.find_all((jinja2.nodes.Filter, jinja2.nodes.Test)):
        table = env.filters if isinstance(node, jinja2.nodes.Filter) else env.tests
        if node.name not in table:
            kind = "filter" if isinstance(node, jinja2.nodes.Filter) else "test"
            raise jinja2.TemplateAssertionError(f"No {kind} named '{node.name}'.", node.lineno, None, None)


def _runner(env: jinja2.Environment, template: jinja2.Template, source: str, native: bool) -> Callable:
    """What jinja's render and TemplateExpression do, without their per-call copies: the
    context is the template's parent as it is (it only reads it) unless the template names
    one of jinja's globals (`range`, `dict`, `namespace`...; find_undeclared_variables leaves
    them out), then a copy with them beneath it.
    Native: the value the expression assigns to `result`; text: the rendered string."""
    read = {node.name for node in env.parse(source).find_all(jinja2.nodes.Name)}
    with_globals = bool(read & env.globals.keys())
    make, root, name, blocks = env.context_class, template.root_render_func, template.name, template.blocks

    def run(context: Mapping[str, Any]) -> Any:
        parent = {**env.globals, **context} if with_globals or not isinstance(context, dict) else context
        ctx = make(env, parent, name, blocks)
        if native:
            for _ in root(ctx):
                pass
            return ctx.vars["result"]
        return env.concat(root(ctx))  # type: ignore[attr-defined]
    return run


_MISS = object()
_DICT_MEMBERS = frozenset(dir(dict))   # `x.items` in Jinja is the method, not the key


def _plain_or(env: jinja2.Environment, text: str, native: bool, full: Callable[[], Callable]) -> Callable:
    """The runner of a template: for text and dotted names only (`/nodes/{{ node }}/qemu`,
    `{{ params.id }}`), read straight from the context, else Jinja's (`full()`, built on first
    need). The plain reading answers only where Jinja's could not differ (names the context
    holds, members of plain dicts that are not dict methods); anything else goes to Jinja, which
    gives the same value or its own error."""
    parts = _plain_parts(env, text)
    if parts is None:
        return full()
    jinja = _Lazy(full)
    finalize = env.finalize or str
    single = parts[0] if native and len(parts) == 1 and isinstance(parts[0], tuple) else None

    def run(context: Mapping[str, Any]) -> Any:
        if single is not None:
            value = _plain_value(context, single)
            return jinja(context) if value is _MISS else value
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = _plain_value(context, part)
            if value is _MISS:
                return jinja(context)
            out.append(str(finalize(value)))
        return "".join(out)
    return run if single is not None or not native else full()


def _plain_parts(env: jinja2.Environment, text: str) -> list | None:
    """The template as literal texts and dotted names (tuples), or None if it is more than that."""
    body = env.parse(text).body
    if not body:
        return [""]
    if len(body) != 1 or not isinstance(body[0], jinja2.nodes.Output):
        return None
    parts: list = []
    for node in body[0].nodes:
        if isinstance(node, jinja2.nodes.TemplateData):
            parts.append(node.data)
            continue
        attrs: list[str] = []
        while isinstance(node, jinja2.nodes.Getattr):
            attrs.append(node.attr)
            node = node.node
        if not isinstance(node, jinja2.nodes.Name):
            return None
        parts.append((node.name, *reversed(attrs)))
    return parts


def _plain_value(context: Mapping[str, Any], path: tuple) -> Any:
    if type(context) is not dict:
        return _MISS
    value = context.get(path[0], _MISS)
    for attr in path[1:]:
        if type(value) is not dict or attr in _DICT_MEMBERS:
            return _MISS
        value = value.get(attr, _MISS)
    return value


class _Lazy:
    """A template's compiled function, built on the first call."""

    __slots__ = ("build", "func")

    def __init__(self, build: Callable) -> None:
        self.build = build
        self.func: Callable | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.func is None:
            self.func = self.build()
        return self.func(*args, **kwargs)


def has_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


@dataclass(frozen=True)
class Template:
    source: str
    where: str
    func: Callable
    names: frozenset
    native: bool

    def render(self, context: Mapping[str, Any]) -> Any:
        try:
            value = self.func(context)
        except jinja2.UndefinedError as exc:
            raise BackendError(f"{self.where}: {exc.message} (in `{self.source.strip()}`)") from None
        except BackendError as exc:
            raise exc.context(self.where)
        except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
            raise BackendError(f"{self.where}: {type(exc).__name__}: {exc} (in `{self.source.strip()}`)") from None
        if isinstance(value, jinja2.Undefined):
            raise BackendError(f"{self.where}: {value._undefined_message} (in `{self.source.strip()}`)")
        return value
