"""Bad input that used to end in a traceback, a memory blow-up or a silent guess: huge numbers,
non-UTF-8 files, duplicate YAML keys, a damaged inventory, per-host SSH settings."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

import pytest

from inventory import clusterfile
from inventory.state import StateDir
from provision.base.errors import EXIT_BAD_INPUT, InputError
from tests.conftest import REPO

ED25519 = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")


def cli_small_memory(cwd, *args, limit_mb: int = 400):
    """Run the CLI with its address space capped: a list sized from a huge number dies here."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit_mb << 20, limit_mb << 20))
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=60, preexec_fn=cap,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("text, key", [
    ("name: h\nmanagers: 99999999999999999999999\n", "managers"),
    ("name: h\nworkers: 2000000\n", "workers"),
    ("name: h\nworkers: 2000000\nlabels: {all: {a: b}}\n", "workers"),
    ("name: h\nmanagers: 99999999999999999999999\nworkers: 99999999999999\n", "managers"),
    ("name: h\nssh: {port: 99999999999999999999999999999}\n", "ssh.port"),
    ("name: h\nssh: {connect_timeout: 99999999999999999999999999999999999999999999999999"
     "9999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
     "9999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
     "9999999999999999999999999999999999999999999999999999999999999999999999999999999999999999"
     "99999999999999999}\n", "ssh.connect_timeout"),
])
def test_huge_numbers_refused_in_small_memory(tmp_path, text, key):
    (tmp_path / "c.yml").write_text(text)
    r = cli_small_memory(tmp_path, "plan", "c.yml")
    assert r.returncode == EXIT_BAD_INPUT, r.stderr
    assert "Traceback" not in r.stderr and "MemoryError" not in r.stderr
    assert f"c.yml" in r.stderr and key in r.stderr
    assert len(r.stderr.splitlines()) <= 3   # the number is cut short, not printed whole


def test_non_utf8_cluster_file(tmp_path):
    (tmp_path / "c.yml").write_bytes(b"name: demo\nworkers: 1\nlabels: {all: {a: \"\xff\xfe\"}}\n")
    with pytest.raises(InputError) as e:
        clusterfile.load(str(tmp_path / "c.yml"))
    assert "not UTF-8" in str(e.value) and "line 3" in str(e.value)


@pytest.mark.parametrize("text, key, first, second", [
    ("name: demo\nworkers: 1\nworkers: 2\n", "workers", 2, 3),
    ("name: demo\nssh:\n  user: a\n  port: 22\n  user: b\n", "user", 3, 5),
])
def test_duplicate_keys_in_cluster_file(tmp_path, text, key, first, second):
    (tmp_path / "c.yml").write_text(text)
    with pytest.raises(InputError) as e:
        clusterfile.load(str(tmp_path / "c.yml"))
    msg = str(e.value)
    assert f'duplicate key "{key}"' in msg and f"line {first}" in msg and f"line {second}" in msg


def test_duplicate_keys_in_compose_file_name_both_lines(tmp_path):
    from stacks.compose.yaml_source import parse
    text = "services:\n  web:\n    image: a\n    ports: []\n    image: b\n"
    with pytest.raises(InputError) as e:
        parse(text, "stack.yml")
    assert 'duplicate key "image"' in str(e.value)
    assert "line 3" in str(e.value) and "line 5" in str(e.value)


def test_merge_keys_are_not_duplicates(tmp_path):
    from stacks.compose.yaml_source import parse
    text = ("x-base: &base\n  image: a\n  user: u\nservices:\n  web:\n    <<: *base\n"
            "    image: b\n  db:\n    <<: *base\n")
    data, _ = parse(text, "stack.yml")
    assert data["services"]["web"]["image"] == "b"


# --- the inventory ----------------------------------------------------------------------

def _inventory(tmp_path, raw: bytes) -> StateDir:
    st = StateDir(str(tmp_path / "c.yml"), "demo")
    os.makedirs(st.path)
    with open(st.file("inventory.json"), "wb") as f:
        f.write(raw)
    return st


GOOD = {"hosts": {"m1": {"role": "manager", "public_address": "10.0.0.1", "host_key": ED25519,
                         "node_id": "abc", "port": 22}}, "cluster_id": "c1"}


@pytest.mark.parametrize("raw, words", [
    (b"", "empty file"),
    (b"  \n", "empty file"),
    (json.dumps(GOOD).encode()[:40], "not valid JSON"),
    (b'{"hosts": {"m1": {"role": "\xff"}}}', "not UTF-8"),
    (b"[1, 2]", "expected a JSON object, got list"),
    (b'"hosts"', "expected a JSON object, got str"),
    (b'{"hosts": []}', "hosts: expected an object"),
    (b'{"hosts": {"m1": "x"}}', "hosts.m1: expected an object"),
    (b'{"hosts": {"m1": {"port": "22"}}}', "hosts.m1.port: expected a number"),
    (b'{"hosts": {"m1": {"node_id": 5}}}', "hosts.m1.node_id: expected a string"),
    (b'{"hosts": {}, "cluster_id": []}', "cluster_id: expected a string"),
])
def test_damaged_inventory_refused_with_recovery(tmp_path, raw, words):
    st = _inventory(tmp_path, raw)
    with pytest.raises(InputError) as e:
        st.load()
    msg = str(e.value)
    assert e.value.exit_code == EXIT_BAD_INPUT
    assert msg.startswith(st.file("inventory.json")) and words in msg
    assert "swarmsmith up" in msg      # how to recover


