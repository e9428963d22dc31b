"""The Proxmox VE pack against what real clusters do and the plain fakepve scenario does not
show: concurrent clones, HA-managed guests, PVE before libpve-http-server-perl 5.2.0, tokens
with exactly the documented role, QEMU run states and locks, DNS names, offline storage,
/cluster/resources lag and several nodes (see the pack README)."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from aiohttp import web
from conftest import CONNECTOR, serve_session
from fakepve.model import TaskError
from pve import ClusterPve, FullListPve, ServedPve, cluster, next_host

LINKED = "mappings/proxmox-ve/linked.yaml"
USER, TOKEN, SECRET = "ras@pve", "cpf", "3b1f2f8e-6a0d-4c47-9d0e-1f5a7c2b9e44"
# The least-privilege role of the pack README (PVE 9 names), by ACL path.
ROLE = {"/vms": ("VM.Audit", "VM.PowerMgmt", "VM.Clone", "VM.Allocate", "VM.Config.Options", "VM.Snapshot",
                 "VM.Snapshot.Rollback", "VM.GuestAgent.Audit"),
        "/storage": ("Datastore.AllocateSpace",),
        "/sdn/zones": ("SDN.Use",)}


def connect(served, **kw):
    return {"method": "provider/connect", "params": {"settings": served.settings(**kw)}}


def call(method, **params):
    return {"method": method, "params": params}


def control(vmid, name):
    return call("guests/control", id=vmid, control=name)


def served_with(fake=FullListPve, **kw):
    served = ServedPve(fake=fake, **kw)
    cluster(served.pve)
    return served


# ------------------------------------------------------------------ 1. parallel clones

class NextidReservesNothing(FullListPve):
    """/cluster/nextid as PVE answers it while other clone workers have not yet written their
    configs: the first `stale` callers all get the same id."""

    stale = 4
    first = None

    async def _nextid(self, v, user):
        answer = await super()._nextid(v, user)
        if self.stale > 0 and v.get("vmid") in (None, ""):
            self.stale -= 1
            self.first = self.first or answer
            return self.first
        return answer


def test_four_concurrent_clones_make_four_distinct_vms():
    served = served_with(NextidReservesNothing)
    try:
        lines = [connect(served), call("guests/clone", id="900", name="VDI-X")]
        data = b"".join((json.dumps(line) + "\n").encode() for line in lines)
        procs = [subprocess.Popen([sys.executable, str(CONNECTOR), "serve", "proxmox-ve"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
        outs = [proc.communicate(data, timeout=120) for proc in procs]
        replies = [json.loads(out.decode().splitlines()[1]) for out, _ in outs]
        assert all("result" in reply for reply in replies), replies
        ids = {reply["result"]["clone_id"] for reply in replies}
        assert len(ids) == 4
        assert all(served.pve.vm(int(i)).name == "VDI-X" for i in ids)
        clones = [r for r in served.pve.requests if r[0] == "POST" and r[1].endswith("/clone")]
        checks = [r for r in served.pve.requests if r[0] == "GET" and r[1].endswith("/cluster/nextid")]
        assert len(clones) + len(checks) > 4 + 8  # ids did collide, and were retried
    finally:
        served.stop()


# ---------------------------------------------------------------- 2. ZFS full clones

def test_a_full_clone_zfs_cannot_make_is_refused_with_what_to_do(pve):
    pve.pve.fail("POST", "/nodes/pve1/qemu/103/clone", 500,
                 "Full clone feature is not supported for a snapshot of 'local-zfs:vm-103-disk-0' (scsi0)")
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), call("guests/clone", id="103", name="V",
                                                                      snapshot="RAS_TEMPLATE_VERSION_1")])
    message = replies[1]["error"]["message"]
    assert "Full clone feature is not supported for a snapshot" in message and "linked.yaml" in message, err


# -------------------------------------------------------------------- 3. HA-managed

def test_power_and_delete_wait_for_an_ha_managed_vm_to_change():
    served = served_with(time_scale=0.02)   # HA acts ha_delay (10) PVE seconds after the request
    served.pve.vm(101).ha_state = "started"
    try:
        replies, err, _ = serve_session("proxmox-ve", [
            connect(served), control("101", "stop"), call("guests/get", id="101"), control("101", "start"),
            call("guests/get", id="101"), control("101", "delete"), call("guests/list")], timeout=120)
    finally:
        served.stop()
    assert [r.get("error") for r in replies] == [None] * 7, err
    assert replies[2]["result"]["state"] == "powered_off"
    assert replies[4]["result"]["state"] == "powered_on"
    assert "101" not in replies[6]["result"]["guests"]


# ------------------------------------------------------- 4. reason phrase, old PVE 8

class ReasonPhraseOnly(FullListPve):
    """PVE before libpve-http-server-perl 5.2.0: an error's text is only in the reason phrase."""

    def _build_app(self):
        app = super()._build_app()

        @web.middleware
        async def strip(request, handler):
            response = await handler(request)
            if response.status >= 400 and response.content_type == "application/json":
                body = {k: v for k, v in json.loads(response.text).items() if k != "message"}
                return web.json_response(body, status=response.status, reason=response.reason)
            return response
        app.middlewares.insert(0, strip)
        return app


