"""The agent: its decisions as pure functions over facts (commit moved, drift, bad compose, lock
held) with an injected clock, and its loop against the in-memory swarm of
tests/test_stacks_plan_apply_units.py with a scripted repository."""
from __future__ import annotations

import base64
import copy
import json
import os
import time

import pytest

from provision.engine_api.adapter import EngineAPI
from provision.base.errors import InputError
from stacks.agent import decide as D
from stacks.agent.loop import AGENT_HOST, Agent, AgentConfig
from stacks.agent.status import read_status
from stacks.operations.audit import read_audit_swarm
from provision.swarm.lock import Holder
from tests.test_stacks_plan_apply_units import SwarmWithTasks
from tests.test_watch_lock_units import ApiError
from tests.fakes.clock import FakeClock


# --- decisions --------------------------------------------------------------------------------

def Clock(t: float = 1000.0) -> FakeClock:
    return FakeClock(t)


def facts(clock, **kw) -> D.PollFacts:
    return D.PollFacts(clock(), **{"interval": 60, **kw})


def test_a_poll_plans_when_the_commit_moved_and_otherwise_once_an_interval():
    clock = Clock()
    assert D.poll_decision(facts(clock, head="b", reconciled="a")) == D.COMMIT
    assert D.poll_decision(facts(clock, head="a", reconciled="a")) == D.DRIFT   # never checked
    checked = clock()
    clock.sleep(59)
    assert D.poll_decision(facts(clock, head="a", reconciled="a",
                                 last_drift_check=checked)) == D.IDLE
    clock.sleep(1)
    assert D.poll_decision(facts(clock, head="a", reconciled="a",
                                 last_drift_check=checked)) == D.DRIFT
    # a moved commit does not wait for the interval
    assert D.poll_decision(facts(clock, head="c", reconciled="a",
                                 last_drift_check=clock())) == D.COMMIT


def test_a_refused_commit_is_not_tried_again_and_a_failed_fetch_plans_nothing():
    clock = Clock()
    assert D.poll_decision(facts(clock, head="bad", reconciled="a", refused="bad",
                                 last_drift_check=clock())) == D.IDLE
    assert D.poll_decision(facts(clock, head="fixed", reconciled="a", refused="bad")) == D.COMMIT
    assert D.poll_decision(facts(clock, head=None, reconciled="a")) == D.FETCH_FAILED


@pytest.mark.parametrize("reason,stack,correct,action", [
    (D.COMMIT, D.StackFacts("s", load_error="stack.yml: services.web: bad"), False, D.REFUSE),
    (D.DRIFT, D.StackFacts("s", load_error="stack.yml: services.web: bad"), False, D.SKIP),
    (D.COMMIT, D.StackFacts("s", lock=D.LOCK_HELD), False, D.WAIT),
    (D.DRIFT, D.StackFacts("s", lock=D.LOCK_HELD, changes=("update service s_web: Env",)),
     True, D.WAIT),
    (D.COMMIT, D.StackFacts("s", lock=D.LOCK_DEAD), False, D.APPLY),
    (D.DRIFT, D.StackFacts("s", lock=D.LOCK_DEAD), False, D.APPLY),
    (D.COMMIT, D.StackFacts("s"), False, D.APPLY),
    (D.DRIFT, D.StackFacts("s"), False, D.CLEAN),
    (D.DRIFT, D.StackFacts("s", changes=("update service s_web: Env",)), False, D.REPORT),
    (D.DRIFT, D.StackFacts("s", changes=("update service s_web: Env",),
                           reported_drift=("update service s_web: Env",)), False, D.KNOWN_DRIFT),
    (D.DRIFT, D.StackFacts("s", changes=("update service s_web: Env",),
                           reported_drift=("update service s_web: Env",)), True, D.CORRECT),
    (D.DRIFT, D.StackFacts("s", changes=("update service s_web: Image",),
                           reported_drift=("update service s_web: Env",)), False, D.REPORT),
])
def test_what_happens_to_a_stack(reason, stack, correct, action):
    assert D.stack_decision(reason, stack, correct_drift=correct).action == action


def test_only_stacks_the_agent_deployed_from_the_file_and_that_still_run_are_gone():
    assert D.gone_stacks({"ag", "old", "rm-by-hand"}, {"ag", "new"},
                         {"ag", "old", "by-hand", "new"}) == ["old"]
    assert D.gone_stacks(set(), {"ag"}, {"ag", "by-hand"}) == []     # a first run: none


