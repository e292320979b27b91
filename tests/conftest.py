"""Shared test helpers. Keep this small and generic."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config, items):
    # Lab tests need root (namespaces, bridges, mounts). CI runs as root; this is the ONLY
    # reason a lab test may skip.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="lab tests need root")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `swarmsmith ARGS` from this checkout (text output captured)."""
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
