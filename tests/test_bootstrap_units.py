"""Units of `swarmsmith up`: engine planning, advertise-address policy, fact parsers,
secret masking, cluster-file validation and discovery. No root, no network, no lab.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from inventory import clusterfile
from inventory.state import StateDir
from provision.hosts import addresses
from provision.engine import install as engine
from provision.remote import facts as F
from provision.remote.command import Command, Secret
from provision.base.errors import EXIT_BAD_INPUT, InputError, SwarmsmithError
from provision.base.hosts import Host
from tests.conftest import REPO

# --- engine.plan --------------------------------------------------------------------------

LAB_DAEMON = {"storage-driver": "overlay2", "cgroup-parent": "/swarmsmith-x-1"}


def engine_facts(os_id="debian", os_like="", dockerd="/usr/bin/dockerd", systemd=False,
                 initscript=True, server="27.3.1", daemon_json: str | None = None) -> dict:
    """Facts as the host would report them (through the real parser)."""
    out = (f"os={os_id}\nos_like={os_like}\ncodename=bookworm\nhostname=h1\n"
           f"dockerd={dockerd}\nsystemd={int(systemd)}\ninitscript={int(initscript)}\n"
           f"server={server}\naddresses=lo=127.0.0.1/8 eth0=198.18.1.2/24 eth1=198.19.1.2/24 \n"
           "---daemon.json---\n" + (daemon_json if daemon_json is not None else ""))
    return F.parse_engine_facts(out)


def changes(steps) -> list[str]:
    return [s.change for s in steps]


def scripts(steps) -> str:
    return "\n".join(s.command.wire() for s in steps)


@pytest.mark.parametrize("os_id,os_like,install,want", [
    ("debian", "", "auto", "engine installed (Docker apt repository)"),
    ("ubuntu", "debian", "auto", "engine installed (Docker apt repository)"),
    ("linuxmint", "ubuntu debian", "auto", "engine installed (Docker apt repository)"),
    ("fedora", "", "auto", "engine installed (get.docker.com; fedora is not Debian or Ubuntu)"),
    ("centos", "rhel fedora", "auto",
     "engine installed (get.docker.com; centos/fedora/rhel is not Debian or Ubuntu)"),
    ("debian", "", "get-docker", "engine installed (get.docker.com)"),
    ("ubuntu", "debian", "apt", "engine installed (Docker apt repository)"),
])
def test_plan_installs_missing_engine(os_id, os_like, install, want):
    f = engine_facts(os_id=os_id, os_like=os_like, dockerd="", server="", systemd=True,
                     initscript=False)
    steps = engine.plan(f, {}, install)
    assert changes(steps) == [want, "engine started (systemd)", ""]
    if "apt" in want:
        assert "download.docker.com/linux/$ID" in scripts(steps)
        assert "get.docker.com" not in scripts(steps)
    else:
        assert "https://get.docker.com" in scripts(steps)
    assert steps[-1].command is engine.WAIT_SERVER


def test_plan_install_never_is_an_error():
    f = engine_facts(dockerd="", server="")
    with pytest.raises(SwarmsmithError, match="not installed and engine.install is never"):
        engine.plan(f, {}, "never")
    # never is fine when the engine is there
    assert engine.plan(engine_facts(daemon_json=json.dumps(LAB_DAEMON)), LAB_DAEMON, "never") == []


def test_plan_writes_daemon_json_before_install():
    """The packages start dockerd on install: the file must be there by then."""
    f = engine_facts(dockerd="", server="", systemd=True, initscript=False)
    steps = engine.plan(f, {"log-driver": "local"}, "auto")
    assert changes(steps) == ["daemon.json written", "engine installed (Docker apt repository)",
                              "engine started (systemd)", ""]
    assert json.loads(steps[0].command.stdin) == {"log-driver": "local"}


@pytest.mark.parametrize("present,desired,want", [
    # equal (whatever the key order or whitespace) -> nothing
    ('{"cgroup-parent": "/swarmsmith-x-1",\n "storage-driver": "overlay2"}', LAB_DAEMON, []),
    # nothing wanted, no file -> nothing
    (None, {}, []),
    # nothing wanted, an empty file -> nothing
    ("", {}, []),
])
def test_plan_no_change(present, desired, want):
    assert changes(engine.plan(engine_facts(daemon_json=present), desired, "auto")) == want


@pytest.mark.parametrize("systemd,initscript,manager,restart_word", [
    (True, True, "systemd", "systemctl restart docker"),
    (False, True, "init script", "/etc/init.d/docker restart"),
    (False, False, "dockerd directly", 'kill "$p"'),
])
def test_plan_daemon_json_differs_restarts_running_engine(systemd, initscript, manager,
                                                          restart_word):
    f = engine_facts(systemd=systemd, initscript=initscript, daemon_json='{"debug": true}')
    steps = engine.plan(f, LAB_DAEMON, "auto")
    assert changes(steps) == ["daemon.json updated",
                              f"engine restarted for daemon.json ({manager})", ""]
    assert json.loads(steps[0].command.stdin) == LAB_DAEMON
    assert restart_word in steps[1].command.wire()


@pytest.mark.parametrize("systemd,initscript,manager,start_word", [
    (True, False, "systemd", "systemctl enable --now docker"),
    (False, True, "init script", "/etc/init.d/docker start"),
    (False, False, "dockerd directly", "setsid -f dockerd"),
])
def test_plan_starts_stopped_engine(systemd, initscript, manager, start_word):
    # file right, engine stopped: start only (no write, no restart)
    f = engine_facts(systemd=systemd, initscript=initscript, server="",
                     daemon_json=json.dumps(LAB_DAEMON))
    steps = engine.plan(f, LAB_DAEMON, "auto")
    assert changes(steps) == [f"engine started ({manager})", ""]
    assert start_word in steps[0].command.wire()
    # file wrong and engine stopped: write then start (a start reads the new file; no restart)
    f = engine_facts(systemd=systemd, initscript=initscript, server="", daemon_json="{}")
    assert changes(engine.plan(f, LAB_DAEMON, "auto")) == [
        "daemon.json updated", f"engine started ({manager})", ""]


def test_plan_rewrites_invalid_and_unwanted_daemon_json():
    f = engine_facts(daemon_json="{not json")
    assert f["daemon_json_present"] and not f["daemon_json_valid"]
    assert changes(engine.plan(f, LAB_DAEMON, "auto"))[:2] == [
        "daemon.json updated", "engine restarted for daemon.json (init script)"]
    # the user removed every setting: the file becomes {} (not left as it was)
    f = engine_facts(daemon_json='{"debug": true}')
    steps = engine.plan(f, {}, "auto")
    assert changes(steps)[0] == "daemon.json updated" and json.loads(steps[0].command.stdin) == {}


def test_desired_daemon_user_wins():
    assert engine.desired_daemon({"storage-driver": "overlay2", "cgroup-parent": "/a"},
                                 {"storage-driver": "vfs", "debug": True}) == {
        "storage-driver": "vfs", "cgroup-parent": "/a", "debug": True}


# --- addresses.choose ---------------------------------------------------------------------

IFACES = {"lo": ["127.0.0.1/8"], "eth0": ["198.18.1.2/24"], "eth1": ["198.19.1.2/24"],
          "docker0": ["172.17.0.1/16"], "eth2": ["10.1.0.5/16", "10.2.0.5/16"]}
HOST = Host(name="web-1", public_address="198.18.1.2", private_address="198.19.1.2")


@pytest.mark.parametrize("policy,want", [
    ("private", "198.19.1.2"),
    ("public", "198.18.1.2"),
    ("198.18.0.0/15", "198.18.1.2"),       # first match in interface order
    ("198.19.1.0/24", "198.19.1.2"),
    ("198.19.1.7/24", "198.19.1.2"),       # host bits set: still the network
    ("10.2.0.0/16", "10.2.0.5"),           # second address of an interface
    ("eth0", "198.18.1.2"),
    ("eth1", "198.19.1.2"),
    ("eth2", "10.1.0.5"),
])
def test_choose(policy, want):
    assert addresses.choose(HOST, IFACES, policy) == want


def test_choose_private_without_private_network_uses_the_only_address():
    h = Host(name="solo", public_address="203.0.113.9")
    assert addresses.choose(h, {"eth0": ["203.0.113.9/24"]}, "private") == "203.0.113.9"


@pytest.mark.parametrize("policy,words", [
    ("192.168.0.0/16", ["no address in 192.168.0.0/16", "198.18.1.2", "advertise_address"]),
    ("eth9", ["no IPv4 address on interface 'eth9'", "eth0", "advertise_address"]),
])
def test_choose_errors_name_the_host(policy, words):
    with pytest.raises(SwarmsmithError) as e:
        addresses.choose(HOST, IFACES, policy)
    assert e.value.host == "web-1" and str(e.value).startswith("web-1: ")
    for w in words:
        assert w in str(e.value)


def test_choose_interface_error_with_no_interfaces():
    with pytest.raises(SwarmsmithError, match=r"interfaces: none"):
        addresses.choose(HOST, {}, "eth0")


# --- facts parsers ------------------------------------------------------------------------

def test_parse_engine_facts_full():
    f = engine_facts(os_id="ubuntu", os_like="debian", systemd=True, initscript=False,
                     daemon_json='{"log-driver": "local"}')
    assert f["os"] == "ubuntu" and f["os_like"] == "debian" and f["codename"] == "bookworm"
    assert f["hostname"] == "h1" and f["dockerd"] == "/usr/bin/dockerd"
    assert f["systemd"] is True and f["initscript"] is False and f["server"] == "27.3.1"
    assert f["interfaces"] == {"lo": ["127.0.0.1/8"], "eth0": ["198.18.1.2/24"],
                               "eth1": ["198.19.1.2/24"]}
    assert f["daemon_json"] == {"log-driver": "local"}
    assert f["daemon_json_present"] and f["daemon_json_valid"]


def test_parse_engine_facts_bare_host():
    out = ("os=unknown\nos_like=\ncodename=\nhostname=x\ndockerd=\nsystemd=0\ninitscript=0\n"
           "server=\naddresses=\n---daemon.json---\n")
    f = F.parse_engine_facts(out)
    assert f["dockerd"] == "" and f["server"] == "" and f["interfaces"] == {}
    assert f["daemon_json"] is None and not f["daemon_json_present"] and f["daemon_json_valid"]
    assert f["systemd"] is False and f["initscript"] is False


def test_parse_engine_facts_multiple_addresses_per_interface():
    out = ("addresses=eth0=10.0.0.2/24 eth0=10.0.1.2/24 eth1=192.0.2.3/24 \n---daemon.json---\n")
    assert F.parse_engine_facts(out)["interfaces"] == {"eth0": ["10.0.0.2/24", "10.0.1.2/24"],
                                                      "eth1": ["192.0.2.3/24"]}


def test_parse_swarm_facts():
    active = {"NodeID": "n1", "NodeAddr": "198.19.1.2", "LocalNodeState": "active",
              "ControlAvailable": True, "Error": "",
              "RemoteManagers": [{"NodeID": "n1", "Addr": "198.19.1.2:2377"}],
              "Cluster": {"ID": "c1", "Spec": {}}}
    assert F.parse_swarm_facts(json.dumps(active)) == {
        "state": "active", "node_id": "n1", "node_addr": "198.19.1.2", "is_manager": True,
        "cluster_id": "c1", "remote_managers": ["198.19.1.2:2377"], "error": ""}
    worker = {"NodeID": "n2", "LocalNodeState": "active", "ControlAvailable": False,
              "RemoteManagers": [{"Addr": "198.19.1.2:2377"}], "Cluster": None}
    w = F.parse_swarm_facts(json.dumps(worker) + "\n")
    assert w["is_manager"] is False and w["cluster_id"] == "" and w["node_id"] == "n2"
    inactive = {"NodeID": "", "LocalNodeState": "inactive", "RemoteManagers": None}
    i = F.parse_swarm_facts(json.dumps(inactive))
    assert i["state"] == "inactive" and i["remote_managers"] == [] and not i["is_manager"]
    assert F.parse_swarm_facts("")["state"] == "inactive"


def test_parse_nodes():
    nodes = [
        {"ID": "m1", "Spec": {"Role": "manager", "Labels": {"zone": "lab"},
                              "Availability": "active"},
         "Description": {"Hostname": "bt1-manager-1"},
         "Status": {"State": "ready", "Addr": "198.19.1.2"},
         "ManagerStatus": {"Leader": True, "Reachability": "reachable",
                           "Addr": "198.19.1.2:2377"}},
        # just joined: no description, no labels, no manager status
        {"ID": "w1", "Spec": {"Role": "worker"}, "Status": {"State": "unknown"}},
    ]
    m, w = F.parse_nodes(json.dumps(nodes))
    assert m == {"id": "m1", "hostname": "bt1-manager-1", "role": "manager",
                 "labels": {"zone": "lab"}, "availability": "active", "state": "ready",
                 "addr": "198.19.1.2", "reachability": "reachable", "leader": True,
                 "manager_addr": "198.19.1.2:2377"}
    assert w["hostname"] == "" and w["labels"] == {} and w["reachability"] == ""
    assert w["leader"] is False and w["role"] == "worker"
    assert F.parse_nodes("") == []


# --- Command / Secret masking -------------------------------------------------------------

TOKEN = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"


def test_secret_never_prints():
    s = Secret(TOKEN)
    for text in (str(s), repr(s), f"{s}", "%s" % s, "{}".format(s), str([s]), str({"t": s})):
        assert TOKEN not in text and "***" in text
    assert s.reveal() == TOKEN


def test_command_masks_secret_everywhere_but_the_wire():
    cmd = Command.of("docker", "swarm", "join", "--token", Secret(TOKEN), "198.19.1.2:2377",
                     description="join")
    assert TOKEN in cmd.wire() and cmd.wire().startswith("docker swarm join --token SWMTKN-")
    for text in (cmd.masked(), str(cmd), repr(cmd), f"{cmd}", str([cmd])):
        assert TOKEN not in text and "SWMTKN" not in text
    assert cmd.masked() == "docker swarm join --token *** 198.19.1.2:2377"
    # output that echoes the token is scrubbed
    out = f"Error: bad token {TOKEN}\nand again {TOKEN}."
    assert cmd.scrub(out) == "Error: bad token ***\nand again ***."
    # a command without secrets leaves output alone; an empty secret changes nothing
    assert Command.of("true").scrub("SWMTKN-x") == "SWMTKN-x"
    assert Command.of("x", Secret("")).scrub("abc") == "abc"


def test_remote_command_error_carries_masked_command():
    from provision.base.errors import RemoteCommandError
    cmd = Command.of("docker", "swarm", "join", "--token", Secret(TOKEN))
    e = RemoteCommandError("join failed", host="h1", command=cmd.masked(), exit_status=1,
                           output=cmd.scrub(f"rejected {TOKEN}"))
    assert TOKEN not in str(e) and "h1: join failed" in str(e) and "--token ***" in str(e)


# --- cluster file validation --------------------------------------------------------------

def write(tmp_path, text: str, name: str = "c.yml") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_smallest_file_works(tmp_path):
    cf = clusterfile.load(write(tmp_path, "name: demo\nprovider: lab\nmanagers: 1\nworkers: 2\n"))
    assert (cf.name, cf.provider, cf.managers, cf.workers) == ("demo", "lab", 1, 2)
    assert cf.advertise == "private" and cf.install == "auto" and cf.daemon == {}
    assert cf.ssh_user == "root" and cf.ssh_port == 22 and cf.connect_timeout == 60.0
    assert [(w.name, w.role) for w in cf.wanted_hosts()] == [
        ("demo-manager-1", "manager"), ("demo-worker-1", "worker"), ("demo-worker-2", "worker")]


def test_full_file(tmp_path):
    key = tmp_path / "id"
    key.write_text("k")
    (tmp_path / "s.yml").write_text("services: {}\n")
    cf = clusterfile.load(write(tmp_path, """\
