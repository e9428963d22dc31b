"""Benchmarks (not tests: timings on shared machines vary). Run from the repo root:

    python tools/bench.py [--quick]

- load: reading, validating and compiling each shipped mapping;
- replay: CPF calls per second through the engine against a recording (no network), i.e.
  the engine's own cost per call;
- poll cycle: what one RAS guest poll (list + get of every guest) costs in HTTP requests,
  showing the bulk request and cache at work;
- live: calls per second against fakepve on a loopback address over TLS (needs the test
  dependencies);
- sweep: RAS's poll of a large farm (guests/list, then guests/get of every guest), sweeps 15 s
  apart on the wall clock, on fakepve with 1,000 and 5,000 VMs on four nodes, half of them
  running with a guest agent, with 0 and 20 ms per answer (fakepve's slow_network); per sweep:
  wall time, HTTP requests, ms per get, wrong states, guests with MACs, peak RSS; for cpfmap's
  Proxmox pack and (at 0 ms) a plain hand-written provider doing the obvious requests per
  get. fakepve runs in its own process, each provider in its own;
- cold start: spawn to the initialize reply, against a bare `import requests, jinja2,
  jmespath, yaml`;
- lxd-sweep: the same sweep with the lxd pack on a real LXD daemon (tests/lxdd.py; needs root
  and the lxd and busybox-static packages), containers of a busybox image (tools/sweep_lxd.py).

    python tools/bench.py sweep [--guests 1000 5000] [--latency 0 0.02] [--sweeps 4] [--gap 15]
                                [--state resources full-list]   # state source, see tools/sweep.py
    python tools/bench.py cold
    python tools/bench.py lxd-sweep [--guests 200] [--sweeps 4]
    python tools/bench.py openstack --guests 200   # the openstack pack on the Nova harness
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from cpfmap.clock import RealClock, VirtualClock  # noqa: E402
from cpfmap.http.transport import LiveTransport  # noqa: E402
from cpfmap.http.wrappers import TracingTransport  # noqa: E402
from cpfmap.language import loader  # noqa: E402
from cpfmap.protocol.rpc import Server, engine_handlers  # noqa: E402
from cpfmap.recording import cassette  # noqa: E402
from cpfmap.recording.cassette import ReplayTransport  # noqa: E402
from cpfmap.redact import Redactor  # noqa: E402
from cpfmap.runtime.engine import Engine  # noqa: E402

RECORDING = ROOT / "mappings/proxmox-ve/recordings/default/inventory"
MAPPINGS = ["proxmox-ve", "mappings/proxmox-ve/linked.yaml", "examples/tutorial/mapping.yaml"]


def timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append(time.perf_counter() - started)
    return out


def row(name: str, samples: list[float], unit: str = "ms", per: int = 1) -> str:
    med = statistics.median(samples) / per
    if unit == "ms":
        return f"{name:48} median {med * 1000:8.2f} ms   (min {min(samples) / per * 1000:.2f}, n={len(samples)})"
    return f"{name:48} {per / statistics.median(samples):10.0f} calls/s"


def bench_load(repeat: int) -> None:
    for target in MAPPINGS:
        print(row(f"load {target}", timed(lambda: loader.load(target), repeat)))


def replay_server(lines: list[str]):
    mapping = loader.load("proxmox-ve")
    replay = TracingTransport(ReplayTransport(cassette.load(RECORDING.with_suffix(".yaml"))), VirtualClock().now)
    server = Server(engine_handlers(Engine(mapping, replay, VirtualClock(), Redactor())), Redactor())
    for line in lines[:2]:
        server.handle_text(line)  # initialize, connect
    return server, replay


def bench_replay(repeat: int) -> None:
    lines = RECORDING.with_suffix(".jsonl").read_text().splitlines()
    calls = lines[2:]

    samples = []
    for _ in range(repeat):
        server, _ = replay_server(lines)   # a fresh cassette: its answers are used up in order
        started = time.perf_counter()
        for line in calls:
            assert "result" in server.handle_text(line)
        samples.append(time.perf_counter() - started)
    print(row(f"replay: CPF calls (list, get x {len(calls) - 1})", samples, "calls", len(calls)))
    server, replay = replay_server(lines)
    before = len(replay.exchanges)
    for line in calls:
        server.handle_text(line)
    guests = len(calls) - 1
    print(f"{'poll cycle: HTTP requests for list + get x ' + str(guests):48} {len(replay.exchanges) - before:10d} "
          f"(cluster list fetched once, cached 2 s)")


def bench_live(repeat: int) -> None:
    try:
        from pve import ServedPve, cluster
    except ImportError as exc:
        print(f"live: skipped ({exc}); pip install -e '.[test]'")
        return
    served = ServedPve()
    cluster(served.pve)
    try:
        mapping = loader.load("proxmox-ve")
        server = Server(engine_handlers(Engine(mapping, LiveTransport(), RealClock(), Redactor())), Redactor())
        server.handle_text(json.dumps({"method": "provider/connect", "params": {"settings": served.settings()}}))
        get = json.dumps({"method": "guests/get", "params": {"id": "101"}})
        listing = json.dumps({"method": "guests/list"})
        print(row("live fakepve: guests/get (4 HTTP requests)", timed(lambda: server.handle_text(get), repeat * 10)))
        print(row("live fakepve: guests/list", timed(lambda: server.handle_text(listing), repeat * 10)))
    finally:
        served.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="all", choices=("all", "sweep", "cold", "sweep-child", "lxd-sweep", "openstack"))
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--guests", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--sweeps", type=int, default=4)
    parser.add_argument("--latency", type=float, nargs="+", default=[0.0, 0.02],
                        help="seconds fakepve holds each answer (slow_network); one run per value")
    parser.add_argument("--gap", type=float, default=15.0, help="wall-clock seconds between sweeps (RAS's polling rate)")
    parser.add_argument("--state", nargs="+", default=["resources"], choices=("resources", "full-list"),
                        help="where the sweep reads state: /cluster/resources (the pack) or the nodes' full=1 lists")
    parser.add_argument("--baseline-max", type=int, default=1000, help="largest farm the baseline sweeps")
    parser.add_argument("child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeat = 3 if args.quick else 20
    if args.what == "sweep-child":
        return sweep_child(*args.child)
    if args.what == "lxd-sweep":
        import sweep_lxd
        return sweep_lxd.bench(args.guests, args.sweeps)
    if args.what in ("all", "cold"):
        bench_cold(5 if args.quick else 15)
    if args.what in ("all", "sweep"):
        import sweep
        sweep.bench(args.guests, args.sweeps, args.baseline_max, tuple(args.latency), args.gap, tuple(args.state))
    if args.what == "openstack":   # not in "all": it needs the Python Nova is installed in
        import sweep
        for size in args.guests:
            sweep.openstack(size, args.sweeps, args.gap)
    if args.what == "all":
        bench_load(repeat)
        bench_replay(repeat)
        bench_live(repeat)


def bench_cold(repeat: int) -> None:
    """Spawn to the initialize reply of `serve proxmox-ve`, against a bare import of the four
    runtime libraries: run in turn, the median of the pairs' ratios (the machine's speed drifts).
    cpfmap's bytecode is compiled first, as pip does when it installs a wheel (otherwise, under
    PYTHONDONTWRITEBYTECODE, every start would compile the engine from source), and one warm-up
    run of each fills the mapping cache (loadcache.py) like any earlier start would."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "cpfmap")], capture_output=True,
                   check=True)

    def spawn(argv: list[str], data: bytes = b"") -> float:
        started = time.perf_counter()
        subprocess.run(argv, input=data, capture_output=True, check=True, cwd=ROOT)
        return time.perf_counter() - started
    bare = [sys.executable, "-c", "import requests, jinja2, jmespath, yaml"]
    serve = [sys.executable, str(ROOT / "connector.py"), "serve", "proxmox-ve"]
    initialize = b'{"method": "provider/initialize"}\n'
    spawn(bare), spawn(serve, initialize)
    pairs = [(spawn(serve, initialize), spawn(bare)) for _ in range(repeat)]
    ratio = statistics.median(a / b for a, b in pairs)
    print(f"{'cold start: serve proxmox-ve to initialize reply':48} {statistics.median(a for a, _ in pairs) * 1000:8.0f} ms"
          f"   (bare imports {statistics.median(b for _, b in pairs) * 1000:.0f} ms; median ratio {ratio:.2f})")


def sweep_child(provider: str, guests: str, sweeps: str, url: str, ca: str, token: str, gap: str = "15") -> None:
    import sweep
    sweep.child(provider, int(guests), int(sweeps), url, ca, json.loads(token), float(gap))


if __name__ == "__main__":
    main()
