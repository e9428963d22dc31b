"""Reused GET replies, for steps with `cache: seconds`.

- A reply is parsed once, and each `index` of it (key -> item) built once, however many
  calls read it: the per-guest step after a bulk read is a dictionary lookup.
- Concurrent callers of one fetch share its single request (single flight).
- A write RAS makes through us drops what it touched: the entries fetched for that guest,
  and every shared one (collections list every guest). A fetch that was in flight across a
  write is returned to its caller but not kept.
- `prefetch` steps are refreshed on a bounded pool of worker threads (or inline, where
  determinism matters: record, replay, tests), and RAS gets the value at hand meanwhile.

Ages are counted on the engine's clock; under record and replay that is a LogicalClock,
so what is reused never depends on how fast a recording ran.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import logging
import queue
import sys
import threading
import time
import zlib
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from cpfmap.clock import Clock
from cpfmap.errors import BackendError, DeadlineReached, TransportError
from cpfmap.http.transport import HttpResponse
from cpfmap.language import model as m
from cpfmap.protocol.values import string_id
from cpfmap.runtime.reading import body_of

log = logging.getLogger("cpfmap")
MAX_ENTRIES = 100_000   # a bound on memory: the oldest entry goes first
MAX_QUEUED = 20_000     # refreshes waiting for a worker; more are skipped (the next get asks again)
WAIT_BURST = 1.0        # seconds callers of one prefetch pool may wait for answers at once...
WAIT_SHARE = 0.05       # ...and then this share of the time (see PooledPrefetch.result)
QUIET = 0.1             # seconds without a CPF request before a deferred refresh starts (Quiet)...
MAX_DEFER = 15.0        # ...or after this long in the queue, whatever RAS is doing
SHARED = None           # the guest tag of entries every guest reads (collections, calls without an id)


class Fetched:
    """One answer (or the transport error instead of one), parsed and indexed on first use."""

    __slots__ = ("response", "error", "at", "guest", "_body", "_indexes", "_searched")

    def __init__(self, response: HttpResponse | None, error: TransportError | None = None,
                 at: float = 0.0, guest: str | None = SHARED) -> None:
        self.response = response
        self.error = error
        self.at = at
        self.guest = guest
        self._body: Any = _UNSET
        self._indexes: dict = {}
        self._searched: dict | None = None

    def search(self, expression: Any) -> Any:
        """expression over the body, searched once per reply when it reads nothing else
        (no `var()`): every get after a cached fetch reuses the value."""
        if expression.reads_context or expression.path is not None:
            raise ValueError("search() is for context-free, non-trivial expressions")
        if self._searched is None:
            self._searched = {}
        if expression not in self._searched:
            self._searched[expression] = expression.search(self.body())
        return self._searched[expression]

    def body(self) -> Any:
        if self._body is _UNSET:
            body = body_of(self.response)
            if self.guest is not SHARED:   # one of thousands of per-guest replies: its names shared
                body = _shared_names(body)
            if self.response is not None:
                self.response = _Parsed.of(self.response, body)
            self._body = body
        return self._body

    def index(self, spec: m.Index) -> dict[str, Any]:
        """key -> item over the collection `spec.items`; the first item wins a duplicate key."""
        built = self._indexes.get(spec)
        if built is None:
            built = _build_index(spec, self.body())
            self._indexes[spec] = built
        return built


_UNSET = object()


def _shared_names(value: Any) -> Any:
    """value with every object member name interned: JSON parsing shares names within one
    reply, not across the thousands of per-guest replies a cache holds."""
    if type(value) is dict:
        return {sys.intern(k) if type(k) is str else k: _shared_names(v) for k, v in value.items()}
    if type(value) is list:
        return [_shared_names(v) for v in value]
    return value


def parsed(entry: Fetched, expressions: tuple = ()) -> Fetched:
    """entry with its body parsed and `expressions` (context-free: Fetched.search) searched now,
    by a background refresh rather than the reply that reads them; a body or search that fails
    is left for that reader to report."""
    if entry.response is not None and entry.error is None:
        try:
            entry.body()
            for expression in expressions:
                entry.search(expression)
        except (BackendError, ValueError, TypeError, LookupError):
            pass
    return entry


@dataclass(frozen=True)
class _Parsed(HttpResponse):
    """A reply whose body is parsed: kept without its bytes (data() gives the parsed value,
    never to be changed) and with its header texts shared: thousands are cached at once."""

    value: Any = None

    @classmethod
    def of(cls, response: HttpResponse, value: Any) -> "_Parsed":
        headers = tuple((sys.intern(k), sys.intern(v)) for k, v in response.headers)
        return cls(response.status, headers, b"", sys.intern(response.reason), response.elapsed, response.resent,
                   value=value)

    def json(self) -> Any:
        return self.value

    def data(self) -> Any:
        return self.value

    def text(self, limit: int = 400) -> str:
        return json.dumps(self.value)[:limit]


def joined(items: list) -> HttpResponse:
    """The items of every page of a paginated request, as one parsed reply."""
    return _Parsed(200, (), b"", "OK", 0.0, False, value=items)


def _build_index(spec: m.Index, body: Any) -> dict[str, Any]:
    items = spec.items.search(body)
    if items is None:
        return {}
    if not isinstance(items, list):
        raise BackendError(f"index.items `{spec.items.source}` gave {type(items).__name__}, not a list")
    out: dict[str, Any] = {}
    for item in items:
        key = spec.key.search(item)
        if key is not None:
            out.setdefault(string_id(key), item)
    return out


class _Flight:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.done = threading.Event()
        self.joined = threading.Event()   # someone shares this fetch (tests wait on it)
        self.result: Fetched | None = None
        self.exception: BaseException | None = None


class Cache:
    def __init__(self, clock: Clock, limit: int = MAX_ENTRIES) -> None:
        self.clock = clock
        self.limit = limit
        self.entries: dict[str, Fetched] = {}
        self.flights: dict[str, _Flight] = {}
        self.epoch = 0
        self.lock = threading.Lock()

    def lookup(self, key: str) -> Fetched | None:
        """The entry for key, whatever its age."""
        return self.entries.get(key)

    def fresh(self, entry: Fetched | None, seconds: float) -> bool:
        """entry's request started less than seconds ago."""
        return entry is not None and self.clock.now() - entry.at < seconds

    def fetch(self, key: str, produce: Callable[[], Fetched], keep: Callable[[Fetched], bool],
              wait: float | None = None) -> Fetched:
        """produce() once for all concurrent callers of key; kept when keep() says so. A caller
        never joins a fetch that started before a write (its answer may predate the write): it
        starts its own, and the older one lands unkept. wait: how long a caller that joins may
        wait (what is left of its reply deadline); None: the leader's own deadlines bound it."""
        with self.lock:
            flight = self.flights.get(key)
            leader = flight is None or flight.epoch != self.epoch
            if leader:
                flight = self.flights[key] = _Flight(self.epoch)
            else:
                flight.joined.set()
        if not leader:
            return self._follow(flight, wait)
        try:
            flight.result = produce()
        except BaseException as exc:
            flight.exception = exc
            raise
        finally:
            self._land(key, flight, keep)
        return flight.result

    @staticmethod
    def _follow(flight: _Flight, wait: float | None) -> Fetched:
        # the leader's request has its own deadlines (connect, read, total)
        if not flight.done.wait(None if wait is None else max(wait, 0.0)):
            raise DeadlineReached("a request this reply shares with a background refresh got no answer "
                                  "before the reply deadline (connection.reply_deadline)")
        if flight.exception is not None:
            raise flight.exception
        assert flight.result is not None
        return flight.result

    def _land(self, key: str, flight: _Flight, keep: Callable[[Fetched], bool]) -> None:
        with self.lock:
            if self.flights.get(key) is flight:
                del self.flights[key]
            result = flight.result
            if result is not None and flight.epoch == self.epoch and keep(result):
                self._put(key, result)
        flight.done.set()

    def _put(self, key: str, entry: Fetched) -> None:
        self.entries.pop(key, None)
        while len(self.entries) >= self.limit:
            del self.entries[next(iter(self.entries))]
        self.entries[key] = entry

    def in_flight(self, key: str) -> bool:
        """A fetch of key started since the last write is under way."""
        with self.lock:
            flight = self.flights.get(key)
            return flight is not None and flight.epoch == self.epoch

    def drop(self, guest: str | None) -> None:
        """After a write for `guest` (None: for no guest in particular): its entries and the
        shared ones go; a fetch in flight now will not be kept."""
        with self.lock:
            self.epoch += 1
            for key in [k for k, e in self.entries.items() if e.guest is SHARED or e.guest == guest]:
                del self.entries[key]

    def clear(self) -> None:
        with self.lock:
            self.epoch += 1
            self.entries.clear()


