"""explain, call and new-pack."""
from __future__ import annotations

import io
import json

import pytest
from conftest import ROOT
from pve import PASSWORD, TOKEN_SECRET

from cpfmap.authoring import scaffold
from cpfmap.cli.commands import run
from cpfmap.language import loader

INVENTORY = ROOT / "mappings/proxmox-ve/recordings/default/inventory.yaml"


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.BytesIO(), io.StringIO()
    code = run(list(argv), io.BytesIO(), out, err)
    return code, out.getvalue().decode(), err.getvalue()


def settings(tmp_path, **values) -> str:
    path = tmp_path / "settings.yaml"
    path.write_text("\n".join(f"{k}: {v}" for k, v in values.items()))
    return str(path)


def test_explain_renders_requests_masks_secrets_and_says_what_depends(tmp_path):
    path = settings(tmp_path, url="https://hv.test", user="admin", password="pw-very-secret")
    code, out, err = cli("explain", "tests/data/tiny.yaml", "guests/clone", "--param", "id=5",
                         "--param", "name=VDI 1", "--param", "is_link_clone=true", "--settings", path)
    assert code == 0, err
    assert "POST https://hv.test/api/v1/login" in out and '"password": "***"' in out
    assert "POST https://hv.test/api/v1/machines/5/clone" in out
    assert '{"name": "VDI 1", "linked": true}' in out          # types kept: a real boolean
    assert "Authorization: ***" in out and "pw-very-secret" not in out
    assert "then: a task, polled by rule `op`" in out
    code, out, _ = cli("explain", "proxmox-ve", "guests/get", "--param", "id=101")
    assert "GET https://<host>:8006/api2/json/cluster/resources?type=vm" in out
    assert "/nodes/<node, computed in step 1.2 from vm>/qemu/101/status/current" in out


def test_explain_numbers_steps_as_the_mapping_does_one_header_each_and_never_guesses_a_when():
    code, out, _ = cli("explain", "proxmox-ve", "guests/get", "--param", "id=101")
    headers = [line.split(" (")[0].rstrip(":") for line in out.splitlines() if line.startswith("step ")]
    assert headers == ["step 1.1", "step 1.2", "step 2", "step 3", "step 4.1", "step 4.2", "step 5", "step 6"]
    assert "null" not in out and "skipped" not in out
    assert "step 1.1 (fragment resolve_vm: find the VM in the cluster):" in out
    assert "(decided by <vm from step 1.1>)" in out    # step 2's `when` depends on a reply
    assert "sets is_template = <is_template, computed in step 4.2 from native_template, tags>" in out


def test_explain_says_skipped_only_when_it_knows():
    linked = str(ROOT / "mappings/proxmox-ve/linked.yaml")
    _, out, _ = cli("explain", linked, "guests/snapshots/create", "--param", "id=9", "--param",
                    "name=RAS Template Snapshot")
    assert "skipped (`{{ params.name != 'RAS Template Snapshot' }}` is false)" in out
    _, out, _ = cli("explain", linked, "guests/snapshots/create", "--param", "id=9", "--param", "name=V2")
    assert "skipped" not in out and "fails with: snapshot V2" in out


def test_explain_with_replay_shows_every_exchange(tmp_path):
    path = settings(tmp_path, host="pve1.example.test", username="root@pam", token_name="ras", token_secret="x-123456")
    code, out, _ = cli("explain", "proxmox-ve", "guests/get", "--param", "id=101", "--settings", path,
                       "--replay", str(INVENTORY))
    assert code == 0
    assert "-> GET https://pve1.example.test:8006/api2/json/nodes/pve1/qemu/101/config  <- 200" in out


def test_call_against_a_recording(tmp_path):
    path = settings(tmp_path, host="pve1.example.test", username="root@pam", token_name="ras", token_secret="x-123456")
    code, out, _ = cli("call", "proxmox-ve", "guests/get", "--param", "id=102", "--settings", path,
                       "--replay", str(INVENTORY))
    assert code == 0 and json.loads(out)["result"]["name"] == "Win11-VDI-02"
    code, out, _ = cli("call", "proxmox-ve", "guests/get", "--param", "id=4040", "--settings", path,
                       "--replay", str(INVENTORY))
    assert code == 1 and json.loads(out) == {"error": {"code": 1, "message": "Guest 4040 not found"}}


