"""Re-record the OpenStack pack's recordings from a real Nova (run from the repo root):

    python tools/record_openstack.py

Starts Nova's own services on loopback (tests/novacloud.py), boots the guests the workflows
use, and drives one fresh `connector.py record` process per RAS workflow with the conformance
runner; the cloud carries its state from one workflow to the next. It writes, per workflow:
    cpfmap/packs/openstack/recordings/default/<workflow>.yaml   the HTTP cassette (scrubbed)
    cpfmap/packs/openstack/recordings/default/<workflow>.jsonl  the CPF session RAS sent
The loopback address is replaced by https://openstack.example.test in both; secrets in the
session file are placeholders (replay ignores credentials).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from novacloud import ServedNova  # noqa: E402

from cpfmap.conformance import runner  # noqa: E402
from cpfmap.conformance.ras import Options  # noqa: E402

OUT = ROOT / "cpfmap" / "packs" / "openstack" / "recordings" / "default"
SHOWN_URL = "https://openstack.example.test"
SHOWN_SECRETS = {"password": "<your password>", "application_credential_secret": "<your secret>"}


def plan(cloud: ServedNova) -> list:
    guest, gold = cloud.boot("vdi-01"), cloud.boot("gold")
    return [("inventory", ["inventory"], {}),
            ("power", ["power"], {"guest": guest}),
            ("create-template", ["create-template"], {"template_source": gold}),
            ("create-host", ["create-host"], {"template": gold, "clone_name": "VDI-007"}),
            ("maintenance", ["maintenance"], {"template": gold}),
            ("delete-host", ["delete-host"], {"host": lambda: _server_named(cloud, "VDI-007")})]


def _server_named(cloud: ServedNova, name: str) -> str:
    return next(s["id"] for s in cloud.nova("GET", "/servers")["servers"] if s["name"] == name)


def record(cloud: ServedNova, mapping: str, folder: Path, steps: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, workflows, extra in steps:
        cassette = folder / f"{name}.yaml"
        argv = [sys.executable, str(ROOT / "connector.py"), "record", mapping, "--cassette", str(cassette),
                "--log-level", "WARNING"]
        extra = {k: v() if callable(v) else v for k, v in extra.items()}
        options = Options(settings=cloud.settings(), time_scale=0.05, **extra)
        checks, sent = runner.run(argv, options, ["connect"] + workflows, keep_sent=True)
        failed = [c for c in checks if not c.ok]
        if failed:
            raise SystemExit(f"{name}: workflow failed: {failed[0].name}: {failed[0].detail}")
        cassette.write_text(cassette.read_text(encoding="utf-8").replace(cloud.url, SHOWN_URL), encoding="utf-8",
                            newline="\n")
        # The session stops before the runner's final disconnect, so a replay can go on from it.
        kept = [line for line in sent if json.loads(line).get("method") != "provider/disconnect"]
        (folder / f"{name}.jsonl").write_text("".join(_shown(line, cloud.url) for line in kept), encoding="utf-8",
                                              newline="\n")
        print(f"recorded {cassette.relative_to(ROOT)}")


def _shown(line: bytes, url: str) -> str:
    request = json.loads(line)
    if request.get("method") == "provider/connect":
        settings = request["params"]["settings"]
        settings.update({k: v for k, v in SHOWN_SECRETS.items() if k in settings})
    return json.dumps(request).replace(url, SHOWN_URL) + "\n"


if __name__ == "__main__":
    served = ServedNova()
    try:
        record(served, "openstack", OUT, plan(served))
    finally:
        served.stop()
