"""Redeploys from anywhere, on real lab hosts: folders holding only a static cluster file and a
compose file (no `.swarmsmith/`) deploy, redeploy, read the audit history and run `up` against a
swarm that `up` made from another folder; host keys pinned in the cluster file; a lost inventory
is adopted; `up --force` on a swarm with services needs --destroy-services.

Lab st5 (2 hosts), cluster st5 (`provider: static` pointing at the lab hosts). Needs root.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from provision.hosts.lab.lab import Lab
from tests.conftest import REPO
from tests.lab_cluster import swarmsmith as sw

pytestmark = pytest.mark.lab
LAB = "st5"
STACK = """services:
  app:
    image: swarmsmith/busybox:1
    command: ["sh", "-c", "sleep 100000"]
    environment: {V: "%s"}
    deploy: {replicas: 2}
"""


def cluster_file(hosts, pins: dict | None = None, name: str = LAB, extra: str = "") -> str:
    lines = [f"name: {name}", "provider: static",
             f"ssh: {{key: {hosts[0].key_path}, connect_timeout: 10{extra}}}",
             "engine: {install: never, daemon: {storage-driver: overlay2}}", "static:", "  hosts:"]
    for h, role in zip(hosts, ("manager", "worker")):
        pin = f', host_key: "{pins[h.name]}"' if pins and h.name in pins else ""
        lines.append(f"    - {{name: {h.name}, address: {h.public_address}, "
                     f"private_address: {h.private_address}, role: {role}{pin}}}")
    return "\n".join(lines) + "\n"


class Env:
    def __init__(self, root, hosts):
        self.root, self.hosts = root, hosts
        self.pins = {h.name: h.host_key for h in hosts}

    def folder(self, name: str, text: str, stack: str | None = "1"):
        d = self.root / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        (d / "swarmsmith.yml").write_text(text)
        if stack is not None:
            (d / "stack.yml").write_text(STACK % stack)
        return d

    def services(self) -> dict:
        p = sw(self.root / "a", "status", "--json")
        assert p.returncode == 0, p.stderr
        return {s["name"]: s for s in json.loads(p.stdout)["services"]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("st5")
    lab = Lab(LAB)
    try:
        hosts, _ = lab.up([f"{LAB}-1", f"{LAB}-2"])
        e = Env(root, hosts)
        a = e.folder("a", cluster_file(hosts), stack=None)      # the bootstrapping machine
        p = sw(a, "up")
        assert p.returncode == 0, p.stdout + p.stderr
        assert sw(a, "image-load").returncode == 0
        yield e
    finally:
        lab.down()


def test_fresh_folder_with_pinned_keys_deploys_and_redeploys(env):
    b = env.folder("b", cluster_file(env.hosts, env.pins))
    p = sw(b, "deploy", "-c", "stack.yml", "web")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "converged" in p.stdout
    assert env.services()["web_app"]["running"] == 2
    p = sw(b, "redeploy", "-c", "stack.yml", "web")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "stack web: no changes" in p.stdout
    # every node reached through the swarm's record (keys trusted after the manager's)
    p = sw(b, "image-load")
    assert p.returncode == 0 and "no changes" in p.stdout, p.stdout + p.stderr
    assert sorted(os.listdir(b)) == ["stack.yml", "swarmsmith.yml"]     # nothing written locally


def test_a_runner_without_pins_is_refused_naming_the_flag(env):
    before = env.services()
    d = env.folder("nopin", cluster_file(env.hosts), stack="2")
    p = sw(d, "deploy", "-c", "stack.yml", "web")
    assert p.returncode == 3, p.stdout + p.stderr
    assert "no pinned host key" in p.stderr and "--accept-new-host-keys" in p.stderr
    assert env.services() == before
    p = sw(d, "plan", "-c", "stack.yml", "--accept-new-host-keys", "web")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "web_app" in p.stdout


def test_a_changed_key_is_refused_either_way(env, tmp_path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k")],
                   check=True, stdin=subprocess.DEVNULL)
    other = " ".join(open(tmp_path / "k.pub").read().split()[:2])
    wrong = {**env.pins, env.hosts[0].name: other}
    d = env.folder("wrong", cluster_file(env.hosts, wrong), stack="3")
    for extra in ((), ("--accept-new-host-keys",)):
        p = sw(d, "deploy", "-c", "stack.yml", *extra, "web")
        assert p.returncode == 3, p.stdout + p.stderr
        assert f"{env.hosts[0].name}: host key for {env.hosts[0].public_address} changed" in p.stderr


def test_hostkeys_output_pins_a_runner_through_known_hosts(env):
    p = sw(env.root / "a", "hostkeys")
    assert p.returncode == 0, p.stderr
    k = env.folder("known", cluster_file(env.hosts, extra=", known_hosts: known_hosts"), None)
    (k / "known_hosts").write_text(p.stdout)
    p = sw(k, "status")
    assert p.returncode == 0, p.stdout + p.stderr
    assert "web_app" in p.stdout


def test_up_from_a_second_fresh_folder_changes_nothing(env):
    c = env.folder("c", cluster_file(env.hosts, env.pins), stack=None)
    p = sw(c, "up", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["changes"] == []
    p = sw(env.root / "a", "up", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout)["changes"] == []


def test_deploys_from_two_folders_share_one_audit_history(env):
    b = env.folder("b", cluster_file(env.hosts, env.pins), stack="4")
    c = env.folder("c", cluster_file(env.hosts, env.pins), stack="5")
    assert sw(b, "deploy", "-c", "stack.yml", "web").returncode == 0
    assert sw(c, "deploy", "-c", "stack.yml", "web").returncode == 0
    third = env.folder("third", cluster_file(env.hosts, env.pins), stack=None)
    p = sw(third, "audit", "--json", "web")
    assert p.returncode == 0, p.stderr
    last = [r for r in json.loads(p.stdout) if r.get("phase") == "end"][-2:]
    assert [r["changes"] for r in last] == [["update service web_app"]] * 2
    assert last[0]["by"] != last[1]["by"] and all(r["exit_code"] == 0 for r in last)
    assert all(r["images"]["web_app"].startswith("swarmsmith/busybox:1") for r in last)
    table = sw(third, "audit", "web").stdout
    assert table.count(" deploy    end ") >= 3    # the first test's deploy, and these two
    # a rollback from a third folder goes to the same history
    p = sw(third, "rollback", "web")
    assert p.returncode == 0, p.stdout + p.stderr
    p = sw(b, "audit", "--json", "--since", "10m", "web")
    last = json.loads(p.stdout)[-1]
    assert last["command"] == "rollback" and last["requested"] == ["web_app"]
    assert last["exit_code"] == 0
    assert not (third / ".swarmsmith").exists()


def test_a_lost_inventory_is_adopted(env):
    a = env.root / "a"
    inv = json.loads((a / ".swarmsmith" / LAB / "inventory.json").read_text())
    shutil.rmtree(a / ".swarmsmith")
    p = sw(a, "up", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout)
    assert out["changes"] == []
    again = json.loads((a / ".swarmsmith" / LAB / "inventory.json").read_text())
    assert again["cluster_id"] == inv["cluster_id"]
    assert {n: h["node_id"] for n, h in again["hosts"].items()} == \
        {n: h["node_id"] for n, h in inv["hosts"].items()}


def test_force_on_a_swarm_with_services_needs_destroy_services(env):
    before = env.services()
    o = env.folder("other", cluster_file(env.hosts, env.pins, name="st5-other"), stack=None)
    p = sw(o, "up")
    assert p.returncode == 1, p.stdout + p.stderr
    assert "swarmsmith cluster st5)" in p.stderr and "--force" in p.stderr
    p = sw(o, "up", "--force")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "web_app" in p.stderr and "--destroy-services" in p.stderr
    assert env.services() == before


def test_two_ups_at_once_write_one_record_version(env):
    """Both runs read version N and both see the record must change (a new label): the swarm
    refuses the second create of N+1, that run re-reads, finds it says the same, writes nothing."""
    def versions():
        return sorted(int(name.rsplit("-", 1)[1]) for name in _config_names(env)
                      if name.startswith(f"swarmsmith-cluster-{LAB}-"))

    before = versions()
    text = cluster_file(env.hosts, env.pins) + "labels: {all: {zone: race}}\n"
    one, two = env.folder("race1", text, None), env.folder("race2", text, None)
    procs = [subprocess.Popen([sys.executable, os.path.join(REPO, "cli.py"), "up", "--json"],
                              cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL) for d in (one, two)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    after = versions()
    assert after[-1] == before[-1] + 1, (before, after, outs)
    written = [c for out, _ in outs for c in json.loads(out)["changes"] if "cluster record" in c]
    assert written == [f"cluster record version {before[-1] + 1} written to the swarm"]


def _config_names(env) -> list[str]:
    from provision.engine_api.access import ClusterAccess
    acc = ClusterAccess(str(env.root / "b" / "swarmsmith.yml"))   # pinned, no local state
    return [c["Spec"]["Name"] for c in acc.client().configs()]
