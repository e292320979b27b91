"""The swarm step takes hosts as their engines answer: init once the managers are ready (not
after the slowest worker), workers joined as they arrive, a foreign swarm refused before anything
changes on that host. A fake swarm stands in for the leader's CLI and the joiners' Engine API."""
from __future__ import annotations

import base64
import json

import pytest

from provision.remote import facts as F
from provision.base.errors import GroupError, SwarmsmithError
from provision.base.hosts import Host
from provision.remote.ssh import Result
from provision.swarm.step import ForeignSwarmError, SwarmStep

TOKEN = "SWMTKN-1-0000000000000000000000000000000000000000000000000-aaaaaaaaaaaaaaaaaaaaaaaaa"


class FakeSwarm:
    def __init__(self):
        self.log: list[tuple[str, str]] = []
        self.cluster_id = ""
        self.nodes: dict[str, dict] = {}      # node id -> node inspect shape
        self.state: dict[str, dict] = {}      # host name -> docker info .Swarm

    def swarm_json(self, name: str) -> dict:
        return self.state.get(name, {"LocalNodeState": "inactive"})

    def add_node(self, name: str, role: str) -> str:
        node_id = f"id-{name}"
        self.nodes[node_id] = {"ID": node_id, "Description": {"Hostname": name},
                               "Spec": {"Role": role, "Labels": {}},
                               "Status": {"State": "ready", "Addr": name},
                               "ManagerStatus": {"Reachability": "reachable"} if role == "manager"
                               else None}
        self.state[name] = {"LocalNodeState": "active", "NodeID": node_id,
                            "ControlAvailable": role == "manager",
                            "Cluster": {"ID": self.cluster_id} if role == "manager" else None}
        return node_id


class Session:
    engine = None       # the Engine class below: what a join through the socket reaches

    def __init__(self, swarm: FakeSwarm, name: str):
        self.swarm, self.name = swarm, name

    def run(self, cmd, check=True, timeout=300):
        w = cmd.wire()
        if "/swarm/init" in w:      # init with curl on the engine's socket, body on stdin
            self.swarm.log.append((self.name, "swarm init (curl)"))
            self.swarm.cluster_id = "cluster-1"
            self.swarm.add_node(self.name, "manager")
            info = json.dumps({"Swarm": self.swarm.swarm_json(self.name)})
            return Result(f'"id-{self.name}"\n200\n---info---\n{info}\n', "", 0)
        if "/swarm/join" in w:      # the join with curl on the engine's socket, body on stdin
            body = json.loads(cmd.stdin)
            self.engine(self.swarm, self.name).join_swarm(
                body["RemoteAddrs"], body["JoinToken"], body["ListenAddr"], body["AdvertiseAddr"])
            info = json.dumps({"Swarm": self.swarm.swarm_json(self.name)})
            return Result(f"\n200\n---info---\n{info}\n", "", 0)
        self.swarm.log.append((self.name, w))
        if w == F.SWARM_FACTS.wire():
            return Result(json.dumps(self.swarm.swarm_json(self.name)), "", 0)
        if "swarm init" in w:
            self.swarm.cluster_id = "cluster-1"
            self.swarm.add_node(self.name, "manager")
            return Result("", "", 0)
        if "node inspect" in w and "node ls" in w:
            return Result(json.dumps(list(self.swarm.nodes.values())), "", 0)
        if "join-token" in w:
            return Result(TOKEN + "\n", "", 0)
        if w.startswith(("docker node promote ", "docker node demote ")):
            node = self.swarm.nodes[w.split()[-1]]
            role = "manager" if "promote" in w else "worker"
            node["Spec"]["Role"] = role
            node["ManagerStatus"] = {"Reachability": "reachable"} if role == "manager" else None
            return Result("", "", 0)
        raise AssertionError(f"unexpected command {w}")


class Engine:
    def __init__(self, swarm: FakeSwarm, name: str):
        self.swarm, self.name = swarm, name

    def join_swarm(self, remote_addrs, join_token, listen_addr=None, advertise_addr=None):
        assert join_token == TOKEN
        self.swarm.log.append((self.name, "JOIN"))
        self.swarm.add_node(self.name, "worker")

    def info(self):             # what the joiner's engine says of itself after the join
        return {"Swarm": self.swarm.swarm_json(self.name)}

    # labels, and the node listing a promotion waits on, go through the leader's Engine API
    def nodes(self):
        return list(self.swarm.nodes.values())

    def inspect_node(self, node_id):
        node = self.swarm.nodes[node_id]
        return {**node, "Version": {"Index": node.get("Version", 1)}}

    def update_node(self, node_id, version, node_spec):
        node = self.swarm.nodes[node_id]
        assert version == node.get("Version", 1), "update out of sequence"
        self.swarm.log.append((self.name, f"NODE UPDATE {node_id}"))
        node["Spec"], node["Version"] = node_spec, version + 1

    def close(self):
        pass


