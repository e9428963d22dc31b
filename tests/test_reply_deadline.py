"""Every CPF reply within `connection.reply_deadline` (issue 17): waits inside a reply end at
the deadline with the answer RAS needs, and each HTTP exchange gets at most what is left.
In-process against a backend whose tasks never end (time: a VirtualClock the backend moves),
then the Proxmox VE pack against fakepve with a VM that never reaches the state."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import CONNECTOR, serve_session

from cpfmap.clock import VirtualClock
from cpfmap.errors import BackendError, TransportError
from cpfmap.http.transport import FunctionTransport, HttpResponse
from cpfmap.language import loader
from cpfmap.protocol import taskids
from cpfmap.protocol.rpc import Server, engine_handlers
from cpfmap.redact import Redactor
from cpfmap.runtime.engine import Engine

BASE = yaml.safe_load(open("tests/data/tiny.yaml").read())
POWER = {"method": "POST", "path": "/machines/{{ params.id }}/power", "json": {"state": "off"}}
CONTROLS = {
    # stop: the task RAS's action started never ends; delete: a stop that never ends, then the destroy
    "stop": {"steps": [{"request": POWER, "accept": [202], "extract": {"op": "op"},
                        "wait": {"poll": "op", "handle": {"op": "{{ op }}"}}}]},
    "delete": {"steps": [{"name": "stop first", "request": POWER, "accept": [202], "extract": {"op": "op"},
                          "wait": {"poll": "op", "handle": {"op": "{{ op }}"}}},
                         {"name": "destroy", "request": {"method": "DELETE", "path": "/machines/{{ params.id }}"}}]},
}


class Stalled:
    """Power requests start an operation that stays `working`; every exchange takes `each` seconds."""

    def __init__(self, clock: VirtualClock, each: float = 0.0) -> None:
        self.clock, self.each = clock, each
        self.sent: list[tuple[str, float]] = []   # (method path, the exchange's deadline)

    def __call__(self, request) -> HttpResponse:
        path = request.url.split("/api/v1", 1)[1].split("?")[0]
        self.sent.append((f"{request.method} {path}", request.deadline))
        self.clock.sleep(self.each)
        body: object = {}
        status = 200
        if path == "/login":
            body = {"token": "tok-123456"}
        elif path.endswith("/power"):
            body, status = {"op": "0000abcd"}, 202
        elif path.startswith("/operations/"):
            body = {"status": "working"}
        return HttpResponse(status, (("Content-Type", "application/json"),), json.dumps(body).encode())


def _server(tmp_path, backend, clock, layer: dict | None = None, **connection) -> Server:
    return Server(engine_handlers(_engine(tmp_path, backend, clock, layer, **connection)), Redactor())


def _engine(tmp_path, backend, clock, layer: dict | None = None, **connection) -> Engine:
    """The engine, connected; layer: more of the mapping (merged over tiny.yaml and CONTROLS)."""
    path = tmp_path / "m.yaml"
    mapping = loader.merge(BASE, {"controls": CONTROLS, "connection": connection,
                                  "capabilities": {"tasks_polling_rate": 5, "tasks_polling_retries": 180}})
    path.write_text(yaml.safe_dump(loader.merge(mapping, layer or {})))
    engine = Engine(loader.load(path), FunctionTransport(backend), clock, Redactor())
    server = Server(engine_handlers(engine), Redactor())
    settings = {"url": "https://h", "user": "admin", "password": "pw-0123456"}
    assert "result" in server.handle_text(json.dumps({"method": "provider/connect", "params": {"settings": settings}}))
    return engine


def _timed(server, clock, method, **params) -> tuple[dict, float]:
    started = clock.now()
    reply = server.handle_text(json.dumps({"method": method, "params": params}))
    return reply, clock.now() - started


def test_a_control_whose_task_never_ends_is_accepted_at_the_deadline(tmp_path):
    clock = VirtualClock()
    server = _server(tmp_path, Stalled(clock), clock)
    reply, took = _timed(server, clock, "guests/control", id="101", control="stop")
    assert reply == {"result": {}}
    assert 25 <= took <= 30            # the default reply deadline, not the task budget (15 min)


def test_a_wait_cut_before_the_rest_of_a_control_is_an_error_in_time_and_the_rest_is_not_sent(tmp_path):
    clock = VirtualClock()
    backend = Stalled(clock)
    server = _server(tmp_path, backend, clock, reply_deadline=12)
    reply, took = _timed(server, clock, "guests/control", id="101", control="delete")
    assert took <= 12
    assert "reply deadline (12s" in reply["error"]["message"] and "not done" in reply["error"]["message"]
    assert not [what for what, _ in backend.sent if what.startswith("DELETE")]


def test_each_exchange_gets_at_most_what_is_left_of_the_deadline(tmp_path):
    clock = VirtualClock()
    backend = Stalled(clock, each=7.0)      # a slow backend: 7 s per exchange
    server = _server(tmp_path, backend, clock, reply_deadline=20, total_timeout=120)
    backend.sent.clear()
    reply, took = _timed(server, clock, "guests/control", id="101", control="stop")
    deadlines = [deadline for _, deadline in backend.sent]
    assert deadlines[0] == pytest.approx(20) and 12 < deadlines[1] <= 13   # a wait keeps a reserve for the reply
    assert all(d <= 20 - 7 * n + 1e-6 for n, d in enumerate(deadlines))
    assert reply == {"result": {}} and took <= 20 + 7   # the last exchange was given what was left


class CutOff(Stalled):
    """An operation's poll that the reply deadline cuts: it takes what was left and gets nothing."""

    def __call__(self, request) -> HttpResponse:
        if "/operations/" in request.url:
            self.sent.append((f"GET {request.url}", request.deadline))
            self.clock.sleep(request.deadline)
            raise TransportError(f"no complete answer within {request.deadline:g}s")
        return super().__call__(request)