def staggered(key: str, now: float, seconds: float) -> float:
    """The age a first answer is counted from: spread over one lifetime by the key, so answers
    fetched together in one sweep are refreshed over the following ones, not all at once."""
    return now - (zlib.crc32(key.encode("utf-8")) % 1000) / 1000.0 * seconds


# ------------------------------------------------------------- prefetching

class Quiet:
    """Whether the serve thread is answering RAS. A refresh of a value RAS is being served
    meanwhile (a stale one) waits for a pause: in the same process it would compete with the
    replies for the interpreter, so a sweep would take longer for work that can wait a few
    seconds. It starts once no request has been answered for `quiet` seconds, or while every
    request being answered waits for a refresh, or after `longest` seconds whatever happens.

    Shared: the serve thread calls begin/end/waiting, the refresh workers wait(); every field is
    guarded by the condition's lock. Time is the real clock (it bounds real waiting)."""

    def __init__(self, quiet: float = QUIET, longest: float = MAX_DEFER,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet
        self.longest = longest
        self.now = now
        self.cond = threading.Condition()
        self.answering = 0   # requests being answered
        self.waiting = 0     # of them, those waiting for a refresh
        self.since = now() - quiet   # when the last answer went out
        self.released = 0    # release() calls: a pool closing ends every wait
        self.parked = threading.Event()   # a refresh waited for a pause (tests wait on it)

    def begin(self) -> None:
        with self.cond:
            self.answering += 1

    def end(self) -> None:
        with self.cond:
            self.answering -= 1
            self.since = self.now()
            self.cond.notify_all()

    @contextlib.contextmanager
    def waiting_for_refresh(self) -> Iterator[None]:
        with self.cond:
            self.waiting += 1
            self.cond.notify_all()
        try:
            yield
        finally:
            with self.cond:
                self.waiting -= 1

    def release(self) -> None:
        """End every wait now (the pool is closing)."""
        with self.cond:
            self.released += 1
            self.cond.notify_all()

    def wait(self, queued_at: float) -> None:
        """Until a pause (see the class), at most until queued_at + longest."""
        until = queued_at + self.longest
        with self.cond:
            released = self.released
            while True:
                now = self.now()
                if now >= until or self.released != released or (self.answering and self.answering == self.waiting):
                    return
                left = until - now
                if not self.answering:
                    pause = self.since + self.quiet - now
                    if pause <= 0:
                        return
                    left = min(left, pause)
                self.parked.set()
                self.cond.wait(left)


class InlinePrefetch:
    """Refreshes run at once on the caller's thread: deterministic (record, replay, tests)."""

    def begin(self) -> None:
        """Nothing waits for a pause here."""

    def end(self) -> None:
        """Nothing waits for a pause here."""

    def admit(self, pool: str, key: str, seconds: float, now: float, stale: bool) -> bool:
        """Every refresh runs: inline refreshes follow the (logical) clock alone."""
        return True

    def submit(self, pool: str, limit: int, job: Callable[[], Fetched], key: str = "",
               deferrable: bool = False) -> Future | None:
        future: Future = Future()
        try:
            future.set_result(job())
        except BaseException as exc:   # handed to whoever reads the future
            future.set_exception(exc)
        return future

    def result(self, pool: str, future: Future, wait: float) -> Fetched | None:
        try:
            return future.result(timeout=wait)
        except TimeoutError:
            return None

    def close(self, wait: float = 0.0) -> int:
        """Nothing runs in the background: nothing is left running."""
        return 0


class PooledPrefetch:
    """Refreshes run on at most `limit` daemon threads per pool (one pool per step), so a
    backend is never flooded; a caller waits for one only as long as the step allows. A refresh
    nobody waits for (a stale value is served meanwhile) is deferred to a pause in RAS's
    requests (Quiet); one a reply waits for goes first."""

    def __init__(self, max_queued: int = MAX_QUEUED, quiet: Quiet | None = None) -> None:
        self.max_queued = max_queued
        self.quiet = quiet or Quiet()
        self.order = itertools.count()   # first in, first out within a priority
        self.queues: dict[str, queue.PriorityQueue] = {}
        self.budgets: dict[str, _Budget] = {}
        self.waits: dict[str, _WaitBudget] = {}
        self.pending: dict[tuple, Future] = {}   # (pool, key) -> the refresh queued or running for it
        self.threads: list[threading.Thread] = []
        self.failed = 0                     # refreshes that failed since the last close (reported there)
        self.closing = threading.Event()    # set when close() begins (tests wait on it)
        self.lock = threading.Lock()

    def admit(self, pool: str, key: str, seconds: float, now: float, stale: bool) -> bool:
        """May this refresh run now? First answers always; stale ones at most at the steady
        rate (the pool's keys per lifetime), so answers fetched together in one long sweep are
        refreshed over the following ones, not all at once (the stale value is served meanwhile)."""
        with self.lock:
            budget = self.budgets.setdefault(pool, _Budget())
            return budget.admit(key, seconds, now, stale)

    def begin(self) -> None:
        """A CPF request is being answered (Engine.answering)."""
        self.quiet.begin()

    def end(self) -> None:
        self.quiet.end()

    def submit(self, pool: str, limit: int, job: Callable[[], Fetched], key: str = "",
               deferrable: bool = False) -> Future | None:
        """The refresh of key, queued; one already queued or running for key is not queued again
        (its future is returned). deferrable: nobody waits for it (see Quiet)."""
        token = (pool, key)
        with self.lock:
            found = self.pending.get(token)
            if found is not None:
                return found
            future: Future = Future()
            self.pending[token] = future
        try:
            queued_at = self.quiet.now() if deferrable else None
            self._queue(pool, limit).put_nowait((1 if deferrable else 0, next(self.order),
                                                 (job, future, token, queued_at)))
        except queue.Full:
            with self.lock:
                self.pending.pop(token, None)
            log.warning("prefetch %s: %d refreshes already waiting; skipping one", pool, self.max_queued)
            return None
        return future

    def result(self, pool: str, future: Future, wait: float) -> Fetched | None:
        """A refresh's answer, waited for up to `wait` seconds, within the pool's wait budget:
        callers spend at most WAIT_SHARE of the time (after a burst of WAIT_BURST seconds)
        waiting for answers, so a sweep of thousands of first answers is not serialised on
        them (the rest come in the background, for the next sweep). None: not in time."""
        with self.lock:
            budget = self.waits.setdefault(pool, _WaitBudget())
            allowed = min(wait, budget.allowance(time.monotonic()))
        started = time.monotonic()
        try:
            with self.quiet.waiting_for_refresh():
                return future.result(timeout=max(allowed, 0.0))
        except TimeoutError:
            return None
        finally:
            with self.lock:
                budget.spend(time.monotonic() - started)

    def queued(self, pool: str) -> int:
        """Refreshes of pool waiting for a worker."""
        found = self.queues.get(pool)
        return found.qsize() if found is not None else 0

    def settle(self, timeout: float) -> bool:
        """Wait up to timeout seconds (real time) until no refresh waits or runs; whether none does."""
        until = time.monotonic() + timeout
        for found in list(self.queues.values()):
            with found.all_tasks_done:
                while found.unfinished_tasks:
                    left = until - time.monotonic()
                    if left <= 0 or not found.all_tasks_done.wait(left):
                        return False
        return True

    def busy(self) -> bool:
        """Some refresh is waiting or running."""
        return any(found.unfinished_tasks for found in list(self.queues.values()))

    def _queue(self, pool: str, limit: int) -> queue.PriorityQueue:
        with self.lock:
            found = self.queues.get(pool)
            if found is None:
                found = self.queues[pool] = queue.PriorityQueue(self.max_queued)
                for number in range(max(limit, 1)):
                    worker = threading.Thread(target=_work, args=(found, self), daemon=True,
                                              name=f"cpfmap-prefetch-{number}")
                    worker.start()
                    self.threads.append(worker)
            return found

    def close(self, wait: float = 0.0) -> int:
        """Drop the refreshes not started, stop the workers and wait up to `wait` seconds (real
        time) for the running ones; the number still running after that."""
        self.closing.set()
        with self.lock:
            queues, self.queues = self.queues, {}
            threads, self.threads = self.threads, []
            self.pending = {}
            failed, self.failed = self.failed, 0
        if failed:
            log.warning("%d background refresh(es) failed since the provider connected (see the log)", failed)
        self.quiet.release()
        for found in queues.values():
            _drain(found)
            for _ in range(64):
                try:
                    found.put_nowait((-1, next(self.order), None))   # before any job
                except queue.Full:
                    break
        until = time.monotonic() + max(wait, 0.0)
        for worker in threads:
            worker.join(max(0.0, until - time.monotonic()))
        self.closing.clear()
        return sum(1 for worker in threads if worker.is_alive())


class _Budget:
    """A token bucket for one pool's stale refreshes: it fills at keys / lifetime per second,
    holds at most one lifetime's worth, and starts with one token at the first stale refresh."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.tokens = 1.0
        self.at: float | None = None

    def admit(self, key: str, seconds: float, now: float, stale: bool) -> bool:
        if len(self.keys) < MAX_ENTRIES:
            self.keys.add(key)
        if not stale:
            return True
        size = float(len(self.keys))
        if self.at is not None:
            self.tokens = min(size, self.tokens + (now - self.at) * size / max(seconds, 1e-9))
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class _WaitBudget:
    """Seconds callers of one pool may still spend waiting for answers: WAIT_BURST to start,
    refilled at WAIT_SHARE seconds per second (real time: it bounds real waiting)."""

    def __init__(self) -> None:
        self.tokens = WAIT_BURST
        self.at: float | None = None

    def allowance(self, now: float) -> float:
        if self.at is not None:
            self.tokens = min(WAIT_BURST, self.tokens + (now - self.at) * WAIT_SHARE)
        self.at = now
        return max(self.tokens, 0.0)

    def spend(self, seconds: float) -> None:
        self.tokens -= seconds


def _work(jobs: queue.PriorityQueue, pool: PooledPrefetch) -> None:
    while True:
        _, _, item = jobs.get()
        try:
            if item is None:
                return
            job, future, token, queued_at = item
            if queued_at is not None:
                pool.quiet.wait(queued_at)
                with pool.lock:
                    closed = jobs not in pool.queues.values()
                if closed:   # the pool closed while it waited: not run
                    future.cancel()
                    continue
            ok = _run(job, future)
            with pool.lock:
                pool.pending.pop(token, None)
                pool.failed += 0 if ok else 1
        finally:
            jobs.task_done()


def _run(job: Callable[[], Fetched], future: Future) -> bool:
    """Whether the refresh got an answer (a failed one leaves the old value in place)."""
    if not future.set_running_or_notify_cancel():
        return True
    try:
        got = job()
    except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future
        log.info("prefetch failed: %s", getattr(exc, "message", exc))
        future.set_exception(exc)
        return False
    future.set_result(got)
    if got.error is not None:
        log.info("prefetch failed: %s", got.error.message)
    return got.error is None


def _drain(jobs: queue.PriorityQueue) -> None:
    while True:
        try:
            _, _, item = jobs.get_nowait()
        except queue.Empty:
            return
        if item is not None:
            item[1].cancel()
        jobs.task_done()
