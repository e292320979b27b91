"""Cluster state in the swarm, without a lab: host-key pins in the cluster file, the versioned
record (compare-and-swap on create), the audit history, adoption by node label and the guard on
`up --force`."""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

import pytest

from inventory import clusterfile
from inventory.hostkeys import (known_hosts_line, lookup, parse_key, parse_known_hosts)
from provision.engine_api.adapter import EngineAPI
from provision.engine_api.cluster_record import (KEEP, RecordStore, config_name, from_inventory,
                                      merge_into_inventory)
from provision.remote.command import Command
from provision.base.errors import EXIT_BAD_INPUT, InputError
from provision.base.hosts import Host
from provision.remote.ssh import Result
from provision.swarm.step import DestroyRefused, ForeignSwarmError, SwarmStep
from stacks.operations.audit import (append_audit_swarm, audit_table, parse_since,
                                     read_audit_swarm)
from tests.test_watch_lock_units import FakeConfigs as _LockConfigs


class FakeConfigs(_LockConfigs):
    """As the engine answers: data comes back base64 in the list, a label filter without a
    value matches any config carrying the label."""

    def create_config(self, name, data, labels=None, templating=None):
        return super().create_config(name, base64.b64encode(data).decode(), labels, templating)

    def configs(self, filters=None):
        filters = dict(filters or {})
        keys = [f for f in filters.get("label", []) if "=" not in f]
        filters["label"] = [f for f in filters.get("label", []) if "=" in f]
        return [c for c in super().configs(filters) if all(k in c["Spec"]["Labels"] for k in keys)]


def ed25519_line(seed: bytes = b"k") -> str:
    blob = (len(b"ssh-ed25519").to_bytes(4, "big") + b"ssh-ed25519" + (32).to_bytes(4, "big")
            + hashlib.sha256(seed).digest())
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


KEY1, KEY2 = ed25519_line(b"1"), ed25519_line(b"2")


# --- host keys --------------------------------------------------------------------------------

def test_parse_key_keeps_type_and_blob_only():
    assert parse_key(KEY1 + " root@host") == KEY1


@pytest.mark.parametrize("text,words", [
    ("AAAA", "KEYTYPE BASE64"),
    ("ssh-foo AAAA", "unknown key type"),
    ("ssh-ed25519 not*base64", "not valid base64"),
    (KEY1.replace("ssh-ed25519", "ssh-rsa"), "not a ssh-rsa key"),
])
def test_parse_key_refuses(text, words):
    with pytest.raises(ValueError, match=words):
        parse_key(text)


def test_known_hosts_plain_port_and_hashed_names():
    salt = os.urandom(20)
    mac = hmac.new(salt, b"10.0.0.3", hashlib.sha1).digest()
    hashed = f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(mac).decode()}"
    text = (f"# comment\n10.0.0.1,web {KEY1}\n[10.0.0.2]:2222 {KEY2} c\n{hashed} {KEY2}\n"
            f"@cert-authority *.example {KEY1}\n")
    entries = parse_known_hosts(text)
    assert lookup(entries, "10.0.0.1") == KEY1
    assert lookup(entries, "10.0.0.2", 2222) == KEY2 and lookup(entries, "10.0.0.2") == ""
    assert lookup(entries, "10.0.0.3") == KEY2
    assert lookup(entries, "10.0.0.9") == ""
    assert known_hosts_line("10.0.0.2", 2222, KEY2, "m1") == f"[10.0.0.2]:2222 {KEY2} m1"


def test_known_hosts_bad_line_is_named():
    with pytest.raises(ValueError, match="line 2: the key is not valid base64"):
        parse_known_hosts(f"10.0.0.1 {KEY1}\n10.0.0.2 ssh-ed25519 @@@\n")


