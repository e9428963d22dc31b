"""The Proxmox VE pack on an unreliable network: every RAS workflow passes, and no clone or
snapshot is ever made twice.

Two kinds of trouble, both seeded: fakepve's flaky network drops connections before a request
runs; LossyPve (tests/pve.py) loses the answer after a write has run, which is the case that
makes a blind re-send create a second VM. The pack's `idempotent`, `already_done` and `lookup`
declarations are what keep both safe.
"""
from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys

import pytest
from conftest import CONNECTOR, ROOT, serve_session
from fakepve import settle

PACK = ROOT / "mappings" / "proxmox-ve"
WORKFLOWS = ("connect", "inventory", "power", "create-template", "create-host", "maintenance", "delete-host")
# More attempts than the pack's default: at 15% drops a request fails three times in a row
# about once in 300, and a run sends hundreds. No waiting between them: the test must be quick.
PATIENT = "connection: {retries: 7, backoff: 0}\n"


def pack_copy(tmp_path, variant: str) -> str:
    for source in PACK.glob("*.yaml"):
        shutil.copy(source, tmp_path / source.name)
    path = tmp_path / f"patient-{variant}"
    path.write_text(f"extends: {variant}\ncpfmap: 1\nmetadata: {{name: patient}}\n{PATIENT}", encoding="utf-8")
    return str(path)


