"""The sweep benchmark of tools/bench.py: RAS polling a large farm on fakepve.

    python tools/bench.py sweep [--guests 1000 5000] [--sweeps 4] [--baseline-max 1000]
                                [--state resources full-list]

fakepve (tests/pve.py: the full=1 VM list and the lagging /cluster/resources real PVE has,
with a pvestatd cycle every 10 s) runs in its own process with the farm: four nodes, half the
VMs running with a guest agent. Each provider runs in its own process (so peak RSS is its
own), sweeping like RAS: guests/list, then guests/get of every guest, sweeps 15 s apart on
the wall clock. Per sweep: wall time to the last reply, HTTP requests (prefetches included,
counted until they settle), of them the nodes' full=1 VM lists and per-VM status/current
reads (the requests that cost QMP on a real node, tools/qmp_cost.py), ms per get, peak RSS.
`--state`: `resources` is the pack (state from /cluster/resources), `full-list` the pack with
its earlier guests/get (state from each node's full=1 list, tools/pve_full_list.yaml).
fakepve answers either without QEMU: what the QMP costs a real node is not in these times.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

NODES = ("pve1", "pve2", "pve3", "pve4")
INTERVAL = 15.0   # RAS's guests_polling_rate in the Proxmox pack
PVESTATD = 10.0   # pvestatd's cycle (pve-manager PVE/Service/pvestatd.pm `$updatetime`)
# --state -> (label, mapping)
STATES = {"resources": ("cpfmap proxmox-ve", "proxmox-ve"),
          "full-list": ("cpfmap full=1 node lists", str(ROOT / "tools" / "pve_full_list.yaml"))}


def bench(sizes: list[int], sweeps: int, baseline_max: int, latencies: tuple = (0.0,), gap: float = INTERVAL,
          states: tuple = ("resources",)) -> None:
    print(f"{'sweep (fakepve)':24} {'ms lat':>6} {'guests':>6} {'sweep':>5} {'wall s':>8} {'requests':>8} "
          f"{'req/guest':>9} {'cl/res':>6} {'lists':>5} {'st/cur':>6} {'ms/get':>7} {'wrong':>5} {'MACs':>5} {'peak RSS MiB':>12}",
          flush=True)
    for latency in latencies:
        for size in sizes:
            farm = subprocess.Popen([sys.executable, __file__, "farm", str(size), str(latency)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
            try:
                where = json.loads(farm.stdout.readline())
                runs = [(STATES[state][0], state, sweeps) for state in states]
                if size <= baseline_max and not latency:
                    runs.append(("hand-written baseline", "baseline", 1))
                for label, provider, count in runs:
                    _run(label, provider, size, count, where, latency, gap)
            finally:
                farm.stdin.close()
                farm.wait(60)


def _run(label: str, provider: str, size: int, sweeps: int, where: dict, latency: float, gap: float) -> None:
    argv = [sys.executable, str(ROOT / "tools" / "bench.py"), "sweep-child", provider, str(size), str(sweeps),
            where["url"], where["ca"], json.dumps(where["token"]), str(gap)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, check=False)
    if proc.returncode:
        print(f"{label}: failed\n{proc.stderr[-3000:]}")
        return
    for line in proc.stdout.splitlines():
        row = json.loads(line)
        print(f"{label:24} {latency * 1000:6.0f} {size:6d} {row['sweep']:5d} {row['wall']:8.2f} {row['requests']:8d} "
              f"{row['requests'] / size:9.3f} {row['cluster']:6d} {row['lists']:5d} {row['status']:6d} {row['wall'] * 1000 / size:7.2f} "
              f"{row['wrong']:5d} {row['macs']:5d} {row['rss'] or 0:12.1f}", flush=True)


# ------------------------------------------------------------------ the farm

def farm(size: int, latency: float = 0.0) -> None:
    from pve import AGENT_IFACES, TOKEN_NAME, TOKEN_SECRET, TOKEN_USER, ServedPve, disk
    served = ServedPve(time_scale=1.0 if latency else 0.0)   # fakepve's latency is in PVE seconds
    if latency:
        served.pve.slow_network(latency)
    for node in NODES:
        served.pve.add_node(node)
    for number in range(size):
        vmid = 1000 + number
        running = number % 2 == 0
        config = {"net0": f"virtio=BC:24:11:{number >> 16 & 255:02X}:{number >> 8 & 255:02X}:{number & 255:02X},"
                          "bridge=vmbr0", "scsi0": disk(vmid), "agent": "1" if running else "0"}
        vm = served.pve.add_vm(vmid, f"VDI-{vmid}", node=NODES[number % len(NODES)],
                               status="running" if running else "stopped", config=config)
        if running:
            vm.agent = {"interfaces": AGENT_IFACES}
    served.call(_first_cycle(served.pve))
    ticking = threading.Event()
    threading.Thread(target=_pvestatd, args=(served, ticking), daemon=True, name="pvestatd").start()
    settings = served.settings()
    token = {"username": TOKEN_USER, "token_name": TOKEN_NAME, "token_secret": TOKEN_SECRET}
    print(json.dumps({"url": f"https://{settings['host']}:{settings['port']}", "ca": settings["ca_file"],
                      "token": token}), flush=True)
    sys.stdin.read()
    ticking.set()
    served.stop()


async def _first_cycle(pve) -> None:
    pve.pvestatd()


def _pvestatd(served, stop: threading.Event) -> None:
    """pvestatd's cycle on fakepve's own loop, every 10 s until `stop`."""
    while not stop.wait(PVESTATD):
        served.loop.call_soon_threadsafe(served.pve.pvestatd)


# --------------------------------------------------------------- providers

def kind(path: str) -> str | None:
    """The requests that cost QMP on a real node (a node's VM list, a VM's status/current),
    and the cluster's resource list (pmxcfs and the RRD: no QMP)."""
    path = path.split("?", 1)[0]
    return ("lists" if path.endswith("/qemu") else "status" if path.endswith("/status/current")
            else "cluster" if path.endswith("/cluster/resources") else None)