@pytest.mark.parametrize("stack,prune,action", [
    (D.GoneFacts("old"), False, D.GONE),
    (D.GoneFacts("old", reported=True), False, D.KNOWN_GONE),
    (D.GoneFacts("old", lock=D.LOCK_HELD), False, D.GONE),     # reporting changes nothing
    (D.GoneFacts("old"), True, D.PRUNE),
    (D.GoneFacts("old", reported=True), True, D.PRUNE),
    (D.GoneFacts("old", lock=D.LOCK_DEAD), True, D.PRUNE),     # the removal breaks it
    (D.GoneFacts("old", lock=D.LOCK_HELD), True, D.WAIT),
])
def test_what_happens_to_a_stack_taken_out_of_the_cluster_file(stack, prune, action):
    d = D.gone_decision(stack, prune=prune)
    assert d.action == action
    assert d.why == (D.GONE_WHY if action != D.WAIT else "the stack's lock is held by another run")


def test_one_bad_stack_refuses_the_whole_commit_and_a_waiting_stack_keeps_it_open():
    ok, bad, wait = (D.StackDecision(D.APPLY), D.StackDecision(D.REFUSE, "x"),
                     D.StackDecision(D.WAIT))
    assert D.commit_refused({"a": ok, "b": bad}) and not D.commit_done(D.COMMIT, {"a": ok,
                                                                                 "b": bad})
    assert not D.commit_done(D.COMMIT, {"a": ok, "b": wait})
    assert D.commit_done(D.COMMIT, {"a": ok})
    assert not D.commit_done(D.DRIFT, {"a": ok})


# --- the loop against the in-memory swarm -------------------------------------------------------

class Swarm(SwarmWithTasks):
    """The plan/apply tests' swarm, keeping config data (the audit and the agent's status
    live in configs) and answering config inspects."""

    def create_config(self, name, data, labels=None, templating=None):
        if any(c["Spec"]["Name"] == name for c in self.configs_.values()):
            raise ApiError(409, f"config {name} already exists")    # as the managers answer
        out = super().create_config(name, data, labels, templating)
        self.configs_[out["ID"]]["Spec"]["Data"] = base64.b64encode(data).decode()
        return out

    def inspect_config(self, i):
        return copy.deepcopy(self.configs_[i])

    def remove_config(self, i):
        if i in self.configs_:
            super().remove_config(i)

    def env(self, name="ag_web"):
        svc = next(s for s in self.services_.values() if s["Spec"]["Name"] == name)
        return svc["Spec"]["TaskTemplate"]["ContainerSpec"].get("Env") or []


STACK = """\
version: "3.8"
services:
  web:
    image: busybox:1
    environment: {{RELEASE: "{release}"}}
    deploy: {{replicas: {replicas}}}
"""


class Repo:
    """The branch as a list of commits (each: file name -> text), checked out into a folder."""

    def __init__(self, tmp_path):
        self.dir = str(tmp_path / "checkout")
        self.commits: dict[str, dict] = {}
        self.head = ""
        self.fail = ""

    def commit(self, sha: str, release="1", replicas="1", cluster=None) -> str:
        self.commits[sha] = {
            "swarmsmith.yml": cluster or "name: c\nstacks: [{name: ag, compose: stack.yml}]\n",
            "stack.yml": STACK.format(release=release, replicas=replicas)}
        self.head = sha
        return sha

    def fetch(self) -> str:
        if self.fail:
            from stacks.agent.loop import GitError
            raise GitError(self.fail)
        return self.head

    def checkout(self, sha: str) -> str:
        os.makedirs(self.dir, exist_ok=True)
        for f in os.listdir(self.dir):
            os.unlink(os.path.join(self.dir, f))
        for name, text in self.commits[sha].items():
            with open(os.path.join(self.dir, name), "w") as fh:
                fh.write(text)
        return self.dir


@pytest.fixture
def world(tmp_path):
    # the deploy's own lock reads the wall clock: the agent's starts there too
    api, repo, clock = Swarm(), Repo(tmp_path), Clock(time.time())
    lines = []
    cfg = AgentConfig(repo="ssh://git@example.invalid/app.git", interval=60)
    agent = Agent(cfg, EngineAPI(api), repo, clock=clock, sleep=clock.sleep,
                  say=lines.append, holder=Holder(AGENT_HOST, "container-b", 7),
                  alive=lambda pid: True)
    return api, repo, clock, agent, lines


def records(api, phase=None):
    return [r for r in read_audit_swarm(EngineAPI(api), "ag")
            if phase is None or r.get("phase") == phase]


def test_a_new_commit_is_deployed_once_with_its_id_in_the_audit(world):
    api, repo, clock, agent, _ = world
    repo.commit("c1")
    assert agent.poll() == D.COMMIT
    assert "RELEASE=1" in api.env()
    (end,) = records(api, "end")
    assert (end["command"], end["commit"], end["exit_code"]) == ("agent", "c1", 0)
    clock.sleep(10)
    assert agent.poll() == D.IDLE
    repo.commit("c2", release="2")
    assert agent.poll() == D.COMMIT          # at once, not after the interval
    assert "RELEASE=2" in api.env()
    assert [r["commit"] for r in records(api, "end")] == ["c1", "c2"]
    st = read_status(EngineAPI(api))
    assert st["commit"] == "c2" and st["stacks"]["ag"]["outcome"] == "converged"


