"""Values a mapping keeps for the provider's lifetime (step key `remember`), seen by every
later call as `remembered.NAME`: what a backend forgets too soon, e.g. ids recently handed out
or deleted. Lost when the provider restarts.

Thread ownership: written by the thread that serves RAS (steps run there); read by it and by
poll rules. A lock guards the lists all the same, so a background thread that ever reads them
sees a whole list."""
from __future__ import annotations

import threading
from typing import Any

from cpfmap.errors import BackendError

KEEP = 1000        # values kept per name, newest
LONGEST = 1024     # characters in one value


class Memory:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, list[str]] = {}

    def add(self, name: str, value: Any) -> None:
        values = value if isinstance(value, (list, tuple)) else [value]
        texts = [_text(v, name) for v in values if v not in (None, "")]
        with self._lock:
            kept = [v for v in self._values.get(name, []) if v not in texts] + texts
            self._values[name] = kept[-KEEP:]

    def view(self) -> dict[str, list[str]]:
        """Every name's values. Each call reads them (every get): the lists are not copied, and
        add() replaces a name's list rather than changing it, so a view never changes under its
        reader (templates run sandboxed and cannot change a list either)."""
        with self._lock:
            return dict(self._values)


def _text(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise BackendError(f"remember `{name}`: {type(value).__name__} is not a value to keep (text or a number)")
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if len(text) > LONGEST:
        raise BackendError(f"remember `{name}`: a value of {len(text)} characters is more than {LONGEST}")
    return text
