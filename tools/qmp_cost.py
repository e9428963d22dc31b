"""What `GET /nodes/{node}/qemu?full=1` costs QEMU, measured on real QEMU processes (a tool,
not a test: timings on shared machines vary; Linux only, QMP on unix sockets as on PVE).

    python tools/qmp_cost.py [--vms 8] [--rounds 20] [--shape vm|none] [--node-vms 1250]

With `full=1`, qemu-server's `vmstatus` (src/PVE/QemuServer.pm) queues `query-status` for every
running VM; its callback queues five more on the same VM's socket: `query-proxmox-support`,
`query-blockstats`, `query-machines`, `query-version`, `query-balloon`. PVE::QMPClient
(src/PVE/QMPClient.pm `queue_execute`) opens one connection per VM, sends `qmp_capabilities`
first, and runs the queues of all VMs at once (IO::Multiplex, one command in flight per
connection, one process): per running VM one connect and seven round trips, every call.
`GET .../qemu/{vmid}/status/current` is `vmstatus($vmid, 1)`: the same seven for that one VM.

This starts `--vms` QEMU processes (qemu-system-x86_64, e.g. Debian's qemu-system-x86; a
measurement tool, no dependency of cpfmap), each with QMP on a unix socket in a temporary
directory, and runs that command set `--rounds` times: one VM at a time (the cost of one VM)
and all VMs at once (as QMPClient does). Reported: wall time per VM, QEMU CPU time per VM
(/proc/PID/stat, less what the QEMUs use while idle; clock ticks of 10 ms, so use enough
rounds), and the extrapolation to `--node-vms` running VMs on a node, per full=1 call
and per RAS sweep at the pack's 5 s freshness and RAS's 15 s poll interval.

Shapes: `vm` (default) is a small PC (64 MiB, a virtio-blk disk on the null-co driver, a
virtio balloon; KVM if /dev/kvm is usable, else TCG), held before its first instruction (-S):
a guest without an OS would spin in its firmware and its CPU would drown QMP's; QMP runs in
QEMU's main loop either way. `none` is `-machine none` (no devices: the floor of QMP's own cost). Debian's QEMU has no
`query-proxmox-support` (a Proxmox patch): it answers CommandNotFound, a round trip through
the same dispatcher; unlike QMPClient, which abandons a VM's queue at the first error, this
tool sends every command regardless. Every wait has a deadline; every QEMU started here is
killed on the way out.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS = ("qmp_capabilities", "query-status", "query-proxmox-support", "query-blockstats",
            "query-machines", "query-version", "query-balloon")
DEADLINE = 10.0          # seconds for one VM's connection and commands (QMPClient: 3 s idle)
START_DEADLINE = 20.0    # seconds for a QEMU to open its QMP socket
INTERVAL = 15.0          # RAS's guests_polling_rate in the proxmox-ve pack
FRESH = 5.0              # the pack's freshness of the node's full=1 list
PVESTATD = 10.0          # pvestatd's update interval (pve-manager PVE/Service/pvestatd.pm `$updatetime`)


def qemu_argv(qemu: str, sock: Path, shape: str, kvm: bool) -> list[str]:
    argv = [qemu, "-nodefaults", "-display", "none", "-qmp", f"unix:{sock},server=on,wait=off"]
    if shape == "none":
        return argv + ["-machine", "none"]
    argv += ["-machine", f"pc,accel={'kvm' if kvm else 'tcg'}", "-m", "64",
             "-drive", "if=none,id=drive-virtio0,driver=null-co,size=1G,read-zeroes=on",
             "-device", "virtio-blk-pci,drive=drive-virtio0", "-device", "virtio-balloon-pci,id=balloon0"]
    return argv + ["-S"]


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


class Farm:
    """QEMU processes with QMP sockets; a context manager that kills them all on exit."""

    def __init__(self, qemu: str, count: int, shape: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="qmp-cost-"))
        self.kvm = shape == "vm" and kvm_usable()
        self.sockets = [self.dir / f"{100 + n}.qmp" for n in range(count)]
        self.procs: list[subprocess.Popen] = []
        try:
            for sock in self.sockets:
                self.procs.append(subprocess.Popen(qemu_argv(qemu, sock, shape, self.kvm),
                                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.PIPE))
            self._wait_sockets()
        except BaseException:
            self.close()
            raise

    def _wait_sockets(self) -> None:
        deadline = time.monotonic() + START_DEADLINE
        while not all(s.exists() for s in self.sockets):
            dead = [p for p in self.procs if p.poll() is not None]
            if dead:
                raise SystemExit(f"QEMU exited: {dead[0].stderr.read().decode(errors='replace')[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"QEMU did not open its QMP socket within {START_DEADLINE:.0f} s")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """utime + stime of every QEMU, in seconds (/proc/PID/stat fields 14 and 15)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for proc in self.procs:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        return total / ticks

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                print(f"QEMU {proc.pid} did not exit after kill", file=sys.stderr)
            if proc.stderr:
                proc.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Farm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def one_vm(sock: Path) -> int:
    """vmstatus(full=1)'s QMP for one running VM: connect, greeting, the seven commands in turn
    on one connection; the bytes QEMU answered."""
    reader, writer = await asyncio.open_unix_connection(str(sock), limit=1 << 22)
    try:
        got = len(await reader.readline())   # the greeting
        for number, command in enumerate(COMMANDS):
            writer.write(json.dumps({"execute": command, "arguments": {}, "id": f"{os.getpid()}:{number}"}).encode())
            await writer.drain()
            line = await reader.readline()
            while line and b'"event"' in line[:20]:   # asynchronous events are not answers
                line = await reader.readline()
            if not line:
                raise ConnectionError(f"{sock.name}: QEMU closed the connection at {command}")
            got += len(line)
        return got
    finally:
        writer.close()
        await writer.wait_closed()


