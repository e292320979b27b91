"""Quorum runbooks on a real 3-manager lab swarm `run3`: a stopped manager (degraded quorum,
demote refused, `up` brings it back), backup from a non-leader manager, two managers killed and
`recover --force-new-cluster`, and a restore into a fresh one-manager swarm (every host's swarm
lost, the hosts kept) that `up` grows back.
The tests build on each other in file order; every swarmsmith output is checked for join tokens.
"""
from __future__ import annotations

import json
import os
import stat
import tarfile

import pytest

from tests.lab_cluster import LabCluster, write_stateful_stack

pytestmark = pytest.mark.lab

NAME = "run3"
CLUSTER = f"name: {NAME}\nprovider: lab\nmanagers: {{n}}\nworkers: 0\n"

class C(LabCluster):
    def __init__(self, d):
        super().__init__(d, NAME)
        self.managers(3)

    def managers(self, n: int) -> None:
        self.write(CLUSTER.format(n=n))

    def wait_quorum(self, reachable: int, tries: int = 60) -> dict:
        import time
        for _ in range(tries):
            st = json.loads(self.cli("status", "--json").stdout)
            if st["quorum"]["reachable"] == reachable:
                return st
            time.sleep(1)
        raise AssertionError(st["quorum"])


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    d = tmp_path_factory.mktemp(NAME)
    c = C(d)
    write_stateful_stack(c.dir)
    try:
        c.cli("up", check=0)
        c.cli("image-load", check=0)
        c.cli("deploy", "-c", "stack.yml", "--timeout", "120", "st", check=0)
        yield c
    finally:
        c.cli("down")


def test_one_manager_stopped_degrades_quorum_and_demote_is_refused(c):
    st = c.json("status")
    assert st["quorum"]["state"] == "healthy" and st["quorum"]["survives"] == 1
    c.stop_engine(f"{NAME}-manager-3")
    st = c.wait_quorum(2)
    assert st["quorum"] == {"managers": 3, "reachable": 2, "majority": 2, "ok": True,
                            "state": "degraded", "survives": 0}
    text = c.cli("status", check=5).stdout
    assert "quorum degraded (2/3 managers reachable, survives 0 more manager losses)" in text
    r = c.cli("node", "demote", f"{NAME}-manager-2")
    assert r.returncode == 5 and "refusing to demote" in r.stderr, r.stderr
    assert {n["hostname"]: n["role"] for n in c.json("node", "ls")["nodes"]}[
        f"{NAME}-manager-2"] == "manager"
    # runbook "a manager lost": up starts its engine again
    c.cli("up", check=0)
    st = c.wait_quorum(3)
    assert st["quorum"]["survives"] == 1


def test_backup_from_a_non_leader_manager(c):
    out = os.path.join(c.dir, "b.tar")
    r = c.json("backup", "--out", os.path.join(c.dir, "other.tar"))
    leader = next(n["hostname"] for n in c.json("node", "ls")["nodes"] if n["manager"] == "leader")
    assert r["host"] != leader
    # the manager whose address the fresh one-manager swarm below gets back (restore's rule)
    r = c.json("backup", "--out", out, "--node", f"{NAME}-manager-1")
    assert r["host"] == f"{NAME}-manager-1"
    print(f"backup: engine stopped {r['engine_stopped_seconds']:.2f} s, {r['seconds']:.2f} s in all")
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    with tarfile.open(out) as tar:
        assert sorted(tar.getnames()) == ["manifest.json", "swarm.tar.gz"]
        m = json.loads(tar.extractfile("manifest.json").read())
    assert m["cluster"] == NAME and m["node"] == r["host"] and m["managers"] == 3
    # the stack's own; swarmsmith keeps its cluster record and audit history as configs too
    assert m["services"] == ["st_app"] and len(m["secrets"]) == 1
    assert len([x for x in m["configs"] if x.startswith("st_settings-")]) == 1
    assert m["engine_version"]
    with open(out, "rb") as f:
        assert b"s3cr3t-value" not in f.read()        # compressed raft store, not plain files
    st = c.wait_quorum(3)
    assert st["quorum"]["state"] == "healthy"
    bad = os.path.join(c.dir, "bad.tar")
    with open(bad, "wb") as f:
        f.write(b"not a tar")
    r = c.cli("restore", bad, "--to", f"{NAME}-manager-1")
    assert r.returncode == 2 and "bad.tar" in r.stderr


