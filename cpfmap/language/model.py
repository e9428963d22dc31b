"""The compiled mapping: frozen dataclasses, every template and expression compiled.

Values (`Value`) are small trees built once at load and evaluated per call against a
context dict (settings, params, auth, task, step variables).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from cpfmap.errors import ConfigError
from cpfmap.language.expressions import Expression, Table
from cpfmap.language.templating import Kept, Placeholder, Template, Templates
from cpfmap.redact import MASK, MIN_SECRET

# ---------------------------------------------------------------- values

@dataclass(frozen=True)
class Literal:
    value: Any

    def eval(self, context: Mapping[str, Any]) -> Any:
        return self.value


@dataclass(frozen=True)
class TemplateValue:
    template: Template

    def eval(self, context: Mapping[str, Any]) -> Any:
        return self.template.render(context)


@dataclass(frozen=True)
class JmesValue:
    expression: Expression

    def eval(self, context: Mapping[str, Any]) -> Any:
        unknown = [str(context[n]) for n in re.findall(r"[A-Za-z_]\w*", self.expression.source)
                   if isinstance(context.get(n), Placeholder)]
        if unknown:   # explain: a value read from a reply not made; JMESPath would just give null
            return Placeholder(f"<`{self.expression.source}` over {', '.join(dict.fromkeys(unknown))}>")
        return self.expression.search(dict(context), context)


@dataclass(frozen=True)
class DictValue:
    items: tuple

    def eval(self, context: Mapping[str, Any]) -> Any:
        return {key: value.eval(context) for key, value in self.items}


@dataclass(frozen=True)
class ListValue:
    items: tuple

    def eval(self, context: Mapping[str, Any]) -> Any:
        return [value.eval(context) for value in self.items]


def without_nulls(value: Any) -> Any:
    """The one null rule of requests: an object member whose value is null is left out (json, at
    any depth; query, form and headers); list items stay. A Kept value is sent as written."""
    if isinstance(value, Kept):
        return value.value
    if isinstance(value, Mapping):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


Value = Literal | TemplateValue | JmesValue | DictValue | ListValue


# --------------------------------------------------------------- settings

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class Setting:
    name: str
    type: str = "string"
    required: bool = False
    default: Any = None
    secret: bool = False
    description: str = ""
    choices: tuple = ()

    def coerce(self, raw: Any) -> Any:
        """RAS's string (or a JSON scalar) -> the declared type; ConfigError naming the setting."""
        if raw is None or (isinstance(raw, str) and raw.strip() == ""):
            if self.required and self.default is None:
                raise ConfigError(f"setting `{self.name}` is required")
            return self.default
        value = self._convert(raw)
        if self.choices and value not in self.choices:
            raise ConfigError(f"setting `{self.name}` must be one of {list(self.choices)}")
        if self.secret and isinstance(value, str) and len(value) < MIN_SECRET and value != MASK:  # MASK: a replay
            # masking 1-3 characters everywhere would mangle every output; refusing keeps it out of all
            raise ConfigError(f"setting `{self.name}` is a secret shorter than {MIN_SECRET} characters: too short "
                              f"to be masked in replies, logs and recordings; use a longer one")
        return value

    def _convert(self, raw: Any) -> Any:
        shown = "<secret>" if self.secret else repr(raw)
        if self.type == "integer":
            if isinstance(raw, bool) or not isinstance(raw, (int, str)):
                raise ConfigError(f"setting `{self.name}` must be an integer, got {shown}")
            try:
                return int(str(raw).strip())
            except ValueError:
                raise ConfigError(f"setting `{self.name}` must be an integer, got {shown}") from None
        if self.type == "boolean":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE | _FALSE:
                return text in _TRUE
            raise ConfigError(f"setting `{self.name}` must be true or false, got {shown}")
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise ConfigError(f"setting `{self.name}` must be text, got {shown}")
        return str(raw)


# ---------------------------------------------------------------- requests

