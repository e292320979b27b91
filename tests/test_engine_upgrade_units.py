"""Units of `swarmsmith engine upgrade`: batch choice from a placement, constraints, quorum
arithmetic, order, and the run against a fake swarm (which node is where when it stops). No
root, no network."""
from __future__ import annotations

import os

import pytest

from provision import upgrade as U


def node(name, role="worker", leader=False, reach="reachable", state="ready",
         availability="active", labels=None):
    n = {"ID": f"id-{name}", "Version": {"Index": 1},
         "Description": {"Hostname": name, "Platform": {"OS": "linux", "Architecture": "x86_64"}},
         "Spec": {"Role": role, "Availability": availability, "Labels": labels or {}},
         "Status": {"State": state}}
    if role == "manager":
        n["ManagerStatus"] = {"Leader": leader, "Reachability": reach}
    return n


def service(name, replicas=None, constraints=(), max_per_node=0, host_port=False):
    mode = {"Replicated": {"Replicas": replicas}} if replicas is not None else {"Global": {}}
    spec = {"Name": name, "Mode": mode,
            "TaskTemplate": {"Placement": {"Constraints": list(constraints),
                                           **({"MaxReplicas": max_per_node} if max_per_node else {})}}}
    if host_port:
        spec["EndpointSpec"] = {"Ports": [{"PublishMode": "host", "PublishedPort": 80}]}
    return {"ID": f"svc-{name}", "Spec": spec}


def task(svc, on, state="running"):
    return {"ServiceID": f"svc-{svc}", "NodeID": f"id-{on}", "DesiredState": "running",
            "Status": {"State": state}}


M3 = [node("m1", "manager", leader=True), node("m2", "manager"), node("m3", "manager")]
W4 = [node(f"w{i}") for i in range(1, 5)]


def names(batch):
    return [U._name(n) for n in batch]


def test_one_task_per_service_per_batch():
    nodes = M3 + W4
    svcs = [service("web", 3)]
    tasks = [task("web", "w1"), task("web", "w2"), task("web", "w3")]
    # w1 and w2 both run web: not in one batch; w4 runs nothing
    assert names(U.next_worker_batch(W4, nodes, svcs, tasks, 2)) == ["w1", "w4"]
    assert names(U.next_worker_batch(W4, nodes, svcs, tasks, 4)) == ["w1", "w4"]
    assert U.plan_order(nodes, svcs, tasks, 2) == [["w1", "w4"], ["w2"], ["w3"],
                                                   ["m2"], ["m3"], ["m1"]]


def test_room_left_for_constrained_and_host_port_services():
    nodes = M3 + W4[:2]
    workers_only = service("api", 2, constraints=["node.role==worker"], max_per_node=1)
    # two workers, two replicas, one per node: neither worker can go without leaving no room
    with pytest.raises(U.UpgradeRefused, match="api needs room for 2 replicas"):
        U.next_worker_batch(W4[:2], nodes, [workers_only], [], 1)
    # without the per-node cap the other worker holds both
    relaxed = service("api", 2, constraints=["node.role==worker"])
    assert names(U.next_worker_batch(W4[:2], nodes, [relaxed], [], 1)) == ["w1"]
    # a host-mode port caps at one per node: 5 nodes, 4 replicas -> one node at a time
    ports = service("edge", 4, host_port=True)
    assert names(U.next_worker_batch(W4, M3[:1] + W4, [ports], [], 4)) == ["w1"]
    assert names(U.next_worker_batch(W4, M3 + W4, [ports], [], 4)) == ["w1", "w2", "w3"]


@pytest.mark.parametrize("expr,ok", [
    ("node.role==worker", True), ("node.role!=worker", False), ("node.role == manager", False),
    ("node.hostname==w1", True), ("node.labels.zone==a", True), ("node.labels.zone!=a", False),
    ("node.labels.tier==db", False), ("node.platform.os==linux", True),
    ("engine.labels.ssd==true", True),
])
def test_constraints(expr, ok):
    assert U.constraint_ok(node("w1", labels={"zone": "a"}), expr) is ok


