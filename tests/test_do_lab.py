"""`swarmsmith up` with provider digitalocean, end to end: the emulator in this process, the
droplets real lab hosts (tests/do_lab.py), swarmsmith itself a subprocess as a user runs it.

One module-scoped cluster `dotest` on lab `doemu-<pid>`; the tests run in file order and build on
each other (a failed up, up, idempotent up, scale out, prune, token hygiene, down). The teardown
ALWAYS runs `swarmsmith down`, stops the emulator and removes the lab, whatever failed. Injected API
faults are covered at unit level (tests/test_do_provider_units.py) and not repeated here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from provision.hosts.digitalocean import md5_fingerprint
from provision.hosts.lab.lab import Lab, list_labs
from tests.conftest import REPO
from inventory import clusterfile
from provision.base.errors import InputError
from tests.do_emulator import DOEmulator
from tests.do_emulator.testing import write_public_key
from tests.do_lab import LabDroplets

lab = pytest.mark.lab      # the cluster-file tests at the end need neither root nor the lab

TOKEN = "dop_v1_labtest_5ecret_do_not_print_0b1e55ed"
CLUSTER = "dotest"
# one lab per run (two runs of this module at once must not share one); `doemu-<pid>`
LAB = f"doemu-{os.getpid()}"
TAG = f"swarmsmith:{CLUSTER}"
NAME = f"swarmsmith-{CLUSTER}"      # the firewall, VPC and key swarmsmith creates

CLUSTER_FILE = """\
name: dotest
provider: digitalocean
managers: 1
workers: {workers}
ssh: {{connect_timeout: 30}}        # no ssh.key: the private half of digitalocean.ssh_key
engine:
  daemon: {{storage-driver: overlay2}}
digitalocean:
  region: fra1
  size: s-1vcpu-1gb
  image: ubuntu-24-04-x64
  ssh_key: id_ed25519.pub
  poll_interval: 0.5
  wait_timeout: 120
  ssh_timeout: 60
  published_ports: [80]
