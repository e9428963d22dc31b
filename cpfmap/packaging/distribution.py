"""Shipping cpfmap and packs: a pip-installable pack project (`new-pack NAME --project`) and
an offline bundle for Provider Agents (`cpfmap bundle`).

A bundle is a folder (or zip) holding `wheels/` (cpfmap's wheel and the wheels of every
dependency for one platform and several Python versions, fetched with `pip download
--only-binary=:all:`), `packs/` (chosen packs that do not ship inside cpfmap), an install
script for that platform that installs with `pip --no-index`, and `bundle.json` saying what is in it.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cpfmap import resources
from cpfmap.errors import ConfigError
from cpfmap.language.catalog import Pack
from cpfmap.version import __version__

Runner = Callable[[list[str]], None]


# ------------------------------------------------------------ pack project

def package_name(pack: str) -> str:
    return "cpfmap_pack_" + pack.replace("-", "_")


def new_project(name: str, root: Path = Path(".")) -> Path:
    """NAME/: pyproject.toml (entry point `cpfmap.packs`), src/PACKAGE/ (the pack), tests/."""
    project = root / name
    if project.exists():
        raise ConfigError(f"{project} already exists")
    package = package_name(name)
    (project / "src").mkdir(parents=True)
    from cpfmap.authoring.scaffold import new_pack  # imported here: `cpfmap serve` builds its parser without it
    pack = new_pack(name, project / "src").rename(project / "src" / package)
    (pack / "__init__.py").write_text(f'"""The {name} cpfmap pack: this folder is the pack (see pack.yaml)."""\n',
                                      encoding="utf-8")
    (project / "tests").mkdir()
    targets = {"pyproject.toml.tmpl": project / "pyproject.toml", "README.md.tmpl": project / "README.md",
               "test_pack.py.tmpl": project / "tests" / "test_pack.py"}
    for template, target in targets.items():
        text = resources.read_data(*resources.SCAFFOLD, "project", template)
        text = text.replace("PACKNAME", name).replace("PACKAGE", package).replace("CPFMAPVERSION", __version__)
        target.write_text(text, encoding="utf-8", newline="\n")
    return project


# ------------------------------------------------------------------ bundle

@dataclass(frozen=True)
class Platform:
    name: str
    tags: tuple[str, ...]  # pip --platform values, most specific first
    windows: bool


PLATFORMS = {p.name: p for p in (
    Platform("windows-x64", ("win_amd64",), True),
    Platform("linux-x64", ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"), False),
    Platform("linux-arm64", ("manylinux_2_28_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64"), False),
)}
PYTHONS = ("3.11", "3.12", "3.13")


@dataclass(frozen=True)
class BundleRequest:
    out: Path
    platform: Platform
    pythons: Sequence[str] = PYTHONS
    packs: Sequence[Pack] = ()
    wheel: Path | None = None  # cpfmap's wheel; built from the source checkout when not given
    pip_args: Sequence[str] = ()  # e.g. --no-index --find-links DIR, for building offline
    zip: bool = False


def bundle(request: BundleRequest, run: Runner | None = None) -> Path:
    """Write the bundle; return its folder (or zip). `run` runs pip (injected for tests)."""
    run = run or _run
    out = request.out
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty")
    wheels = out / "wheels"
    wheels.mkdir(parents=True)
    wheel = Path(shutil.copy2(request.wheel, wheels)) if request.wheel else build_wheel(wheels, run)
    for python in request.pythons:
        run(download_command(wheel, wheels, request.platform, python, request.pip_args))
    copied = _copy_packs(request.packs, out / "packs")
    _write_script(out, request.platform, ", ".join(request.pythons))
    _write_manifest(out, request, wheel, copied)
    if request.zip:
        archive = shutil.make_archive(str(out), "zip", out)
        shutil.rmtree(out)
        return Path(archive)
    return out


def source_root() -> Path | None:
    """The source checkout cpfmap runs from, if it does (pyproject.toml beside the package)."""
    root = resources.package_dir().parent
    pyproject = root / "pyproject.toml"
    return root if pyproject.is_file() and 'name = "cpfmap"' in pyproject.read_text(encoding="utf-8") else None


def build_wheel(dest: Path, run: Runner | None = None) -> Path:
    """cpfmap's wheel, built from a clean copy of the source checkout (a stale build/ folder
    in the checkout cannot leak into it), offline with this environment's setuptools."""
    root = source_root()
    if root is None:
        raise ConfigError("cpfmap is not running from a source checkout: give its wheel with --wheel FILE")
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / "cpfmap-src"
        for folder in ("cpfmap", *resources.TOP_LEVEL):  # the package and the folders the build maps into it
            shutil.copytree(root / folder, copy / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(root / name, copy / name)
        (run or _run)([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dest),
                       str(copy)])
    built = sorted(dest.glob(f"cpfmap-{__version__}-*.whl"))
    if not built:
        raise ConfigError(f"building cpfmap's wheel left no cpfmap-{__version__}-*.whl in {dest}")
    return built[-1]


