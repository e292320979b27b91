"""examples/api_deploy.py on a real lab: it bootstraps a cluster and deploys through the library
API, reports the outcome of every service, and exits with the deploy's code when an update
fails (rolled back: 11)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.lab
EXAMPLE = os.path.join(REPO, "examples", "api_deploy.py")
NAME = "api1"


def example(folder, *args, timeout=600):
    return subprocess.run([sys.executable, EXAMPLE, "--dir", str(folder), "--name", NAME, *args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def summary(p) -> dict:
    out = {}
    for line in p.stdout.splitlines():
        out.update(json.loads(line))
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp(NAME)
    try:
        yield d
    finally:
        example(d, "--down")


def test_example_deploys_then_exits_with_the_rollback_code(folder):
    p = example(folder)
    assert p.returncode == 0, p.stderr
    s = summary(p)
    assert s["up"]["cluster"] == NAME and s["up"]["nodes"] == [f"{NAME}-manager-1"]
    assert s["deploy"]["outcomes"] == {"apiweb_web": "converged"}
    assert "create service apiweb_web" in s["deploy"]["applied"]
    assert s["deploy"]["exit_code"] == 0
    assert f"{NAME}-manager-1: " in p.stderr and "applied: create service apiweb_web" in p.stderr

    p = example(folder, "--release", "bad")
    assert p.returncode == 11, p.stderr + p.stdout
    s = summary(p)
    assert s["up"]["changes"] == 0                       # the cluster was already there
    assert s["deploy"]["outcomes"] == {"apiweb_web": "rolled_back"}
    assert "task exited with code 1" in s["deploy"]["reasons"]["apiweb_web"]
    assert "did not converge" in p.stderr

    p = example(folder, "--down")
    assert p.returncode == 0, p.stderr
    assert any(c.startswith("remove") or NAME in c for c in summary(p)["down"]["changes"])
