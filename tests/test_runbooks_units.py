"""Units of the day-two commands with fakes: quorum arithmetic and refusals, node lookup, drain's
waiting, promote/demote/label, scale parsing and specs, log line prefixes, backup archives."""
from __future__ import annotations

import io
import json
import os
import stat
import tarfile

import pytest

from provision.engine_api.node_names import NodeNames
from provision.swarm import nodes as N
from provision.swarm.backup import (build_manifest, pick_backup_node, read_archive, retarget_payload,
                              write_archive)
from provision.base.errors import EXIT_DEPLOY_FAILED, EXIT_TIMED_OUT, InputError
from provision.swarm.quorum import Quorum, QuorumRefused, check_manager_removal, quorum_of
from stacks.operations import service_ops as S
from tests.fakes.clock import FakeClock


def node(name, role="worker", reach=None, leader=False, state="ready", avail="active", idx=1):
    n = {"ID": f"{name}-id-0000000000000", "Version": {"Index": idx},
         "Spec": {"Role": role, "Availability": avail, "Labels": {}},
         "Status": {"State": state, "Addr": "10.0.0.1"},
         "Description": {"Hostname": name, "Engine": {"EngineVersion": "20.10.24"}}}
    if role == "manager":
        n["ManagerStatus"] = {"Leader": leader, "Reachability": reach or "reachable"}
    return n


def three(down: int = 0):
    return [node("m1", "manager", leader=True),
            node("m2", "manager", reach="unreachable" if down >= 1 else "reachable"),
            node("m3", "manager", reach="unreachable" if down >= 2 else "reachable"),
            node("w1")]


# --- quorum -------------------------------------------------------------------------------

@pytest.mark.parametrize("managers,reachable,ok,survives,state", [
    (1, 1, True, 0, "healthy"), (3, 3, True, 1, "healthy"), (3, 2, True, 0, "degraded"),
    (3, 1, False, 0, "lost"), (5, 5, True, 2, "healthy"), (5, 3, True, 0, "degraded"),
    (2, 2, True, 0, "healthy"), (2, 1, False, 0, "lost"), (0, 0, False, 0, "lost")])
def test_quorum_arithmetic(managers, reachable, ok, survives, state):
    q = Quorum(managers, reachable)
    assert (q.ok, q.survives, q.state) == (ok, survives, state)


def test_quorum_of_counts_reachable_managers_only():
    q = quorum_of(three(down=1))
    assert (q.managers, q.reachable, q.survives) == (3, 2, 0)
    assert "survives 0 more manager losses" in q.text()


def test_demote_refusals():
    nodes = three(down=1)
    with pytest.raises(QuorumRefused) as e:
        check_manager_removal(nodes, nodes[0], "demote")      # a reachable one of 2/3
    assert e.value.exit_code == 5
    after = check_manager_removal(nodes, nodes[1], "demote")  # the unreachable one: fine
    assert (after.managers, after.reachable, after.ok) == (2, 2, True)
    single = [node("m1", "manager", leader=True), node("w1")]
    with pytest.raises(QuorumRefused, match="last manager"):
        check_manager_removal(single, single[0], "demote")
    assert check_manager_removal(single, single[1], "demote").managers == 1


# --- a fake Engine API ------------------------------------------------------------------

class FakeAPI:
    def __init__(self, nodes, tasks=None, services=None):
        self._nodes = {n["ID"]: n for n in nodes}
        self._tasks = tasks or []
        self._services = services or []
        self.updates = []
        self.removed = []
        self.on_tasks = None          # called on every tasks() to move the world on

    def nodes(self):
        return list(self._nodes.values())

    def node(self, nid):
        return self._nodes[nid]

    def update_node(self, nid, version, spec):
        self.updates.append((nid, spec))
        self._nodes[nid] = {**self._nodes[nid], "Spec": spec}

    def remove_node(self, nid, force=False):
        self.removed.append((nid, force))
        del self._nodes[nid]

    def services(self, filters=None):
        return self._services

    def tasks(self, filters=None):
        if self.on_tasks:
            self.on_tasks(self)
        ts = self._tasks
        if filters and "node" in filters:
            ts = [t for t in ts if t["NodeID"] == filters["node"]]
        if filters and "service" in filters:
            want = filters["service"]
            want = want if isinstance(want, list) else [want]
            ts = [t for t in ts if t["ServiceID"] in want]
        return ts


def task(tid, sid, nid, state="running", desired="running", err="", slot=1):
    return {"ID": tid, "ServiceID": sid, "NodeID": nid, "Slot": slot, "DesiredState": desired,
            "Status": {"State": state, "Err": err, "Timestamp": "2026-01-01T00:00:00Z"}}


def Clock() -> FakeClock:
    return FakeClock(0.0, min_step=0.01)     # a poll that sleeps 0 still moves on


SVC = {"ID": "s1", "Spec": {"Name": "st_web", "Mode": {"Replicated": {"Replicas": 2}}}}


def test_find_node_by_name_or_id_prefix_and_unknown_is_input_error():
    ns = three()
    assert NodeNames().find(ns, "m2")["ID"] == ns[1]["ID"]
    assert NodeNames().find(ns, "w1-id")["ID"] == ns[3]["ID"]
    with pytest.raises(InputError, match="no such node"):
        NodeNames().find(ns, "nope")


