"""Distribution: the wheel carries every data file and works installed, from any folder; pack
discovery, manifests and `pack verify`; a pip-installable pack project; offline bundles.

Tests marked `registry` fetch dependency wheels from the package index pip is configured with
(CI has one: it installs the test extra); deselect them offline with `-m "not registry"`. The
rest build and install with --no-index/--no-deps only.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

import cpfmap
from cpfmap.cli.commands import run
from cpfmap.errors import MappingError
from cpfmap.language import catalog, loader
from cpfmap.packaging import distribution, verify

PVE = ROOT / "mappings" / "proxmox-ve"
INVENTORY = PVE / "recordings" / "default" / "inventory"
OFFLINE_ENV = {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}


def pip(*args: str, cwd: Path | None = None, env: dict | None = None) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def build_wheel(project: Path, dest: Path) -> Path:
    pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), str(project), env=OFFLINE_ENV)
    return next(dest.glob("*.whl"))


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    return distribution.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory) -> Path:
    """cpfmap's wheel installed alone into a folder (its dependencies come from this venv)."""
    target = tmp_path_factory.mktemp("site")
    pip("install", "--no-deps", "--target", str(target), str(wheel), env=OFFLINE_ENV)
    return target


def cpfmap_in(site: Path, *args: str, cwd: Path, data: str = "", extra_path: Path | None = None):
    path = os.pathsep.join(str(p) for p in (extra_path, site) if p)
    return subprocess.run([sys.executable, "-m", "cpfmap", *args], input=data, capture_output=True, text=True,
                          timeout=300, cwd=cwd, env={**os.environ, "PYTHONPATH": path, "CPFMAP_PACKS": ""})


# ------------------------------------------------------------- the wheel

def test_wheel_carries_schemas_packs_recordings_and_scaffold(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    def shipped(folder: Path) -> list[Path]:
        return [p for p in folder.rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
                and "__pycache__" not in p.parts and p.name != ".gitkeep"]
    # the package's own data files, and the top-level schemas/ and mappings/ mapped into the package
    data = [p.relative_to(ROOT).as_posix() for p in shipped(ROOT / "cpfmap")]
    data += ["cpfmap/" + p.relative_to(ROOT).as_posix() for top in ("schemas", "mappings") for p in shipped(ROOT / top)]
    missing = sorted(name for name in data if name not in names)
    assert not missing
    for needed in ("cpfmap/py.typed", "cpfmap/schemas/pack.schema.json", "cpfmap/mappings/proxmox-ve/pack.yaml",
                   "cpfmap/mappings/proxmox-ve/recordings/linked/power.jsonl",
                   "cpfmap/authoring/scaffold/project/pyproject.toml.tmpl"):
        assert needed in names


def test_installed_wheel_works_from_any_folder(installed, tmp_path):
    probe = subprocess.run([sys.executable, "-c", "import cpfmap; print(cpfmap.__file__)"], capture_output=True,
                           text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)})
    assert Path(probe.stdout.strip()).is_relative_to(installed), probe.stdout + probe.stderr
    assert cpfmap_in(installed, "validate", "proxmox-ve", "proxmox-ve:linked", cwd=tmp_path).returncode == 0
    session = INVENTORY.with_suffix(".jsonl").read_text()
    served = cpfmap_in(installed, "serve", "proxmox-ve", "--replay", str(INVENTORY.with_suffix(".yaml")),
                       cwd=tmp_path, data=session)
    replies = [json.loads(line) for line in served.stdout.splitlines()]
    assert served.returncode == 0 and len(replies) == len(session.splitlines())
    assert all("result" in reply for reply in replies), replies
    made = cpfmap_in(installed, "new-pack", "my-hv", cwd=tmp_path)
    assert made.returncode == 0 and (tmp_path / "my-hv" / "pack.yaml").is_file()
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps(json.loads(session.splitlines()[1])["params"]["settings"]))
    conf = cpfmap_in(installed, "conformance", "proxmox-ve", "--replay", str(INVENTORY.with_suffix(".yaml")),
                     "--settings", str(settings), "--workflows", "connect,inventory", "--time-scale", "0", cwd=tmp_path)
    assert conf.returncode == 0 and "PASS  inventory" in conf.stdout, conf.stdout + conf.stderr