Session.engine = Engine


def make(names_roles, inv=None, swarm=None):
    swarm = swarm or FakeSwarm()
    hosts = [Host(n, f"10.0.0.{i}", role=r) for i, (n, r) in enumerate(names_roles, 1)]
    sessions = {h.name: Session(swarm, h.name) for h in hosts}
    step = SwarmStep(sessions, hosts, {h.name: h.public_address for h in hosts},
                     {h.name: {"zone": "a"} for h in hosts}, inv or {"hosts": {}},
                     engine_api=lambda h: Engine(swarm, h.name), sleep=lambda s: None)
    return swarm, step


def facts_of(swarm, name):
    return F.parse_swarm_facts(json.dumps(swarm.swarm_json(name)))


def test_init_and_joins_do_not_wait_for_the_slowest_worker():
    swarm, step = make([("m1", "manager"), ("w1", "worker"), ("w2", "worker")])
    seen_before_w2 = []

    def arrivals():
        yield "m1", facts_of(swarm, "m1")
        yield "w1", facts_of(swarm, "w1")
        seen_before_w2.extend(swarm.log)       # w2's engine is still starting here
        yield "w2", facts_of(swarm, "w2")

    nodes = step.converge(arrivals())
    assert any("swarm init" in w for _, w in seen_before_w2)
    assert ("w1", "JOIN") in seen_before_w2 or ("w1", "JOIN") in swarm.log
    assert ("w2", "JOIN") in swarm.log
    assert {n["name"]: n["node_id"] for n in nodes} == {"m1": "id-m1", "w1": "id-w1",
                                                       "w2": "id-w2"}
    assert all(n["Spec"]["Labels"] == {"zone": "a"} for n in swarm.nodes.values())
    # one node listing for the whole step, one token fetch for all the workers
    assert sum("node ls" in w for _, w in swarm.log) == 1
    assert sum("join-token" in w for _, w in swarm.log) == 1


def test_a_foreign_host_known_before_init_is_refused_before_init():
    swarm, step = make([("m1", "manager"), ("w1", "worker"), ("w2", "worker")])
    swarm.state["w1"] = {"LocalNodeState": "active", "NodeID": "other-node",
                         "ControlAvailable": False, "RemoteManagers": [{"Addr": "9.9.9.9:2377"}]}

    def arrivals():
        yield "m1", facts_of(swarm, "m1")
        yield "w2", facts_of(swarm, "w2")
        yield "w1", facts_of(swarm, "w1")       # its engine answered when first read

    with pytest.raises(ForeignSwarmError) as e:
        step.converge(arrivals(), known={"w1": facts_of(swarm, "w1")})
    assert e.value.host == "w1" and "9.9.9.9:2377" in str(e.value)
    assert not any("swarm init" in w or w == "JOIN" for _, w in swarm.log)


def test_a_foreign_worker_arriving_late_is_refused_and_the_others_join():
    swarm, step = make([("m1", "manager"), ("w1", "worker"), ("w2", "worker")])

    def arrivals():
        yield "m1", facts_of(swarm, "m1")
        yield "w1", facts_of(swarm, "w1")
        # w2's engine came up in a swarm of its own
        yield "w2", F.parse_swarm_facts(json.dumps({
            "LocalNodeState": "active", "NodeID": "other-node", "ControlAvailable": True,
            "Cluster": {"ID": "other-cluster"}}))

    with pytest.raises(ForeignSwarmError) as e:
        step.converge(arrivals())
    assert e.value.host == "w2"
    assert ("w1", "JOIN") in swarm.log
    assert not any(name == "w2" for name, _ in swarm.log)      # nothing sent to w2


def test_a_worker_whose_engine_failed_is_reported_after_the_others_joined():
    swarm, step = make([("m1", "manager"), ("w1", "worker"), ("w2", "worker"),
                        ("w3", "worker")])

    def arrivals():
        yield "m1", facts_of(swarm, "m1")
        yield "w1", SwarmsmithError("engine did not start", host="w1")
        yield "w2", facts_of(swarm, "w2")
        yield "w3", SwarmsmithError("engine did not start", host="w3")

    with pytest.raises(GroupError) as e:
        step.converge(arrivals())
    assert set(e.value.errors) == {"w1", "w3"}
    assert ("w2", "JOIN") in swarm.log