def test_drain_waits_until_tasks_moved_and_reports_them():
    ns = three()
    w1 = ns[3]["ID"]
    api = FakeAPI(ns, [task("t1", "s1", w1), task("t2", "s1", ns[0]["ID"], slot=2)], [SVC])
    clock = Clock()
    calls = {"n": 0}

    def move(a):
        calls["n"] += 1
        if calls["n"] == 4:     # swarm reschedules t1 elsewhere after a few polls
            a._tasks = [task("t1", "s1", w1, state="shutdown", desired="shutdown"),
                        task("t3", "s1", ns[1]["ID"]), a._tasks[1]]
    api.on_tasks = move
    res = N.drain_node(api, "w1", N.DrainOptions(timeout=60), clock=clock, sleep=clock.sleep)
    assert res.exit_code == 0 and res.moved == ["st_web"] and not res.unplaced
    assert api.updates[0][1]["Availability"] == "drain"
    assert res.changes == ["w1: availability active -> drain"]


def test_drain_names_unplaceable_services_and_times_out_when_tasks_stay():
    ns = three()
    w1 = ns[3]["ID"]
    api = FakeAPI(ns, [task("t1", "s1", w1)], [SVC])

    def reschedule(a):      # after the drain: t1 stops, its replacement finds no node
        if a._nodes[w1]["Spec"]["Availability"] == "drain":
            a._tasks = [task("t1", "s1", w1, desired="shutdown", state="shutdown"),
                        task("t3", "s1", "", state="pending",
                             err="no suitable node (host-mode port already in use on 3 nodes)")]
    api.on_tasks = reschedule
    clock = Clock()
    res = N.drain_node(api, "w1", N.DrainOptions(timeout=60, settle=5), clock=clock,
                       sleep=clock.sleep)
    assert res.exit_code == EXIT_DEPLOY_FAILED and "no suitable node" in res.unplaced["st_web"]
    assert 5 <= clock.t < 60
    stuck = FakeAPI(three(), [task("t1", "s1", three()[3]["ID"])], [SVC])
    clock = Clock()
    res = N.drain_node(stuck, "w1", N.DrainOptions(timeout=10), clock=clock, sleep=clock.sleep)
    assert res.exit_code == EXIT_TIMED_OUT and res.remaining == ["st_web.1"]


def test_promote_keeps_the_count_odd_unless_forced_and_demote_refuses():
    ns = three()
    api = FakeAPI(ns)
    with pytest.raises(QuorumRefused, match="even"):
        N.promote_node(api, "w1")
    assert api.updates == []
    assert N.promote_node(api, "w1", force=True).changes == ["w1: promoted to manager (4 managers)"]
    api = FakeAPI(three(down=1))
    with pytest.raises(QuorumRefused):
        N.demote_node(api, "m1")
    assert api.updates == []
    assert N.demote_node(api, "m2").changes == ["m2: demoted to worker (2 managers left)"]


def test_label_adds_and_removes_and_is_idempotent():
    api = FakeAPI(three())
    assert N.label_node(api, "w1", {"a": "1"}, []).changes == ["w1: labels a=1"]
    assert N.label_node(api, "w1", {"a": "1"}, []).changes == []
    assert N.label_node(api, "w1", {}, ["a"]).changes == ["w1: labels -a"]


def test_rm_force_of_a_dead_node_explains_and_rm_refuses_down_without_force():
    ns = three()
    ns[3]["Status"]["State"] = "down"
    api = FakeAPI(ns)
    with pytest.raises(Exception, match="--force"):
        N.remove_node(api, "w1")
    res = N.remove_node(api, "w1", N.RemoveOptions(force=True))
    assert api.removed == [(ns[3]["ID"], True)] and "docker swarm leave --force" in res.notes[0]


# --- services -----------------------------------------------------------------------------

def test_parse_scale_args():
    assert S.parse_scale_args(["web=3", "st_api=0"]) == {"web": 3, "st_api": 0}
    for bad in ("web", "web=-1", "web=x", "=3", "web=99999999"):
        with pytest.raises(InputError):
            S.parse_scale_args([bad])


def test_scaled_spec_and_the_plan_note():
    svc = {"Spec": {"Name": "st_web", "Mode": {"Replicated": {"Replicas": 2}}, "Labels": {"x": "1"}}}
    spec = S.scaled_spec(svc, 5, "2026-01-01T00:00:00Z")
    assert spec["Mode"]["Replicated"]["Replicas"] == 5 and spec["Labels"]["x"] == "1"
    assert svc["Spec"]["Mode"]["Replicated"]["Replicas"] == 2        # not changed in place
    assert "scaled by hand to 5 replicas" in S.scaled_note(spec)
    assert S.scaled_note(svc["Spec"]) == ""


def test_since_and_log_prefix():
    assert S.since_epoch("10m", 1000.0) == 400
    assert S.since_epoch("1700000000", 0) == 1700000000
    with pytest.raises(InputError):
        S.since_epoch("yesterday", 0)
    tasks = {"abc": {"ID": "abc", "Slot": 2, "NodeID": "n1"}}
    line = "com.docker.swarm.node.id=n1,com.docker.swarm.service.id=s,com.docker.swarm.task.id=abc hello"
    assert S.prefix_line(line, "st_web", tasks, {"n1": "w1"}) == "st_web.2@w1 | hello"
    assert S.prefix_line("2026-01-01T00:00:00.1Z " + line, "st_web", tasks, {"n1": "w1"}) == \
        "st_web.2@w1 | 2026-01-01T00:00:00.1Z hello"


