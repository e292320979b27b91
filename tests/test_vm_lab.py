"""VM lab hosts (`lab: {vm: true}`): QEMU guests with their own Debian 12 kernel and systemd.
One module-scoped 1 manager + 2 worker cluster `vmt`, the tests build on each other in file
order: `up` installs the engine where the base disk has none (worker-2) and forms the swarm;
`engine upgrade` restarts every engine through systemd (before any service runs: drains are
instant then, and moving tasks costs minutes under TCG); a stack with an ingress-published
port and the default endpoint mode (VIP) answers through the routing mesh on every node, also
the manager that runs no task, and its rolling update under a request loop through the mesh
fails no request; a rebooted worker comes back Ready with systemd starting its engine
(`status` 5 while it is down, 0 after, `up` with no changes); so does a manager of three
once both workers are promoted (`status` 5 with quorum kept at 2/3 and writes still taken while
it is down, 0 after; demoted again, `up` with no changes); `down` leaves no QEMU, tap or disk
behind. The cluster is brought down whatever fails. Needs root; minutes under TCG.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from provision.base.errors import UnreachableError
from provision.hosts.lab.lab import Lab
from tests.conftest import REPO
from tests.lab_ssh import ssh_exec
from tests.lab_cluster import cluster

pytestmark = [pytest.mark.lab, pytest.mark.vm]
# three emulated CPUs fill this kind of 2-core machine: other lab modules wait rather than
# have their engines and SSH time out beside it (tests/conftest.py)
MACHINE_WIDE = True

NAME = "vmt"
MANAGER, WORKER1, WORKER2 = f"{NAME}-manager-1", f"{NAME}-worker-1", f"{NAME}-worker-2"
BASE = f"""\
name: {NAME}
managers: 1
workers: 2
# worker-2 boots a fresh Debian: `up` installs its engine (through the lab's apt proxy);
# the others boot the base disk with the engine on it (an install costs minutes under TCG)
lab: {{vm: true, engine_preinstalled: [{MANAGER}, {WORKER1}]}}
engine: {{install: distro}}
"""
# busybox httpd answering {"app-version": ...}; on SIGTERM it keeps serving 3 s while swarm
# takes the task out of the load balancer on every node, then stops
STACK = r"""
services:
  web:
    image: swarmsmith/busybox:1
    command: ["sh", "-c", "mkdir -p /www && printf '{\"app-version\": \"%s\", \"task\": \"%s\"}' \"$$VERSION\" \"$$(hostname)\" > /www/index.html && httpd -f -p 8080 -h /www & pid=$$!; trap 'sleep 3; kill $$pid' TERM; wait $$pid"]
    environment:
      VERSION: "${VERSION:-1}"
    ports:
      - "8080:8080"
    stop_grace_period: 10s
    deploy:
      replicas: 2
      placement:
        constraints: [node.role == worker]
      update_config: {parallelism: 1, order: start-first, failure_action: rollback, monitor: 5s}
"""
SLOW = 1500         # seconds for a command that installs or waits on emulated guests


@pytest.fixture(scope="module")
def vmt(tmp_path_factory):
    with cluster(tmp_path_factory.mktemp(NAME), BASE) as c:
        t0 = time.monotonic()
        proc = c.cli("up", "--json", timeout=SLOW)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        c.first_up = json.loads(proc.stdout)
        c.first_up_seconds = time.monotonic() - t0
        with open(f"{c.dir}/stack.yml", "w") as f:
            f.write(STACK)
        yield c


def sh(c, host: str, command: str, timeout: float = 120) -> str:
    rc, out, err = ssh_exec(c.hosts()[host], command, timeout=timeout)
    assert rc == 0, f"{host}: {command!r} -> {rc}\n{out}{err}"
    return out


def get(url: str) -> dict:
    import urllib.request
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_up_boots_vms_installs_the_missing_engine_under_systemd_and_forms_the_swarm(vmt):
    changes = vmt.first_up["changes"]
    installed = [line for line in changes if "engine installed" in line]
    assert installed == [f"{WORKER2}: engine installed (the distribution's docker.io)"], changes
    assert any(f"host {WORKER2}: created (VM, no engine)" in line for line in changes), changes
    ls = json.loads(vmt.cli("lab", "ls", "--name", NAME, "--json").stdout)
    assert {r["name"]: r["kind"] for r in ls} == {
        h: ls[0]["kind"] for h in (MANAGER, WORKER1, WORKER2)}
    assert ls[0]["kind"] in ("vm-kvm", "vm-tcg")
    machine_kernel = os.uname().release
    for host in (MANAGER, WORKER1, WORKER2):
        out = sh(vmt, host, "uname -r; cat /proc/1/comm; systemctl is-enabled docker; "
                            "systemctl is-active docker; cloud-init status | tr -d ' '")
        kernel, init, enabled, active, cloud = out.split()
        assert kernel != machine_kernel and kernel.endswith("-cloud-amd64"), out
        assert (init, enabled, active, cloud) == ("systemd", "enabled", "active",
                                                  "status:done"), (host, out)
    nodes = vmt.nodes()
    assert sorted((n["hostname"], n["role"], n["state"]) for n in nodes) == [
        (MANAGER, "manager", "ready"), (WORKER1, "worker", "ready"), (WORKER2, "worker", "ready")]
    print(f"VM cluster 1+2 up in {vmt.first_up_seconds:.0f}s ({ls[0]['kind']})")
    # the next `up` changing nothing is checked after the reboot, where it says more


def dockerd_pids(c) -> dict[str, str]:
    """dockerd's pid on each host, checked to be the one systemd started for docker.service."""
    out = {}
    for host in (MANAGER, WORKER1, WORKER2):
        main, pid = sh(c, host, "systemctl show -p MainPID --value docker; "
                                "pidof dockerd").split()
        assert main == pid, (host, main, pid)
        out[host] = pid
    return out