def test_drift_is_reported_once_and_left_alone_without_correct_drift(world):
    api, repo, clock, agent, lines = world
    repo.commit("c1")
    agent.poll()
    svc = next(s for s in api.services_.values() if s["Spec"]["Name"] == "ag_web")
    svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"].append("HAND=1")
    clock.sleep(60)
    assert agent.poll() == D.DRIFT
    (rec,) = records(api, "drift")
    assert rec["drift"] == ["update service ag_web: TaskTemplate.ContainerSpec.Env"], rec
    assert rec["commit"] == "c1" and rec["corrected"] is False
    assert read_status(EngineAPI(api))["stacks"]["ag"]["outcome"] == "drift"
    clock.sleep(60)
    agent.poll()
    assert len(records(api, "drift")) == 1 and "HAND=1" in api.env()


def test_drift_is_put_back_with_correct_drift(world):
    api, repo, clock, agent, _ = world
    agent.cfg.correct_drift = True
    repo.commit("c1")
    agent.poll()
    svc = next(s for s in api.services_.values() if s["Spec"]["Name"] == "ag_web")
    svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"].append("HAND=1")
    clock.sleep(60)
    agent.poll()
    assert "HAND=1" not in api.env()
    last = records(api, "end")[-1]
    assert last["corrected"] is True and last["reason"] == "drift" and last["commit"] == "c1"
    assert read_status(EngineAPI(api))["stacks"]["ag"]["outcome"] == "corrected"


def test_a_bad_compose_file_changes_nothing_is_recorded_once_and_the_next_commit_goes(world):
    api, repo, clock, agent, _ = world
    repo.commit("c1")
    agent.poll()
    version = next(s for s in api.services_.values())["Version"]["Index"]
    repo.commit("bad", replicas='"many"')
    agent.poll()
    (rec,) = records(api, "refused")
    assert rec["exit_code"] == 2 and rec["commit"] == "bad"
    assert rec["error"].startswith("stack.yml: services.web.deploy.replicas:"), rec
    st = read_status(EngineAPI(api))
    assert st["refused"]["commit"] == "bad" and st["commit"] == "c1"
    clock.sleep(60)
    agent.poll()                 # a drift check on the last good commit, no second record
    assert len(records(api, "refused")) == 1
    assert next(s for s in api.services_.values())["Version"]["Index"] == version
    repo.commit("c3", release="3")
    agent.poll()
    assert "RELEASE=3" in api.env() and read_status(EngineAPI(api))["refused"] is None


def test_a_bad_cluster_file_refuses_the_commit(world):
    api, repo, clock, agent, _ = world
    repo.commit("c1", cluster="name: c\nstacks: [{name: ag, compose: missing.yml}]\n")
    agent.poll()
    st = read_status(EngineAPI(api))
    assert st["refused"]["commit"] == "c1"
    assert st["refused"]["error"].startswith("swarmsmith.yml: stacks[0].compose[0]: no such file")
    assert not api.services_


def test_a_held_lock_makes_the_commit_wait_for_the_next_poll(world):
    from provision.swarm.lock import SwarmLock
    api, repo, clock, agent, lines = world
    person = SwarmLock(EngineAPI(api), "ag", me=Holder("laptop", "boot-1", 4242),
                       clock=clock).acquire()
    repo.commit("c1")
    agent.poll()
    assert not api.services_ and read_status(EngineAPI(api))["stacks"]["ag"]["outcome"] == \
        "waiting"
    assert any("lock is held" in ln for ln in lines)
    person.release()
    clock.sleep(60)
    assert agent.poll() == D.COMMIT          # still the commit to reconcile
    assert "RELEASE=1" in api.env()


def test_a_killed_agents_lock_is_broken_and_the_audit_says_so(world):
    from provision.swarm.lock import SwarmLock
    api, repo, clock, agent, _ = world
    SwarmLock(EngineAPI(api), "ag", me=Holder(AGENT_HOST, "container-a", 7),
              clock=clock).acquire()      # the killed agent's container was container-a
    repo.commit("c1")
    agent.poll()
    (end,) = records(api, "end")
    assert end["commit"] == "c1" and end["exit_code"] == 0
    assert any("broke the lock of a run that is gone" in n for n in end["notes"]), end


