"""The code version: a digest of the curation library's source, so logic changes name new releases."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from curation import __version__


@cache
def code_version() -> str:
    """``<package version>+<first 12 hex of sha256 over curation/*.py and expectations/*.json>``."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    files = sorted(root.glob("*.py")) + sorted((root.parent / "expectations").glob("*.json"))
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return f"{__version__}+{digest.hexdigest()[:12]}"
