"""The swarm-stored lock (a config per stack) and the audit trail."""
from __future__ import annotations

import json
import os
import stat

import pytest

from provision.base.errors import EXIT_LOCKED, LockedError
from stacks.operations.audit import append_audit, append_audit_swarm, audit_record, scrub
from provision.swarm.lock import (L_ACQUIRED, L_BOOT, L_HOST, L_OWNER, L_PID, Holder, SwarmLock,
                                    lock_name)
from tests.fakes.clock import FakeClock


def read_audit(path, limit: int | None = None) -> list[dict]:
    """The local audit file's records (append_audit's lines), the last `limit` of them."""
    import json
    try:
        with open(path, encoding="utf-8") as fh:
            lines = [ln for ln in fh if ln.strip()]
    except FileNotFoundError:
        return []
    lines = lines[-limit:] if limit else lines
    return [json.loads(ln) for ln in lines]


class ApiError(Exception):
    def __init__(self, code, msg):
        super().__init__(msg)
        self.status_code = code


class FakeConfigs:
    """Swarm configs as the managers keep them: names unique, create atomic."""

    def __init__(self):
        self.items: dict[str, dict] = {}
        self.n = 0
        self.before_create = None  # hook to simulate a racing run

    def create_config(self, name, data, labels=None, templating=None):
        if self.before_create:
            hook, self.before_create = self.before_create, None
            hook()
        if any(c["Spec"]["Name"] == name for c in self.items.values()):
            raise ApiError(409, f"rpc error: code = AlreadyExists desc = config {name} already exists")
        self.n += 1
        cid = f"cfg{self.n}"
        self.items[cid] = {"ID": cid, "Spec": {"Name": name, "Labels": dict(labels or {}),
                                               "Data": data}}
        return {"ID": cid}

    def remove_config(self, cid):
        if cid not in self.items:
            raise ApiError(404, f"config {cid} not found")
        del self.items[cid]
        return True

    def configs(self, filters=None):
        filters = filters or {}
        out = list(self.items.values())
        if "name" in filters:  # prefix match, like the engine
            out = [c for c in out if any(c["Spec"]["Name"].startswith(n) for n in filters["name"])]
        if "label" in filters:
            for f in filters["label"]:
                k, _, v = f.partition("=")
                out = [c for c in out if c["Spec"]["Labels"].get(k) == v]
        return [dict(c) for c in out]


def _lock(api, clock, **kw):
    kw.setdefault("owner", "a@h pid 1")
    return SwarmLock(api, "web", clock=clock, sleep=clock.sleep, **kw)


def test_second_acquirer_waits_then_gets_locked_error():
    api, clock = FakeConfigs(), FakeClock(1_700_000_000)
    api.create_config("swarmsmith-lock-web2", b"{}")  # another stack: prefix must not match
    first = _lock(api, clock).acquire()
    second = _lock(api, clock, owner="b@h pid 2", wait=10, poll=2)
    with pytest.raises(LockedError) as err:
        second.acquire()
    assert err.value.exit_code == EXIT_LOCKED == 4
    assert "held by a@h pid 1" in str(err.value)
    assert clock.t - 1_700_000_000 == pytest.approx(10)
    assert first.id and second.id is None


def test_waiting_acquirer_gets_the_lock_once_released():
    api, clock = FakeConfigs(), FakeClock(1_700_000_000)
    first = _lock(api, clock).acquire()
    second = _lock(api, clock, owner="b@h pid 2", wait=30, poll=5)
    real_sleep = clock.sleep

    def sleep_then_release(s):
        real_sleep(s)
        if clock.t - 1_700_000_000 >= 10:
            first.release()
    second.sleep = sleep_then_release
    second.acquire()
    (cfg,) = [c for c in api.items.values() if c["Spec"]["Name"] == lock_name("web")]
    assert cfg["Spec"]["Labels"][L_OWNER] == "b@h pid 2"


def test_stale_lock_is_broken():
    api, clock = FakeConfigs(), FakeClock(1_700_000_000)
    dead = _lock(api, clock, ttl=60).acquire()   # a run that was killed: never releases
    clock.t += 61
    fresh = _lock(api, clock, owner="b@h pid 2", ttl=60).acquire()
    assert fresh.broke and fresh.broke[0].id == dead.id
    (cfg,) = api.items.values()
    assert cfg["ID"] == fresh.id
    assert float(cfg["Spec"]["Labels"][L_ACQUIRED]) == pytest.approx(clock.t)
    assert dead.release() is False  # its lock is gone; it must not remove the new one
    assert fresh.id in api.items


