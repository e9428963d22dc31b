"""One CPF provider over one compiled mapping: the method handlers behind rpc.py.

render -> send -> check -> extract -> translate happens in steps.py; here each CPF method
gets its context, its task id, and a reply shaped and checked the way RAS reads it.
"""
from __future__ import annotations

import functools
import json
import logging
from collections import OrderedDict
from typing import Any, Mapping

from cpfmap.clock import Clock
from cpfmap.errors import AuthError, BackendError, CpfmapError, DeadlineReached, MethodNotFound, WaitCut
from cpfmap.http.transport import Transport
from cpfmap.language import model as m
from cpfmap.protocol import replies, taskids
from cpfmap.protocol.contract import REPLY_SCHEMAS, TASK_STATES
from cpfmap.protocol.values import read_all, read_ip, read_mac, string_id
from cpfmap.redact import Redactor
from cpfmap.runtime.cache import SHARED, Cache, InlinePrefetch
from cpfmap.runtime.memory import Memory
from cpfmap.runtime.session import Backend, ReplyDeadline
from cpfmap.runtime.steps import StepRunner

log = logging.getLogger("cpfmap")
PROTOCOL_VERSION = "1.0.0"
FIRST_WAIT = 0.25  # seconds before the first re-poll of a task a reply waits for
WAIT_RESERVE = 0.2  # of the reply deadline: a wait inside a reply ends this much before it, for the reply itself
WAITED_KEEP = 1000  # cut waits of task ids known completed (tasks/get then polls only the method's task)


