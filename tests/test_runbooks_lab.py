"""Day-two commands on a real lab swarm: status additions, ps, logs (--follow), scale (exit codes
as deploy's, drift in the next plan), node drain/activate/pause/promote/demote/label/rm, tokens
rotate. One module-scoped cluster `run1` (1 manager + 2 workers, busybox image loaded); the tests
build on each other in file order. Every swarmsmith output is checked for join tokens.
"""
from __future__ import annotations

import json
import os
import subprocess
import threading
import time

import pytest

from tests.lab_cluster import LabCluster

pytestmark = pytest.mark.lab

NAME = "run1"
STACK = """\
services:
  web:
    image: swarmsmith/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; i=0; while true; do i=$$((i+1)); echo tick $$i $$(cut -d' ' -f1 /proc/uptime); sleep 0.2; done"]
    ports:
      - {target: 8080, published: 8080, protocol: tcp, mode: host}
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      update_config: {parallelism: 1, order: stop-first}
  nowhere:
    image: swarmsmith/busybox:1
    command: ["sleep", "3600"]
    deploy:
      replicas: 0
      placement:
        constraints: [node.labels.absent == yes]
"""


class C(LabCluster):
    timeout = 300

    def __init__(self, d):
        super().__init__(d, NAME)

    def tasks(self, service: str) -> list[dict]:
        return self.json("ps", service)

    def running(self, service: str) -> list[dict]:
        """Tasks swarm wants running that run (a scaled-down task may still be stopping)."""
        return [t for t in self.tasks(service)
                if t["state"] == "running" and t["desired"] == "running"]


@pytest.fixture(scope="module")
def c(tmp_path_factory):
    d = tmp_path_factory.mktemp(NAME)
    c = C(d)
    with open(c.file, "w") as f:
        f.write(f"name: {NAME}\nprovider: lab\nmanagers: 1\nworkers: 2\n")
    with open(os.path.join(c.dir, "stack.yml"), "w") as f:
        f.write(STACK)
    try:
        c.cli("up", check=0, timeout=600)
        c.cli("image-load", check=0)
        c.cli("deploy", "-c", "stack.yml", "--timeout", "120", "st", check=0)
        yield c
    finally:
        c.cli("down", timeout=600)


def test_status_shows_engines_ports_quorum_and_stack_filter(c):
    st = c.json("status")
    assert st["quorum"] == {"managers": 1, "reachable": 1, "majority": 1, "ok": True,
                            "state": "healthy", "survives": 0}
    assert all(n["engine"] for n in st["nodes"]), st["nodes"]
    web = {s["name"]: s for s in st["services"]}["st_web"]
    assert web["ports"] == ["8080:8080/tcp (host)"] and web["running"] == 2
    text = c.cli("status", "st", check=0).stdout
    assert "survives 0 more manager losses" in text and "st_web" in text
    assert "8080:8080/tcp (host)" in text


def test_ps_lists_tasks_with_their_nodes(c):
    rows = c.tasks("st")
    web = [r for r in rows if r["service"] == "st_web" and r["state"] == "running"]
    assert sorted(r["task"] for r in web) == ["st_web.1", "st_web.2"]
    assert all(r["node"].startswith("run1-") for r in web)
    bad = c.cli("ps", "nosuch")
    assert bad.returncode == 2 and "nosuch" in bad.stderr


