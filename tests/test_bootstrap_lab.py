"""`swarmsmith up/plan/down` on real lab hosts. swarmsmith runs as a
subprocess in a temporary folder, as a user runs it; every run's stdout and stderr is checked for
join tokens on the spot.

Clusters: bt1 (1 manager + 2 workers, module-scoped, the tests build on each other in file order),
bt2 (killed mid-way), bt3 (3 + 2), bt4 (1 node, advertise policies), bt6 (a `provider: static`
file pointing at bt1's hosts). Every cluster is brought down whatever fails. Needs root.
"""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import REPO
from tests.lab_cluster import TOKEN_MARK, Cluster, assert_no_token, cluster

pytestmark = pytest.mark.lab

BT1 = """\
name: bt1
provider: lab
managers: 1
workers: 2
labels: {all: {zone: lab}, workers: {tier: app}}
"""


class ProcessScan:
    """Reads every process's arguments on the machine (lab hosts share its PID namespace) in a
    loop while a run goes on; remembers any that carry a join token."""

    def __init__(self):
        self.seen_token: list[str] = []
        self.scans = 0
        self.dial_stdio = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        args = f.read().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if TOKEN_MARK in args:
                    self.seen_token.append(args.replace(TOKEN_MARK, "SWMTKN(masked)-")[:80])
                self.dial_stdio += "docker system dial-stdio" in args
            self.scans += 1
            time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def bt1(tmp_path_factory):
    with cluster(tmp_path_factory.mktemp("bt1"), BT1) as c:
        with ProcessScan() as c.scan:
            c.first = c.up()
        yield c


def test_cold_up_never_shows_a_join_token_in_process_arguments(bt1):
    assert bt1.scan.scans > 20 and bt1.scan.dial_stdio > 0    # it looked while joins ran
    assert bt1.scan.seen_token == []


def test_bt1_comes_up_with_roles_labels_private_addresses(bt1):
    report = bt1.first
    hosts = bt1.hosts()
    assert sorted(hosts) == ["bt1-manager-1", "bt1-worker-1", "bt1-worker-2"]
    want_roles = {"bt1-manager-1": "manager", "bt1-worker-1": "worker", "bt1-worker-2": "worker"}
    assert [(n["name"], n["role"]) for n in report["nodes"]] == list(want_roles.items())
    for n in report["nodes"]:
        assert n["advertise_address"] == hosts[n["name"]].private_address
        assert n["advertise_address"].startswith("198.19.") and len(n["node_id"]) == 25
    assert any("swarm initialised" in c for c in report["changes"])
    assert sum("joined as worker" in c for c in report["changes"]) == 2

    nodes = {n["id"]: n for n in bt1.nodes()}
    assert len(nodes) == 3
    for r in report["nodes"]:
        node = nodes[r["node_id"]]
        assert node["hostname"] == r["name"] and node["role"] == want_roles[r["name"]]
        assert node["state"] == "ready" and node["availability"] == "active"
        want = {"zone": "lab", "swarmsmith.cluster": "bt1"} | (
            {"tier": "app"} if r["role"] == "worker" else {})
        assert node["labels"] == want
        # the address the swarm uses for the node is the private one
        assert bt1.ssh(r["name"], "docker info -f '{{.Swarm.NodeAddr}}'").strip() == \
            hosts[r["name"]].private_address
    mgr = nodes[report["nodes"][0]["node_id"]]
    assert mgr["leader"] and mgr["manager_addr"] == hosts["bt1-manager-1"].private_address + ":2377"

    inv = bt1.inventory()
    assert inv["cluster_id"] == bt1.swarm_id()
    for r in report["nodes"]:
        rec = inv["hosts"][r["name"]]
        assert rec["node_id"] == r["node_id"] and rec["role"] == r["role"]
        assert rec["host_key"] == hosts[r["name"]].host_key


def test_second_up_changes_nothing(bt1):
    before = (bt1.node_view(), bt1.engine_starts(), bt1.swarm_id(), bt1.inventory())
    report = bt1.up()
    assert report["changes"] == []
    assert [n["node_id"] for n in report["nodes"]] == [n["node_id"] for n in bt1.first["nodes"]]
    after = (bt1.node_view(), bt1.engine_starts(), bt1.swarm_id(), bt1.inventory())
    assert after == before
    proc = bt1.cli("up")
    assert proc.returncode == 0 and "cluster bt1: no changes" in proc.stdout