def test_a_killed_agents_finished_rollout_gets_its_end_record(world):
    """The killed agent applied everything: the new one changes nothing but still closes the
    commit's history with one end record saying it broke the lock."""
    from provision.swarm.lock import SwarmLock
    api, repo, clock, agent, _ = world
    repo.commit("c1")
    agent.poll()
    repo.commit("c2", release="2")
    agent.poll()
    agent.reconciled = "c1"             # as a restarted agent resumes: c2 never finished
    SwarmLock(EngineAPI(api), "ag", me=Holder(AGENT_HOST, "container-a", 7),
              clock=clock).acquire()
    before = len(records(api, "end"))
    agent.poll()
    ends = records(api, "end")
    assert len(ends) == before + 1
    assert ends[-1]["commit"] == "c2" and ends[-1]["changes"] == [] and ends[-1]["notes"]


TWO = "name: c\nstacks: [{name: ag, compose: stack.yml}, {name: old, compose: stack.yml}]\n"


def stack_names(api) -> set:
    return {s["Spec"]["Name"] for s in api.services_.values()}


def test_a_stack_taken_out_of_the_file_is_reported_once_and_left_running(world):
    api, repo, clock, agent, lines = world
    repo.commit("c1", cluster=TWO)
    agent.poll()
    assert stack_names(api) == {"ag_web", "old_web"}
    repo.commit("c2", release="2")                          # `old` taken out of the file
    assert agent.poll() == D.COMMIT
    assert stack_names(api) == {"ag_web", "old_web"} and "RELEASE=2" in api.env()
    (rec,) = [r for r in read_audit_swarm(EngineAPI(api), "old") if r["phase"] == "gone"]
    assert rec["command"] == "agent" and rec["commit"] == "c2"
    assert rec["detail"].startswith("stack old is deployed but no longer in the cluster file")
    st = read_status(EngineAPI(api))
    assert st["commit"] == "c2" and st["stacks"]["old"]["outcome"] == "gone"
    assert st["managed"] == ["ag", "old"]
    assert sum("stack old is deployed but no longer in the cluster file" in ln
               for ln in lines) == 1
    for _ in range(2):                                       # drift checks: said once
        clock.sleep(60)
        assert agent.poll() == D.DRIFT
    assert len([r for r in read_audit_swarm(EngineAPI(api), "old") if r["phase"] == "gone"]) == 1
    assert read_status(EngineAPI(api))["stacks"]["old"]["outcome"] == "gone"
    # a restarted agent knows `old` came from the file, and that it was reported
    fresh = Agent(agent.cfg, EngineAPI(api), repo, clock=clock, sleep=clock.sleep,
                  say=lambda _l: None, holder=Holder(AGENT_HOST, "container-c", 7))
    fresh.resume()
    clock.sleep(60)
    fresh.poll()
    assert len([r for r in read_audit_swarm(EngineAPI(api), "old") if r["phase"] == "gone"]) == 1
    assert read_status(EngineAPI(api))["stacks"]["old"]["outcome"] == "gone"
    # put back in the file: deployed as any stack, no longer gone
    repo.commit("c3", cluster=TWO)
    fresh.poll()
    assert read_status(EngineAPI(api))["stacks"]["old"]["outcome"] in ("converged", "unchanged")


def test_with_prune_a_stack_taken_out_of_the_file_is_removed_under_its_lock(world):
    from provision.swarm.lock import SwarmLock
    api, repo, clock, agent, lines = world
    agent.cfg.prune = True
    repo.commit("c1", cluster=TWO)
    agent.poll()
    person = SwarmLock(EngineAPI(api), "old", me=Holder("laptop", "boot-1", 4242),
                       clock=clock).acquire()
    repo.commit("c2")
    agent.poll()                          # a person's run holds old's lock: not now
    assert "old_web" in stack_names(api)
    assert read_status(EngineAPI(api))["stacks"]["old"]["outcome"] == "waiting"
    person.release()
    clock.sleep(60)
    assert agent.poll() == D.COMMIT       # the commit was not done while old waited
    assert stack_names(api) == {"ag_web"}
    (rec,) = [r for r in read_audit_swarm(EngineAPI(api), "old") if r["phase"] == "pruned"]
    assert rec["commit"] == "c2" and rec["exit_code"] == 0
    assert "remove service old_web" in rec["changes"]
    st = read_status(EngineAPI(api))
    assert st["commit"] == "c2" and st["stacks"]["old"]["outcome"] == "pruned"
    assert st["managed"] == ["ag"]
    assert not [c for c in api.configs_.values()
                if c["Spec"]["Name"].startswith("swarmsmith-lock-old")]     # lock released
    clock.sleep(60)
    agent.poll()
    assert "old" not in read_status(EngineAPI(api))["stacks"]


