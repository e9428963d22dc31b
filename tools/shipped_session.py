"""The session file a pack ships beside its cassette, from what `connector.py record --session`
wrote: each CPF request with the live reply it got (`recorded`, which serve ignores, so the
file stays plain request input and dry-run compares each replayed reply with it), with the
runner's final disconnect left out (a replay can go on from the session) and the settings
shown as placeholders."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable


def write(raw: Path, out: Path, shown: Callable[[dict], dict]) -> None:
    """`shown` turns a connect request's settings into the ones the pack shows."""
    lines = [json.loads(line) for line in raw.read_text(encoding="utf-8").splitlines() if line.strip()]
    kept = [line for line in lines if line.get("method") != "provider/disconnect"]
    for line in kept:
        if line.get("method") == "provider/connect":
            line["params"]["settings"] = shown(line["params"]["settings"])
    out.write_text("".join(json.dumps(line) + "\n" for line in kept), encoding="utf-8", newline="\n")
    raw.unlink()
