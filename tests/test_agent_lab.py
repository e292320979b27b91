"""The agent on a real lab swarm, following a bare git repository over SSH.

One module-scoped cluster `gag1` (1 manager, 1 worker, busybox image loaded). The worker's own
sshd serves a bare repository kept in this machine's /tmp (lab hosts share it) to a deploy key
that only the agent has (a swarm secret); its host key is pinned through agent.known_hosts. The
tests run in order on that one cluster: install, a commit rolled out, drift reported, drift
corrected, a broken commit refused, the agent killed mid-rollout, a stack taken out of the file
reported then pruned, and nothing secret anywhere.
Needs root; skips only without it.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import textwrap
import time
from datetime import datetime

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.lab

CLUSTER = "gag1"
INTERVAL = 5
REGISTRY_PASSWORD = "gag-registry-password-7f3a91"

STACK = """\
version: "3.8"
services:
  web:
    image: swarmsmith/busybox:1
    command: ["sleep", "100000"]
    stop_grace_period: 1s
    environment: {{RELEASE: "{release}"}}
    deploy:
      replicas: {replicas}
      endpoint_mode: dnsrr
      update_config: {{parallelism: 1, delay: {delay}s, order: stop-first}}
"""


def cli(*args, timeout=300, env=None):
    if env is None:
        return run_cli(*args, timeout=timeout)
    import sys
    from tests.conftest import REPO
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **env})


class Lab:
    def __init__(self, path: str, dir_):
        from provision.engine_api.access import connect
        from provision.engine_api.sessions import inventory_hosts
        self.path, self.dir = path, dir_
        self.api = connect(path, shared=True).api.api
        self.manager = inventory_hosts(path, "manager")[0]
        self.worker = inventory_hosts(path, "worker")[0]
        self.work = dir_ / "work"
        self.bare = dir_ / "app.git"
        self.commits: dict[str, str] = {}

    def ssh(self, host, command: str) -> str:
        from tests.lab_ssh import ssh_exec
        rc, out, err = ssh_exec(host, command, timeout=120)
        assert rc == 0, f"{command!r} -> {rc}: {err}"
        return out

    def git(self, *args: str) -> str:
        return subprocess.run(["git", "-C", str(self.work), "-c", "user.name=t",
                               "-c", "user.email=t@example.invalid", *args], check=True,
                              capture_output=True, text=True).stdout.strip()

    def commit(self, label: str, stack_text: str) -> str:
        (self.work / "stack.yml").write_text(stack_text)
        self.git("commit", "-qam", label)
        self.git("push", "-q", str(self.bare), "main")
        self.commits[label] = self.git("rev-parse", "HEAD")
        return self.commits[label]

    def write_cluster(self, correct_drift: bool, prune: bool = False) -> None:
        (self.dir / "swarmsmith.yml").write_text(textwrap.dedent(f"""\
            name: {CLUSTER}
            provider: lab
            managers: 1
            workers: 1
            registries:
              registry.gag.invalid:5000: {{username: gag, password_env: GAG_REGISTRY_PASSWORD}}
            agent:
              repo: ssh://root@{self.worker.public_address}{self.bare}
              branch: main
              interval: {INTERVAL}
              deploy_key: deploy_key
              known_hosts: known_hosts
              correct_drift: {str(correct_drift).lower()}
              prune: {str(prune).lower()}
            """))

    def install(self) -> subprocess.CompletedProcess:
        p = cli("agent", "install", "--cluster", self.path, "--json",
                env={"GAG_REGISTRY_PASSWORD": REGISTRY_PASSWORD})
        assert p.returncode == 0, p.stderr + p.stdout
        return p

    def status(self) -> dict:
        p = cli("agent", "status", "--cluster", self.path, "--json")
        assert p.returncode == 0, p.stderr
        return json.loads(p.stdout)

    def audit(self) -> list[dict]:
        from stacks.operations.audit import read_audit_swarm
        return read_audit_swarm(self.api, "ag")

    def env(self) -> list:
        spec = self.api.inspect_service("ag_web")["Spec"]
        return spec["TaskTemplate"]["ContainerSpec"].get("Env") or []

    def wait(self, what: str, check, timeout: float = 90, every: float = 1.0):
        deadline = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s; " \
                f"agent status: {json.dumps(self.status().get('status'))[:1500]}"
            time.sleep(every)

    def records(self, commit: str, phase: str | None = None) -> list[dict]:
        return [r for r in self.audit() if r.get("commit") == commit and r.get("command") ==
                "agent" and (phase is None or r.get("phase") == phase)]

    def agent_logs(self) -> str:
        return self.ssh(self.manager, "docker service logs --raw swarmsmith-agent 2>&1")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("gag1")     # under /tmp: the lab hosts see it
    path = d / "swarmsmith.yml"
    path.write_text(f"name: {CLUSTER}\nprovider: lab\nmanagers: 1\nworkers: 1\n")
    try:
        up = run_cli("up", str(path))
        assert up.returncode == 0, up.stderr + up.stdout
        load = run_cli("image-load", str(path))
        assert load.returncode == 0, load.stderr
        lab = Lab(str(path), d)
        _repository(lab)
        yield lab
    finally:
        down = run_cli("down", str(path), timeout=600)
        assert down.returncode == 0, down.stderr


def _repository(lab: Lab) -> None:
    """The bare repository, a working copy with the cluster file and the stack, the deploy key
    accepted by the worker's sshd (restricted: no pty, no forwarding) and its host key pinned."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(lab.bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(lab.work)], check=True)
    (lab.work / "swarmsmith.yml").write_text(
        f"name: {CLUSTER}\nstacks:\n  - name: ag\n    compose: stack.yml\n")
    (lab.work / "stack.yml").write_text(STACK.format(release=1, replicas=1, delay=0))
    lab.git("add", "-A")
    lab.git("commit", "-qm", "one")
    lab.git("push", "-q", str(lab.bare), "main")
    lab.commits["one"] = lab.git("rev-parse", "HEAD")
    key = lab.dir / "deploy_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gag-deploy",
                    "-f", str(key)], check=True)
    pub = (lab.dir / "deploy_key.pub").read_text().strip()
    lab.ssh(lab.worker, f"echo 'restrict {pub}' >> /etc/ssh/authorized_keys")
    (lab.dir / "known_hosts").write_text(
        f"{lab.worker.public_address} {lab.worker.host_key}\n")
    lab.write_cluster(correct_drift=False)


