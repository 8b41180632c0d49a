"""External tools some tests need (SpamAssassin, Chromium, axe-core): `.ci/run` installs them.

Locally a missing tool skips its tests with the install command; under CI=true it fails them,
so a broken install can never pass as "skipped".
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
AXE = ROOT / "node_modules" / "axe-core" / "axe.min.js"
#: Flags for headless Chromium as root on a machine with no network but loopback.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require(path: str | Path, install: str) -> Path:
    """The tool at `path` (or on PATH); skip locally, fail under CI, when it is missing."""
    found = Path(path) if Path(path).is_absolute() else None
    if found is None:
        which = shutil.which(str(path))
        found = Path(which) if which else None
    if found is not None and found.exists():
        return found
    message = f"{path} is missing: {install}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)