def test_plan_and_dry_run_change_nothing(bt1):
    before = (bt1.node_view(), bt1.engine_starts(), bt1.inventory())
    for args in (["plan"], ["up", "--dry-run"]):
        proc = bt1.cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert "cluster bt1: nothing to do" in proc.stdout, proc.stdout
        proc = bt1.cli(*args, "--json")
        assert json.loads(proc.stdout)["changes"] == []
    # a file asking for more: the plan says so, nothing is made
    bt1.write(BT1.replace("workers: 2", "workers: 3"))
    try:
        for args in (["plan", "--json"], ["up", "--dry-run", "--json"]):
            proc = bt1.cli(*args)
            assert proc.returncode == 0, proc.stderr
            plan = json.loads(proc.stdout)["changes"]
            assert "host bt1-worker-3: create lab host" in plan
            assert "bt1-worker-3: joined as worker" in plan
            assert not any("swarm init" in p for p in plan)
    finally:
        bt1.write(BT1)
    assert sorted(bt1.hosts()) == ["bt1-manager-1", "bt1-worker-1", "bt1-worker-2"]
    assert (bt1.node_view(), bt1.engine_starts(), bt1.inventory()) == before


def other_key(tmp_path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True, stdin=subprocess.DEVNULL)
    return (tmp_path / "k.pub").read_text().split()[0:2]


def test_changed_host_key_refused_then_accepted(bt1, tmp_path):
    inv = bt1.inventory()
    real = inv["hosts"]["bt1-worker-1"]["host_key"]
    inv["hosts"]["bt1-worker-1"]["host_key"] = " ".join(other_key(tmp_path))
    with open(os.path.join(bt1.state_dir, "inventory.json"), "w") as f:
        json.dump(inv, f)
    before = (bt1.node_view(), bt1.engine_starts())

    proc = bt1.cli("up")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "bt1-worker-1: host key for 198.18." in proc.stderr and "changed" in proc.stderr
    assert "--accept-host-key bt1-worker-1" in proc.stderr
    assert "bt1-manager-1" not in proc.stderr and "bt1-worker-2" not in proc.stderr
    assert (bt1.node_view(), bt1.engine_starts()) == before
    assert bt1.inventory() == inv                    # the wrong pin is kept, nothing else moved

    report = bt1.up("--accept-host-key", "bt1-worker-1")
    assert len(report["changes"]) == 1 and report["changes"][0].startswith(
        "bt1-worker-1: host key SHA256:") and "replaced (accepted)" in report["changes"][0]
    assert bt1.inventory()["hosts"]["bt1-worker-1"]["host_key"] == real
    assert (bt1.node_view(), bt1.engine_starts()) == before
    assert bt1.up()["changes"] == []


def static_file(name: str, key: str, hosts: list[tuple[str, str, str]], timeout: int = 10) -> str:
    lines = [f"name: {name}", "provider: static", f"ssh: {{key: {key}, connect_timeout: {timeout}}}",
             "static:", "  hosts:"]
    lines += [f"    - {{name: {n}, address: {a}, role: {r}}}" for n, a, r in hosts]
    return "\n".join(lines) + "\n"


def test_unreachable_host_named_nothing_changed(bt1, tmp_path):
    hosts = bt1.hosts()
    w2 = hosts["bt1-worker-2"]
    ghost = w2.public_address.rsplit(".", 1)[0] + ".250"     # in the lab's subnet, no host
    c = Cluster(tmp_path, static_file("bt6", w2.key_path, [
        ("real", w2.public_address, "manager"), ("ghost", ghost, "worker")], timeout=3))
    before = (bt1.node_view(), bt1.engine_starts(), bt1.inventory())
    t0 = time.monotonic()
    proc = c.cli("up")
    took = time.monotonic() - t0
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"ghost: cannot reach {ghost}:22 over SSH within 3s" in proc.stderr
    assert "real:" not in proc.stderr
    assert took < 30
    assert (bt1.node_view(), bt1.engine_starts(), bt1.inventory()) == before
    inv = c.inventory()
    assert "cluster_id" not in inv and not any("node_id" in h for h in inv["hosts"].values())
    assert bt1.ssh("bt1-worker-2", "docker info -f '{{.Swarm.LocalNodeState}}'").strip() == "active"


def test_bad_key_named_nothing_changed(bt1, tmp_path):
    w2 = bt1.hosts()["bt1-worker-2"]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")],
                   check=True, stdin=subprocess.DEVNULL)
    c = Cluster(tmp_path / "c", static_file("bt6", str(tmp_path / "stranger"), [
        ("real", w2.public_address, "manager")]))
    before = (bt1.node_view(), bt1.engine_starts(), bt1.inventory())
    proc = c.cli("up")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "real: SSH authentication as root failed with key" in proc.stderr
    assert str(tmp_path / "stranger") in proc.stderr
    assert (bt1.node_view(), bt1.engine_starts(), bt1.inventory()) == before