def test_two_runs_breaking_the_same_stale_lock_one_wins():
    api, clock = FakeConfigs(), FakeClock(1_700_000_000)
    dead = _lock(api, clock, ttl=60).acquire()
    clock.t += 100
    b = _lock(api, clock, owner="b pid 2", ttl=60)
    c = _lock(api, clock, owner="c pid 3", ttl=60, wait=0)
    # c sees the stale lock, but b breaks it and takes the lock just before c's create
    stale = c.holder()
    api.remove_config(stale.id)
    api.before_create = b.acquire
    with pytest.raises(LockedError, match="held by b pid 2"):
        c.acquire()
    assert b.id in api.items and dead.id not in api.items


def test_context_manager_releases_on_error():
    api, clock = FakeConfigs(), FakeClock()
    with pytest.raises(RuntimeError):
        with _lock(api, clock):
            assert len(api.items) == 1
            raise RuntimeError("deploy blew up")
    assert api.items == {}


def test_lock_name_fits_swarm_limits():
    assert lock_name("web") == "swarmsmith-lock-web"
    assert len(lock_name("x" * 100)) <= 64


def test_append_audit_mode_and_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    append_audit(path, {"command": "redeploy", "stack": "web",
                        "env": {"DB_PASSWORD": "hunter2", "registry_auth": "abc", "MODE": "x"}})
    append_audit(path, audit_record("rollback", "web", extra_note="ok"))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert "hunter2" not in text and "abc" not in text
    recs = read_audit(path)
    assert recs[0]["env"] == {"DB_PASSWORD": "***", "registry_auth": "***", "MODE": "x"}
    assert recs[1]["command"] == "rollback" and "ts" in recs[1]
    assert len(text.splitlines()) == 2