class Engine:
    def __init__(self, mapping: m.CompiledMapping, transport: Transport, clock: Clock,
                 redactor: Redactor | None = None, prefetch: Any = None) -> None:
        self.mapping = mapping
        self.transport = transport
        self.clock = clock
        self.redactor = redactor or Redactor()
        self.cache = Cache(clock)
        self.memory = Memory()   # step key `remember`: kept while this provider runs
        self.prefetch = prefetch or InlinePrefetch()  # cache.PooledPrefetch where RAS is served live
        self.reply = ReplyDeadline(clock, mapping.connection.reply_deadline)
        # Cut waits (in task ids) seen completed, oldest first; only the serve thread reads tasks/get.
        self.waited: OrderedDict[str, None] = OrderedDict()
        self.backend: Backend | None = None
        # Operations whose task gives its own output on completion: name -> operation.
        self.outputs = {op.name: op for op in (*mapping.methods.values(), *mapping.controls.values())
                        if op.task is not None and op.task.output is not None}

    # ------------------------------------------------------------ provider

    def initialize(self, params: Mapping) -> dict:
        return {"version": PROTOCOL_VERSION, "capabilities": self.mapping.capabilities.as_reply()}

    def connect(self, params: Mapping) -> dict:
        settings = self.mapping.coerce_settings(params["settings"])
        for name in self.mapping.secret_settings():
            self.redactor.add(settings.get(name))
        self.disconnect({})
        backend = Backend(self.mapping, self.transport, self.clock, self.redactor, settings, reply=self.reply)
        try:
            backend.login()
            op = self.mapping.methods.get("provider/connect")
            if op is not None:
                self._runner(backend).run(op.steps, self._context(backend, {}))
        except AuthError:
            raise
        except BackendError as exc:
            if exc.status in (401, 403):
                raise AuthError(f"Authentication failed: {exc.message}") from None
            raise exc.context("Connection failed")
        self.backend = backend
        return {}

    def answering(self, handler: Any, params: Mapping) -> Any:
        """handler(params) within the reply deadline (rpc.engine_handlers wraps every method)."""
        self.prefetch.begin()   # refreshes nobody waits for wait for a pause (cache.Quiet)
        try:
            with self.reply.until():
                return handler(params)
        finally:
            self.prefetch.end()

    def disconnect(self, params: Mapping) -> dict:
        """Stop the refresh workers (waiting for the running ones within the reply deadline, so
        none logs in after the logout), run the mapping's disconnect steps, log out."""
        backend, self.backend = self.backend, None
        unfinished = self.prefetch.close(self.reply.within(self.reply.seconds / 2))
        if unfinished:
            log.warning("provider/disconnect: %d background refresh(es) still running; they end at their "
                        "deadlines and cannot log in again", unfinished)
        self.cache.clear()
        if backend is None:
            return {}
        op = self.mapping.methods.get("provider/disconnect")
        try:
            if op is not None:
                self._runner(backend).run(op.steps, self._context(backend, {}))
        finally:
            backend.logout()
        return {}

    # ------------------------------------------------------------- methods

    def call(self, method: str, params: Mapping) -> Any:
        """A mapping-defined method: guests/*, snapshots."""
        op = self.mapping.methods.get(method)
        if op is None:
            raise MethodNotFound(f"{method} is not implemented by mapping {self.mapping.name}")
        self._tick()
        return self._shape(method, self._run(op, params), params)

    def control(self, params: Mapping) -> dict:
        name = params["control"]
        op = self.mapping.controls.get(name)
        if op is None or (name == "suspend" and not self.mapping.capabilities.can_suspend_guests):
            raise MethodNotFound(f"control {name} is not implemented by mapping {self.mapping.name}")
        self._tick()
        self._run(op, params)
        return {}

    def task_status(self, params: Mapping) -> dict:
        self._tick()
        task = taskids.decode(params["id"], self.mapping.polls,
                              {name: op.task.poll for name, op in self.outputs.items()})
        reply = self._cut_wait(task.wait) if task.wait is not None else None
        if reply is not None:
            return self._checked("tasks/get", reply)   # the wait cut at the reply deadline goes on, or failed
        if task.rule == taskids.COMPLETED:
            reply = {"state": "completed", "output": task.values}
        else:
            output = self.outputs[task.output].task.output if task.output else self.mapping.polls[task.rule].output
            reply = self._poll(self.mapping.polls[task.rule], task.values, output)
        return self._checked("tasks/get", reply)

    def _cut_wait(self, wait: tuple[str, dict]) -> dict | None:
        """A task id's wait cut at the reply deadline: its reply while it runs or when it failed;
        None once it completed, which is kept (a completed task stays so) and not polled again."""
        key = json.dumps(wait, sort_keys=True)
        if key in self.waited:
            return None
        reply = self._poll(self.mapping.polls[wait[0]], wait[1], None)
        if reply["state"] != "completed":
            return reply
        self.waited[key] = None
        while len(self.waited) > WAITED_KEEP:
            self.waited.popitem(last=False)
        return None

    # ------------------------------------------------------------ internals

    def _tick(self) -> None:
        """A logical clock (record, replay) moves a step per CPF request."""
        advance = getattr(self.clock, "advance", None)
        if advance is not None:
            advance()

    def _connected(self) -> Backend:
        if self.backend is None:
            raise BackendError("not connected: RAS must send provider/connect first")
        return self.backend

    def _runner(self, backend: Backend) -> StepRunner:
        return StepRunner(backend, self.cache, self._wait_for, self.prefetch, self.memory)

    def _wait_for(self, task: m.TaskStart, context: dict) -> None:
        task_id = self._start_task(task, context)
        try:
            self._wait(task_id)
        except WaitCut as cut:
            found = taskids.decode(task_id, self.mapping.polls)   # never COMPLETED: that one is not waited for
            cut.pending = (found.rule, found.values)
            raise

    def _context(self, backend: Backend, params: Mapping) -> dict:
        return {"settings": backend.settings, "params": dict(params), "remembered": self.memory.view(self.clock.now())}

    def _run(self, op: m.Operation, params: Mapping) -> Any:
        backend = self._connected()
        if op.name.startswith("control "):
            return self._control(op, backend, params)
        if op.task is None:
            context = self._runner(backend).run(op.steps, self._context(backend, params))
            return op.result.eval(context) if op.result is not None else {}
        context, pending = self._task_steps(op, backend, params)
        task_id = self._start_task(op.task, context, op.name if op.task.output is not None else None, pending)
        extra = op.result.eval(context) if op.result is not None else {}
        if not isinstance(extra, dict):
            raise BackendError(f"{op.name}: `result` of a task method must be an object")
        return {"task_id": task_id, **extra}

    def _task_steps(self, op: m.Operation, backend: Backend, params: Mapping) -> tuple[dict, tuple | None]:
        """The steps of a method with a task: (context, the wait cut at the reply deadline or None).
        A cut wait goes on behind the method's task id (tasks/get polls it first) when no later step
        sends a request: the later steps (`set`, `remember`, `fail`) run now. One cut before a
        later request did not do all RAS asked."""
        runner, context = self._runner(backend), self._context(backend, params)
        try:
            return runner.run(op.steps, context), None
        except WaitCut as cut:
            step, pending = cut.step, cut.pending
            if not isinstance(pending, tuple) or not isinstance(step, m.Step) or _requests_after(op.steps, step):
                raise BackendError(f"{op.name}: {cut.message}; the rest was not done, RAS may ask again") from None
            log.info("%s: goes on behind its task id; %s", op.name, cut.message)
            runner.finish(op.steps, step, context)
            return context, pending

    def _control(self, op: m.Operation, backend: Backend, params: Mapping) -> dict:
        """A control whose last wait (the VM reaching its state) ends at the reply deadline is
        accepted: RAS polls guests/get. One cut before a later request did not do all RAS asked."""
        try:
            self._runner(backend).run(op.steps, self._context(backend, params))
        except WaitCut as cut:
            if _requests_after(op.steps, cut.step):
                raise BackendError(f"{op.name} of guest {params.get('id')}: {cut.message}; the rest was not "
                                   "done, RAS may ask again") from None
            log.info("%s of guest %s: accepted; %s", op.name, params.get("id"), cut.message)
        return {}

    def _start_task(self, task: m.TaskStart, context: dict, started_by: str | None = None,
                    pending: tuple | None = None) -> str:
        """started_by: the operation whose own task `output` applies when the task completes;
        pending: (rule, values) of a wait cut at the reply deadline, which tasks/get polls first."""
        if task.completed is not None or (task.when is not None and not task.when.render(context)):
            output = task.completed.eval(context) if task.completed is not None else {}
            return taskids.encode(taskids.COMPLETED, _strings(output, "task output"), wait=pending)
        values = {}
        declared = dict(self.mapping.polls[task.poll].handle) if task.poll in self.mapping.polls else {}
        for key, template in task.handle:
            value = template.render(context)
            if value in (None, "") and key in declared and not declared[key].required:
                continue  # an optional key with no value is left out of the task id
            if value in (None, ""):
                raise BackendError(f"the backend gave no `{key}` for the task it should have started")
            values[key] = string_id(value)
        try:
            taskids.check_handle(self.mapping.polls[task.poll], values)
        except CpfmapError as exc:
            raise BackendError(f"the backend's task handle is not what the mapping expects: {exc.message}") from None
        return taskids.encode(task.poll, values, started_by, pending)

    def _poll(self, rule: m.PollRule, values: dict, output_value: m.Value | None) -> dict:
        backend = self._connected()
        context = self._runner(backend).run(rule.steps, {"settings": backend.settings, "task": values,
                                                         "remembered": self.memory.view(self.clock.now())})
        state = rule.state.eval(context)
        if state not in TASK_STATES:
            raise BackendError(f"task state {state!r} is not one of {', '.join(TASK_STATES)}")
        if state != "running":
            self.cache.drop(SHARED)  # what the task did (a new clone, a reverted state) is in the lists now
        if state == "completed":
            output = output_value.eval(context) if output_value is not None else {}
            return {"state": state, "output": _strings(output, "task output")}
        if state == "failed":
            message = str(rule.error.render(context)) if rule.error is not None else ""
            return {"state": state, "error": {"code": 1, "message": message.strip() or "the task failed"}}
        return {"state": state}

    def _wait(self, task_id: str) -> None:
        """Poll a task the reply depends on: quickly at first, then at RAS's own rate, within
        RAS's own budget (tasks_polling_rate x tasks_polling_retries) and the reply deadline
        (WaitCut when that comes first: the task goes on)."""
        caps = self.mapping.capabilities
        budget = caps.tasks_polling_rate * max(caps.tasks_polling_retries, 1)
        deadline = self.clock.now() + budget
        reply_at = self.reply.at()
        until = None if reply_at is None else reply_at - WAIT_RESERVE
        interval = min(FIRST_WAIT, caps.tasks_polling_rate)
        with self.reply.until(until):
            while True:
                try:
                    reply = self.task_status({"id": task_id})
                except DeadlineReached:
                    raise self._cut(until) from None
                if reply["state"] == "failed":
                    raise BackendError(reply["error"]["message"])
                if reply["state"] == "completed":
                    return
                if self.clock.now() + interval > deadline:
                    raise BackendError(f"the backend task did not finish within {budget}s")
                if until is not None and self.clock.now() + interval >= until:
                    raise self._cut(until)
                self.clock.sleep(interval)
                interval = min(interval * 2, caps.tasks_polling_rate)

    def _cut(self, until: float | None) -> WaitCut:
        return WaitCut(f"the backend was still at work at the reply deadline "
                       f"({self.reply.seconds:g}s, connection.reply_deadline)")

    # --------------------------------------------------------------- replies

    def _shape(self, method: str, result: Any, params: Mapping) -> Any:
        if method == "guests/list":
            result = _shape_list(result)
        elif method == "guests/get":
            result = _shape_guest(result, params)
        elif method == "guests/clone" and isinstance(result, dict) and result.get("clone_id") is not None:
            result["clone_id"] = string_id(result["clone_id"])
        elif method.startswith("provider/"):
            return result
        return self._checked(method, result)

    def _checked(self, method: str, result: Any) -> Any:
        name = REPLY_SCHEMAS.get(method)
        if name is None:
            return result
        wrong = replies.problem(name, result)
        if wrong is not None:
            raise BackendError(f"{method}: the reply built from the backend's answer is not what RAS accepts "
                               f"({wrong})")
        return result


