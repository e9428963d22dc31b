"""Protocol robustness probes: each sends something RAS (or a broken RAS) might send and
checks the code the contract requires, then that the provider is still alive."""
from __future__ import annotations

import json

from cpfmap.conformance.ras import Ras, schema_problem

FORGED_URL_ID = "cpf1." + "eyJyIjoiLi4vLi4vZXZpbCIsInYiOnsidXJsIjoiaHR0cDovLzEwLjAuMC4xLyJ9fQ"
HUGE = 3 * 1024 * 1024

# name, raw line, required error code (None: a result), required id echo
PROBES = [
    ("malformed JSON", b'{"method": "guests/list", \n', -32700),
    ("not a JSON object", b"[1, 2, 3]\n", -32600),
    ("no method", b'{"params": {}}\n', -32600),
    ("unknown method", b'{"method": "guests/teleport", "params": {"id": "1"}}\n', -32601),
    ("params missing", b'{"method": "guests/get"}\n', -32602),
    ("params of the wrong type", b'{"method": "guests/get", "params": {"id": 101}}\n', -32602),
    ("unknown control", b'{"method": "guests/control", "params": {"id": "GUEST", "control": "explode"}}\n', -32602),
    ("forged task id", b'{"method": "tasks/get", "params": {"id": "forged-task-0001"}}\n', -32602),
    ("forged task id naming another URL", ('{"method": "tasks/get", "params": {"id": "%s"}}\n' % FORGED_URL_ID).encode(),
     -32602),
    ("CRLF line ending", b'{"method": "provider/initialize"}\r\n', None),
    ("blank lines get no reply", b'\n\r\n   \n{"method": "provider/initialize", "id": "after-blank"}\n', None),
    ("id is echoed", b'{"method": "provider/initialize", "id": 4242}\n', None),
]


def run_probes(ras: Ras) -> None:
    guest = ras.options.guest or "1"
    pad = "x" * HUGE
    huge = json.dumps({"method": "provider/initialize", "params": {"pad": pad}}).encode() + b"\n"
    probes = [(n, raw.replace(b"GUEST", guest.encode()), c) for n, raw, c in PROBES]
    for name, raw, code in probes + [("a multi-megabyte line", huge, None)]:
        if not _probe(ras, name, raw, code):
            return  # the provider was stopped: the rest would only wait out their timeouts


def _probe(ras: Ras, name: str, raw: bytes, code: int | None) -> bool:
    """False when no reply came (the provider is then stopped, as RAS would)."""
    exchange = ras.client.request(raw[:200].decode("utf-8", "replace"), raw=raw)
    reply = exchange.reply
    shown = raw[:160].decode("utf-8", "replace")
    if reply is None:
        ras.client.kill()
        ras.checks.append(_check(ras, name, False, "no reply; the provider was stopped", shown, None, "a reply"))
        return False
    ok, expected = _judge(name, reply, code)
    ras.checks.append(_check(ras, name, ok, "" if ok else f"got {json.dumps(reply)[:300]}", shown, reply, expected))
    alive = ras.client.alive()
    ras.checks.append(_check(ras, f"alive after: {name}", alive, "" if alive else "the provider exited", shown))
    return True


def _judge(name: str, reply: dict, code: int | None) -> tuple[bool, str]:
    if code is not None:
        error = reply.get("error")
        return (isinstance(error, dict) and error.get("code") == code and schema_problem("error", reply) is None,
                f"error code {code} with a message")
    if name == "id is echoed":
        return reply.get("id") == 4242, 'reply with "id": 4242'
    if name == "blank lines get no reply":
        return reply.get("id") == "after-blank" and "result" in reply, "the next reply answers the request after the blanks"
    return "result" in reply, "a result"


def _check(ras: Ras, name: str, ok: bool, detail: str, request, reply=None, expected: str = ""):
    from cpfmap.conformance.ras import Check
    return Check("protocol", name, ok, detail, request, reply, expected)