name: full
provider: lab
managers: 3
workers: 1
ssh: {user: admin, key: id, port: 2222, connect_timeout: 2.5}
advertise_address: 198.19.0.0/16
labels: {all: {zone: lab}, workers: {tier: app}, full-manager-2: {db: "yes", n: 3}}
engine: {install: never, daemon: {log-driver: local}}
stacks: [{name: web, compose: s.yml}]
lab: {name: other}
"""))
    assert cf.ssh_key == str(key) and cf.ssh_port == 2222 and cf.connect_timeout == 2.5
    assert cf.labels_for("full-manager-2", "manager") == {"zone": "lab", "db": "yes", "n": "3"}
    assert cf.labels_for("full-worker-1", "worker") == {"zone": "lab", "tier": "app"}
    assert cf.provider_settings == {"name": "other"} and cf.stacks[0].compose == [
        str(tmp_path / "s.yml")]


BASE = "name: demo\nprovider: lab\nmanagers: 1\nworkers: 2\n"

BAD = [
    # (file text, key path, words in the message)
    ("name: demo\nprovider: lab\nmanagers: 2\nworkers: 2\n", "managers", "expected 1, 3 or 5"),
    ("name: demo\nmanagers: 0\n", "managers", "expected 1, 3 or 5"),
    ("name: demo\nmanagers: true\n", "managers", "expected 1, 3 or 5, got True"),
    ("name: demo\nmanagers: '3'\n", "managers", 'got "3"'),
    ("name: demo\nworkers: -1\n", "workers", "expected 0 to 200"),
    ("name: demo\nworkers: 2.5\n", "workers", "a whole number"),
    ("name: demo\nworkers: 201\n", "workers", "expected 0 to 200"),
    ("provider: lab\nmanagers: 1\n", "name", "required"),
    ("name: Demo\n", "name", "lowercase"),
    ("name: 12\n", "name", "expected a string"),
    ("name: a-very-long-cluster-name-xyz\n", "name", "at most 24"),
    ("name: demo\nprovider: aws\n", "provider", "expected one of lab, static, digitalocean"),
    ("name: demo\nprovider: [lab]\n", "provider", "expected a string"),
    ("name: demo\nstatic: {hosts: []}\n", "static", "but provider is 'lab'"),
    (BASE + "colour: blue\n", "colour", "unknown key"),
    (BASE + "ssh: yes\n", "ssh", "expected a mapping"),
    (BASE + "ssh: {usr: root}\n", "ssh.usr", "unknown key"),
    (BASE + "ssh: {user: 5}\n", "ssh.user", "expected a string"),
    (BASE + "ssh: {key: /nonexistent/key}\n", "ssh.key", "no such file"),
    (BASE + "ssh: {port: 0}\n", "ssh.port", "expected 1-65535"),
    (BASE + "ssh: {port: 70000}\n", "ssh.port", "expected 1-65535"),
    (BASE + "ssh: {port: '22'}\n", "ssh.port", "a port number"),
    (BASE + "ssh: {connect_timeout: 0}\n", "ssh.connect_timeout", "positive"),
    (BASE + "ssh: {connect_timeout: true}\n", "ssh.connect_timeout", "seconds"),
    (BASE + "advertise_address: 10.0.0.0/33\n", "advertise_address", "CIDR"),
    (BASE + "advertise_address: not an iface!\n", "advertise_address", "interface name"),
    (BASE + "advertise_address: 7\n", "advertise_address", "expected private, public"),
    (BASE + "labels: [a]\n", "labels", "a mapping"),
    (BASE + "labels: {all: zone}\n", "labels.all", "a mapping of label names"),
    (BASE + "labels: {all: {zone: [a]}}\n", "labels.all.zone", "expected a string value"),
    (BASE + "labels: {all: {zone: null}}\n", "labels.all.zone", "expected a string value"),
    (BASE + "labels: {all: {zone: true}}\n", "labels.all.zone", "expected a string value"),
    (BASE + "labels: {all: {'bad key!': x}}\n", "labels.all.bad key!", "invalid label name"),
    (BASE + "labels: {worker: {tier: app}}\n", "labels.worker",
     "expected all, managers, workers or a host of this cluster"),
    (BASE + "labels: {demo-worker-3: {tier: app}}\n", "labels.demo-worker-3", "demo-worker-2"),
    (BASE + "engine: [x]\n", "engine", "a mapping"),
    (BASE + "engine: {install: yum}\n", "engine.install", "expected one of auto, distro, docker-repo, get-docker, never"),
    (BASE + "engine: {daemon: [x]}\n", "engine.daemon", "daemon.json contents"),
    (BASE + "engine: {deamon: {}}\n", "engine.deamon", "unknown key"),
    (BASE + "stacks: web\n", "stacks", "a list"),
    (BASE + "stacks: [web]\n", "stacks[0]", "a mapping with name and compose"),
    (BASE + "stacks: [{name: web}]\n", "stacks[0].compose", "compose file path"),
    (BASE + "stacks: [{name: web, compose: nope.yml}]\n", "stacks[0].compose[0]", "no such file"),
    (BASE + "stacks: [{compose: s.yml, name: 3}]\n", "stacks[0].name", "stack name"),
    (BASE + "lab: {name: BAD}\n", "lab.name", "expected a lab name"),
    (BASE + "lab: {nam: x}\n", "lab.nam", "unknown key"),
    (BASE + "lab: [x]\n", "lab", "a mapping of provider settings"),
    ("name: demo\nprovider: static\nssh: {key: KEY}\n", "static.hosts", "a list of hosts"),
    ("name: demo\nprovider: static\nssh: {key: KEY}\nstatic: {hosts: []}\n", "static.hosts",
     "at least one host"),
    ("name: demo\nprovider: static\nstatic: {hosts: [{name: a, address: 192.0.2.1, "
     "role: manager}]}\n", "ssh.key", "required for provider static"),
    ("name: demo\nprovider: static\nssh: {key: KEY}\nstatic: {hosts: [{name: a, "
     "address: nowhere, role: manager}]}\n", "static.hosts[0].address", "an IP address"),
    ("name: demo\nprovider: static\nssh: {key: KEY}\nstatic: {hosts: [{name: a, "
     "address: 192.0.2.1, role: manager}, {name: b, address: 192.0.2.2, role: boss}]}\n",
     "static.hosts[1].role", "manager or worker"),
    ("name: demo\nprovider: static\nssh: {key: KEY}\nstatic: {hosts: [{name: a, "
     "address: 192.0.2.1, role: manager}, {name: a, address: 192.0.2.2}]}\n",
     "static.hosts[1].name", "duplicate host name"),
    ("name: demo\nprovider: static\nssh: {key: KEY}\nstatic: {hosts: [{name: a, "
     "address: 192.0.2.1}]}\n", "static.hosts", "expected 1, 3 or 5 hosts with role manager"),
    ("name: demo\nprovider: static\nssh: {key: KEY}\nstatic: {hosts: [{name: a, "
     "address: 192.0.2.1, role: manager, ip: x}]}\n", "static.hosts[0].ip", "unknown key"),
    ("name: demo\nprovider: static\nssh: {key: KEY}\nstatic: {hosts: [{name: a, "
     "address: 192.0.2.1, role: manager}]}\nlabels: {b: {x: y}}\n", "labels.b", "(a)"),
]


@pytest.mark.parametrize("text,path,words", BAD, ids=[f"{i}-{b[1]}" for i, b in enumerate(BAD)])
def test_bad_cluster_file(tmp_path, text, path, words):
    key = tmp_path / "key"
    key.write_text("k")
    (tmp_path / "s.yml").write_text("services: {}\n")
    f = write(tmp_path, text.replace("KEY", str(key)))
    with pytest.raises(InputError) as e:
        clusterfile.load(f)
    assert e.value.exit_code == EXIT_BAD_INPUT == 2
    msg = str(e.value)
    assert msg.startswith(f"{f}: {path}: "), msg
    assert words in msg, msg


@pytest.mark.parametrize("text,words", [
    ("", "expected a mapping at the top level, got nothing (null)"),
    ("- a\n- b\n", "expected a mapping at the top level"),
    ("name: [demo\n", "invalid YAML"),
    ("name: demo\n  managers: 1\n", "invalid YAML"),
])
def test_not_a_cluster_file(tmp_path, text, words):
    f = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        clusterfile.load(f)
    assert str(e.value).startswith(f"{f}: ") and words in str(e.value)
    assert e.value.exit_code == 2


def test_yaml_error_names_line(tmp_path):
    f = write(tmp_path, "name: demo\nmanagers: [1\n")
    with pytest.raises(InputError, match=r"c\.yml: line \d+, column \d+: invalid YAML"):
        clusterfile.load(f)


def test_several_errors_listed_together(tmp_path):
    f = write(tmp_path, "name: Demo\nmanagers: 2\nworkers: -1\n")
    with pytest.raises(InputError) as e:
        clusterfile.load(f)
    msg = str(e.value)
    assert msg.startswith("invalid cluster file:")
    for p in ("name", "managers", "workers"):
        assert f"{f}: {p}: " in msg


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="nope.yml: cluster file not found"):
        clusterfile.load(str(tmp_path / "nope.yml"))


def test_relative_file_named_as_given(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path, "name: demo\nmanagers: 2\n")
    with pytest.raises(InputError) as e:
        clusterfile.load("c.yml")
    assert str(e.value) == ("c.yml: managers: expected 1, 3 or 5 (an odd count keeps quorum), "
                            "got 2")


def test_static_counts_come_from_hosts(tmp_path):
    key = tmp_path / "key"
    key.write_text("k")
    cf = clusterfile.load(write(tmp_path, f"""\