def test_error_text_and_agent_rule_work_with_the_reason_phrase_only():
    served = served_with(ReasonPhraseOnly)
    served.pve.vm(101).agent = None            # agent: 1 in the config, no agent in the guest
    served.pve.snapshot_lock(103, "backup")
    try:
        replies, err, _ = serve_session("proxmox-ve", [connect(served), call("guests/get", id="101"),
                                                       call("guests/convert", id="103", is_template=True)])
    finally:
        served.stop()
    assert replies[1]["result"]["ip_addresses"] == [], err
    assert replies[2]["error"]["message"].endswith("HTTP 500: VM is locked (backup)")


# ------------------------------------------- 5 and 11. the least-privilege role

def with_role(served, drop: str = "") -> dict:
    served.pve.apitokens[f"{USER}!{TOKEN}"] = SECRET
    for path, privileges in ROLE.items():
        served.pve.grant(USER, path, *(p for p in privileges if p != drop))
    return served.settings(username=USER, token_name=TOKEN, token_secret=SECRET)


@pytest.mark.parametrize("mapping,extra", [
    ("proxmox-ve", []),
    (LINKED, ["--workflows", "inventory,power,create-template,create-host,delete-host,protocol"]),
])
def test_a_token_with_exactly_the_role_passes_every_workflow(pve, tmp_path, mapping, extra):
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(with_role(pve)))
    proc = subprocess.run([sys.executable, str(CONNECTOR), "conformance", mapping, "--settings", str(settings),
                           "--guest", "101", "--template-source", "103", "--time-scale", "0", *extra],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout


# privilege -> the call after connect that needs it (None: connect itself names it)
NEEDED_BY = {"Datastore.AllocateSpace": call("guests/clone", id="103", name="V")}


@pytest.mark.parametrize("privilege", [p for ps in ROLE.values() for p in ps if p != "VM.GuestAgent.Audit"])
def test_a_token_missing_any_privilege_of_the_role_fails_naming_it(pve, privilege):
    settings = with_role(pve, drop=privilege)
    lines = [{"method": "provider/connect", "params": {"settings": settings}}]
    lines += [NEEDED_BY[privilege]] if privilege in NEEDED_BY else []
    replies, err, _ = serve_session("proxmox-ve", lines)
    assert privilege in replies[-1]["error"]["message"], (replies, err)


def test_without_agent_privileges_guests_get_answers_without_addresses(pve):
    settings = with_role(pve, drop="VM.GuestAgent.Audit")
    replies, err, _ = serve_session("proxmox-ve", [{"method": "provider/connect", "params": {"settings": settings}},
                                                   call("guests/get", id="101")])
    assert replies[1]["result"]["ip_addresses"] == [] and replies[1]["result"]["state"] == "powered_on", err
    assert any(r[1].endswith("/agent/network-get-interfaces") for r in pve.pve.requests)  # PVE said 403


# ------------------------------------------------------------- 6. run states, locks

@pytest.mark.parametrize("status,qmp,lock,state", [
    ("running", "io-error", None, "suspended"), ("running", "internal-error", None, "powered_off"),
    ("running", "guest-panicked", None, "powered_off"), ("running", "running", "backup", "powered_on"),
    ("running", "running", "migrate", "powered_on"), ("stopped", "stopped", "clone", "powered_off"),
    ("running", "running", "snapshot", "powered_on"), ("stopped", "stopped", "backup", "powered_off"),
])
def test_qemu_run_states_and_locks_give_the_right_state(pve, status, qmp, lock, state):
    pve.pve.add_vm(150, "odd", status=status, qmpstatus=qmp, lock=lock, config={"scsi0": "local-lvm:vm-150-disk-0"})
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), call("guests/get", id="150")])
    assert replies[1]["result"]["state"] == state, err


