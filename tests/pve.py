"""A real fakepve (third-party PVE API fake) served over TLS on a loopback address, for tests,
recordings and benchmarks. Each instance gets its own certificate made here."""
from __future__ import annotations

import asyncio
import itertools
import json
import re
import tempfile
import threading
from pathlib import Path

from aiohttp import web
from fakepve import FakePve, settle
from fakepve.certs import make_cert
from fakepve.model import PveError, TaskError
from fakepve.server import USER, ok, params

_hosts = itertools.count(11)
TOKEN_USER = "root@pam"
TOKEN_NAME = "ras"
TOKEN_SECRET = "5f0c6d2e-1b7a-4c1e-9a55-3c2d7e8f9a10"
PASSWORD = "pve-root-pass"


def next_host() -> str:
    n = next(_hosts)
    return f"127.0.{n // 250}.{n % 250 + 2}"


class FullListPve(FakePve):
    """Where fakepve 0.5.0's VM lists differ from real PVE:

    - it leaves qmpstatus out of `GET /nodes/{node}/qemu?full=1`; real PVE lists it for
      running VMs there (qemu-server QemuServer.pm vmstatus with full);
    - its `/cluster/resources` gives each VM's live `status` (running/stopped). Real PVE gives
      what pvestatd last wrote to the VM's RRD entry (pve-manager PVE/Service/pvestatd.pm
      update_qemu_status: `$d->{qmpstatus} || $d->{status}`, every 10 s; PVE/API2Tools.pm
      extract_vm_stats: status, name and template from that entry): QEMU's run state
      (`paused`, `io-error`, ...) or `stopped`, up to one cycle old, and `unknown` for a VM
      pvestatd has not seen yet. `lock` and `tags` come live from the config there
      (PVE/API2/Cluster.pm resources, get_guest_config_properties), `hastate` from HA.

    Here that lag is explicit and deterministic: `pvestatd()` is one cycle (the RRD entries of
    every VM, as now); nothing else updates them, so a test sees what PVE shows between cycles.
    `cluster()` runs one cycle after making its VMs; a VM added later is `unknown` until the
    next."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rrd: dict[int, dict] = {}   # vmid -> status, name, template as of the last cycle

    def pvestatd(self) -> None:
        """One pvestatd cycle: every VM's RRD entry from its state now (offline nodes' VMs
        keep theirs: no pvestatd runs there)."""
        for vm in self.vms:
            if self.nodes.get(vm.node, {}).get("online", True):
                self.rrd[vm.vmid] = {"status": vm.qmpstatus if vm.status == "running" else vm.status,
                                     "name": vm.name, "template": 1 if vm.template else 0}

    async def _resources(self, request):
        response = await super()._resources(request)
        body = json.loads(response.text)
        for item in body["data"]:
            if item.get("type") == "qemu":
                item.pop("name", None), item.pop("template", None)
                online = self.nodes.get(item["node"], {}).get("online", True)
                item.update(self.rrd.get(item["vmid"], {"status": "unknown"}) if online else {"status": "unknown"})
        return web.json_response(body)

    async def _qemu_list(self, request):
        node, user = request.match_info["node"], request[USER]
        full = request.query.get("full") in ("1", "true")
        data = []
        for vm in self.vms:
            if vm.node == node and self.allowed(user, f"/vms/{vm.vmid}", "VM.Audit"):
                item = self._vm_status(vm, listing=True)
                if full and vm.status == "running":
                    item["qmpstatus"] = vm.qmpstatus
                data.append(item)
        return ok(self._complete("/nodes/{node}/qemu", data, node=node))


class ClusterPve(FullListPve):
    """Where fakepve 0.5.0's clone differs from real PVE (qemu-server API2/Qemu.pm clone_vm):
    PVE refuses a clone to another node unless every disk of the source is on shared storage
    ("can't clone VM to node 'X' (VM uses local storage)"); and fakepve writes the new VM's
    config before it answers and logs "creating a clone of VM A with ID N" at once, where PVE's
    worker does both after it answered (`$clonefn`: the line once it holds the new id's config
    lock and found no config there, then the temporary config `lock: clone`). Here the worker
    does both, and fails as PVE's does when the id was taken meanwhile. For tests, `clone_gate`
    (an asyncio.Event) holds every clone worker before it takes its id until it is set, and
    `clone_hold` after it took it (before it copies the disks).
    fakepve's task list ignores `typefilter`, `userfilter`, `source` and `since`; here they
    filter as pve-manager API2/Tasks.pm node_tasks does (source `archive`, the default: ended
    tasks; `active`: running ones, status RUNNING; `all`: both). `node_free` gives nodes their
    own free memory (GiB) in /cluster/resources, where fakepve gives every node the same."""

    node_free: dict = {}
    clone_gate = None
    clone_hold = None
    _clone_upid: dict | None = None   # where the next task's UPID goes (task() below)

    def _upid(self, node, ttype, tid, user):
        made = super()._upid(node, ttype, tid, user)
        if self._clone_upid is not None:
            self._clone_upid["upid"], self._clone_upid = made[0], None
        return made

    async def task(self, node, ttype, tid, user, body, vm=None, lock=True, log=()):
        if ttype != "qmclone" or vm is None or vm not in self.vms:
            return await super().task(node, ttype, tid, user, body, vm=vm, lock=lock, log=log)
        self.vms.remove(vm)   # not yet: the worker writes it
        box: dict = {}
        self._clone_upid = box

        async def worker():
            if self.clone_gate is not None:
                await self.clone_gate.wait()
            if self._qm_taken(vm.vmid):
                raise TaskError(f"unable to create VM {vm.vmid}: config file already exists")
            self.tasks[box["upid"]]["log"].extend(log)
            self.vms.append(vm)
            if self.clone_hold is not None:
                await self.clone_hold.wait()
            return await body()
        scale = self.time_scale
        if (self.clone_gate is not None or self.clone_hold is not None) and not scale:
            self.time_scale = 1e-9   # fakepve runs the worker inline only at time_scale 0
        try:
            return await super().task(node, ttype, tid, user, worker, vm=vm, lock=lock)
        finally:
            self.time_scale = scale

    async def _task_list(self, request):
        node, user = request.match_info["node"], request[USER]
        p = self._verify(request, await params(request))
        audit = self.allowed(user, "/nodes/" + node, "Sys.Audit")
        data = [self._task_view(t, True) for t in self.tasklog
                if t["node"] == node and (audit or self._task_owner(user, t)) and self._listed(t, p)]
        data = [dict(item, status="RUNNING") if "endtime" not in item else item for item in data]
        data.sort(key=lambda t: -t["starttime"])
        start = p.get("start", 0)
        return ok(data[start:start + p.get("limit", 50)])   # PVE: start and limit after the filters

    @staticmethod
    def _listed(task: dict, p: dict) -> bool:
        running, source = "endtime" not in task, p.get("source", "archive")
        return ((source != "archive" or not running) and (source != "active" or running)
                and (p.get("vmid") is None or task["id"] == str(p["vmid"]))
                and (not p.get("typefilter") or task["type"] == p["typefilter"])
                and (not p.get("userfilter") or p["userfilter"].lower() in task["user"].lower())
                and task["starttime"] >= int(p.get("since") or 0))

    async def _qm_clone(self, v, user):
        target = v.get("target")
        if target and target not in (v["node"], "localhost"):
            src = self.find(v["node"], v["vmid"])
            conf = src.snapshots[v["snapname"]] if v.get("snapname") else src.config
            for key, value in conf.items():
                sid = str(value).split(":", 1)[0] if ":" in str(value) else None
                if (re.fullmatch(r"(ide|sata|scsi|virtio|efidisk|tpmstate)\d+", key)   # CD-ROM images too
                        and sid in self.storages and not self.storages[sid].get("shared")):
                    raise PveError(500, f"can't clone VM to node '{target}' (VM uses local storage)")
        return await super()._qm_clone(v, user)

    def _build_app(self):
        """fakepve 0.5.0 has no `GET /nodes/{node}/qemu/{vmid}/feature` (qemu-server API2/Qemu.pm
        vm_feature); this answers it as PVE does for `snapshot` (has_feature over every disk)."""
        app = super()._build_app()

        @web.middleware
        async def feature(request, handler):
            found = re.fullmatch(r"/api2/json/nodes/([^/]+)/qemu/(\d+)/feature", request.path)
            if request.method != "GET" or not found:
                return await handler(request)
            vm = self.find(found[1], found[2])
            if request.query.get("feature") != "snapshot":
                return web.json_response({"message": "test: only feature=snapshot"}, status=501)
            return web.json_response({"data": {"hasFeature": 1 if self._qm_can_snapshot(vm.config) else 0,
                                               "nodes": sorted(self.nodes)}})
        app.middlewares.append(feature)
        return app

    async def _resources(self, request):
        response = await super()._resources(request)
        if not self.node_free:
            return response
        body = json.loads(response.text)
        for item in body["data"]:
            if item.get("type") == "node" and item["node"] in self.node_free and "maxmem" in item:
                item["mem"] = item["maxmem"] - self.node_free[item["node"]] * 1024 ** 3
        return web.json_response(body)


class LossyPve(ClusterPve):
    """FakePve that can also lose answers: `lose(method, path)` says whether the answer to a
    request that has run (its effect made) never reaches the client, `cut(method, path)` whether
    the connection drops before it runs. Counts fakepve's own dropped connections
    (flaky_network), which drop a request before it runs. `heard(method, path)` is told of each
    request that ran (on fakepve's event loop: a test's hooks can set its asyncio events).
    `late(method, path)`: the connection drops before any answer, and the request runs only once
    `late_gate` (an asyncio.Event) is set; requests to the same path wait until it has run."""

    lose = None
    cut = None
    heard = None
    late = None
    late_gate = None

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.dropped: list = []   # (method, path) of requests the flaky network dropped
        self.lost: list = []      # (method, path) of requests whose answer was lost
        self._late: dict = {}     # (method, path) -> asyncio.Event set once the late request ran

    @web.middleware
    async def _middleware(self, request, handler):
        key = (request.method, request.path)
        if key in self._late:
            await self._late[key].wait()
        if self.late is not None and self.late(*key):
            await request.read()   # kept for the handler, which runs after the connection is gone
            self._late[key] = asyncio.Event()
            asyncio.ensure_future(self._run_late(request, handler, self._late[key]))
            request.transport.close()
            raise ConnectionResetError("test: the connection dropped before PVE answered")
        if self.cut is not None and self.cut(request.method, request.path):
            self.dropped.append((request.method, request.path))
            request.transport.close()
            raise ConnectionResetError("test: the connection dropped before the request ran")
        try:
            response = await FakePve._middleware(self, request, handler)
        except ConnectionResetError:
            self.dropped.append((request.method, request.path))
            raise
        if self.heard is not None:
            self.heard(request.method, request.path)
        if self.lose is not None and self.lose(request.method, request.path):
            self.lost.append((request.method, request.path))
            request.transport.close()
            raise ConnectionResetError("test: the answer is lost")
        return response


    async def _run_late(self, request, handler, done: asyncio.Event) -> None:
        try:
            await self.late_gate.wait()
            await FakePve._middleware(self, request, handler)
            self.lost.append((request.method, request.path))
        finally:
            done.set()


class ServedPve:
    """FakePve on a private event loop in a daemon thread; stop() when done."""

    def __init__(self, host: str | None = None, time_scale: float = 0.0, fake: type = LossyPve,
                 nodes: int = 1) -> None:
        """nodes > 1: the same cluster also answers on nodes - 1 more addresses (`self.hosts`),
        as the other nodes of a real cluster do; `down(host)` stops one answering."""
        self.dir = Path(tempfile.mkdtemp(prefix="cpfmap-pve-"))
        self.host = host or next_host()
        self.hosts = [self.host] + [next_host() for _ in range(nodes - 1)]
        self.certfile, self.keyfile, _ = make_cert(str(self.dir), hosts=tuple(self.hosts))
        self.pve = fake(user="root@pam", password=PASSWORD, host=self.host, port=0)
        self.pve.time_scale = time_scale
        self.pve.apitokens[f"{TOKEN_USER}!{TOKEN_NAME}"] = TOKEN_SECRET
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"fakepve-{self.host}")
        self.thread.start()
        self.call(self.pve.start(self.certfile, self.keyfile))
        self.sites = {host: self.call(self._listen(host)) for host in self.hosts[1:]}

    async def _listen(self, host: str):
        import ssl

        from aiohttp import web
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(self.certfile, self.keyfile)
        site = web.TCPSite(self.pve.runner, host, self.pve.port, ssl_context=ctx)
        await site.start()
        return site

    def down(self, host: str) -> None:
        """One of the extra addresses stops answering (its node reboots)."""
        self.call(self.sites.pop(host).stop())

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def settings(self, auth: str = "token", **extra: str) -> dict:
        out = {"host": self.host, "port": str(self.pve.port), "username": TOKEN_USER,
               "verify_tls": "true", "ca_file": self.certfile}
        if auth == "token":
            out.update(token_name=TOKEN_NAME, token_secret=TOKEN_SECRET)
        else:
            out.update(password=PASSWORD)
        out.update(extra)
        return out

    def stop(self) -> None:
        try:
            self.call(settle())
            self.call(self.pve.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


AGENT_IFACES = [
    {"name": "lo", "hardware-address": "00:00:00:00:00:00",
     "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
                      {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128}]},
    {"name": "eth0", "hardware-address": "bc:24:11:aa:00:01",
     "ip-addresses": [{"ip-address": "10.0.10.25", "ip-address-type": "ipv4", "prefix": 24},
                      {"ip-address": "fe80::be24:11ff:feaa:1", "ip-address-type": "ipv6", "prefix": 64}]},
]


def disk(vmid: int, storage: str = "local-lvm", size: str = "32G") -> str:
    return f"{storage}:vm-{vmid}-disk-0,size={size}"


def cluster(pve: FakePve) -> None:
    """The standard scenario: two nodes, running and stopped VMs, agent and no agent, a
    template, a container."""
    pve.add_node("pve2")
    vm = pve.add_vm(101, "Win11-VDI-01", node="pve1", status="running",
                    config={"net0": "virtio=BC:24:11:AA:00:01,bridge=vmbr0", "agent": "1",
                            "scsi0": disk(101), "cores": 2, "memory": 4096})
    vm.agent = {"interfaces": AGENT_IFACES}
    pve.add_vm(102, "Win11-VDI-02", node="pve2", status="running",
               config={"net0": "e1000=BC:24:11:AA:00:02,bridge=vmbr0", "net1": "virtio=BC:24:11:AA:10:02",
                       "scsi0": disk(102)})
    pve.add_vm(103, "Win11-Gold", node="pve1", status="stopped",
               config={"net0": "virtio=BC:24:11:AA:00:03,bridge=vmbr0", "scsi0": disk(103), "agent": "1"})
    pve.add_vm(900, "Win11-Template", node="pve2", status="stopped", template=True,
               config={"net0": "virtio=BC:24:11:AA:09:00,bridge=vmbr0", "scsi0": "local-lvm:base-900-disk-0,size=32G",
                       "template": 1})
    pve.add_ct(200, "dns-ct", node="pve1", status="running")
    if isinstance(pve, FullListPve):
        pve.pvestatd()