def test_logs_prefix_task_and_node_and_follow_shows_new_lines(c):
    out = c.cli("logs", "--tail", "3", "st_web", check=0).stdout.splitlines()
    # the service's last 3 lines, both tasks' merged in time order (each says when it was made)
    assert len(out) == 3, out
    made = [float(line.split()[-1]) for line in out]
    assert made == sorted(made), out
    assert all(l.split(" | ")[0].split("@")[0] in ("st_web.1", "st_web.2") for l in out)
    assert all(l.split(" | ")[0].split("@")[1].startswith("run1-") for l in out)

    proc = subprocess.Popen(c.argv("logs", "--follow", "--tail", "0", "st_web"), cwd=c.dir, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, bufsize=1)
    lags: list[float] = []
    started = time.clock_gettime(time.CLOCK_BOOTTIME)

    def read():
        for line in proc.stdout:
            now = time.clock_gettime(time.CLOCK_BOOTTIME)
            made = float(line.rsplit(" ", 1)[1])       # the container's /proc/uptime
            if made >= started:
                lags.append(now - made)
            if len(lags) >= 20:
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(30)
    proc.terminate()
    proc.wait(10)
    assert len(lags) >= 20, (lags, proc.stderr.read())
    lags.sort()
    print(f"logs --follow lag: median {lags[len(lags) // 2]:.3f} s, max {lags[-1]:.3f} s")
    assert lags[len(lags) // 2] < 1.0, lags


def test_scale_watches_like_deploy_and_the_next_plan_shows_the_drift(c):
    r = c.cli("scale", "st_web=3", check=0)
    assert "st_web: replicas 2 -> 3" in r.stdout and "converged" in r.stdout
    running = c.running("st_web")
    assert len(running) == 3
    plan = c.cli("plan", "-c", "stack.yml", "st", check=0).stdout
    assert "scaled by hand to 3 replicas" in plan and "Replicas: 3 -> 2" in plan, plan
    again = c.cli("scale", "st_web=3", check=0)
    assert "already at 3" in again.stdout
    audit = [r for r in c.json("audit", "st") if r.get("command") == "scale"]
    assert audit and audit[-1]["replicas"] == {"st_web": 3} and audit[-1]["exit_code"] == 0
    bad = c.cli("scale", "st_web=three")
    assert bad.returncode == 2 and "SERVICE=REPLICAS" in bad.stderr
    c.cli("deploy", "-c", "stack.yml", "st", check=0)
    assert len(c.running("st_web")) == 2


def test_scale_exit_codes_match_deploy(c):
    # a service that cannot be placed: deploy and scale both fail it (10), or time out (12)
    failing = STACK.replace("replicas: 0", "replicas: 1")
    with open(os.path.join(c.dir, "failing.yml"), "w") as f:
        f.write(failing)
    dep = c.cli("deploy", "-c", "failing.yml", "--timeout", "3", "st")
    sc_ = c.cli("scale", "--timeout", "3", "st_nowhere=2")
    assert dep.returncode == sc_.returncode == 12, (dep.stdout, sc_.stdout)
    c.cli("deploy", "-c", "stack.yml", "st", check=0)
    dep = c.cli("deploy", "-c", "failing.yml", "--timeout", "120", "st")
    c.cli("scale", "--detach", "st_nowhere=0", check=0)
    sc_ = c.cli("scale", "--timeout", "120", "st_nowhere=1")
    assert dep.returncode == sc_.returncode == 10, (dep.stdout, sc_.stdout)
    assert "no suitable node" in sc_.stdout
    c.cli("deploy", "-c", "stack.yml", "st", check=0)


def test_drain_moves_tasks_elsewhere_and_activate_brings_the_node_back(c):
    web = c.running("st_web")
    node = next(t["node"] for t in web if t["node"] != "run1-manager-1")
    r = c.json("node", "drain", node, "--timeout", "120")
    assert r["exit_code"] == 0 and "st_web" in r["moved"], r
    now = c.running("st_web")
    assert len(now) == 2 and node not in {t["node"] for t in now}
    on_node = c.ssh(node, "docker ps -q --filter label=com.docker.swarm.service.name")
    assert on_node.strip() == ""
    again = c.cli("node", "drain", node, check=0)
    assert "already drained" in again.stdout
    act = c.json("node", "activate", node)
    assert act["changes"] == [f"{node}: availability drain -> active"]
    nodes = {n["hostname"]: n for n in c.json("node", "ls")["nodes"]}
    assert nodes[node]["availability"] == "active"


def test_drain_names_services_that_cannot_be_placed(c):
    # 3 replicas with a host-mode port on 3 nodes: draining one leaves a task nowhere to go
    c.cli("scale", "st_web=3", check=0)
    node = "run1-worker-2"
    r = c.cli("node", "drain", node, "--json", "--timeout", "120")
    assert r.returncode == 10, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert "st_web" in out["unplaced"] and "no suitable node" in out["unplaced"]["st_web"]
    c.cli("node", "activate", node, check=0)
    c.cli("deploy", "-c", "stack.yml", "st", check=0)


def test_demoting_the_last_manager_is_refused_and_promote_keeps_the_count_odd(c):
    r = c.cli("node", "demote", "run1-manager-1")
    assert r.returncode == 5 and "last manager" in r.stderr
    r = c.cli("node", "promote", "run1-worker-1")
    assert r.returncode == 5 and "even" in r.stderr
    roles = {n["hostname"]: n["role"] for n in c.json("node", "ls")["nodes"]}
    assert roles == {"run1-manager-1": "manager", "run1-worker-1": "worker",
                     "run1-worker-2": "worker"}


def test_node_label_adds_and_removes(c):
    r = c.json("node", "label", "run1-worker-1", "disk=ssd", "zone=a")
    assert r["changes"] == ["run1-worker-1: labels disk=ssd zone=a"]
    r = c.json("node", "label", "run1-worker-1", "zone-")
    assert r["changes"] == ["run1-worker-1: labels -zone"]
    labels = {n["hostname"]: n["labels"] for n in c.json("node", "ls")["nodes"]}
    assert labels["run1-worker-1"].get("disk") == "ssd" and "zone" not in labels["run1-worker-1"]
    assert c.cli("node", "label", "run1-worker-1", "oops").returncode == 2


def test_node_rm_then_rotated_worker_token_old_refused_new_joins(c):
    r = c.json("node", "rm", "run1-worker-2", "--timeout", "120")
    assert "run1-worker-2: removed from the swarm" in r["changes"], r
    assert "run1-worker-2" not in {n["hostname"] for n in c.json("node", "ls")["nodes"]}
    old = c.ssh("run1-manager-1", "docker swarm join-token -q worker").strip()
    addr = c.ssh("run1-manager-1", "docker info -f '{{.Swarm.NodeAddr}}'").strip()
    r = c.json("tokens", "rotate", "--worker")
    assert r["changes"] == ["worker join token rotated (the old one no longer joins)"]
    new = c.ssh("run1-manager-1", "docker swarm join-token -q worker").strip()
    assert new != old
    refused = c.ssh("run1-worker-2", f"docker swarm join --token {old} {addr}:2377 2>&1",
                    check=False)
    assert "This node joined" not in refused and "valid join token is necessary" in refused, refused
    c.ssh("run1-worker-2", "docker swarm leave --force >/dev/null 2>&1 || true")
    joined = c.ssh("run1-worker-2", f"docker swarm join --token {new} {addr}:2377 2>&1")
    assert "This node joined a swarm as a worker" in joined


def test_pause_keeps_tasks_and_ca_rotate_reaches_every_node(c):
    r = c.json("node", "pause", "run1-worker-1")
    assert r["changes"] == ["run1-worker-1: availability active -> pause"]
    c.cli("node", "activate", "run1-worker-1", check=0)
    root = "docker info -f '{{json .Swarm.Cluster.TLSInfo.TrustRoot}}'"
    before = json.loads(c.ssh("run1-manager-1", root))
    r = c.json("ca", "rotate", "--timeout", "180")
    assert r["exit_code"] == 0 and r["pending"] == [], r
    after = json.loads(c.ssh("run1-manager-1", root))
    assert after != before
    roots = c.ssh("run1-manager-1", "docker node inspect -f "
                  "'{{json .Description.TLSInfo.TrustRoot}}' $(docker node ls -q)")
    assert [json.loads(l) for l in roots.splitlines() if l.strip()] == [after] * 3


def test_autolock_locks_a_restarted_manager_and_unlock_opens_it(c):
    r = c.json("autolock", "on")
    assert r["changes"] == ["autolock on"]
    key = c.cli("unlock-key", check=0).stdout.strip()
    assert key.startswith("SWMKEY-")
    # a restart of the manager's engine: `up` starts it again and stops at the locked swarm
    c.ssh("run1-manager-1", "p=$(cat /var/run/docker.pid); kill $p; i=0; while kill -0 $p "
          "2>/dev/null; do i=$((i+1)); [ $i -gt 900 ] && exit 1; sleep 0.1; done")
    up = c.cli("up")
    assert up.returncode == 1 and "swarmsmith unlock-swarm" in up.stderr, up.stderr
    st = c.cli("status", "--json")
    assert st.returncode == 5 and "locked" in st.stdout
    wrong = subprocess.run(c.argv("unlock-swarm"), cwd=c.dir,
                           input="SWMKEY-1-wrong\n", capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and "not unlocked" in wrong.stdout
    ok = subprocess.run(c.argv("unlock-swarm"), cwd=c.dir,
                        input=key + "\n", capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "run1-manager-1: unlocked" in ok.stdout, ok.stdout + ok.stderr
    assert key not in ok.stdout + ok.stderr
    assert json.loads(c.cli("status", "--json").stdout)["quorum"]["ok"]
    assert c.json("autolock", "off")["changes"] == ["autolock off"]