def test_foreign_swarm_refused_then_forced(bt1):
    hosts = bt1.hosts()
    w2 = hosts["bt1-worker-2"]
    old_id = bt1.inventory()["hosts"]["bt1-worker-2"]["node_id"]
    bt1.ssh("bt1-worker-2", "docker swarm leave >/dev/null && docker swarm init "
                            f"--advertise-addr {w2.private_address} >/dev/null")
    foreign = bt1.ssh("bt1-worker-2", "docker info -f '{{.Swarm.Cluster.ID}}'").strip()
    assert foreign and foreign != bt1.swarm_id()
    # our manager sees the node that left as down
    deadline = time.monotonic() + 30
    while {n["id"]: n for n in bt1.nodes()}[old_id]["state"] != "down":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    before = (bt1.node_view(), bt1.engine_starts(), bt1.inventory())

    proc = bt1.cli("up")
    assert proc.returncode not in (0, 2), proc.stdout + proc.stderr
    assert "bt1-worker-2: this host is already in another swarm" in proc.stderr
    assert "--force" in proc.stderr
    assert (bt1.node_view(), bt1.engine_starts(), bt1.inventory()) == before
    assert bt1.ssh("bt1-worker-2", "docker info -f '{{.Swarm.Cluster.ID}}'").strip() == foreign

    debug = bt1.cli("up", "--force", "--json", env={"SWARMSMITH_DEBUG": "1"})
    assert debug.returncode == 0, debug.stderr
    assert "bt1-worker-2: join the swarm as worker (Engine API" in debug.stderr   # shown, no token
    report = json.loads(debug.stdout)
    assert "bt1-worker-2: left its previous swarm" in report["changes"]
    assert any(c.startswith("bt1-worker-2: removed stale node " + old_id[:12])
               for c in report["changes"])
    assert "bt1-worker-2: joined as worker (advertise %s)" % w2.private_address in report["changes"]
    assert not any(c.startswith(("bt1-manager-1", "bt1-worker-1")) for c in report["changes"])
    nodes = bt1.nodes()
    assert len(nodes) == 3 and all(n["state"] == "ready" for n in nodes)
    new = next(n for n in nodes if n["hostname"] == "bt1-worker-2")
    assert new["id"] != old_id and new["labels"] == {"zone": "lab", "tier": "app",
                                                     "swarmsmith.cluster": "bt1"}
    assert bt1.inventory()["hosts"]["bt1-worker-2"]["node_id"] == new["id"]
    assert bt1.up()["changes"] == []


def test_no_token_in_state_or_logs_and_inventory_private(bt1):
    debug = bt1.cli("up", env={"SWARMSMITH_DEBUG": "1"})
    assert debug.returncode == 0 and "[debug]" in debug.stderr
    bt1.state_files_have_no_token()
    inv = os.path.join(bt1.state_dir, "inventory.json")
    assert os.stat(inv).st_mode & 0o777 == 0o600
    assert os.stat(bt1.state_dir).st_mode & 0o777 == 0o700
    assert [f for f in os.listdir(bt1.state_dir) if ".tmp" in f] == []
    for h in bt1.hosts():    # nor in the hosts' logs (dockerd's, sshd's)
        assert bt1.ssh(h, f"grep -rl {TOKEN_MARK} /var/log /etc/docker || true").strip() == ""


# --- bt2: killed after init, before the joins ---------------------------------------------

def test_killed_after_init_converges(tmp_path):
    text = "name: bt2\nprovider: lab\nmanagers: 1\nworkers: 2\n"
    with cluster(tmp_path, text) as c:
        proc = subprocess.Popen([sys.executable, os.path.join(REPO, "cli.py"), "up"], cwd=c.dir,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL,
                                env={k: v for k, v in os.environ.items()
                                     if not k.startswith("SWARMSMITH_")})
        seen = []
        try:
            for line in proc.stderr:
                seen.append(line)
                if "swarm initialised" in line:
                    proc.send_signal(signal.SIGKILL)
                    break
        finally:
            proc.kill()
            out, err = proc.communicate(timeout=60)
        assert_no_token(out, err, *seen, what="killed up")
        assert any("swarm initialised" in l for l in seen), "".join(seen)
        assert proc.returncode == -signal.SIGKILL
        joined = [n for n in c.hosts() if c.ssh(
            n, "docker info -f '{{.Swarm.LocalNodeState}}'").strip() == "active"]
        assert joined == ["bt2-manager-1"], "killed too late: workers joined already"
        swarm = c.swarm_id()

        report = c.up(env={"SWARMSMITH_DEBUG": "1"})
        assert not any("swarm initialised" in x for x in report["changes"])
        assert sorted(x for x in report["changes"] if "joined" in x) == [
            f"bt2-worker-{i}: joined as worker (advertise {c.hosts()[f'bt2-worker-{i}'].private_address})"
            for i in (1, 2)]
        assert c.swarm_id() == swarm == c.inventory()["cluster_id"]
        nodes = c.nodes()
        assert sorted((n["hostname"], n["role"], n["state"]) for n in nodes) == [
            ("bt2-manager-1", "manager", "ready"), ("bt2-worker-1", "worker", "ready"),
            ("bt2-worker-2", "worker", "ready")]
        assert {n["node_id"] for n in report["nodes"]} == {n["id"] for n in nodes}
        assert "init_started_on" not in c.inventory()
        assert c.up()["changes"] == []
        c.state_files_have_no_token()