def test_a_cluster_file_that_does_not_load_on_a_drift_check_prunes_nothing(world):
    api, repo, clock, agent, _ = world
    agent.cfg.prune = True
    repo.commit("c1", cluster=TWO)
    agent.poll()
    repo.commits["c1"]["swarmsmith.yml"] = "stacks: [\n"      # unreadable now
    clock.sleep(60)
    assert agent.poll() == D.DRIFT
    assert stack_names(api) == {"ag_web", "old_web"}
    assert not [r for r in read_audit_swarm(EngineAPI(api)) if r.get("phase") == "pruned"]


def test_a_stack_deployed_by_hand_is_never_gone_nor_pruned(world):
    from stacks.operations.deploy import StackOptions, load_stack
    from stacks.operations.redeploy import RedeployOptions, redeploy_stack
    api, repo, clock, agent, _ = world
    agent.cfg.prune = True
    repo.commit("c1")
    agent.poll()
    loaded = load_stack("hand", [os.path.join(repo.dir, "stack.yml")], StackOptions())
    redeploy_stack(loaded, options=RedeployOptions(lock_wait=0), engine=EngineAPI(api))
    repo.commit("c2", release="2")
    agent.poll()
    clock.sleep(60)
    agent.poll()
    assert stack_names(api) == {"ag_web", "hand_web"}
    assert "hand" not in read_status(EngineAPI(api))["stacks"]
    assert read_status(EngineAPI(api))["managed"] == ["ag"]


def test_a_failed_fetch_is_reported_and_the_agent_goes_on(world):
    api, repo, clock, agent, lines = world
    repo.commit("c1")
    repo.fail = "git fetch exited 128: Host key verification failed."
    assert agent.poll() == D.FETCH_FAILED
    assert read_status(EngineAPI(api))["error"].endswith("Host key verification failed.")
    agent.poll()
    assert sum("fetch failed" in ln for ln in lines) == 1     # said once
    repo.fail = ""
    assert agent.poll() == D.COMMIT


def test_the_status_and_audit_carry_no_key_and_a_restarted_agent_resumes(world, tmp_path):
    api, repo, clock, agent, _ = world
    key = tmp_path / "deploy_key"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU\n")
    agent.cfg.deploy_key = str(key)
    repo.commit("c1")
    agent.poll()
    stored = json.dumps([c["Spec"] for c in api.configs_.values()])
    assert "b3BlbnNzaC1rZXktdjEAAAAABG5vbmU" not in stored
    assert base64.b64encode(b"b3BlbnNzaC1rZXktdjEAAAAABG5vbmU").decode() not in stored
    fresh = Agent(agent.cfg, EngineAPI(api), repo, clock=clock, sleep=clock.sleep,
                  say=lambda _l: None, holder=Holder(AGENT_HOST, "container-c", 7))
    fresh.resume()
    assert fresh.reconciled == "c1"
    clock.sleep(60)
    assert fresh.poll() == D.DRIFT


def test_agent_settings_come_from_the_environment_and_refuse_a_missing_repo():
    cfg = AgentConfig.from_env({"SWARMSMITH_AGENT_REPO": "ssh://g@h/r.git",
                                "SWARMSMITH_AGENT_INTERVAL": "5",
                                "SWARMSMITH_AGENT_CORRECT_DRIFT": "true"})
    assert (cfg.interval, cfg.correct_drift, cfg.branch, cfg.prune) == (5.0, True, "main", False)
    assert AgentConfig.from_env({"SWARMSMITH_AGENT_REPO": "ssh://g@h/r.git",
                                 "SWARMSMITH_AGENT_PRUNE": "true"}).prune is True
    with pytest.raises(InputError):
        AgentConfig.from_env({})


def test_git_runs_ssh_with_the_key_file_and_the_pinned_host_keys_only(tmp_path):
    from stacks.agent.loop import Git
    calls = []

    class Done:
        returncode, stdout, stderr = 0, "abc\n", ""

    def run(argv, **kw):
        calls.append((argv, kw["env"]))
        return Done()
    cfg = AgentConfig(repo="ssh://g@h/r.git", deploy_key="/run/secrets/k",
                      known_hosts="/etc/kh", workdir=str(tmp_path))
    os.makedirs(tmp_path / "checkout" / ".git")
    assert Git(cfg, run=run).fetch() == "abc"
    argv, env = calls[0]
    assert argv[:5] == ["git", "-C", str(tmp_path / "checkout"), "fetch", "-q"]
    ssh = env["GIT_SSH_COMMAND"]
    assert "-i /run/secrets/k" in ssh and "StrictHostKeyChecking=yes" in ssh
    assert "UserKnownHostsFile=/etc/kh" in ssh and "BatchMode=yes" in ssh


# --- the cluster file's agent: --------------------------------------------------------------

