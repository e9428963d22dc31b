"""The openstack pack against a real Nova (tests/novacloud.py): the conformance runner, the
state table, controls, conflicts, clone faults, paging, tokens and the service catalog."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import requests
from conftest import CONNECTOR, ROOT, serve_session
from novacloud import ServedNova

from cpfmap.conformance.client import ProviderProcess

PACK = "openstack"


@pytest.fixture(scope="module")
def cloud():
    served = ServedNova()
    try:
        yield served
    finally:
        served.stop()


def connect(cloud: ServedNova, **settings) -> list:
    return [{"method": "provider/initialize"},
            {"method": "provider/connect", "params": {"settings": cloud.settings(**settings)}}]


def provider(cloud: ServedNova, **settings) -> ProviderProcess:
    argv = [sys.executable, str(CONNECTOR), "serve", PACK, "--log-level", "INFO"]
    client = ProviderProcess(argv, reply_timeout=60).start()
    for line in connect(cloud, **settings):
        assert "result" in client.request(line).reply
    return client


def call(client: ProviderProcess, method: str, **params) -> dict:
    return client.request({"method": method, "params": params}).reply


def finish(client: ProviderProcess, task_id: str, polls: int = 200) -> dict:
    for _ in range(polls):
        result = call(client, "tasks/get", id=task_id)["result"]
        if result["state"] != "running":
            return result
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} still running")


def test_conformance_runner_passes_on_live_nova(cloud, tmp_path):
    guest, source = cloud.boot("conf-vdi"), cloud.boot("conf-gold")
    settings = tmp_path / "openstack.json"
    settings.write_text(json.dumps(cloud.settings()), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "cpfmap", "conformance", PACK, "--settings", str(settings),
                           "--guest", guest, "--template-source", source, "--clone-name", "CONF-CLONE",
                           "--time-scale", "0.05", "--junit", str(tmp_path / "junit.xml")],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PASSED:" in proc.stdout and "0 failed" in proc.stdout and "SKIP" not in proc.stdout, proc.stdout
    for workflow in ("inventory", "power", "create-template", "create-host", "maintenance", "delete-host"):
        assert f"PASS  {workflow}" in proc.stdout


# (how the server is brought there: admin actions in order, Nova status) -> CPF state
STATES = [
    ("active", [], "ACTIVE", "powered_on"),
    ("stopped", [{"os-stop": None}], "SHUTOFF", "powered_off"),
    ("paused", [{"pause": None}], "PAUSED", "suspended"),
    ("suspended", [{"suspend": None}], "SUSPENDED", "suspended"),
    ("shelved", [{"shelve": None}], "SHELVED_OFFLOADED", "powered_off"),
    ("rescued", [{"rescue": None}], "RESCUE", "powered_on"),
    ("error-running", [{"os-resetState": {"state": "error"}}], "ERROR", "powered_on"),
    ("error-stopped", [{"os-stop": None}, {"os-resetState": {"state": "error"}}], "ERROR", "powered_off"),
]


@pytest.fixture(scope="module")
def states(cloud):
    ids = {name: cloud.boot(f"state-{name}", wait=None) for name, *_ in STATES}
    for name, actions, status, _ in STATES:
        cloud.wait(ids[name], "ACTIVE")
        for i, action in enumerate(actions):
            cloud.action(ids[name], action, wait=status if i == len(actions) - 1 else "SHUTOFF")
    return ids


def test_nova_states_map_to_cpf_states(cloud, states):
    lines = connect(cloud) + [{"method": "guests/get", "params": {"id": states[name]}} for name, *_ in STATES]
    replies, err, code = serve_session(PACK, lines)
    got = {name: (r["result"]["status"], r["result"]["state"]) for (name, *_), r in zip(STATES, replies[2:])}
    assert got == {name: (status, state) for name, _, status, state in STATES}, err
    port = cloud.server(states["active"])["addresses"]["private"][0]
    active = replies[2]["result"]
    assert (active["mac_addresses"], active["ip_addresses"]) == ([port["OS-EXT-IPS-MAC:mac_addr"]], [port["addr"]])
    assert port["addr"] not in [a for r in replies[3:] for a in r["result"]["ip_addresses"]]   # unique fixed IPs


@pytest.mark.parametrize("start_from,control,status", [
    ("paused", "start", "ACTIVE"), ("suspended", "start", "ACTIVE"), ("shelved", "start", "ACTIVE"),
    ("stopped", "start", "ACTIVE"), ("active", "suspend", "SUSPENDED"), ("active", "reset", "ACTIVE"),
    ("active", "restart", "ACTIVE")])
def test_controls_bring_servers_where_ras_wants_them(cloud, start_from, control, status):
    name, actions, first, _ = next(s for s in STATES if s[0] == start_from)
    sid = cloud.boot(f"ctl-{name}-{control}")
    for action in actions:
        cloud.action(sid, action, wait=first)
    replies, err, _ = serve_session(PACK, connect(cloud) + [
        {"method": "guests/control", "params": {"id": sid, "control": control}}])
    assert replies[2] == {"result": {}}, err
    assert cloud.wait(sid, status)["status"] == status


def test_stop_brings_a_paused_server_back_then_powers_it_off(cloud):
    sid = cloud.boot("ctl-paused-stop")
    cloud.action(sid, {"pause": None}, wait="PAUSED")
    replies, err, _ = serve_session(PACK, connect(cloud) + [
        {"method": "guests/control", "params": {"id": sid, "control": "stop"}}])
    assert replies[2] == {"result": {}}, err
    assert cloud.wait(sid, "SHUTOFF")["OS-EXT-STS:power_state"] == 4


def test_a_control_nova_refuses_in_this_state_says_why(cloud, states):
    replies, _, _ = serve_session(PACK, connect(cloud) + [
        {"method": "guests/control", "params": {"id": states["shelved"], "control": "restart"}}])
    message = replies[2]["error"]["message"]
    assert replies[2]["error"]["code"] == 1
    assert f"Guest {states['shelved']} is busy or in the wrong state for this" in message
    assert "Cannot 'reboot' instance" in message and "shelved_offloaded" in message


def test_a_server_busy_with_another_task_gets_a_clear_answer(cloud):
    sid = cloud.boot("busy")
    cloud.control(power_off_seconds=8)   # long enough for a connector process to start and look
    try:
        cloud.action(sid, {"os-stop": None})
        replies, err, _ = serve_session(PACK, connect(cloud) + [
            {"method": "guests/get", "params": {"id": sid}},
            {"method": "guests/control", "params": {"id": sid, "control": "start"}},
            {"method": "guests/control", "params": {"id": sid, "control": "stop"}}])
    finally:
        cloud.control(power_off_seconds=0)
    assert replies[2]["result"]["task_state"] == "powering-off", err
    assert replies[2]["result"]["state"] == "powering_off"
    assert replies[3]["error"]["message"] == f"Guest {sid} is busy (powering-off); try again when Nova is done"
    assert replies[4] == {"result": {}}   # already on its way off
    cloud.wait(sid, "SHUTOFF")


def test_clone_that_nova_cannot_place_fails_with_novas_fault(cloud):
    big = cloud.boot("big-gold", flavor="ras.huge")
    client = provider(cloud)
    try:
        started = call(client, "guests/snapshots/create", id=big, name="RAS_TEMPLATE_VERSION_1")["result"]
        assert finish(client, started["task_id"])["state"] == "completed"
        clone = call(client, "guests/clone", id=big, name="TOO-BIG", snapshot="RAS_TEMPLATE_VERSION_1")["result"]
        result = finish(client, clone["task_id"])
    finally:
        client.close()
    assert result["state"] == "failed"
    assert result["error"]["message"].startswith(f"Server {clone['clone_id']} is ERROR: No valid host was found")
    clone_server = cloud.server(clone["clone_id"])
    assert clone_server["flavor"]["original_name"] == "ras.huge"
    assert clone_server["image"]["id"] != cloud.server(big)["image"]["id"]   # booted from the snapshot
    assert clone_server["metadata"] == {"ras_clone_of": big, "ras_snapshot": "RAS_TEMPLATE_VERSION_1"}


def test_guests_list_pages_with_markers(cloud, states):
    everything = sorted(s["id"] for s in cloud.nova("GET", "/servers", user="ras")["servers"])
    assert len(everything) > 6
    replies, err, _ = serve_session(PACK, connect(cloud, page_size="2") + [{"method": "guests/list"}])
    assert sorted(replies[2]["result"]["guests"]) == everything, err


def test_application_credential_and_a_token_nova_no_longer_accepts(cloud, states):
    client = provider(cloud, auth="application-credential")
    try:
        cloud.control(revoke=True)   # every token now answers 401: the pack logs in again
        reply = call(client, "guests/get", id=states["active"])   # (a list read first would be reused here)
    finally:
        client.close()
    assert reply["result"]["state"] == "powered_on"
    assert any("401; logging in again" in line for line in client.stderr)


def test_all_projects_lists_other_projects_servers_for_an_admin(cloud, states):
    theirs = cloud.boot("other-project-vdi", user="other")
    admin = {"username": "admin", "password": "admin-secret-pw"}
    lines = [{"method": "guests/list"}, {"method": "guests/get", "params": {"id": theirs}}]
    everywhere, err, _ = serve_session(PACK, connect(cloud, all_projects="true", page_size="3", **admin) + lines)
    ours, _, _ = serve_session(PACK, connect(cloud, **admin) + lines)
    assert theirs in everywhere[2]["result"]["guests"] and states["active"] in everywhere[2]["result"]["guests"], err
    assert everywhere[3]["result"]["name"] == "other-project-vdi"
    assert theirs not in ours[2]["result"]["guests"]


@pytest.mark.parametrize("settings,message", [
    ({"region": "Atlantis"}, "the login reply gives no `compute` endpoint"),
    ({"interface": "admin"}, "the login reply gives no `compute` endpoint"),
    ({"password": "wrong"}, "Authentication failed: HTTP 401: The request you have made requires authentication."),
])
def test_connect_explains_catalog_and_credential_problems(cloud, settings, message):
    replies, err, _ = serve_session(PACK, connect(cloud, **settings))
    assert message in replies[1]["error"]["message"], err


# ------------------------------------------------------------ round two (issue 20)

def test_states_follow_the_power_state_before_novas_status(cloud):
    sid = cloud.boot("guest-shut-down")
    cloud.action(sid, {"os-stop": None}, wait="SHUTOFF")
    cloud.action(sid, {"os-resetState": {"state": "active"}})   # ACTIVE, but the guest is shut down (4)
    server = cloud.server(sid)
    assert (server["status"], server["OS-EXT-STS:power_state"]) == ("ACTIVE", 4)
    replies, err, _ = serve_session(PACK, connect(cloud) + [{"method": "guests/get", "params": {"id": sid}}])
    assert replies[2]["result"]["state"] == "powered_off", err


def test_start_of_a_server_in_error_hard_reboots_it(cloud):
    sid = cloud.boot("error-start")
    cloud.action(sid, {"os-stop": None}, wait="SHUTOFF")
    cloud.action(sid, {"os-resetState": {"state": "error"}}, wait="ERROR")
    replies, err, _ = serve_session(PACK, connect(cloud) + [
        {"method": "guests/control", "params": {"id": sid, "control": "start"}}])
    assert replies[2] == {"result": {}}, err
    for _ in range(300):   # ERROR with task_state reboot_*_hard until the reboot is done
        server = cloud.server(sid)
        if server["status"] == "ACTIVE" and server["OS-EXT-STS:task_state"] is None:
            break
        time.sleep(0.1)
    assert (server["status"], server["OS-EXT-STS:power_state"]) == ("ACTIVE", 1), server


# nova.tests.fixtures.cinder.CinderFixture.IMAGE_BACKED_VOL: a bootable volume the Cinder fixture
# serves (written out: importing nova here would monkey-patch this test process with eventlet)
IMAGE_BACKED_VOL = "6ca404f3-d844-4169-bb96-bc792f37de98"


def test_versions_of_a_shelved_or_volume_backed_server_are_refused_with_what_to_do(cloud, states):
    volume = cloud.nova("POST", "/servers", {"server": {
        "name": "bfv-gold", "flavorRef": "1", "networks": "none", "block_device_mapping_v2": [
            {"boot_index": 0, "uuid": IMAGE_BACKED_VOL, "source_type": "volume",
             "destination_type": "volume"}]}}, user="ras")["server"]["id"]
    cloud.wait(volume, "ACTIVE")
    create = [{"method": "guests/snapshots/create", "params": {"id": sid, "name": "RAS_TEMPLATE_VERSION_1"}}
              for sid in (states["shelved"], volume)]
    replies, err, _ = serve_session(PACK, connect(cloud) + create)
    assert "is shelved" in replies[2]["error"]["message"] and "start it" in replies[2]["error"]["message"], err
    assert "boots from a Cinder volume" in replies[3]["error"]["message"]


@pytest.mark.parametrize("top,ok", [("2.60", True), ("2.40", False)])
def test_the_compute_microversion_is_negotiated_with_older_clouds(cloud, states, top, ok):
    cloud.control(max_version=top)
    try:
        replies, err, _ = serve_session(PACK, connect(cloud) + [{"method": "guests/get", "params": {"id": states["active"]}}])
    finally:
        cloud.control(max_version=None)
    if ok:
        assert replies[2]["result"]["state"] == "powered_on", err
    else:
        assert "offers microversions 2.1 to 2.40; this pack needs one from 2.47" in replies[1]["error"]["message"]


def test_the_token_is_renewed_within_its_own_lifetime(cloud, states):
    cloud.control(lifetime=3)
    try:
        client = provider(cloud)
        try:
            call(client, "guests/list")
            time.sleep(3.2)   # the first token has expired: it must not have been used any more
            reply = call(client, "guests/get", id=states["active"])
        finally:
            client.close()
    finally:
        cloud.control(lifetime=3600)
    assert reply["result"]["state"] == "powered_on"
    assert not any("401; logging in again" in line for line in client.stderr), client.stderr


def glance_images(cloud, template: str) -> list:
    reply = requests.get(f"{cloud.url}/image/v2/images", params={"ras_template_of": template},
                         headers={"X-Auth-Token": cloud.token("ras")}, timeout=30)
    return reply.json()["images"]


def test_a_version_image_clones_still_use_is_retired_and_deleted_later(cloud):
    gold = cloud.boot("in-use-gold")
    client = provider(cloud)
    try:
        for version in ("RAS_TEMPLATE_VERSION_1", "RAS_TEMPLATE_VERSION_2"):
            started = call(client, "guests/snapshots/create", id=gold, name=version)["result"]
            assert finish(client, started["task_id"])["state"] == "completed"
        first = next(i["id"] for i in glance_images(cloud, gold) if i.get("ras_snapshot") == "RAS_TEMPLATE_VERSION_1")
        cloud.control(images_in_use=[first])
        deleted = call(client, "guests/snapshots/delete", id=gold, name="RAS_TEMPLATE_VERSION_1")
        exists = call(client, "guests/snapshots/exists", id=gold, name="RAS_TEMPLATE_VERSION_1")
        still = [i["id"] for i in glance_images(cloud, gold)]
        cloud.control(images_in_use=[])
        call(client, "guests/snapshots/delete", id=gold, name="RAS_TEMPLATE_VERSION_2")
        left = [i["id"] for i in glance_images(cloud, gold)]
    finally:
        cloud.control(images_in_use=[])
        client.close()
    assert deleted["result"]["task_id"] and exists == {"result": False}
    assert first in still and first not in left


def test_with_all_projects_a_template_of_another_project_is_refused_at_clone(cloud):
    theirs = cloud.boot("other-gold", user="other")
    admin = {"username": "admin", "password": "admin-secret-pw"}
    lines = [{"method": "guests/clone", "params": {"id": theirs, "name": "X", "snapshot": "RAS_TEMPLATE_VERSION_1"}}]
    replies, err, _ = serve_session(PACK, connect(cloud, all_projects="true", **admin) + lines)
    message = replies[2]["error"]["message"]
    assert "belongs to project" in message and "keep RAS templates in the provider's own project" in message, err
