"""Sandboxed, strict Jinja2 for the leaves of YAML structures.

A string leaf that is exactly one `{{ expression }}` evaluates to the expression's native
value (an int stays an int, a list a list): types come from the data, never from re-parsing
rendered text. Any other string with `{{` or `{%` renders to text. Strings in URL paths are
rendered with every inserted value percent-encoded.
"""
from __future__ import annotations

import base64
import re
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import jinja2
import jinja2.meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .errors import BackendError

_SINGLE_EXPR = re.compile(r"^\s*\{\{(?P<expr>.*?)\}\}\s*$", re.S)


def encode_name(value: str, allowed: str = "A-Za-z0-9_", escape: str = "-") -> str:
    """Reversible encoding for names a backend restricts: `escape` + two hex digits per byte
    of anything outside `allowed` (and of `escape` itself)."""
    keep = re.compile(f"[{allowed}]")
    out = []
    for char in str(value):
        if char != escape and keep.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"{escape}{byte:02X}" for byte in char.encode("utf-8"))
    return "".join(out)


def decode_name(value: str, escape: str = "-") -> str:
    """The inverse of encode_name."""
    hexed = re.sub(re.escape(escape) + r"([0-9A-F]{2})", lambda m: f"%{m.group(1)}", str(value))
    return urllib.parse.unquote(hexed, errors="strict")


def _b64encode(value: Any) -> str:
    data = value if isinstance(value, bytes) else str(value).encode("utf-8")
    return base64.b64encode(data).decode("ascii")


def _regex_replace(value: Any, pattern: str, replacement: str) -> str:
    return re.sub(pattern, replacement, str(value))


def _regex_search(value: Any, pattern: str) -> str | None:
    match = re.search(pattern, str(value))
    if not match:
        return None
    return match.group(1) if match.groups() else match.group(0)


class RawPath(str):
    """A path (or URL below base_url) inserted whole into a request path: see raw_path."""


_PATH_SAFE = "/?&=%:@!$'()*+,;~-._"
_BAD_PATH = re.compile(r"[\x00-\x20\x7f\\#]|%(?![0-9A-Fa-f]{2})")


def raw_path(value: Any) -> RawPath:
    """Opt out of percent-encoding for a path taken whole from a variable or a backend link
    (`/jobs/17/result`, `https://host/api/jobs/17`): its slashes, ?, & and = and its %XX escapes
    are kept. Still safe: a full URL must be below base_url (checked when sent), and a path with
    `.` or `..` segments, a backslash, a space, a control character or `#` is refused."""
    text = str(value)
    segments = urllib.parse.unquote(urllib.parse.urlsplit(text).path).split("/")
    if _BAD_PATH.search(text) or any(part in (".", "..") for part in segments):
        raise BackendError(f"raw_path refuses {text!r}: dot segments, backslashes, spaces, control "
                           "characters, '#' and stray '%' cannot go into a path whole")
    return RawPath(text)


FILTERS: dict[str, Callable] = {
    "encode_name": encode_name, "decode_name": decode_name, "b64encode": _b64encode,
    "regex_replace": _regex_replace, "regex_search": _regex_search, "raw_path": raw_path,
}


def _quote_path(value: Any) -> str:
    if isinstance(value, RawPath):
        return urllib.parse.quote(value, safe=_PATH_SAFE)
    if isinstance(value, bool):
        value = "1" if value else "0"
    return urllib.parse.quote(str(value), safe="")


class Templates:
    """The two environments of one mapping: text and URL path (percent-encoding)."""

    def __init__(self, filters: Mapping[str, Callable] | None = None) -> None:
        self.text = self._env(None, filters)
        self.path = self._env(_quote_path, filters)

    @staticmethod
    def _env(finalize: Callable | None, filters: Mapping[str, Callable] | None) -> jinja2.Environment:
        env = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False,
                                            keep_trailing_newline=True, finalize=finalize)
        env.filters.update(FILTERS)
        env.filters.update(filters or {})
        return env

    def compile(self, source: str, where: str, *, path: bool = False) -> "Template":
        """Compile one string leaf; raises jinja2.TemplateSyntaxError on bad syntax."""
        env = self.path if path else self.text
        match = _SINGLE_EXPR.match(source)
        if match and "{{" not in match["expr"] and "{%" not in match["expr"] and not path:
            expr = match["expr"].strip()
            ast = env.parse("{{ " + expr + " }}")
            return Template(source, where, env.compile_expression(expr, undefined_to_none=False),
                            frozenset(jinja2.meta.find_undeclared_variables(ast)), native=True)
        ast = env.parse(source)
        return Template(source, where, env.from_string(source).render,
                        frozenset(jinja2.meta.find_undeclared_variables(ast)), native=False)


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
            value = self.func(**context) if self.native else self.func(dict(context))
        except jinja2.UndefinedError as exc:
            raise BackendError(f"{self.where}: {exc.message} (in `{self.source.strip()}`)") from None
        except BackendError as exc:
            raise exc.context(self.where)
        except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
            raise BackendError(f"{self.where}: {type(exc).__name__}: {exc} (in `{self.source.strip()}`)") from None
        if isinstance(value, jinja2.Undefined):
            raise BackendError(f"{self.where}: {value._undefined_message} (in `{self.source.strip()}`)")
        return value