def test_a_manager_whose_engine_failed_stops_the_step_before_init():
    swarm, step = make([("m1", "manager"), ("w1", "worker")])

    def arrivals():
        yield "w1", facts_of(swarm, "w1")
        yield "m1", SwarmsmithError("engine did not start", host="m1")

    with pytest.raises(SwarmsmithError, match="engine did not start"):
        step.converge(arrivals())
    assert swarm.log == []


def test_a_no_op_reads_the_nodes_once_and_changes_nothing():
    swarm, step = make([("m1", "manager"), ("w1", "worker")])
    step.converge()
    inv = step.inv
    swarm.log.clear()
    _, again = make([("m1", "manager"), ("w1", "worker")], inv=inv)
    again.s = {n: Session(swarm, n) for n in ("m1", "w1")}
    nodes = again.converge(iter([("m1", facts_of(swarm, "m1")), ("w1", facts_of(swarm, "w1"))]))
    assert again.changes == []
    assert [w for _, w in swarm.log] == [F.NODES.wire()]
    assert [n["node_id"] for n in nodes] == ["id-m1", "id-w1"]


MANAGER_TOKEN = TOKEN.replace("aaaa", "mmmm")


class ManagersFirstSwarm(FakeSwarm):
    """A joining manager stays unreachable until a worker has joined: if the workers waited
    for the managers' one-at-a-time joins, the managers would never become reachable."""

    def reachable(self) -> bool:
        return any(what == "JOIN" and name.startswith("w") for name, what in self.log)

    def listed(self) -> list[dict]:
        for n in self.nodes.values():
            if n["ManagerStatus"] is not None and n["Description"]["Hostname"] != "m1":
                n["ManagerStatus"]["Reachability"] = "reachable" if self.reachable() else "unknown"
        return list(self.nodes.values())


class ManagersFirstSession(Session):
    def run(self, cmd, check=True, timeout=300):
        w = cmd.wire()
        if "join-token" in w and "manager" in w:
            self.swarm.log.append((self.name, w))
            return Result(MANAGER_TOKEN + "\n", "", 0)
        if "node inspect" in w and "node ls" in w:
            self.swarm.listed()
        return super().run(cmd, check, timeout)


class ManagersFirstEngine(Engine):
    def nodes(self):            # the reachability wait lists nodes through the leader's API
        self.swarm.log.append((self.name, "API NODES"))
        return self.swarm.listed()

    def join_swarm(self, remote_addrs, join_token, listen_addr=None, advertise_addr=None):
        role = "manager" if join_token == MANAGER_TOKEN else "worker"
        self.swarm.log.append((self.name, "JOIN"))
        self.swarm.add_node(self.name, role)


ManagersFirstSession.engine = ManagersFirstEngine


def test_workers_join_while_the_managers_join_one_at_a_time():
    import time as _time
    swarm = ManagersFirstSwarm()
    names = [("m1", "manager"), ("m2", "manager"), ("m3", "manager"), ("w1", "worker"),
             ("w2", "worker")]
    hosts = [Host(n, f"10.0.0.{i}", role=r) for i, (n, r) in enumerate(names, 1)]
    now = [0.0]

    def sleep(s):           # fake time (the reachability deadline), a real yield to the joins
        now[0] += s
        _time.sleep(0.002)
    step = SwarmStep({h.name: ManagersFirstSession(swarm, h.name) for h in hosts}, hosts,
                     {h.name: h.public_address for h in hosts},
                     {h.name: {"zone": "a"} for h in hosts}, {"hosts": {}},
                     engine_api=lambda h: ManagersFirstEngine(swarm, h.name),
                     clock=lambda: now[0], sleep=sleep)
    nodes = step.converge(iter([(h.name, facts_of(swarm, h.name)) for h in hosts]))
    joins = [name for name, what in swarm.log if what == "JOIN"]
    assert sorted(joins) == ["m2", "m3", "w1", "w2"]
    assert joins.index("w1") < joins.index("m3") or joins.index("w2") < joins.index("m3")
    assert {n["name"]: n["role"] for n in nodes} == dict(names)
    assert all(n["Spec"]["Labels"] == {"zone": "a"} for n in swarm.nodes.values())
    # one manager token for both managers; the reachability waits list nodes through the
    # leader's API, not with a CLI process each
    assert sum("join-token" in w and "manager" in w for _, w in swarm.log) == 1
    assert sum("node ls" in w for _, w in swarm.log) == 1
    assert ("m1", "API NODES") in swarm.log
    # a joined node's ID comes with the join's own call, and the leader's swarm state with the
    # init's: no separate read of the swarm state over SSH
    assert [n for n, w in swarm.log if w == F.SWARM_FACTS.wire()] == []
    assert ("m1", "swarm init (curl)") in swarm.log


