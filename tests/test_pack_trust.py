"""Packs are found without running their code, one broken pack never breaks another, and a
manifest cannot point a variant outside its pack on any OS's path syntax."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CONNECTOR

from cpfmap.errors import MappingError
from cpfmap.language import catalog, loader

TINY = Path(__file__).parent / "data" / "tiny.yaml"
HOSTILE_INIT = {"raises": "raise RuntimeError('pack code ran at discovery')\n",
                "exits": "import sys\nsys.exit(3)\n"}


def _distribution(site: Path, package: str, init: str, record: bool) -> None:
    """An installed distribution whose package would misbehave if imported; its pack lives in a subpackage."""
    folder = site / package / "packs" / "pack"
    folder.mkdir(parents=True)
    (site / package / "__init__.py").write_text(init)
    (site / package / "packs" / "__init__.py").write_text(init)
    shutil.copy(TINY, folder / "mapping.yaml")
    info = site / f"{package}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[cpfmap.packs]\n{package.replace('_', '-')} = {package}.packs.pack\n")
    if record:
        files = [f"{package}/__init__.py", f"{package}/packs/__init__.py", f"{package}/packs/pack/mapping.yaml"]
        (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))


@pytest.fixture
def site(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    _distribution(site, "raising_pack", HOSTILE_INIT["raises"], record=True)
    _distribution(site, "exiting_pack", HOSTILE_INIT["exits"], record=False)   # an editable-style install
    info = site / "broken_pack-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken_pack\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cpfmap.packs]\nbroken-pack = no_such_package.sub\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv(catalog.ENV, "")
    return site


def test_discovery_runs_no_pack_code_and_skips_a_broken_entry(site):
    found = catalog.discover()
    assert {"raising-pack", "exiting-pack", "proxmox-ve"} <= set(found.names())
    assert found.find("raising-pack").folder == site / "raising_pack" / "packs" / "pack"
    assert not {"raising_pack", "exiting_pack"} & set(sys.modules)
    assert any("broken-pack" in problem for problem in found.problems)


def test_packs_and_serve_of_a_bundled_pack_survive_a_hostile_installed_pack(site):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run([sys.executable, str(CONNECTOR), "packs"], capture_output=True, text=True,
                            timeout=60, env=env)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    assert "raising-pack" in listed.stdout and "broken-pack" in listed.stdout + listed.stderr
    served = subprocess.run([sys.executable, str(CONNECTOR), "serve", "proxmox-ve"], capture_output=True,
                            text=True, timeout=60, env=env, input='{"method":"provider/initialize"}\n')
    assert "result" in json.loads(served.stdout.splitlines()[0]), served.stdout + served.stderr


@pytest.mark.parametrize("mapping", ["/etc/passwd.yaml", "../outside.yaml", "sub/../../outside.yaml",
                                     "..\\outside.yaml", "C:\\Windows\\x.yaml", "C:x.yaml",
                                     "\\\\server\\share\\x.yaml", "//server/share/x.yaml"])
def test_a_variant_mapping_outside_the_pack_is_refused_at_load(tmp_path, mapping):
    pack = tmp_path / "packs" / "pk"
    pack.mkdir(parents=True)
    shutil.copy(TINY, pack / "mapping.yaml")
    shutil.copy(TINY, tmp_path / "packs" / "outside.yaml")
    (pack / "pack.yaml").write_text(json.dumps({"name": "pk", "variants": {
        "default": {"mapping": "mapping.yaml", "level": "none"}, "evil": {"mapping": mapping, "level": "none"}}}))
    found = catalog.discover({catalog.ENV: str(tmp_path / "packs")})
    with pytest.raises(MappingError, match="refused"):
        catalog.mapping_for("pk:evil", found)
    with pytest.raises(MappingError, match="refused"):
        loader.resolve(pack)   # the pack folder: its manifest is read, and refused
    assert "problem" in catalog.describe(found.find("pk"), found)


def test_a_variant_reached_through_a_link_out_of_the_pack_is_refused(tmp_path):
    pack = tmp_path / "p"
    pack.mkdir()
    shutil.copy(TINY, tmp_path / "outside.yaml")
    (pack / "inner.yaml").symlink_to(tmp_path / "outside.yaml")
    (pack / "pack.yaml").write_text(json.dumps({"name": "p", "variants": {"default": {"mapping": "inner.yaml",
                                                                                       "level": "none"}}}))
    with pytest.raises(MappingError, match="leads out"):
        loader.resolve(pack)


def test_a_variant_in_a_subfolder_is_still_served(tmp_path):
    pack = tmp_path / "p"
    (pack / "variants").mkdir(parents=True)
    shutil.copy(TINY, pack / "variants" / "v.yaml")
    (pack / "pack.yaml").write_text(json.dumps({"name": "p", "variants": {"default": {"mapping": "variants/v.yaml",
                                                                                       "level": "none"}}}))
    assert loader.resolve(pack) == pack / "variants" / "v.yaml"
