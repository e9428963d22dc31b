"""Run the workflows and probes against one provider; collect every check."""
from __future__ import annotations

import time
from typing import Callable

from .client import ProviderProcess
from .probes import run_probes
from .ras import Check, Failed, Options, Ras
from .workflows import WORKFLOWS, skip_reason

ORDER = ("connect", "inventory", "power", "create-template", "create-host", "maintenance", "delete-host")


def run(argv: list[str], options: Options, workflows: list[str] | None = None, reply_timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep, cwd: str | None = None, keep_sent: bool = False):
    """Every check; with keep_sent, (checks, the request lines sent)."""
    client = ProviderProcess(argv, reply_timeout=reply_timeout, cwd=cwd).start()
    ras = Ras(client, options, sleep)
    wanted = workflows or list(ORDER) + ["protocol"]
    try:
        for name in ORDER:
            if name == "connect" or name in wanted:
                _workflow(ras, name)
            if name == "connect" and not all(c.ok for c in ras.checks):
                break
        if "protocol" in wanted:
            ras.workflow = "protocol"
            run_probes(ras)
        _disconnect(ras)
    finally:
        _closing(ras)
    return (ras.checks, client.sent) if keep_sent else ras.checks


def _workflow(ras: Ras, name: str) -> None:
    ras.workflow = name
    reason = skip_reason(name, ras) if name != "connect" else None
    if reason:
        ras.checks.append(Check(name, "skipped", True, reason, skipped=True))
        return
    try:
        WORKFLOWS[name](ras)
    except Failed as failed:
        ras.checks.append(failed.check)


def _disconnect(ras: Ras) -> None:
    ras.workflow = "disconnect"
    if ras.capabilities:
        try:
            ras.call("provider/disconnect", None, "empty")
        except Failed as failed:
            ras.checks.append(failed.check)


def _closing(ras: Ras) -> None:
    ras.workflow = "protocol"
    client = ras.client
    extra = client.extra_lines() if client.alive() else []
    ras.checks.append(Check("protocol", "one reply per request", not extra,
                            f"unrequested lines: {extra[:3]}" if extra else ""))
    code = client.close()
    ras.checks.append(Check("protocol", "stdout carries only JSON replies", not client.stray,
                            f"stray lines: {client.stray[:3]}" if client.stray else "",
                            expected="logs on stderr, replies alone on stdout"))
    ras.checks.append(Check("protocol", "exits 0 when stdin closes", code == 0, f"exit status {code}"))