def _cluster(tmp_path, agent: str) -> str:
    (tmp_path / "key").write_text("k")
    (tmp_path / "kh").write_text("198.18.0.3 ssh-ed25519 "
                                 "AAAAC3NzaC1lZDI1NTE5AAAAIDmqdw+esvv6t7r4Uz3ZarAzI6zn+Ap69VhZ5nRpnv8t\n")
    p = tmp_path / "swarmsmith.yml"
    p.write_text("name: c\nprovider: lab\nagent:\n" + agent)
    return str(p)


def test_agent_settings_with_their_defaults(tmp_path):
    from inventory.clusterfile import load
    c = load(_cluster(tmp_path, "  repo: ssh://git@g.example/app.git\n  deploy_key: key\n"
                                "  known_hosts: kh\n"))
    a = c.agent
    assert (a.branch, a.path, a.interval, a.correct_drift, a.prune) == ("main", ".", 60.0,
                                                                          False, False)
    assert a.deploy_key == str(tmp_path / "key") and a.known_hosts == str(tmp_path / "kh")
    c = load(_cluster(tmp_path, "  repo: https://g.example/app.git\n  interval: 5\n"
                                "  path: deploy/prod\n  correct_drift: true\n  prune: true\n"))
    assert (c.agent.interval, c.agent.path, c.agent.correct_drift) == (5.0, "deploy/prod", True)
    assert c.agent.prune is True


@pytest.mark.parametrize("agent,key,words", [
    ("  branch: main\n", "agent.repo", "required"),
    ("  repo: ssh://git@g/app.git\n  known_hosts: kh\n", "agent.deploy_key", "required"),
    ("  repo: ssh://git@g/app.git\n  deploy_key: key\n", "agent.known_hosts", "required"),
    ("  repo: ssh://git@g/app.git\n  deploy_key: nokey\n  known_hosts: kh\n",
     "agent.deploy_key", "no such file"),
    ("  repo: https://u:pw@g/app.git\n", "agent.repo", "password does not belong"),
    ("  repo: https://g/app.git\n  interval: 0\n", "agent.interval", "expected 1 to 86400"),
    ("  repo: https://g/app.git\n  interval: fast\n", "agent.interval", "expected seconds"),
    ("  repo: https://g/app.git\n  correct_drift: yes please\n", "agent.correct_drift",
     "true or false"),
    ("  repo: https://g/app.git\n  prune: 1\n", "agent.prune", "true or false"),
    ("  repo: https://g/app.git\n  path: ../up\n", "agent.path", "relative folder"),
    ("  repo: https://g/app.git\n  branch: a..b\n", "agent.branch", "branch name"),
    ("  repo: https://g/app.git\n  colour: red\n", "agent.colour", "unknown key"),
])
def test_bad_agent_settings_name_the_file_and_key(tmp_path, agent, key, words):
    from inventory.clusterfile import load
    path = _cluster(tmp_path, agent)
    with pytest.raises(InputError) as e:
        load(path)
    assert str(e.value).startswith(f"{path}: {key}: ") and words in str(e.value), str(e.value)
    assert e.value.exit_code == 2


def test_agent_install_without_an_agent_section_is_bad_input_before_any_build(tmp_path):
    from tests.conftest import run_cli
    p = tmp_path / "swarmsmith.yml"
    p.write_text("name: c\nprovider: lab\n")
    out = run_cli("agent", "install", "--cluster", str(p))
    assert out.returncode == 2 and f"{p}: agent: no agent: section" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_status_lines_show_commit_time_outcomes_and_drift():
    from cli import agent_status_lines
    from stacks.agent.service import AgentResult
    r = AgentResult(service={"image": "swarmsmith/agent:1", "repo": "ssh://g/r.git",
                             "branch": "main", "interval": "5", "correct_drift": False,
                             "task_state": "running", "task_error": "", "restarts": 1},
                    status={"time": "2026-01-01T00:00:00Z", "reason": "drift",
                            "commit": "a" * 40, "head": "b" * 40,
                            "refused": {"commit": "b" * 40, "error": "stack.yml: x: bad"},
                            "stacks": {"ag": {"outcome": "drift", "detail": "reported",
                                              "drift": ["update service ag_web: Env"]}}})
    text = "\n".join(agent_status_lines(r))
    assert "agent: running (swarmsmith/agent:1)" in text and "1 restarts" in text
    assert "last reconcile: 2026-01-01T00:00:00Z (drift), commit aaaaaaaaaaaa" in text
    assert "refused commit bbbbbbbbbbbb: stack.yml: x: bad" in text
    assert "drift: update service ag_web: Env" in text
    assert "stacks taken out of the file reported" in text
    assert "not installed" in agent_status_lines(AgentResult())[0]
    r.service["prune"] = True
    r.status["stacks"]["old"] = {"outcome": "gone", "detail": "stack old is deployed but no "
                                 "longer in the cluster file; not removed (agent.prune is off)"}
    text = "\n".join(agent_status_lines(r))
    assert "stacks taken out of the file removed" in text
    assert "gone: stack old is deployed but no longer in the cluster file" in text


