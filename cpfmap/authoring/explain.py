"""For people writing mappings: explain a method's requests without sending them, call one
method against the backend or a recording, scaffold a new pack."""
from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from typing import Any, Iterator

from cpfmap.clock import VirtualClock
from cpfmap.errors import BackendError, ConfigError, CpfmapError
from cpfmap.language import loader
from cpfmap.language import model as m
from cpfmap.language.templating import Placeholder
from cpfmap.protocol.rpc import PARAMS
from cpfmap.recording.transcript import http_entry
from cpfmap.redact import Redactor
from cpfmap.runtime.session import Backend


def parse_params(method: str, pairs: list[str]) -> dict:
    """--param k=v pairs, typed as the method takes them (booleans: true/false)."""
    kinds = {name: kind for name, kind, _ in PARAMS.get(method, ())}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"--param {pair!r}: write name=value")
        out[key] = value.lower() in ("true", "1", "yes") if kinds.get(key) is bool else value
    return out


def placeholder_settings(mapping: m.CompiledMapping, raw: dict) -> dict:
    """Settings for explain: given ones checked as `call` and `serve` check them (a ConfigError
    naming the setting), the rest their default or `<name>`."""
    out = {}
    for setting in mapping.settings:
        given = raw.get(setting.name) not in (None, "")
        value = setting.coerce(raw.get(setting.name)) if given else setting.default
        out[setting.name] = f"<{setting.name}>" if value is None and setting.type == "string" else value
    return out


def given_settings(raw: dict) -> frozenset:
    return frozenset(name for name, value in raw.items() if value not in (None, ""))


def show_request(request, redactor: Redactor) -> list[str]:
    shown = http_entry(request, None, redactor)  # the same masking as dry-run transcripts
    lines = [f"{shown['method']} {shown['url']}"] + [f"  {k}: {v}" for k, v in shown["headers"].items()]
    return lines + ([f"  body: {shown['body']}"] if shown["body"] else [])


def explain(mapping: m.CompiledMapping, method: str, params: dict, raw_settings: dict) -> Iterator[str]:
    """The requests `method` would send, rendered, secrets masked; nothing is sent. A value that
    comes from a reply is shown as a placeholder naming its source."""
    redactor = Redactor()
    settings = placeholder_settings(mapping, raw_settings)
    for setting in mapping.settings:
        if setting.secret:
            redactor.add(settings.get(setting.name))
    backend = Backend(mapping, _Nowhere(), VirtualClock(), redactor, settings, given_settings(raw_settings))
    yield f"# {mapping.name}: {method} {json.dumps(params)} (auth: {backend.scheme.name})"
    login = backend.scheme.login
    if login is not None:
        yield "login (once per session; credentials from its reply go on every request):"
        yield from _indent(show_request(backend.build(login.request, {"settings": settings}), redactor))
    backend.auth = {name: Placeholder(f"<{name} from the login reply>") for name, _ in (login.extract if login else ())}
    backend.endpoints = {name: f"<{name} service URL, given at login>" for name, _ in (login.endpoints if login else ())}
    operation = _operation(mapping, method, params)
    context: dict = {"settings": settings, "params": params, "remembered": {}}   # nothing kept yet
    steps = list(_leaves(operation.steps))
    labels = step_labels(mapping, method, params, len(steps))
    for (number, fragment), step in zip(labels, steps):
        yield from _explain_step(number, fragment, step, context, backend, redactor)
    if operation.task is not None:
        task = operation.task
        yield (f"then: a task, polled by rule `{task.poll}` (tasks/get)" if task.poll
               else "then: a task that reports completed at once")


def _leaves(steps: tuple) -> Iterator[m.Step]:
    """The steps as the mapping numbers them: a `use` with `when` gives its fragment's steps,
    each under that `when` (unless it has its own)."""
    for step in steps:
        if not step.steps:
            yield step
            continue
        for inner in _leaves(step.steps):
            yield inner if inner.when is not None else dataclasses.replace(inner, when=step.when)


def _operation(mapping: m.CompiledMapping, method: str, params: dict) -> m.Operation:
    if method == "guests/control":
        op = mapping.controls.get(params.get("control", ""))
        if op is None:
            raise CpfmapError(f"no control {params.get('control')!r}; controls: {', '.join(mapping.controls)}")
        return op
    if method not in mapping.methods:
        raise CpfmapError(f"mapping {mapping.name} has no {method}; methods: {', '.join(mapping.methods)}")
    return mapping.methods[method]


def step_labels(mapping: m.CompiledMapping, method: str, params: dict, count: int) -> list[tuple[str, str]]:
    """(number, fragment) per compiled step, numbered as the mapping numbers its steps (set and
    fail steps counted): `3` is the third step; `2.1` the first step of the fragment step 2 uses."""
    try:
        data = loader.read(mapping.files[0]).data
    except CpfmapError:
        data = {}
    section, key = ("controls", params.get("control", "")) if method == "guests/control" else ("methods", method)
    raw = ((data.get(section) or {}).get(key) or {}).get("steps") or []
    labels = _labels(raw, data.get("fragments") or {}, "", "", 0)
    return labels if len(labels) == count else [(str(n), "") for n in range(1, count + 1)]


def _labels(raw: list, fragments: dict, prefix: str, fragment: str, depth: int) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for n, item in enumerate(raw, 1):
        if isinstance(item, dict) and "use" in item and depth < 8:
            out += _labels(fragments.get(item["use"]) or [], fragments, f"{prefix}{n}.", str(item["use"]), depth + 1)
        else:
            out.append((f"{prefix}{n}", fragment))
    return out