@dataclass(frozen=True)
class RequestSpec:
    method: str
    path: Template
    query: Value | None = None
    headers: Value | None = None
    json: Value | None = None
    form: Value | None = None
    body: Template | None = None
    content_type: str | None = None
    link: bool = False   # the path is one `{{ ... | raw_path }}`: a URL, or a path from the host root
    endpoint: str | None = None   # a service URL learned at login (auth.login.endpoints), else base_url


@dataclass(frozen=True)
class Extraction:
    expression: Expression
    source: str = "body"
    default: Any = None
    required: Template | None = None


@dataclass(frozen=True)
class ErrorRule:
    statuses: tuple = ()
    match: str | None = None
    fail: Template | None = None
    set: Value | None = None
    retry: int = 0         # run again (from retry_from) up to this many refusals
    retry_from: str = ""   # name of the step to run again from; "" is the refusing step
    wait: bool = True   # the step's `wait` still runs after this rule recovers

    def covers(self, status: int, message: str) -> bool:
        if self.statuses and status not in self.statuses:
            return False
        return self.match is None or re.search(self.match, message or "") is not None


@dataclass(frozen=True)
class Paginate:
    type: str
    items: Expression
    size: "int | Template | None" = None   # None: no page size is sent (cursor and link types)
    limit_param: str = "limit"
    offset_param: str = "offset"
    page_param: str = "page"
    first_page: int = 1
    cursor: Expression | None = None
    cursor_from: str = "body"
    cursor_param: str = "cursor"
    max_pages: int = 1000


@dataclass(frozen=True)
class Index:
    """A cached reply read as a collection: key -> item, built once per fetch."""
    items: Expression
    key: Expression
    lookup: Template | None = None   # the key this call wants: its item is what `from: entry` reads


@dataclass(frozen=True)
class Prefetch:
    """Refresh on a bounded pool of workers; RAS gets the value at hand meanwhile."""
    concurrency: int = 4
    wait: float = 1.0   # seconds a call waits for a first answer before using the defaults


@dataclass(frozen=True)
class Lookup:
    steps: tuple
    found: Template


@dataclass(frozen=True)
class Step:
    where: str
    name: str = ""
    when: Template | None = None
    request: RequestSpec | None = None
    accept: tuple = ()
    idempotent: bool = False
    already_done: tuple = ()          # (ErrorRule, ...): refusals of a repeat that mean it was done
    lookup: "Lookup | None" = None    # finds out whether a request that got no answer took effect
    cache: float = 0.0
    paginate: Paginate | None = None
    index: Index | None = None
    prefetch: Prefetch | None = None
    extract: tuple = ()   # ((name, Extraction), ...)
    set: tuple = ()       # ((name, Value), ...)
    remember: tuple = ()  # ((name, Value, seconds or None: the provider's lifetime), ...)
    fail: Template | None = None
    on_error: tuple = ()  # (ErrorRule, ...)
    wait: "TaskStart | None" = None
    steps: tuple = ()     # a `use` with `when`: the fragment's steps, run only if `when` holds
    refused_if: Expression | None = None   # over an accepted reply: a refusal in a 2xx (RPC-style)
    for_each: "Value | None" = None   # a read once per item (`item`); each extraction a list, in order

    def accepts(self, status: int) -> bool:
        return status in self.accept if self.accept else 200 <= status < 300


def every_step(steps: tuple):
    """The steps and, depth first, the steps of conditional fragments among them."""
    for step in steps:
        yield step
        yield from every_step(step.steps)


# ------------------------------------------------------------------- tasks

@dataclass(frozen=True)
class TaskStart:
    poll: str | None = None
    handle: tuple = ()          # ((key, Template), ...)
    completed: Value | None = None
    when: Template | None = None
    output: Value | None = None   # replaces the poll rule's output for tasks this operation starts


@dataclass(frozen=True)
class HandleKey:
    pattern: str
    required: bool = True


@dataclass(frozen=True)
class PollRule:
    name: str
    handle: tuple          # ((key, HandleKey), ...)
    steps: tuple
    state: Value
    error: Template | None = None
    output: Value | None = None