def _secret_texts(lab: Lab) -> list[str]:
    """What must appear nowhere: the deploy key's body (each line of it) and the password."""
    lines = [ln for ln in (lab.dir / "deploy_key").read_text().splitlines()
             if ln and not ln.startswith("-----")]
    return lines + [REGISTRY_PASSWORD, base64.b64encode(REGISTRY_PASSWORD.encode()).decode()]


# --- the tests, in order, on one cluster ------------------------------------------------------

def test_install_deploys_the_first_commit_and_installing_again_changes_nothing(lab):
    t0 = time.monotonic()
    p = lab.install()
    print(f"agent install {time.monotonic() - t0:.1f} s")
    body = json.loads(p.stdout)
    assert any(c.startswith("create service swarmsmith-agent") for c in body["changes"]), body
    assert any(c.startswith("create secret swarmsmith-agent-deploy-key-") for c in body["changes"])
    spec = lab.api.inspect_service("swarmsmith-agent")["Spec"]
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == ["node.role == manager"]
    assert spec["Mode"]["Replicated"]["Replicas"] == 1
    cs = spec["TaskTemplate"]["ContainerSpec"]
    assert [m["Target"] for m in cs["Mounts"]] == ["/var/run/docker.sock"]
    assert sorted(s["File"]["Name"] for s in cs["Secrets"]) == [
        "swarmsmith-agent-deploy-key", "swarmsmith-agent-registry-0"]
    env = dict(e.split("=", 1) for e in cs["Env"])
    assert json.loads(env["SWARMSMITH_AGENT_REGISTRIES"]) == {"registry.gag.invalid:5000": {
        "username": "gag", "password_file": "/run/secrets/swarmsmith-agent-registry-0"}}
    lab.wait("the first commit deployed", lambda: lab.records(lab.commits["one"], "end"))
    assert "RELEASE=1" in lab.env()
    t0 = time.monotonic()
    again = json.loads(lab.install().stdout)
    print(f"agent install again {time.monotonic() - t0:.1f} s")
    assert again["changes"] == [], again        # nothing pushed, created or updated


def test_a_commit_changing_an_environment_variable_rolls_out_within_two_intervals(lab):
    pushed = time.time()
    commit = lab.commit("two", STACK.format(release=2, replicas=1, delay=0))
    (end,) = lab.wait("the commit's rollout", lambda: lab.records(commit, "end"))
    (start,) = lab.records(commit, "start")
    started = datetime.fromisoformat(start["ts"].replace("Z", "+00:00")).timestamp()
    print(f"push -> rollout started {started - pushed:.1f} s, -> converged "
          f"{datetime.fromisoformat(end['ts'].replace('Z', '+00:00')).timestamp() - pushed:.1f} s")
    assert started - pushed <= 2 * INTERVAL, (started - pushed, start)
    assert end["exit_code"] == 0 and end["changes"] == ["update service ag_web"], end
    assert "RELEASE=2" in lab.env()
    st = lab.status()["status"]
    assert st["commit"] == commit and st["stacks"]["ag"]["outcome"] in ("converged", "unchanged")