# --- backups ------------------------------------------------------------------------------

SWARM_FILES = ("swarm/state.json", "swarm/certificates/swarm-node.crt",
               "swarm/certificates/swarm-node.key", "swarm/certificates/swarm-root-ca.crt",
               "swarm/raft/wal-v3-encrypted/0000000000000000-0000000000000000.wal")


def _payload(state: dict, extra=(), drop=()) -> bytes:
    """A manager's swarm folder as backup copies it; `extra`: (TarInfo, data) members added."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in (("swarm/docker-state.json", json.dumps(state).encode()),
                           ("swarm/raft/wal", b"\x00\x01"),
                           *((f, b"x") for f in SWARM_FILES)):
            if name in drop:
                continue
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
        for ti, data in extra:
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def test_archive_round_trip_is_0600_and_damage_is_input_error(tmp_path):
    from datetime import datetime, timezone
    payload = _payload({"AdvertiseAddr": "10.0.0.2:2377"})
    m = build_manifest(cluster="c", swarm={"ID": "sw"}, node=node("m2", "manager"),
                       engine_version="20.10", services=[SVC], secrets=[], configs=[],
                       managers=3, payload=payload, now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    path = str(tmp_path / "b.tar")
    write_archive(path, m, payload)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    got, data = read_archive(path)
    assert got == m and data == payload and got["services"] == ["st_web"]
    with open(path, "r+b") as f:
        f.seek(1200)
        f.write(b"XXXX")
    with pytest.raises(InputError, match="b.tar"):
        read_archive(path)
    with pytest.raises(InputError, match="no such file"):
        read_archive(str(tmp_path / "none.tar"))


def test_retarget_rewrites_the_recorded_addresses():
    out = retarget_payload(_payload({"AdvertiseAddr": "10.0.0.2:2377", "ListenAddr": "0.0.0.0:2377",
                                     "LocalAddr": "10.0.0.2"}), "10.9.9.9")
    with tarfile.open(fileobj=io.BytesIO(out), mode="r:gz") as tar:
        st = json.loads(tar.extractfile("swarm/docker-state.json").read())
        assert tar.extractfile("swarm/raft/wal").read() == b"\x00\x01"
    assert st["AdvertiseAddr"] == "10.9.9.9:2377" and st["LocalAddr"] == "10.9.9.9"


def test_backup_node_is_a_non_leader_and_quorum_is_kept():
    hosts = {"m1": 1, "m2": 1, "m3": 1}
    assert pick_backup_node(three(), hosts)["Description"]["Hostname"] == "m2"
    with pytest.raises(QuorumRefused):
        pick_backup_node(three(down=1), hosts)
    single = [node("m1", "manager", leader=True)]
    assert pick_backup_node(single, hosts)["Description"]["Hostname"] == "m1"


def test_backup_node_asked_for_is_checked():
    hosts = {"m1": 1, "m2": 1, "m3": 1}
    assert pick_backup_node(three(), hosts, "m1")["Description"]["Hostname"] == "m1"
    with pytest.raises(InputError, match="--node w1"):
        pick_backup_node(three(), hosts, "w1")
    with pytest.raises(QuorumRefused):
        pick_backup_node(three(down=1), hosts, "m1")


def test_restore_address_rule():
    from provision.restore import check_restore_address
    m = {"node": "m2", "node_addr": "10.0.0.3"}
    notes = []
    check_restore_address(m, "m1", "10.0.0.3", {}, False, notes)
    assert notes == []
    with pytest.raises(InputError, match="cannot change it"):
        check_restore_address(m, "m1", "10.9.0.2", {}, False, [])
    with pytest.raises(InputError, match="now m2's"):
        check_restore_address(m, "m1", "10.0.0.2", {"10.0.0.3": "m2"}, False, [])
    check_restore_address(m, "m1", "10.0.0.2", {"10.0.0.3": "m2"}, True, notes)
    assert "managers cannot join" in notes[0]


def test_recover_renders_every_kind_of_up_event(capsys):
    # recover hands up's events on as they are; the runbooks' line renderer shows each kind
    from types import SimpleNamespace

    import cli
    from provision.base.progress import HostProgress, Notice, Waiting
    show = cli._timed_lines(SimpleNamespace(json=False))
    for ev in (HostProgress("m1", "engine started"), Waiting("m2 to be reachable"), Waiting(""),
               Notice("the managers lock taken"), "a lock's own line"):
        show(ev)
    lines = [line.split("] ", 1)[1] for line in capsys.readouterr().err.splitlines()]
    assert lines == [f"{'m1':<22} engine started", "m2 to be reachable",
                     "the managers lock taken", "a lock's own line"]
    assert cli._timed_lines(SimpleNamespace(json=True)) is None


class RescheduleAPI:
    """A swarm whose service `app` runs 1 of 2 replicas until `after` listings have passed."""

    def __init__(self, after: int):
        self.after, self.listings = after, 0

    def nodes(self):
        return [{"ID": "n1", "Description": {"Hostname": "m1"}, "Spec": {"Role": "manager"},
                 "Status": {"State": "ready"},
                 "ManagerStatus": {"Leader": True, "Reachability": "reachable"}}]

    def services(self, filters=None):
        self.listings += 1
        return [{"ID": "s1", "Spec": {"Name": "st_app", "Mode": {"Replicated": {"Replicas": 2}},
                                      "TaskTemplate": {"ContainerSpec": {"Image": "app:1"}}}}]

    def tasks(self, filters=None):
        running = 2 if self.listings > self.after else 1
        return [{"ServiceID": "s1", "DesiredState": "running", "Status": {"State": "running"}}
                for _ in range(running)]


@pytest.mark.parametrize("after, code, note", [
    (3, 0, "services run all their replicas again"),
    (10**6, 5, "still short: service st_app: 1/2 running")])
def test_recover_waits_for_the_services_to_be_back(monkeypatch, after, code, note):
    from types import SimpleNamespace

    from provision.engine_api import access
    from provision.engine_api.manager import Manager
    from provision.restore import RecoverResult, _wait_services_back
    api = RescheduleAPI(after)
    closed = []
    monkeypatch.setattr(access, "connect", lambda path, **kw: SimpleNamespace(
        api=api, close=lambda: closed.append(1)))
    now, said, slept = [0.0], [], []

    def sleep(s):
        slept.append(s)
        now[0] += s
    res = RecoverResult()
    _wait_services_back("c.yml", res, said.append, 120, lambda: now[0], sleep)
    assert res.exit_code == code and note in res.notes[-1] and closed == [1]
    assert said and all(s.startswith("waiting for the services' tasks to be rescheduled (")
                        and s.endswith("s): service st_app: 1/2 running") for s in said)
    assert len(said) == len(slept) and max(slept) <= 1.0     # a line at least every second
    assert now[0] <= 120


class ScaleAPI(FakeAPI):
    """FakeAPI plus the service calls scale makes; no low-level client (no lock, no swarm audit)."""
    api = None

    def service(self, sid):
        return next(s for s in self._services if s["ID"] == sid)

    def update_service(self, sid, version, spec):
        self.updates.append((sid, spec))
        svc = self.service(sid)
        svc["Spec"], svc["Version"] = spec, {"Index": version + 1}


def _fake_manager(monkeypatch, api):
    from provision.engine_api import access
    from provision.engine_api.manager import Manager
    conn = Manager(host=None, session=None, api=api)
    monkeypatch.setattr(conn, "close", lambda: None)
    monkeypatch.setattr(access, "connect", lambda path, **kw: conn)


def test_scale_and_node_ls_through_the_command_line(monkeypatch, capsys, tmp_path):
    # the command line builds options, the library scales, the command line renders
    import cli
    svc = {"ID": "s1", "Version": {"Index": 7},
           "Spec": {"Name": "web", "Mode": {"Replicated": {"Replicas": 1}}, "Labels": {}}}
    api = ScaleAPI([node("m1", "manager", leader=True), node("w1")], services=[svc])
    _fake_manager(monkeypatch, api)
    cluster = str(tmp_path / "c.yml")
    assert cli.main(["scale", "--cluster", cluster, "--detach", "web=3"]) == 0
    out = capsys.readouterr().out
    assert "  ~ web: replicas 1 -> 3\n" in out and "the next deploy's plan" in out
    assert api.updates[-1][1]["Mode"]["Replicated"]["Replicas"] == 3
    assert cli.main(["scale", "--cluster", cluster, "--json", "--detach", "web=3"]) == 0
    assert json.loads(capsys.readouterr().out) == {"changed": {}, "unchanged": ["web"],
                                                   "watch": None, "exit_code": 0}
    assert cli.main(["node", "ls", "--cluster", cluster]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("managers: ") and out[2].startswith("NODE ")
    assert [line.split()[0] for line in out[3:]] == ["m1", "w1"]


def test_a_node_update_out_of_sequence_is_read_again_and_redone():
    from provision.base.errors import SwarmsmithError

    class Racing(FakeAPI):
        """The node updates its own record once between our read and our write."""
        raced = False

        def update_node(self, nid, version, spec):
            node = self._nodes[nid]
            if not self.raced:
                self.raced = True
                self._nodes[nid] = {**node, "Version": {"Index": version + 1},
                                    "Spec": {**node["Spec"],
                                             "Labels": {**(node["Spec"].get("Labels") or {}),
                                                        "set-meanwhile": "1"}}}
            if version != self._nodes[nid]["Version"]["Index"]:
                raise SwarmsmithError("m1: Engine API update node: rpc error: code = Unknown "
                                      "desc = update out of sequence (HTTP 500)")
            super().update_node(nid, version, spec)

    api = Racing(three())
    assert N.label_node(api, "w1", {"a": "1"}, []).changes == ["w1: labels a=1"]
    # redone on the node as read again: the label set meanwhile is kept
    nid = "w1-id-0000000000000"
    assert len(api.updates) == 1 and api.updates[0][0] == nid
    assert api.node(nid)["Spec"]["Labels"] == {"set-meanwhile": "1", "a": "1"}


@pytest.mark.parametrize("value", ["-1", "nan", "1e9"])
def test_recover_wait_out_of_range_exits_2_before_anything(tmp_path, capsys, value):
    import cli
    code = cli.main(["recover", "--cluster", str(tmp_path / "none.yml"), "--wait", value])
    assert code == 2 and "--wait" in capsys.readouterr().err


def test_recover_reports_services_it_could_not_check(monkeypatch):
    from provision.engine_api import access
    from provision.engine_api.manager import Manager
    from provision.base.errors import SwarmsmithError
    from provision.restore import RecoverResult, _wait_services_back

    def refuse(path, **kw):
        raise SwarmsmithError("no manager answers", host="m1")
    monkeypatch.setattr(access, "connect", refuse)
    res = RecoverResult(changes=["m1: swarm re-formed with it as the only manager"])
    _wait_services_back("c.yml", res, lambda m: None, 120, lambda: 0.0, lambda s: None)
    assert res.exit_code == 5 and "could not be checked (m1: no manager answers)" in res.notes[-1]
    assert res.changes        # what was done stays in the report


def test_drain_waits_for_the_replicas_and_names_a_rejected_task_with_its_node():
    """A moved task rejected where it was placed (an image the node lacks) is not success: the
    drain waits for the service's replicas, then names the node and its reason (exit 10)."""
    ns = three()
    w1, m2 = ns[3]["ID"], ns[1]["ID"]
    old = task("t0", "s1", m2, state="failed", desired="shutdown", err="an older crash", slot=2)
    old["Status"]["Timestamp"] = "2025-01-01T00:00:00Z"
    api = FakeAPI(ns, [task("t1", "s1", w1), task("t2", "s1", ns[0]["ID"], slot=2), old], [SVC])

    def reschedule(a):      # t1 stops; its replacements are rejected on m2, one after another
        if a._nodes[w1]["Spec"]["Availability"] == "drain":
            n = len([t for t in a._tasks if t["ID"].startswith("r")])
            rejected = [task(f"r{i}", "s1", m2, state="rejected", desired="shutdown",
                             err="No such image: app:1") for i in range(n + 1)]
            a._tasks = [task("t1", "s1", w1, state="shutdown", desired="shutdown"),
                        a._tasks[1], old, *rejected]
    api.on_tasks = reschedule
    clock = Clock()
    res = N.drain_node(api, "w1", N.DrainOptions(timeout=60, settle=5), clock=clock,
                       sleep=clock.sleep)
    assert res.exit_code == EXIT_DEPLOY_FAILED and res.moved == []
    assert res.unplaced == {"st_web": "rejected on m2: No such image: app:1"}
    assert 5 <= clock.t < 60