@dataclass(frozen=True)
class Operation:
    name: str
    steps: tuple = ()
    result: Value | None = None
    task: TaskStart | None = None
    description: str = ""


# -------------------------------------------------------------------- auth

@dataclass(frozen=True)
class Login:
    request: RequestSpec
    accept: tuple
    extract: tuple   # ((name, Extraction), ...)
    public: frozenset = frozenset()   # field names of the login exchange that are not secret
    endpoints: tuple = ()   # ((name, Extraction), ...): service URLs, not secrets


@dataclass(frozen=True)
class AuthScheme:
    type: str
    name: str = ""
    when: Template | None = None
    headers: tuple = ()      # ((name, Template), ...)
    username: Template | None = None
    password: Template | None = None
    token: Template | None = None
    login: Login | None = None
    inject_headers: tuple = ()
    inject_cookies: tuple = ()
    inject_query: tuple = ()
    ttl: "float | Template | None" = None   # a template reads the login reply (auth.*)
    logout: RequestSpec | None = None
    refresh: Login | None = None   # renews a session from the previous one's values
    access_key: Template | None = None   # aws_sigv4: the credentials and what they are for
    secret_key: Template | None = None
    session_token: Template | None = None
    region: Template | None = None
    service: Template | None = None
    sign: str | None = None   # python: the name of a signing function in the pack's module (AUTH)


@dataclass(frozen=True)
class Connection:
    base_url: Template
    verify_tls: Value = Literal(True)
    ca_file: Value = Literal(None)
    client_cert: Value = Literal(None)
    client_key: Value = Literal(None)
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    total_timeout: float = 120.0
    reply_deadline: float = 30.0    # seconds every CPF reply has, from the request's arrival
    max_response_bytes: int = 64 * 1024 * 1024
    headers: tuple = ()
    retries: int = 3
    backoff: float = 0.5
    resend_writes_on: tuple = ()    # statuses the API documents as "not applied"
    max_retry_wait: float = 60.0    # longest Retry-After honoured
    error_message: Expression | None = None
    hosts: Value | None = None   # a list: base_url is rendered once per host, tried in order
    xml_lists: tuple = ()        # XML element names always read as lists
    refused_if: Expression | None = None   # every step's default for Step.refused_if
    params: Value | None = None  # sent with every request: in its form, else in its query
    secret_fields: frozenset = frozenset()   # more body/query field names masked in recordings (lower case)
    public_fields: frozenset = frozenset()   # secret-looking field names kept in recordings (lower case)


@dataclass(frozen=True)
class Capabilities:
    guests_polling_rate: int = 15
    tasks_polling_rate: int = 3
    tasks_polling_retries: int = 20
    template_method: str = "none"
    can_link_clones: bool = False
    can_suspend_guests: bool = False

    def as_reply(self) -> dict:
        return {"can_suspend_guests": self.can_suspend_guests,
                "guests_polling_rate": self.guests_polling_rate,
                "tasks_polling_rate": self.tasks_polling_rate,
                "tasks_polling_retries": self.tasks_polling_retries,
                "template_method": self.template_method,
                "can_link_clones": self.can_link_clones}


@dataclass(frozen=True)
class CompiledMapping:
    name: str
    files: tuple
    metadata: Mapping[str, Any]
    settings: tuple              # (Setting, ...)
    connection: Connection
    auth: tuple                  # (AuthScheme, ...)
    methods: Mapping[str, Operation]
    controls: Mapping[str, Operation]
    polls: Mapping[str, PollRule]
    tables: Mapping[str, Table]
    capabilities: Capabilities
    templates: Templates = field(repr=False, compare=False, default=None)  # type: ignore[assignment]
    python: Any = field(repr=False, compare=False, default=None)   # extensions.Extension: the pack's module

    def setting(self, name: str) -> Setting | None:
        return next((s for s in self.settings if s.name == name), None)

    def coerce_settings(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        return {s.name: s.coerce(raw.get(s.name)) for s in self.settings}

    def secret_settings(self) -> tuple:
        return tuple(s.name for s in self.settings if s.secret)