def test_engine_upgrade_restarts_every_engine_through_systemd(vmt):
    before = dockerd_pids(vmt)
    # both workers at once: no service runs yet, so draining them leaves nothing unplaced
    p = vmt.cli("engine", "upgrade", "--json", "--batch", "2", timeout=SLOW)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    # the hosts whose engine came preinstalled never had `up` point apt at the lab's proxy
    # (no route out otherwise): the upgrade's install does, where it is missing
    changes = json.loads(p.stdout)["changes"]
    proxied = sorted(c.split(":")[0] for c in changes if ": apt proxy set to http://" in c)
    assert proxied == [MANAGER, WORKER1], changes
    after = dockerd_pids(vmt)
    assert all(after[h] != before[h] for h in before), (before, after)
    st = vmt.cli("status", "--json")
    assert st.returncode == 0, st.stdout


def test_routing_mesh_vip_on_every_node_and_rolling_update_without_a_failed_request(vmt):
    p = vmt.cli("image-load", timeout=SLOW)
    assert p.returncode == 0, p.stderr
    p = vmt.cli("deploy", "-c", "stack.yml", "--timeout", "600", "web", timeout=SLOW)
    assert p.returncode == 0, p.stdout + p.stderr
    spec = json.loads(sh(vmt, MANAGER, "docker service inspect web_web"))[0]
    assert spec["Spec"]["EndpointSpec"].get("Mode", "vip") == "vip"
    assert spec["Endpoint"]["Ports"][0]["PublishMode"] == "ingress"
    assert spec["Endpoint"]["VirtualIPs"], spec["Endpoint"]
    hosts = vmt.hosts()
    # the manager runs no task: its answers come through the routing mesh from the workers
    assert "web_web" not in sh(vmt, MANAGER, "docker ps --format '{{.Names}}'")
    tasks = set()
    for name in (MANAGER, WORKER1, WORKER2):
        for _ in range(4):
            body = get(f"http://{hosts[name].public_address}:8080/")
            assert body["app-version"] == "1", body
            tasks.add(body["task"])
    assert len(tasks) == 2, tasks        # the VIP balances over both tasks

    url = f"http://{hosts[MANAGER].public_address}:8080/"
    loop = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "request_loop.py"), url, "--json",
         "--max-seconds", "900", "--", sys.executable, os.path.join(REPO, "cli.py"),
         "deploy", "-c", "stack.yml", "--timeout", "600", "web"],
        cwd=vmt.dir, env={**os.environ, "VERSION": "2"}, capture_output=True, text=True,
        timeout=SLOW)
    report = json.loads(loop.stdout.strip().splitlines()[-1])
    print(f"rolling update through the routing mesh: {report}")
    assert report["command_exit"] == 0, loop.stderr[-3000:]
    assert report["failed"] == 0, report
    assert set(report["versions"]) == {"1", "2"} and report["requests"] > 20, report
    assert get(url)["app-version"] == "2"


def wait_status(c, want: int, seconds: float) -> float:
    t0 = time.monotonic()
    while True:
        rc = c.cli("status", "--json", timeout=300).returncode
        if rc == want:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < seconds, f"status never exited {want} (last {rc})"
        time.sleep(3)


def test_a_rebooted_worker_comes_back_ready_with_systemd_starting_its_engine(vmt):
    try:
        ssh_exec(vmt.hosts()[WORKER1], "reboot", timeout=60)
    except UnreachableError:
        pass                                # the connection went down with it
    down_after = wait_status(vmt, 5, 120)
    back_after = wait_status(vmt, 0, 900)
    print(f"worker reboot: status 5 after {down_after:.0f}s, 0 again {back_after:.0f}s later")
    out = sh(vmt, WORKER1, "cut -d. -f1 /proc/uptime; systemctl is-active docker; "
                           "docker info -f '{{.Swarm.LocalNodeState}}'")
    uptime, active, swarm = out.split()
    assert int(uptime) < 900 + 120 and active == "active" and swarm == "active", out
    assert {n["hostname"]: n["state"] for n in vmt.nodes()}[WORKER1] == "ready"
    dockerd_pids(vmt)
    again = vmt.cli("up", "--json", timeout=SLOW)
    assert again.returncode == 0 and json.loads(again.stdout)["changes"] == [], again.stdout


