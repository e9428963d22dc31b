"""The one error tree of cpfmap.

    CpfmapError                      base: code + message, formats itself
    +-- ProtocolError                the request itself is wrong
    |   +-- ParseError        -32700 not JSON (or not UTF-8, or a line over the size limit)
    |   +-- InvalidRequest    -32600 JSON, but not a request: not an object, no string `method`,
    |   |                            or a number out of range
    |   +-- MethodNotFound    -32601 unknown method, or not in the mapping
    |   +-- InvalidParams     -32602 params missing/mistyped, unknown control, bad task id
    +-- InternalError         -32603 a defect in the engine itself
    +-- MappingError               load time: a broken mapping (file, line, column)
    +-- ConfigError                 a RAS setting that does not fit the mapping (code 1)
    +-- CassetteError               a recording that cannot be read (code 1)
    +-- BackendError              1 the backend refused, failed, lied or timed out
        +-- TransportError          no usable HTTP answer (connect, TLS, timeout)
        +-- AuthError               the backend refused the credentials
        +-- ReplayMiss              a cassette holds no answer for the request
        +-- DeadlineReached         the reply deadline came before the backend's answer
            +-- WaitCut             a wait inside a reply (a task, a VM's state) ended at the deadline

Whoever catches an error may add context (method, guest, request) with `context()`;
the reply carries `code` and `message`, never a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass


class CpfmapError(Exception):
    code = 1

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def context(self, prefix: str) -> "CpfmapError":
        """Prefix the message with what the catcher was doing; returns self."""
        if prefix and not self.message.startswith(prefix):
            self.message = f"{prefix}: {self.message}"
            self.args = (self.message,)
        return self

    def __str__(self) -> str:
        return self.message


class ProtocolError(CpfmapError):
    pass


class ParseError(ProtocolError):
    code = -32700


class InvalidRequest(ProtocolError):
    code = -32600


class MethodNotFound(ProtocolError):
    code = -32601


class InvalidParams(ProtocolError):
    code = -32602


class InternalError(CpfmapError):
    code = -32603


class ConfigError(CpfmapError):
    code = 1


class CassetteError(CpfmapError):
    code = 1


class BackendError(CpfmapError):
    code = 1
    status: int | None = None  # the HTTP status the backend answered, when there was one


class TransportError(BackendError):
    pass


class AuthError(BackendError):
    pass


class ReplayMiss(BackendError):
    pass


class DeadlineReached(BackendError):
    pass


class WaitCut(DeadlineReached):
    step: object = None      # the step whose wait was cut (steps.py sets it)
    pending: object = None   # (poll rule, handle values) of the task it waited for (engine.py sets it)


@dataclass
class Finding:
    """One problem found in a mapping, located in its source."""

    message: str
    file: str = "<mapping>"
    line: int = 0
    column: int = 0
    severity: str = "error"
    source_line: str = ""
    path: str = ""

    def format(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        text = f"{where}: {self.severity}: {self.message}"
        if self.source_line:
            text += f"\n    {self.source_line}\n    {' ' * max(self.column - 1, 0)}^"
        return text

    def as_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "column": self.column,
                "severity": self.severity, "message": self.message, "path": self.path}


class MappingError(CpfmapError):
    """A mapping that cannot be loaded; holds every finding, not just the first."""

    code = 1

    def __init__(self, findings: list[Finding] | Finding | str) -> None:
        if isinstance(findings, str):
            findings = [Finding(findings)]
        elif isinstance(findings, Finding):
            findings = [findings]
        self.findings: list[Finding] = findings
        errors = [f for f in findings if f.severity == "error"] or findings
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        where = f"{first.file}:{first.line}" if first.line else first.file
        super().__init__(f"{where}: {first.message}{more}")

    def report(self) -> str:
        return "\n".join(f.format() for f in self.findings)