def test_drained_and_down_nodes_are_no_room():
    nodes = M3 + [node("w1"), node("w2", availability="drain"), node("w3", state="down")]
    svc = service("api", 1, constraints=["node.role==worker"])
    assert U.batch_problem([nodes[3]], nodes, [svc], []) == (
        "api needs room for 1 replicas; without w1 the nodes it may run on hold 0")


@pytest.mark.parametrize("managers,ok", [
    ([node("m1", "manager", True), node("m2", "manager"), node("m3", "manager")], True),
    ([node("m1", "manager", True), node("m2", "manager"),
      node("m3", "manager", reach="unreachable")], False),
    ([node("m1", "manager", True)], True),           # a single manager: nothing to keep
    ([node("m1", "manager", True)] + [node(f"m{i}", "manager") for i in range(2, 6)], True),
])
def test_quorum_after_losing_one(managers, ok):
    assert U.quorum_after_losing_one(managers)[0] is ok


def test_managers_followers_first_leader_last():
    ms = [node("m1", "manager"), node("m2", "manager", leader=True), node("m3", "manager")]
    assert names(U.managers_in_order(ms)) == ["m1", "m3", "m2"]


# --- the run against a fake swarm -----------------------------------------------------------

class FakeSwarm:
    def __init__(self, nodes, services, tasks):
        self._nodes, self._services, self._tasks = nodes, services, tasks
        self.managers = [U._name(n) for n in nodes if U._role(n) == "manager"]
        self.busy = set()
        self.log = []

    def nodes(self):
        return self._nodes

    def services(self):
        return self._services

    def tasks(self):
        return [t for t in self._tasks if t["NodeID"] not in self._drained()]

    def _drained(self):
        return {n["ID"] for n in self._nodes if n["Spec"]["Availability"] == "drain"}

    def set_availability(self, node_id, availability):
        self.log.append((node_id[3:], availability))
        for n in self._nodes:
            if n["ID"] == node_id:
                n["Spec"]["Availability"] = availability

    def mark(self, node_id, availability):
        for n in self._nodes:
            if n["ID"] == node_id:
                n["Spec"]["Labels"][U.MARK] = availability

    def unmark(self, node_id):
        for n in self._nodes:
            if n["ID"] == node_id:
                n["Spec"]["Labels"].pop(U.MARK, None)


class FakeUpgrader(U.Upgrader):
    def __init__(self, swarm, fail_on=None):
        super().__init__(swarm, {}, {}, "distro", "20.10.24", U.UpgradeOptions(poll=0),
                         lambda node, msg: None, clock=iter(range(0, 10**6)).__next__,
                         sleep=lambda s: None)
        self.fail_on = fail_on

    def install_on(self, name):
        self.swarm.log.append((name, "install"))
        if name == self.fail_on:
            raise U.UpgradeError("install failed: E: Unable to locate package", host=name)


def test_run_order_drain_install_activate():
    swarm = FakeSwarm([node("m1", "manager", True)] + [node("w1"), node("w2")],
                      [service("web", 2)], [task("web", "w1"), task("web", "w2")])
    res = FakeUpgrader(swarm).run(U.UpgradeResult("c", "20.10.24", [], {"m1": "", "w1": "",
                                                                       "w2": ""}))
    assert res.done == ["w1", "w2", "m1"]
    assert swarm.log == [("w1", "drain"), ("w1", "install"), ("w1", "active"),
                         ("w2", "drain"), ("w2", "install"), ("w2", "active"),
                         ("m1", "drain"), ("m1", "install"), ("m1", "active")]