async def bounded(sock: Path) -> int:
    return await asyncio.wait_for(one_vm(sock), DEADLINE)


async def sequential(sockets: list[Path]) -> None:
    for sock in sockets:
        await bounded(sock)


async def concurrent(sockets: list[Path]) -> None:
    await asyncio.gather(*(bounded(sock) for sock in sockets))


def idle_rate(farm: Farm, seconds: float = 2.0) -> float:
    """QEMU CPU seconds per second while nobody asks anything (subtracted from the rounds)."""
    before = farm.cpu_seconds()
    time.sleep(seconds)
    return (farm.cpu_seconds() - before) / seconds


def measure(farm: Farm, rounds: int, runner, idle: float) -> tuple[float, float, float]:
    """Median wall seconds of one round over all VMs, QEMU CPU seconds per round (the idle
    rate taken out), and this client's CPU seconds per round."""
    walls = []
    client = time.process_time()
    cpu_before, started_all = farm.cpu_seconds(), time.perf_counter()
    for _ in range(rounds):
        started = time.perf_counter()
        asyncio.run(runner(farm.sockets))
        walls.append(time.perf_counter() - started)
    busy = farm.cpu_seconds() - cpu_before - idle * (time.perf_counter() - started_all)
    return statistics.median(walls), max(busy, 0.0) / rounds, (time.process_time() - client) / rounds


def calls_per_sweep(sweep_seconds: float, fresh: float = FRESH) -> int:
    """full=1 calls one node's list takes in one sweep of `sweep_seconds`: the first get of the
    node's VMs fetches it, and it is fetched again each time it is older than `fresh` while
    the sweep still asks."""
    return 1 + int(sweep_seconds // fresh)


def report(vms: int, shape: str, kvm: bool, seq: tuple, conc: tuple, node_vms: int, sweeps: list[float]) -> None:
    seq_wall, seq_cpu, _ = seq
    conc_wall, conc_cpu, client_cpu = conc
    per_vm_wall, per_vm_cpu = seq_wall / vms, seq_cpu / vms
    conc_per_vm = conc_wall / vms
    print(f"QEMU shape {shape} ({'KVM' if kvm else 'TCG -S' if shape == 'vm' else 'no machine'}), {vms} VMs, "
          f"{len(COMMANDS)} QMP round trips per VM ({', '.join(COMMANDS)})")
    print(f"  one VM at a time : {per_vm_wall * 1000:7.2f} ms wall per VM, {per_vm_cpu * 1000:6.2f} ms QEMU CPU per VM")
    print(f"  all VMs at once  : {conc_wall * 1000:7.2f} ms wall for {vms} VMs ({conc_per_vm * 1000:.2f} ms per VM), "
          f"{conc_cpu / vms * 1000:6.2f} ms QEMU CPU per VM, {client_cpu / vms * 1000:.2f} ms client CPU per VM")
    commands = len(COMMANDS) * node_vms
    print(f"\nExtrapolated to {node_vms} running VMs on one node, per full=1 call (or pvestatd cycle):")
    print(f"  {node_vms} connections, {commands} QMP commands, ~{per_vm_cpu * node_vms:.2f} s QEMU CPU in total, "
          f"~{conc_per_vm * node_vms:.1f} s wall (one process multiplexing, as QMPClient does; "
          "this client's own cost, not Perl's)")
    print(f"  pvestatd alone: one such round every {PVESTATD:.0f} s = {commands / PVESTATD:.0f} QMP commands/s")
    print(f"\nRAS sweep every {INTERVAL:.0f} s, node list fresh for {FRESH:.0f} s (full=1 calls per node per sweep):")
    for seconds in sweeps:
        calls = calls_per_sweep(seconds)
        print(f"  sweep of {seconds:5.1f} s: {calls} call(s) per node per sweep = {calls * commands / INTERVAL:6.0f} "
              f"QMP commands/s, {calls * per_vm_cpu * node_vms / INTERVAL * 100:5.1f}% of a core in QEMU "
              f"(+{calls / INTERVAL * PVESTATD * 100:.0f}% of pvestatd's QMP)")
    print("  state from /cluster/resources (pvestatd's RRD): 0 QMP commands; status/current of a VM RAS wrote "
          f"within the window: {len(COMMANDS)} commands for that VM")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=8, help="QEMU processes to start")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--shape", choices=("vm", "none"), default="vm")
    parser.add_argument("--node-vms", type=int, default=1250, help="running VMs per node to extrapolate to")
    parser.add_argument("--sweep-seconds", type=float, nargs="+", default=[1.0, 5.0, 10.0],
                        help="how long a RAS sweep takes (tools/bench.py sweep measures it)")
    parser.add_argument("--qemu", default=shutil.which("qemu-system-x86_64"))
    args = parser.parse_args()
    if not args.qemu:
        raise SystemExit("qemu-system-x86_64 not found (Debian: apt-get install qemu-system-x86), or give --qemu")
    with Farm(args.qemu, args.vms, args.shape) as farm:
        asyncio.run(concurrent(farm.sockets))   # warm-up: first connections, page faults
        idle = idle_rate(farm)
        seq = measure(farm, args.rounds, sequential, idle)
        conc = measure(farm, args.rounds, concurrent, idle)
        report(args.vms, args.shape, farm.kvm, seq, conc, args.node_vms, args.sweep_seconds)


if __name__ == "__main__":
    main()