@pytest.mark.parametrize("lock,why", [("backup", "a backup job is running"),
                                      ("migrate", "it is being migrated to another node"),
                                      ("clone", "it is being made by a clone"), ("snapshot", "a snapshot is being taken")])
def test_power_operations_on_a_locked_vm_name_the_lock(pve, lock, why):
    pve.pve.snapshot_lock(101, lock)
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), control("101", "stop"), control("101", "restart")])
    for reply in replies[1:]:
        assert f"lock `{lock}`: {why}" in reply["error"]["message"], err
    assert pve.pve.vm(101).status == "running"


@pytest.mark.parametrize("qmp,sent", [("io-error", ["resume"]), ("guest-panicked", ["stop", "start"])])
def test_start_resumes_after_an_io_error_and_restarts_a_crashed_guest(pve, qmp, sent):
    pve.pve.vm(101).qmpstatus = qmp
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), control("101", "start"), call("guests/get", id="101")])
    assert replies[2]["result"]["state"] == "powered_on", err
    actions = [r[1].rsplit("/", 1)[1] for r in pve.pve.requests if r[0] == "POST" and "/status/" in r[1]]
    assert actions == sent


# ------------------------------------------------------------------ 7. clone names

def test_clone_names_become_valid_dns_names(pve):
    clone = call("guests/clone", id="900", name="RAS Host_01 (Büro)")
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), clone])
    assert pve.pve.vm(int(replies[1]["result"]["clone_id"])).name == "RAS-Host-01-Buro", err


# -------------------------------------------------------------- 9. offline storage

def test_delete_refuses_while_a_disk_storage_is_offline_and_destroys_nothing(pve):
    pve.pve.add_ceph_storage()
    pve.pve.add_vm(160, "two-disks", status="stopped",
                   config={"scsi0": "local-lvm:vm-160-disk-0,size=8G", "scsi1": "ceph-pool:vm-160-disk-1,size=8G",
                           "ide2": "none,media=cdrom"})
    pve.pve.ceph_down()
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), control("160", "delete")])
    assert "storage ceph-pool is not online" in replies[1]["error"]["message"], err
    assert pve.pve.vm(160).config["scsi0"].startswith("local-lvm:")
    pve.pve.ceph_recover()
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), control("160", "delete")])
    assert replies[1] == {"result": {}} and pve.pve.vm(160) is None, err


# ------------------------------------------------------- 10. linked: fresh template

class ResourcesLag(FullListPve):
    """/cluster/resources as pvestatd serves it for ~10 s after a convert: not yet a template
    (FullListPve's RRD lags so too; this also leaves `template` out, as for an unseen VM)."""

    async def _resources(self, request):
        response = await super()._resources(request)
        body = json.loads(response.text)
        for item in body["data"]:
            item.pop("template", None)
        return web.json_response(body)


def test_linked_variant_reads_template_from_the_vm_not_from_lagging_resources():
    served = served_with(ResourcesLag)
    try:
        exists = call("guests/snapshots/exists", id="103", name="RAS Template Snapshot")
        replies, err, _ = serve_session(LINKED, [connect(served), call("guests/convert", id="103", is_template=True),
                                                 exists])
    finally:
        served.stop()
    assert replies[2] == {"result": True}, (replies, err)


# ------------------------------------------------------------------- 12. failover

def test_a_node_that_cannot_be_reached_is_skipped():
    served = served_with(nodes=2)
    dead, first, second = next_host(), served.hosts[1], served.hosts[0]
    try:
        replies, err, _ = serve_session("proxmox-ve", [connect(served, host=f"{dead}, {first}, {second}"),
                                                       call("guests/list")])
        assert "result" in replies[1], err
        served.down(first)   # the node RAS was talking to reboots
        replies, err, _ = serve_session("proxmox-ve", [connect(served, host=f"{first},{second}"), call("guests/list"),
                                                       control("103", "start"), call("guests/get", id="103")])
    finally:
        served.stop()
    assert replies[3]["result"]["state"] == "powered_on", (replies, err)
    assert "trying https://" in err