def _static(tmp_path, host_extra: str = "", ssh_extra: str = "") -> str:
    key = tmp_path / "id"
    key.write_text("x")
    path = tmp_path / "c.yml"
    path.write_text(f"name: st0\nprovider: static\nssh: {{key: {key}{ssh_extra}}}\nstatic:\n"
                    f"  hosts:\n    - {{name: m1, address: 10.0.0.1, role: manager{host_extra}}}\n"
                    f"    - {{name: w1, address: 10.0.0.2, role: worker}}\n")
    return str(path)


def test_cluster_file_pins(tmp_path):
    (tmp_path / "known").write_text(f"10.0.0.2 {KEY2}\n")
    cf = clusterfile.load(_static(tmp_path, f', host_key: "{KEY1} c"', ", known_hosts: known"))
    assert cf.pinned_key("m1", "10.0.0.1") == KEY1
    assert cf.pinned_key("w1", "10.0.0.2") == KEY2
    assert cf.pinned_key("w1", "10.0.0.2", 2222) == ""


@pytest.mark.parametrize("host_extra,ssh_extra,words", [
    (', host_key: "ssh-ed25519 !!"', "", "static.hosts[0].host_key: the key is not valid base64"),
    (", host_key: 5", "", "static.hosts[0].host_key: expected"),
    ("", ", known_hosts: nope/known", "ssh.known_hosts: no such folder"),
])
def test_bad_pins_are_bad_input(tmp_path, host_extra, ssh_extra, words):
    with pytest.raises(InputError) as e:
        clusterfile.load(_static(tmp_path, host_extra, ssh_extra))
    assert e.value.exit_code == EXIT_BAD_INPUT and words in str(e.value)


def test_a_known_hosts_file_not_made_yet_pins_nothing_and_up_writes_it(tmp_path):
    """The README's example names ssh.known_hosts before `hostkeys` could write it: a first
    `up` works, and writes the keys it pinned there (an existing file is never touched)."""
    from provision import bootstrap
    from provision.bootstrap import Run, UpOptions
    from inventory.state import StateDir
    cf = clusterfile.load(_static(tmp_path, "", ", known_hosts: known"))
    assert cf.known_hosts == [] and cf.known_hosts_missing
    assert cf.known_hosts_file == str(tmp_path / "known") and cf.pinned_key("m1", "10.0.0.1") == ""
    run = Run(cf, StateDir(cf.path, cf.name), {"hosts": {}}, UpOptions(),
              lambda host, message: None)
    run.sessions = {"m1": KeySession(Host("m1", "10.0.0.1", role="manager"), KEY1),
                    "w1": KeySession(Host("w1", "10.0.0.2", port=2222, role="worker"), KEY2)}
    bootstrap._write_known_hosts(run)
    assert run.changes == [f"{tmp_path / 'known'}: written with 2 host keys (ssh.known_hosts "
                           "did not exist; commit it beside the cluster file)"]
    again = clusterfile.load(cf.path)
    assert not again.known_hosts_missing
    assert again.pinned_key("m1", "10.0.0.1") == KEY1
    assert again.pinned_key("w1", "10.0.0.2", 2222) == KEY2
    # written once: a later run (or a file the operator wrote) is left as it is
    (tmp_path / "known").write_text(f"10.0.0.1 {KEY2}\n")
    run.changes = []
    bootstrap._write_known_hosts(run)
    assert run.changes == [] and (tmp_path / "known").read_text() == f"10.0.0.1 {KEY2}\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_bad_known_hosts_line_names_file_and_line(tmp_path):
    (tmp_path / "known").write_text("10.0.0.1 ssh-ed25519\n")
    with pytest.raises(InputError, match=r"ssh.known_hosts: .*known: line 1: expected HOSTS"):
        clusterfile.load(_static(tmp_path, "", ", known_hosts: known"))


# --- the record -------------------------------------------------------------------------------

INV = {"name": "st0", "provider": "static", "cluster_id": "c1", "init_started_on": "m1",
       "hosts": {"m1": {"role": "manager", "public_address": "10.0.0.1", "node_id": "n1",
                        "host_key": KEY1, "labels": ["zone"], "advertise_address": "10.0.0.1"},
                 "w9": {"role": "worker", "public_address": "10.0.0.9"}}}