def test_a_hand_made_change_is_reported_as_drift_and_left_alone(lab):
    lab.ssh(lab.manager, "docker service update --detach --env-add HAND=1 ag_web")
    (rec,) = lab.wait("a drift record", lambda: [r for r in lab.audit()
                                                 if r.get("phase") == "drift"])
    assert rec["commit"] == lab.commits["two"] and rec["corrected"] is False
    assert any("ag_web" in d and "Env" in d for d in rec["drift"]), rec
    st = lab.wait("drift in agent status", lambda: (lab.status()["status"] or {}).get(
        "stacks", {}).get("ag", {}).get("outcome") == "drift" and lab.status())
    assert st["status"]["stacks"]["ag"]["drift"] == rec["drift"]
    text = cli("agent", "status", "--cluster", lab.path)
    assert "drift: update service ag_web" in text.stdout, text.stdout
    time.sleep(2 * INTERVAL)         # reported once, not corrected
    assert len([r for r in lab.audit() if r.get("phase") == "drift"]) == 1
    assert "HAND=1" in lab.env()


def test_with_correct_drift_the_hand_made_change_is_put_back(lab):
    lab.write_cluster(correct_drift=True)
    # `up` converges the agent too: its service is updated to correct drift
    up = cli("up", lab.path, "--json", env={"GAG_REGISTRY_PASSWORD": REGISTRY_PASSWORD})
    assert up.returncode == 0, up.stderr + up.stdout
    changes = json.loads(up.stdout)["changes"]
    assert any(c.startswith("agent: update service swarmsmith-agent") for c in changes), changes
    assert "SWARMSMITH_AGENT_CORRECT_DRIFT=true" in lab.api.inspect_service(
        "swarmsmith-agent")["Spec"]["TaskTemplate"]["ContainerSpec"]["Env"]
    lab.wait("the drift corrected", lambda: "HAND=1" not in lab.env(), timeout=120)
    (rec,) = lab.wait("a correction record", lambda: [
        r for r in lab.audit() if r.get("phase") == "end" and r.get("corrected")])
    assert rec["commit"] == lab.commits["two"] and rec["exit_code"] == 0, rec
    assert "RELEASE=2" in lab.env()


def test_a_broken_compose_file_changes_nothing_and_is_reported(lab):
    before = lab.api.inspect_service("ag_web")["Version"]["Index"]
    commit = lab.commit("broken", STACK.format(release=3, replicas="many", delay=0))
    (rec,) = lab.wait("the refusal", lambda: lab.records(commit, "refused"))
    assert rec["exit_code"] == 2
    assert rec["error"].startswith("stack.yml: services.web.deploy.replicas:"), rec
    st = lab.status()["status"]
    assert st["refused"]["commit"] == commit and "stack.yml" in st["refused"]["error"]
    assert st["commit"] == lab.commits["two"]
    time.sleep(2 * INTERVAL)
    assert lab.api.inspect_service("ag_web")["Version"]["Index"] == before
    assert "RELEASE=2" in lab.env()
    assert len(lab.records(commit, "refused")) == 1          # once, not every poll
    assert lab.api.inspect_service("swarmsmith-agent")      # still there, still polling
    assert lab.status()["service"]["task_state"] == "running"


def test_the_agent_killed_mid_rollout_is_restarted_and_converges_with_one_record(lab):
    # two replicas, one at a time with a pause between: a rollout of ten seconds or more
    lab.commit("wide", STACK.format(release=3, replicas=2, delay=0))
    lab.wait("two replicas", lambda: lab.records(lab.commits["wide"], "end"), timeout=120)
    commit = lab.commit("slow", STACK.format(release=4, replicas=2, delay=12))
    lab.wait("the rollout started", lambda: lab.records(commit, "start"), every=0.3)
    killed = lab.ssh(lab.manager, "docker ps -q --filter "
                     "label=com.docker.swarm.service.name=swarmsmith-agent | head -1").strip()
    assert killed
    lab.ssh(lab.manager, f"docker kill {killed}")
    t_kill = time.monotonic()
    lab.wait("the commit's end record", lambda: lab.records(commit, "end"), timeout=180)
    print(f"agent killed -> commit converged and recorded {time.monotonic() - t_kill:.1f} s")
    time.sleep(2 * INTERVAL)
    ends = lab.records(commit, "end")
    assert len(ends) == 1, ends
    (end,) = ends
    assert end["exit_code"] == 0, end
    assert any("broke the lock of a run that is gone" in n for n in end.get("notes", [])), end
    assert "RELEASE=4" in lab.env()
    tasks = [t for t in lab.api.tasks(filters={"service": "ag_web",
                                               "desired-state": "running"})
             if t["Status"]["State"] == "running"]
    assert len(tasks) == 2 and all(
        "RELEASE=4" in t["Spec"]["ContainerSpec"]["Env"] for t in tasks)
    assert not [c for c in lab.api.configs() if c["Spec"]["Name"] == "swarmsmith-lock-ag"]
    st = lab.status()
    assert st["status"]["commit"] == commit and st["service"]["restarts"] >= 1


