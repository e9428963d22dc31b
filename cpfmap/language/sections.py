"""The top-level sections of a mapping, compiled, and the checks across sections:
functionality levels, capabilities, poll-rule references, unused settings."""
from __future__ import annotations

import re
from typing import Any

import yaml

from cpfmap.language import extensions
from cpfmap.language import model as m
from cpfmap.language.compiler import PARAMS, Compiler
from cpfmap.language.expressions import _NO_DEFAULT, TABLE_KINDS, Matcher, Rule, Table
from cpfmap.protocol.contract import BASIC_CONTROLS, LEVELS, RESULT_METHODS, SNAPSHOT_METHODS, TASK_METHODS
from cpfmap.protocol.values import string_id
from cpfmap.version import __version__, version_tuple


def build(c: Compiler, data: dict) -> tuple:
    c.settings = set(map(str, (data.get("settings") or {}).keys()))
    settings = tuple(_setting(str(k), v) for k, v in (data.get("settings") or {}).items())
    c.tables.update(_tables(c, data.get("tables") or {}))
    fragments = data.get("fragments") or {}
    c.endpoints = {str(name) for raw in data.get("auth") or []
                   for name in ((raw.get("login") or {}).get("endpoints") or {})}
    connection = _connection(c, data["connection"])
    auth = tuple(_auth(c, raw, ("auth", i)) for i, raw in enumerate(data.get("auth") or [{"type": "none"}]))
    polls = {str(name): _poll(c, str(name), raw, ("tasks", name), fragments)
             for name, raw in (data.get("tasks") or {}).items()}
    methods = {name: c.operation(name, raw or {}, ("methods", name), fragments, PARAMS[name])
               for name, raw in (data.get("methods") or {}).items()}
    controls = {name: c.operation(f"control {name}", raw or {}, ("controls", name), fragments, PARAMS["control"])
                for name, raw in (data.get("controls") or {}).items()}
    _check_tasks(c, methods, controls, polls)
    capabilities = _capabilities(c, data.get("capabilities") or {}, methods, controls, auth)
    for name in sorted(c.settings - c.used_settings):
        c.error(("settings", name), f"setting `{name}` is never used", "warning")
    meta = data["metadata"]
    _check_engine(c, meta.get("engine"))
    mapping = m.CompiledMapping(meta["name"], tuple(s.file for s in c.located.sources), meta, settings, connection,
                         auth, methods, controls, polls, dict(c.tables), capabilities, c.templates,
                         python=c.extension)
    return mapping, c.findings


def _setting(name: str, raw: dict) -> m.Setting:
    return m.Setting(name, raw.get("type", "string"), bool(raw.get("required", False)), raw.get("default"),
                     bool(raw.get("secret", False)), raw.get("description", ""), tuple(raw.get("choices", ())))


def _tables(c: Compiler, raw: dict) -> dict:
    out = {}
    for name, spec in raw.items():
        path = ("tables", name)
        if ("map" in spec) == ("rules" in spec):
            c.error(path, "a table has either `map` or `rules`")
        allowed = TABLE_KINDS[spec.get("kind", "any")]
        results = list((spec.get("map") or {}).values()) + [r["then"] for r in spec.get("rules") or []]
        if "default" in spec:
            results.append(spec["default"])
        for value in results:
            if allowed is not None and value not in allowed:
                c.error(path, f"table `{name}` yields {value!r}, not a {spec['kind']} ({', '.join(allowed)})")
        _check_key_types(c, path + ("map",), spec.get("map") or {})
        rules = tuple(Rule(tuple((str(f), _matcher(v)) for f, v in r["when"].items()), r["then"])
                      for r in spec.get("rules") or [])
        pairs = tuple((None if k is None else string_id(k), v) for k, v in (spec.get("map") or {}).items())
        out[str(name)] = Table(str(name), spec.get("kind", "any"), pairs, rules, spec.get("default", _NO_DEFAULT))
    return out