def _explain_step(number: str, fragment: str, step: m.Step, context: dict, backend: Backend,
                  redactor: Redactor) -> Iterator[str]:
    label = f"step {number}"
    about = ": ".join(x for x in (f"fragment {fragment}" if fragment else "", step.name) if x)
    head = label + (f" ({about})" if about else "")
    details: list[str] = []
    if step.when is not None:
        verdict = _condition(step.when, context)
        if verdict is False:
            yield f"{head}: skipped (`{step.when.source.strip()}` is false)"
            return
        if verdict is not True:
            details.append(f"runs only if `{step.when.source.strip()}` ({verdict})")
    for name, value in step.set:
        context[name] = _evaluated(name, value, context, label)
        details.append(f"sets {name} = {_shown(context[name])}")
    if step.fail is not None:
        details.append(f"fails with: {_try(step.fail, context)}")
    if step.request is not None:
        details += _request_lines(step, context, backend, redactor)
        for name, _ in step.extract:
            context[name] = Placeholder(f"<{name} from {label}>")
        for rule in step.on_error:
            context.update({k: Placeholder(f"<{k} from {label}>") for k in _set_names(rule.set)})
    yield f"{head}:"
    yield from _indent(details)


def _condition(when: m.Template, context: dict) -> bool | str:
    """True or False when explain knows the answer; otherwise why it cannot."""
    unknown = sorted(n for n in when.names if isinstance(context.get(n), Placeholder))
    if unknown:
        return "decided by " + ", ".join(str(context[n]) for n in unknown)
    try:
        return bool(when.render(context))
    except BackendError as exc:
        return f"cannot be decided here: {exc.message}"


def _evaluated(name: str, value: m.Value, context: dict, label: str) -> Any:
    if isinstance(value, m.DictValue):   # member by member: what is known is shown
        return {k: _evaluated(f"{name}.{k}", v, context, label) for k, v in value.items}
    if isinstance(value, m.ListValue):
        return [_evaluated(f"{name}[{i}]", v, context, label) for i, v in enumerate(value.items)]
    sources = sorted(n for n in _value_names(value) if isinstance(context.get(n), Placeholder))
    if sources:   # the step computes it; its sources are the names it reads (never the step itself)
        return Placeholder(f"<{name}, computed in {label} from {', '.join(sources)}>")
    try:
        return value.eval(context)
    except BackendError:
        return Placeholder(f"<{name} from {label}>")


def _value_names(value: Any) -> set[str]:
    if isinstance(value, m.TemplateValue):
        return set(value.template.names)
    if isinstance(value, m.JmesValue):
        return set(re.findall(r"[A-Za-z_]\w*", value.expression.source))
    if isinstance(value, (m.DictValue, m.ListValue)):
        items = value.items if isinstance(value, m.ListValue) else [v for _, v in value.items]
        return set().union(*(_value_names(v) for v in items)) if items else set()
    return set()


def _set_names(value: Any) -> list[str]:
    return [k for k, _ in value.items] if isinstance(value, m.DictValue) else []


def _shown(value: Any) -> str:
    return str(value) if isinstance(value, Placeholder) else json.dumps(value, default=str)


def _request_lines(step: m.Step, context: dict, backend: Backend, redactor: Redactor) -> list[str]:
    try:
        lines = [_unquoted(line) for line in show_request(backend.build(step.request, context), redactor)]
    except BackendError as exc:
        lines = [f"{step.request.method} {step.request.path.source}   (cannot be rendered here: {exc.message})"]
    if step.for_each is not None:
        lines.append("  sent once per item of `for_each` (as `item`); each extraction is a list")
    if step.paginate is not None:
        lines.append(f"  every page ({step.paginate.type} pagination), items from `{step.paginate.items.source}`")
    if step.extract:
        lines.append("  extracts: " + ", ".join(f"{name} = {x.expression.source}" for name, x in step.extract))
    if step.wait is not None:
        lines.append(f"  then waits for its task (rule `{step.wait.poll}`)")
    lost = _if_lost(step)
    if lost:
        lines.append(f"  if its answer is lost: {lost}")
    return lines


def _if_lost(step: m.Step) -> str:
    """What happens to this request after an answer that never came (GETs say nothing)."""
    if step.lookup is not None:
        return (f"{len(step.lookup.steps)} lookup step(s), then sent again only if `{step.lookup.found.source}` "
                "is false (a refusal of that repeat is looked up once more)")
    if step.idempotent:
        done = ", ".join(rule.match or f"HTTP {list(rule.statuses)}" for rule in step.already_done)
        return "sent again" + (f"; a repeat refused with `{done}` counts as done" if done else "")
    return "" if step.request.method in ("GET", "HEAD") else "fails (never sent again)"


def _unquoted(line: str) -> str:
    """Placeholders in a query string are shown as they are, not percent-encoded."""
    return re.sub(r"%3C[^&\s]*?%3E", lambda m: urllib.parse.unquote_plus(m.group(0)), line)


def _try(template: m.Template, context: dict) -> str:
    try:
        return str(template.render(context))
    except BackendError:
        return template.source


def _indent(lines: list[str]) -> Iterator[str]:
    for line in lines:
        yield "  " + line


class _Nowhere:
    def send(self, request):
        raise AssertionError("explain never sends")

    def close(self) -> None:
        pass


# ----------------------------------------------------------------- new-pack

PACK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,40}$")


