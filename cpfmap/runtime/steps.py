"""Run the steps of an operation: render -> send -> check -> extract, with `when`,
`set`, `fail`, `on_error` fallbacks, pagination, and cached, indexed and prefetched GET
replies (cache.py)."""
from __future__ import annotations

import functools
import json
import logging
import sys
import urllib.parse
from typing import Any, Callable

from cpfmap.errors import BackendError, TransportError, WaitCut
from cpfmap.http.transport import HttpResponse, may_have_run
from cpfmap.language import model as m
from cpfmap.language.templating import Template
from cpfmap.protocol.values import string_id
from cpfmap.runtime.cache import SHARED, Cache, Fetched, InlinePrefetch, joined, parsed, staggered
from cpfmap.runtime.memory import Memory
from cpfmap.runtime.reading import PARTS, body_of, extract_from, link_target, reply_part
from cpfmap.runtime.session import Backend, message_of

log = logging.getLogger("cpfmap")
DONE = object()  # a lookup found that a request which got no answer took effect
AFTER_LOOKUP = "after lookup"   # (truthy) a repeat sent because the lookup found nothing
STALE_LIFETIMES = 2   # a prefetched answer is served stale until it is this many `cache` lifetimes old


class _Again(Exception):
    """A refusal an on_error rule answers by running the steps again (`retry`)."""

    def __init__(self, rule: m.ErrorRule, step: m.Step, error: BackendError) -> None:
        super().__init__(error.message)
        self.rule, self.step, self.error = rule, step, error