def test_drain_again_checks_placement_as_the_first_run_did():
    """After a drain that could not place a service (exit 10), a second drain of the drained
    node must not say "already drained, nothing runs on it" with exit 0."""
    ns = three()
    w1 = ns[3]["ID"]
    ns[3]["Spec"]["Availability"] = "drain"
    one = {"ID": "s1", "Spec": {"Name": "st_web", "Mode": {"Replicated": {"Replicas": 1}}}}
    history = [task("t1", "s1", w1, desired="shutdown", state="shutdown"),
               task("t3", "s1", "", state="pending",
                    err="no suitable node (scheduling constraints not satisfied on 4 nodes)")]
    api = FakeAPI(ns, history, [one])
    clock = Clock()
    res = N.drain_node(api, "w1", N.DrainOptions(timeout=60, settle=5), clock=clock,
                       sleep=clock.sleep)
    assert res.changes == [] and api.updates == []
    assert res.exit_code == EXIT_DEPLOY_FAILED
    assert "no suitable node" in res.unplaced["st_web"]
    # swarm keeps a few tasks per slot: rejected again and again elsewhere, the task that ran
    # on the node leaves its history; the service is short of replicas, so it is checked still
    m2 = ns[1]["ID"]
    api._tasks = [task(f"r{i}", "s1", m2, state="rejected", desired="shutdown",
                       err="No such image: app:1") for i in range(5)]
    res = N.drain_node(api, "w1", N.DrainOptions(timeout=60, settle=5), clock=clock,
                       sleep=clock.sleep)
    assert res.exit_code == EXIT_DEPLOY_FAILED
    assert res.unplaced == {"st_web": "rejected on m2: No such image: app:1"}
    # once the service runs elsewhere, the re-run says so (exit 0)
    api._tasks = [history[0], task("t4", "s1", ns[2]["ID"])]
    res = N.drain_node(api, "w1", N.DrainOptions(timeout=60, settle=5), clock=clock,
                       sleep=clock.sleep)
    assert res.exit_code == 0 and res.moved == ["st_web"] and not res.unplaced


