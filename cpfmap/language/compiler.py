"""Compile validated mapping data into the frozen model, collecting findings.

Syntax errors in templates and JMESPath, names a template uses that nothing defines,
tables whose results are not CPF values, references to missing fragments, tables or poll
rules, and functionality levels the methods cannot serve: all reported here.
"""
from __future__ import annotations

import difflib
import re
from typing import Any

import jinja2
import jmespath.exceptions

from cpfmap.language import model as m
from cpfmap.language.expressions import Expression, Table, known_functions
from cpfmap.language.templating import Templates, has_template
from cpfmap.protocol import contract
from cpfmap.protocol.values import string_id

# What `params` holds in each `methods:` entry, and in every control (`control`).
PARAMS = {method: tuple(p.name for p in contract.METHODS[method].params) for method in contract.MAPPED_METHODS}
PARAMS["control"] = tuple(p.name for p in contract.METHODS["guests/control"].params)
_WHOLE_LINK = re.compile(r"^\s*\{\{[^{}]*\|\s*raw_path\s*\}\}\s*$")
PAGING_OPTIONS = {
    "offset": {"size", "limit_param", "offset_param"},
    "page": {"size", "limit_param", "page_param", "first_page"},
    "cursor": {"cursor", "cursor_from", "cursor_param", "size", "limit_param"},
    "next_link": {"cursor", "cursor_from", "size", "limit_param"},
    "link_header": {"size", "limit_param"},
}
ROOTS = {"settings", "params", "auth", "remembered", "json_null", "now", "range", "dict", "namespace", "lipsum", "cycler", "joiner",
         "true", "false", "none", "True", "False", "None"}


