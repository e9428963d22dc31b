"""Run the steps of an operation: render -> send -> check -> extract, with `when`,
`set`, `fail`, `on_error` fallbacks, pagination and a TTL cache for GET replies."""
from __future__ import annotations

import urllib.parse
from typing import Any, Callable

from . import model as m
from .clock import Clock
from .errors import BackendError, TransportError
from .extract import body_of, extract_from, extract_value, link_target, string_id
from .session import Backend, message_of
from .templating import Template
from .transport import HttpResponse


class Cache:
    """GET replies by URL, for `cache: seconds`; any write empties it."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.entries: dict[str, tuple[float, Any]] = {}

    def get(self, key: str) -> Any:
        hit = self.entries.get(key)
        if hit and hit[0] > self.clock.now():
            return hit[1]
        self.entries.pop(key, None)
        return None

    def put(self, key: str, ttl: float, value: Any) -> None:
        self.entries[key] = (self.clock.now() + ttl, value)

    def clear(self) -> None:
        self.entries.clear()


class _Again(Exception):
    """A refusal an on_error rule answers by running the steps again (`retry`)."""

    def __init__(self, rule: m.ErrorRule, step: m.Step, error: BackendError) -> None:
        super().__init__(error.message)
        self.rule, self.step, self.error = rule, step, error


class StepRunner:
    def __init__(self, backend: Backend, cache: Cache,
                 waiter: Callable[[m.TaskStart, dict], None] | None = None) -> None:
        self.backend = backend
        self.cache = cache
        self.waiter = waiter  # polls the backend task a step started (step.wait)

    def run(self, steps: tuple, context: dict) -> dict:
        """Run steps in order, adding their variables to context; returns context. A refusal
        whose on_error rule says `retry` runs them again from the rule's step, a bounded number
        of times."""
        index = 0
        refusals: dict[int, int] = {}  # times each retry rule was used
        while index < len(steps):
            try:
                self._step(steps[index], context)
            except _Again as again:
                count = refusals[id(again.rule)] = refusals.get(id(again.rule), 0) + 1
                if count >= again.rule.retry:
                    raise again.error.context(f"refused {count} times") from None
                index = _restart(steps, index, again.rule.retry_from)
                continue
            index += 1
        return context

    def _step(self, step: m.Step, context: dict) -> None:
        if step.when is not None and not step.when.render(context):
            return
        if step.steps:
            self.run(step.steps, context)
            return
        if step.fail is not None:
            raise BackendError(str(step.fail.render(context)))
        for name, value in step.set:
            context[name] = value.eval(context)
        if step.request is not None:
            self._request(step, context)

    def _request(self, step: m.Step, context: dict) -> None:
        wait = True
        try:
            response = self._fetch(step, context)
        except TransportError as exc:
            wait = self._refused(step, context, 0, exc.message, exc, None)
        else:
            if isinstance(response, HttpResponse) and not step.accepts(response.status):
                message = message_of(response, self.backend.mapping.connection.error_message)
                wait = self._refused(step, context, response.status, message, None, response)
            else:
                for name, extraction in step.extract:
                    context[name] = self._extract(extraction, response, context)
        # Also after an on_error rule that recovered (its `set` may name the task), unless it says wait: false.
        if wait and step.wait is not None and self.waiter is not None:
            self.waiter(step.wait, context)

    def _extract(self, extraction: m.Extraction, response: Any, context: dict) -> Any:
        if isinstance(response, HttpResponse):
            return extract_value(extraction, response, context)
        return extract_from(extraction, response, context)  # the items of every page, joined

    def _refused(self, step: m.Step, context: dict, status: int, message: str,
                 exc: TransportError | None, response: HttpResponse | None) -> bool:
        """Apply the first on_error rule that covers the refusal (whether the step's wait still
        runs), or raise."""
        error = {"status": status, "message": message, "reason": response.reason if response is not None else "",
                 "body": _json_or_none(response)}
        for rule in step.on_error:
            if rule.covers(status, message):
                ctx = dict(context, error=error)
                if rule.fail is not None:
                    raise BackendError(str(rule.fail.render(ctx)))
                if rule.retry and exc is None:  # the rule's match says this refusal did nothing
                    raise _Again(rule, step, self._failure(step, context, status, message))
                if rule.retry:
                    continue
                context.update(rule.set.eval(ctx) if rule.set else {})
                return rule.wait
        if exc is not None:
            raise exc
        raise self._failure(step, context, status, message)

    def _failure(self, step: m.Step, context: dict, status: int, message: str) -> BackendError:
        error = BackendError(f"{self._label(step, context)} failed: HTTP {status}: {message}")
        error.status = status
        return error

    def _label(self, step: m.Step, context: dict) -> str:
        try:
            path = str(step.request.path.render(dict(context, auth={})))
        except BackendError:
            path = step.request.path.source
        return step.name or f"{step.request.method} {path}"

    # ------------------------------------------------------------ fetching

    def _fetch(self, step: m.Step, context: dict) -> Any:
        if step.paginate is not None:
            return self._pages(step, context)
        cached = bool(step.cache) and step.request.method == "GET"
        key = self.backend.build(step.request, context).url if cached else ""
        if key:
            hit = self.cache.get(key)
            if hit is not None:
                return hit
        if step.request.method not in ("GET", "HEAD"):
            self.cache.clear()
        response = self.backend.send(step.request, context, retry_safe=step.idempotent)
        if key and step.accepts(response.status):
            self.cache.put(key, step.cache, response)
        return response

    def _pages(self, step: m.Step, context: dict) -> Any:
        """Every page's items joined into one list (the body extractions read)."""
        spec = step.paginate
        size = _page_size(spec.size.render(context)) if isinstance(spec.size, Template) else spec.size
        items: list = []
        url: str | None = None
        cursor: Any = None
        for number in range(spec.max_pages):
            query, url = self._page_position(spec, number, len(items), cursor, size, url,
                                             step.request.endpoint)
            response = self.backend.send(step.request, context, query=query, url=url,
                                         retry_safe=step.idempotent)
            if not step.accepts(response.status):
                return response
            body = body_of(response)
            page = spec.items.search(body, context) or []
            if not isinstance(page, list):
                raise BackendError(f"paginate.items `{spec.items.source}` gave {type(page).__name__}, not a list")
            items.extend(page)
            cursor = self._next(spec, response, body, context)
            if self._last_page(spec, page, cursor, size):
                return items
            if url is None and spec.type in ("next_link", "link_header"):  # a relative link resolves against it
                url = self.backend.build(step.request, context).url
        raise BackendError(f"more than {spec.max_pages} pages; raise paginate.max_pages if that is expected")

    @staticmethod
    def _next(spec: m.Paginate, response: HttpResponse, body: Any, context: dict) -> Any:
        """The next cursor or URL: from the Link header, the headers or the body."""
        if spec.type == "link_header":
            return link_target(response.header("Link"), "next")
        if spec.cursor is None:
            return None
        data = {k.lower(): v for k, v in response.headers} if spec.cursor_from == "headers" else body
        return spec.cursor.search(data, context)

    def _page_position(self, spec: m.Paginate, number: int, seen: int, cursor: Any, size: int | None,
                       url: str | None, endpoint: str | None) -> tuple:
        """(query pairs, URL or None) of page `number`; url is the page before's."""
        limit = [(spec.limit_param, str(size))] if size is not None else []
        if spec.type == "offset":
            return [(spec.offset_param, str(seen))] + limit, None
        if spec.type == "page":
            return [(spec.page_param, str(spec.first_page + number))] + limit, None
        if spec.type == "cursor":
            return ([(spec.cursor_param, string_id(cursor))] if number else []) + limit, None
        if not number:
            return limit, None
        return [], self.backend.within_base(urllib.parse.urljoin(url or "", str(cursor)), endpoint)

    @staticmethod
    def _last_page(spec: m.Paginate, page: list, cursor: Any, size: int | None) -> bool:
        if spec.type in ("offset", "page"):
            return len(page) < (size or 0)
        return cursor in (None, "")


def _json_or_none(response: HttpResponse | None) -> Any:
    try:
        return response.json() if response is not None else None
    except (ValueError, UnicodeDecodeError):
        return None


def _restart(steps: tuple, index: int, name: str) -> int:
    """Where a retry starts: the named step at or before index, or index itself."""
    if not name:
        return index
    for back in range(index, -1, -1):
        if steps[back].name == name:
            return back
    raise BackendError(f"retry from `{name}`: no such step before `{steps[index].name or steps[index].where}`")


def _page_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise BackendError(f"paginate.size must be a positive whole number, got {value!r}")