def test_append_audit_tightens_a_wide_file(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text("")
    os.chmod(path, 0o644)
    append_audit(path, {"a": 1})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_scrub_nested():
    assert scrub({"x": [{"token": "t"}], "ok": 1}) == {"x": [{"token": "***"}], "ok": 1}


def test_audit_in_swarm_keeps_the_last_entries():
    api = FakeConfigs()
    for i in range(4):
        append_audit_swarm(api, "web", {"n": i, "password": "p"}, keep=3)
    kept = sorted(api.items.values(), key=lambda c: c["Spec"]["Name"])
    assert len(kept) == 3
    assert [json.loads(c["Spec"]["Data"])["n"] for c in kept] == [1, 2, 3]
    assert all(b"\"***\"" in c["Spec"]["Data"] for c in kept)


# --- holders: host, boot id and pid ----------------------------------------------------------

HERE = Holder("ci-runner", "boot-1", 4242)


def _held_by(api, clock, holder, **kw):
    return SwarmLock(api, "web", clock=clock, sleep=clock.sleep, owner=f"x@{holder.host} pid "
                     f"{holder.pid}", me=holder, alive=lambda pid: False, **kw).acquire()


def _me(clock, alive_pids=(), lines=None, **kw):
    return SwarmLock(FakeConfigs() if "api" not in kw else kw.pop("api"), "web", clock=clock,
                     sleep=clock.sleep, owner="me", me=HERE,
                     alive=lambda pid: pid in alive_pids,
                     notify=(lines.append if lines is not None else None), **kw)


def test_lock_records_host_boot_id_and_pid():
    api, clock = FakeConfigs(), FakeClock(1_700_000_000)
    _held_by(api, clock, HERE)
    (cfg,) = api.items.values()
    labels = cfg["Spec"]["Labels"]
    assert (labels[L_HOST], labels[L_BOOT], labels[L_PID]) == ("ci-runner", "boot-1", "4242")
    me = Holder.this_process()
    assert me.pid == os.getpid() and me.boot_id and me.host


@pytest.mark.parametrize("holder", [Holder("ci-runner", "boot-1", 999),   # pid gone
                                    Holder("ci-runner", "boot-0", 4243)])  # host rebooted
def test_dead_holder_on_this_host_broken_at_once_with_a_line(holder):
    api, clock = FakeConfigs(), FakeClock(1_700_000_000)
    dead = _held_by(api, clock, holder, ttl=1800)
    lines: list[str] = []
    mine = _me(clock, alive_pids={4243}, lines=lines, api=api, ttl=1800, wait=0).acquire()
    assert mine.id and dead.id not in api.items and clock.t == 1_700_000_000   # no waiting
    assert len(lines) == 1 and "broke the lock of a run that is gone" in lines[0]
    assert f"pid {holder.pid} on this host" in lines[0]


def test_live_holder_here_or_holder_elsewhere_is_waited_for():
    for holder, alive in ((Holder("ci-runner", "boot-1", 77), {77}),
                          (Holder("other-host", "boot-9", 77), set())):
        api, clock = FakeConfigs(), FakeClock(1_700_000_000)
        _held_by(api, clock, holder, ttl=1800)
        with pytest.raises(LockedError) as err:
            _me(clock, alive_pids=alive, api=api, wait=5, poll=1).acquire()
        assert "If that run is gone: swarmsmith unlock web" in str(err.value)
        assert "docker config rm" not in str(err.value)


def test_unlock_shows_the_holder_and_refuses_a_live_local_one_without_force():
    api, clock = FakeConfigs(), FakeClock(1_700_000_000)
    assert _me(clock, api=api).unlock() is None
    _held_by(api, clock, Holder("ci-runner", "boot-1", 77))
    with pytest.raises(LockedError, match="still running on this host .pid 77.*unlock --force"):
        _me(clock, alive_pids={77}, api=api).unlock()
    assert len(api.items) == 1
    info = _me(clock, alive_pids={77}, api=api).unlock(force=True)
    assert info.holder.pid == 77 and api.items == {}
    for holder in (Holder("other-host", "b", 5), Holder("ci-runner", "boot-1", 6)):
        _held_by(api, clock, holder)
        assert _me(clock, api=api).unlock().holder == holder and api.items == {}


def test_api_unlock_typed_result():
    from provision.engine_api.adapter import EngineAPI
    from stacks import api as lib
    from provision.swarm.lock import unlock_stack
    configs, clock = FakeConfigs(), FakeClock(1_700_000_000)
    engine = EngineAPI(configs)
    assert lib.unlock("web", engine=engine).to_dict() == {"stack": "web", "removed": False,
                                                          "holder": None}
    _held_by(configs, clock, Holder("other-host", "b", 5))
    result = unlock_stack("web", engine=engine, me=HERE, alive=lambda pid: True)
    assert result.exit_code == 0 and result.holder_state == "elsewhere"
    assert result.to_dict()["holder"]["host"] == "other-host" and configs.items == {}


# --- the cluster's managers lock, removed by hand -------------------------------------------

def _managers_held(api, clock, holder, operation="backup"):
    """The managers lock as a killed backup (or another runbook) leaves it: taken as
    managers_lock takes it, never released."""
    from provision.swarm.lock import MANAGERS_LOCK, MANAGERS_WHAT
    SwarmLock(api, operation, name=MANAGERS_LOCK, what=MANAGERS_WHAT, clock=clock,
              owner=f"{operation}, x@{holder.host} pid {holder.pid}", me=holder).acquire()


def test_unlock_managers_shows_the_holder_and_refuses_a_live_local_one_without_force():
    from provision.engine_api.adapter import EngineAPI
    from provision.swarm.lock import MANAGERS_LOCK, UnlockOptions, unlock_managers
    from stacks import api as lib
    configs, clock = FakeConfigs(), FakeClock(1_700_000_000)
    engine = EngineAPI(configs)
    assert lib.unlock_managers(engine=engine).to_dict() == {"lock": "managers", "removed": False,
                                                           "holder": None}
    _held_by(configs, clock, Holder("other-host", "b", 5))         # a stack's lock: not this one
    _managers_held(configs, clock, Holder("ci-runner", "boot-1", 77))
    kw = dict(engine=engine, me=HERE, clock=clock)
    with pytest.raises(LockedError, match=r"the cluster's managers: the lock is held by backup, "
                       r".*still running on this host .pid 77.*swarmsmith unlock --force "
                       r"--managers") as err:
        unlock_managers(alive=lambda pid: pid == 77, **kw)
    assert err.value.exit_code == EXIT_LOCKED and len(configs.items) == 2
    result = unlock_managers(UnlockOptions(force=True), alive=lambda pid: pid == 77, **kw)
    assert result.holder_state == "alive" and result.holder.owner.startswith("backup, ")
    assert [c["Spec"]["Name"] for c in configs.items.values()] == [lock_name("web")]
    # a killed backup on another machine: removed at once, saying whose it was
    _managers_held(configs, clock, Holder("laptop", "b9", 9), operation="engine upgrade")
    out = unlock_managers(alive=lambda pid: True, **kw).to_dict()
    assert out["lock"] == "managers" and out["removed"] and "stack" not in out
    assert out["holder"]["owner"].startswith("engine upgrade, ")
    assert out["holder"]["host"] == "laptop" and out["holder"]["state"] == "elsewhere"
    assert MANAGERS_LOCK not in {c["Spec"]["Name"] for c in configs.items.values()}


def test_a_held_managers_lock_names_the_unlock_command():
    from provision.swarm.managers import managers_lock
    api, clock = FakeConfigs(), FakeClock(1_700_000_000)
    _managers_held(api, clock, Holder("laptop", "b9", 9))
    with pytest.raises(LockedError) as err:
        with managers_lock("c.yml", "node demote", api=api, wait=0, me=HERE, clock=clock,
                           sleep=clock.sleep):
            pass
    msg = str(err.value)
    assert "held by backup, " in msg and "If that run is gone: swarmsmith unlock --managers" in msg
    assert "docker config rm" not in msg


def test_unlock_command_for_the_managers_lock(monkeypatch, capsys):
    import cli
    from types import SimpleNamespace

    from provision.engine_api import access
    from provision.engine_api.adapter import EngineAPI
    api, clock = FakeConfigs(), FakeClock(1_700_000_000)
    _held_by(api, clock, Holder("other-host", "b", 5))
    _managers_held(api, clock, Holder("laptop", "b9", 9), operation="restore")
    monkeypatch.setattr(access, "connect", lambda *a, **k: SimpleNamespace(api=EngineAPI(api)))
    assert cli.main(["unlock", "--managers"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the cluster's managers: removed the lock held by restore, ")
    assert "it was a run on another host" in out
    assert [c["Spec"]["Name"] for c in api.items.values()] == [lock_name("web")]
    assert cli.main(["unlock", "--managers", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"lock": "managers", "removed": False,
                                                   "holder": None}
    for argv, why in ((["unlock"], "name a stack, or --managers"),
                      (["unlock", "--managers", "web"], "not both")):
        assert cli.main(argv) == 2
        assert why in capsys.readouterr().err
    assert len(api.items) == 1                  # bad flags change nothing


# --- locks with labels nobody can read, and locks from the future ------------------------------

def _held_with(api, labels: dict):
    """A lock config as a broken writer (or a hand) left it."""
    base = {"com.swarmsmith.lock.stack": "web", L_OWNER: "x@elsewhere pid 7",
            "com.swarmsmith.lock.ttl": "1800", L_HOST: "elsewhere", L_BOOT: "b", L_PID: "7"}
    base.update(labels)
    api.create_config(lock_name("web"), b"{}", {k: v for k, v in base.items() if v is not None})


@pytest.mark.parametrize("labels, shown", [
    ({L_ACQUIRED: "nan"}, "acquired=nan"),
    ({L_ACQUIRED: "garbage"}, "acquired=garbage"),
    ({L_ACQUIRED: None}, "acquired missing"),
    ({L_ACQUIRED: "inf"}, "acquired=inf"),
    ({L_ACQUIRED: "1700000000", "com.swarmsmith.lock.ttl": "x"}, "ttl=x"),
    ({L_ACQUIRED: "99999999999"}, "further ahead than its TTL")])
def test_an_unreadable_lock_is_refused_with_the_way_out_and_unlock_removes_it(labels, shown):
    api, clock = FakeConfigs(), FakeClock(1_700_000_000)
    _held_with(api, labels)
    with pytest.raises(LockedError) as err:
        _lock(api, clock, wait=4, poll=2).acquire()
    msg = str(err.value)
    assert err.value.exit_code == EXIT_LOCKED and shown in msg and "unreadable" in msg
    assert "swarmsmith unlock web" in msg and "nan s" not in msg
    assert len(api.items) == 1          # never broken as if it were stale
    # shown as unreadable, and removed by unlock (plain or --force)
    for force in (False, True):
        info = _me(clock, api=api).unlock(force=force)
        assert info.unreadable and shown in info.describe(clock.t) and api.items == {}
        _held_with(api, labels)
    from provision.swarm.lock import unlock_stack
    from provision.engine_api.adapter import EngineAPI
    res = unlock_stack("web", engine=EngineAPI(api), me=HERE, clock=clock)
    out = json.dumps(res.to_dict())
    assert '"unreadable"' in out and api.items == {}


def test_unlock_command_shows_an_unreadable_lock(monkeypatch, capsys):
    import cli
    from types import SimpleNamespace

    from provision.engine_api import access
    from provision.engine_api.adapter import EngineAPI
    api = FakeConfigs()
    _held_with(api, {L_ACQUIRED: "nan"})
    monkeypatch.setattr(access, "connect", lambda *a, **k: SimpleNamespace(api=EngineAPI(api)))
    assert cli.main(["unlock", "--force", "web"]) == 0
    out = capsys.readouterr()
    assert "unreadable labels (acquired=nan)" in out.out and api.items == {}
    assert "unexpected" not in out.err


def test_a_lock_from_the_future_is_flagged_not_given_a_negative_age():
    api, clock = FakeConfigs(), FakeClock(1_700_000_000)
    _held_with(api, {L_ACQUIRED: str(1_700_000_000 + 120)})
    info = _lock(api, clock).holder()
    text = info.describe(clock.t)
    assert "120 s in the future" in text and "clocks differ" in text
    assert "-120" not in text and " ago" not in text
    assert not info.stale(clock.t) and not info.unreadable
    with pytest.raises(LockedError, match="in the future"):
        _lock(api, clock, wait=0).acquire()


def test_deploy_refuses_an_unreadable_lock_with_exit_4_and_the_way_out(tmp_path):
    from tests.fakes.engine import FakeEngine
    from tests.test_stacks_plan_apply_units import STACK, deploy
    (tmp_path / "pw.txt").write_text("pw")
    (tmp_path / "app.conf").write_text("a=1")
    f = tmp_path / "stack.yml"
    f.write_text(STACK)
    class Swarm(FakeEngine):
        def create_config(self, name, data, labels=None, templating=None):
            if any(c["Spec"]["Name"] == name for c in self.configs_.values()):
                raise ApiError(409, f"config {name} already exists")     # as the engine says
            return super().create_config(name, data, labels, templating)
    api = Swarm()
    api.create_config(lock_name("st"), b"{}", {L_OWNER: "x@elsewhere pid 7",
                                               L_ACQUIRED: "nan", L_HOST: "elsewhere"})
    with pytest.raises(LockedError) as err:
        deploy(api, f)
    assert err.value.exit_code == EXIT_LOCKED
    assert "acquired=nan" in str(err.value) and "swarmsmith unlock st" in str(err.value)
    assert [c["Spec"]["Name"] for c in api.configs()] == [lock_name("st")]    # nothing applied


def test_a_scale_rerun_clears_the_dead_lock_of_its_killed_run(monkeypatch):
    """The killed scale's update went through, so the re-run has nothing to change: it still
    takes the stack's lock, which breaks the dead one (with a line), and leaves none behind."""
    from stacks.events import Notice
    from stacks.operations.service_ops import STACK_LABEL, ScaleOptions, scale_services
    from tests.test_runbooks_units import ScaleAPI, _fake_manager, node
    svc = {"ID": "s1", "Version": {"Index": 7}, "Spec": {
        "Name": "st_web", "Mode": {"Replicated": {"Replicas": 3}}, "Labels": {STACK_LABEL: "st"}}}
    api = ScaleAPI([node("m1", "manager", leader=True)], services=[svc])
    api.api = FakeConfigs()
    me = Holder.this_process()
    gone = 4_000_000          # above pid_max: no such process
    SwarmLock(api.api, "st", owner=f"root@{me.host} pid {gone}", me=Holder(me.host, me.boot_id, gone),
              alive=lambda pid: False).acquire()          # the killed scale's lock
    _fake_manager(monkeypatch, api)
    said = []
    res = scale_services("c.yml", {"st_web": 3}, ScaleOptions(watch=False),
                         on_progress=said.append)
    assert res.unchanged == ["st_web"] and not res.changed
    assert api.api.items == {}
    assert any(isinstance(e, Notice) and "broke the lock of a run that is gone" in e.message
               for e in said)
