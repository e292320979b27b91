"""One identity per host: a node named by the cluster file's name, its hostname or its ID, in
every command that names nodes; listings show both names; a host renamed in the cluster file
stays one host in the inventory and the cluster's record (one push per machine)."""
from __future__ import annotations

import json

import pytest

from provision.swarm import nodes as N
from provision.swarm.backup import pick_backup_node
from provision.engine_api.cluster_record import from_inventory, merge, merge_into_inventory
from provision.base.errors import InputError
from provision.base.hosts import Host
from provision.images.push import select_hosts
from provision.engine_api.node_names import NodeNames, NodeNotFound
from tests.test_runbooks_units import FakeAPI, node


def cluster():
    """Hostnames host-a.. as the machines call themselves; the file calls them m1, m2, m3, w1."""
    ns = [node("host-a", "manager", leader=True), node("host-b", "manager"),
          node("host-c", "manager"), node("host-d")]
    for n, addr in zip(ns, ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")):
        n["Status"]["Addr"] = addr
    hosts = {name: {"node_id": n["ID"], "hostname": n["Description"]["Hostname"],
                    "public_address": n["Status"]["Addr"], "role": n["Spec"]["Role"]}
             for name, n in zip(("m1", "m2", "m3", "w1"), ns)}
    return ns, hosts


def test_a_node_is_found_by_file_name_hostname_or_id_and_shown_with_both():
    ns, hosts = cluster()
    names = NodeNames(hosts)
    for ref in ("w1", "host-d", ns[3]["ID"], ns[3]["ID"][:8]):
        assert names.find(ns, ref) is ns[3], ref
    assert names.show(ns[3]) == "w1 (host-d)"
    with pytest.raises(NodeNotFound) as e:
        names.find(ns, "w9")
    assert e.value.exit_code == 2 and "w1 (host-d)" in str(e.value)
    # a cluster whose names are the hostnames (the lab's) shows one name
    assert NodeNames({"host-d": hosts["w1"]}).show(ns[3]) == "host-d"


def test_a_node_that_joined_again_is_known_by_its_recorded_hostname_or_address():
    ns, hosts = cluster()
    hosts["w1"]["node_id"] = "an-old-id-of-w1"      # left and joined again since the record
    names = NodeNames(hosts).bind(ns)
    assert names.name_of(ns[3]) == "w1"
    del hosts["w1"]["hostname"]
    assert NodeNames(hosts).bind(ns).name_of(ns[3]) == "w1"          # by its address
    # a host whose recorded ID is listed is that node, never another one of its hostname
    assert NodeNames(hosts).bind(ns).name_of(ns[0]) == "m1"


def test_node_commands_take_either_name_and_say_both():
    ns, hosts = cluster()
    names = NodeNames(hosts)
    api = FakeAPI(ns)
    res = N.set_availability(api, "w1", "pause", names=names)
    assert res.changes == ["w1 (host-d): availability active -> pause"]
    res = N.set_availability(api, "host-d", "active", names=names)
    assert res.changes == ["w1 (host-d): availability pause -> active"]
    res = N.label_node(api, "m2", {"zone": "b"}, [], names=names)
    assert res.node == "m2 (host-b)" and api.updates[-1][0] == ns[1]["ID"]
    rows = {r["name"]: r["hostname"] for r in N.list_nodes(api, names)["nodes"]}
    assert rows == {"m1": "host-a", "m2": "host-b", "m3": "host-c", "w1": "host-d"}


def test_backup_picks_a_manager_of_the_inventory_by_either_name():
    ns, hosts = cluster()
    inv_hosts = {n: 1 for n, r in hosts.items() if r["role"] == "manager"}
    names = NodeNames(hosts)
    # before: the inventory's names were compared with hostnames, so no manager qualified
    assert pick_backup_node(ns, inv_hosts, names=names) is ns[1]
    assert pick_backup_node(ns, inv_hosts, "m3", names=names) is ns[2]
    assert pick_backup_node(ns, inv_hosts, "host-c", names=names) is ns[2]
    with pytest.raises(InputError, match="--node w1: not a manager") as e:
        pick_backup_node(ns, inv_hosts, "w1", names=names)
    assert "m2 (host-b)" in str(e.value)


def test_images_push_nodes_take_hostnames_and_ids():
    ns, hosts = cluster()
    inv = [Host(n, r["public_address"], role=r["role"]) for n, r in hosts.items()]
    names = NodeNames(hosts)
    assert [h.name for h in select_hosts(inv, ["host-d", "m2"], names)] == ["m2", "w1"]
    assert [h.name for h in select_hosts(inv, [ns[0]["ID"]], names)] == ["m1"]
    with pytest.raises(InputError, match="no node named nope"):
        select_hosts(inv, ["nope"], names)


def test_restore_to_takes_a_hostname(tmp_path, monkeypatch):
    from provision.engine_api import access
    from provision import restore
    ns, hosts = cluster()
    monkeypatch.setattr(access, "access", lambda path: None)
    monkeypatch.setattr(restore, "_known_hosts", lambda acc: {
        n: Host(n, r["public_address"], role=r["role"]) for n, r in hosts.items()})
    import provision.engine_api.access as NN
    monkeypatch.setattr(NN, "for_cluster", lambda path, api=None: NodeNames(hosts))
    assert restore._host_of("c.yml", "host-b").name == "m2"
    assert restore._host_of("c.yml", "m2").name == "m2"
    with pytest.raises(InputError, match="--to host-z"):
        restore._host_of("c.yml", "host-z")


# --- a rename in the cluster file: one host, not two ----------------------------------------

def test_a_renamed_host_replaces_its_old_name_in_inventory_and_record():
    from provision.bootstrap import _forget_old_names
    ns, hosts = cluster()
    inv = {"hosts": {n: dict(r) for n, r in hosts.items()}, "cluster_id": "c1"}
    # the file renames w1 to app1; the swarm step found app1 as w1's node
    inv["hosts"]["app1"] = {**hosts["w1"]}
    wanted = [Host(n, r["public_address"], role=r["role"]) for n, r in hosts.items() if n != "w1"]
    wanted.append(Host("app1", "10.0.0.4", role="worker"))
    joined = [{"name": h.name, "node_id": inv["hosts"][h.name]["node_id"]} for h in wanted]
    changes = _forget_old_names(inv, wanted, joined)
    assert sorted(inv["hosts"]) == ["app1", "m1", "m2", "m3"]
    assert changes == ["app1: the cluster file's new name for w1 (same machine)"]
    assert sorted(from_inventory(inv, "c")["hosts"]) == ["app1", "m1", "m2", "m3"]


def test_a_record_written_under_the_old_name_does_not_bring_it_back():
    ns, hosts = cluster()
    old_record = {"cluster_id": "c1", "hosts": {n: dict(r) for n, r in hosts.items()}}
    inv = {"hosts": {"app1": dict(hosts["w1"])}}
    merge_into_inventory(inv, old_record)
    assert "w1" not in inv["hosts"] and sorted(inv["hosts"]) == ["app1", "m1", "m2", "m3"]
    # a conflicting writer's record (old names) merged with ours (new names): one per node
    ours = {"hosts": {"app1": dict(hosts["w1"]), "m1": dict(hosts["m1"])}}
    assert sorted(merge(old_record, ours)["hosts"]) == ["app1", "m1", "m2", "m3"]


def test_hosts_are_listed_once_per_machine_even_from_a_stale_inventory(tmp_path):
    from provision.engine_api.access import ClusterAccess
    (tmp_path / "k").write_text("")
    (tmp_path / "c.yml").write_text(
        "name: idn\nprovider: static\nssh: {key: k}\nstatic:\n  hosts:\n"
        "    - {name: m1, address: 10.0.0.1, role: manager}\n"
        "    - {name: app1, address: 10.0.0.4, role: worker}\n")
    state = tmp_path / ".swarmsmith" / "idn"
    state.mkdir(parents=True)
    ns, hosts = cluster()
    inv = {"hosts": {"m1": hosts["m1"], "w1": hosts["w1"], "app1": dict(hosts["w1"])}}
    for r in inv["hosts"].values():
        r.pop("hostname", None)
    (state / "inventory.json").write_text(json.dumps(inv))
    got = ClusterAccess(str(tmp_path / "c.yml")).hosts()
    assert [h.name for h in got] == ["app1", "m1"]


# --- up that adds nodes: which stack images they lack ----------------------------------------

def test_new_nodes_lacking_a_services_image_are_named():
    from stacks.images.check import missing_on_new_nodes
    ns, hosts = cluster()
    for n in ns:
        n["Spec"]["Availability"] = "active"
    svc = lambda name, image, constraints=(): {"Spec": {
        "Name": name, "Labels": {"com.docker.stack.image": image},
        "TaskTemplate": {"ContainerSpec": {"Image": image},
                         "Placement": {"Constraints": list(constraints)}}}}
    services = [svc("ro_api", "app:1"), svc("ro_db", "db:1", ["node.role==manager"]),
                svc("web", "nginx.example.com/web:1")]       # from a registry: pulled
    asked = []

    def lister(nodes):
        asked.extend(n.hostname for n in nodes)
        return {n.id: ({"db:1"} if n.hostname == "host-c" else set()) for n in nodes}
    new = {ns[2]["ID"], ns[3]["ID"]}       # host-c (manager) and host-d (worker) joined
    assert missing_on_new_nodes(services, ns, lister, new) == {
        "app:1": {"host-c", "host-d"}}
    assert sorted(asked) == ["host-c", "host-d"]
    assert missing_on_new_nodes(services, ns, lister, set()) == {}


def test_push_missing_finds_inventory_hosts_by_hostname(tmp_path, monkeypatch):
    from provision.engine_api import sessions as dockerapi
    from provision.images import push as image_push
    import provision.engine_api.access as NN
    from stacks.images import push_missing as PM
    ns, hosts = cluster()
    inv = [Host(n, r["public_address"], role=r["role"]) for n, r in hosts.items()]
    monkeypatch.setattr(dockerapi, "inventory_hosts", lambda path, role=None: inv)
    monkeypatch.setattr(NN, "for_cluster", lambda path, api=None: NodeNames(hosts))
    import provision.images.archive as IA
    monkeypatch.setattr(IA, "read_images", lambda a: [type("I", (), {"tags": ["app:1"]})()])
    pushed = []
    monkeypatch.setattr(image_push, "push_archive", lambda archive, hs, sf, **kw: (
        pushed.extend(h.name for h in hs), type("R", (), {"changes": ["ok"]})())[1])
    archive = tmp_path / "a.tar"
    archive.write_bytes(b"")
    assert PM.push_missing({"app:1": {"host-c", "host-d"}}, str(archive), "c.yml") == ["ok"]
    assert sorted(pushed) == ["m3", "w1"]