def download_command(wheel: Path, dest: Path, platform: Platform, python: str, extra: Sequence[str]) -> list[str]:
    command = [sys.executable, "-m", "pip", "download", "--dest", str(dest), "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp"]
    for tag in platform.tags:
        command += ["--platform", tag]
    return command + list(extra) + [str(wheel)]


def _copy_packs(packs: Sequence[Pack], dest: Path) -> list[str]:
    copied = []
    for pack in packs:
        if pack.origin == "bundled":
            continue  # already inside cpfmap's wheel
        shutil.copytree(pack.folder, dest / pack.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        copied.append(pack.name)
    return copied


WINDOWS_SCRIPT = r"""@echo off
rem Installs cpfmap from this folder with no network: install.cmd [TARGET]   (default C:\cpfmap)
rem Uses %PYTHON% if set, else the py launcher (py -3). Needs Python {pythons} for Windows x64.
setlocal
set "HERE=%~dp0"
set "TARGET=%~1"
if "%TARGET%"=="" set "TARGET=C:\cpfmap"
set "PY=%PYTHON%"
if "%PY%"=="" set "PY=py -3"
%PY% -m venv "%TARGET%\venv" || exit /b 1
"%TARGET%\venv\Scripts\python.exe" -m pip install --no-index --find-links "%HERE%wheels" cpfmap || exit /b 1
if exist "%HERE%packs" xcopy /E /I /Y /Q "%HERE%packs" "%TARGET%\packs" >nul || exit /b 1
"%TARGET%\venv\Scripts\cpfmap.exe" --version || exit /b 1
echo RAS console command: %TARGET%\venv\Scripts\cpfmap.exe   arguments: serve proxmox-ve
if exist "%TARGET%\packs" echo Packs of this bundle: serve %TARGET%\packs\NAME, or set CPFMAP_PACKS=%TARGET%\packs
"""

POSIX_SCRIPT = """#!/bin/sh
# Installs cpfmap from this folder with no network: sh install.sh [TARGET]   (default ./cpfmap)
# Uses $PYTHON if set, else python3. Needs Python {pythons}.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TARGET=${{1:-cpfmap}}
"${{PYTHON:-python3}}" -m venv "$TARGET/venv"
"$TARGET/venv/bin/python" -m pip install --no-index --find-links "$HERE/wheels" cpfmap
if [ -d "$HERE/packs" ]; then mkdir -p "$TARGET/packs" && cp -R "$HERE/packs/." "$TARGET/packs/"; fi
"$TARGET/venv/bin/cpfmap" --version
echo "serve with: $TARGET/venv/bin/cpfmap serve proxmox-ve (bundle packs: CPFMAP_PACKS=$TARGET/packs)"
"""


def _write_script(out: Path, platform: Platform, pythons: str) -> None:
    if platform.windows:
        (out / "install.cmd").write_text(WINDOWS_SCRIPT.format(pythons=pythons).replace("\n", "\r\n"),
                                         encoding="utf-8", newline="")
    else:
        script = out / "install.sh"
        script.write_text(POSIX_SCRIPT.format(pythons=pythons), encoding="utf-8", newline="\n")
        script.chmod(0o755)


def _write_manifest(out: Path, request: BundleRequest, wheel: Path, packs: list[str]) -> None:
    manifest = {"cpfmap": __version__, "platform": request.platform.name, "platform_tags": list(request.platform.tags),
                "pythons": list(request.pythons), "cpfmap_wheel": wheel.name,
                "wheels": sorted(p.name for p in (out / "wheels").glob("*.whl")), "packs": packs,
                "install": "install.cmd" if request.platform.windows else "install.sh"}
    (out / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _run(command: list[str]) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ConfigError(f"{' '.join(command[2:4])} failed (exit {proc.returncode}): " + " | ".join(tail))
