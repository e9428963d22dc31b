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


def record_workflows(pack: str, settings: dict, folder: Path, steps: list, shown: dict[str, str],
                     secrets: dict[str, str]) -> None:
    """Record each (name, workflows, options) of `steps` with a fresh `connector.py record`
    process driven by the conformance runner (the backend carries its state from one to the
    next) into folder/NAME.yaml and NAME.jsonl; every key of `shown` (a loopback URL or address)
    is replaced by its value in both, and the settings in `secrets` by placeholders."""
    import sys
    import tempfile

    from cpfmap.conformance import runner
    from cpfmap.conformance.ras import Options
    root = Path(__file__).resolve().parent.parent
    folder.mkdir(parents=True, exist_ok=True)
    for name, workflows, extra in steps:
        cassette = folder / f"{name}.yaml"
        session = Path(tempfile.gettempdir()) / f"cpfmap-{pack}-{name}.jsonl"  # what record wrote
        argv = [sys.executable, str(root / "connector.py"), "record", pack, "--cassette", str(cassette),
                "--session", str(session), "--log-level", "WARNING"]
        extra = {k: v() if callable(v) else v for k, v in extra.items()}
        checks = runner.run(argv, Options(settings=settings, time_scale=0.05, **extra), ["connect"] + workflows,
                            keep=True)  # the next workflow builds on it
        failed = [c for c in checks if not c.ok]
        if failed:
            raise SystemExit(f"{name}: workflow failed: {failed[0].name}: {failed[0].detail}")
        for written in (cassette, session):
            text = written.read_text(encoding="utf-8")
            for loopback, public in shown.items():
                text = text.replace(loopback, public)
            written.write_text(text, encoding="utf-8", newline="\n")
        write(session, folder / f"{name}.jsonl", lambda values: {**values, **{k: v for k, v in secrets.items()
                                                                              if k in values}})
        print(f"recorded {cassette.relative_to(root)}")