def test_a_poll_the_reply_deadline_cuts_is_the_deadline_not_an_unreachable_backend(tmp_path):
    clock = VirtualClock()
    server = _server(tmp_path, CutOff(clock), clock, reply_deadline=10)
    reply, took = _timed(server, clock, "guests/control", id="101", control="stop")
    assert reply == {"result": {}}, reply   # accepted: RAS polls guests/get
    assert took <= 10


# ------------------------------------------- a method with a task, its wait cut

CLONE_STEP = {"name": "clone", "request": {"method": "POST", "path": "/machines/{{ params.id }}/clone"},
              "accept": [202], "extract": {"op": "op", "new": "vm_id"},
              # as the Proxmox pack's clone: wait until the worker holds the new id, then answer
              "wait": {"poll": "started", "handle": {"op": "{{ op }}"}}, "remember": {"vmids": "{{ new }}"}}
CLONING = {
    "tasks": {"started": {"handle": {"op": {"pattern": "[0-9a-f]{8}"}},
                          "steps": [{"request": {"method": "GET", "path": "/operations/{{ task.op }}/started"},
                                     "extract": {"phase": "phase"}}],
                          "state": "{{ {'waiting': 'running', 'holding': 'completed', 'gone': 'failed'}[phase] }}",
                          "error": "the clone worker ended before it held id {{ phase }}"}},
    "methods": {"guests/clone": {"steps": [CLONE_STEP, {"set": {"answer": "{{ new }}"}}],
                                 "task": {"poll": "op", "handle": {"op": "{{ op }}", "vm": "{{ new }}"}},
                                 "result": {"clone_id": "{{ answer }}"}}},
}
# the same, with a request after the wait: a cut there leaves work undone
TAGGING = loader.merge(CLONING, {"methods": {"guests/clone": dict(CLONING["methods"]["guests/clone"], steps=[
    CLONE_STEP, {"name": "tag", "request": {"method": "PUT", "path": "/machines/{{ new }}/tags"}},
    {"set": {"answer": "{{ new }}"}}])}})


