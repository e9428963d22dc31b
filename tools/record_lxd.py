"""Re-record the LXD pack's recordings from a real LXD daemon (run from the repo root, as root,
with the `lxd` and `busybox-static` packages installed):

    python tools/record_lxd.py

Starts an LXD daemon of its own (tests/lxdd.py: own LXD_DIR, HTTPS on loopback, no bridge, a
busybox image), makes the containers the workflows use, and drives one fresh `connector.py
record` process per RAS workflow with the conformance runner; the daemon carries its state from
one workflow to the next. It writes, per workflow:
    mappings/lxd/recordings/default/<workflow>.yaml   the HTTP cassette (scrubbed)
    mappings/lxd/recordings/default/<workflow>.jsonl  the CPF session RAS sent, each request
                                                       with its live reply
The loopback address is replaced by lxd1.example.test:8443 in both; the settings in the session
file are placeholders (tools/shipped_session.py; replay ignores credentials).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import shipped_session  # noqa: E402
from lxdd import LxdDaemon  # noqa: E402

from cpfmap.conformance import runner  # noqa: E402
from cpfmap.conformance.ras import Options  # noqa: E402

OUT = ROOT / "mappings" / "lxd" / "recordings" / "default"
SHOWN_ADDRESS = "lxd1.example.test:8443"
SHOWN_SETTINGS = {"host": "lxd1.example.test", "port": "8443",
                  "client_cert": "C:\\ProgramData\\cpfmap\\lxd-ras.crt",
                  "client_key": "C:\\ProgramData\\cpfmap\\lxd-ras.key",
                  "ca_file": "C:\\ProgramData\\cpfmap\\lxd-server.crt", "verify_tls": "true",
                  "instance_type": "container"}
PLAN = [("inventory", ["inventory"], {}),
        ("power", ["power"], {"guest": "vdi-01"}),
        ("create-template", ["create-template"], {"template_source": "gold"}),
        ("create-host", ["create-host"], {"template": "gold", "clone_name": "VDI-007"}),
        ("maintenance", ["maintenance"], {"template": "gold"}),
        ("delete-host", ["delete-host"], {"host": "VDI-007"})]


def record(lxd: LxdDaemon) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    lxd.create("vdi-01", start=True)
    lxd.create("gold")
    address = f"{lxd.host}:{lxd.port}"
    for name, workflows, extra in PLAN:
        cassette = OUT / f"{name}.yaml"
        session = Path(tempfile.gettempdir()) / f"cpfmap-lxd-{name}.jsonl"  # what record wrote
        argv = [sys.executable, str(ROOT / "connector.py"), "record", "lxd", "--cassette", str(cassette),
                "--session", str(session), "--log-level", "WARNING"]
        options = Options(settings=lxd.settings(instance_type="container"), time_scale=0, **extra)
        checks = runner.run(argv, options, ["connect"] + workflows, keep=True)  # the next workflow builds on it
        failed = [c for c in checks if not c.ok]
        if failed:
            raise SystemExit(f"{name}: workflow failed: {failed[0].name}: {failed[0].detail}")
        for written in (cassette, session):
            written.write_text(written.read_text(encoding="utf-8").replace(address, SHOWN_ADDRESS),
                               encoding="utf-8", newline="\n")
        shipped_session.write(session, OUT / f"{name}.jsonl", lambda settings: SHOWN_SETTINGS)
        print(f"recorded {cassette.relative_to(ROOT)}")


if __name__ == "__main__":
    daemon = LxdDaemon()
    try:
        record(daemon)
    finally:
        daemon.stop()