class StepRunner:
    def __init__(self, backend: Backend, cache: Cache,
                 waiter: Callable[[m.TaskStart, dict], None] | None = None, prefetch: Any = None,
                 memory: Memory | None = None) -> None:
        self.backend = backend
        self.cache = cache
        self.waiter = waiter  # polls the backend task a step started (step.wait)
        self.prefetch = prefetch or InlinePrefetch()
        self.memory = memory if memory is not None else Memory()  # step key `remember`

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
        if step.for_each is not None:
            self._each(step, context)
        elif step.request is not None:
            self._request(step, context)
        self._remember(step, context)

    def _remember(self, step: m.Step, context: dict) -> None:
        if step.remember:
            now = self.cache.clock.now()
            for name, value, seconds in step.remember:
                self.memory.add(name, value.eval(context), seconds, now)
            context["remembered"] = self.memory.view(now)

    def finish(self, steps: tuple, cut: m.Step, context: dict) -> None:
        """What follows a wait cut at the reply deadline (engine.py, when none of it sends a
        request): the cut step's `remember`, then the steps after it, at every level it is nested in."""
        self._remember(cut, context)
        for level, index in reversed(_path(steps, cut)):
            self.run(level[index + 1:], context)

    def _each(self, step: m.Step, context: dict) -> None:
        """`for_each`: the step's read once per item (as `item`), one at a time; each variable it
        gives (extractions, an on_error rule's `set`) becomes a list of the items' values, in order."""
        items = step.for_each.eval(context)
        if not isinstance(items, list):
            raise BackendError(f"{step.name or 'a step'}: `for_each` gave {type(items).__name__}, not a list")
        names = list(dict.fromkeys([name for name, _ in step.extract] + [
            key for rule in step.on_error if isinstance(rule.set, m.DictValue) for key, _ in rule.set.items]))
        rows = []
        for item in items:
            inner = {**context, **dict.fromkeys(names), "item": item}
            self._request(step, inner)
            rows.append([inner[name] for name in names])
        context.update({name: [row[i] for row in rows] for i, name in enumerate(names)})

    def _request(self, step: m.Step, context: dict) -> None:
        try:
            response, resent = self._send(step, context)
        except TransportError as exc:
            if self._refused(step, context, 0, exc.message, exc, None):
                self._wait(step, context, False)  # an on_error rule recovered (its `set` may name the task)
            return
        if response is DONE:
            return
        if response is None:   # a prefetch not answered in time: the extractions' defaults
            context.update((name, extraction.default) for name, extraction in step.extract)
            return
        reply = response.response if isinstance(response, Fetched) else None
        refusal = self._refusal_inside(step, response) if reply is not None and step.accepts(reply.status) else None
        if reply is not None and (refusal is not None or not step.accepts(reply.status)):
            message = refusal if refusal is not None else message_of(reply, self.backend.mapping.connection.error_message)
            if self._already_done(step, context, resent, reply.status, message) or \
                    self._took_effect_after_all(step, context, resent, message):
                return
            if not self._refused(step, context, reply.status, message, None, reply):
                return  # the rule that recovered said wait: false
        else:
            for name, extraction in step.extract:
                context[name] = self._extract(step, extraction, response, context)
        self._wait(step, context, resent)

    def _refusal_inside(self, step: m.Step, fetched: Fetched) -> str | None:
        """The message of a refusal in an accepted reply (`refused_if` holds over its body), or None."""
        conn = self.backend.mapping.connection
        expression = step.refused_if or conn.refused_if
        if expression is None:
            return None
        found = expression.search(fetched.body())
        if found in (None, False, "", [], {}):
            return None
        if isinstance(found, str) and found.strip():
            return " ".join(found.split())
        message = message_of(fetched.response, conn.error_message) if conn.error_message else ""
        return message or json.dumps(found, sort_keys=True)

    def _wait(self, step: m.Step, context: dict, resent: bool | str) -> None:
        if step.wait is None or self.waiter is None:
            return
        try:
            self.waiter(step.wait, context)  # type: ignore[misc]
        except WaitCut as cut:
            cut.step = step
            raise
        except BackendError as exc:
            if self._already_done(step, context, resent, None, exc.message) or \
                    self._took_effect_after_all(step, context, resent, exc.message):
                return
            for rule in step.on_error:  # a task that failed before it did anything: run again
                if rule.retry and not rule.statuses and rule.covers(None, exc.message):
                    raise _Again(rule, step, exc) from None
            raise

    def _send(self, step: m.Step, context: dict) -> tuple[Any, bool | str]:
        """The answer, and whether it answers a repeat of a request that may have taken effect
        (`already_done` reads those; AFTER_LOOKUP: sent again because the lookup found nothing);
        DONE when the step's lookup found that it took effect."""
        attempts = self.backend.mapping.connection.retries
        resent: bool | str = False
        for attempt in range(1, attempts + 1):
            try:
                response = self._fetch(step, context)
            except TransportError as exc:
                if step.lookup is None or not may_have_run(exc):
                    raise
                if self._took_effect(step, context, exc.message):
                    return DONE, True
                # After a read timeout the backend may still be at work: look, but never send again.
                if getattr(exc, "hung", False) or attempt == attempts:
                    raise
                log.info("%s: no answer, and the lookup says it did not take effect; sending it again",
                         self._label(step, context))
                resent = AFTER_LOOKUP
                continue
            reply = response.response if isinstance(response, Fetched) else response
            return response, resent or bool(getattr(reply, "resent", False))
        raise AssertionError("unreachable")  # pragma: no cover

    def _took_effect(self, step: m.Step, context: dict, lost: str) -> bool:
        try:
            self.run(step.lookup.steps, context)
            return bool(step.lookup.found.render(context))
        except BackendError as exc:
            raise BackendError(f"{lost}; not sent again: it may have taken effect, and the lookup that "
                               f"finds out could not tell ({exc.message})") from None

    def _took_effect_after_all(self, step: m.Step, context: dict, resent: bool | str, message: str) -> bool:
        """A repeat sent after the lookup found nothing was refused (or its task failed): the first
        attempt may have taken effect after the lookup looked (a connection that dropped before the
        backend answered), and the refusal may be its doing (e.g. its id taken). Look once more."""
        if resent != AFTER_LOOKUP or step.lookup is None:
            return False
        found = self._took_effect(step, context, f"{self._label(step, context)}: the repeat was refused ({message})")
        if found:
            log.info("%s: the repeat was refused (%s), and the lookup now finds the first attempt",
                     self._label(step, context), message)
        return found

    def _already_done(self, step: m.Step, context: dict, resent: bool | str, status: int | None, message: str) -> bool:
        if not resent or not any(rule.covers(status, message) for rule in step.already_done):
            return False
        log.info("%s: the repeat was refused as already done (%s): the first attempt took effect",
                 self._label(step, context), message)
        return True

    def _extract(self, step: m.Step, extraction: m.Extraction, fetched: Any, context: dict) -> Any:
        if not isinstance(fetched, Fetched):
            return extract_from(extraction, fetched, context)  # the items of every page, joined
        if extraction.source in PARTS:
            data: Any = reply_part(fetched.response, extraction.source)
        elif extraction.source == "entry":
            data = fetched.index(step.index).get(self._lookup(step, context))
        elif not _searched_once(extraction):
            data = fetched.body()
        else:
            return extract_from(extraction, fetched, context, fetched.search)
        return extract_from(extraction, data, context)

    @staticmethod
    def _lookup(step: m.Step, context: dict) -> str:
        return string_id(step.index.lookup.render(context))

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

    def _fetch(self, step: m.Step, context: dict) -> Fetched | list | None:
        """The answer; a request that got none raises TransportError (a cached one too)."""
        if step.paginate is not None and step.cache:
            fetched = self._cached(step, context)   # every page's items, one cached (and indexed) list
        elif step.paginate is not None:
            return self._pages(step, context)
        elif step.request.method in ("GET", "HEAD"):
            cached = step.cache and step.request.method == "GET"
            fetched = self._cached(step, context) if cached else self._answer(step, context)
        else:
            try:
                fetched = self._answer(step, context)
            finally:  # the write may have run whatever came back
                guest = _guest(context)
                self.cache.drop(guest) if guest is not None else self.cache.clear()
        if fetched is not None and fetched.error is not None:
            raise fetched.error
        return fetched

    def _answer(self, step: m.Step, context: dict, guest: str | None = SHARED, key: str = "") -> Fetched:
        """The answer, dated by when its request started: a reply's age counts the time it was on its way."""
        started = self.cache.clock.now()
        try:
            response = self._pages_as_one(step, context) if step.paginate is not None else \
                self.backend.send(step.request, context, retry_safe=step.idempotent)
        except TransportError as exc:
            return Fetched(None, exc, started, guest)
        fresh = step.prefetch is not None and self.cache.lookup(key) is None
        return Fetched(response, None, staggered(key, started, step.cache) if fresh else started, guest)

    def _cached(self, step: m.Step, context: dict) -> Fetched | None:
        key = sys.intern(self.backend.target(step.request, context))   # one copy: cache, budget, pending
        guest = SHARED if step.index is not None else _named_guest(key, context)
        entry = self.cache.lookup(key)
        if step.prefetch is not None:
            return self._prefetched(step, context, key, guest, entry)
        if self.cache.fresh(entry, step.cache) and not self._missing(step, entry, context):
            return entry
        return self.cache.fetch(key, lambda: self._answer(step, context, guest, key),
                                lambda got: got.error is None and step.accepts(got.response.status),
                                wait=self.backend.reply.left())

    def _missing(self, step: m.Step, entry: Fetched, context: dict) -> bool:
        """A key absent from a reused collection: the guest may be newer than the reply."""
        if step.index is None or step.index.lookup is None or not step.accepts(entry.response.status):
            return False
        key = self._lookup(step, context)
        return key != "" and key not in entry.index(step.index)   # "": this call asks for no key

    def _prefetched(self, step: m.Step, context: dict, key: str, guest: str | None,
                    entry: Fetched | None) -> Fetched | None:
        """Fresh: reuse. Otherwise refresh on the prefetch pool; RAS gets the stale value at
        once while it is less than STALE_LIFETIMES lifetimes old, or waits up to `prefetch.wait`
        for a new one (then: the defaults). A refresh that got no answer is never kept: the
        older answer stays, and ages out."""
        now = self.cache.clock.now()
        if self.cache.fresh(entry, step.cache):
            return entry
        usable = entry if self.cache.fresh(entry, step.cache * STALE_LIFETIMES) else None
        if usable is not None and self.cache.in_flight(key):
            return usable
        if not self.prefetch.admit(step.where, key, step.cache, now, usable is not None):
            return usable   # over the refresh budget: the stale value, refreshed in a later call
        ctx = dict(context)  # the caller's context changes while the refresh runs
        future = self.prefetch.submit(step.where, step.prefetch.concurrency,
                                      lambda: self._refresh(step, ctx, key, guest), key,
                                      deferrable=usable is not None)
        if future is not None and future.cancelled():   # the pool closed meanwhile
            future = None
        if future is not None and future.done():
            got = future.result() if future.exception() is None else None
            if got is not None and (got.error is None or usable is None):
                return got
            if usable is not None:
                return usable
        if usable is not None or future is None:
            return usable
        return self.prefetch.result(step.where, future, self.backend.reply.within(step.prefetch.wait))

    def _refresh(self, step: m.Step, context: dict, key: str, guest: str | None) -> Fetched:
        """A prefetch job: the answer, unless one came fresh while the job waited for a worker."""
        entry = self.cache.lookup(key)
        if self.cache.fresh(entry, step.cache):
            return entry
        return self.cache.fetch(key, lambda: parsed(self._answer(step, context, guest, key), _searched(step)),
                                lambda got: got.error is None)

    def _pages_as_one(self, step: m.Step, context: dict) -> HttpResponse:
        """Every page's items as one reply (what a cached paginated step keeps), or the refusal."""
        got = self._pages(step, context)
        return got.response if isinstance(got, Fetched) else joined(got)

    def _pages(self, step: m.Step, context: dict) -> list | Fetched:
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
                return Fetched(response)
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
        return response.data() if response is not None else None
    except (ValueError, UnicodeDecodeError):
        return None