def conformance(mapping: str, settings, *extra: str) -> tuple[int, str]:
    if "--workflows" not in extra:
        extra += ("--workflows", ",".join(WORKFLOWS))
    proc = subprocess.run([sys.executable, str(CONNECTOR), "conformance", mapping, "--settings", str(settings),
                           "--time-scale", "0", *extra],
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def made(pve, kind: str) -> list:
    """The tasks of one type that fakepve ran, as (status, target)."""
    return [(t.get("exitstatus"), t["id"]) for t in pve.tasklog if t["type"] == kind]


def assert_nothing_twice(pve, snapshots: int = 2) -> None:
    """One clone, one VM; one snapshot task per snapshot asked for (create-template, maintenance)."""
    clones = made(pve, "qmclone")
    assert clones == [("OK", "103")], clones
    assert [s for s, _ in made(pve, "qmsnapshot")] == ["OK"] * snapshots, made(pve, "qmsnapshot")
    # A repeated start fails its task when the first one started the VM: `already_done` reads it.
    failed = [(t["type"], t["exitstatus"]) for t in pve.tasklog if t.get("exitstatus") not in ("OK", None)
              and not t["exitstatus"].endswith("already running")]
    assert failed == [], failed
    names = [vm.name for vm in pve.vms]
    assert len(names) == len(set(names)), names


# Seeds whose drops hit snapshot create and delete, reset and destroy (9), a clone, reboot and
# start (10), stop and suspend (13); linked: a clone (9), convert to template (10). Seeds 1 to
# 15 of each variant all pass.
@pytest.mark.parametrize("variant,seed", [("mapping.yaml", 9), ("mapping.yaml", 10), ("mapping.yaml", 13),
                                          ("linked.yaml", 9), ("linked.yaml", 10)])
def test_every_workflow_passes_when_connections_drop(pve, tmp_path, settings_file, variant, seed):
    pve.pve.flaky_network(drop_rate=0.15, seed=seed)
    pve.pve._random.seed(seed)  # fakepve seeds when it starts; this one has started already
    workflows = WORKFLOWS if variant == "mapping.yaml" else [w for w in WORKFLOWS if w != "maintenance"]
    code, out = conformance(pack_copy(tmp_path, variant), settings_file(), "--guest", "102",
                            "--template-source", "103", "--workflows", ",".join(workflows))
    pve.pve.flaky_network(drop_rate=0.0)
    assert code == 0, out
    writes = [d for d in pve.pve.dropped if d[0] != "GET"]
    assert writes, "the seed dropped no write: the test proves nothing"
    assert_nothing_twice(pve.pve, snapshots=2 if variant == "mapping.yaml" else 0)


def losing_first_answer_of_each_write():
    """Lose the answer to the first write sent to each path (after it ran), and nothing else."""
    seen: set = set()

    def lose(method: str, path: str) -> bool:
        if method == "GET" or (method, path) in seen or path.endswith("/access/ticket"):
            return False
        seen.add((method, path))
        return True
    return lose


@pytest.mark.parametrize("auth", ["token", "password"])
def test_lost_answers_to_writes_never_make_anything_twice(pve, tmp_path, settings_file, auth):
    pve.pve.lose = losing_first_answer_of_each_write()
    code, out = conformance(pack_copy(tmp_path, "mapping.yaml"), settings_file(auth=auth), "--guest", "101",
                            "--template-source", "103")
    pve.pve.lose = None
    assert code == 0, out
    lost = {path.rsplit("/", 1)[-1] for _, path in pve.pve.lost}
    assert {"clone", "snapshot", "start", "stop", "config"} <= lost, lost
    assert_nothing_twice(pve.pve)


def test_linked_variant_survives_lost_answers(pve, tmp_path, settings_file):
    pve.pve.lose = losing_first_answer_of_each_write()
    code, out = conformance(pack_copy(tmp_path, "linked.yaml"), settings_file(), "--guest", "102",
                            "--template-source", "103", "--workflows", "create-template,create-host,delete-host")
    pve.pve.lose = None
    assert code == 0, out
    assert made(pve.pve, "qmclone") == [("OK", "103")]
    assert [s for s, _ in made(pve.pve, "qmtemplate")] == ["OK"]


def test_a_clone_whose_answer_is_lost_is_not_sent_again_without_a_lookup(pve, tmp_path, settings_file):
    """The protection's own check: strip the lookup and the lost answer fails the call."""
    mapping = pack_copy(tmp_path, "mapping.yaml")
    base = tmp_path / "mapping.yaml"
    text = base.read_text()
    assert "lookup: {steps: [{use: clone_lookup}]" in text
    lookup = '        lookup: {steps: [{use: clone_lookup}], found: "{{ mine is not none or made is not none }}"}\n'
    base.write_text(text.replace(lookup, ""))
    pve.pve.lose = lambda method, path: method == "POST" and path.endswith("/clone")
    code, out = conformance(mapping, settings_file(), "--template-source", "103",
                            "--workflows", "create-template,create-host")
    pve.pve.lose = None
    assert code == 1 and "connection to POST" in out, out
    assert len(made(pve.pve, "qmclone")) == 1   # never re-sent blindly


# A clone answered by PVE whose answer is lost before the worker took its id: PVE's worker logs
# "creating a clone of VM A with ID N" and writes the temporary config only after it answered
# (qemu-server API2/Qemu.pm clone_vm; tests/pve.py ClusterPve plays it), so the new id shows
# nothing yet. The lookup finds the worker in the node's active task list and waits until its
# log names the id.

def connect(pve) -> dict:
    return {"method": "provider/connect", "params": {"settings": pve.settings()}}


def call(method: str, **params) -> dict:
    return {"method": method, "params": params}


def clone_posts(pve) -> list:
    return [r for r in pve.pve.requests if r[0] == "POST" and r[1].endswith("/clone")] + \
        [d for d in pve.pve.dropped if d[0] == "POST" and d[1].endswith("/clone")]


def once(method: str, suffix: str):
    done: list = []

    def hit(m: str, path: str) -> bool:
        if m == method and path.endswith(suffix) and not done:
            done.append(path)
            return True
        return False
    return hit


@pytest.mark.parametrize("mapping", ["proxmox-ve", "mappings/proxmox-ve/linked.yaml"])
def test_a_clone_lost_before_its_worker_took_the_id_is_followed_and_never_sent_again(pve, mapping):
    gate, hold = asyncio.Event(), asyncio.Event()
    pve.pve.clone_gate, pve.pve.clone_hold = gate, hold   # the worker takes its id once gate is set

    def heard(method: str, path: str) -> None:
        if path.endswith("/log"):
            gate.set()   # after the lookup has read the worker's log without the line
    pve.pve.heard = heard
    pve.pve.lose = once("POST", "/clone")
    replies, err, _ = serve_session(mapping, [connect(pve), call("guests/clone", id="900", name="VDI-L")])
    pve.pve.lose = pve.pve.heard = None
    result = replies[1].get("result")
    assert result, (replies, err)
    assert pve.pve.lost and len(clone_posts(pve)) == 1, (pve.pve.lost, clone_posts(pve))
    assert pve.pve.vm(int(result["clone_id"])).config.get("lock") == "clone"   # still being made

    async def release() -> None:
        hold.set()
        await settle()
    pve.call(release())
    replies, err, _ = serve_session(mapping, [connect(pve), call("tasks/get", id=result["task_id"]),
                                              call("guests/get", id=result["clone_id"])])
    assert replies[1]["result"] == {"state": "completed", "output": {"clone_id": result["clone_id"]}}, err
    assert replies[2]["result"]["name"] == "VDI-L"
    assert made(pve.pve, "qmclone") == [("OK", "900")]
    assert [vm.name for vm in pve.pve.vms].count("VDI-L") == 1
    followed = [r[1] for r in pve.pve.requests if "/tasks/UPID:" in r[1] and r[1].endswith("/status")]
    assert followed, "the clone was not followed through the worker's UPID"


def test_a_lost_clone_that_cannot_be_told_from_a_rivals_unnamed_worker_fails_and_is_never_sent_again(pve, tmp_path):
    """Another provider's clone of the same template (same token) whose worker has not named
    its id; this clone's request dropped before PVE ran it. Either could be it: not sent again."""
    stuck = asyncio.Event()

    async def rival() -> str:
        async def body() -> None:
            await stuck.wait()
        pve.pve.time_scale = 1e-9   # fakepve runs a task in the background only with a time scale
        try:
            return await pve.pve.task("pve2", "qmclone", 900, "root@pam!ras", body, lock=False)
        finally:
            pve.pve.time_scale = 0.0
    pve.call(rival())
    quick = tmp_path / "quick.yaml"   # the lookup waits for the worker until the reply deadline
    quick.write_text(f"extends: {PACK / 'mapping.yaml'}\ncpfmap: 1\nmetadata: {{name: quick}}\n"
                     "connection: {reply_deadline: 3}\n", encoding="utf-8")
    pve.pve.cut = once("POST", "/clone")
    try:
        replies, err, _ = serve_session(str(quick), [connect(pve), call("guests/clone", id="900", name="VDI-A")])
    finally:
        pve.pve.cut = None
        pve.loop.call_soon_threadsafe(stuck.set)
    message = replies[1]["error"]["message"]
    assert "not sent again: it may have taken effect" in message and "reply deadline" in message, message
    assert len(clone_posts(pve)) == 1 and pve.pve.dropped == [clone_posts(pve)[0]]   # the dropped one, no other
    assert "VDI-A" not in [vm.name for vm in pve.pve.vms]


@pytest.mark.parametrize("mapping", ["proxmox-ve", "mappings/proxmox-ve/linked.yaml"])
def test_a_clone_that_ran_after_its_lookup_looked_is_found_when_the_repeat_is_refused(pve, mapping):
    """The connection drops before PVE answers and PVE runs the clone only after the lookup
    found nothing: the repeat meets the first clone's id ("config file already exists"), and
    the lookup, asked again, finds the first clone instead of running the clone under a new id."""
    pve.pve.late_gate = gate = asyncio.Event()

    def heard(method: str, path: str) -> None:
        if path.endswith("/cluster/resources") and pve.pve.late is None:
            gate.set()   # the lookup has looked: now the first attempt runs, before the repeat
    pve.pve.heard = heard
    late = once("POST", "/clone")

    def first_only(method: str, path: str) -> bool:
        hit = late(method, path)
        if hit:
            pve.pve.late = None
        return hit
    pve.pve.late = first_only
    replies, err, _ = serve_session(mapping, [connect(pve), call("guests/clone", id="900", name="VDI-Z")])
    pve.pve.heard = None
    result = replies[1].get("result")
    assert result, (replies, err)
    assert len([r for r in pve.pve.requests if r[0] == "POST" and r[1].endswith("/clone")]) == 2
    assert [vm.name for vm in pve.pve.vms].count("VDI-Z") == 1
    assert pve.pve.vm(int(result["clone_id"])).name == "VDI-Z"
    replies, err, _ = serve_session(mapping, [connect(pve), call("tasks/get", id=result["task_id"])])
    assert replies[1]["result"] == {"state": "completed", "output": {"clone_id": result["clone_id"]}}, err