# ------------------------------------------------------------------ 13. VM ids

class RivalTakesTheId(FullListPve):
    """Real PVE writes a clone's temporary config inside the worker (qemu-server API2/Qemu.pm
    clone_vm `$clonefn`), not before it answers as fakepve does: another clone given the same id
    can write it first, and this worker then fails at its own check without logging "creating a
    clone ... with ID N". The first `rivals` clones meet such a rival."""

    rivals = 1

    async def _qm_clone(self, v, user):
        if self.rivals <= 0:
            return await super()._qm_clone(v, user)
        self.rivals -= 1
        newid = int(v["newid"])
        self.add_vm(newid, "rival", node=v["node"], status="stopped", lock="clone", config={})

        async def body():
            raise TaskError(f"unable to create VM {newid}: config file already exists")
        return await self.task(v["node"], "qmclone", v["vmid"], user, body, lock=False)


def test_a_clone_whose_worker_finds_its_id_taken_is_run_again_with_another():
    served = served_with(RivalTakesTheId)
    try:
        replies, err, _ = serve_session("proxmox-ve", [connect(served), call("guests/clone", id="900", name="VDI-R")])
    finally:
        served.stop()
    clone_id = replies[1]["result"]["clone_id"]
    assert served.pve.vm(int(clone_id)).name == "VDI-R", err
    assert [vm.name for vm in served.pve.vms].count("rival") == 1 and served.pve.vm(100).name == "rival"
    assert clone_id != "100"


def test_ids_just_deleted_or_handed_out_are_not_handed_out_again():
    served = served_with(NextidReservesNothing)   # nextid: the same id to the first callers
    served.pve.stale = 2
    served.pve.add_vm(100, "old-host", status="stopped", config={"scsi0": "local-lvm:vm-100-disk-0,size=1G"})
    try:
        replies, err, _ = serve_session("proxmox-ve", [
            connect(served), control("100", "delete"),          # the lowest free id is 100 again
            call("guests/clone", id="900", name="A"), call("guests/clone", id="900", name="B")])
    finally:
        served.stop()
    ids = [reply["result"]["clone_id"] for reply in replies[2:]]
    assert "100" not in ids and len(set(ids)) == 2, (replies, err)


# -------------------------------------------------------------- 14. placement

def placement_cluster(storage: str):
    served = ServedPve(fake=ClusterPve)
    cluster(served.pve)
    for node in ("pve3", "pve4"):
        served.pve.add_node(node)
    served.pve.set_node_offline("pve4")
    served.pve.node_free = {"pve1": 1, "pve2": 3, "pve3": 5, "pve4": 7}
    served.pve.add_ceph_storage()
    served.pve.add_vm(910, "Gold-shared", node="pve2", status="stopped",
                      config={"scsi0": f"{storage}:vm-910-disk-0,size=8G", "ide2": "none,media=cdrom",
                              "tags": "ras-template"})
    return served


def clones(served, node, count=4, template="910"):
    lines = [connect(served, node=node)] + [call("guests/clone", id=template, name=f"VDI-{n}") for n in range(count)]
    replies, err, _ = serve_session("proxmox-ve", lines)
    return replies[1:], err


def test_clones_of_a_shared_template_spread_over_online_nodes_by_free_memory():
    served = placement_cluster("ceph-pool")
    try:
        replies, err = clones(served, "auto")
        listed, _ = clones(served, "pve1, pve2", count=3)
    finally:
        served.stop()
    nodes = [served.pve.vm(int(r["result"]["clone_id"])).node for r in replies]
    assert nodes == ["pve3", "pve2", "pve1", "pve3"], err    # most free first, then round; pve4 is offline
    assert [served.pve.vm(int(r["result"]["clone_id"])).node for r in listed] == ["pve2", "pve1", "pve2"]


def test_a_template_on_node_local_storage_stays_on_its_node_or_is_refused_in_the_users_terms():
    served = placement_cluster("local-lvm")
    try:
        auto, err = clones(served, "auto", count=2)
        refused, _ = clones(served, "pve1, pve3", count=1)
        one, _ = clones(served, "pve3", count=1)
    finally:
        served.stop()
    assert [served.pve.vm(int(r["result"]["clone_id"])).node for r in auto] == ["pve2", "pve2"], err
    for reply in refused + one:
        message = reply["error"]["message"]
        assert "local to node pve2" in message and "one template per node" in message, message