def test_record_holds_durable_facts_only():
    rec = from_inventory(INV, "st0")
    assert rec["cluster_id"] == "c1" and list(rec["hosts"]) == ["m1"]   # w9 is no node yet
    assert "init_started_on" not in json.dumps(rec)
    assert rec["hosts"]["m1"]["host_key"] == KEY1


def test_versions_are_created_not_overwritten_and_pruned():
    api, store = FakeConfigs(), None
    store = RecordStore(EngineAPI(api), "st0")
    rec = from_inventory(INV, "st0")
    assert store.save(rec, store.read()) == 1
    assert store.save(rec, store.read()) is None            # unchanged: nothing written
    for i in range(KEEP + 2):
        rec = {**rec, "cluster_id": f"c{i + 2}"}
        store.save(rec, store.read())
    names = sorted(c["Spec"]["Name"] for c in api.items.values())
    assert len(names) == KEEP and config_name("st0", KEEP + 3) in names
    assert store.read()[1]["cluster_id"] == f"c{KEEP + 3}"


def test_second_writer_loses_the_create_and_converges():
    api = FakeConfigs()
    store = RecordStore(EngineAPI(api), "st0")
    base = store.read()
    other = from_inventory({**INV, "hosts": {"w1": {"role": "worker", "public_address": "x",
                                                     "node_id": "n2"}}}, "st0")
    # between our read and our create, another run writes version 1
    api.before_create = lambda: RecordStore(EngineAPI(api), "st0").create(1, other)
    assert store.save(from_inventory(INV, "st0"), base) == 2
    version, rec = store.read()
    assert version == 2 and set(rec["hosts"]) == {"m1", "w1"}   # both runs' hosts kept


def test_record_refreshes_a_lost_inventory():
    inv = {"hosts": {}, "provider_state": {"vpc": {"id": "v1"}}}
    merge_into_inventory(inv, from_inventory({**INV, "provider_state": {
        "vpc": {"id": "v1", "created": True}, "firewall": {"id": "f1", "created": True}}}, "st0"))
    # a fresh run's provider found the VPC by name; the record remembers that we created it
    assert inv["provider_state"] == {"vpc": {"id": "v1", "created": True},
                                     "firewall": {"id": "f1", "created": True}}
    assert inv["cluster_id"] == "c1" and inv["hosts"]["m1"]["node_id"] == "n1"
    assert "host_key" not in inv["hosts"]["m1"]     # keys are compared by the caller, not copied


# --- audit in the swarm -----------------------------------------------------------------------

def test_audit_history_read_back_by_stack_and_since():
    api = FakeConfigs()
    append_audit_swarm(api, "web", {"ts": "2026-01-01T00:00:00.000000Z", "stack": "web", "n": 1})
    append_audit_swarm(api, "api", {"ts": "2026-01-02T00:00:00.000000Z", "stack": "api", "n": 2})
    append_audit_swarm(api, "web", {"ts": "2026-01-03T00:00:00.000000Z", "stack": "web", "n": 3})
    assert [r["n"] for r in read_audit_swarm(api)] == [1, 2, 3]
    assert [r["n"] for r in read_audit_swarm(api, "web")] == [1, 3]
    assert [r["n"] for r in read_audit_swarm(api, None, "2026-01-02T00:00:00Z")] == [2, 3]


def test_audit_table_shows_the_agents_commit_in_its_own_column():
    sha = "0123456789abcdef0123456789abcdef01234567"
    lines = audit_table([
        {"ts": "2026-01-01T00:00:00.000000Z", "stack": "web", "command": "deploy",
         "phase": "end", "exit_code": 0, "seconds": 1.5, "changes": ["update service web_app"],
         "by": "ann", "from": "laptop"},
        {"ts": "2026-01-02T00:00:00.000000Z", "stack": "web", "command": "agent",
         "phase": "refused", "exit_code": 2, "commit": sha, "by": "agent", "from": "m1"}])
    header, deploy, agent = lines
    col = header.index("COMMIT")
    assert agent[col:].split()[0] == sha[:12] and sha not in agent
    assert deploy[col:].split()[0] == "-"              # a deploy by hand names no commit
    # every column starts where its header does, a 7-letter phase included
    for name, want in (("PHASE", ("end", "refused")), ("BY", ("ann", "agent"))):
        at = header.index(name)
        assert [line[at:].split()[0] for line in (deploy, agent)] == list(want)
    assert " deploy    end " in deploy      # what scripts and the lab test match on


