"""The command line's streams, injected: bytes in and out for CPF, text for people."""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:   # the modules only some commands use are imported by them: serve starts sooner
    pass


class Streams:
    def __init__(self, stdin: IO[bytes], stdout: IO[bytes], stderr: IO[str]) -> None:
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr

    def out(self, text: str) -> None:
        self.stdout.write(text.encode("utf-8"))
        self.stdout.flush()