name: st
provider: static
ssh: {{key: {key}}}
static:
  hosts:
    - {{name: a, address: 192.0.2.1, role: manager, private_address: 10.0.0.1}}
    - {{name: b, address: 192.0.2.2}}
labels: {{b: {{tier: app}}}}
"""))
    assert (cf.managers, cf.workers) == (1, 1)
    assert [(w.name, w.role) for w in cf.wanted_hosts()] == [("a", "manager"), ("b", "worker")]


# --- discovery and the CLI ----------------------------------------------------------------

def cli(*args, cwd, env_extra=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSMITH_")}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@pytest.fixture
def three_files(tmp_path):
    """Three bad files, each with its own mistake, so the error shows which one was read."""
    (tmp_path / "swarmsmith.yml").write_text("name: bt6\nmanagers: 2\n")
    (tmp_path / "env.yml").write_text("name: bt6\nworkers: -1\n")
    (tmp_path / "flag.yml").write_text("name: bt6\nprovider: aws\n")
    (tmp_path / "pos.yml").write_text("name: bt6\nengine: {install: yum}\n")
    return tmp_path


@pytest.mark.parametrize("command", ["up", "plan", "down", "status"])
def test_discovery_order(three_files, command):
    d = three_files
    env = {"SWARMSMITH_CLUSTER": "env.yml"}
    r = cli(command, "--cluster", "flag.yml", cwd=d, env_extra=env)
    assert r.returncode == 2 and "flag.yml: provider:" in r.stderr, r.stderr
    r = cli(command, cwd=d, env_extra=env)
    assert r.returncode == 2 and "env.yml: workers:" in r.stderr, r.stderr
    r = cli(command, cwd=d)
    assert r.returncode == 2 and "swarmsmith.yml: managers: expected 1, 3 or 5" in r.stderr
    r = cli(command, "pos.yml", cwd=d, env_extra=env)
    assert r.returncode == 2 and "pos.yml: engine.install:" in r.stderr, r.stderr
    assert not (d / ".swarmsmith").exists()


def test_no_cluster_file(tmp_path):
    r = cli("up", cwd=tmp_path)
    assert r.returncode == 2
    assert "swarmsmith.yml: cluster file not found" in r.stderr and "--cluster" in r.stderr


def lab_hosts(name: str) -> list:
    r = cli("lab", "ls", "--name", name, "--json", cwd=REPO)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("text", [
    "name: bt5\nprovider: lab\nmanagers: 2\nworkers: 2\n",
    "name: bt5\nprovider: lab\nmanagers: 1\nworkers: 2\nlabels: {worker: {a: b}}\n",
    "name: bt5\nprovider: lab\nmanagers: 1\nworkers: 2\nadvertise_address: 10.0.0.0/40\n",
    "name: bt5\nprovider: lab\nmanagers: 1\nworkers: 2\nssh: {key: missing}\n",
])
@pytest.mark.parametrize("flags", [[], ["--dry-run"], ["--json"]])
def test_up_with_bad_file_changes_nothing(tmp_path, text, flags):
    before = lab_hosts("bt5")
    (tmp_path / "swarmsmith.yml").write_text(text)
    r = cli("up", *flags, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("swarmsmith: error: swarmsmith.yml: ")
    assert r.stdout == ""
    assert lab_hosts("bt5") == before == []
    assert sorted(os.listdir(tmp_path)) == ["swarmsmith.yml"]     # no state folder


def test_plan_of_new_cluster_creates_nothing(tmp_path):
    """plan on a cluster never brought up: the plan is printed, no lab and no state folder."""
    if lab_hosts("bt5"):
        pytest.fail("lab bt5 exists already")
    (tmp_path / "swarmsmith.yml").write_text("name: bt5\nprovider: lab\nmanagers: 1\nworkers: 1\n")
    r = cli("plan", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)
    assert plan["dry_run"] and "host bt5-manager-1: create lab host" in plan["changes"]
    assert plan["changes"][2:] == [
        "bt5-manager-1: engine set up (its steps are decided once the host exists)",
        "bt5-worker-1: engine set up (its steps are decided once the host exists)",
        "bt5-manager-1: swarm initialised", "bt5-manager-1: labels swarmsmith.cluster=bt5",
        "bt5-worker-1: joined as worker", "bt5-worker-1: labels swarmsmith.cluster=bt5",
        "cluster record version 1 written to the swarm"]
    assert lab_hosts("bt5") == []
    assert sorted(os.listdir(tmp_path)) == ["swarmsmith.yml"]


def test_state_dir_inventory_mode_and_lock(tmp_path):
    from provision.base.errors import LockedError
    st = StateDir(str(tmp_path / "c.yml"), "demo")
    assert st.path == str(tmp_path / ".swarmsmith" / "demo")
    assert st.load() == {"hosts": {}}
    with st.lock():
        st.save({"hosts": {"a": {"node_id": "x"}}})
        with pytest.raises(LockedError, match="holds the lock"):
            with StateDir(str(tmp_path / "c.yml"), "demo").lock():
                pass
    assert os.stat(st.file("inventory.json")).st_mode & 0o777 == 0o600
    assert os.stat(st.path).st_mode & 0o777 == 0o700
    assert st.load() == {"hosts": {"a": {"node_id": "x"}}}
    assert [f for f in os.listdir(st.path) if ".tmp" in f] == []


def test_prune_refuses_to_destroy_managers(tmp_path):
    """Destroying managers before demoting them would lose quorum: refused before any change."""
    import json as _json
    key = tmp_path / "id"
    key.write_text("not used: refused before connecting")
    (tmp_path / "c.yml").write_text(
        "name: pr\nprovider: static\nssh: {key: id}\n"
        "static: {hosts: [{name: m1, address: 127.0.0.1, role: manager}]}\n")
    state = tmp_path / ".swarmsmith" / "pr"
    state.mkdir(parents=True)
    (state / "inventory.json").write_text(_json.dumps({"hosts": {
        "m1": {"role": "manager", "node_id": "a"}, "m2": {"role": "manager", "node_id": "b"}}}))
    import subprocess, sys, os
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, os.path.join(repo, "cli.py"), "up", "--prune", "c.yml"],
                       cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert p.returncode == 2, p.stderr
    assert "m2" in p.stderr and "c.yml" in p.stderr and "managers" in p.stderr


@pytest.mark.parametrize("on_disk, daemon, have, outside", [
    ("0", {}, None, True),                                  # a new machine: no swarm state
    ("1", {}, None, False),                                 # it was in a swarm
    ("?", {}, None, False),                                 # the folder could not be read
    ("0", {"data-root": "/srv/docker"}, None, False),       # the state is elsewhere
    ("0", {}, {"data-root": "/srv/docker"}, False),
])
def test_a_stopped_engine_starts_outside_any_swarm_only_when_its_folder_says_so(
        on_disk, daemon, have, outside):
    from provision import bootstrap
    from provision.remote import facts as F
    facts = F.parse_engine_facts(f"os=debian\nswarm_on_disk={on_disk}\nserver=\n---swarm---\n\n"
                                 "---daemon.json---\n" + (json.dumps(have) if have else ""))
    assert bootstrap._starts_outside_swarm(facts, daemon) is outside


def test_the_engine_steps_pool_is_shut_down_when_the_swarm_step_is_done(monkeypatch):
    """converge takes one arrival per host and never asks for the end of the generator: its
    pool must be shut down by up itself, not by the garbage collector at some later moment
    (inside another thread's start, where its join waited for ever in a second in-process run)."""
    import threading
    from types import SimpleNamespace
    from provision import bootstrap
    from provision.base.hosts import Host
    from provision.remote import facts as F

    def engine(run, h):
        return {"interfaces": {"eth0": [f"{h.public_address}/24"]}, "hostname": h.name,
                "swarm": F.swarm_facts({}), "server": "20.10.24"}
    monkeypatch.setattr(bootstrap, "_engine", engine)

    class Step:
        def converge(self, arrivals, known):
            self._arrivals = arrivals       # as SwarmStep keeps it, for as long as the step lives
            return [next(arrivals) for _ in hosts]      # as converge: no next() past the last

    def pool_threads():
        return {t for t in threading.enumerate() if t.name.startswith("ThreadPoolExecutor")}
    hosts = [Host("m1", "10.0.0.1", role="manager"), Host("w1", "10.0.0.2", role="worker")]
    run = SimpleNamespace(opts=bootstrap.UpOptions(), facts={}, waiting=lambda text: None,
                          cluster=SimpleNamespace(advertise=None))
    before = pool_threads()
    step = Step()
    got = bootstrap._converge(run, step, hosts, {}, {})
    assert sorted(name for name, _ in got) == ["m1", "w1"]
    assert pool_threads() - before == set()