# --- bt3: 3 managers + 2 workers ----------------------------------------------------------

def test_three_managers_two_workers(tmp_path):
    text = "name: bt3\nprovider: lab\nmanagers: 3\nworkers: 2\n"
    with cluster(tmp_path, text) as c:
        report = c.up(env={"SWARMSMITH_DEBUG": "1"})
        hosts = c.hosts()
        assert sum("joined as manager" in x for x in report["changes"]) == 2
        assert sum("joined as worker" in x for x in report["changes"]) == 2
        for on in ("bt3-manager-1", "bt3-manager-3"):       # every manager sees the same
            nodes = c.nodes(on)
            managers = [n for n in nodes if n["role"] == "manager"]
            assert sorted(n["hostname"] for n in managers) == [f"bt3-manager-{i}" for i in (1, 2, 3)]
            assert all(n["reachability"] == "reachable" for n in managers)
            assert sum(n["leader"] for n in managers) == 1
            assert sorted(n["hostname"] for n in nodes if n["role"] == "worker") == [
                "bt3-worker-1", "bt3-worker-2"]
            for n in managers:
                assert n["manager_addr"] == hosts[n["hostname"]].private_address + ":2377"
        assert {n["node_id"] for n in report["nodes"]} == {n["id"] for n in c.nodes()}
        starts = c.engine_starts()
        assert c.up()["changes"] == []
        assert c.engine_starts() == starts
        c.state_files_have_no_token()


# --- bt4: advertise policies ----------------------------------------------------------------

def interface_of(c: Cluster, host: str, prefix: str) -> str:
    out = c.ssh(host, "ip -4 -o addr show")
    return next(l.split()[1] for l in out.splitlines() if l.split()[3].startswith(prefix))


@pytest.mark.parametrize("policy", ["public", "198.18.0.0/16", "IFACE"])
def test_advertise_policy_public_side(tmp_path, policy):
    text = "name: bt4\nprovider: lab\nmanagers: 1\nworkers: 0\nadvertise_address: {}\n"
    with cluster(tmp_path, text.format("private")) as c:
        if policy == "IFACE":
            # bring the host up first (private), then ask by interface name on a fresh swarm
            c.up()
            policy = interface_of(c, "bt4-manager-1", "198.18.")
            c.ssh("bt4-manager-1", "docker swarm leave --force >/dev/null")
            c.write(text.format(policy))
            report = c.up("--force")
        else:
            c.write(text.format(policy))
            report = c.up()
        public = c.hosts()["bt4-manager-1"].public_address
        assert public.startswith("198.18.")
        assert report["nodes"][0]["advertise_address"] == public
        assert c.ssh("bt4-manager-1", "docker info -f '{{.Swarm.NodeAddr}}'").strip() == public
        assert c.nodes()[0]["manager_addr"] == f"{public}:2377"
        assert c.up()["changes"] == []


def test_policy_change_reports_the_real_address(tmp_path):
    """A node left alone keeps its address: the report and inventory say which, stderr notes it."""
    text = "name: bt4\nprovider: lab\nmanagers: 1\nworkers: 1\nadvertise_address: {}\n"
    with cluster(tmp_path, text.format("private")) as c:
        first = c.up()
        c.write(text.format("public"))
        proc = c.cli("up", "--json")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["changes"] == []
        assert [n["advertise_address"] for n in report["nodes"]] == \
            [n["advertise_address"] for n in first["nodes"]]
        hosts = c.hosts()
        for n in report["nodes"]:
            assert n["advertise_address"] == hosts[n["name"]].private_address
            assert c.inventory()["hosts"][n["name"]]["advertise_address"] == \
                hosts[n["name"]].private_address
        proc = c.cli("up")
        assert "bt4-worker-1" in proc.stderr and "the policy now picks " + \
            hosts["bt4-worker-1"].public_address in proc.stderr
