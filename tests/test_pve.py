"""The Proxmox VE pack against fakepve, through `connector.py` as RAS runs it."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import CONNECTOR, serve_session
from pve import PASSWORD, TOKEN_SECRET

INIT = {"method": "provider/initialize"}


def connect(pve, **kw):
    return {"method": "provider/connect", "params": {"settings": pve.settings(**kw)}}


def conformance(settings, mapping="proxmox-ve", *extra):
    proc = subprocess.run([sys.executable, str(CONNECTOR), "conformance", mapping, "--settings", str(settings),
                           "--time-scale", "0", *extra], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.parametrize("auth", ["token", "password"])
def test_every_ras_workflow_passes_on_the_default_variant(settings_file, auth):
    code, out = conformance(settings_file(auth=auth), "proxmox-ve", "--guest", "101", "--template-source", "103")
    assert code == 0, out
    for workflow in ("connect", "inventory", "power", "create-template", "create-host", "maintenance",
                     "delete-host", "protocol"):
        assert f"PASS  {workflow}" in out


def test_linked_variant_serves_linked_clones_but_not_maintenance(settings_file):
    code, out = conformance(settings_file(), "mappings/proxmox-ve/linked.yaml", "--guest", "102",
                            "--template-source", "103",
                            "--workflows", "inventory,power,create-template,create-host,delete-host,protocol")
    assert code == 0, out
    assert "LEFT  guest 103 made a template" in out   # PVE has no way back; the run says so
    code, out = conformance(settings_file(), "mappings/proxmox-ve/linked.yaml", "--template", "900",
                            "--workflows", "maintenance")
    assert code == 1 and "PVE cannot turn a template back into a VM" in out


def test_list_and_get_give_exact_values(pve):
    gets = [{"method": "guests/get", "params": {"id": i}} for i in ("101", "102", "103", "900", "200")]
    replies, err, code = serve_session("proxmox-ve", [INIT, connect(pve), {"method": "guests/list"}, *gets])
    assert code == 0, err
    assert replies[2] == {"result": {"guests": ["101", "102", "103", "900"]}}  # no container
    assert replies[3]["result"] == {"id": "101", "name": "Win11-VDI-01", "state": "powered_on",
                                    "mac_addresses": ["bc:24:11:aa:00:01"], "ip_addresses": ["10.0.10.25"],
                                    "is_template": False}
    assert replies[4]["result"]["mac_addresses"] == ["bc:24:11:aa:00:02", "bc:24:11:aa:10:02"]
    assert replies[4]["result"]["ip_addresses"] == []        # no guest agent: empty, not an error
    assert replies[5]["result"]["state"] == "powered_off"
    assert replies[6]["result"]["is_template"] is True        # a native PVE template is a template too
    assert replies[7] == {"error": {"code": 1, "message": "Guest 200 not found"}}


def test_linked_variant_sees_native_templates(pve):
    get = {"method": "guests/get", "params": {"id": "900"}}
    replies, err, _ = serve_session("mappings/proxmox-ve/linked.yaml", [connect(pve), get])
    assert replies[1]["result"]["is_template"] is True, err


@pytest.mark.parametrize("qmp,lock,status,state", [
    ("paused", None, "running", "suspended"), ("prelaunch", None, "running", "suspended"),
    ("stopped", "suspended", "stopped", "suspended"), ("running", "suspending", "running", "suspending"),
])
def test_state_comes_from_status_qmpstatus_and_lock(pve, qmp, lock, status, state):
    pve.pve.add_vm(150, "odd", status=status, qmpstatus=qmp, lock=lock, config={"scsi0": "local-lvm:vm-150-disk-0"})
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), {"method": "guests/get", "params": {"id": "150"}}])
    assert replies[1]["result"]["state"] == state, err


def test_wrong_token_and_wrong_password_fail_connect(pve):
    bad_token = connect(pve, token_secret="00000000-0000-0000-0000-000000000000")
    bad_pass = connect(pve, auth="password", password="wrong-password")
    replies, err, _ = serve_session("proxmox-ve", [bad_token, bad_pass])
    for reply in replies:
        assert reply["error"]["code"] == 1
        assert reply["error"]["message"].startswith("Authentication failed")
        assert "authentication failure" in reply["error"]["message"]
    assert "wrong-password" not in err and "00000000-0000" not in err


def test_expired_ticket_is_renewed_transparently(pve):
    session = [connect(pve, auth="password"), {"method": "guests/list"}]
    proc = subprocess.Popen([sys.executable, str(CONNECTOR), "serve", "proxmox-ve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in session:
        proc.stdin.write((json.dumps(line) + "\n").encode())
        proc.stdin.flush()
        assert "result" in json.loads(proc.stdout.readline())
    pve.pve.revoke_tickets()
    proc.stdin.write(b'{"method": "guests/get", "params": {"id": "101"}}\n')
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["result"]["name"] == "Win11-VDI-01"
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert PASSWORD not in err.decode() and "PVE:root@pam" not in err.decode()


def test_clone_that_ends_in_task_error_reports_pve_message(pve):
    pve.pve.add_ceph_storage()
    pve.pve.add_vm(910, "Gold-2", node="pve1", status="stopped",
                   config={"scsi0": "ceph-pool:vm-910-disk-0,size=8G", "tags": "ras-template"})
    pve.pve.ceph_down()
    clone = {"method": "guests/clone", "params": {"id": "910", "name": "VDI-X"}}
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), clone])
    task_id = replies[1]["result"]["task_id"]
    # polled by another provider process, as after a RAS agent restart
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), {"method": "tasks/get", "params": {"id": task_id}}])
    result = replies[1]["result"]
    assert result["state"] == "failed", err
    assert result["error"]["message"] == "TASK ERROR: clone failed: storage 'ceph-pool' is not online"


def test_locked_vm_errors_carry_pve_text(pve):
    pve.pve.snapshot_lock(103, "backup")
    pve.pve.snapshot_lock(102, "backup")
    convert = {"method": "guests/convert", "params": {"id": "103", "is_template": True}}
    stop = {"method": "guests/control", "params": {"id": "102", "control": "stop"}}
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), convert, stop])
    assert "VM is locked (backup)" in replies[1]["error"]["message"]
    # a power operation names the lock and why before asking PVE
    assert replies[2]["error"]["message"].startswith("Guest 102 is locked by Proxmox VE (lock `backup`: a backup "
                                                     "job is running); try again when that has finished")


def test_unreachable_host_fails_within_the_timeout(pve):
    dead = connect(pve, host="127.0.9.9", port="1")
    replies, err, code = serve_session("proxmox-ve", [dead, INIT], timeout=60)
    assert replies[0]["error"]["code"] == 1
    assert "cannot connect" in replies[0]["error"]["message"]
    assert "result" in replies[1] and code == 0


def test_wrong_ca_file_is_a_tls_error(pve, tmp_path):
    from fakepve.certs import make_cert
    other, _, _ = make_cert(str(tmp_path), name="other", hosts=("127.0.0.1",))
    replies, err, _ = serve_session("proxmox-ve", [connect(pve, ca_file=other)])
    assert replies[0]["error"]["code"] == 1
    assert "TLS error" in replies[0]["error"]["message"]


def test_ca_file_wins_over_requests_ca_bundle(pve, tmp_path, monkeypatch):
    bogus = tmp_path / "bogus.pem"
    bogus.write_text("not a certificate\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bogus))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(bogus))
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), {"method": "guests/list"}])
    assert "result" in replies[1], err


def test_token_secret_never_reaches_stderr_or_replies(pve, tmp_path):
    log = tmp_path / "provider.log"
    # RAS never sends a secret as a guest id; here it stands for any request or backend reply
    # that carries one: it must be masked in the reply, stderr and the log file alike.
    probe = {"method": "guests/get", "params": {"id": TOKEN_SECRET}}
    replies, err, _ = serve_session("proxmox-ve", [connect(pve), {"method": "guests/list"}, probe],
                                    "--log-level", "DEBUG", "--log-file", str(log))
    assert "error" in replies[2] and "***" in err and "***" in log.read_text()
    assert TOKEN_SECRET not in err and TOKEN_SECRET not in json.dumps(replies)
    assert TOKEN_SECRET not in log.read_text()


def test_ticket_expiry_means_a_new_login_not_an_error(pve):
    import time
    pve.pve.ticket_ttl = 1  # PVE seconds; the fake checks expiry against wall time
    proc = subprocess.Popen([sys.executable, str(CONNECTOR), "serve", "proxmox-ve"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdin.write((json.dumps(connect(pve, auth="password")) + "\n").encode())
    proc.stdin.flush()
    assert "result" in json.loads(proc.stdout.readline())
    time.sleep(1.5)
    proc.stdin.write(b'{"method": "guests/list"}\n')
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["result"]["guests"]
    out, err = proc.communicate(timeout=30)
    assert "logging in again" in err.decode()


def test_a_hung_host_is_a_clear_error_within_the_read_timeout(pve, tmp_path):
    """The host holds each answer 4 s, past the mapping's 1 s read timeout: the reply is the
    timeout's error (a longer hang proves nothing more, and the fake's shutdown waits it out)."""
    variant = tmp_path / "quick.yaml"
    variant.write_text(f"extends: {CONNECTOR.parent / 'mappings/proxmox-ve/mapping.yaml'}\ncpfmap: 1\n"
                       "metadata: {name: pve-quick}\nconnection: {read_timeout: 1}\n")
    pve.pve.flaky_network(hang_rate=1.0, hang_secs=4)
    replies, err, code = serve_session(str(variant), [connect(pve), INIT])
    pve.pve.flaky_network()
    assert replies[0]["error"]["code"] == 1 and "within 1s" in replies[0]["error"]["message"]
    assert "result" in replies[1] and code == 0


def test_clones_go_to_the_node_setting(pve):
    clone = {"method": "guests/clone", "params": {"id": "900", "name": "VDI-N"}}
    pve.pve.storages["local-lvm"]["shared"] = 1
    replies, err, _ = serve_session("proxmox-ve", [connect(pve, node="pve1"), clone])
    assert "result" in replies[1], err
    new = pve.pve.vm(int(replies[1]["result"]["clone_id"]))
    assert new.node == "pve1" and new.name == "VDI-N"


def test_conformance_replayed_from_a_recording_of_itself(settings_file, tmp_path):
    cassette = tmp_path / "conformance.yaml"
    options = ["--settings", str(settings_file()), "--guest", "101", "--template-source", "103", "--time-scale", "0"]
    live = subprocess.run([sys.executable, str(CONNECTOR), "conformance", *options, "--", sys.executable,
                           str(CONNECTOR), "record", "proxmox-ve", "--cassette", str(cassette)],
                          capture_output=True, text=True, timeout=300)
    assert live.returncode == 0, live.stdout
    code, out = conformance(settings_file(), "proxmox-ve", "--replay", str(cassette), "--guest", "101",
                            "--template-source", "103")
    assert code == 0, out


def test_every_workflow_passes_when_pve_tasks_take_time(tmp_path):
    """PVE time runs (tasks finish after the request, VMs take seconds to start and stop)."""
    from pve import ServedPve, cluster
    served = ServedPve(time_scale=0.05)
    cluster(served.pve)
    for vm in served.pve.vms:
        vm.start_secs, vm.stop_secs, vm.shutdown_secs = 4, 2, 3
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(served.settings()))
    try:
        proc = subprocess.run([sys.executable, str(CONNECTOR), "conformance", "proxmox-ve", "--settings",
                               str(settings), "--guest", "101", "--template-source", "103", "--time-scale", "0.02"],
                              capture_output=True, text=True, timeout=300)
    finally:
        served.stop()
    assert proc.returncode == 0, proc.stdout
