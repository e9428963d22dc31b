from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from pve import ServedPve, cluster  # noqa: E402

CONNECTOR = ROOT / "connector.py"


@pytest.fixture
def pve():
    """A started fakepve with the standard cluster (see tests/pve.py)."""
    served = ServedPve()
    cluster(served.pve)
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture
def settings_file(tmp_path, pve):
    def write(**extra) -> Path:
        path = tmp_path / "settings.json"
        path.write_text(json.dumps(pve.settings(**extra)), encoding="utf-8")
        return path
    return write


def serve_session(mapping: str, lines: list, *extra: str, timeout: float = 60) -> tuple[list, str, int]:
    """Run `connector.py serve` as RAS does, feed lines, return (replies, stderr, exit code)."""
    data = b"".join(line if isinstance(line, bytes) else (json.dumps(line) + "\n").encode() for line in lines)
    proc = subprocess.run([sys.executable, str(CONNECTOR), "serve", mapping, *extra], input=data,
                          capture_output=True, timeout=timeout)
    replies = [json.loads(line, parse_constant=_not_json) for line in proc.stdout.decode().splitlines()]
    return replies, proc.stderr.decode("utf-8", "replace"), proc.returncode


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON: every stdout line must be strict JSON")
