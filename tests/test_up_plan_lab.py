"""`up --dry-run` lists the changes `up` then reports, on real lab hosts: the same lines, each
host's in the same order (hosts are handled concurrently, so only a host's own order is fixed).
The hosts are made first and left as a new machine is (engine installed, never started, no
swarm), so the dry run reads them and every step has work to do; then a worker is added and
the labels changed on the live swarm. One module-scoped lab `s23plan`, brought down whatever
fails.
"""
from __future__ import annotations

import contextlib
import os

import pytest

from provision.hosts.lab.lab import Lab
from tests.lab_cluster import LabCluster

pytestmark = pytest.mark.lab

LAB = "s23plan"
M1, W1, W2 = f"{LAB}-manager-1", f"{LAB}-worker-1", f"{LAB}-worker-2"
FILE = """\
name: s23plan
provider: lab
managers: 1
workers: {workers}
labels: {{all: {{zone: lab}}, workers: {{tier: {tier}}}}}
"""


def by_host(lines: list[str]) -> dict:
    out: dict = {}
    for line in lines:
        out.setdefault(line.split(": ", 1)[0], []).append(line)
    return out


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    c = LabCluster(tmp_path_factory.mktemp(LAB), LAB)
    try:
        Lab(LAB).up([M1, W1, W2])
        yield c
    finally:
        with contextlib.suppress(Exception):
            c.cli("down")
        Lab(LAB).down()


def engine_pids(c) -> dict:
    return {n: c.ssh(n, "cat /var/run/docker.pid 2>/dev/null || echo none").strip()
            for n in (M1, W1, W2)}


def plan_then_up(c) -> tuple[list, list]:
    before = engine_pids(c)
    planned = c.json("up", "--dry-run")
    assert planned["dry_run"] is True
    assert engine_pids(c) == before              # the dry run changed nothing
    done = c.json("up")
    assert "dry_run" not in done
    return planned["changes"], done["changes"]


def test_dry_run_on_new_machines_lists_what_up_then_does(c):
    c.write(FILE.format(workers=1, tier="app"))
    assert engine_pids(c) == {M1: "none", W1: "none", W2: "none"}
    planned, done = plan_then_up(c)
    assert not any("decided when up runs" in p or "cannot read" in p for p in planned), planned
    assert by_host(planned) == by_host(done), (planned, done)
    assert sorted(planned) == sorted(done)
    hosts = c.hosts()
    m1, w1 = hosts[M1].private_address, hosts[W1].private_address
    steps = by_host(done)
    assert steps[M1][1:] == [f"{M1}: daemon.json written", f"{M1}: engine started (init script)",
                             f"{M1}: swarm initialised (advertise {m1})",
                             f"{M1}: labels swarmsmith.cluster={LAB} zone=lab"]
    assert steps[W1][1:] == [f"{W1}: daemon.json written", f"{W1}: engine started (init script)",
                             f"{W1}: joined as worker (advertise {w1})",
                             f"{W1}: labels swarmsmith.cluster={LAB} tier=app zone=lab"]
    assert steps[M1][0].startswith(f"{M1}: host key SHA256:") and steps[M1][0].endswith(" pinned")
    assert done[-1] == "cluster record version 1 written to the swarm"
    assert W2 not in steps
    # after it, the dry run says so
    again = c.cli("up", "--dry-run", check=0)
    assert f"cluster {LAB}: nothing to do" in again.stdout, again.stdout


def test_dry_run_on_a_live_swarm_lists_the_join_and_label_changes_up_then_makes(c):
    c.write(FILE.format(workers=2, tier="web"))
    planned, done = plan_then_up(c)
    assert by_host(planned) == by_host(done), (planned, done)
    assert sorted(planned) == sorted(done)
    w2 = c.hosts()[W2].private_address
    steps = by_host(done)
    assert steps[W1] == [f"{W1}: labels tier=web"]
    assert steps[W2][1:] == [f"{W2}: daemon.json written", f"{W2}: engine started (init script)",
                             f"{W2}: joined as worker (advertise {w2})",
                             f"{W2}: labels swarmsmith.cluster={LAB} tier=web zone=lab"]
    assert M1 not in steps
    assert done[-1] == "cluster record version 2 written to the swarm"
    assert c.json("up", "--dry-run")["changes"] == []
    assert os.path.exists(os.path.join(c.dir, ".swarmsmith", LAB, "inventory.json"))
