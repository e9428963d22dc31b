"""A CPF provider process started as RAS starts it: stdin, stdout and stderr pipes, one
request at a time, a reply timeout per call, and a record of anything on stdout that is
not a JSON reply."""
from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any

_EOF = object()


@dataclass
class Exchange:
    request: Any          # the request object (or raw text for probes)
    raw: str | None       # the reply line, None if none came in time
    reply: Any            # the parsed reply, None if not JSON
    seconds: float


class ProviderProcess:
    def __init__(self, argv: list[str], *, cwd: str | None = None, env: dict | None = None,
                 reply_timeout: float = 30.0) -> None:
        self.argv, self.cwd, self.env = argv, cwd, env
        self.reply_timeout = reply_timeout
        self.lines: queue.Queue = queue.Queue()
        self.stray: list[str] = []     # stdout lines that are not JSON objects
        self.stderr: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.sent: list[bytes] = []    # every line written, for recordings
        self._logged = 0               # stderr lines already shown by log_for

    def start(self) -> "ProviderProcess":
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=self.cwd, env=self.env, bufsize=0)
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    @staticmethod
    def _pump(stream, out: queue.Queue) -> None:
        for line in iter(stream.readline, b""):
            out.put(line)
        out.put(_EOF)

    def _drain(self) -> None:
        for line in iter(self.proc.stderr.readline, b""):
            if len(self.stderr) < 5000:
                self.stderr.append(line.decode("utf-8", "replace").rstrip())

    def log_for(self, method: str, wait: float = 2.0) -> list[str]:
        """The provider's stderr lines since the last call: for cpfmap, up to its summary line
        for `method` (written before the reply, so waiting for it is bounded and certain);
        for another provider, what arrived until stderr went quiet."""
        deadline = time.monotonic() + wait
        seen, quiet_since = self._logged, time.monotonic()
        while time.monotonic() < deadline:
            lines = self.stderr[self._logged:]
            if any(f" {method} " in line and " -> " in line for line in lines):
                break
            if len(self.stderr) != seen:
                seen, quiet_since = len(self.stderr), time.monotonic()
            elif time.monotonic() - quiet_since > 0.2:
                break
            time.sleep(0.01)
        lines, self._logged = self.stderr[self._logged:], len(self.stderr)
        return lines

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def request(self, request: Any, *, raw: bytes | None = None, timeout: float | None = None) -> Exchange:
        data = raw if raw is not None else json.dumps(request).encode("utf-8") + b"\n"
        started = time.monotonic()
        self.sent.append(data)
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return Exchange(request, None, None, 0.0)
        line = self.read_reply(timeout or self.reply_timeout)
        reply = json.loads(line) if line is not None else None
        return Exchange(request, line, reply, time.monotonic() - started)

    def read_reply(self, timeout: float) -> str | None:
        """The next stdout line that is a JSON object; other lines are kept as stray."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(deadline - time.monotonic(), 0.001))
            except queue.Empty:
                return None
            if item is _EOF:
                self.lines.put(_EOF)
                return None
            text = item.decode("utf-8", "replace").strip()
            if _is_object(text):
                return text
            if text:
                self.stray.append(text[:200])

    def extra_lines(self, wait: float = 0.2) -> list[str]:
        """JSON lines that arrived without a request (more than one reply per request)."""
        out = []
        while (line := self.read_reply(wait)) is not None:
            out.append(line)
        return out

    def close(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            return None


def _is_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False
