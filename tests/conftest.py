"""Shared test helpers. Keep this small and generic."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_collection_modifyitems(config, items):
    # The 100-node cluster takes every core for minutes: it runs only when asked for by name
    # (-m hundred), never beside the rest of the suite. The VM tier (marker vm) runs in the
    # normal run, alone on the machine (its module is MACHINE_WIDE)
    if "hundred" not in (config.getoption("-m") or ""):
        heavy = [i for i in items if "hundred" in i.keywords]
        if heavy:
            config.hook.pytest_deselected(items=heavy)
            items[:] = [i for i in items if "hundred" not in i.keywords]
    # Lab tests need root (namespaces, bridges, mounts). CI runs as root; this is the ONLY
    # reason a lab test may skip.
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="lab tests need root")
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(skip)


# the environment for a program in a terminal of its own (tmux): pytest-xdist's workers set
# COLUMNS and LINES to 80x24, which would override the terminal's real size
TERMINAL_ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `swarmsmith ARGS` from this checkout (text output captured)."""
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(autouse=True, scope="module")
def _one_run_per_lab_module(request):
    """Lab modules run side by side (the suite runs modules in parallel workers) but each lab
    module uses fixed lab names, so two runs of one module (two checkouts) take turns. A module
    that checks machine-wide state (every mount, link or firewall rule of the machine) sets
    MACHINE_WIDE = True and runs with no other lab module at the same time."""
    if not any("lab" in item.keywords for item in request.session.items
               if item.module is request.module) or os.geteuid() != 0:
        yield
        return
    import fcntl
    name = request.module.__name__.rsplit(".", 1)[-1]
    exclusive = getattr(request.module, "MACHINE_WIDE", False)
    with open("/run/lock/swarmsmith-test-machine.lock", "a") as machine, \
            open(f"/run/lock/swarmsmith-test-{name}.lock", "a") as own:
        fcntl.flock(own, fcntl.LOCK_EX)
        fcntl.flock(machine, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