class Counting:
    def __init__(self, inner) -> None:
        self.inner = inner
        self.count = 0
        self.kinds = {"lists": 0, "status": 0, "cluster": 0}
        self.lock = threading.Lock()

    def send(self, request):
        which = kind(request.url)
        with self.lock:
            self.count += 1
            if which:
                self.kinds[which] += 1
        return self.inner.send(request)

    def close(self) -> None:
        self.inner.close()


def child(provider: str, size: int, sweeps: int, url: str, ca: str, token: dict, gap: float = INTERVAL) -> None:
    """One provider's sweeps, `gap` seconds apart on the wall clock. It imports nothing of the
    fake (tests/pve.py pulls in aiohttp): its peak RSS is the provider's own."""
    settings = {"host": url.split("//")[1].split(":")[0], "port": url.rsplit(":", 1)[1], "ca_file": ca, **token}
    run = BaselineSweeper(url, ca, token) if provider == "baseline" else CpfmapSweeper(settings, STATES[provider][1])
    for row in sweep_rounds(run, size, sweeps, gap, _expected_state):
        print(json.dumps({**row, "rss": _peak_rss()}), flush=True)


def sweep_rounds(run, size: int, sweeps: int, gap: float = INTERVAL, expected=None):
    """One dict per RAS sweep: sweep number, wall seconds, HTTP requests (the refreshes it
    started included), and with `expected` (guest -> state) the guests whose state was wrong,
    and the guests with MACs. Sweeps are `gap` seconds apart on the wall clock: RAS's next poll,
    while refreshes run; after the last one the sweeper settles (bounded), so they count."""
    for number in range(1, sweeps + 1):
        before, kinds_before = run.requests(), dict(run.kinds())
        started = time.perf_counter()
        ids = run.list()
        wrong = macs = 0
        for guest in ids:
            got = run.get(guest)
            wrong += expected is not None and got["state"] != expected(guest)
            macs += bool(got["mac_addresses"])
        wall = time.perf_counter() - started
        assert len(ids) == size, (len(ids), size)
        if number < sweeps:
            time.sleep(gap)
        else:
            run.settle()
        kinds = {name: count - kinds_before[name] for name, count in run.kinds().items()}
        yield {"sweep": number, "wall": wall, "requests": run.requests() - before, **kinds, "wrong": wrong, "macs": macs}


def _expected_state(guest: str) -> str:
    """The farm's VM n (id 1000 + n) runs when n is even."""
    return "powered_on" if (int(guest) - 1000) % 2 == 0 else "powered_off"


class CpfmapSweeper:
    def __init__(self, settings: dict, mapping: str = "proxmox-ve") -> None:
        from cpfmap.clock import RealClock
        from cpfmap.http.transport import LiveTransport, RetryPolicy
        from cpfmap.language import loader
        from cpfmap.redact import Redactor
        from cpfmap.runtime.provider import assemble
        self.clock = RealClock()
        compiled = loader.load(mapping)
        self.transport = Counting(LiveTransport(RetryPolicy.of(compiled.connection), self.clock))
        self.engine, self.server = assemble(compiled, self.transport, self.clock, Redactor(), live=True)
        self.prefetch = self.engine.prefetch
        self._call("provider/connect", {"settings": settings})

    def _call(self, method: str, params: dict | None = None):
        reply = self.server.handle_text(json.dumps({"method": method, "params": params or {}}))
        if "result" not in reply:
            raise SystemExit(f"{method}: {reply}")
        return reply["result"]

    def requests(self) -> int:
        return self.transport.count

    def kinds(self) -> dict:
        with self.transport.lock:
            return dict(self.transport.kinds)

    def list(self) -> list[str]:
        return self._call("guests/list")["guests"]

    def get(self, guest: str) -> dict:
        return self._call("guests/get", {"id": guest})

    def settle(self) -> None:
        """Wait (bounded) for the refreshes this sweep started, so they count in it."""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if not self.prefetch.busy():
                return
            time.sleep(0.05)


