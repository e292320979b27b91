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


@pytest.fixture(autouse=True, scope="module")
def _one_run_per_lab_module(request):
    """Lab test modules use fixed lab names: two test runs on one machine (two checkouts) take
    turns per module instead of tearing down each other's labs."""
    if not any("lab" in item.keywords for item in request.session.items
               if item.module is request.module) or os.geteuid() != 0:
        yield
        return
    import fcntl
    path = f"/run/lock/swarmsmith-test-{request.module.__name__.rsplit('.', 1)[-1]}.lock"
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