class Compiler:
    def __init__(self, located, names: dict | None = None, filters: dict | None = None,
                 functions: Any = None) -> None:
        self.located = located
        self.findings: list = []
        self.tables: dict[str, Table] = {}
        # filters: a pack's own (language/extensions.py); never in place of a built-in one
        self.templates = Templates({**(filters or {}), "translate": self._translate, "string_id": string_id}, names)
        self.extension: Any = None   # extensions.Extension of the mapping's `python`, set before build
        self.functions = functions   # a Functions subclass with the pack's own JMESPath functions, or None
        self.function_names = known_functions(functions)
        self.settings: set[str] = set()
        self.used_settings: set[str] = set()
        self.poll_known: dict[str, set] = {}   # poll rule -> the names its output can read
        self.endpoints: set[str] = set()   # names the session logins declare (login.endpoints)

    # ------------------------------------------------------------ helpers

    def error(self, path: tuple, message: str, severity: str = "error") -> None:
        finding = self.located.finding(path, message, severity)
        if finding not in self.findings:  # a fragment is compiled once per use
            self.findings.append(finding)

    def _translate(self, value: Any, table: str) -> Any:
        """The value looked up in translation table `table` (see `tables`); a value with no
        entry is an error naming it, unless the table has a `default`. Validate checks the name.
        Example: `{{ 'running' | translate('power') }}` -> `"powered_on"`"""
        return self.tables[table].translate(value)

    def template(self, raw: str, path: tuple, known: set, *, url: bool = False) -> m.Template | None:
        where = _where(path)
        try:
            compiled = self.templates.compile(str(raw), where, path=url)
        except jinja2.TemplateSyntaxError as exc:
            self.error(path, f"template syntax: {exc.message} in `{raw}`")
            # the settings it names are used, not "never used": one error, not a second wrong warning
            self.used_settings.update(re.findall(r"\bsettings\.(\w+)", str(raw)))
            return None
        self._check_names(compiled, path, known)
        return compiled

    def _check_names(self, compiled: m.Template, path: tuple, known: set) -> None:
        for name in sorted(compiled.names - known - ROOTS):
            hint = _suggest(name, known | {"settings", "params"})
            self.error(path, f"`{name}` is not defined here (known: {', '.join(sorted(known)) or 'none'})"
                             f"{hint}")
        for name in re.findall(r"\bsettings\.(\w+)", compiled.source):
            self.used_settings.add(name)
            if name not in self.settings:
                self.error(path, f"`settings.{name}` is not a declared setting"
                                 f"{_suggest(name, self.settings)}")
        for name in re.findall(r"""translate\(\s*['"]([^'"]+)['"]""", compiled.source):
            if name not in self.tables:
                self.error(path, f"no table `{name}`{_suggest(name, set(self.tables))}")

    def condition(self, raw: str, path: tuple, known: set) -> m.Template | None:
        """A `when`: one {{ expression }}, so its truth is the value's, not a rendered string's."""
        compiled = self.template(raw, path, known)
        if compiled is not None and not compiled.native:
            self.error(path, f"a `when` is one {{{{ expression }}}} (text is always true): `{raw}`")
        return compiled

    def expression(self, raw: str, path: tuple, known: set | None = None) -> Expression | None:
        """A compiled JMESPath; with `known`, the names its var() calls read are checked too."""
        # var('settings.x') reads a setting too (for the never-used warning)
        self.used_settings.update(re.findall(r"var\(\s*['\"]settings\.([A-Za-z0-9_]+)", str(raw)))
        try:
            compiled = Expression.compile(str(raw), _where(path), self.functions)
        except jmespath.exceptions.JMESPathError as exc:
            self.error(path, f"JMESPath syntax: {str(exc).splitlines()[0]} in `{raw}`")
            return None
        for name in sorted(compiled.function_names() - self.function_names):
            self.error(path, f"no JMESPath function `{name}`{_suggest(name, self.function_names)} in `{raw}`")
        if known is not None:
            self._check_vars(compiled, path, known)
        return compiled

    def _check_vars(self, compiled: Expression, path: tuple, known: set) -> None:
        for name in compiled.var_names():
            root, _, rest = name.partition(".")
            if root not in known | ROOTS:
                hint = _suggest(root, known | {"settings", "params"})
                self.error(path, f"var('{name}'): `{root}` is not defined here (known: "
                                 f"{', '.join(sorted(known)) or 'none'}){hint}")
            elif root == "settings" and rest:
                setting = rest.split(".")[0]
                self.used_settings.add(setting)
                if setting not in self.settings:
                    self.error(path, f"var('{name}'): `settings.{setting}` is not a declared setting"
                                     f"{_suggest(setting, self.settings)}")

    def kept(self, name: str, raw: Any, path: tuple, known: set) -> tuple:
        """A `remember` entry: (name, value, seconds kept or None: the provider's lifetime)."""
        if isinstance(raw, dict) and set(raw) == {"value", "for"}:
            seconds = raw["for"]
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
                self.error(path + ("for",), f"`for` must be a number of seconds above 0, not {seconds!r}")
                seconds = None
            return name, self.value(raw["value"], path + ("value",), known), \
                float(seconds) if seconds is not None else None
        return name, self.value(raw, path, known), None

    def value(self, raw: Any, path: tuple, known: set, *, sent: bool = False) -> m.Value:
        """sent: the value goes into a request, where `{literal: X}` is sent as written, nulls too."""
        if isinstance(raw, dict) and set(raw) == {"jmespath"}:
            expr = self.expression(raw["jmespath"], path + ("jmespath",), known)
            return m.JmesValue(expr) if expr else m.Literal(None)
        if isinstance(raw, dict) and set(raw) == {"literal"}:
            return m.Literal(m.Kept(raw["literal"]) if sent else raw["literal"])
        if isinstance(raw, dict):
            return m.DictValue(tuple((str(k), self.value(v, path + (k,), known, sent=sent)) for k, v in raw.items()))
        if isinstance(raw, list):
            return m.ListValue(tuple(self.value(v, path + (i,), known, sent=sent) for i, v in enumerate(raw)))
        if has_template(raw):
            compiled = self.template(raw, path, known)
            return m.TemplateValue(compiled) if compiled else m.Literal(None)
        return m.Literal(raw)

    def templates_of(self, raw: dict | None, path: tuple, known: set) -> tuple:
        out = []
        for key, text in (raw or {}).items():
            compiled = self.template(str(text), path + (key,), known)
            if compiled:
                out.append((str(key), compiled))
        return tuple(out)

    # ------------------------------------------------------------- pieces

    def request(self, raw: dict, path: tuple, known: set) -> m.RequestSpec:
        opt = lambda key: self.value(raw[key], path + (key,), known, sent=True) if key in raw else None  # noqa: E731
        body = raw.get("body")
        if sum(k in raw for k in ("json", "form", "body")) > 1:
            self.error(path, "a request has one body: json, form or body")
        self._check_content_type(raw, path)
        if "endpoint" in raw and raw["endpoint"] not in self.endpoints:
            self.error(path + ("endpoint",), f"no auth login declares endpoint `{raw['endpoint']}`"
                       f"{_suggest(raw['endpoint'], self.endpoints)}")
        return m.RequestSpec(
            method=raw["method"], path=self.template(raw["path"], path + ("path",), known, url=True)
            or self.templates.compile("/", "?", path=True),
            query=opt("query"), headers=opt("headers"), json=opt("json"), form=opt("form"),
            body=self.template(body, path + ("body",), known) if body is not None else None,
            content_type=raw.get("content_type"), link=bool(_WHOLE_LINK.match(str(raw["path"]))),
            endpoint=raw.get("endpoint"))

    def _check_content_type(self, raw: dict, path: tuple) -> None:
        """The body's type is `content_type`; a Content-Type header beside it would be sent twice."""
        if "form" in raw and "content_type" in raw:
            self.error(path + ("content_type",), "a form is always application/x-www-form-urlencoded: "
                       "drop content_type (or send `body:` with it)")
        headers = raw.get("headers")
        if isinstance(headers, dict) and any(str(k).lower() == "content-type" for k in headers) \
                and any(k in raw for k in ("json", "form", "body")):
            self.error(path + ("headers",), "give the body's type as `content_type`, not as a Content-Type header")

    def extraction(self, raw: Any, path: tuple, known: set) -> m.Extraction | None:
        spec = raw if isinstance(raw, dict) else {"jmespath": raw}
        expr = self.expression(spec["jmespath"], path + (("jmespath",) if isinstance(raw, dict) else ()), known)
        if expr is None:
            return None
        required = spec.get("required")
        return m.Extraction(expr, spec.get("from", "body"), spec.get("default"),
                            self.template(required, path + ("required",), known) if required else None)

    def extractions(self, raw: dict | None, path: tuple, known: set) -> tuple:
        out = []
        for name, spec in (raw or {}).items():
            compiled = self.extraction(spec, path + (name,), known)
            if compiled:
                out.append((str(name), compiled))
        return tuple(out)

    def steps(self, raw: list, path: tuple, known: set, fragments: dict, depth: int = 0) -> tuple:
        out: list = []
        for index, item in enumerate(raw or []):
            here = path + (index,)
            if index and "fail" in raw[index - 1] and "when" not in raw[index - 1]:
                self.error(here, "unreachable: the step before always fails (give it a `when`)", "warning")
            if "use" in item:
                out.extend(self._use(item, here, known, fragments, depth))
            else:
                out.append(self.step(item, here, known, fragments))
        return tuple(out)

    def _use(self, item: dict, here: tuple, known: set, fragments: dict, depth: int) -> tuple:
        name = item["use"]
        if name not in fragments:
            self.error(here + ("use",), f"no fragment `{name}`{_suggest(name, set(fragments))}")
            return ()
        if depth > 8:
            self.error(here + ("use",), f"fragment `{name}` uses itself")
            return ()
        extra = set(item) - {"use", "when", "name"}
        if extra:
            self.error(here, f"a `use` step takes only `when` and `name` ({', '.join(sorted(extra))})")
        when = self.condition(item["when"], here + ("when",), known) if "when" in item else None
        inner = self.steps(fragments[name], ("fragments", name), known, fragments, depth + 1)
        if when is None:
            return inner
        return (m.Step(where=_where(here), name=item.get("name", f"use {name}"), when=when, steps=inner),)

    def step(self, raw: dict, path: tuple, known: set, fragments: dict | None = None) -> m.Step:
        when = self.condition(raw["when"], path + ("when",), known) if "when" in raw else None
        kinds = [k for k in ("request", "set", "fail") if k in raw]
        if len(kinds) != 1 and not (not kinds and "remember" in raw):
            self.error(path, "a step has exactly one of: request, set, fail, use (or only `remember`)")
        for_each = self.for_each(raw, path, known)
        here = known | {"item"} if for_each is not None else known   # what the request and extractions see
        request = self.request(raw["request"], path + ("request",), here) if "request" in raw else None
        if request is None and any(k in raw for k in ("extract", "accept", "cache", "paginate", "on_error",
                                                      "idempotent", "already_done", "lookup", "refused_if",
                                                      "for_each")):
            self.error(path, "extract, accept, cache, paginate, on_error, idempotent, already_done, lookup, "
                             "refused_if and for_each go with a request")
        already_done, lookup = self.repeat_safety(raw, path, known, fragments or {})
        if "wait" in raw and request is None:
            self.error(path + ("wait",), "`wait` goes with a request that starts a backend task")
        if raw.get("cache") and request and request.method != "GET":
            self.error(path + ("cache",), "only GET replies can be cached")
        for key in ("index", "prefetch"):
            if key in raw and not raw.get("cache"):
                self.error(path + (key,), f"`{key}` works on a cached reply: give the step `cache: seconds`")
        index = self.index(raw["index"], path + ("index",), known) if "index" in raw else None
        rules = tuple(self.error_rule(r, path + ("on_error", i), here) for i, r in enumerate(raw.get("on_error", [])))
        extract = self.extractions(raw.get("extract"), path + ("extract",), here)
        for name, extraction in extract:
            if extraction.source == "entry" and (index is None or index.lookup is None):
                self.error(path + ("extract", name), "`from: entry` reads the item an `index` with `lookup` finds")
        known.update(name for name, _ in extract)
        sets = []
        for key, raw_value in (raw.get("set") or {}).items():  # later keys see earlier ones
            sets.append((str(key), self.value(raw_value, path + ("set", key), known)))
            known.add(str(key))
        for rule in raw.get("on_error", []):
            known.update(map(str, (rule.get("set") or {}).keys()))
        remember = tuple(self.kept(str(key), raw_value, path + ("remember", key), known)
                         for key, raw_value in (raw.get("remember") or {}).items())
        return m.Step(
            where=_where(path), name=raw.get("name", ""), when=when, request=request,
            accept=tuple(raw.get("accept", ())), idempotent=bool(raw.get("idempotent", False)),
            already_done=already_done, lookup=lookup, cache=float(raw.get("cache", 0)),
            paginate=self.paginate(raw.get("paginate"), path + ("paginate",), known),
            index=index, prefetch=m.Prefetch(**raw["prefetch"]) if "prefetch" in raw else None,
            extract=extract, set=tuple(sets), remember=remember,
            fail=self.template(raw["fail"], path + ("fail",), known) if "fail" in raw else None,
            on_error=rules, wait=self.task(raw["wait"], path + ("wait",), known) if "wait" in raw else None,
            refused_if=self.expression(raw["refused_if"], path + ("refused_if",)) if "refused_if" in raw else None,
            for_each=for_each)

    def for_each(self, raw: dict, path: tuple, known: set) -> m.Value | None:
        """`for_each`: a read (GET, HEAD) sent once per item of a list, one at a time."""
        if "for_each" not in raw:
            return None
        method = (raw.get("request") or {}).get("method", "GET")
        if method not in ("GET", "HEAD"):
            self.error(path + ("for_each",), f"`for_each` sends a read once per item; {method} is not a read")
        clash = sorted(k for k in FOR_EACH_EXCLUDES if k in raw)
        if clash:
            self.error(path + ("for_each",), f"`for_each` does not go with {', '.join(clash)}")
        if any("retry" in rule for rule in raw.get("on_error", [])):
            self.error(path + ("for_each",), "`for_each` does not go with an on_error `retry`")
        return self.value(raw["for_each"], path + ("for_each",), known)

    def index(self, raw: dict, path: tuple, known: set) -> m.Index | None:
        items = self.expression(raw["items"], path + ("items",))
        key = self.expression(raw["key"], path + ("key",))
        lookup = self.template(str(raw["lookup"]), path + ("lookup",), known) if "lookup" in raw else None
        return m.Index(items, key, lookup) if items and key else None

    def repeat_safety(self, raw: dict, path: tuple, known: set, fragments: dict) -> tuple:
        """`already_done` and `lookup`: what is safe after a request got no answer."""
        method = (raw.get("request") or {}).get("method", "GET")
        if "lookup" in raw and (raw.get("idempotent") or method in ("GET", "HEAD")):
            self.error(path + ("lookup",), "a `lookup` is for a request that must not run twice; an idempotent "
                                           "request (or a GET) is simply sent again")
        if "already_done" in raw and not (raw.get("idempotent") or "lookup" in raw):
            self.error(path + ("already_done",), "`already_done` reads the answer to a repeat: give the step "
                                                 "`idempotent: true` or a `lookup`")
        rules = []
        for index, rule in enumerate(raw.get("already_done", [])):
            where = path + ("already_done", index)
            self._check_regex(rule, where)
            rules.append(m.ErrorRule(tuple(rule.get("status", ())), rule.get("match")))
        if "lookup" not in raw:
            return tuple(rules), None
        inner = set(known)
        steps = self.steps(raw["lookup"]["steps"], path + ("lookup", "steps"), inner, fragments)
        found = self.condition(raw["lookup"]["found"], path + ("lookup", "found"), inner)
        known.update(inner)  # the lookup's variables stand in for the step's extractions
        return tuple(rules), m.Lookup(steps, found) if found else None

    def _check_regex(self, raw: dict, path: tuple) -> None:
        if "match" in raw:
            try:
                re.compile(raw["match"])
            except re.error as exc:
                self.error(path + ("match",), f"bad regular expression: {exc}")

    def error_rule(self, raw: dict, path: tuple, known: set) -> m.ErrorRule:
        if sum(key in raw for key in ("fail", "set", "retry")) != 1:
            self.error(path, "an on_error rule has one of `fail`, `set` or `retry`")
        self._check_regex(raw, path)
        fail = self.template(raw["fail"], path + ("fail",), known | {"error"}) if "fail" in raw else None
        sets = self.value(raw["set"], path + ("set",), known | {"error"}) if "set" in raw else None
        if "wait" in raw and "set" not in raw:
            self.error(path + ("wait",), "`wait` goes with `set` (a rule that fails or retries waits for nothing)")
        retry = raw.get("retry") or {}
        return m.ErrorRule(tuple(raw.get("status", ())), raw.get("match"), fail, sets,
                           int(retry.get("times", 0)), str(retry.get("from", "")), bool(raw.get("wait", True)))

    def paginate(self, raw: dict | None, path: tuple, known: set) -> m.Paginate | None:
        if not raw:
            return None
        kind = raw["type"]
        takes = PAGING_OPTIONS[kind]
        for key in sorted(set(raw) - takes - {"type", "items", "max_pages"}):
            self.error(path + (key,), f"paginate type {kind} takes no `{key}` (it takes: "
                                      f"{', '.join(sorted(takes))}; and items, max_pages)")
        if "cursor" in takes and "cursor" not in raw:
            self.error(path, f"paginate type {kind} needs `cursor`")
        if "limit_param" in raw and "size" not in raw and kind not in ("offset", "page"):
            self.error(path + ("limit_param",), "`limit_param` names the query parameter of `size`: give `size`")
        if isinstance(raw.get("size"), str):
            raw = dict(raw, size=self.template(raw["size"], path + ("size",), known))
        elif kind in ("offset", "page"):
            raw = dict(raw, size=raw.get("size", 100))
        items = self.expression(raw["items"], path + ("items",), known)
        cursor = self.expression(raw["cursor"], path + ("cursor",), known) if "cursor" in raw else None
        keys = ("size", "limit_param", "offset_param", "page_param", "first_page", "cursor_from", "cursor_param",
                "max_pages")
        return m.Paginate(kind, items, cursor=cursor, **{k: raw[k] for k in keys if k in raw})

    def operation(self, name: str, raw: dict, path: tuple, fragments: dict, params: tuple) -> m.Operation:
        known = {"params"}
        steps = self.steps(raw.get("steps", []), path + ("steps",), known, fragments)
        self._check_retries(steps, path + ("steps",))
        for ref in _param_refs(raw):
            if ref not in params:
                self.error(path, f"`params.{ref}` is not a parameter of {name} (has: {', '.join(params) or 'none'})")
        if "task" in raw and name.startswith("control "):
            self.error(path + ("task",), "a control has no task: RAS takes `{}` as the action accepted and polls "
                                         "guests/get, so a task here would never be polled; to wait for the "
                                         "backend's task, give the step that starts it a `wait` (it ends at the "
                                         "reply deadline)")
        task = self.task(raw["task"], path + ("task",), known) if "task" in raw else None
        result = self.value(raw["result"], path + ("result",), known) if "result" in raw else None
        return m.Operation(name, steps, result, task, raw.get("description", ""))

    def _check_retries(self, steps: tuple, path: tuple) -> None:
        """`retry.from` names a step that runs before (or is) the refusing one."""
        earlier: set = set()
        for step in steps:
            earlier.add(step.name)
            for rule in step.on_error:
                if rule.retry_from and rule.retry_from not in earlier:
                    self.error(path, f"{step.where}: retry from `{rule.retry_from}`: no such step before it"
                                     f"{_suggest(rule.retry_from, earlier - {''})}")

    def task(self, raw: dict, path: tuple, known: set) -> m.TaskStart:
        if ("poll" in raw) == ("completed" in raw):
            self.error(path, "a task has either `poll` (with `handle`) or `completed`")
        handle = self.templates_of(raw.get("handle"), path + ("handle",), known)
        completed = self.value(raw["completed"], path + ("completed",), known) if "completed" in raw else None
        when = self.condition(raw["when"], path + ("when",), known) if "when" in raw else None
        output = None
        if "output" in raw:
            if "poll" not in raw:
                self.error(path + ("output",), "`output` goes with `poll` (work done at once gives `completed`)")
            poll_known = self.poll_known.get(raw.get("poll"), {"task"})
            output = self.value(raw["output"], path + ("output",), set(poll_known))
        return m.TaskStart(raw.get("poll"), handle, completed, when, output)


# Keys a per-item read does not take: they concern one request, a write or a shared reply.
FOR_EACH_EXCLUDES = ("cache", "index", "prefetch", "paginate", "lookup", "wait", "remember", "idempotent",
                     "already_done")


def _where(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _suggest(name: str, options: set) -> str:
    close = difflib.get_close_matches(name, sorted(options), n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


def _param_refs(raw: Any) -> set:
    text = repr(raw)
    return set(re.findall(r"\bparams\.(\w+)", text)) | set(re.findall(r"var\(\\?'params\.(\w+)", text))