def test_a_stack_taken_out_of_the_file_is_reported_then_removed_with_prune(lab):
    from stacks.operations.audit import read_audit_swarm
    two = f"name: {CLUSTER}\nstacks:\n  - {{name: ag, compose: stack.yml}}\n" \
          "  - {name: gone1, compose: stack.yml}\n"
    (lab.work / "swarmsmith.yml").write_text(two)
    added = lab.commit("added", (lab.work / "stack.yml").read_text())
    lab.wait("the second stack deployed", lambda: [
        r for r in read_audit_swarm(lab.api, "gone1") if r.get("commit") == added
        and r.get("phase") == "end"], timeout=120)
    (lab.work / "swarmsmith.yml").write_text(
        f"name: {CLUSTER}\nstacks:\n  - name: ag\n    compose: stack.yml\n")
    taken_out = lab.commit("taken-out", (lab.work / "stack.yml").read_text())
    (rec,) = lab.wait("the gone record", lambda: [
        r for r in read_audit_swarm(lab.api, "gone1") if r.get("phase") == "gone"])
    assert rec["commit"] == taken_out, rec
    assert "stack gone1 is deployed but no longer in the cluster file" in rec["detail"]
    text = cli("agent", "status", "--cluster", lab.path).stdout
    assert "gone: stack gone1 is deployed but no longer in the cluster file" in text, text
    time.sleep(2 * INTERVAL)                    # reported once, left running
    assert len([r for r in read_audit_swarm(lab.api, "gone1") if r.get("phase") == "gone"]) == 1
    assert lab.api.inspect_service("gone1_web")
    lab.write_cluster(correct_drift=True, prune=True)
    up = cli("up", lab.path, "--json", env={"GAG_REGISTRY_PASSWORD": REGISTRY_PASSWORD})
    assert up.returncode == 0, up.stderr + up.stdout
    (pruned,) = lab.wait("the stack removed", lambda: [
        r for r in read_audit_swarm(lab.api, "gone1") if r.get("phase") == "pruned"],
        timeout=120)
    assert "remove service gone1_web" in pruned["changes"], pruned
    assert not [x for x in lab.api.services() if x["Spec"]["Name"] == "gone1_web"]
    assert lab.api.inspect_service("ag_web")            # the stack still in the file stays


def test_no_deploy_key_or_registry_password_anywhere(lab):
    texts = {
        "agent logs": lab.agent_logs(),
        "audit": json.dumps(lab.audit()),
        "agent status": cli("agent", "status", "--cluster", lab.path, "--json").stdout
        + cli("agent", "status", "--cluster", lab.path).stdout,
        "service spec": json.dumps(lab.api.inspect_service("swarmsmith-agent")),
        "agent's configs": json.dumps([lab.api.inspect_config(c["ID"]) for c in
                                       lab.api.configs() if "agent" in c["Spec"]["Name"]]),
    }
    assert "following ssh://" in texts["agent logs"]        # the logs were read
    for secret in _secret_texts(lab):
        for where, text in texts.items():
            assert secret not in text, f"a secret in the {where}"
    cs = lab.api.inspect_service("swarmsmith-agent")["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert not any("PASSWORD" in e or "KEY=" in e and "/run/secrets/" not in e
                   for e in cs["Env"]), cs["Env"]


def test_remove_takes_the_agent_away_and_keeps_the_history(lab):
    p = cli("agent", "remove", "--cluster", lab.path)
    assert p.returncode == 0, p.stderr
    assert "remove service swarmsmith-agent" in p.stdout
    assert not [s for s in lab.api.secrets() if "swarmsmith-agent" in s["Spec"]["Name"]]
    again = cli("agent", "remove", "--cluster", lab.path)
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout
    assert "not installed" in cli("agent", "status", "--cluster", lab.path).stdout
    assert lab.records(lab.commits["two"], "end")
