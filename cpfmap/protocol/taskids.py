"""Self-contained task ids (protocol layer: imports only errors.py).

A task id is `cpf1.` + base64url(JSON) and carries everything needed to poll the task:
the poll rule's name and its handle values (backend task id, node, clone id, ...), or the
output of work that already completed. Any provider process can poll it. A method whose
wait inside the reply was cut at the reply deadline also carries that wait (`w`: the waited
task's rule and handle values), which tasks/get polls first. Decoding is strict: each rule must
exist, the keys must be the ones the rule declares, every value a string matching its declared
pattern. Anything else is -32602 and sends nothing. An id never holds settings or secrets: only
handle values the backend gave, and names from the mapping.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Mapping, NamedTuple, Protocol

from cpfmap.errors import BackendError, InvalidParams

PREFIX = "cpf1."
MAX_ID = 4096
MAX_VALUE = 1024
COMPLETED = "completed"
_B64 = re.compile(r"^[A-Za-z0-9_-]+$")


class PollRule(Protocol):
    """A kind of task: its name and the handle values its ids carry, ((key, HandleKey), ...),
    each HandleKey with a `pattern` and `required`. The compiled mapping's PollRule
    (language/model.py) is one."""
    @property
    def name(self) -> str: ...

    @property
    def handle(self) -> tuple: ...


class TaskId(NamedTuple):
    rule: str                  # the poll rule, or COMPLETED
    values: dict[str, str]     # its handle values (COMPLETED: the output)
    output: str | None = None  # the operation whose own task `output` applies when the task completes
    wait: tuple[str, dict[str, str]] | None = None   # (rule, values) of a wait cut at the reply deadline


def encode(rule: str, values: Mapping[str, str], output: str | None = None,
           wait: tuple[str, Mapping[str, str]] | None = None) -> str:
    """output: the operation whose own task `output` applies when the task completes; wait: the
    task a wait inside the reply was still waiting for at the reply deadline (polled first)."""
    data: dict = {"r": rule, "v": dict(values)}
    if output is not None:
        data["o"] = output
    if wait is not None:
        data["w"] = {"r": wait[0], "v": dict(wait[1])}
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True)
    task_id = PREFIX + base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii").rstrip("=")
    if len(task_id) > MAX_ID:
        raise BackendError(f"the task id would be {len(task_id)} characters, more than {MAX_ID}: "
                           "the backend's task handle is too long")
    return task_id


def decode(task_id: Any, polls: Mapping[str, PollRule], outputs: Mapping[str, str] | None = None) -> TaskId:
    """The id's parts, or InvalidParams saying what is wrong with it. outputs: operation -> the
    poll rule of its task, for those with an output."""
    payload = _payload(task_id)
    rule, values, output = payload.get("r"), payload.get("v"), payload.get("o")
    if not {"r", "v"} <= set(payload) <= {"r", "v", "o", "w"}:
        raise _bad("it is not a task id of this provider")
    _check_values(rule, values)
    wait = _wait(payload["w"], polls) if "w" in payload else None
    if rule == COMPLETED and output is None:
        return TaskId(rule, values, None, wait)
    if output is not None and (not isinstance(output, str) or (outputs or {}).get(output) != rule):
        raise _bad("it names no task output of this mapping")
    _check_rule(rule, values, polls)
    return TaskId(rule, values, output, wait)


def _wait(data: Any, polls: Mapping[str, PollRule]) -> tuple[str, dict[str, str]]:
    """The cut wait an id carries: (rule, values) of a task of a poll rule of this mapping."""
    if not isinstance(data, dict) or set(data) != {"r", "v"}:
        raise _bad("its pending wait is not a task")
    rule, values = data["r"], data["v"]
    _check_values(rule, values)
    _check_rule(rule, values, polls)
    return rule, values


def _check_values(rule: Any, values: Any) -> None:
    if not isinstance(rule, str) or not isinstance(values, dict):
        raise _bad("it is not a task id of this provider")
    if not all(isinstance(v, str) and len(v) <= MAX_VALUE for v in values.values()):
        raise _bad("its values are not short strings")


def _check_rule(rule: str, values: dict, polls: Mapping[str, PollRule]) -> None:
    spec = polls.get(rule)
    if spec is None:
        raise _bad(f"this mapping has no task kind `{rule}`")
    check_handle(spec, values)


def _payload(task_id: Any) -> dict:
    if not isinstance(task_id, str) or not task_id.startswith(PREFIX) or len(task_id) > MAX_ID:
        raise _bad("it is not a task id of this provider")
    body = task_id[len(PREFIX):]
    if not _B64.match(body):
        raise _bad("it is not base64url")
    try:
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("utf-8"))
    except (binascii.Error, UnicodeDecodeError, ValueError, RecursionError):
        raise _bad("it does not decode") from None
    if not isinstance(payload, dict):
        raise _bad("it does not decode to an object")
    return payload


def check_handle(spec: PollRule, values: dict) -> None:
    """The keys the rule declares, each value matching its pattern; InvalidParams if not."""
    declared = dict(spec.handle)
    unknown = set(values) - set(declared)
    if unknown:
        raise _bad(f"unexpected key(s) {', '.join(sorted(unknown))}")
    for key, rule in declared.items():
        if key not in values:
            if rule.required:
                raise _bad(f"`{key}` is missing")
            continue
        if not re.fullmatch(rule.pattern, values[key]):
            raise _bad(f"`{key}` does not have the form of a {spec.name} task")


def _bad(why: str) -> InvalidParams:
    return InvalidParams(f"invalid task id: {why}")