def test_two_managers_killed_recover_force_new_cluster(c):
    for n in (2, 3):
        c.stop_engine(f"{NAME}-manager-{n}")
    import time
    for _ in range(60):         # raft notices the lost majority after its election timeout
        st = c.cli("status", "--json")
        if st.stdout and not json.loads(st.stdout)["quorum"]["ok"]:
            break
        time.sleep(1)
    assert st.returncode == 5 and json.loads(st.stdout)["quorum"]["ok"] is False, st.stdout
    r = c.cli("recover")
    assert r.returncode == 1 and "--force-new-cluster" in r.stdout
    import time as _t
    t0 = _t.monotonic()
    r = c.cli("recover", "--force-new-cluster", check=0)
    print(f"recover --force-new-cluster: {_t.monotonic() - t0:.1f} s")
    # recover returns once the lost managers' tasks are rescheduled, and says so
    assert "services run all their replicas again" in r.stdout, r.stdout + r.stderr
    app = {s["name"]: s for s in json.loads(c.cli("status", "--json").stdout)["services"]}["st_app"]
    assert app["running"] == app["desired"] == 2
    st = c.wait_quorum(3)
    assert st["quorum"] == {"managers": 3, "reachable": 3, "majority": 2, "ok": True,
                            "state": "healthy", "survives": 1}


def test_restore_into_a_fresh_one_manager_swarm_then_up_grows_it(c):
    # the swarm is lost on every host; the hosts (and their addresses) stay, as Docker's
    # restore procedure needs: raft keeps the backed-up manager's address
    for n in (1, 2, 3):
        c.ssh(f"{NAME}-manager-{n}", "docker swarm leave --force >/dev/null")
    c.managers(1)
    c.cli("up", check=0)
    assert c.json("status")["services"] == []
    # `up` formed a new swarm: the backup is of the one before, which restore names before
    # it replaces anything (exit 2), and restores with --force
    r = c.cli("restore", os.path.join(c.dir, "b.tar"), "--to", f"{NAME}-manager-1")
    assert r.returncode == 2 and "runs swarm" in r.stderr and "formed anew" in r.stderr, r.stderr
    r = c.json("restore", os.path.join(c.dir, "b.tar"), "--to", f"{NAME}-manager-1", "--force")
    assert r["services"] == ["st_app"] and len(r["secrets"]) == 1
    assert len([x for x in r["configs"] if x.startswith("st_")]) == 1
    secrets = c.ssh(f"{NAME}-manager-1", "docker secret ls --format '{{.Name}}'").split()
    assert secrets == r["secrets"]
    nodes = c.json("node", "ls")["nodes"]
    assert [(n["hostname"], n["role"], n["state"]) for n in nodes] == \
        [(f"{NAME}-manager-1", "manager", "ready")]
    own = c.ssh(f"{NAME}-manager-1", "docker info -f '{{.Swarm.NodeAddr}}'").strip()
    assert nodes[0]["addr"] == own
    c.managers(3)
    c.cli("up", check=0)
    st = c.wait_quorum(3)
    assert st["quorum"]["managers"] == 3 and st["quorum"]["state"] == "healthy"
    import time
    for _ in range(90):     # the restored service's tasks start again on the new nodes
        app = {s["name"]: s for s in json.loads(c.cli("status", "--json").stdout)["services"]}
        if app["st_app"]["running"] == 2:
            break
        time.sleep(1)
    assert app["st_app"]["running"] == app["st_app"]["desired"] == 2, app
