"""For people writing mappings: explain a method's requests without sending them, call one
method against the backend or a recording, scaffold a new pack."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

from . import model as m
from .clock import RealClock, VirtualClock
from .engine import Engine
from .errors import BackendError, ConfigError, CpfmapError
from .redact import Redactor
from .rpc import PARAMS, Server, engine_handlers
from .session import Backend
from .spec import PACKS_DIR
from .transcript import http_entry
from .transport import Exchange, TracingTransport, Transport


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
    """Settings for explain: given ones coerced, the rest their default or `<name>`."""
    out = {}
    for setting in mapping.settings:
        try:
            value = setting.coerce(raw.get(setting.name))
        except ConfigError:
            value = None
        out[setting.name] = f"<{setting.name}>" if value is None and setting.type == "string" else value
    return out


def show_request(request, redactor: Redactor) -> list[str]:
    shown = http_entry(request, None, redactor)  # the same masking as dry-run transcripts
    lines = [f"{shown['method']} {shown['url']}"] + [f"  {k}: {v}" for k, v in shown["headers"].items()]
    return lines + ([f"  body: {shown['body']}"] if shown["body"] else [])


def explain(mapping: m.CompiledMapping, method: str, params: dict, raw_settings: dict) -> Iterator[str]:
    """The requests `method` would send, rendered, secrets masked; nothing is sent."""
    redactor = Redactor()
    settings = placeholder_settings(mapping, raw_settings)
    for setting in mapping.settings:
        if setting.secret:
            redactor.add(settings.get(setting.name))
    backend = Backend(mapping, _Nowhere(), VirtualClock(), redactor, settings)
    yield f"# {mapping.name}: {method} {json.dumps(params)} (auth: {backend.scheme.name})"
    if backend.scheme.login is not None:
        yield "login (once per session; credentials from its reply go on every request):"
        yield from _indent(show_request(backend.build(backend.scheme.login.request, {"settings": settings}), redactor))
    backend.auth = {name: f"<{name} from login>" for name, _ in (backend.scheme.login.extract if backend.scheme.login else ())}
    operation = _operation(mapping, method, params)
    context: dict = {"settings": settings, "params": params}
    for n, step in enumerate(operation.steps, 1):
        yield from _explain_step(n, step, context, backend, redactor)
    if operation.task is not None:
        task = operation.task
        yield (f"then: a task, polled by rule `{task.poll}` (tasks/get)" if task.poll
               else "then: a task that reports completed at once")


def _operation(mapping: m.CompiledMapping, method: str, params: dict) -> m.Operation:
    if method == "guests/control":
        op = mapping.controls.get(params.get("control", ""))
        if op is None:
            raise CpfmapError(f"no control {params.get('control')!r}; controls: {', '.join(mapping.controls)}")
        return op
    if method not in mapping.methods:
        raise CpfmapError(f"mapping {mapping.name} has no {method}; methods: {', '.join(mapping.methods)}")
    return mapping.methods[method]


def _explain_step(n: int, step: m.Step, context: dict, backend: Backend, redactor: Redactor) -> Iterator[str]:
    label = f"step {n}" + (f" ({step.name})" if step.name else "")
    if step.when is not None:
        try:
            if not step.when.render(context):
                yield f"{label}: skipped (`{step.when.source}` is false)"
                return
        except BackendError:
            yield f"{label}: runs only if `{step.when.source.strip()}` (known from an earlier reply)"
    if step.steps:
        for inner in step.steps:
            yield from _explain_step(n, inner, context, backend, redactor)
        return
    for name, value in step.set:
        try:
            context[name] = value.eval(context)
        except BackendError:
            pass
    if step.fail is not None:
        yield f"{label}: fails with: {_try(step.fail, context)}"
    if step.request is None:
        return
    try:
        yield f"{label}:"
        yield from _indent(show_request(backend.build(step.request, context), redactor))
    except BackendError:
        missing = ", ".join(sorted(step.request.path.names - set(context))) or "values"
        yield f"  {step.request.method} {step.request.path.source}   (needs {missing} from an earlier reply; see --replay)"
    if step.paginate is not None:
        yield f"  every page ({step.paginate.type} pagination), items from `{step.paginate.items.source}`"
    if step.extract:
        yield "  extracts: " + ", ".join(f"{name} = {x.expression.source}" for name, x in step.extract)
    if step.wait is not None:
        yield f"  then waits for its task (rule `{step.wait.poll}`)"


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


def call(mapping: m.CompiledMapping, method: str, params: dict, raw_settings: dict, transport: Transport,
         replay: bool) -> tuple[dict, dict, list[Exchange], Redactor]:
    """Connect, then one method: (connect reply, reply, exchanges, redactor)."""
    clock = VirtualClock() if replay else RealClock()
    redactor = Redactor()
    tracing = TracingTransport(transport, clock.now if replay else __import__("time").monotonic)
    server = Server(engine_handlers(Engine(mapping, tracing, clock, redactor)), redactor)
    connected = server.handle_text(json.dumps({"method": "provider/connect", "params": {"settings": raw_settings}}))
    request = {"method": method, "params": params} if params else {"method": method}
    reply = server.handle_text(json.dumps(request)) if "result" in connected else connected
    return connected, reply, tracing.exchanges, redactor


def show_exchange(exchange: Exchange, redactor: Redactor) -> str:
    status = exchange.response.status if exchange.response is not None else f"no answer: {exchange.error}"
    head = f"-> {exchange.request.method} {redactor(exchange.request.url)}  <- {status} ({exchange.seconds * 1000:.0f} ms)"
    body = exchange.request.body
    return head + (f"\n   sent: {redactor(body.decode('utf-8', 'replace'))[:400]}" if body else "")


# ----------------------------------------------------------------- new-pack

PACK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{1,40}$")


def new_pack(name: str, root: Path = Path(".")) -> Path:
    if not PACK_NAME.match(name):
        raise ConfigError(f"pack name {name!r}: use lower-case letters, digits and dashes")
    folder = root / name
    if folder.exists():
        raise ConfigError(f"{folder} already exists")
    template_dir = Path(__file__).resolve().parent / "scaffold"
    (folder / "recordings").mkdir(parents=True)
    for source in template_dir.iterdir():
        text = source.read_text(encoding="utf-8").replace("PACKNAME", name)
        (folder / source.name.removesuffix(".tmpl")).write_text(text, encoding="utf-8", newline="\n")
    (folder / "recordings" / ".gitkeep").write_text("", encoding="utf-8")
    return folder