def test_parse_since():
    from datetime import datetime, timezone
    now = datetime(2026, 1, 2, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2h", now) == "2026-01-02T10:00:00.000000Z"
    assert parse_since("2026-01-01", now) == "2026-01-01T00:00:00.000000Z"
    with pytest.raises(ValueError, match="2h, 30m, 7d"):
        parse_since("yesterday", now)


# --- adoption and the --force guard -----------------------------------------------------------

class Node:
    """A host answering the few commands the swarm step sends before changing anything."""

    def __init__(self, swarm: dict, labels: dict | None = None, services: str = ""):
        self.swarm, self.labels, self.services = swarm, labels or {}, services
        self.sent: list[str] = []

    def run(self, cmd: Command, check: bool = True, timeout=None):
        wire = cmd.wire()
        self.sent.append(wire)
        if "docker info" in wire:
            return Result(json.dumps(self.swarm), "", 0)
        if "node inspect self" in wire:
            return Result(json.dumps(self.labels), "", 0)
        if "service ls" in wire:
            return Result(self.services, "", 0)
        raise AssertionError(f"unexpected command {wire}")


ACTIVE = {"LocalNodeState": "active", "NodeID": "n1", "ControlAvailable": True,
          "Cluster": {"ID": "swarm1"}}


def _step(node, inv, **kw):
    m1 = Host("m1", "10.0.0.1", role="manager")
    return SwarmStep({"m1": node}, [m1], {"m1": "10.0.0.1"}, {}, inv, cluster_name="st0", **kw)


def test_a_lost_inventory_adopts_the_swarm_its_label_names():
    node = Node(ACTIVE, labels={"swarmsmith.cluster": "st0"})
    inv = {"hosts": {}}
    step = _step(node, inv)
    leader = step._find_or_init_leader({"m1": step.swarm_facts(step.hosts[0])})
    assert leader.name == "m1" and inv["cluster_id"] == "swarm1"
    assert not any("leave" in c or "init" in c for c in node.sent)


def test_another_clusters_swarm_is_refused_naming_it():
    node = Node(ACTIVE, labels={"swarmsmith.cluster": "other"})
    step = _step(node, {"hosts": {}})
    with pytest.raises(ForeignSwarmError, match="swarmsmith cluster other"):
        step._find_or_init_leader({"m1": step.swarm_facts(step.hosts[0])})


def test_force_on_a_swarm_with_services_names_them_and_needs_destroy_services():
    node = Node(ACTIVE, services="web_app\nweb_db\n")
    step = _step(node, {"hosts": {}}, force=True)
    with pytest.raises(DestroyRefused) as e:
        step._find_or_init_leader({"m1": step.swarm_facts(step.hosts[0])})
    assert e.value.exit_code == EXIT_BAD_INPUT
    assert "2 service(s): web_app, web_db" in str(e.value) and "--destroy-services" in str(e.value)
    assert not any("leave" in c for c in node.sent)


# --- finding managers without local state -----------------------------------------------------

def test_static_managers_come_from_the_cluster_file_pinned_first(tmp_path):
    from provision.engine_api.access import ClusterAccess
    key = tmp_path / "id"
    key.write_text("x")
    (tmp_path / "c.yml").write_text(
        f"name: st0\nprovider: static\nssh: {{key: {key}}}\nstatic:\n  hosts:\n"
        f"    - {{name: m1, address: 10.0.0.1, role: manager}}\n"
        f"    - {{name: m2, address: 10.0.0.2, role: manager, host_key: \"{KEY1}\"}}\n"
        f"    - {{name: m3, address: 10.0.0.3, role: manager, port: 2222}}\n"
        f"    - {{name: w1, address: 10.0.0.9, role: worker}}\n")
    acc = ClusterAccess(str(tmp_path / "c.yml"))
    got = [(h.name, h.port, acc.pin_for(h)) for h in acc.candidates()]
    assert got == [("m2", 22, KEY1), ("m1", 22, ""), ("m3", 2222, "")]
    assert not (tmp_path / ".swarmsmith").exists()


def test_digitalocean_managers_are_found_by_tag(tmp_path, monkeypatch):
    from provision.engine_api.access import ClusterAccess
    from provision.base.hosts import WantedHost
    from tests.do_emulator import DOEmulator
    from tests.fakes.clock import FakeClock
    from tests.do_emulator.testing import settings, write_public_key
    from tests.test_do_provider_units import TOKEN
    ft = FakeClock()
    pub = write_public_key(tmp_path)
    emu = DOEmulator(TOKEN, fast=True, clock=ft.clock, wall_clock=ft.clock,
                     activation_delay=0).start()
    try:
        monkeypatch.setenv("DIGITALOCEAN_TOKEN", TOKEN)
        monkeypatch.setenv("DIGITALOCEAN_END_POINT", emu.url)
        from provision.hosts.digitalocean import DigitalOceanProvider
        made, _ = DigitalOceanProvider(
            "st0", settings(pub), {}, clock=ft.clock, sleep=ft.sleep, wall_clock=ft.clock,
            ssh_check=lambda address, port: True).ensure(
            [WantedHost("st0-manager-1", "manager"), WantedHost("st0-worker-1", "worker")])
        (tmp_path / "c.yml").write_text(
            f"name: st0\nprovider: digitalocean\ndigitalocean: {{region: fra1, "
            f"size: s-1vcpu-1gb, image: ubuntu-24-04-x64, ssh_key: {pub}}}\n")
        found = ClusterAccess(str(tmp_path / "c.yml")).candidates()
        assert [(h.name, h.public_address) for h in found] == [
            ("st0-manager-1", made[0].public_address)]
    finally:
        emu.stop()


# --- up reads the record before trusting first-seen keys --------------------------------------

class KeySession(Node):
    def __init__(self, host, seen_key):
        super().__init__(ACTIVE)
        self.host, self.seen_key = host, seen_key


def _run_with_record(tmp_path, monkeypatch, seen: str, accept=()):
    from provision import bootstrap
    from provision.engine_api import sessions as dockerapi
    from provision.bootstrap import Run, UpOptions
    from inventory.state import StateDir
    api = FakeConfigs()
    rec = from_inventory({**INV, "cluster_id": "swarm1"}, "st0")
    RecordStore(EngineAPI(api), "st0").create(1, rec)
    monkeypatch.setattr(dockerapi, "api_client", lambda session: api)
    cf = clusterfile.load(_static(tmp_path))
    m1 = Host("m1", "10.0.0.1", role="manager")
    run = Run(cf, StateDir(cf.path, cf.name), {"hosts": {"m1": {}}},
              UpOptions(accept_host_keys=set(accept)), lambda host, message: None)
    run.sessions = {"m1": KeySession(m1, seen)}
    bootstrap._read_record(run, [m1])
    return run


def test_up_refuses_a_first_seen_key_the_record_disagrees_with(tmp_path, monkeypatch):
    from provision.base.errors import HostKeyMismatchError
    with pytest.raises(HostKeyMismatchError, match="the cluster's record in the swarm has"):
        _run_with_record(tmp_path, monkeypatch, KEY2)
    assert not (tmp_path / ".swarmsmith").exists()       # nothing pinned, nothing saved


def test_up_fills_a_fresh_inventory_from_the_record(tmp_path, monkeypatch):
    run = _run_with_record(tmp_path, monkeypatch, KEY1)
    assert run.inventory["cluster_id"] == "swarm1"
    assert run.inventory["hosts"]["m1"]["node_id"] == "n1"
    assert run.record_base[0] == 1
    # a rebuilt host is accepted on purpose with --accept-host-key
    run = _run_with_record(tmp_path, monkeypatch, KEY2, accept=("m1",))
    assert run.inventory["cluster_id"] == "swarm1"


def test_a_pruned_host_is_not_brought_back_from_the_record(tmp_path, monkeypatch):
    from provision import bootstrap
    from provision.engine_api import sessions as dockerapi
    from provision.bootstrap import Run, UpOptions
    from inventory.state import StateDir
    api = FakeConfigs()
    hosts = {"m1": {"role": "manager", "public_address": "10.0.0.1", "node_id": "n1"},
             "w9": {"role": "worker", "public_address": "10.0.0.9", "node_id": "n9"}}
    RecordStore(EngineAPI(api), "st0").create(1, {"format": 1, "name": "st0", "cluster_id": "swarm1",
                                       "hosts": hosts})
    monkeypatch.setattr(dockerapi, "api_client", lambda session: api)
    cf = clusterfile.load(_static(tmp_path))
    m1 = Host("m1", "10.0.0.1", role="manager")
    run = Run(cf, StateDir(cf.path, cf.name), {"hosts": {"m1": {}}}, UpOptions(prune=True),
              lambda host, message: None, pruning=True)
    run.sessions = {"m1": KeySession(m1, KEY1)}
    bootstrap._read_record(run, [m1])
    assert "w9" not in run.inventory["hosts"] and run.pruned == [("w9", "n9")]
    # without pruning, its node is left alone, and the host is not taken from the record: the
    # record does not decide which hosts exist (nor where they are)
    run = Run(cf, StateDir(cf.path, cf.name), {"hosts": {"m1": {}}}, UpOptions(),
              lambda host, message: None)
    run.sessions = {"m1": KeySession(m1, KEY1)}
    bootstrap._read_record(run, [m1])
    assert "w9" not in run.inventory["hosts"] and run.pruned == []


def test_merging_an_unchanged_record_leaves_an_empty_provider_state_in_place():
    inv = {"hosts": {}, "provider_state": {}}
    merge_into_inventory(inv, {"hosts": {}, "provider_state": {}})
    assert inv == {"hosts": {}, "provider_state": {}}
    fresh = {"hosts": {}}
    merge_into_inventory(fresh, {"hosts": {}, "provider_state": {}})
    assert "provider_state" not in fresh


def test_the_managers_node_id_is_read_once_on_connecting(tmp_path, monkeypatch):
    """Connecting reads the manager's /info to check it is a manager; the image check's
    question "which node is this engine?" is answered from that read, not a second /info."""
    from provision.engine_api import access as access_mod
    from provision.engine_api.transport import GuardedAPI
    from provision.engine_api.adapter import EngineAPI

    class Client:
        infos = 0

        def info(self):
            Client.infos += 1
            return {"Swarm": {**ACTIVE, "NodeID": "node-m1"}}

        def nodes(self, filters=None):     # raft has a leader
            return []

    class Session:
        def __init__(self, host, **kw):
            self.host = host

        def connect(self):
            pass

        def close(self):
            pass
    monkeypatch.setattr(access_mod, "Session", Session)
    import provision.engine_api.transport as docker_socket
    monkeypatch.setattr(docker_socket, "api_client",
                        lambda session, timeout=60: GuardedAPI(Client(), session.host.name))
    acc = access_mod.ClusterAccess(_static(tmp_path), accept_new=True)
    engine = EngineAPI(acc.client())
    assert Client.infos == 1
    assert engine.own_node_id() == "node-m1" and Client.infos == 1
    # a client nobody read /info from (a caller's own) is asked
    assert EngineAPI(GuardedAPI(Client(), "m1")).own_node_id() == "node-m1"
    assert Client.infos == 2


# --- the record never steers SSH ---------------------------------------------------------------

KEY3 = ed25519_line(b"3")
# a newer version written by someone with access to a manager: m1 moved to another address
# (with that machine's key), and a host the cluster file does not have
PLANTED = {"format": 1, "name": "st0", "cluster_id": "swarm1", "hosts": {
    "m1": {"role": "manager", "public_address": "10.0.0.66", "node_id": "n1", "host_key": KEY3},
    "w1": {"role": "worker", "public_address": "10.0.0.2", "node_id": "nw1"},
    "x9": {"role": "worker", "public_address": "10.0.0.99", "node_id": "n99", "host_key": KEY3}}}


def _records(*versions: dict) -> FakeConfigs:
    api = FakeConfigs()
    for n, rec in enumerate(versions, 1):
        RecordStore(EngineAPI(api), "st0").create(n, rec)
    return api


def _fresh_access(tmp_path, monkeypatch, api, cluster=None):
    """A ClusterAccess from a folder without state whose manager answers with `api`'s
    configs (no SSH: the manager connection is the fake)."""
    from provision.engine_api import access as access_mod
    acc = access_mod.ClusterAccess(cluster or _static(tmp_path))
    monkeypatch.setattr(acc, "client", lambda: api)
    return acc


def test_a_fresh_folder_refuses_a_record_that_moves_a_host(tmp_path, monkeypatch):
    from provision.engine_api.cluster_record import RecordDisagrees
    from provision.base.errors import EXIT_UNREACHABLE
    good = {**PLANTED, "hosts": {"m1": {**PLANTED["hosts"]["m1"], "public_address": "10.0.0.1",
                                        "host_key": KEY1}}}
    acc = _fresh_access(tmp_path, monkeypatch, _records(good, PLANTED))
    with pytest.raises(RecordDisagrees) as e:
        acc.hosts()
    assert e.value.exit_code == EXIT_UNREACHABLE
    msg = str(e.value)
    assert "version 2" in msg and "swarmsmith-cluster-st0-2" in msg
    assert "m1 at 10.0.0.66 (not 10.0.0.1)" in msg
    assert "--accept-host-key" not in msg and "--accept-new-host-keys" not in msg
    assert not (tmp_path / ".swarmsmith").exists()


def test_a_fresh_folder_refuses_a_record_that_rekeys_a_pinned_host(tmp_path, monkeypatch):
    from provision.engine_api.cluster_record import RecordDisagrees
    rec = {**PLANTED, "hosts": {"m1": {**PLANTED["hosts"]["m1"], "public_address": "10.0.0.1"}}}
    cluster = _static(tmp_path, f', host_key: "{KEY1}"')
    acc = _fresh_access(tmp_path, monkeypatch, _records(rec), cluster)
    with pytest.raises(RecordDisagrees, match="version 1 .*m1 with host key") as e:
        acc.hosts()
    assert "--accept-host-key" not in str(e.value)


def test_the_record_adds_only_node_ids_and_keys_nothing_else_knows(tmp_path, monkeypatch):
    """Hosts and addresses come from the cluster file; the record says which are nodes and
    gives a key to a host nothing else pins; a host only the record lists is left out."""
    rec = {**PLANTED, "hosts": {
        "m1": {"role": "manager", "public_address": "10.0.0.1", "node_id": "n1",
               "host_key": KEY1},
        "w1": {"role": "worker", "node_id": "nw1"},
        "x9": PLANTED["hosts"]["x9"]}}
    acc = _fresh_access(tmp_path, monkeypatch, _records(rec))
    got = [(h.name, h.public_address, h.host_key) for h in acc.hosts()]
    assert got == [("m1", "10.0.0.1", KEY1), ("w1", "10.0.0.2", "")]
    # a key only the record gives: a changed key is refused without advice to accept it
    m1 = acc.hosts("manager")[0]
    for hint in (acc.session(m1).mismatch_hint, acc.mismatch_hint(m1)):
        assert "--accept-host-key" not in hint and "version 1" in hint
    from provision.engine_api.sessions import session_for
    monkeypatch.setattr("provision.engine_api.access._CACHE", {"x": acc})
    assert "--accept-host-key" not in session_for(m1).mismatch_hint
    # a key the cluster file pins keeps the usual advice
    acc = _fresh_access(tmp_path, monkeypatch, _records(rec), _static(tmp_path, f', host_key: "{KEY1}"'))
    assert "--accept-host-key" in acc.session(acc.hosts("manager")[0]).mismatch_hint


def test_up_refuses_a_record_that_moves_a_host_and_adds_none(tmp_path, monkeypatch):
    from provision import bootstrap
    from provision.engine_api import sessions as dockerapi
    from provision.bootstrap import Run, UpOptions
    from provision.engine_api.cluster_record import RecordDisagrees
    from inventory.state import StateDir
    api = _records(PLANTED)
    monkeypatch.setattr(dockerapi, "api_client", lambda session: api)
    cf = clusterfile.load(_static(tmp_path))
    m1, w1 = Host("m1", "10.0.0.1", role="manager"), Host("w1", "10.0.0.2", role="worker")
    inv = {"hosts": {"m1": {"host_key": KEY1, "public_address": "10.0.0.1"}, "w1": {}}}
    for accept in ((), ("m1",)):        # --accept-host-key does not let a moved host through
        run = Run(cf, StateDir(cf.path, cf.name), json.loads(json.dumps(inv)),
                  UpOptions(accept_host_keys=set(accept)), lambda host, message: None)
        run.sessions = {"m1": KeySession(m1, KEY1), "w1": KeySession(w1, KEY2)}
        with pytest.raises(RecordDisagrees) as e:
            bootstrap._read_record(run, [m1, w1])
        assert e.value.exit_code == 3 and "version 1" in str(e.value)
        assert "--accept-host-key" not in str(e.value)
        assert "x9" not in run.inventory["hosts"] and run.record_base == (0, None)
    assert not (tmp_path / ".swarmsmith").exists()


def test_up_refuses_a_record_that_rekeys_a_host_its_pins_vouch_for(tmp_path, monkeypatch):
    """The host shows the key this folder pinned; the record says another: the record is
    wrong. Accepting means keeping the key the host shows, which the record then gets."""
    from provision import bootstrap
    from provision.engine_api import sessions as dockerapi
    from provision.bootstrap import Run, UpOptions
    from provision.engine_api.cluster_record import RecordDisagrees
    from inventory.state import StateDir
    rec = {**PLANTED, "hosts": {"m1": {**PLANTED["hosts"]["m1"], "public_address": "10.0.0.1"}}}
    api = _records(rec)
    monkeypatch.setattr(dockerapi, "api_client", lambda session: api)
    cf = clusterfile.load(_static(tmp_path))
    m1 = Host("m1", "10.0.0.1", role="manager")

    def run_with(accept=()):
        run = Run(cf, StateDir(cf.path, cf.name), {"hosts": {"m1": {"host_key": KEY1}}},
                  UpOptions(accept_host_keys=set(accept)), lambda host, message: None)
        run.sessions = {"m1": KeySession(m1, KEY1)}
        bootstrap._read_record(run, [m1])
        return run
    with pytest.raises(RecordDisagrees, match="m1 with host key") as e:
        run_with()
    assert "never the record's" in str(e.value)
    run = run_with(accept=("m1",))
    bootstrap._pin_keys(run)
    assert run.inventory["hosts"]["m1"]["host_key"] == KEY1


def test_a_fresh_folder_command_exits_3_on_a_planted_record(tmp_path, monkeypatch, capsys):
    import cli
    from provision.engine_api import access as access_mod
    path = _static(tmp_path)
    monkeypatch.setattr(access_mod, "_CACHE", {})
    acc = access_mod.access(path)
    monkeypatch.setattr(acc, "client", lambda: _records(PLANTED))
    assert cli.main(["image-load", path]) == 3
    err = capsys.readouterr().err
    assert "cluster record version 1" in err and "--accept-host-key" not in err
