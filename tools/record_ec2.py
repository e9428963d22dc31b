"""`python tools/record_ec2.py` (from the repo root) re-records mappings/ec2/recordings/default/:
moto's EC2 server with SigV4 checking enforced (tests/ec2cloud.py), one `record` process per
RAS workflow (shipped_session.record_workflows), loopback address shown as ec2.example.test.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import shipped_session  # noqa: E402
from ec2cloud import ServedEc2  # noqa: E402

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


if __name__ == "__main__":
    served = ServedEc2()
    try:
        loopback = {served.url: SHOWN_URL, f"127.0.0.1:{served.port}": SHOWN_URL.split("//")[1]}
        shipped_session.record_workflows("ec2", served.settings(), OUT, plan(served), loopback, SHOWN_SECRETS)
    finally:
        served.stop()
