"""The LXD sweep benchmark of tools/bench.py: RAS polling containers on a real LXD daemon.

    python tools/bench.py lxd-sweep [--guests 200] [--sweeps 4]

Starts an LXD daemon of its own (tests/lxdd.py; root, the lxd and busybox-static packages),
makes the containers (a quarter of them running, with an address on their NIC), and sweeps like
RAS with the lxd pack in this process: guests/list, then guests/get of every guest, sweeps 15 s
apart on an injected clock (no real waiting). Per sweep: wall time to the last reply, HTTP
requests, ms per get; also the time of one bulk request (recursion=2) and its size. Peak RSS is
left out: the daemon's harness shares the process.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from lxdd import LxdDaemon  # noqa: E402
from sweep import CpfmapSweeper, sweep_rounds  # noqa: E402


def bench(sizes: list[int], sweeps: int) -> None:
    sizes = [200] if sizes == [1000, 5000] else sizes   # the fakepve defaults would take minutes to make here
    print(f"{'sweep (LXD 5.0 daemon)':24} {'guests':>6} {'sweep':>5} {'wall s':>8} {'requests':>8} "
          f"{'req/guest':>9} {'ms/get':>7}")
    for size in sizes:
        daemon = LxdDaemon()
        try:
            for number in range(size):
                daemon.create(f"vdi-{number:05d}", start=number % 4 == 0)
            started = time.perf_counter()
            body = daemon.api("GET", "/1.0/instances?recursion=2")
            print(f"{'one recursion=2 request':24} {size:6d} {'':5} {time.perf_counter() - started:8.2f} "
                  f"{'':8} {len(str(body)) // 1024:>6d} KiB (as text)")
            run = CpfmapSweeper(daemon.settings(instance_type="container"), mapping="lxd")
            for row in sweep_rounds(run, size, sweeps):
                wall, requests = row["wall"], row["requests"]
                print(f"{'cpfmap lxd':24} {size:6d} {row['sweep']:5d} {wall:8.2f} {requests:8d} "
                      f"{requests / size:9.3f} {wall * 1000 / size:7.2f}")
        finally:
            daemon.stop()