"""


class Env:
    def __init__(self, tmp):
        self.dir = str(tmp)
        self.cluster = os.path.join(self.dir, "swarmsmith.yml")
        self.state_dir = os.path.join(self.dir, ".swarmsmith", CLUSTER)
        key = os.path.join(self.dir, "id_ed25519")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dotest@laptop",
                        "-f", key], check=True, stdin=subprocess.DEVNULL)
        with open(key + ".pub") as f:
            self.public_key = f.read().strip()
        self.labs = LabDroplets(LAB, self.public_key)
        # fast: on the real clock a list lag would only add minutes; lag, limits and lost
        # answers are covered against the simulated clock in test_do_provider_units.py
        self.emu = DOEmulator(TOKEN, fast=True, activation_delay=1.0,
                              host_factory=self.labs.factory,
                              host_destroyer=self.labs.destroyer).start()
        self.outputs: list[str] = []        # every stdout and stderr, for the token check
        self.write(workers=2)

    def write(self, workers: int) -> None:
        with open(self.cluster, "w") as f:
            f.write(CLUSTER_FILE.format(workers=workers))

    def cli(self, *args: str, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
        environ = {k: v for k, v in os.environ.items()
                   if not k.startswith(("DIGITALOCEAN_", "SWARMSMITH_"))}
        environ.update({"DIGITALOCEAN_END_POINT": self.emu.url, "DIGITALOCEAN_TOKEN": TOKEN,
                        **(env or {})})
        proc = subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args],
                              cwd=self.dir, env=environ, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        self.outputs += [proc.stdout, proc.stderr]
        return proc

    def up_json(self, *extra: str, **kw) -> dict:
        proc = self.cli("up", self.cluster, "--json", *extra, **kw)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def status(self) -> dict:
        proc = self.cli("status", self.cluster, "--json")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)

    def droplets(self) -> dict[str, dict]:
        return {d["name"]: d for d in self.emu.droplets(TAG)}

    def inventory(self) -> dict:
        with open(os.path.join(self.state_dir, "inventory.json")) as f:
            return json.load(f)

    def ours(self) -> dict[str, list]:
        """What the emulator holds that swarmsmith made for this cluster."""
        fp = md5_fingerprint(self.public_key)
        acct = self.emu.model.account
        with self.emu.model.lock:
            return {"droplets": sorted(d.name for d in acct.droplets.values()),
                    "firewalls": [f["name"] for f in acct.firewalls.values() if f["name"] == NAME],
                    "vpcs": [v["name"] for v in acct.vpcs.values() if v["name"] == NAME],
                    "keys": [k["name"] for k in acct.keys.values() if k["fingerprint"] == fp],
                    "tags": sorted(t for t in acct.tags if t.startswith(TAG))}


def _private(droplet: dict) -> str:
    return next(n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "private")


def _public(droplet: dict) -> str:
    return next(n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "public")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    for name in list_labs():            # left by an interrupted run of this module: ours only
        pid = name.removeprefix("doemu-")
        if name.startswith("doemu-") and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            Lab(name).down()
    e = Env(tmp_path_factory.mktemp("dolab"))
    try:
        yield e
    finally:
        try:
            e.cli("down", e.cluster, timeout=300)
        finally:
            try:
                e.emu.stop()
            finally:
                e.labs.close()
    assert not Lab(LAB).exists


def assert_swarm(env: Env, names: list[str]) -> None:
    """Every named droplet is a Ready node advertising its private address."""
    droplets = env.droplets()
    deadline = time.monotonic() + 30       # a node that joined a moment ago turns Ready soon
    while True:
        st = env.status()
        nodes = {n["hostname"]: n for n in st["nodes"]}
        if all(n["state"] == "ready" for n in nodes.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert st["quorum"]["ok"], st
    assert sorted(nodes) == sorted(names), st["nodes"]
    for name in names:
        assert nodes[name]["state"] == "ready", nodes[name]
        assert nodes[name]["availability"] == "active"
        assert nodes[name]["role"] == ("manager" if "-manager-" in name else "worker")
        # a worker's Addr is the address the manager sees it connect from: its private one
        if nodes[name]["role"] == "worker":
            assert nodes[name]["addr"] == _private(droplets[name]), nodes[name]
    assert nodes[f"{CLUSTER}-manager-1"]["manager"] == "leader"


# --- the tests (in order) -------------------------------------------------------------------

@lab
def test_a_failed_up_still_records_what_it_created(env):
    # the droplet create is refused after the SSH key and the VPC exist
    env.emu.inject(422, 1, method="POST", path="/v2/droplets")
    proc = env.cli("up", env.cluster)
    assert proc.returncode == 1, proc.stderr
    assert "create droplets" in proc.stderr
    ps = env.inventory()["provider_state"]
    assert ps["ssh_key"]["created"] and ps["vpc"]["created"]    # so that down removes them
    assert env.labs.made == [] and env.droplets() == {}


@lab
def test_up_makes_a_swarm_on_the_emulators_droplets(env):
    env.emu.reset_counts()
    result = env.up_json()
    names = [f"{CLUSTER}-manager-1", f"{CLUSTER}-worker-1", f"{CLUSTER}-worker-2"]
    droplets = env.droplets()
    assert sorted(droplets) == names
    # each droplet is a lab host, made once (the emulator makes them in any order)
    assert sorted(env.labs.made) == names and env.labs.hosts() == names

    # one create request for all three, then tagged list polls; never one GET per droplet
    assert env.emu.count("POST", "/v2/droplets") == 1
    assert env.emu.list_polls(TAG) >= 2
    assert env.emu.count("GET", "/v2/droplets/{id}") == 0
    assert env.emu.errors == []

    # advertise addresses are the droplets' private addresses (networks.v4, type private)
    nodes = {n["name"]: n for n in result["nodes"]}
    assert sorted(nodes) == names
    for name in names:
        assert nodes[name]["advertise_address"] == _private(droplets[name])
        assert nodes[name]["node_id"]
    changes = result["changes"]
    for name in names:
        assert any(c.startswith(f"droplet {name}: created") for c in changes), changes
    assert f"{CLUSTER}-manager-1: swarm initialised (advertise " \
           f"{_private(droplets[CLUSTER + '-manager-1'])})" in changes
    assert_swarm(env, names)

    # the inventory records the droplets' addresses and what swarmsmith created (ids only)
    inv = env.inventory()
    assert {n: (h["public_address"], h["private_address"]) for n, h in inv["hosts"].items()} == \
        {n: (_public(d), _private(d)) for n, d in droplets.items()}
    ps = inv["provider_state"]
    assert ps["ssh_key"]["created"] and ps["vpc"]["created"] and ps["firewall"]["created"]
    ours = env.ours()
    assert ours["firewalls"] == [NAME] and ours["vpcs"] == [NAME] and len(ours["keys"]) == 1

    # the firewall: swarm ports only between the cluster's droplets, SSH and port 80 from anywhere
    fw = next(f for f in env.emu.model.account.firewalls.values() if f["name"] == NAME)
    rules = {(r["protocol"], r["ports"]): r["sources"] for r in fw["inbound_rules"]}
    for proto, port in (("tcp", "2377"), ("tcp", "7946"), ("udp", "7946"), ("udp", "4789")):
        assert rules[(proto, port)]["tags"] == [TAG] and not rules[(proto, port)].get("addresses")
    assert rules[("tcp", "22")]["addresses"] == ["0.0.0.0/0", "::/0"]
    assert rules[("tcp", "80")]["addresses"] == ["0.0.0.0/0", "::/0"]
    assert fw["tags"] == [TAG]


@lab
def test_second_up_changes_nothing(env):
    env.emu.reset_counts()
    result = env.up_json()
    assert result["changes"] == []
    assert env.emu.count("POST", "/v2/droplets") == 0
    assert not [k for k, n in env.emu.counts.items() if k[0] in ("POST", "PUT", "DELETE") and n]
    assert len(env.labs.made) == 3


@lab
def test_plan_after_up_is_empty(env):
    proc = env.cli("plan", env.cluster, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["changes"] == []


@lab
def test_scale_workers_two_to_four(env):
    env.write(workers=4)
    before = set(env.droplets())
    env.emu.reset_counts()
    result = env.up_json()
    after = env.droplets()
    new = sorted(set(after) - before)
    assert new == [f"{CLUSTER}-worker-3", f"{CLUSTER}-worker-4"]
    assert env.emu.count("POST", "/v2/droplets") == 1          # both in one request
    assert sorted(env.labs.made[3:]) == new                     # exactly two new lab hosts
    created = [c for c in result["changes"] if c.startswith("droplet ")]
    assert sorted(created) == [f"droplet {n}: created (worker, s-1vcpu-1gb, fra1)" for n in new]
    for n in new:
        assert f"{n}: joined as worker (advertise {_private(after[n])})" in result["changes"]
    # the three droplets that were there are left alone
    assert not [c for c in result["changes"] if c.split(":")[0] in before], result["changes"]
    assert_swarm(env, sorted(after))


@lab
def test_droplets_no_longer_asked_for_are_kept_unless_prune(env):
    env.write(workers=3)
    gone = f"{CLUSTER}-worker-4"
    result = env.up_json()
    assert [c for c in result["changes"] if c.startswith(f"droplet {gone}")] == [
        f"droplet {gone} (id {env.droplets()[gone]['id']}): not in the cluster file; kept "
        "(--prune removes it)"]
    assert gone in env.droplets() and gone in env.labs.hosts()
    env.emu.reset_counts()
    result = env.up_json("--prune")
    assert any(c.startswith(f"droplet {gone} (id ") and "destroyed" in c for c in result["changes"])
    assert env.emu.count("DELETE", "/v2/droplets/{id}") == 1
    assert gone not in env.droplets() and gone not in env.labs.hosts()
    assert gone not in env.inventory()["hosts"]
    assert sorted(env.droplets()) == [f"{CLUSTER}-manager-1"] + [
        f"{CLUSTER}-worker-{i}" for i in (1, 2, 3)]
    # the destroyed droplet's node left the swarm too (no Down node behind)
    assert any(c.startswith(f"{gone}: node ") and "removed from the swarm" in c
               for c in result["changes"])
    assert gone not in [n["hostname"] for n in env.status()["nodes"]]



@lab
def test_token_never_in_output_or_state(env):
    # a run with debug output, and a run the API refuses (the wrong token is a secret too)
    proc = env.cli("up", env.cluster, env={"SWARMSMITH_DEBUG": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "[debug]" in proc.stderr
    wrong = "dop_v1_wrong_token_also_secret_7e57"
    proc = env.cli("plan", env.cluster, env={"DIGITALOCEAN_TOKEN": wrong, "SWARMSMITH_DEBUG": "1"})
    assert proc.returncode != 0 and ("401" in proc.stderr or "authenticate" in proc.stderr), \
        proc.stderr
    proc = env.cli("up", env.cluster, env={"DIGITALOCEAN_TOKEN": "", "SWARMSMITH_DEBUG": "1"})
    assert proc.returncode == 2 and "DIGITALOCEAN_TOKEN" in proc.stderr
    for text in env.outputs:
        assert TOKEN not in text and wrong not in text
    for root, _, files in os.walk(os.path.join(env.dir, ".swarmsmith")):
        for leaf in files:
            with open(os.path.join(root, leaf), "rb") as f:
                data = f.read()
            assert TOKEN.encode() not in data and wrong.encode() not in data, leaf


@lab
def test_down_leaves_nothing_swarmsmith_created(env):
    proc = env.cli("down", env.cluster, "--json")
    assert proc.returncode == 0, proc.stderr
    changes = json.loads(proc.stdout)["changes"]
    assert sum(c.startswith("droplet ") for c in changes) == 4
    assert f"firewall {NAME}: deleted" in changes and f"VPC {NAME}: deleted" in changes
    assert any(c.startswith(f"SSH key {NAME}: deleted") for c in changes)
    assert env.ours() == {"droplets": [], "firewalls": [], "vpcs": [], "keys": [], "tags": []}
    assert env.labs.hosts() == []                     # every droplet's lab host is gone
    assert sorted(env.labs.removed) == sorted(env.labs.made)
    inv = env.inventory()
    assert inv["hosts"] == {} and inv["provider_state"] == {}
    # and a second down finds nothing to do
    proc = env.cli("down", env.cluster, "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["changes"] == []
    for text in env.outputs:
        assert TOKEN not in text


# --- the cluster file: one SSH key for the droplets, `up` and `status` ----------------------

DO_FILE = """\
name: dokeys
provider: digitalocean
{ssh}
digitalocean: {{region: fra1, size: s-1vcpu-1gb, image: ubuntu-24-04-x64,
               ssh_key: keys/id.pub{extra}}}