@pytest.mark.parametrize("key, words", [
    ("ssh-ed25519", '"TYPE BASE64"'),
    ("ssh-ed25519 AAAA%%%", "base64"),
    ("ssh-rsa " + ED25519.split()[1], "does not decode as a ssh-rsa key"),
    ("ssh-ed25519 AAAAC3NzaC1", "base64"),
])
def test_pinned_host_key_that_does_not_decode(tmp_path, key, words):
    inv = json.loads(json.dumps(GOOD))
    inv["hosts"]["m1"]["host_key"] = key
    st = _inventory(tmp_path, json.dumps(inv).encode())
    with pytest.raises(InputError) as e:
        st.load()
    assert "hosts.m1.host_key" in str(e.value) and words in str(e.value)
    assert "Delete this host_key" in str(e.value)


def test_good_inventory_loads(tmp_path):
    assert _inventory(tmp_path, json.dumps(GOOD).encode()).load() == GOOD


def test_damaged_inventory_cli_exit_2_no_traceback(tmp_path):
    (tmp_path / "c.yml").write_text("name: demo\n")
    _inventory(tmp_path, b'{"hosts": {"m1": {"role": "manager"')
    for argv in (["status", "--cluster", "c.yml"], ["plan", "c.yml"]):
        r = subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *argv], cwd=tmp_path,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (argv, r.stderr)
        assert "Traceback" not in r.stderr and "inventory.json" in r.stderr


def test_session_refuses_undecodable_key_as_bad_input():
    from provision.base.hosts import Host
    from provision.remote.ssh import Session
    s = Session(Host("m1", "127.0.0.1", port=1), pinned_key="ssh-ed25519 !!!notbase64")
    with pytest.raises(InputError, match="m1.*does not decode"):
        s.connect()


# --- per-host SSH settings and paths relative to the cluster file --------------------------

def test_static_hosts_own_port_and_key_validated(tmp_path):
    (tmp_path / "k").write_text("x")
    (tmp_path / "c.yml").write_text(
        "name: demo\nprovider: static\nssh: {key: k}\nstatic:\n  hosts:\n"
        "    - {name: m1, address: 10.0.0.1, role: manager, port: 2222, key: missing}\n"
        "    - {name: w1, address: 10.0.0.2, port: 70000}\n")
    with pytest.raises(InputError) as e:
        clusterfile.load(str(tmp_path / "c.yml"))
    assert "static.hosts[0].key: no such file" in str(e.value)
    assert "static.hosts[1].port: expected 1-65535" in str(e.value)


def test_static_hosts_own_key_resolved_and_enough(tmp_path):
    (tmp_path / "own").write_text("x")
    (tmp_path / "c.yml").write_text(
        "name: demo\nprovider: static\nstatic:\n  hosts:\n"
        "    - {name: m1, address: 10.0.0.1, role: manager, port: 2222, key: own}\n")
    cf = clusterfile.load(str(tmp_path / "c.yml"))
    assert cf.static_hosts[0]["key"] == str(tmp_path / "own")
    assert cf.static_hosts[0]["port"] == 2222


def test_inventory_hosts_use_recorded_port_and_key(tmp_path):
    from provision.engine_api.sessions import inventory_hosts
    (tmp_path / "k").write_text("x")
    (tmp_path / "own").write_text("x")
    (tmp_path / "c.yml").write_text(
        "name: demo\nprovider: static\nssh: {key: k}\nstatic:\n  hosts:\n"
        "    - {name: m1, address: 10.0.0.1, role: manager, port: 2222, key: own}\n"
        "    - {name: w1, address: 10.0.0.2}\n")
    st = StateDir(str(tmp_path / "c.yml"), "demo")
    st.save({"hosts": {
        "m1": {"role": "manager", "public_address": "10.0.0.1", "node_id": "a", "port": 2222,
               "key": str(tmp_path / "own")},
        "w1": {"role": "worker", "public_address": "10.0.0.2", "node_id": "b", "port": 22,
               "key": str(tmp_path / "k")}}})
    hosts = {h.name: h for h in inventory_hosts(str(tmp_path / "c.yml"))}
    assert (hosts["m1"].port, hosts["m1"].key_path) == (2222, str(tmp_path / "own"))
    assert (hosts["w1"].port, hosts["w1"].key_path) == (22, str(tmp_path / "k"))


def test_stack_env_file_relative_to_cluster_file(tmp_path, monkeypatch):
    d = tmp_path / "conf"
    d.mkdir()
    (d / "stack.yml").write_text("services: {}\n")
    (d / "c.yml").write_text("name: demo\nstacks: [{name: web, compose: stack.yml, "
                             "env_file: web.env}]\n")
    monkeypatch.chdir(tmp_path)
    cf = clusterfile.load("conf/c.yml")
    assert cf.stacks[0].env_file == str(d / "web.env")