@pytest.mark.parametrize("missing", ["schemas/mapping.schema.json", "schemas/replies/guests-list.json", "mappings"])
def test_a_missing_data_file_is_an_error_reply(installed, tmp_path, missing):
    site = tmp_path / "site"
    shutil.copytree(installed / "cpfmap", site / "cpfmap")
    target = site / "cpfmap" / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    session = INVENTORY.with_suffix(".jsonl").read_text()
    served = cpfmap_in(site, "serve", "proxmox-ve", "--replay", str(INVENTORY.with_suffix(".yaml")), cwd=tmp_path,
                       data=session)
    replies = [json.loads(line) for line in served.stdout.splitlines()]
    assert served.returncode == 0 and len(replies) == len(session.splitlines()), served.stdout + served.stderr
    errors = [reply["error"]["message"] for reply in replies if "error" in reply]
    assert any(missing in error and "reinstall" in error for error in errors), replies


# -------------------------------------------------------- pack discovery

def copy_pack(dest: Path, recordings: tuple[str, ...] = ("default/inventory",)) -> Path:
    """The proxmox-ve pack with only some of its recordings (verify replays every one)."""
    shutil.copytree(PVE, dest, ignore=shutil.ignore_patterns("recordings"))
    for name in recordings:
        for suffix in (".jsonl", ".yaml"):
            source = PVE / "recordings" / f"{name}{suffix}"
            (dest / "recordings" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / "recordings" / f"{name}{suffix}")
    return dest


def test_lookup_order_and_duplicates(tmp_path, caplog):
    copy_pack(tmp_path / "first" / "proxmox-ve")
    env = {catalog.ENV: os.pathsep.join([str(tmp_path / "first"), str(tmp_path / "nowhere")])}
    found = catalog.discover(env)
    pack = found.find("proxmox-ve")
    assert pack.origin == catalog.ENV and pack.folder == tmp_path / "first" / "proxmox-ve"
    assert [p.origin for p in found.shadowed(pack)] == ["bundled"]
    assert any("nowhere" in problem for problem in found.problems)
    assert catalog.describe(pack, found)["shadows"]
    with caplog.at_level("WARNING", logger="cpfmap"):
        assert catalog.mapping_for("proxmox-ve:linked", found) == tmp_path / "first" / "proxmox-ve" / "linked.yaml"
    assert "found twice" in caplog.text


def test_variant_references(tmp_path, monkeypatch):
    monkeypatch.setenv(catalog.ENV, "")
    assert loader.resolve("proxmox-ve") == PVE / "mapping.yaml"
    assert loader.resolve("proxmox-ve:linked") == PVE / "linked.yaml"
    with pytest.raises(MappingError, match="no variant `nope`; variants: default, linked"):
        loader.resolve("proxmox-ve:nope")
    with pytest.raises(MappingError, match="packs: ec2, lxd, openstack, proxmox-ve"):
        loader.resolve("no-such-pack")
    local = copy_pack(tmp_path / "proxmox-ve")  # an explicit path comes before any name
    monkeypatch.chdir(tmp_path)
    assert loader.resolve("proxmox-ve").resolve() == local / "mapping.yaml"


def test_packs_command_lists_and_shows(tmp_path):
    copy_pack(tmp_path / "proxmox-ve")
    env = {**os.environ, catalog.ENV: str(tmp_path)}
    listed = subprocess.run([sys.executable, "-m", "cpfmap", "packs"], capture_output=True, text=True, env=env,
                            cwd=ROOT, timeout=60)
    assert "proxmox-ve 1.0.0  from CPFMAP_PACKS" in listed.stdout
    assert "default (versioning), linked (basic)" in listed.stdout and "fake fakepve 0.5.0" in listed.stdout
    assert "also found (hidden by this one)" in listed.stdout and "(bundled)" in listed.stdout
    shown = subprocess.run([sys.executable, "-m", "cpfmap", "packs", "show", "proxmox-ve", "--format", "text"],
                           capture_output=True, text=True, cwd=ROOT, timeout=60,
                           env={**os.environ, catalog.ENV: ""})
    assert shown.returncode == 2  # --format belongs to list, not show
    shown = subprocess.run([sys.executable, "-m", "cpfmap", "packs", "show", "proxmox-ve"], capture_output=True,
                           text=True, cwd=ROOT, timeout=60, env={**os.environ, catalog.ENV: ""})
    assert str(PVE / "README.md") in shown.stdout and "provenance:" in shown.stdout