# ------------------------------------------------------- 15. what clones inherit

@pytest.mark.parametrize("mapping", ["proxmox-ve", LINKED])
def test_a_clone_does_not_keep_its_templates_protection_onboot_or_template_tag(pve, mapping):
    pve.pve.add_vm(920, "Gold-protected", node="pve1", status="stopped", template=mapping == LINKED,
                   config={"scsi0": "local-lvm:base-920-disk-0,size=8G" if mapping == LINKED
                           else "local-lvm:vm-920-disk-0,size=8G",
                           "protection": 1, "onboot": 1, "tags": "gold;ras-template"})
    replies, err, _ = serve_session(mapping, [connect(pve), call("guests/clone", id="920", name="VDI-P")])
    result = replies[1]["result"]
    replies, err, _ = serve_session(mapping, [connect(pve), call("tasks/get", id=result["task_id"]),
                                              call("guests/get", id=result["clone_id"]),
                                              control(result["clone_id"], "delete")])
    assert replies[1]["result"]["state"] == "completed", err
    assert replies[2]["result"]["is_template"] is False
    assert replies[3] == {"result": {}}, err            # PVE refuses to delete a protected VM
    assert pve.pve.vm(920).config["protection"] == 1    # the template keeps its own


# ------------------------------------------------------------ 16. HA relocation

class HaRelocates(FullListPve):
    """The HA manager starts the VM on another node than the one asked (relocate policy, a node in
    maintenance mode): the request's node no longer has the VM."""

    async def _ha_request(self, vm, user, state):
        upid = await super()._ha_request(vm, user, state)
        if state == "started":
            vm.node = "pve2"
        return upid


def test_an_ha_start_that_lands_on_another_node_is_followed_there():
    served = served_with(HaRelocates)
    served.pve.vm(103).ha_state = "stopped"
    try:
        replies, err, _ = serve_session("proxmox-ve", [connect(served), control("103", "start"),
                                                       call("guests/get", id="103")])
    finally:
        served.stop()
    assert replies[1] == {"result": {}}, err
    assert replies[2]["result"]["state"] == "powered_on"
    assert served.pve.vm(103).node == "pve2"


# ------------------------------------------------------------ 17. smaller states

def test_a_vm_frozen_at_start_shows_suspended_and_start_resumes_it(pve):
    pve.pve.add_vm(151, "frozen", status="running", qmpstatus="prelaunch",
                   config={"scsi0": "local-lvm:vm-151-disk-0", "freeze": 1})
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), call("guests/get", id="151"), control("151", "start"),
                                                   call("guests/get", id="151")])
    assert [replies[1]["result"]["state"], replies[3]["result"]["state"]] == ["suspended", "powered_on"], err
    assert [r[1].rsplit("/", 1)[1] for r in pve.pve.requests if r[0] == "POST"] == ["resume"]


@pytest.mark.parametrize("vmid,qmp,name,text", [
    ("103", None, "restart", "Guest 103 is powered off, so there is nothing to restart; start it instead"),
    ("103", None, "reset", "Guest 103 is powered off, so there is nothing to reset; start it instead"),
    ("101", "paused", "restart", "Guest 101 is paused (QEMU state `paused`) and a paused guest cannot reboot"),
])
def test_restart_and_reset_of_a_guest_that_cannot_take_them_say_why(pve, vmid, qmp, name, text):
    if qmp:
        pve.pve.vm(int(vmid)).qmpstatus = qmp
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), control(vmid, name)])
    assert replies[1]["error"]["message"].startswith(text), err
    assert not [r for r in pve.pve.requests if r[0] == "POST"]


def test_a_clone_still_being_made_is_not_listed(pve):
    pve.pve.add_vm(152, "Copy", status="stopped", lock="clone", config={})
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), call("guests/list")])
    assert "152" not in replies[1]["result"]["guests"] and "101" in replies[1]["result"]["guests"], err


# -------------------------------------------------------- 18. snapshot limits

def add_storage(pve, name, kind):
    pve.storages[name] = {"type": kind, "active": 1, "content": "images,rootdir", "files": set(),
                          **({"vgname": "vg0"} if kind == "lvm" else {"pool": "rpool/data"})}