# --- the plan: the same decisions from the same facts, nothing changed ------------------

def plan_of(swarm, names_roles, inv, labels=None, absent=()):
    _, step = make(names_roles, inv=inv)
    step.s = {n: Session(swarm, n) for n, _ in names_roles}
    if labels is not None:
        step.labels = labels
    swarm.log.clear()
    facts = {n: facts_of(swarm, n) for n, _ in names_roles if n not in absent}
    out = step.plan(facts)
    changed = [w for _, w in swarm.log if w != F.NODES.wire()]
    assert changed == [], f"the plan sent {changed}"
    return out


def test_plan_after_converge_says_nothing_and_changes_nothing():
    roles = [("m1", "manager"), ("w1", "worker"), ("w2", "worker")]
    swarm, step = make(roles)
    step.converge()
    assert plan_of(swarm, roles, step.inv) == []


def test_plan_of_a_new_swarm_inits_the_first_manager_and_joins_the_others():
    swarm = FakeSwarm()
    roles = [("m1", "manager"), ("w1", "worker"), ("w2", "worker")]
    assert plan_of(swarm, roles, {"hosts": {}}, absent=("w2",)) == [
        "m1: swarm initialised (advertise 10.0.0.1)", "m1: labels zone=a",
        "w1: joined as worker (advertise 10.0.0.2)", "w1: labels zone=a",
        "w2: joined as worker (advertise 10.0.0.3)", "w2: labels zone=a"]


def by_host(lines):
    out = {}
    for line in lines:
        out.setdefault(line.split(": ", 1)[0], []).append(line)
    return out


def test_plan_lists_what_converge_then_reports():
    """The plan's lines are the changes converge reports after it, host by host in the same
    order (hosts' steps run concurrently, so only each host's own order is fixed)."""
    roles = [("m1", "manager"), ("w1", "worker"), ("w2", "worker")]
    swarm = FakeSwarm()
    planned = plan_of(swarm, roles, {"hosts": {}})
    _, step = make(roles, swarm=swarm)
    step.converge()
    assert by_host(step.changes) == by_host(planned) and len(step.changes) == len(planned) == 6
    # then: w1 to be a manager, w2 relabelled, w3 new
    changed = [("m1", "manager"), ("w1", "manager"), ("w2", "worker"), ("w3", "worker")]
    labels = {n: {"zone": "a"} for n, _ in changed} | {"w2": {"zone": "c"}}
    planned = plan_of(swarm, changed, step.inv, labels=labels)
    _, again = make(changed, inv=step.inv, swarm=swarm)
    again.labels = labels
    again.converge()
    assert by_host(again.changes) == by_host(planned) == {
        "w1": ["w1: promoted to manager"], "w2": ["w2: labels zone=c"],
        "w3": ["w3: joined as worker (advertise 10.0.0.4)", "w3: labels zone=a"]}
    assert plan_of(swarm, changed, again.inv, labels=labels) == []


def test_plan_names_promotions_demotions_labels_and_new_nodes():
    roles = [("m1", "manager"), ("w1", "worker"), ("w2", "worker")]
    swarm, step = make(roles)
    step.converge()
    changed = [("m1", "manager"), ("w1", "manager"), ("w2", "worker"), ("w3", "worker")]
    swarm.nodes["id-w2"]["Spec"]["Role"] = "manager"      # promoted by hand
    labels = {n: {"zone": "a"} for n, _ in changed} | {"w1": {"zone": "b"}}
    assert plan_of(swarm, changed, step.inv, labels=labels) == [
        "w1: promoted to manager", "w1: labels zone=b", "w2: demoted to worker",
        "w3: joined as worker (advertise 10.0.0.4)", "w3: labels zone=a"]


