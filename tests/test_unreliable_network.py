"""The Proxmox VE pack on an unreliable network: every RAS workflow passes, and no clone or
snapshot is ever made twice.

Two kinds of trouble, both seeded: fakepve's flaky network drops connections before a request
runs; LossyPve (tests/pve.py) loses the answer after a write has run, which is the case that
makes a blind re-send create a second VM. The pack's `idempotent`, `already_done` and `lookup`
declarations are what keep both safe.
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from conftest import CONNECTOR, ROOT

PACK = ROOT / "mappings" / "proxmox-ve"
WORKFLOWS = ("connect", "inventory", "power", "create-template", "create-host", "maintenance", "delete-host")
# More attempts than the pack's default: at 15% drops a request fails three times in a row
# about once in 300, and a run sends hundreds. No waiting between them: the test must be quick.
PATIENT = "connection: {retries: 7, backoff: 0}\n"


def pack_copy(tmp_path, variant: str) -> str:
    for source in PACK.glob("*.yaml"):
        shutil.copy(source, tmp_path / source.name)
    path = tmp_path / f"patient-{variant}"
    path.write_text(f"extends: {variant}\ncpfmap: 1\nmetadata: {{name: patient}}\n{PATIENT}", encoding="utf-8")
    return str(path)


def conformance(mapping: str, settings, *extra: str) -> tuple[int, str]:
    if "--workflows" not in extra:
        extra += ("--workflows", ",".join(WORKFLOWS))
    proc = subprocess.run([sys.executable, str(CONNECTOR), "conformance", mapping, "--settings", str(settings),
                           "--time-scale", "0", *extra],
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def made(pve, kind: str) -> list:
    """The tasks of one type that fakepve ran, as (status, target)."""
    return [(t.get("exitstatus"), t["id"]) for t in pve.tasklog if t["type"] == kind]


def assert_nothing_twice(pve, snapshots: int = 2) -> None:
    """One clone, one VM; one snapshot task per snapshot asked for (create-template, maintenance)."""
    clones = made(pve, "qmclone")
    assert clones == [("OK", "103")], clones
    assert [s for s, _ in made(pve, "qmsnapshot")] == ["OK"] * snapshots, made(pve, "qmsnapshot")
    # A repeated start fails its task when the first one started the VM: `already_done` reads it.
    failed = [(t["type"], t["exitstatus"]) for t in pve.tasklog if t.get("exitstatus") not in ("OK", None)
              and not t["exitstatus"].endswith("already running")]
    assert failed == [], failed
    names = [vm.name for vm in pve.vms]
    assert len(names) == len(set(names)), names


# Seeds whose drops hit snapshot create and delete, reset and destroy (9), a clone, reboot and
# start (10), stop and suspend (13); linked: a clone (9), convert to template (10). Seeds 1 to
# 15 of each variant all pass.
@pytest.mark.parametrize("variant,seed", [("mapping.yaml", 9), ("mapping.yaml", 10), ("mapping.yaml", 13),
                                          ("linked.yaml", 9), ("linked.yaml", 10)])
def test_every_workflow_passes_when_connections_drop(pve, tmp_path, settings_file, variant, seed):
    pve.pve.flaky_network(drop_rate=0.15, seed=seed)
    pve.pve._random.seed(seed)  # fakepve seeds when it starts; this one has started already
    workflows = WORKFLOWS if variant == "mapping.yaml" else [w for w in WORKFLOWS if w != "maintenance"]
    code, out = conformance(pack_copy(tmp_path, variant), settings_file(), "--guest", "102",
                            "--template-source", "103", "--workflows", ",".join(workflows))
    pve.pve.flaky_network(drop_rate=0.0)
    assert code == 0, out
    writes = [d for d in pve.pve.dropped if d[0] != "GET"]
    assert writes, "the seed dropped no write: the test proves nothing"
    assert_nothing_twice(pve.pve, snapshots=2 if variant == "mapping.yaml" else 0)


def losing_first_answer_of_each_write():
    """Lose the answer to the first write sent to each path (after it ran), and nothing else."""
    seen: set = set()

    def lose(method: str, path: str) -> bool:
        if method == "GET" or (method, path) in seen or path.endswith("/access/ticket"):
            return False
        seen.add((method, path))
        return True
    return lose


@pytest.mark.parametrize("auth", ["token", "password"])
def test_lost_answers_to_writes_never_make_anything_twice(pve, tmp_path, settings_file, auth):
    pve.pve.lose = losing_first_answer_of_each_write()
    code, out = conformance(pack_copy(tmp_path, "mapping.yaml"), settings_file(auth=auth), "--guest", "101",
                            "--template-source", "103")
    pve.pve.lose = None
    assert code == 0, out
    lost = {path.rsplit("/", 1)[-1] for _, path in pve.pve.lost}
    assert {"clone", "snapshot", "start", "stop", "config"} <= lost, lost
    assert_nothing_twice(pve.pve)


def test_linked_variant_survives_lost_answers(pve, tmp_path, settings_file):
    pve.pve.lose = losing_first_answer_of_each_write()
    code, out = conformance(pack_copy(tmp_path, "linked.yaml"), settings_file(), "--guest", "102",
                            "--template-source", "103", "--workflows", "create-template,create-host,delete-host")
    pve.pve.lose = None
    assert code == 0, out
    assert made(pve.pve, "qmclone") == [("OK", "103")]
    assert [s for s, _ in made(pve.pve, "qmtemplate")] == ["OK"]


def test_a_clone_whose_answer_is_lost_is_not_sent_again_without_a_lookup(pve, tmp_path, settings_file):
    """The protection's own check: strip the lookup and the lost answer fails the call."""
    mapping = pack_copy(tmp_path, "mapping.yaml")
    base = tmp_path / "mapping.yaml"
    text = base.read_text()
    assert "lookup: {steps: [{use: clone_lookup}]" in text
    lookup = '        lookup: {steps: [{use: clone_lookup}], found: "{{ made is not none }}"}\n'
    base.write_text(text.replace(lookup, ""))
    pve.pve.lose = lambda method, path: method == "POST" and path.endswith("/clone")
    code, out = conformance(mapping, settings_file(), "--template-source", "103",
                            "--workflows", "create-template,create-host")
    pve.pve.lose = None
    assert code == 1 and "connection to POST" in out, out
    assert len(made(pve.pve, "qmclone")) == 1   # never re-sent blindly
