"""Re-record the ec2 pack's recordings from moto's EC2 server (run from the repo root):

    python tools/record_ec2.py

Starts moto's EC2 server on loopback with SigV4 signatures enforced (tests/ec2cloud.py), boots
the instances the workflows use, and drives one fresh `connector.py record` process per RAS workflow with the conformance
runner; the cloud carries its state from one workflow to the next. It writes, per workflow:
    mappings/ec2/recordings/default/<workflow>.yaml   the HTTP cassette (scrubbed)
    mappings/ec2/recordings/default/<workflow>.jsonl  the CPF session RAS sent, each
                                                                 request with its live reply
The loopback address is replaced by https://ec2.example.test in both; secrets in the
session file are placeholders (tools/shipped_session.py; replay ignores credentials).
"""
from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import shipped_session  # noqa: E402
from ec2cloud import ServedEc2  # noqa: E402

from cpfmap.conformance import runner  # noqa: E402
from cpfmap.conformance.ras import Options  # noqa: E402

OUT = ROOT / "mappings" / "ec2" / "recordings" / "default"
SHOWN_URL = "https://ec2.example.test"
SHOWN_SECRETS = {"access_key": "<your access key id>", "secret_key": "<your secret access key>"}


def plan(cloud: ServedEc2) -> list:
    guest, gold = cloud.run("vdi-01")[0], cloud.run("gold")[0]
    return [("inventory", ["inventory"], {}),
            ("power", ["power"], {"guest": guest}),
            ("create-template", ["create-template"], {"template_source": gold}),
            ("create-host", ["create-host"], {"template": gold, "clone_name": "VDI-007"}),
            ("maintenance", ["maintenance"], {"template": gold}),
            ("delete-host", ["delete-host"], {"host": lambda: _instance_named(cloud, "VDI-007")})]


def _instance_named(cloud: ServedEc2, name: str) -> str:
    text = cloud.ec2("DescribeInstances", **{"Filter.1.Name": "tag:Name", "Filter.1.Value.1": name})
    return re.search(r"<instanceId>(i-[0-9a-f]+)</instanceId>", text).group(1)


def record(cloud: ServedEc2, mapping: str, folder: Path, steps: list) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, workflows, extra in steps:
        cassette = folder / f"{name}.yaml"
        session = Path(tempfile.gettempdir()) / f"cpfmap-ec2-{name}.jsonl"  # what record wrote
        argv = [sys.executable, str(ROOT / "connector.py"), "record", mapping, "--cassette", str(cassette),
                "--session", str(session), "--log-level", "WARNING"]
        extra = {k: v() if callable(v) else v for k, v in extra.items()}
        options = Options(settings=cloud.settings(), time_scale=0.05, **extra)
        checks = runner.run(argv, options, ["connect"] + workflows, keep=True)  # the next workflow builds on it
        failed = [c for c in checks if not c.ok]
        if failed:
            raise SystemExit(f"{name}: workflow failed: {failed[0].name}: {failed[0].detail}")
        for written in (cassette, session):
            text = written.read_text(encoding="utf-8").replace(cloud.url, SHOWN_URL)
            written.write_text(text.replace(f"127.0.0.1:{cloud.port}", SHOWN_URL.split("//")[1]), encoding="utf-8",
                               newline="\n")
        shipped_session.write(session, folder / f"{name}.jsonl", _shown)
        print(f"recorded {cassette.relative_to(ROOT)}")


def _shown(settings: dict) -> dict:
    return {**settings, **{k: v for k, v in SHOWN_SECRETS.items() if k in settings}}


if __name__ == "__main__":
    served = ServedEc2()
    try:
        record(served, "ec2", OUT, plan(served))
    finally:
        served.stop()
