"""One shared thread that cuts the connections of exchanges whose deadline has passed.

A socket read or write blocked in another thread returns at once when its socket is shut
down (on POSIX and Windows alike), whatever its own timeout: that is how the live transport
bounds a whole HTTP exchange (connect, request, status and headers, body) by
`connection.total_timeout`, even against a backend that trickles its headers or stops
reading the request. One thread serves every exchange of the process: arming and disarming a
deadline is a heap push and a flag under one lock, so a sweep of many requests costs no thread
per request, and the thread sleeps until the earliest armed deadline.
"""
from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from typing import Any, Callable


class Watch:
    """One exchange's deadline and the sockets it uses; `fired` once the deadline has cut them."""

    __slots__ = ("_dog", "until", "fired", "done", "_sockets")

    def __init__(self, dog: Watchdog, until: float) -> None:
        self._dog = dog
        self.until = until
        self.fired = False
        self.done = False
        self._sockets: list[Any] = []

    def attach(self, sock: Any) -> None:
        """A socket of this exchange: cut when the deadline passes (at once if it has)."""
        with self._dog.lock:
            if self.done:
                return
            self._sockets.append(sock)
            if self.fired:
                cut(sock)

    def disarm(self) -> bool:
        """The exchange is over; True if the deadline cut it first."""
        with self._dog.lock:
            self.done = True
            if not self.fired:  # a fired watch has left the heap already
                self._dog.dropped()
            return self.fired

    def fire(self) -> None:  # with the watchdog's lock held
        if not self.done:
            self.fired = True
            for sock in self._sockets:
                cut(sock)


class Watchdog:
    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self.now = now
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)
        self._heap: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._disarmed = 0
        self._thread: threading.Thread | None = None

    def arm(self, until: float) -> Watch:
        """Watch an exchange that must be over by `until` (on this watchdog's clock)."""
        watch = Watch(self, until)
        with self.lock:
            heapq.heappush(self._heap, (until, next(self._order), watch))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="cpfmap-watchdog", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._wake.notify()
        return watch

    def dropped(self) -> None:  # with the lock held
        """Disarmed watches leave the heap when their time comes, or here when they are most of it
        (a long total_timeout must not make a long-running provider hoard them)."""
        self._disarmed += 1
        if self._disarmed > 64 and self._disarmed * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if not entry[2].done]
            heapq.heapify(self._heap)
            self._disarmed = 0

    def _run(self) -> None:
        with self.lock:
            while True:
                now = self.now()
                while self._heap and self._heap[0][0] <= now:
                    watch = heapq.heappop(self._heap)[2]
                    if watch.done:
                        self._disarmed = max(self._disarmed - 1, 0)
                    watch.fire()
                self._wake.wait(self._heap[0][0] - now if self._heap else None)


def cut(sock: Any) -> None:
    """Shut a socket down so that any read or write blocked on it returns at once. The plain
    socket's shutdown, also under TLS: the TLS object stays intact for the thread using it."""
    while sock is not None and not isinstance(sock, socket.socket):
        sock = getattr(sock, "socket", None)  # urllib3's TLS-in-TLS wrapper
    if sock is None:
        return
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed, or never connected


WATCHDOG = Watchdog()