def _check_key_types(c: Compiler, path: tuple, table: dict) -> None:
    """Keys are compared as text: warn where YAML typed a key so that its text is not what was
    written (on -> true, 010 -> 8, 1.0 -> 1 (and the same key as true), ~ -> null)."""
    for text in _written_keys(c, path):
        if text in table:
            continue  # YAML kept it as the text written
        typed = _yaml_scalar(text)
        if isinstance(typed, str) or (typed is not None and string_id(typed) == text):
            continue
        shown = "null" if typed is None else string_id(typed)
        c.error(path + (text, "<key>"), f"YAML reads the key `{text}` as {type(typed).__name__} {shown}, which "
                                        f"matches the text \"{shown}\"; to match \"{text}\", quote it: '{text}'",
                "warning")


def _yaml_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _written_keys(c: Compiler, path: tuple) -> list:
    """The keys of the YAML mapping at path as written in the file (before YAML typed them)."""
    for source in c.located.sources:
        if path in source.marks:
            return [p[len(path)] for p in source.marks if len(p) == len(path) + 2 and p[:len(path)] == path
                    and p[-1] == "<key>"]
    return []


def _matcher(raw: Any) -> Matcher:
    if raw is None:
        return Matcher(absent=True)
    if isinstance(raw, dict) and "regex" in raw:
        return Matcher(regex=str(raw["regex"]))
    values = raw if isinstance(raw, list) else [raw]
    return Matcher(values=tuple(string_id(v) for v in values if v is not None), absent=None in values)


def _connection(c: Compiler, raw: dict) -> m.Connection:
    known = {"settings"}
    path = ("connection",)
    value = lambda key, default: c.value(raw[key], path + (key,), known) if key in raw else m.Literal(default)  # noqa
    error_message = c.expression(raw["error_message"], path + ("error_message",)) if "error_message" in raw else None
    hosts = c.value(raw["hosts"], path + ("hosts",), known) if "hosts" in raw else None
    if any(str(k).lower() == "content-type" for k in raw.get("headers") or {}):
        c.error(path + ("headers",), "a Content-Type on every request would go beside each body's own: "
                                     "give `content_type` on the requests that send one")
    url_known = known | ({"host"} if hosts is not None else set())
    return m.Connection(
        base_url=c.template(raw["base_url"], path + ("base_url",), url_known) or c.templates.compile("", "?"),
        verify_tls=value("verify_tls", True), ca_file=value("ca_file", None),
        client_cert=value("client_cert", None), client_key=value("client_key", None),
        connect_timeout=float(raw.get("connect_timeout", 10)), read_timeout=float(raw.get("read_timeout", 60)),
        total_timeout=float(raw.get("total_timeout", 120)),
        reply_deadline=float(raw.get("reply_deadline", m.Connection.reply_deadline)),
        max_response_bytes=int(raw.get("max_response_bytes", m.Connection.max_response_bytes)),
        headers=c.templates_of(raw.get("headers"), path + ("headers",), known),
        retries=int(raw.get("retries", 3)), backoff=float(raw.get("backoff", 0.5)),
        resend_writes_on=tuple(raw.get("resend_writes_on", ())),
        max_retry_wait=float(raw.get("max_retry_wait", 60)), error_message=error_message, hosts=hosts,
        xml_lists=tuple(str(n) for n in raw.get("xml_lists") or ()),
        refused_if=c.expression(raw["refused_if"], path + ("refused_if",)) if "refused_if" in raw else None,
        params=c.value(raw["params"], path + ("params",), known, sent=True) if "params" in raw else None,
        secret_fields=frozenset(str(name).lower() for name in raw.get("secret_fields", ())),
        public_fields=frozenset(str(name).lower() for name in raw.get("public_fields", ())))


NEEDS = {"header": ("headers",), "basic": ("username", "password"), "bearer": ("token",),
         "session": ("login",), "aws_sigv4": ("access_key", "secret_key", "region", "service"), "python": ("sign",), "none": ()}