def test_prune_reaches_the_agents_service_only_when_set():
    from inventory.clusterfile import AgentSettings
    from stacks.agent import service as S
    plain = AgentSettings("https://g/app.git")

    def env(settings):
        cs = S.service_spec(settings, "swarmsmith/agent:1", None, None)["TaskTemplate"]
        return dict(e.split("=", 1) for e in cs["ContainerSpec"]["Env"])
    assert "SWARMSMITH_AGENT_PRUNE" not in env(plain)     # an installed agent's spec unchanged
    pruning = AgentSettings("https://g/app.git", prune=True)
    assert env(pruning)["SWARMSMITH_AGENT_PRUNE"] == "true"
    assert AgentConfig.from_env(env(pruning)).prune and not AgentConfig.from_env(env(plain)).prune


# --- the engine through its own socket ----------------------------------------------------------

def test_the_local_socket_transport_is_the_same_adapter_with_errors_naming_the_engine(tmp_path):
    from provision.engine_api.adapter import EngineAPI as Adapter, connect_local
    from provision.base.errors import SwarmsmithError
    from tests.test_engine_api_pool_units import _Server
    import threading
    path = str(tmp_path / "docker.sock")
    server = _Server(path)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        engine = connect_local(path)
        assert isinstance(engine, Adapter) and engine.api.api_version == "1.41"
        assert engine.node("n1")["ID"].endswith("/nodes/n1")      # through the adapter
    finally:
        server.shutdown()
    with pytest.raises(SwarmsmithError) as e:
        connect_local(str(tmp_path / "none.sock"))
    assert "connect to the Engine API on " + str(tmp_path / "none.sock") in str(e.value)


# --- the agent's service ----------------------------------------------------------------------

def test_converge_makes_secrets_config_and_service_once_and_puts_no_secret_in_the_spec():
    from inventory.clusterfile import AgentSettings
    from provision.remote.command import Secret
    from provision.engine_api.registry_auth import Credential
    from stacks.agent import service as S
    api = Swarm()
    engine = EngineAPI(api)
    settings = AgentSettings("ssh://git@g/app.git", deploy_key="/k", known_hosts="/kh",
                             interval=5)
    key = b"-----BEGIN OPENSSH PRIVATE KEY-----\nSECRETKEYBODY\n"
    regs = {"reg.example:5000": Credential("reg.example:5000", "ci", Secret("hunter2-pw"), "x")}
    changes = S.converge(engine, settings, "swarmsmith/agent:1", key, b"g ssh-ed25519 AAAA\n",
                         regs)
    assert [c.split(" ")[:2] for c in changes] == [
        ["create", "secret"], ["create", "secret"], ["create", "config"], ["create", "service"]]
    (svc,) = api.services_.values()
    spec = svc["Spec"]
    cs = spec["TaskTemplate"]["ContainerSpec"]
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role == manager"]
    assert cs["Mounts"] == [{"Type": "bind", "Source": "/var/run/docker.sock",
                             "Target": "/var/run/docker.sock"}]
    assert {s["File"]["Name"] for s in cs["Secrets"]} == {
        "swarmsmith-agent-deploy-key", "swarmsmith-agent-registry-0"}
    assert all(s["File"]["Mode"] == 0o400 for s in cs["Secrets"])
    env = dict(e.split("=", 1) for e in cs["Env"])
    assert json.loads(env["SWARMSMITH_AGENT_REGISTRIES"]) == {"reg.example:5000": {
        "username": "ci", "password_file": "/run/secrets/swarmsmith-agent-registry-0"}}
    text = json.dumps(spec) + json.dumps([s["Spec"] for s in api.secrets_.values()])
    for secret in ("SECRETKEYBODY", "hunter2-pw", base64.b64encode(b"hunter2-pw").decode()):
        assert secret not in text
    assert all(len(s["Spec"]["Name"]) <= 64 for s in api.secrets_.values())
    # again: nothing to do
    assert S.converge(engine, settings, "swarmsmith/agent:1", key, b"g ssh-ed25519 AAAA\n",
                      regs) == []
    # a new key: a new secret, the service updated, the old secret removed
    changes = S.converge(engine, settings, "swarmsmith/agent:1", key + b"x",
                         b"g ssh-ed25519 AAAA\n", regs)
    assert [c.split(" ")[:2] for c in changes] == [["create", "secret"], ["update", "service"],
                                                  ["remove", "secret"]], changes