def test_a_failure_stops_the_run_and_says_where_each_node_is():
    swarm = FakeSwarm([node("m1", "manager", True)] + [node("w1"), node("w2")], [], [])
    up = FakeUpgrader(swarm, fail_on="w2")
    with pytest.raises(U.UpgradeError) as e:
        up.run(U.UpgradeResult("c", "20.10.24", [], {"m1": "", "w1": "", "w2": ""}))
    msg = str(e.value)
    # w2's engine is as it was and Ready: it gets its availability back, and the error says so
    assert msg == ("engine upgrade stopped at w2: w2: install failed: E: Unable to locate "
                   "package. w2 is active again (it was drained, engine being installed). "
                   "Upgraded: w1; not started: m1")
    assert swarm.log[-2:] == [("w2", "install"), ("w2", "active")]
    assert ("m1", "drain") not in swarm.log        # nothing after the failure
    w2 = swarm._nodes[2]
    assert w2["Spec"]["Availability"] == "active" and U.MARK not in w2["Spec"]["Labels"]


def test_a_failed_batch_is_given_its_availability_back_not_left_drained_unsaid():
    """Both workers drained together and the install fails on the first (apt could not reach
    its sources): the one not yet touched and the failed one are Ready, and get back what they
    had (active, pause); none is left drained for the next deploy to find without room."""
    w1, w2 = node("w1"), node("w2", availability="pause")
    swarm = FakeSwarm([node("m1", "manager", True), w1, w2], [], [])
    up = FakeUpgrader(swarm, fail_on="w1")
    up.opts.max_batch = 2
    with pytest.raises(U.UpgradeError) as e:
        up.run(U.UpgradeResult("c", "20.10.24", [], {"m1": "", "w1": "", "w2": ""}))
    assert (w1["Spec"]["Availability"], w2["Spec"]["Availability"]) == ("active", "pause")
    assert U.MARK not in w1["Spec"]["Labels"] and U.MARK not in w2["Spec"]["Labels"]
    assert "w1 is active again (it was drained, engine being installed); " \
           "w2 is pause again (it was drained)" in str(e.value)


def test_a_node_not_ready_after_a_failure_stays_drained_and_the_error_says_how_to_undo_it():
    swarm = FakeSwarm([node("m1", "manager", True), node("w1")], [], [])

    class Broken(FakeUpgrader):
        def install_on(self, name):
            super().install_on(name)
            swarm._nodes[1]["Status"]["State"] = "down"      # its engine did not come back
    up = Broken(swarm)
    up.opts.ready_timeout = 5
    with pytest.raises(U.UpgradeError) as e:
        up.run(U.UpgradeResult("c", "20.10.24", [], {"m1": "", "w1": ""}))
    w1 = swarm._nodes[1]
    assert w1["Spec"]["Availability"] == "drain" and w1["Spec"]["Labels"][U.MARK] == "active"
    assert ("w1 is drained, engine restarted, not Ready, left drained; `swarmsmith engine "
            "upgrade` run again finishes it and gives its availability back, `swarmsmith node "
            "activate w1` gives it back now") in str(e.value)


class RecordingSession:
    """A host that answers every command, keeping what it ran (description and stdin)."""

    def __init__(self, server="20.10.24+dfsg1"):
        self.ran, self.server = [], server

    def run(self, cmd, check=True, timeout=60):
        from provision.remote.ssh import Result
        self.ran.append((cmd.description, (cmd.stdin or b"").decode()))
        if cmd.description.startswith("gather engine"):
            return Result(f"systemd=1\napt=1\nserver={self.server}\n", "", 0)
        return Result("", "", 0)


