"""cpfmap's version, and version strings as comparable tuples (a mapping's `metadata.engine`,
a pack's `engine` requirement). Imports nothing of cpfmap."""
from __future__ import annotations

import re

__version__ = "0.1.0"


def version_tuple(text: str) -> tuple:
    """"1.2.10" -> (1, 2, 10): the numbers in the text, in order."""
    return tuple(int(part) for part in re.findall(r"\d+", text))
