"""cli: argv -> one of the stages, as `run(argv, stdin, stdout, stderr) -> int`; `main()` only
wires the real streams. The top of the package: nothing below knows argv or stdout.

commands.py holds the commands that speak CPF, validate and author; packs.py the pack and
distribution commands; streams.py the injected streams.
"""
from __future__ import annotations

from cpfmap.cli.commands import main, parser, run

__all__ = ["main", "parser", "run"]