def _auth(c: Compiler, raw: dict, path: tuple) -> m.AuthScheme:
    kind = raw["type"]
    for key in NEEDS[kind]:
        if key not in raw:
            c.error(path, f"auth type {kind} needs `{key}`")
    known = {"settings"}
    tpl = lambda key: c.template(raw[key], path + (key,), known) if key in raw else None  # noqa: E731
    when = c.condition(raw["when"], path + ("when",), known) if "when" in raw else None
    with_auth = known | {"auth"}
    login = _login(c, raw["login"], path + ("login",), known) if "login" in raw else None
    refresh = _login(c, raw["refresh"], path + ("refresh",), with_auth) if "refresh" in raw else None
    if refresh is not None and login is None:
        c.error(path + ("refresh",), "`refresh` renews what `login` got: give `login` too")
    ttl = raw.get("ttl")
    if isinstance(ttl, str):
        ttl = c.template(ttl, path + ("ttl",), with_auth)
    inject = raw.get("inject") or {}
    logout = c.request(raw["logout"], path + ("logout",), with_auth) if "logout" in raw else None
    return m.AuthScheme(
        type=kind, name=raw.get("name", kind), when=when,
        headers=c.templates_of(raw.get("headers"), path + ("headers",), known),
        username=tpl("username"), password=tpl("password"), token=tpl("token"), login=login,
        inject_headers=c.templates_of(inject.get("headers"), path + ("inject", "headers"), with_auth),
        inject_cookies=c.templates_of(inject.get("cookies"), path + ("inject", "cookies"), with_auth),
        inject_query=c.templates_of(inject.get("query"), path + ("inject", "query"), with_auth),
        ttl=ttl, logout=logout, refresh=refresh, access_key=tpl("access_key"), secret_key=tpl("secret_key"),
        session_token=tpl("session_token"), region=tpl("region"), service=tpl("service"), sign=_signer(c, raw, path))


def _signer(c: Compiler, raw: dict, path: tuple) -> str | None:
    """auth type python: a signing function the mapping's python module declares under `auth`."""
    name = raw.get("sign")
    if name is not None and (c.extension is None or name not in c.extension.signers):
        declared = ", ".join(c.extension.signers) if c.extension else "none (no `python` section)"
        c.error(path + ("sign",), f"no signing function `{name}` in python.auth (declared: {declared or 'none'})")
    return None if name is None else str(name)


def _login(c: Compiler, raw: dict, path: tuple, known: set) -> m.Login:
    return m.Login(c.request(raw["request"], path + ("request",), known), tuple(raw.get("accept", ())),
                   c.extractions(raw.get("extract"), path + ("extract",), known),
                   frozenset(map(str, raw.get("public", ()))),
                   c.extractions(raw.get("endpoints") or {}, path + ("endpoints",), known))


def _poll(c: Compiler, name: str, raw: dict, path: tuple, fragments: dict) -> m.PollRule:
    handle = []
    for key, spec in raw["handle"].items():
        try:
            re.compile(spec["pattern"])
        except re.error as exc:
            c.error(path + ("handle", key, "pattern"), f"bad regular expression: {exc}")
        handle.append((str(key), m.HandleKey(spec["pattern"], bool(spec.get("required", True)))))
    known = {"task"}
    steps = c.steps(raw["steps"], path + ("steps",), known, fragments)
    c.poll_known[name] = set(known)
    return m.PollRule(name, tuple(handle), steps, c.value(raw["state"], path + ("state",), known),
                      c.template(raw["error"], path + ("error",), known) if "error" in raw else None,
                      c.value(raw["output"], path + ("output",), known) if "output" in raw else None)


def _check_tasks(c: Compiler, methods: dict, controls: dict, polls: dict) -> None:
    for section, ops in (("methods", methods), ("controls", controls)):
        for name, op in ops.items():
            path = (section, name)
            if section == "methods" and name in TASK_METHODS and op.task is None:
                c.error(path, f"{name} starts long work: it needs a `task` (poll or completed)")
            if section == "methods" and name in RESULT_METHODS and op.result is None:
                c.error(path, f"{name} needs a `result`")
            if op.task and op.task.poll:
                _check_handle(c, path + ("task",), op.task, polls)
            for step in m.every_step(op.steps):
                if step.wait is not None:
                    _check_handle(c, path + ("steps",), step.wait, polls)


