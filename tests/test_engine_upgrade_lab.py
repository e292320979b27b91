"""`swarmsmith engine upgrade` on real fresh-image lab hosts: a 3 manager + 2 worker swarm whose
engines `up` installed from Debian's docker.io, a stack with 3 replicas running, and the pinned
version re-installed node by node (Debian 12 offers one docker.io version, so a re-install of
the pinned version stands in for an upgrade: the same drain, install, restart, Ready, activate).

A watcher samples the swarm through the managers every half second while the upgrade runs:
quorum must never be lost and the service never below replicas - 1. Cluster fru. Needs root.
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from tests.lab_ssh import ssh_exec
from tests.lab_cluster import cluster

pytestmark = pytest.mark.lab

BASE = """\
name: fru
managers: 3
workers: 2
lab: {image: debian-12}
engine: {install: distro}
"""
STACK = """\
services:
  app:
    image: swarmsmith/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; while sleep 1; do :; done"]
    deploy:
      replicas: 3
      endpoint_mode: dnsrr
      update_config: {parallelism: 1, order: stop-first}
"""
REPLICAS = 3
MANAGERS = ["fru-manager-1", "fru-manager-2", "fru-manager-3"]
WORKERS = ["fru-worker-1", "fru-worker-2"]


@pytest.fixture(scope="module")
def fru(tmp_path_factory):
    with cluster(tmp_path_factory.mktemp("fru"), BASE) as c:
        c.up()
        load = c.cli("image-load")
        assert load.returncode == 0, load.stderr
        with open(f"{c.dir}/stack.yml", "w") as f:
            f.write(STACK)
        c.write(BASE + "stacks:\n  - {name: web, compose: stack.yml}\n")
        c.up()
        c.version = c.ssh(MANAGERS[0], "docker version -f '{{.Server.Version}}'").strip()
        yield c


class Watcher(threading.Thread):
    """Samples (quorum answered, running replicas of web_app) through whichever manager
    answers. "No leader" from a manager whose engine runs is a lost quorum; a manager whose
    engine is restarting is skipped."""

    def __init__(self, c):
        super().__init__(daemon=True)
        self.c, self.stop, self.samples, self.errors = c, threading.Event(), [], []

    def sample(self):
        hosts = self.c.hosts()
        lost = False
        for m in MANAGERS:
            rc, out, err = ssh_exec(hosts[m], "docker node ls -q >/dev/null && docker service ps "
                                    "web_app -f desired-state=running --format '{{.CurrentState}}'",
                                    timeout=20)
            if rc == 0:
                return True, sum(1 for line in out.splitlines() if line.startswith("Running"))
            if "leader" in err or "quorum" in err:
                lost = True
            else:
                self.errors.append(f"{m}: {err.strip()[-120:]}")
        return (not lost), None

    def run(self):
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), *self.sample()))
            self.stop.wait(0.5)


def test_dry_run_shows_the_order_and_changes_nothing(fru):
    before = fru.engine_starts()
    proc = fru.cli("engine", "upgrade", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["dry_run"] and plan["version"] == "newest available"
    flat = [n for batch in plan["order"] for n in batch]
    assert sorted(flat) == sorted(MANAGERS + WORKERS)
    # workers first, then managers one at a time with the leader last
    assert set(flat[:2]) == set(WORKERS) and all(len(b) == 1 for b in plan["order"][-3:])
    leader = [n["hostname"] for n in fru.nodes() if n["leader"]]
    assert flat[-1] == leader[0]
    text = fru.cli("engine", "upgrade", "--dry-run")
    assert text.returncode == 0 and "in this order" in text.stdout
    assert fru.engine_starts() == before


def test_upgrade_pinned_version_keeps_quorum_and_replicas(fru):
    before = fru.engine_starts()
    leader = [n["hostname"] for n in fru.nodes() if n["leader"]][0]
    w = Watcher(fru)
    w.start()
    try:
        time.sleep(1)
        proc = fru.cli("engine", "upgrade", "--version", fru.version, "--json", timeout=1500)
    finally:
        w.stop.set()
        w.join(30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = json.loads(proc.stdout)
    # workers (one per batch here: each runs a task of web_app), then managers, leader last
    assert res["done"][:2] == WORKERS and sorted(res["done"][2:]) == MANAGERS
    assert res["done"][-1] == leader
    assert sorted(res["changes"]) == sorted(f"{n}: engine {fru.version} re-installed"
                                            for n in MANAGERS + WORKERS)
    # every engine was restarted, and runs the pinned version
    after = fru.engine_starts()
    assert all(after[n] != before[n] for n in before), (before, after)
    for n in MANAGERS + WORKERS:
        assert fru.ssh(n, "docker version -f '{{.Server.Version}}'").strip() == fru.version
    # progress said where each node was
    for word in ("drained", "re-installing the engine", "availability active again",
                 "quorum whole again"):
        assert word in proc.stderr, word
    # the watcher saw the whole run: quorum never lost, never below replicas - 1
    assert len(w.samples) >= 20, w.samples
    assert all(ok for _, ok, _ in w.samples), [s for s in w.samples if not s[1]]
    counts = [n for _, _, n in w.samples if n is not None]
    assert counts and min(counts) >= REPLICAS - 1, counts
    assert counts[-1] == REPLICAS
    # afterwards: all Ready and active, quorum whole, full strength
    nodes = fru.nodes()
    assert all(n["state"] == "ready" and n["availability"] == "active" for n in nodes)
    assert sum(1 for n in nodes if n["role"] == "manager" and
               (n["leader"] or n["reachability"] == "reachable")) == 3
