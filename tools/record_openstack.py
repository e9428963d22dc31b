"""Re-record the OpenStack pack's recordings from a real Nova (run from the repo root):

    python tools/record_openstack.py

Starts Nova's own services on loopback (tests/novacloud.py), boots the guests the workflows
use, and drives one fresh `connector.py record` process per RAS workflow with the conformance
runner; the cloud carries its state from one workflow to the next. It writes, per workflow:
    mappings/openstack/recordings/default/<workflow>.yaml   the HTTP cassette (scrubbed)
    mappings/openstack/recordings/default/<workflow>.jsonl  the CPF session RAS sent, each
                                                                 request with its live reply
The loopback address is replaced by https://openstack.example.test in both; secrets in the
session file are placeholders (tools/shipped_session.py; replay ignores credentials).
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import shipped_session  # noqa: E402
from novacloud import ServedNova  # noqa: E402

OUT = ROOT / "mappings" / "openstack" / "recordings" / "default"
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


if __name__ == "__main__":
    served = ServedNova()
    try:
        shipped_session.record_workflows("openstack", served.settings(), OUT, plan(served),
                                         {served.url: SHOWN_URL}, SHOWN_SECRETS)
    finally:
        served.stop()
