"""Injected time: the real clock, and a virtual one for replay and tests (no real sleeping)."""
from __future__ import annotations

import time
from typing import Callable, Protocol


class Clock(Protocol):
    def now(self) -> float: ...
    def sleep(self, seconds: float) -> None: ...


class RealClock:
    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


class VirtualClock:
    """Time moves only when someone sleeps."""

    def __init__(self, start: float = 0.0) -> None:
        self.time = start
        self.slept: list[float] = []

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.time += max(seconds, 0.0)


class LogicalClock:
    """Time for record and replay: it moves by the waits the engine asks for (really sleeping
    them while recording) and a step per CPF request, never by how long anything took; so
    a recording replays with the same cache decisions however slowly it was made."""

    def __init__(self, sleep: Callable[[float], None] | None = None, step: float = 1.0) -> None:
        self.time = 0.0
        self.step = step
        self._sleep = sleep

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        if self._sleep is not None:
            self._sleep(seconds)
        self.time += max(seconds, 0.0)

    def advance(self) -> None:
        self.time += self.step

    def session_now(self) -> float:
        """The time a backend session's lifetime (auth ttl) is measured on: real time while
        recording (the backend's tokens expire in real time, not one second per CPF request),
        standing still while replaying (the recording's own logins and refreshes are answered
        as they come, and a replay needs none of its own)."""
        return time.monotonic() if self._sleep is not None else 0.0
