#!/usr/bin/env python3
"""The file RAS launches: `python connector.py serve <mapping>`. Everything else is in cpfmap/."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpfmap.cli.commands import main  # noqa: E402

if __name__ == "__main__":
    main()
