"""`up` deploys the cluster file's `stacks:` after the swarm step, idempotently."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.lab
DEMO = os.path.join(REPO, "examples", "demo")
BASE = "name: us1\nprovider: lab\nmanagers: 1\nworkers: 1\nlabels: {workers: {tier: app}}\n"
STACKS = "stacks:\n  - {name: web, compose: stack.yml}\n"


def sw(cwd, *args, timeout=300):
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    d = tmp_path_factory.mktemp("us1")
    for f in ("stack.yml", "index.html", ".env"):
        shutil.copy(os.path.join(DEMO, f), d / f)
    (d / "swarmsmith.yml").write_text(BASE)
    try:
        r = sw(d, "up")
        assert r.returncode == 0, r.stderr
        assert sw(d, "image-load").returncode == 0
        yield d
    finally:
        sw(d, "down")


def test_up_deploys_listed_stacks_then_changes_nothing(cluster):
    (cluster / "swarmsmith.yml").write_text(BASE + STACKS)
    first = sw(cluster, "up", "--json")
    assert first.returncode == 0, first.stderr
    changes = json.loads(first.stdout)["changes"]
    assert "stack web: create service web_web" in changes
    assert "stack web: create service web_worker" in changes
    st = json.loads(sw(cluster, "status", "--json").stdout)
    web = {s["name"]: s for s in st["services"]}
    assert web["web_web"]["running"] == web["web_web"]["desired"] == 2
    second = sw(cluster, "up", "--json")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["changes"] == []
    assert "SWMTKN-" not in first.stdout + first.stderr + second.stdout + second.stderr


def test_up_with_a_bad_stack_file_exits_2_before_touching_the_cluster(cluster):
    (cluster / "bad.yml").write_text("services:\n  x:\n    image: swarmsmith/busybox:1\n"
                                     "    deploy: {replicas: three}\n")
    (cluster / "swarmsmith.yml").write_text(BASE + "stacks:\n  - {name: bad, compose: bad.yml}\n")
    before = json.loads(sw(cluster, "status", "--json").stdout)["services"]
    r = sw(cluster, "up")
    assert r.returncode == 2
    assert "bad.yml" in r.stderr and "services.x.deploy.replicas" in r.stderr
    after = json.loads(sw(cluster, "status", "--json").stdout)["services"]
    assert [s["name"] for s in after] == [s["name"] for s in before]
    # checked before any host is contacted: not even the progress of the host steps shows
    assert "engine" not in r.stderr and "ready" not in r.stderr