def _check_handle(c: Compiler, path: tuple, task: m.TaskStart, polls: dict) -> None:
    rule = polls.get(task.poll)
    if rule is None:
        c.error(path + ("poll",), f"no poll rule `{task.poll}` under `tasks`")
        return
    declared = {k for k, _ in rule.handle}
    given = {k for k, _ in task.handle}
    for key in sorted(given - declared):
        c.error(path + ("handle", key), f"poll rule `{task.poll}` declares no handle key `{key}`")
    for key in sorted(k for k, spec in rule.handle if spec.required and k not in given):
        c.error(path + ("handle",), f"poll rule `{task.poll}` requires handle key `{key}`")


def _capabilities(c: Compiler, raw: dict, methods: dict, controls: dict, auth: tuple) -> m.Capabilities:
    path = ("capabilities",)
    for name in ("guests/list", "guests/get"):
        if name not in methods:
            c.error(("methods",), f"every mapping needs {name} (basic functionality level)")
    for name in BASIC_CONTROLS:
        if name not in controls:
            c.error(("controls",), f"every mapping needs control `{name}` (basic functionality level)")
    if "provider/connect" not in methods and not any(a.type == "session" for a in auth):
        c.error(("methods",), "provider/connect needs steps that make a real call (or a session login)")
    clones = all(n in methods for n in ("guests/convert", "guests/clone")) and "delete" in controls
    snapshots = all(n in methods for n in SNAPSHOT_METHODS)
    best = "versioning" if clones and snapshots else "basic" if clones else "none"
    level = raw.get("template_method", best)
    if LEVELS.index(level) > LEVELS.index(best):
        missing = _missing(methods, controls, level)
        c.error(path + ("template_method",), f"template_method {level} needs {', '.join(missing)}")
    links = bool(raw.get("can_link_clones", False))
    if links and (level == "none" or not snapshots):
        c.error(path + ("can_link_clones",), "can_link_clones needs template_method basic or versioning and "
                                             "all four snapshot methods")
    suspend = "suspend" in controls and raw.get("can_suspend_guests", True)
    if raw.get("can_suspend_guests") and "suspend" not in controls:
        c.error(path + ("can_suspend_guests",), "can_suspend_guests needs a `suspend` control")
    return m.Capabilities(raw.get("guests_polling_rate", 15), raw.get("tasks_polling_rate", 3),
                          raw.get("tasks_polling_retries", 20), level, links, bool(suspend))


def _missing(methods: dict, controls: dict, level: str) -> list:
    need = ["guests/convert", "guests/clone"] + (list(SNAPSHOT_METHODS) if level == "versioning" else [])
    out = [n for n in need if n not in methods]
    return out + ([] if "delete" in controls else ["control delete"])


def _check_engine(c: Compiler, need: str | None) -> None:
    if need and version_tuple(__version__) < version_tuple(need):
        c.error(("metadata", "engine"), f"this mapping needs cpfmap {need}; this is cpfmap {__version__}")


def compile_mapping(located, names: dict | None = None) -> tuple:
    """(mapping, findings); names: what Templates.names held for these exact files before."""
    from cpfmap.language.sections import build
    raw = located.data.get("python") if isinstance(located.data, dict) else None
    extension, problem = None, None
    if isinstance(raw, dict):
        try:
            extension = extensions.load(extensions.declared_in(located), raw, _reserved_filters())
        except extensions.ExtensionError as exc:
            problem = exc
    c = Compiler(located, names, extension.filters if extension else None, extension.functions if extension else None)
    c.extension = extension
    if problem is not None:
        c.error(("python", problem.key), str(problem))
    return build(c, located.data)


def _reserved_filters() -> set[str]:
    import jinja2.filters

    from cpfmap.language.templating import FILTERS
    return set(jinja2.filters.FILTERS) | set(FILTERS) | {"translate", "string_id"}