def test_plan_refuses_a_foreign_swarm_as_converge_does():
    roles = [("m1", "manager"), ("w1", "worker")]
    swarm, step = make(roles)
    step.converge()
    swarm.state["w1"] = {"LocalNodeState": "active", "NodeID": "other-node",
                         "ControlAvailable": False, "RemoteManagers": [{"Addr": "9.9.9.9:2377"}]}
    with pytest.raises(ForeignSwarmError) as e:
        plan_of(swarm, roles, step.inv)
    assert e.value.host == "w1"


class HostSession(Session):
    """A fake swarm host as `up` reaches it over SSH: the facts command answers with a running
    engine and the host's swarm state (hostname h-<name>, as machines rarely share the
    cluster file's names)."""
    swarm: FakeSwarm = None

    def __init__(self, host, **kw):
        super().__init__(self.swarm, host.name)
        blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + bytes([len(host.name)]) * 32
        self.host, self.seen_key = host, "ssh-ed25519 " + base64.b64encode(blob).decode()

    def connect(self):
        return self

    def close(self):
        pass

    def run(self, cmd, check=True, timeout=300):
        if cmd.description.startswith("gather engine and swarm facts"):
            info = {"ServerVersion": "20.10.24", "Swarm": self.swarm.swarm_json(self.name)}
            body = json.dumps({"storage-driver": "overlay2"})
            return Result(f"os=debian\nhostname=h-{self.name}\ndockerd=/usr/bin/dockerd\n"
                          "systemd=0\ninitscript=1\napt=1\napt_proxy=\napt_mirror=\n"
                          f"addresses=eth0=10.0.0.1/24 \n---info---\n{json.dumps(info)}\n"
                          f"---daemon.json---\n{body}\n"
                          # the record's configs, as a manager sends them (none here)
                          + ("---records---\n[]\n" if "m" in self.name else ""), "", 0)
        if "node inspect self" in cmd.wire():
            own = self.swarm.nodes[self.swarm.state[self.name]["NodeID"]]
            return Result(json.dumps(own["Spec"]["Labels"]), "", 0)
        return super().run(cmd, check, timeout)


def test_plan_of_a_live_static_cluster_says_nothing(tmp_path, monkeypatch):
    """plan on existing hosts read them as up does: it once listed none for a static cluster
    and planned 'engine set up, join swarm as manager' and 'swarm init' on a live swarm."""
    from provision import bootstrap
    roles = [("m1", "manager"), ("w1", "worker")]
    swarm, step = make(roles)
    step.converge()                     # the live swarm, made by an earlier up
    (tmp_path / "k").write_text("")
    (tmp_path / "c.yml").write_text(
        "name: live\nprovider: static\nssh: {key: k}\n"
        "engine: {install: never, daemon: {storage-driver: overlay2}, "
        "apt_proxy: 'http://p:3142', apt_mirror: 'http://m/debian'}\n"
        "labels: {all: {zone: a}}\nstatic:\n  hosts:\n"
        "    - {name: m1, address: 10.0.0.1, role: manager}\n"
        "    - {name: w1, address: 10.0.0.2, role: worker}\n")
    state = tmp_path / ".swarmsmith" / "live"
    state.mkdir(parents=True)
    HostSession.swarm = swarm
    monkeypatch.setattr(bootstrap, "Session", HostSession)
    for n in swarm.nodes.values():
        n["Spec"]["Labels"]["swarmsmith.cluster"] = "live"
    swarm.log.clear()
    res = bootstrap.up(str(tmp_path / "c.yml"), bootstrap.UpOptions(dry_run=True))
    pins = [c for c in res.changes if "host key" in c]
    # the one write up makes: this swarm has no cluster record yet
    assert [c for c in res.changes if c not in pins] == [
        "cluster record version 1 written to the swarm"], res.changes
    assert not any("swarm init" in w or "JOIN" in w for _, w in swarm.log)
    # a worker that is not in the swarm yet, and a label to change: named, nothing else
    swarm.state["w1"] = {"LocalNodeState": "inactive"}
    (tmp_path / "c.yml").write_text((tmp_path / "c.yml").read_text()
                                    .replace("{zone: a}", "{zone: b}"))
    res = bootstrap.up(str(tmp_path / "c.yml"), bootstrap.UpOptions(dry_run=True))
    assert [c for c in res.changes if "host key" not in c] == [
        "m1: labels zone=b", "w1: joined as worker (advertise 10.0.0.2)",
        "w1: labels swarmsmith.cluster=live zone=b", "cluster record version 1 written to the swarm"]