def _requests_after(steps: tuple, step: Any) -> bool:
    """Whether a step after `step` (in run order, nested ones included) sends a request."""
    flat: list = []

    def walk(items: tuple) -> None:
        for item in items:
            flat.append(item)
            walk(item.steps or ())
    walk(steps)
    if step not in flat:
        return True   # not found: assume the worst
    return any(later.request is not None for later in flat[flat.index(step) + 1:])


def _strings(output: Any, what: str) -> dict:
    if output is None:
        return {}
    if not isinstance(output, dict):
        raise BackendError(f"{what} must be an object, got {output!r}")
    return {str(k): string_id(v) for k, v in output.items() if v is not None}


def _shape_list(result: Any) -> Any:
    if isinstance(result, dict) and isinstance(result.get("guests"), list):
        ids = [string_id(i) for i in result["guests"] if i is not None]
        result = dict(result, guests=list(dict.fromkeys(ids)))
    return result


def _shape_guest(result: Any, params: Mapping) -> Any:
    """One normal form for every mapping: string id, and addresses by contract.ADDRESSES."""
    if not isinstance(result, dict):
        return result
    out = dict(result)
    out["id"] = string_id(out.get("id") if out.get("id") is not None else params.get("id"))
    for key, read in (("mac_addresses", read_mac), ("ip_addresses", read_ip)):
        value = out.get(key)
        if value is None:
            out[key] = []
        elif isinstance(value, list):  # a value it cannot read is an error, never dropped unseen
            out[key] = read_all(value, functools.partial(read, where=f"guests/get {key}"))
    if isinstance(out.get("name"), (int, float)) and not isinstance(out.get("name"), bool):
        out["name"] = string_id(out["name"])
    return out