def wait_quorum(c, reachable: int, seconds: float) -> tuple[int, dict]:
    """`status --json` once `reachable` of the managers are: its exit code and quorum."""
    t0 = time.monotonic()
    while True:
        p = c.cli("status", "--json", timeout=300)
        q = json.loads(p.stdout)["quorum"] if p.stdout.strip() else {}
        if q.get("reachable") == reachable:
            return p.returncode, q
        assert time.monotonic() - t0 < seconds, f"never {reachable} managers reachable: {q}"
        time.sleep(3)


def test_a_rebooted_manager_of_three_comes_back_reachable_with_quorum_kept(vmt):
    # the stack's tasks only fit on workers: with none left they would stay pending
    p = vmt.cli("scale", "web_web=0", "--timeout", "300", timeout=SLOW)
    assert p.returncode == 0, p.stdout + p.stderr
    # a second manager alone would make an even count: refused without --force
    p = vmt.cli("node", "promote", WORKER1)
    assert p.returncode == 5 and "even" in p.stderr + p.stdout, p.stdout + p.stderr
    for args in (["--force", WORKER1], [WORKER2]):
        p = vmt.cli("node", "promote", *args)
        assert p.returncode == 0, p.stdout + p.stderr
    rc, q = wait_quorum(vmt, 3, 120)
    assert (q["managers"], q["state"]) == (3, "healthy"), q
    assert [n["hostname"] for n in vmt.nodes() if n["leader"]] == [MANAGER]
    try:
        ssh_exec(vmt.hosts()[WORKER2], "reboot", timeout=60)
    except UnreachableError:
        pass
    t0 = time.monotonic()
    rc, q = wait_quorum(vmt, 2, 180)
    down_after = time.monotonic() - t0
    assert rc == 5 and (q["managers"], q["ok"], q["state"]) == (3, True, "degraded"), (rc, q)
    # quorum kept: the swarm still takes writes through the other two managers
    for label in ("rebooting=" + WORKER2, "rebooting-"):
        p = vmt.cli("node", "label", WORKER1, label)
        assert p.returncode == 0, p.stdout + p.stderr
    assert "rebooting" not in {n["hostname"]: n["labels"] for n in vmt.nodes()}[WORKER1]
    back_after = wait_status(vmt, 0, 900)
    print(f"manager reboot (3 managers): status 5 with 2/3 reachable after {down_after:.0f}s, "
          f"0 again {back_after:.0f}s later")
    out = sh(vmt, WORKER2, "cut -d. -f1 /proc/uptime; systemctl is-active docker; "
                           "docker info -f '{{.Swarm.ControlAvailable}}'")
    uptime, active, control = out.split()
    assert int(uptime) < 900 + 180 and active == "active" and control == "true", out
    assert {n["hostname"]: (n["role"], n["state"], n["reachability"]) for n in vmt.nodes()}[
        WORKER2] == ("manager", "ready", "reachable")
    dockerd_pids(vmt)
    # back as the cluster file has it: one manager, so `up` has nothing to do
    for host in (WORKER2, WORKER1):
        p = vmt.cli("node", "demote", host)
        assert p.returncode == 0, p.stdout + p.stderr
    assert sorted((n["hostname"], n["role"]) for n in vmt.nodes()) == [
        (MANAGER, "manager"), (WORKER1, "worker"), (WORKER2, "worker")]
    again = vmt.cli("up", "--json", timeout=SLOW)
    assert again.returncode == 0 and json.loads(again.stdout)["changes"] == [], again.stdout


def test_down_leaves_no_vm_tap_disk_or_lab_folder(vmt):
    lab = Lab(NAME)
    layouts = lab.host_layouts()
    taps = [t for h in layouts for t in (h.veth_public, h.veth_private)]
    lab_dir = lab.layout.dir
    vmt.down()
    time.sleep(1)
    qemus = subprocess.run(["pgrep", "-f", f"swarmsmith-{NAME}-"], capture_output=True,
                           text=True).stdout.split()
    alive = []
    for pid in qemus:                    # a zombie is gone once PID 1 reaps it
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.append(pid)
        except OSError:
            pass
    assert alive == []
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not [t for t in taps if f" {t}:" in links or f" {t}@" in links]
    assert not os.path.exists(lab_dir)
    assert not Lab(NAME).exists
