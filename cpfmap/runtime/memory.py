"""Values a mapping keeps (step key `remember`), seen by every later call as
`remembered.NAME`: what a backend forgets too soon, e.g. ids recently handed out or deleted,
or guests written to in the last minute. Kept for the provider's lifetime, or for `for`
seconds on the engine's clock; lost when the provider restarts.

Thread ownership: written by the thread that serves RAS (steps run there); read by it and by
poll rules. A lock guards the lists all the same, so a background thread that ever reads them
sees a whole list."""
from __future__ import annotations

import math
import threading
from typing import Any

from cpfmap.errors import BackendError

KEEP = 1000        # values kept per name, newest
LONGEST = 1024     # characters in one value


class Memory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, list[tuple[str, float]]] = {}   # name -> [(text, kept until)], oldest first
        self._view: dict[str, list[str]] = {}
        self._until = math.inf   # the view holds until the first value it shows expires

    def add(self, name: str, value: Any, seconds: float | None = None, now: float = 0.0) -> None:
        """value (or each of a list) kept under name, for `seconds` from `now` (None: for good);
        a value kept again moves to the newest place with its new lifetime."""
        values = value if isinstance(value, (list, tuple)) else [value]
        until = math.inf if seconds is None else now + seconds
        texts = [_text(v, name) for v in values if v not in (None, "")]
        with self._lock:
            kept = [item for item in self._values.get(name, []) if item[0] not in texts]
            self._values[name] = (kept + [(text, until) for text in texts])[-KEEP:]
            self._until = -math.inf   # the view is built again at the next read

    def view(self, now: float = 0.0) -> dict[str, list[str]]:
        """Every name's values still kept at `now`. Each call reads them (every get): the view
        is built again only after an add or when a value in it expires; its lists are never
        changed (a new view has new lists), and templates run sandboxed cannot change them."""
        with self._lock:
            if now >= self._until:
                self._view, self._until = self._build(now)
            return self._view

    def _build(self, now: float) -> tuple[dict[str, list[str]], float]:
        view: dict[str, list[str]] = {}
        until = math.inf
        for name, items in self._values.items():
            live = [item for item in items if item[1] > now]
            self._values[name] = live
            view[name] = [text for text, _ in live]
            until = min([until] + [expires for _, expires in live])
        return view, until


def _text(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BackendError(f"remember `{name}`: {type(value).__name__} is not a value to keep (text or a number)")
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if len(text) > LONGEST:
        raise BackendError(f"remember `{name}`: a value of {len(text)} characters is more than {LONGEST}")
    return text