def test_the_install_uses_the_apt_proxy_and_mirror_up_would_set():
    """A host whose engine came preinstalled never had `up` write its apt proxy; the upgrade's
    install must reach packages the same way `up`'s does (a lab host has no other way out)."""
    from provision.engine import install as E
    swarm = FakeSwarm([node("m1", "manager", True)], [], [])
    s = RecordingSession()
    facts = {"m1": {"os": "debian", "apt": True, "apt_proxy": "", "apt_mirror": "",
                    "systemd": True, "server": "20.10.24+dfsg1"}}
    up = U.Upgrader(swarm, {"m1": s}, facts, "distro", "", U.UpgradeOptions(poll=0),
                    lambda node, msg: None,
                    apt={"m1": E.AptSettings(proxy="http://apt-proxy.lab:3142",
                                             mirror="http://mirror.example/debian")})
    up.result = U.UpgradeResult("c", "", [], {})
    up.install_on("m1")
    did = [d for d, _ in s.ran]
    assert did.index("write apt's proxy setting") < did.index("install the Docker engine")
    assert did.index("point apt at the mirror") < did.index("install the Docker engine")
    assert 'Acquire::http::Proxy "http://apt-proxy.lab:3142";' in dict(s.ran)[
        "write apt's proxy setting"]
    assert "m1: apt proxy set to http://apt-proxy.lab:3142" in up.result.changes
    # a host that has them already is left as it is
    s2 = RecordingSession()
    facts["m1"].update(apt_proxy="http://apt-proxy.lab:3142",
                       apt_mirror="http://mirror.example/debian")
    up.sessions = {"m1": s2}
    up.install_on("m1")
    assert [d for d, _ in s2.ran if "apt" in d] == []


def test_refuses_to_start_without_whole_quorum():
    swarm = FakeSwarm([node("m1", "manager", True), node("m2", "manager"),
                       node("m3", "manager", reach="unreachable")], [], [])
    with pytest.raises(U.UpgradeRefused, match="not every manager is reachable") as e:
        FakeUpgrader(swarm).run(U.UpgradeResult("c", "", [], {}))
    assert e.value.exit_code == 5 and swarm.log == []