class BaselineSweeper:
    """What one would write by hand: for each get, find the VM's node in the cluster list,
    then its status, its config and (running, with an agent) its agent's addresses."""

    STATES = {"paused": "suspended", "suspended": "suspended", "prelaunch": "powering_on"}

    def __init__(self, url: str, ca: str, token: dict) -> None:
        import requests
        self.base = url + "/api2/json"
        self.session = requests.Session()
        self.session.verify = ca
        self.session.trust_env = False   # REQUESTS_CA_BUNDLE would override verify
        self.session.headers["Authorization"] = f"PVEAPIToken={token['username']}!{token['token_name']}={token['token_secret']}"
        self.sent = 0
        self.counted = {"lists": 0, "status": 0, "cluster": 0}

    def _get(self, path: str, **query) -> object:
        self.sent += 1
        if kind(path):
            self.counted[kind(path)] += 1
        reply = self.session.get(self.base + path, params=query, timeout=(10, 60))
        return reply.json()["data"] if reply.status_code == 200 else None

    def requests(self) -> int:
        return self.sent

    def kinds(self) -> dict:
        return dict(self.counted)

    def list(self) -> list[str]:
        return [str(r["vmid"]) for r in self._get("/cluster/resources", type="vm") if r["type"] == "qemu"]

    def get(self, guest: str) -> dict:
        vm = next(r for r in self._get("/cluster/resources", type="vm")
                  if r["type"] == "qemu" and str(r["vmid"]) == guest)
        where = f"/nodes/{vm['node']}/qemu/{guest}"
        status = self._get(where + "/status/current")
        config = self._get(where + "/config")
        macs = [m.lower() for k, v in config.items() if re.match(r"net\d+$", k)
                for m in re.findall(r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}", v)]
        ips = []
        if status["status"] == "running" and status.get("agent"):
            answer = self._get(where + "/agent/network-get-interfaces") or {}
            ips = [a["ip-address"] for i in answer.get("result", []) for a in i.get("ip-addresses", [])]
        state = "powered_off" if status["status"] != "running" else self.STATES.get(status.get("qmpstatus"), "powered_on")
        return {"id": guest, "name": status.get("name"), "state": state, "mac_addresses": macs, "ip_addresses": ips,
                "is_template": bool(status.get("template"))}

    def settle(self) -> None:
        pass


# ------------------------------------------------------------ openstack

def openstack(size: int, sweeps: int, gap: float = INTERVAL) -> None:
    """The openstack pack's sweeps on the Nova harness (tests/novacloud.py: Nova's own API,
    scheduler, conductor and fake-driver compute) with `size` servers, `gap` seconds apart.
    Run with the Python Nova is installed in (its api-paste.ini is found through sysconfig)."""
    from novacloud import ServedNova
    cloud = ServedNova()
    try:
        # Small guests: the harness's one fake host (64 GiB) holds 128 of the fixtures' m1.tiny.
        cloud.nova("POST", "/flavors", {"flavor": {"name": "ras.bench", "id": "ras.bench", "ram": 64, "vcpus": 1,
                                                   "disk": 1}})
        started = time.perf_counter()
        ids = [cloud.boot(f"vdi-{n:04d}", flavor="ras.bench", wait=None) for n in range(size)]
        for sid in ids:
            cloud.wait(sid, "ACTIVE", timeout=600)
        print(f"openstack: {size} servers booted on the Nova harness in {time.perf_counter() - started:.0f} s",
              flush=True)
        run = CpfmapSweeper(cloud.settings(page_size="1000"), mapping="openstack")
        print(f"{'sweep (Nova harness)':24} {'guests':>6} {'sweep':>5} {'wall s':>8} {'requests':>8} "
              f"{'req/guest':>9} {'ms/get':>7} {'wrong':>5}", flush=True)
        for row in sweep_rounds(run, size, sweeps, gap, lambda guest: "powered_on"):
            wall, requests = row["wall"], row["requests"]
            print(f"{'cpfmap openstack':24} {size:6d} {row['sweep']:5d} {wall:8.2f} {requests:8d} "
                  f"{requests / size:9.3f} {wall * 1000 / size:7.2f} {row['wrong']:5d}", flush=True)
    finally:
        cloud.stop()


def _peak_rss() -> float | None:
    """Peak resident memory of this process in MiB (where the platform tells)."""
    try:
        import resource
    except ImportError:   # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


if __name__ == "__main__" and sys.argv[1:2] == ["farm"]:
    farm(int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.0)