def _searched_once(extraction: m.Extraction) -> bool:
    """An extraction of the body that reads nothing else: searched once per reply (Fetched.search)."""
    return extraction.source not in PARTS and extraction.source != "entry" \
        and not extraction.expression.reads_context and extraction.expression.path is None


def _searched(step: m.Step) -> tuple:
    """The step's extractions that _extract searches once per reply: a refresh searches them first."""
    return tuple(extraction.expression for _, extraction in step.extract if _searched_once(extraction))


def _restart(steps: tuple, index: int, name: str) -> int:
    """Where a retry starts: the named step at or before index, or index itself."""
    if not name:
        return index
    for back in range(index, -1, -1):
        if steps[back].name == name:
            return back
    raise BackendError(f"retry from `{name}`: no such step before `{steps[index].name or steps[index].where}`")


def _path(steps: tuple, step: m.Step) -> list[tuple[tuple, int]]:
    """(steps, index) at each level from the top down to `step`; [] if it is not there."""
    for index, item in enumerate(steps):
        if item is step:
            return [(steps, index)]
        inner = _path(item.steps or (), step)
        if inner:
            return [(steps, index), *inner]
    return []


def _page_size(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise BackendError(f"paginate.size must be a positive whole number, got {value!r}")


def _guest(context: dict) -> str | None:
    """The guest a call is about (the tag of what it fetches, and of what its writes touch)."""
    guest = (context.get("params") or {}).get("id")
    return None if guest is None else string_id(guest)


def _named_guest(url: str, context: dict) -> str | None:
    """The call's guest if the request's path names it (a per-guest reply), else SHARED."""
    guest = _guest(context)
    if guest is None or _quoted(guest) not in _path_of(url).split("/"):
        return SHARED
    return guest


@functools.lru_cache(maxsize=4096)
def _quoted(guest: str) -> str:
    return urllib.parse.quote(guest, safe="")


def _path_of(url: str) -> str:
    """urlsplit(url).path, for the URLs a session builds (scheme://host[:port]/path?query)."""
    rest = url.split("#", 1)[0].split("?", 1)[0]
    scheme = rest.find("://")
    if scheme < 0:
        return urllib.parse.urlsplit(url).path
    start = rest.find("/", scheme + 3)
    return rest[start:] if start >= 0 else ""