# --- backups never replace a file, and restore checks the whole archive first ----------------

def _archive(tmp_path, payload, name="b.tar"):
    from datetime import datetime, timezone
    m = build_manifest(cluster="c", swarm={"ID": "sw"}, node=node("m2", "manager"),
                       engine_version="20.10", services=[], secrets=[], configs=[],
                       managers=3, payload=payload, now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    path = str(tmp_path / name)
    return write_archive(path, m, payload, unique=True), m


def test_two_backups_with_one_name_keep_both_and_a_named_file_is_never_replaced(tmp_path):
    payload = _payload({})
    first, m = _archive(tmp_path, payload)
    second, _ = _archive(tmp_path, payload)
    assert first == str(tmp_path / "b.tar") and second == str(tmp_path / "b-2.tar")
    with pytest.raises(FileExistsError):
        write_archive(first, m, payload)
    assert read_archive(first)[1] == payload == read_archive(second)[1]
    assert sorted(os.listdir(tmp_path)) == ["b-2.tar", "b.tar"]       # no temporary left


def test_backup_out_is_checked_before_anything(tmp_path):
    from datetime import datetime, timezone
    from provision.swarm.backup import resolve_out
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(InputError, match="folder does not exist"):
        resolve_out(str(tmp_path / "missing") + "/", "c", now)
    with pytest.raises(InputError, match="folder does not exist"):
        resolve_out(str(tmp_path / "missing" / "b.tar"), "c", now)
    (tmp_path / "taken.tar").write_bytes(b"x")
    with pytest.raises(InputError, match="never replaces"):
        resolve_out(str(tmp_path / "taken.tar"), "c", now)
    path, unique = resolve_out(str(tmp_path), "c", now)
    assert path == str(tmp_path / "c-swarm-20260101T000000Z.tar") and unique
    assert resolve_out(str(tmp_path / "new.tar"), "c", now) == (str(tmp_path / "new.tar"), False)


def _member(name, kind=tarfile.REGTYPE, data=b"x", link=""):
    ti = tarfile.TarInfo(name)
    ti.type, ti.linkname = kind, link
    ti.size = len(data) if kind == tarfile.REGTYPE else 0
    return ti, data if kind == tarfile.REGTYPE else None


@pytest.mark.parametrize("extra, drop, why", [
    ([_member("/etc/cron.d/x")], (), "outside the swarm folder"),
    ([_member("swarm/../../etc/passwd")], (), "outside the swarm folder"),
    ([_member("swarm/x", tarfile.SYMTYPE, link="/etc/shadow")], (), "not a plain file"),
    ([_member("swarm/y", tarfile.LNKTYPE, link="swarm/state.json")], (), "not a plain file"),
    ([_member("swarm/dev", tarfile.CHRTYPE)], (), "not a plain file"),
    ([_member("other/file")], (), "not under swarm/"),
    ([], ("swarm/state.json",), "missing swarm/state.json"),
])
def test_an_archive_that_is_not_a_swarm_state_is_refused_in_one_line(tmp_path, extra, drop, why):
    path, _ = _archive(tmp_path, _payload({}, extra, drop))
    with pytest.raises(InputError, match=why) as e:
        read_archive(path)
    assert "\n" not in str(e.value) and "b.tar" in str(e.value)


def test_a_random_payload_with_a_good_checksum_is_input_error_in_one_line(tmp_path):
    path, _ = _archive(tmp_path, os.urandom(4096))
    with pytest.raises(InputError, match="not a gzip'd tar") as e:
        read_archive(path)
    assert "\n" not in str(e.value)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(os.urandom(3000))
    with pytest.raises(InputError, match="not a readable backup archive") as e:
        read_archive(str(junk))
    assert "\n" not in str(e.value)


def test_quorum_is_read_again_just_before_the_stop():
    from provision.swarm.backup import check_quorum_before_stop

    class Nodes:
        def __init__(self, nodes):
            self.list = nodes

        def nodes(self):
            return self.list
    picked = three()[1]
    check_quorum_before_stop(Nodes(three()), picked["ID"])
    # meanwhile another manager went down (another operator's backup, a crash)
    with pytest.raises(QuorumRefused, match="refusing to stop m2"):
        check_quorum_before_stop(Nodes(three(down=2)[:1] + [three()[1]] + three(down=2)[2:]),
                                 picked["ID"])
    check_quorum_before_stop(Nodes([node("m1", "manager", leader=True)]), "m1-id-0000000000000")


# --- the cluster's managers lock -------------------------------------------------------------

def test_the_managers_lock_makes_a_second_runbook_wait_and_is_released_through_another_manager(
        monkeypatch):
    from provision.engine_api import access
    from provision.swarm import managers as M
    from provision.base.errors import LockedError
    from provision.swarm.lock import MANAGERS_LOCK, Holder
    from tests.fakes.clock import FakeClock
    from tests.test_watch_lock_units import FakeConfigs
    api, clock, lines = FakeConfigs(), FakeClock(1_700_000_000), []
    kw = dict(clock=clock, sleep=clock.sleep, alive=lambda pid: True)
    with M.managers_lock("c.yml", "backup", api=api, me=Holder("h", "b", 1), **kw):
        assert [c["Spec"]["Name"] for c in api.items.values()] == [MANAGERS_LOCK]
        with pytest.raises(LockedError, match="the cluster's managers is locked: held by "
                                              "backup, "):
            with M.managers_lock("c.yml", "node demote", api=api, wait=30,
                                 me=Holder("h", "b", 2), notify=lines.append, **kw):
                pass
        assert lines[0].startswith("the cluster's managers: waiting for the lock (held by backup")
    assert api.items == {}

    # the manager the lock was taken through went away (its engine restarted): released
    # through another one
    class Gone(FakeConfigs):
        def remove_config(self, cid):
            from provision.base.errors import SwarmsmithError
            raise SwarmsmithError("connection reset")
    gone = Gone()

    class Other:
        api = gone

    import contextlib

    @contextlib.contextmanager
    def another(path, **kw):
        yield Other
    released = []
    monkeypatch.setattr(access, "connect", another)
    monkeypatch.setattr(Other, "api", type("A", (FakeConfigs,), {
        "remove_config": lambda self, cid: released.append(cid)})())
    with M.managers_lock("c.yml", "backup", api=gone, **kw):
        pass
    assert released == ["cfg1"]


# --- restore: whose backup, onto what, and the way back ----------------------------------------

def test_a_backup_of_another_cluster_is_refused_without_force_saying_whose():
    from provision.restore import check_backup_cluster
    m = {"cluster": "prod", "swarm_id": "abcdef1234567890", "taken_at": "T", "node": "m2"}
    check_backup_cluster(m, "prod", "", "b.tar", False)
    check_backup_cluster(m, "prod", "abcdef1234567890", "b.tar", False)
    with pytest.raises(InputError, match="a backup of cluster prod .*this is cluster staging"):
        check_backup_cluster(m, "staging", "", "b.tar", False)
    with pytest.raises(InputError, match="swarm abcdef123456.*cluster prod runs swarm "
                                         "999999999999 now"):
        check_backup_cluster(m, "prod", "999999999999999", "b.tar", False)
    check_backup_cluster(m, "staging", "", "b.tar", True)


class HostSession:
    """A host's shell as restore drives it: every command recorded; `fail` names the step
    (a description) that fails."""

    def __init__(self, fail=None, swarm_state="active"):
        from provision.base.hosts import Host
        self.host = Host("m1", "10.0.0.2")
        self.fail, self.ran, self.swarm_state = fail, [], swarm_state
        self.seen_key = ""

    def run(self, cmd, check=True, timeout=None, **_):
        from provision.base.errors import RemoteCommandError
        from provision.remote.ssh import Result
        self.ran.append(cmd.description)
        if cmd.description == self.fail:
            if not check:
                return Result("", "boom", 1)
            raise RemoteCommandError("boom", host="m1")
        if cmd.description == "gather swarm facts":
            return Result(json.dumps({"LocalNodeState": self.swarm_state}), "", 0)
        return Result("", "", 0)


def test_a_restore_that_fails_on_the_host_puts_the_state_of_before_back(monkeypatch):
    from provision import restore as R
    from provision.base.errors import SwarmsmithError
    monkeypatch.setattr(R, "host_swarm_facts", lambda s: {"state": "active"})
    s = HostSession(fail="re-form the swarm with this node as its only manager")
    res = R.RestoreResult("m1")
    with pytest.raises(SwarmsmithError, match="swarm state of before the restore was put back"):
        R._restore_on(s, {}, {"node": "m2", "taken_at": "T"}, _payload({}), "m1", "10.0.0.2",
                      None, res, lambda m: None)
    at = s.ran.index("re-form the swarm with this node as its only manager")
    assert s.ran[at + 1:] == ["stop the engine if it runs",
                              "put the swarm state of before the restore back",
                              "start dockerd", "wait until the Docker engine answers (120 s)"]
    assert "remove the swarm state of before the restore" not in s.ran and res.changes == []


def test_a_restore_that_works_removes_the_state_of_before_only_at_the_end(monkeypatch):
    from provision import restore as R
    monkeypatch.setattr(R, "host_swarm_facts", lambda s: {"state": "active"})
    monkeypatch.setattr(R, "_local_api", lambda s, to: None)
    s = HostSession()
    res = R.RestoreResult("m1")
    R._restore_on(s, {}, {"node": "m2", "taken_at": "T"}, _payload({}), "m1", "10.0.0.2", None,
                  res, lambda m: None)
    assert s.ran[-1] == "remove the swarm state of before the restore"
    assert s.ran.index("put the backup in place") < s.ran.index(
        "re-form the swarm with this node as its only manager")


def test_restore_onto_a_node_of_a_live_swarm_is_refused_with_the_way_out():
    from provision.restore import refuse_live_swarm

    class Nodes:
        def run(self, cmd, check=True, **_):
            from provision.remote.ssh import Result
            return Result("", "", 1)
    import provision.restore as R
    live = lambda s, sw: ["m2", "m3"]       # noqa: E731
    orig = R._other_ready_nodes
    R._other_ready_nodes = live
    try:
        with pytest.raises(InputError, match="live swarm with 2 other ready node.*docker swarm "
                                             "leave --force` on m1"):
            refuse_live_swarm(Nodes(), {"state": "active", "is_manager": True}, "m1")
        refuse_live_swarm(Nodes(), {"state": "inactive"}, "m1")
        R._other_ready_nodes = lambda s, sw: []
        refuse_live_swarm(Nodes(), {"state": "active", "is_manager": True}, "m1")
    finally:
        R._other_ready_nodes = orig


def test_demote_and_rm_of_a_manager_check_quorum_under_the_managers_lock():
    import contextlib
    api = FakeAPI(three())
    taken = []

    @contextlib.contextmanager
    def lock():
        # while waiting for the lock, another runbook stopped m3's engine
        api._nodes["m3-id-0000000000000"]["ManagerStatus"]["Reachability"] = "unreachable"
        taken.append(True)
        yield
    with pytest.raises(QuorumRefused, match="refusing to demote m2"):
        N.demote_node(api, "m2", lock=lock)
    assert taken == [True] and api.updates == []
    with pytest.raises(QuorumRefused, match="refusing to remove m2"):
        N.remove_node(api, "m2", lock=lock)
    assert api.updates == []
    taken.clear()
    assert N.demote_node(api, "w1", lock=lock).changes == [] and taken == []


def test_recover_force_new_cluster_on_a_swarm_with_quorum_changes_nothing(monkeypatch):
    from provision import restore as R
    from provision.engine_api import sessions as dockerapi
    looks = [None, None, Quorum(3, 3)]         # electing a leader for two looks, then healthy
    monkeypatch.setattr(R, "_quorum_now", lambda path: looks.pop(0))
    monkeypatch.setattr(dockerapi, "inventory_hosts", lambda *a: pytest.fail("re-forming"))
    clock = Clock()
    res = R.recover("c.yml", force_new_cluster=True, clock=clock, sleep=clock.sleep)
    assert res.exit_code == 0 and "nothing to recover" in res.notes[0] and res.changes == []
    assert looks == [] and clock.t == 2.0


def test_a_manager_restarted_locked_is_unlocked_again_or_the_backup_fails():
    from provision.swarm.backup import _unlock_again
    from provision.base.errors import SwarmsmithError
    from provision.remote.ssh import Result

    class S:
        host = type("H", (), {"name": "m2"})

        def __init__(self, works):
            self.works, self.state, self.stdin = works, "locked", []

        def run(self, cmd, check=True, **_):
            self.stdin.append(cmd.stdin)
            assert "SWMKEY" not in cmd.masked()          # on stdin, never an argument
            if self.works:
                self.state = "active"
            return Result("", "" if self.works else "invalid key", 0 if self.works else 1)
    ok = S(True)
    _unlock_again(ok, "SWMKEY-1-abc", lambda s: {"state": s.state})
    assert ok.stdin == [b"SWMKEY-1-abc\n"] and ok.state == "active"
    with pytest.raises(SwarmsmithError, match="could not be unlocked again") as e:
        _unlock_again(S(False), "SWMKEY-1-abc", lambda s: {"state": s.state})
    assert "SWMKEY" not in str(e.value)
    untouched = S(True)
    untouched.state = "active"
    _unlock_again(untouched, "SWMKEY-1-abc", lambda s: {"state": s.state})
    assert untouched.stdin == []


def test_restore_is_refused_while_managers_of_the_backed_up_swarm_still_run(monkeypatch):
    from provision import restore as R
    from provision.base.hosts import Host

    class Acc:
        def _cached_hosts(self, role):
            return [Host(n, f"10.0.0.{i}") for i, n in enumerate(("m1", "m2", "m3", "w1"), 2)]

        def provider_hosts(self, role):
            return []

        def session(self, h):
            return type("S", (), {"host": h, "close": lambda self: None})()
    facts = {"m1": {"state": "inactive"},
             "m2": {"state": "active", "is_manager": True, "cluster_id": "sw"},
             "m3": {"state": "inactive"},
             "w1": {"state": "active", "is_manager": False, "cluster_id": "sw"}}
    import provision.engine_api.access
    monkeypatch.setattr(provision.engine_api.access, "access", lambda path: Acc())
    monkeypatch.setattr(R, "host_swarm_facts", lambda s: facts[s.host.name])
    with pytest.raises(InputError, match="still runs on m2: .*leave --force` on m2\\)"):
        R.refuse_live_peers("c.yml", "m1", {"swarm_id": "sw"})
    facts["m1"] = {"state": "active", "is_manager": True, "cluster_id": "sw"}
    with pytest.raises(InputError, match="still runs on m1, m2: "):
        R.refuse_live_peers("c.yml", "m1", {"swarm_id": "sw"})
    facts["m2"]["state"] = "inactive"
    R.refuse_live_peers("c.yml", "m1", {"swarm_id": "sw"})      # the target alone
    R.refuse_live_peers("c.yml", "m1", {"swarm_id": "another"})


# --- the day-two operations through the library API -------------------------------------------

def test_the_library_api_drains_a_node_and_reports_through_events(monkeypatch, tmp_path):
    from provision.base.progress import Notice
    from stacks import api
    fake = FakeAPI(three() + [node("w1")])
    _fake_manager(monkeypatch, fake)
    events = []
    res = api.drain("w1", api.DrainOptions(timeout=5, poll=0), cluster_file="c.yml",
                    on_progress=events.append)
    assert isinstance(res, api.DrainResult) and res.changes == ["w1: availability active -> drain"]
    assert fake.updates[-1][1]["Availability"] == "drain"
    assert res.to_dict()["changes"] == res.changes
    assert all(isinstance(e, Notice) for e in events)


def test_the_library_api_checks_push_options_before_any_host(tmp_path):
    from provision.base.errors import InputError
    from stacks import api
    with pytest.raises(InputError, match="not both or neither"):
        api.push_images(api.PushOptions(), cluster_file=str(tmp_path / "none.yml"))
