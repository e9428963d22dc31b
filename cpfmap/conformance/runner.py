"""Run the workflows and probes against one provider; collect every check.

A provider that stops answering is stopped and started again before the next workflow, as
RAS does; if the new one does not answer either, the remaining workflows are skipped, so a
run ends in bounded time.
What the workflows changed on the backend is put back at the end (at once for a workflow
that failed), and whatever cannot be put back is reported as left behind.
"""
from __future__ import annotations

import time
from typing import Callable

from cpfmap.conformance import report
from cpfmap.conformance.client import ProviderProcess
from cpfmap.conformance.probes import run_probes
from cpfmap.conformance.ras import Check, Failed, Options, Ras
from cpfmap.conformance.workflows import WORKFLOWS, connect, skip_reason

ORDER = ("connect", "inventory", "power", "create-template", "create-host", "maintenance", "delete-host")


def run(argv: list[str], options: Options, workflows: list[str] | None = None, reply_timeout: float = 60.0,
        sleep: Callable[[float], None] = time.sleep, cwd: str | None = None, keep_sent: bool = False,
        progress: Callable[[str], None] | None = None, keep: bool = False):
    """Every check; with keep_sent, (checks, the request lines sent). progress gets a line as
    each workflow starts and ends; keep leaves the run's changes on the backend."""
    sent: list[bytes] = []

    def start() -> ProviderProcess:
        client = ProviderProcess(argv, reply_timeout=reply_timeout, cwd=cwd).start()
        client.sent = sent
        return client

    ras = Ras(start(), options, sleep)
    ras.restart = start
    wanted = workflows or list(ORDER) + ["protocol"]
    say = progress or (lambda line: None)
    try:
        for name in ORDER:
            if name == "connect" or name in wanted:
                _workflow(ras, name, say)
            if name == "connect" and not all(c.ok for c in ras.checks):
                break
        if "protocol" in wanted:
            _workflow(ras, "protocol", say)
        if not keep:
            _put_back(ras, None)
            if any(c.workflow == "cleanup" for c in ras.checks):
                say(report.summary("cleanup", ras.checks))
        _disconnect(ras)
    finally:
        _closing(ras)
    return (ras.checks, sent) if keep_sent else ras.checks


def _workflow(ras: Ras, name: str, say: Callable[[str], None]) -> None:
    ras.workflow = name
    reason = skip_reason(name, ras) if name not in ("connect", "protocol") else None
    if reason is None and name != "connect" and not _answering(ras):
        reason = "the provider stopped answering and did not answer after a restart"
    if reason:
        ras.checks.append(Check(name, "skipped", True, reason, skipped=True))
        say(report.summary(name, ras.checks))
        return
    say(f"      {name} ...")
    started = time.monotonic()
    try:
        run_probes(ras) if name == "protocol" else WORKFLOWS[name](ras)
    except Failed as failed:
        ras.checks.append(failed.check)
        _put_back(ras, name)
    say(f"{report.summary(name, ras.checks)}  {time.monotonic() - started:.1f}s")


def _answering(ras: Ras) -> bool:
    """The provider answers, or a restarted one does; a restart that does not answer ends the run
    (each workflow then costs at most one timeout, so the run stays bounded)."""
    if ras.client.alive():
        return True
    if ras.state.get("given_up") or ras.restart is None:
        return False
    workflow, ras.workflow = ras.workflow, "restart"
    ras.client = ras.restart()
    try:
        connect(ras)
        return True
    except Failed as failed:
        ras.checks.append(failed.check)
        ras.state["given_up"] = True
        return False
    finally:
        ras.workflow = workflow


def _put_back(ras: Ras, workflow: str | None) -> None:
    """Undo the changes of one workflow (or of the whole run), newest first."""
    keys = [k for k, c in ras.changes.items() if workflow is None or c.workflow == workflow]
    for key in reversed(keys):
        change = ras.changes.pop(key)
        if not _answering(ras):
            ras.checks.append(Check("cleanup", f"left behind: {change.what}", True, "the provider does not answer",
                                    left=True))
            continue
        during, ras.workflow, mark = ras.workflow, "cleanup", len(ras.checks)
        try:
            change.restore()
            # "undone: guest 3 made a template": the change named, then what became of it
            outcome = Check("cleanup", f"undone: {change.what}", True)
        except Failed as failed:
            outcome = Check("cleanup", f"left behind: {change.what}", True,
                            f"{failed.check.name}: {failed.check.detail}", left=True)
        finally:
            ras.workflow = during
        del ras.checks[mark:]  # the calls that put it back are not checks of the provider
        ras.checks.append(outcome)


def _disconnect(ras: Ras) -> None:
    ras.workflow = "disconnect"
    if ras.capabilities and ras.client.alive():
        try:
            ras.call("provider/disconnect", None, "empty")
        except Failed as failed:
            ras.checks.append(failed.check)


def _closing(ras: Ras) -> None:
    ras.workflow = "protocol"
    client = ras.client
    seconds, what = ras.slowest
    ras.checks.append(Check("protocol", f"every reply within the reply deadline ({client.reply_timeout:g}s)",
                            seconds <= client.reply_timeout,
                            f"slowest reply {seconds:.1f}s ({what})" if what else "",
                            expected=f"at most {client.reply_timeout:g}s (RAS gives up on a provider after that)"))
    extra = client.extra_lines() if client.alive() else []
    ras.checks.append(Check("protocol", "one reply per request", not extra,
                            f"unrequested lines: {extra[:3]}" if extra else ""))
    code = client.close()
    ras.checks.append(Check("protocol", "stdout carries only JSON replies", not client.stray,
                            f"stray lines: {client.stray[:3]}" if client.stray else "",
                            expected="logs on stderr, replies alone on stdout"))
    if not client.killed:  # one stopped because it did not answer is reported already
        ras.checks.append(Check("protocol", "exits 0 when stdin closes", code == 0, f"exit status {code}"))