def test_refused_on_default_image_lab_hosts_before_any_connection(tmp_path):
    """Those hosts share the machine's /usr and dpkg database."""
    from tests.conftest import REPO
    import subprocess
    import sys
    (tmp_path / "swarmsmith.yml").write_text("name: frx\nmanagers: 1\n")
    proc = subprocess.run([sys.executable, f"{REPO}/cli.py", "engine", "upgrade"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "swarmsmith.yml: lab.image: lab hosts with the default image share" in proc.stderr
    assert not (tmp_path / ".swarmsmith").exists()


def test_ticking_reports_until_the_block_ends():
    import time as _time
    from provision.remote.parallel import ticking
    seen = []
    with ticking(lambda host, msg: seen.append((host, msg)), "h1", "installing", every=0.02):
        _time.sleep(0.15)
    n = len(seen)
    _time.sleep(0.1)
    assert seen[0] == ("h1", "installing") and n >= 3 and len(seen) == n
    assert all(m.startswith("installing (") and m.endswith("s)") for _, m in seen[1:])


def test_no_tick_is_reported_after_the_block_ends():
    """A tick already under way when the block ends finishes before the block's exit returns:
    its line never comes after the step's own result."""
    import time as _time
    from provision.remote.parallel import ticking
    seen = []

    def slow(host, msg):
        if "(" in msg:
            _time.sleep(0.03)       # a tick line takes a while to get out
        seen.append(msg)
    with ticking(slow, "h1", "installing", every=0.01):
        _time.sleep(0.1)
    seen.append("installed")
    _time.sleep(0.1)
    assert seen[-1] == "installed"


@pytest.mark.parametrize("args,words", [
    (["--batch", "0"], "--batch: must be at least 1"),
    (["--version", "24.0;reboot"], '--version: expected a version like "24.0"'),
    (["--batch", "x"], "invalid int value"),
])
def test_bad_flags_exit_2_before_anything(tmp_path, args, words):
    import subprocess
    import sys
    from tests.conftest import REPO
    proc = subprocess.run([sys.executable, f"{REPO}/cli.py", "engine", "upgrade", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    assert os.listdir(tmp_path) == []


def test_lab_up_unknown_image_exits_2():
    import subprocess
    import sys
    from tests.conftest import REPO
    proc = subprocess.run([sys.executable, f"{REPO}/cli.py", "lab", "up", "--name", "frz",
                           "--image", "debian-11"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice: 'debian-11'" in proc.stderr


def test_a_node_left_drained_by_a_killed_run_gets_its_availability_back():
    # the killed run drained w1 after marking it active; a paused w2 stays paused
    w1 = node("w1", availability="drain", labels={U.MARK: "active"})
    w2 = node("w2", availability="pause")
    swarm = FakeSwarm([node("m1", "manager", True), w1, w2], [], [])
    FakeUpgrader(swarm).run(U.UpgradeResult("c", "20.10.24", [], {}))
    assert w1["Spec"]["Availability"] == "active" and U.MARK not in w1["Spec"]["Labels"]
    assert w2["Spec"]["Availability"] == "pause" and U.MARK not in w2["Spec"]["Labels"]


def test_the_run_ends_only_when_every_node_ready_at_the_start_is_ready_again():
    """After the leader's restart the new leader sees the workers as down for a while: the
    upgrade waits for them instead of returning on a cluster that looks broken."""
    swarm = FakeSwarm([node("m1", "manager", True)] + [node("w1"), node("w2")], [], [])
    seen = {"polls": 0}
    real_nodes = swarm.nodes

    def nodes():
        out = real_nodes()
        if ("m1", "install") in swarm.log:
            seen["polls"] += 1
            if seen["polls"] <= 6:           # the new leader's view lags for a few polls
                return [dict(n, Status={"State": "down"}) if U._name(n) == "w2" else n
                        for n in out]
        return out
    swarm.nodes = nodes
    res = FakeUpgrader(swarm).run(U.UpgradeResult("c", "20.10.24", [], {}))
    assert res.done == ["w1", "w2", "m1"]
    assert seen["polls"] > 6                 # it kept looking until w2 was Ready again


def test_a_node_update_refused_out_of_sequence_is_run_again():
    from provision.remote.command import Command
    from provision.upgrade import Swarm, UpgradeError
    from provision.remote.ssh import Result

    class Session:
        def __init__(self, refusals):
            self.refusals, self.runs = refusals, 0

        def run(self, cmd, check=True, timeout=60):
            self.runs += 1
            if self.refusals:
                self.refusals -= 1
                return Result("", "Error response from daemon: rpc error: code = Unknown "
                                  "desc = update out of sequence", 1)
            return Result("", "", 0)

    slept = []
    s = Session(refusals=2)
    Swarm({"m1": s}, ["m1"], sleep=slept.append).unmark("w1-id")
    assert s.runs == 3 and len(slept) == 2
    other = Session(refusals=0)
    other.run = lambda cmd, check=True, timeout=60: Result("", "node not found", 1)
    with pytest.raises(UpgradeError, match="node not found"):
        Swarm({"m1": other}, ["m1"], sleep=slept.append).unmark("w1-id")
    assert len(slept) == 2          # another refusal is not retried


def test_the_run_holds_the_managers_lock_and_checks_quorum_under_it():
    import contextlib
    swarm = FakeSwarm([node("m1", "manager", True), node("m2", "manager"), node("m3", "manager")],
                      [], [])
    held = []

    @contextlib.contextmanager
    def lock():
        # while this run waited for the lock, another runbook stopped m3's engine
        swarm._nodes[2]["ManagerStatus"]["Reachability"] = "unreachable"
        held.append("taken")
        try:
            yield
        finally:
            held.append("released")
    up = FakeUpgrader(swarm)
    up.lock = lock
    with pytest.raises(U.UpgradeRefused, match="not every manager is reachable"):
        up.run(U.UpgradeResult("c", "", [], {}))
    assert held == ["taken", "released"] and swarm.log == []


def test_a_task_a_down_node_still_lists_as_running_does_not_count():
    # a freshly elected leader lists a restarted node's tasks as running until it reports:
    # counted, the upgrade would call the services whole while one task is gone
    nodes = [node("m1", "manager", leader=True), node("w1", state="down"), node("w2")]
    swarm = FakeSwarm(nodes, [service("web", replicas=2)], [task("web", "w1"), task("web", "w2")])
    assert U.services_short(swarm) == "web 1/2"
    nodes[1]["Status"]["State"] = "ready"
    assert U.services_short(swarm) is None