def test_the_agent_reads_registry_passwords_from_its_secret_files(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("hunter2-pw\n")
    cfg = AgentConfig.from_env({
        "SWARMSMITH_AGENT_REPO": "ssh://g@h/r.git", "SWARMSMITH_AGENT_WORKDIR": str(tmp_path),
        "SWARMSMITH_AGENT_REGISTRIES": json.dumps({"reg.example:5000": {
            "username": "ci", "password_file": str(pw)}})})
    creds = cfg.credentials()
    header = json.loads(base64.urlsafe_b64decode(creds.header("reg.example:5000/app:1")))
    assert header == {"username": "ci", "password": "hunter2-pw",
                      "serveraddress": "reg.example:5000"}
    assert creds.header("docker.io/library/busybox:1") is None


def test_up_with_an_agent_whose_password_cannot_be_read_stops_before_any_host(tmp_path):
    from tests.conftest import run_cli
    path = _cluster(tmp_path, "  repo: https://g.example/app.git\n")
    text = open(path).read().replace("provider: lab\n", "provider: lab\nregistries:\n"
                                     "  reg.example:5000: {username: ci, password_env: "
                                     "GAG_UNSET_PASSWORD_VAR}\n")
    text = text.replace("name: c\n", "name: gagunit\n")
    open(path, "w").write(text)
    os.environ.pop("GAG_UNSET_PASSWORD_VAR", None)
    out = run_cli("up", path)
    assert out.returncode == 2, out.stderr
    assert "registries.reg.example:5000.password_env: environment variable " \
           "GAG_UNSET_PASSWORD_VAR" in out.stderr, out.stderr
    listed = run_cli("lab", "ls", "--name", "gagunit", "--json")
    assert json.loads(listed.stdout or "[]") in ([], {"hosts": []}), listed.stdout


def test_the_agent_image_carries_swarmsmiths_code_from_the_repository_top():
    from provision.images.agent import HOME, code_files
    files = code_files()
    assert all(os.path.isfile(src) for src in files)
    targets = set(files.values())
    for module in ("cli.py", "stacks/agent/loop.py", "provision/images/agent.py",
                   "inventory/clusterfile.py"):
        assert f"{HOME}/{module}" in targets, module


def test_old_agent_images_leave_the_cache_keeping_the_current_and_the_one_before(tmp_path):
    from provision.images.agent import ARCHIVE_PREFIX, prune
    paths = []
    for i in range(4):
        p = tmp_path / f"{ARCHIVE_PREFIX}{i}.images.tar"
        p.write_bytes(b"x")
        (tmp_path / f"{p.name}.gz").write_bytes(b"x")
        os.utime(p, (1000 + i, 1000 + i))
        paths.append(str(p))
    (tmp_path / "debian-bookworm-x.rootfs.tar").write_bytes(b"base")
    removed = prune(str(tmp_path), paths[1])
    assert sorted(os.listdir(tmp_path)) == sorted([
        "debian-bookworm-x.rootfs.tar", f"{ARCHIVE_PREFIX}1.images.tar",
        f"{ARCHIVE_PREFIX}1.images.tar.gz", f"{ARCHIVE_PREFIX}3.images.tar",
        f"{ARCHIVE_PREFIX}3.images.tar.gz"]), removed


def test_the_agent_image_holds_this_checkouts_cli_and_packages():
    # the image's code layer is read from the checkout's top folder, wherever in provision/
    # the image module itself lives
    from provision.images.agent import HOME, code_files
    from tests.conftest import REPO
    files = code_files()
    assert files[os.path.join(REPO, "cli.py")] == f"{HOME}/cli.py"
    for top in ("inventory", "provision", "stacks"):
        assert files[os.path.join(REPO, top, "__init__.py")] == f"{HOME}/{top}/__init__.py"
    assert files[os.path.join(REPO, "provision", "images", "agent.py")] == \
        f"{HOME}/provision/images/agent.py"
    assert all(os.path.isfile(src) for src in files)


def test_the_agent_exits_on_sigterm_through_its_finally_blocks():
    # as its container's first process the agent gets no default SIGTERM action: without the
    # handler every service update and engine stop waited out the grace period
    import signal
    import subprocess
    import sys
    code = ("import os, signal, time\n"
            "from stacks.agent.loop import exit_on_sigterm\n"
            "exit_on_sigterm()\n"
            "try:\n"
            "    os.kill(os.getpid(), signal.SIGTERM); time.sleep(5)\n"
            "finally:\n"
            "    print('released', flush=True)\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert p.returncode == 128 + signal.SIGTERM and p.stdout == "released\n", (p.returncode, p.stderr)
