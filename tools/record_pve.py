"""Re-record the Proxmox VE pack's recordings from fakepve (run from the repo root):

    python tools/record_pve.py

For each variant and each RAS workflow it supports, a fresh `connector.py record` process is
driven by the conformance runner against the standard fakepve cluster (tests/pve.py), which
carries its state from one workflow to the next. It writes, per workflow:
    mappings/proxmox-ve/recordings/<variant>/<workflow>.yaml   the HTTP cassette (scrubbed)
    mappings/proxmox-ve/recordings/<variant>/<workflow>.jsonl  the CPF session RAS sent, each
                                                                    request with its live reply
Settings in the session file are placeholders (tools/shipped_session.py); replay ignores credentials.
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import shipped_session  # noqa: E402
from pve import ServedPve, cluster  # noqa: E402

from cpfmap.conformance import runner  # noqa: E402
from cpfmap.conformance.ras import Options  # noqa: E402

OUT = ROOT / "mappings" / "proxmox-ve" / "recordings"
SHOWN_SETTINGS = {"host": "pve1.example.test", "port": "8006", "username": "root@pam", "token_name": "ras",
                  "token_secret": "<your token secret>", "verify_tls": "true",
                  "ca_file": "C:\\ProgramData\\cpfmap\\pve-root-ca.pem"}
# variant -> [(workflow recording, workflows run, options)]
PLAN = {
    "default": ("proxmox-ve", [
        ("inventory", ["inventory"], {}),
        ("power", ["power"], {"guest": "101"}),
        ("create-template", ["create-template"], {"template_source": "103"}),
        ("create-host", ["create-host"], {"template": "103", "clone_name": "VDI-007"}),
        ("maintenance", ["maintenance"], {"template": "103"}),
        ("delete-host", ["delete-host"], {"host": "100"}),
    ]),
    "linked": ("mappings/proxmox-ve/linked.yaml", [
        ("inventory", ["inventory"], {}),
        ("power", ["power"], {"guest": "102"}),
        ("create-template", ["create-template"], {"template_source": "103"}),
        ("create-host", ["create-host"], {"template": "103", "clone_name": "VDI-008"}),
        ("delete-host", ["delete-host"], {"host": "100"}),
    ]),
}


def record(variant: str, mapping: str, plan: list) -> None:
    served = ServedPve()
    cluster(served.pve)
    folder = OUT / variant
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for name, workflows, extra in plan:
            cassette = folder / f"{name}.yaml"
            session = Path(tempfile.gettempdir()) / f"cpfmap-pve-{variant}-{name}.jsonl"  # what record wrote
            argv = [sys.executable, str(ROOT / "connector.py"), "record", mapping, "--cassette", str(cassette),
                    "--session", str(session), "--log-level", "WARNING"]
            served.pve.pvestatd()   # a pvestatd cycle between workflows (every 10 s on a real node)
            options = Options(settings=served.settings(), time_scale=0, **extra)
            # keep: the next workflow builds on what this one changed (the template, the clone)
            checks = runner.run(argv, options, ["connect"] + workflows, keep=True)
            failed = [c for c in checks if not c.ok]
            if failed:
                raise SystemExit(f"{variant}/{name}: workflow failed: {failed[0].name}: {failed[0].detail}")
            shipped_session.write(session, folder / f"{name}.jsonl", lambda settings: SHOWN_SETTINGS)
            print(f"recorded {cassette.relative_to(ROOT)}")
    finally:
        served.stop()


if __name__ == "__main__":
    for variant, (mapping, plan) in PLAN.items():
        record(variant, mapping, plan)