# ----------------------------------------------------------- pack verify

def test_bundled_pack_verifies():
    proc = subprocess.run([sys.executable, "-m", "cpfmap", "pack", "verify", "proxmox-ve", "--format", "json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, catalog.ENV: ""})
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"], report["findings"]


def edit_manifest(**changes):
    def edit(pack: Path) -> None:
        data = yaml.safe_load((pack / "pack.yaml").read_text())
        for key, value in changes.items():
            if value is None:
                data.pop(key)
            else:
                data[key] = value
        (pack / "pack.yaml").write_text(yaml.safe_dump(data))
    return edit


def edit_variant(variant: str, key: str, value: str):
    def edit(pack: Path) -> None:
        data = yaml.safe_load((pack / "pack.yaml").read_text())
        data["variants"][variant][key] = value
        (pack / "pack.yaml").write_text(yaml.safe_dump(data))
    return edit


def extra_request(pack: Path) -> None:
    session = pack / "recordings" / "default" / "inventory.jsonl"
    session.write_text(session.read_text() + '{"method": "guests/snapshots/exists", "params": {"id": "101", "name": "x"}}\n')


def tampered_file(pack: Path) -> None:
    verify.write_checksums(pack)
    (pack / "mapping.yaml").write_text((pack / "mapping.yaml").read_text() + "\n# changed\n")


def unlisted_file(pack: Path) -> None:
    verify.write_checksums(pack)
    (pack / "extra.txt").write_text("x")


BREAKAGES = {
    "no manifest": (lambda p: (p / "pack.yaml").unlink(), "has no pack.yaml"),
    "no licence": (edit_manifest(license=None), "'license' is a required property"),
    "wrong name": (edit_manifest(name="other-pack"), "the manifest names `other-pack`"),
    "engine too new": (edit_manifest(engine=">=99.0"), "needs cpfmap >=99.0"),
    "engine too old": (edit_manifest(engine=">=0.0,<0.1"), "needs cpfmap >=0.0,<0.1"),
    "bad provenance": (edit_manifest(provenance=[{"kind": "rumour", "source": "x"}]), "rumour"),
    "missing variant file": (lambda p: (p / "linked.yaml").unlink(), "no file linked.yaml"),
    "variant outside the pack": (edit_variant("linked", "mapping", "../mapping.yaml"), "does not match"),
    "level overclaimed": (edit_variant("linked", "level", "versioning"), "advertises level versioning"),
    "level underclaimed": (edit_variant("default", "level", "basic"), "but its mapping serves versioning"),
    "broken mapping": (lambda p: (p / "linked.yaml").write_text("cpfmap: 1\n"), "is a required property"),
    "recording misses": (extra_request, "(guests/snapshots/exists) got a replay miss"),
    "cassette missing": (lambda p: (p / "recordings/default/inventory.yaml").unlink(), "has no cassette"),
    "stray recordings": (lambda p: (p / "recordings" / "old").mkdir(), "recordings/old belongs to no variant"),
    "no readme": (lambda p: (p / "README.md").unlink(), "has no README.md"),
    "tampered file": (tampered_file, "mapping.yaml differs from the checksum"),
    "unlisted file": (unlisted_file, "extra.txt is not listed"),
}


def test_a_sound_copy_verifies(tmp_path):
    pack = copy_pack(tmp_path / "proxmox-ve")
    verify.write_checksums(pack)
    findings = verify.verify(catalog.Pack("proxmox-ve", pack, "path"))
    assert [f.format() for f in findings] == []


def test_pack_verify_exits_1_on_a_problem(tmp_path):
    pack = copy_pack(tmp_path / "proxmox-ve")
    edit_variant("linked", "level", "versioning")(pack)
    out, err = io.BytesIO(), io.StringIO()
    assert run(["pack", "verify", str(pack)], io.BytesIO(), out, err) == 1
    assert "advertises level versioning" in out.getvalue().decode() and "FAILED (1 errors" in out.getvalue().decode()


@pytest.mark.parametrize("case", BREAKAGES)
def test_pack_verify_finds(tmp_path, case):
    pack = copy_pack(tmp_path / "proxmox-ve")
    breakage, message = BREAKAGES[case]
    breakage(pack)
    errors = [f.format() for f in verify.verify(catalog.Pack("proxmox-ve", pack, "path"))
              if f.severity == "error"]
    assert any(message in error for error in errors), errors


def test_manifest_levels_are_the_engines():
    from cpfmap.language.sections import LEVELS
    schema = loader.schema("pack.schema.json")
    assert tuple(schema["properties"]["variants"]["additionalProperties"]["properties"]["level"]["enum"]) == LEVELS


# ----------------------------------------------- a pip-installable pack

def test_pack_project_builds_installs_and_is_found(tmp_path):
    project = distribution.new_project("acme-hv", tmp_path)
    wheel = build_wheel(project, tmp_path / "dist")
    site = tmp_path / "site"
    pip("install", "--no-deps", "--target", str(site), str(wheel), env=OFFLINE_ENV)
    env = {**os.environ, "PYTHONPATH": str(site), catalog.ENV: ""}
    listed = subprocess.run([sys.executable, "-m", "cpfmap", "packs"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=60)
    assert "acme-hv 0.1.0  from entry point (cpfmap-pack-acme-hv)" in listed.stdout, listed.stdout + listed.stderr
    for args in (["pack", "verify", "acme-hv"], ["validate", "acme-hv"]):
        proc = subprocess.run([sys.executable, "-m", "cpfmap", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    own_test = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], capture_output=True,
                              text=True, cwd=project, timeout=120)
    assert own_test.returncode == 0 and "1 passed" in own_test.stdout, own_test.stdout


def test_a_broken_entry_point_is_reported(tmp_path, monkeypatch):
    info = tmp_path / "broken_pack-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-pack\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cpfmap.packs]\nbroken = no_such_module_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    found = catalog.discover({})
    assert found.find("broken") is None
    assert any("broken = no_such_module_here (broken-pack)" in problem for problem in found.problems)


# ---------------------------------------------------------------- bundles

def test_windows_bundle_layout_offline(wheel, tmp_path):
    commands: list[list[str]] = []

    def fake_pip(command: list[str]) -> None:
        commands.append(command)
        python = command[command.index("--python-version") + 1].replace(".", "")
        (Path(command[command.index("--dest") + 1]) / f"pyyaml-6-cp{python}-cp{python}-win_amd64.whl").write_text("")

    extra = catalog.Pack("acme-hv", distribution.new_project("acme-hv", tmp_path).joinpath("src", "cpfmap_pack_acme_hv"),
                         catalog.ENV)
    request = distribution.BundleRequest(tmp_path / "bundle", distribution.PLATFORMS["windows-x64"],
                                         packs=[extra, catalog.pack_at("proxmox-ve")], wheel=wheel, zip=True)
    archive = distribution.bundle(request, fake_pip)
    assert [c[c.index("--python-version") + 1] for c in commands] == ["3.11", "3.12", "3.13"]
    assert all("--only-binary=:all:" in c and c[c.index("--platform") + 1] == "win_amd64" for c in commands)
    names = zipfile.ZipFile(archive).namelist()
    assert f"wheels/{wheel.name}" in names and "wheels/pyyaml-6-cp313-cp313-win_amd64.whl" in names
    assert "packs/acme-hv/pack.yaml" in names and not any(n.startswith("packs/proxmox-ve") for n in names)
    script = zipfile.ZipFile(archive).read("install.cmd").decode()
    assert "\r\n" in script and "--no-index" in script and "cpfmap.exe" in script
    manifest = json.loads(zipfile.ZipFile(archive).read("bundle.json"))
    assert manifest["platform"] == "windows-x64" and manifest["packs"] == ["acme-hv"]


@pytest.mark.registry
def test_linux_bundle_installs_offline_and_serves(wheel, tmp_path):
    out = distribution.bundle(distribution.BundleRequest(tmp_path / "bundle", distribution.PLATFORMS["linux-x64"],
                                                         pythons=[f"{sys.version_info[0]}.{sys.version_info[1]}"],
                                                         wheel=wheel))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV", "PYTHONPATH"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHON=sys.executable)
    proc = subprocess.run(["sh", str(out / "install.sh"), str(tmp_path / "agent")], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    served = subprocess.run([str(tmp_path / "agent" / "venv" / "bin" / "cpfmap"), "serve", "proxmox-ve"],
                            input='{"method":"provider/initialize","id":1}\n', capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=60)
    assert json.loads(served.stdout)["result"]["capabilities"]["template_method"] == "versioning"
    # A bundle built from local wheels only (--find-links DIR --no-index) has the same wheels.
    again = distribution.bundle(distribution.BundleRequest(
        tmp_path / "again", distribution.PLATFORMS["linux-x64"], pythons=[f"{sys.version_info[0]}.{sys.version_info[1]}"],
        wheel=wheel, pip_args=["--find-links", str(out / "wheels"), "--no-index"]))
    assert sorted(p.name for p in (again / "wheels").iterdir()) == sorted(p.name for p in (out / "wheels").iterdir())


@pytest.mark.registry
def test_windows_bundle_has_wheels_for_every_python(wheel, tmp_path):
    out = distribution.bundle(distribution.BundleRequest(tmp_path / "bundle", distribution.PLATFORMS["windows-x64"],
                                                         wheel=wheel))
    names = json.loads((out / "bundle.json").read_text())["wheels"]
    for project in ("pyyaml", "markupsafe", "rpds_py", "charset_normalizer"):
        for python in ("cp311", "cp312", "cp313"):
            assert any(n.startswith(f"{project}-") and f"-{python}-" in n and n.endswith("win_amd64.whl")
                       for n in names), (project, python, names)
    for project in ("jinja2", "jmespath", "requests", "jsonschema", "referencing", "urllib3", "idna", "certifi"):
        assert any(n.lower().startswith(f"{project}-") for n in names), (project, names)
    assert (out / "install.cmd").is_file() and wheel.name in names


# ------------------------------------------------------------- embedding API

def test_embedding_api_replays_a_recording():
    lines = INVENTORY.with_suffix(".jsonl").read_text().splitlines()
    recorded = [json.loads(line)["recorded"]["reply"] for line in lines if "recorded" in json.loads(line)]
    with cpfmap.Provider("proxmox-ve", recording=INVENTORY.with_suffix(".yaml")) as provider:
        replies = [provider.call_line(line) for line in lines[:2]]     # initialize, connect
        replies.append(provider.call("guests/list"))                    # the session's own requests, by call()
        replies.append(provider.call("guests/get", {"id": "101"}, request_id=5))
        replies += [provider.call_line(line) for line in lines[4:]]
        assert provider.exchanges
    assert replies[3]["id"] == 5 and all("result" in reply for reply in replies)
    assert replies[2] == recorded[2] and replies[3]["result"] == recorded[3]["result"]
    assert isinstance(cpfmap.load("proxmox-ve:linked"), cpfmap.CompiledMapping)
    assert [p.name for p in cpfmap.packs()] == ["ec2", "lxd", "openstack", "proxmox-ve"]


def test_embedding_api_takes_any_transport():
    sent = []

    def answer(request: cpfmap.HttpRequest) -> cpfmap.HttpResponse:
        sent.append(request)
        return cpfmap.HttpResponse(401, (), b'{"message": "no"}')

    provider = cpfmap.Provider("proxmox-ve", cpfmap.FunctionTransport(answer))
    settings = {"host": "h", "username": "u", "token_name": "t", "token_secret": "s3cret"}
    reply = provider.call("provider/connect", {"settings": settings})
    assert "error" in reply and "s3cret" not in json.dumps(reply) and sent


def test_public_names_resolve():
    assert set(cpfmap.__all__) == {"__version__", *cpfmap._EXPORTS}
    for name in cpfmap.__all__:
        assert getattr(cpfmap, name) is not None
    with pytest.raises(AttributeError):
        cpfmap.nothing_here  # noqa: B018


# ------------------------------------------------------------ lint and types

@pytest.mark.parametrize("command", [["ruff", "check", "."], ["mypy"]])
def test_lint_and_types_are_clean(command):
    proc = subprocess.run([sys.executable, "-m", *command], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
