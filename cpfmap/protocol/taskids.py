"""Self-contained task ids (protocol layer: imports only errors.py).

A task id is `cpf1.` + base64url(JSON) and carries everything needed to poll the task:
the poll rule's name and its handle values (backend task id, node, clone id, ...), or the
output of work that already completed. Any provider process can poll it. Decoding is
strict: the rule must exist, the keys must be the ones the rule declares, every value a
string matching its declared pattern. Anything else is -32602 and sends nothing.
"""
from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Mapping, Protocol

from cpfmap.errors import InvalidParams

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


def encode(rule: str, values: Mapping[str, str], output: str | None = None) -> str:
    """output: the operation whose own task `output` applies when the task completes."""
    data: dict = {"r": rule, "v": dict(values)}
    if output is not None:
        data["o"] = output
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True)
    return PREFIX + base64.urlsafe_b64encode(payload.encode("utf-8")).decode("ascii").rstrip("=")


def decode(task_id: Any, polls: Mapping[str, PollRule],
           outputs: Mapping[str, str] | None = None) -> tuple[str, dict[str, str], str | None]:
    """(rule name, values, operation whose output applies or None), or InvalidParams saying what
    is wrong with the id. outputs: operation -> the poll rule of its task, for those with an output."""
    payload = _payload(task_id)
    rule, values, output = payload.get("r"), payload.get("v"), payload.get("o")
    if not {"r", "v"} <= set(payload) <= {"r", "v", "o"} or not isinstance(rule, str) \
            or not isinstance(values, dict):
        raise _bad("it is not a task id of this provider")
    if not all(isinstance(v, str) and len(v) <= MAX_VALUE for v in values.values()):
        raise _bad("its values are not short strings")
    if rule == COMPLETED and output is None:
        return rule, values, None
    if output is not None and (not isinstance(output, str) or (outputs or {}).get(output) != rule):
        raise _bad("it names no task output of this mapping")
    spec = polls.get(rule)
    if spec is None:
        raise _bad(f"this mapping has no task kind `{rule}`")
    check_handle(spec, values)
    return rule, values, output


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