"""


def load_do(tmp_path, ssh: str = "", extra: str = ""):
    os.makedirs(tmp_path / "keys", exist_ok=True)
    write_public_key(tmp_path / "keys", "id")
    path = tmp_path / "swarmsmith.yml"
    path.write_text(DO_FILE.format(ssh=ssh, extra=extra))
    return clusterfile.load(str(path))


def test_private_key_defaults_to_the_public_keys_sibling(tmp_path, monkeypatch):
    monkeypatch.chdir("/")                      # relative paths are the cluster file's, not cwd's
    cf = load_do(tmp_path)
    key = str(tmp_path / "keys" / "id")
    assert cf.ssh_key == key and cf.provider_settings["ssh_private_key"] == key
    assert cf.provider_settings["ssh_key"] == key + ".pub"
    assert cf.provider_settings["_public_key"].startswith("ssh-ed25519 ")



def test_ssh_key_is_the_providers_private_key_too(tmp_path):
    write_public_key(tmp_path, "same")          # the same key pair as keys/id, another path
    cf = load_do(tmp_path, "ssh: {key: same, user: admin}")
    assert cf.ssh_key == str(tmp_path / "same") == cf.provider_settings["ssh_private_key"]
    assert cf.ssh_user == "admin" == cf.provider_settings["user"]


@pytest.mark.parametrize("ssh, extra, message", [
    ("ssh: {key: other}", "",
     r"ssh\.key: .*other\.pub is not digitalocean\.ssh_key .*would refuse"),
    ("ssh: {key: keys/id}", ", ssh_private_key: keys/elsewhere",
     r"digitalocean\.ssh_private_key: .*differs from ssh\.key"),
    ("ssh: {user: admin}", ", user: root",
     r"digitalocean\.user: \"root\" differs from ssh\.user \"admin\""),
    ("", ", ssh_private_key: keys/missing", r"digitalocean\.ssh_private_key: no such file"),
])
def test_ssh_settings_must_agree(tmp_path, ssh, extra, message):
    write_public_key(tmp_path, "other", seed=b"x")
    with pytest.raises(InputError, match=message):
        load_do(tmp_path, ssh, extra)


def test_a_private_key_is_required(tmp_path):
    os.makedirs(tmp_path / "keys")
    write_public_key(tmp_path / "keys", "id")
    os.unlink(tmp_path / "keys" / "id")
    path = tmp_path / "swarmsmith.yml"
    path.write_text(DO_FILE.format(ssh="", extra=""))
    with pytest.raises(InputError, match=r"ssh\.key: required for provider digitalocean"):
        clusterfile.load(str(path))