@pytest.mark.parametrize("volume,text", [
    ("local-zfs:vm-170-disk-0,size=8G", "has disks on ZFS storage (local-zfs)"),
    ("local:170/vm-170-disk-0.raw,size=8G", "cannot take snapshots"),
])
def test_create_template_on_storage_versions_cannot_use_is_refused_at_the_first_snapshot(volume, text):
    served = ServedPve(fake=ClusterPve)
    cluster(served.pve)
    add_storage(served.pve, "local-zfs", "zfspool")
    served.pve.storages["local"]["content"] = "iso,vztmpl,backup,images"
    served.pve.add_vm(170, "Gold-zfs", status="stopped", config={"scsi0": volume})
    try:
        replies, err, _ = serve_session("proxmox-ve", [connect(served), call("guests/snapshots/create", id="170",
                                                                             name="RAS_TEMPLATE_VERSION_1")])
    finally:
        served.stop()
    assert text in replies[1]["error"]["message"] and "linked.yaml" in replies[1]["error"]["message"], err
    assert not served.pve.vm(170).snapshots


def test_revert_to_an_older_version_on_lvm_chains_says_why_before_asking():
    served = ServedPve(fake=ClusterPve)
    cluster(served.pve)
    add_storage(served.pve, "lvm-chain", "lvm")
    served.pve.add_vm(171, "Gold-lvm", status="stopped", config={"scsi0": "lvm-chain:vm-171-disk-0.qcow2,size=8G"})
    vm = served.pve.vm(171)
    vm.snapshots = {"RAS_TEMPLATE_VERSION_1": dict(vm.config), "RAS_TEMPLATE_VERSION_2": dict(vm.config, parent="RAS_TEMPLATE_VERSION_1")}
    vm.config["parent"] = "RAS_TEMPLATE_VERSION_2"
    try:
        replies, err, _ = serve_session("proxmox-ve", [
            connect(served), call("guests/snapshots/revert", id="171", name="RAS_TEMPLATE_VERSION_1"),
            call("guests/snapshots/revert", id="171", name="RAS_TEMPLATE_VERSION_2")])
    finally:
        served.stop()
    assert "rolls back only to the newest snapshot" in replies[1]["error"]["message"], err
    assert "result" in replies[2], replies[2]


def test_an_iso_on_local_storage_pins_a_shared_template_to_its_node():
    served = placement_cluster("ceph-pool")
    served.pve.vm(910).config["ide2"] = "local:iso/win11.iso,media=cdrom"
    try:
        auto, err = clones(served, "auto", count=2)
    finally:
        served.stop()
    assert [served.pve.vm(int(r["result"]["clone_id"])).node for r in auto] == ["pve2", "pve2"], err


# ---------------------------------------------------- 19. pool-scoped role (README setup)

def test_a_token_with_the_role_on_a_pool_only_passes_every_workflow_and_sees_only_the_pool(pve, tmp_path):
    """The README's default setup: the role on /pool/ras (plus /storage, /sdn/zones), not on /vms."""
    for vmid in (101, 103):
        pve.pve._pool_join("ras", vmid)
    pve.pve.apitokens[f"{USER}!{TOKEN}"] = SECRET
    pve.pve.grant(USER, "/pool/ras", *ROLE["/vms"])
    pve.pve.grant(USER, "/storage", *ROLE["/storage"])
    pve.pve.grant(USER, "/sdn/zones", *ROLE["/sdn/zones"])
    settings = pve.settings(username=USER, token_name=TOKEN, token_secret=SECRET, pool="ras")
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    proc = subprocess.run([sys.executable, str(CONNECTOR), "conformance", "proxmox-ve", "--settings", str(path),
                           "--guest", "101", "--template-source", "103", "--time-scale", "0"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    replies, err, _ = serve_session("proxmox-ve", [{"method": "provider/connect", "params": {"settings": settings}},
                                                   call("guests/list")])
    assert "102" not in replies[1]["result"]["guests"] and "101" in replies[1]["result"]["guests"], err


# ------------------------------------------- 20. state from the cluster list (pvestatd's RRD)

def status_reads(served) -> list[str]:
    """The per-VM and per-node status requests fakepve answered (QMP on a real node)."""
    return [path for method, path, *_ in served.pve.requests
            if method == "GET" and (path.endswith("/status/current") or path.endswith("/qemu"))]


@pytest.mark.parametrize("status,qmp,lock,template,tags,state,is_template", [
    ("running", "paused", None, False, None, "suspended", False),
    ("running", "io-error", None, False, None, "suspended", False),
    ("running", "prelaunch", None, False, None, "suspended", False),
    ("running", "guest-panicked", None, False, None, "powered_off", False),
    ("running", "shutdown", None, False, None, "powering_off", False),
    ("running", "running", "backup", False, None, "powered_on", False),
    ("running", "running", "suspending", False, None, "suspending", False),
    ("stopped", "stopped", "suspended", False, None, "suspended", False),
    ("stopped", "stopped", None, True, None, "powered_off", True),
    ("stopped", "stopped", None, False, "prod;ras-template", "powered_off", True),
])
def test_the_sweep_reads_exact_states_from_the_cluster_list_without_asking_qemu(
        pve, status, qmp, lock, template, tags, state, is_template):
    config = {"scsi0": "local-lvm:vm-150-disk-0", **({"tags": tags} if tags else {})}
    pve.pve.add_vm(150, "odd", status=status, qmpstatus=qmp, lock=lock, template=template, config=config)
    pve.pve.pvestatd()
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), call("guests/get", id="150")])
    assert (replies[1]["result"]["state"], replies[1]["result"]["is_template"]) == (state, is_template), err
    assert status_reads(pve) == []