def test_call_live_verbose_shows_exchanges_with_timing_and_no_secret(pve, settings_file):
    code, out, _ = cli("call", "proxmox-ve", "guests/list", "-v", "--settings", str(settings_file()))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("-> GET https://") and lines[0].endswith(" ms)") and "/version  <- 200" in lines[0]
    assert TOKEN_SECRET not in out


def test_call_verbose_masks_the_password_in_the_login_it_shows(pve, settings_file):
    code, out, _ = cli("call", "proxmox-ve", "guests/list", "-v", "--settings", str(settings_file(auth="password")))
    assert code == 0 and "/access/ticket" in out and "sent: " in out and "password=***" in out
    assert PASSWORD not in out


def test_call_provider_connect_with_settings_connects_and_replies(tmp_path):
    path = settings(tmp_path, host="pve1.example.test", username="root@pam", token_name="ras", token_secret="x-123456")
    code, out, err = cli("call", "proxmox-ve", "provider/connect", "--settings", path, "--replay", str(INVENTORY))
    assert code == 0 and json.loads(out) == {"result": {}}, err


def test_call_reports_bad_settings_and_bad_params(tmp_path):
    path = settings(tmp_path, host="h", username="u", port="eighty")
    code, out, _ = cli("call", "proxmox-ve", "guests/list", "--settings", path)
    assert code == 1 and "setting `port` must be an integer" in out
    code, _, err = cli("call", "proxmox-ve", "guests/get", "--param", "oops", "--settings", path)
    assert code == 2 and "write name=value" in err


def test_new_pack_scaffold_validates_clean(tmp_path):
    folder = scaffold.new_pack("my-hv", tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "mapping.yaml", "pack.yaml", "recordings"]
    findings = loader.check(folder / "mapping.yaml")
    assert [f for f in findings if f.severity == "error"] == [], [f.format() for f in findings]
    mapping = loader.load(folder / "mapping.yaml")
    assert set(mapping.methods) >= {"guests/list", "guests/get", "guests/clone", "guests/snapshots/exists"}
    assert mapping.capabilities.template_method == "versioning"
    code, _, err = cli("new-pack", "Bad Name!")
    assert code == 2 and "lower-case" in err


def test_explain_numbers_the_steps_of_a_conditional_fragment(tmp_path):
    import yaml
    case = yaml.safe_load((ROOT / "tests/data/cases/tiny-use-when-and-wait-after-recovery.yaml").read_text())
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(loader.merge(yaml.safe_load((ROOT / "tests/data/tiny.yaml").read_text()),
                                              case["mapping_patch"])))
    _, out, _ = cli("explain", str(path), "guests/control", "--param", "id=9", "--param", "control=stop")
    assert "step 1.1 (fragment machine): skipped (`{{ params.id != '9' }}` is false)" in out and "step 2:" in out
    _, out, _ = cli("explain", str(path), "guests/control", "--param", "id=1", "--param", "control=stop")
    assert "step 1.1 (fragment machine):" in out and "GET <url>/api/v1/machines/1" in out


def test_explain_shows_service_urls_from_the_login_as_placeholders():
    code, out, _ = cli("explain", "openstack", "guests/get", "--param", "id=abc")
    assert code == 0 and "GET <compute service URL, given at login>/servers/detail?limit=200" in out


@pytest.mark.parametrize("method,params,says", [
    ("guests/clone", ["id=103", "name=h"], "if its answer is lost: 10 lookup step(s), then sent again only if `{{ mine is not none or made "
     "is not none }}` is false (a refusal of that repeat is looked up once more)"),
    ("guests/control", ["id=103", "control=start"],
     "if its answer is lost: sent again; a repeat refused with `already running` counts as done"),
])
def test_explain_says_what_happens_when_an_answer_is_lost(method, params, says):
    _, out, _ = cli("explain", "proxmox-ve", method, *[x for p in params for x in ("--param", p)])
    assert says in out
