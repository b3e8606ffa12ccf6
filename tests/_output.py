"""Reading what a file sink wrote, for tests that check entries by identity."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_ndjson(path: Path) -> list[dict[str, Any]]:
    """Every complete entry line of ``path`` (a line still being written is left out;
    any other line that is not JSON fails the test loudly)."""
    if not path.exists():
        return []
    with open(path, "rb") as out:
        return [json.loads(line) for line in out if line.endswith(b"\n")]
