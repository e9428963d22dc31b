"""What RAS does with a provider: calls with reply checks, task polling within RAS's retry
budget, and waiting for guest states."""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from cpfmap.conformance.client import ProviderProcess
from cpfmap.protocol.contract import snapshot_name
from cpfmap.protocol.replies import problem as schema_problem


@dataclass
class Check:
    workflow: str
    name: str
    ok: bool
    detail: str = ""
    request: Any = None
    reply: Any = None
    expected: str = ""
    skipped: bool = False
    left: bool = False     # cleanup: something the run changed and could not put back


@dataclass
class Change:
    """Something a workflow changed on the backend, and how to put it back."""
    workflow: str
    what: str
    restore: Callable[[], object]


class Failed(Exception):
    def __init__(self, check: Check) -> None:
        super().__init__(check.name)
        self.check = check


@dataclass
class Options:
    settings: dict = field(default_factory=dict)
    guest: str | None = None
    template_source: str | None = None
    template: str | None = None
    host: str | None = None          # an existing host for delete-host
    clone_name: str = "CPF-CONFORMANCE-01"
    version: int = 1
    time_scale: float = 1.0
    state_polls: int = 60
    trace: Callable[[str], None] | None = None   # -v: each CPF exchange and the provider's log for it


class Ras:
    def __init__(self, client: ProviderProcess, options: Options, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.options = options
        self.sleep = sleep
        self.checks: list[Check] = []
        self.workflow = "setup"
        self.capabilities: dict = {}
        self.state: dict = {}   # what workflows hand on: template id, clone id
        self.changes: dict[tuple, Change] = {}  # what the run changed and has not put back yet
        self.restart: Callable[[], ProviderProcess] | None = None  # a fresh provider, as RAS would start
        self.slowest: tuple[float, str] = (0.0, "")   # the longest a reply took, and to what

    # -------------------------------------------------------------- changes

    def changed(self, key: tuple, what: str, restore: Callable[[], object]) -> None:
        """Remember a change to the backend (the first one per key: it knows the original)."""
        self.changes.setdefault(key, Change(self.workflow, what, restore))

    def undone(self, key: tuple) -> bool:
        """The workflow itself put this back; True if it was a change of this run."""
        return self.changes.pop(key, None) is not None

    # -------------------------------------------------------------- checks

    def passed(self, name: str, request: Any = None, reply: Any = None) -> None:
        self.checks.append(Check(self.workflow, name, True, request=request, reply=reply))

    def fail(self, name: str, detail: str, request: Any = None, reply: Any = None, expected: str = "") -> Failed:
        return Failed(Check(self.workflow, name, False, detail, request, reply, expected))

    # ---------------------------------------------------------------- calls

    def call(self, method: str, params: dict | None = None, schema: str | None = None) -> Any:
        request = {"method": method} if params is None else {"method": method, "params": params}
        exchange = self.client.request(request)
        if exchange.reply is not None and exchange.seconds > self.slowest[0]:
            self.slowest = (exchange.seconds, f"{method} {_brief(params)}".strip())
        if self.options.trace is not None:
            self._trace(request, exchange)
        reply = exchange.reply
        if reply is None:
            why = "no reply within the timeout" if self.client.alive() else "no reply (the provider exited)"
            self.client.kill()  # as RAS does: a provider that does not answer is stopped and started again
            raise self.fail(f"{method} answers", why + "; the provider was stopped", request,
                            expected=f"one JSON reply within {self.client.reply_timeout:g}s")
        if "error" in reply:
            raise self.fail(f"{method} succeeds", str(reply["error"]), request, reply, "a result")
        if "result" not in reply:
            raise self.fail(f"{method} reply has result or error", "neither member", request, reply,
                            'an object with "result" or "error"')
        result = reply["result"]
        problem = schema_problem(schema, result) if schema else None
        if problem:
            raise self.fail(f"{method} reply is what RAS accepts", problem, request, reply,
                            f"schemas/replies/{schema}.json")
        self.passed(f"{method} {_brief(params)}".strip(), request, reply)
        return result

    def _trace(self, request: dict, exchange) -> None:
        self.options.trace(f"CPF  -> {json.dumps(_unsecret(request))}")
        for line in self.client.log_for(request.get("method", "")):
            self.options.trace(f"       {line}")
        self.options.trace(f"CPF  <- {exchange.raw if exchange.raw is not None else '(no reply)'}")

    def get(self, guest: str) -> dict:
        return self.call("guests/get", {"id": guest}, "guests-get")

    def poll_task(self, task_id: str, what: str) -> dict:
        rate = self.capabilities.get("tasks_polling_rate", 3)
        retries = self.capabilities.get("tasks_polling_retries", 20)
        for _ in range(retries + 1):
            result = self.call("tasks/get", {"id": task_id}, "tasks-get")
            if result["state"] == "completed":
                return result["output"]
            if result["state"] == "failed":
                raise self.fail(f"{what} task completes", result["error"].get("message", ""),
                                {"method": "tasks/get", "params": {"id": task_id}}, result, "state completed")
            self.sleep(rate * self.options.time_scale)
        raise self.fail(f"{what} task completes", f"still running after {retries} polls",
                        expected=f"done within tasks_polling_rate x tasks_polling_retries = {rate * retries}s")

    def start_task(self, method: str, params: dict, what: str, schema: str = "task-started") -> dict:
        result = self.call(method, params, schema)
        return {**self.poll_task(result["task_id"], what), "_started": result}

    def wait_state(self, guest: str, wanted: str) -> dict:
        interval = max(self.capabilities.get("guests_polling_rate", 15) * self.options.time_scale, 0.05)
        seen = None
        for _ in range(self.options.state_polls):
            seen = self.get(guest)
            if seen["state"] == wanted:
                return seen
            self.sleep(interval)
        raise self.fail(f"guest {guest} reaches {wanted}", f"still {seen and seen['state']}",
                        expected=wanted)

    def control(self, guest: str, control: str) -> None:
        self.call("guests/control", {"id": guest, "control": control}, "empty")

    def ensure_state(self, guest: str, wanted: str) -> None:
        """What RAS does before template work: stop (or start) only if needed, then wait."""
        if self.get(guest)["state"] != wanted:
            self.control(guest, "stop" if wanted == "powered_off" else "start")
            self.wait_state(guest, wanted)

    # ---------------------------------------------------------------- levels

    @property
    def level(self) -> str:
        return self.capabilities.get("template_method", "none")

    @property
    def links(self) -> bool:
        return bool(self.capabilities.get("can_link_clones")) and self.level != "none"

    def snapshot_name(self, version: int | None = None) -> str | None:
        return snapshot_name(self.level, self.links, version or self.options.version)


def _unsecret(request: dict) -> dict:
    """The request as shown by -v: settings values masked (the runner cannot tell which are secret)."""
    params = request.get("params")
    if not isinstance(params, dict) or not isinstance(params.get("settings"), dict):
        return request
    return {**request, "params": {**params, "settings": dict.fromkeys(params["settings"], "***")}}


def _brief(params: dict | None) -> str:
    if not params:
        return ""
    keys = ("id", "control", "name", "is_template", "snapshot", "is_link_clone")
    return " ".join(f"{k}={json.dumps(params[k]) if isinstance(params[k], bool) else params[k]}"
                    for k in keys if k in params and not isinstance(params[k], dict))