def test_a_vm_pvestatd_has_not_seen_is_read_from_its_own_status(pve):
    pve.pve.add_vm(150, "new", status="running", qmpstatus="io-error", config={"scsi0": "local-lvm:vm-150-disk-0"})
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), call("guests/get", id="150")])
    assert replies[1]["result"]["state"] == "suspended", err
    assert status_reads(pve) == ["/api2/json/nodes/pve1/qemu/150/status/current"]


def test_a_change_made_outside_ras_shows_at_pvestatds_next_cycle(pve):
    """PVE's lag, as documented: the list shows QEMU's state as of pvestatd's last cycle."""
    pve.pve.vm(101).qmpstatus = "paused"
    get = call("guests/get", id="101")
    before, err, _ = serve_session("proxmox-ve", [connect(pve), get])
    pve.pve.pvestatd()
    after, err2, _ = serve_session("proxmox-ve", [connect(pve), get])
    assert [before[1]["result"]["state"], after[1]["result"]["state"]] == ["powered_on", "suspended"], err + err2


@pytest.mark.parametrize("vmid,name,state", [("101", "stop", "powered_off"), ("101", "suspend", "suspended"),
                                             ("103", "start", "powered_on")])
def test_a_vm_ras_just_controlled_never_reads_as_before_the_write(pve, vmid, name, state):
    rrd = dict(pve.pve.rrd[int(vmid)])
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), control(vmid, name), call("guests/get", id=vmid)])
    assert pve.pve.rrd[int(vmid)] == rrd   # no pvestatd cycle: the cluster list still shows the old state
    assert replies[2]["result"]["state"] == state, err


def test_a_vm_ras_just_made_a_native_template_reads_as_one(pve):
    assert pve.pve.rrd[103]["template"] == 0
    replies, err, _ = serve_session(LINKED, [connect(pve), call("guests/convert", id="103", is_template=True),
                                             call("guests/get", id="103")])
    assert replies[2]["result"]["is_template"] is True, err
    assert pve.pve.rrd[103]["template"] == 0


def test_after_the_write_window_the_cluster_list_is_read_again(pve):
    from cpfmap import Provider

    class Shifted:
        """The real clock, moved on by the test: the notes are kept on the engine's clock."""
        offset = 0.0

        def now(self) -> float:
            return time.monotonic() + self.offset

        def sleep(self, seconds: float) -> None:
            time.sleep(seconds)
    clock = Shifted()
    provider = Provider("proxmox-ve", clock=clock)
    assert "result" in provider.call("provider/connect", {"settings": pve.settings()})
    assert "result" in provider.call("guests/control", {"id": "101", "control": "stop"})
    states = []
    for step in (59, 2):   # the window is 60 s from the write (and from the end of its wait)
        clock.offset += step
        pve.pve.requests.clear()
        states.append((provider.call("guests/get", {"id": "101"})["result"]["state"], len(status_reads(pve))))
    # after the window: pvestatd's stale view (no cycle ran here), read without asking QEMU
    assert states == [("powered_off", 1), ("powered_on", 0)]