class Cloning(Stalled):
    """A clone whose worker waits (`phase`) for its new id, then runs (`status`) as operation 0000beef."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(clock)
        self.phase, self.status = "waiting", "working"

    def __call__(self, request) -> HttpResponse:
        path = request.url.split("/api/v1", 1)[1].split("?")[0]
        body: object
        if path.endswith("/clone"):
            body, status = {"op": "0000beef", "vm_id": 205}, 202
        elif path == "/operations/0000beef/started":
            body, status = {"phase": self.phase}, 200
        elif path == "/operations/0000beef":
            body, status = {"status": self.status, "error": "disk copy failed"}, 200
        else:
            return super().__call__(request)
        self.sent.append((f"{request.method} {path}", request.deadline))
        return HttpResponse(status, (("Content-Type", "application/json"),), json.dumps(body).encode())


def _cut_clone(tmp_path, layer: dict = CLONING) -> tuple:
    """(server, backend, clock, engine, the clone's reply, seconds it took) with a worker that waits."""
    clock = VirtualClock()
    backend = Cloning(clock)
    engine = _engine(tmp_path, backend, clock, layer, reply_deadline=12)
    server = Server(engine_handlers(engine), Redactor())
    reply, took = _timed(server, clock, "guests/clone", id="7", name="N")
    return server, backend, clock, engine, reply, took


def test_a_task_method_whose_wait_is_cut_answers_its_task_id_in_time(tmp_path):
    _, _, _, engine, reply, took = _cut_clone(tmp_path)
    assert took <= 12
    assert reply["result"]["clone_id"] == "205", reply      # the steps after the cut ran (`set`)...
    assert engine.memory.view()["vmids"] == ["205"]         # ...and the cut step's `remember`
    task = taskids.decode(reply["result"]["task_id"], engine.mapping.polls)
    assert task.wait == ("started", {"op": "0000beef"}) and task.rule == "op"


@pytest.mark.parametrize("phase,status,expected,polls_the_task", [
    ("waiting", "working", {"state": "running"}, False),      # the cut wait goes on
    ("holding", "working", {"state": "running"}, True),       # then the method's own task
    ("holding", "done", {"state": "completed", "output": {"clone_id": "205"}}, True),
    ("gone", "working", {"state": "failed", "error": {"code": 1,
                                                      "message": "the clone worker ended before it held id gone"}},
     False),                                                   # the waited task's failure is the task's
])
def test_tasks_get_polls_the_cut_wait_then_the_methods_task(tmp_path, phase, status, expected, polls_the_task):
    server, backend, clock, _, reply, _ = _cut_clone(tmp_path)
    backend.phase, backend.status = phase, status
    backend.sent.clear()
    answer, _ = _timed(server, clock, "tasks/get", id=reply["result"]["task_id"])
    assert answer == {"result": expected}
    assert [what for what, _ in backend.sent] == ["GET /operations/0000beef/started"] + \
        (["GET /operations/0000beef"] if polls_the_task else [])


def test_a_cut_wait_seen_completed_is_not_polled_again(tmp_path):
    server, backend, clock, _, reply, _ = _cut_clone(tmp_path)
    backend.phase = "holding"
    _timed(server, clock, "tasks/get", id=reply["result"]["task_id"])
    backend.phase = "gone"          # were it polled again, the clone would fail
    backend.sent.clear()
    answer, _ = _timed(server, clock, "tasks/get", id=reply["result"]["task_id"])
    assert answer == {"result": {"state": "running"}}
    assert [what for what, _ in backend.sent] == ["GET /operations/0000beef"]


def _tampered(wait: object) -> str:
    data = {"r": "op", "v": {"op": "0000beef", "vm": "205"}, "w": wait}
    return "cpf1." + base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize("wait", [
    {"r": "nope", "v": {"op": "0000beef"}},                      # no such rule
    {"r": "completed", "v": {}},                                 # not a task
    {"r": "started", "v": {"op": "0000beef/../../x"}},           # a handle value out of its pattern
    {"r": "started", "v": {"op": "0000beef", "url": "http://elsewhere"}},   # a key the rule does not have
    {"r": "started", "v": {}},                                   # a required key missing
    {"r": "started", "v": {"op": 1}},                            # not a string
    {"r": "started", "v": {"op": "0000beef"}, "x": "1"},         # more than a rule and its values
    ["started", {"op": "0000beef"}],
    "started",
])
def test_a_tampered_pending_wait_is_invalid_params_and_sends_nothing(tmp_path, wait):
    server, backend, clock, _, _, _ = _cut_clone(tmp_path)
    untouched, _ = _timed(server, clock, "tasks/get", id=_tampered({"r": "started", "v": {"op": "0000beef"}}))
    assert untouched == {"result": {"state": "running"}}
    backend.sent.clear()
    answer, _ = _timed(server, clock, "tasks/get", id=_tampered(wait))
    assert answer["error"]["code"] == -32602 and "invalid task id" in answer["error"]["message"]
    assert backend.sent == []


def test_a_task_id_with_its_pending_wait_is_never_longer_than_decode_takes():
    short = "x" * 600
    assert len(taskids.encode("op", {"a": short}, wait=("started", {"b": short}))) <= taskids.MAX_ID
    with pytest.raises(BackendError, match=f"more than {taskids.MAX_ID}"):
        taskids.encode("op", {"a": short, "b": short}, wait=("started", {"c": short, "d": short * 2}))


def test_a_cut_followed_by_a_request_is_an_error_in_time_and_the_request_is_not_sent(tmp_path):
    _, backend, _, _, reply, took = _cut_clone(tmp_path, TAGGING)
    assert took <= 12
    assert "reply deadline (12s" in reply["error"]["message"] and "not done" in reply["error"]["message"]
    assert not [what for what, _ in backend.sent if what.startswith("PUT")]


# ---------------------------------------------------------------- Proxmox VE

def _pve_mapping(tmp_path: Path, seconds: float) -> str:
    pack = Path("mappings/proxmox-ve/mapping.yaml").resolve()
    path = tmp_path / "pve.yaml"
    path.write_text(f"extends: {json.dumps(str(pack))}\ncpfmap: 1\nmetadata: {{name: pve-short}}\n"
                    f"connection: {{reply_deadline: {seconds}}}\n")
    return str(path)


def test_pve_controls_answer_within_the_deadline_when_the_vm_never_gets_there(tmp_path):
    from pve import ServedPve, cluster
    served = ServedPve(time_scale=0.02)
    cluster(served.pve)
    served.pve.ha_delay = 10 ** 6          # the HA manager never acts on the request
    served.pve.vm(101).ha_state = "stopped"
    served.pve.vm(101).status = "stopped"
    served.pve.vm(102).stop_secs = 10 ** 6  # a stop that hangs
    served.pve.add_vm(104, "Hangs-On-Stop", node="pve1", status="running")
    served.pve.vm(104).stop_secs = 10 ** 6
    mapping = _pve_mapping(tmp_path, 3)
    lines = [{"method": "provider/connect", "params": {"settings": served.settings()}},
             {"method": "guests/control", "params": {"id": "101", "control": "start"}},
             {"method": "guests/control", "params": {"id": "102", "control": "stop"}},
             {"method": "guests/control", "params": {"id": "104", "control": "delete"}},
             {"method": "guests/get", "params": {"id": "104"}}]
    try:
        started = time.monotonic()
        replies, err, code = serve_session(mapping, lines, timeout=60)
        took = time.monotonic() - started
    finally:
        served.stop()
    assert code == 0 and replies[0] == {"result": {}}, err
    assert replies[1] == {"result": {}} and replies[2] == {"result": {}}, err   # accepted: RAS polls get
    assert "reply deadline" in replies[3]["error"]["message"], replies[3]    # the destroy was not sent
    assert replies[4]["result"]["id"] == "104"                                # the VM is still there
    assert took < 3 * 3 + 10, err


class CloneHeldBack:
    """Real PVE's clone worker logs "creating a clone of VM A with ID N" once it holds the new id's
    config lock and found no config there (qemu-server API2/Qemu.pm clone_vm `$clonefn`): a
    contended lock or a slow cluster filesystem holds that line back. tests/pve.py's worker logs
    it as soon as it runs; here it comes `clone_late` PVE seconds later, before the copy."""

    clone_late = 0.0

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        if ttype != "qmclone" or not self.clone_late:
            return await super().task(node, ttype, tid, user, body, vm, lock, log)
        upid: list = []

        async def held():
            await self.pause(self.clone_late)
            self.tasks[upid[0]]["log"].extend(log)
            return await body()
        upid.append(await super().task(node, ttype, tid, user, held, vm, lock, ()))
        return upid[0]


def test_pve_create_host_goes_on_behind_tasks_get_when_the_clone_wait_is_cut(tmp_path):
    """The clone's wait for its worker to hold the new id is cut at a 2 s reply deadline: RAS gets
    the task id, and its create-host flow ends with a working clone through tasks/get."""
    from pve import LossyPve, ServedPve, cluster
    served = ServedPve(time_scale=0.05, fake=type("HeldBackPve", (CloneHeldBack, LossyPve), {}))
    cluster(served.pve)
    served.pve.clone_late = 120            # 6 s here, three reply deadlines
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(served.settings()))
    try:
        proc = subprocess.run([sys.executable, str(CONNECTOR), "conformance", _pve_mapping(tmp_path, 2),
                               "--settings", str(settings), "--template-source", "103", "--time-scale", "0.02",
                               "--workflows", "create-template,create-host,delete-host", "-v"],
                              capture_output=True, text=True, timeout=300)
    finally:
        served.stop()
    assert proc.returncode == 0, proc.stdout
    assert "PASS  create-host" in proc.stdout and "PASS  delete-host" in proc.stdout, proc.stdout
    assert "guests/clone: goes on behind its task id" in proc.stdout, proc.stdout
