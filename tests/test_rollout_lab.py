"""Rollouts on a real lab swarm.

One module-scoped cluster `rt1` (1 manager, 2 workers, busybox image loaded,
the lab's addresses trusted as insecure registries); `swarmsmith down` always
runs at the end.  A registry from Debian's docker-registry package runs inside
the manager's namespaces for the redeploy tests.  Needs root; skips only
without it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tests.conftest import REPO
from tests.lab_cluster import brought_up

pytestmark = pytest.mark.lab

CLUSTER = "rt1"
IMAGE = "swarmsmith/busybox:1"


def cli(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt1")
    path = d / "swarmsmith.yml"
    path.write_text(f"name: {CLUSTER}\nprovider: lab\nmanagers: 1\nworkers: 2\n"
                    "engine:\n  daemon:\n    insecure-registries: [\"198.18.0.0/15\"]\n")
    with brought_up(path):
        yield Lab(str(path), d)


class Lab:
    def __init__(self, path: str, dir_):
        self.path, self.dir = path, dir_
        from provision.engine_api.access import connect
        from provision.engine_api.sessions import inventory_hosts
        self.api = connect(path, shared=True).api.api
        self.manager = inventory_hosts(path, "manager")[0]

    def ssh(self, command: str, check: bool = True) -> str:
        from tests.lab_ssh import ssh_exec
        rc, out, err = ssh_exec(self.manager, command, timeout=120)
        assert not check or rc == 0, f"{command!r} -> {rc}: {err}"
        return out

    def compose(self, name: str, text: str) -> str:
        f = self.dir / f"{name}.yml"
        f.write_text(textwrap.dedent(text))
        return str(f)

    def deploy(self, compose: str, stack: str, *extra, command="deploy", env=None,
               timeout=300):
        t0 = time.monotonic()
        p = cli(command, "--cluster", self.path, "-c", compose, "--json", *extra, stack,
                env=env, timeout=timeout)
        took = time.monotonic() - t0
        try:
            body = json.loads(p.stdout)
        except ValueError:
            body = None
        return p.returncode, body, p, took

    def rm(self, *stacks: str) -> None:
        """Remove stacks whose tasks keep failing: their churn slows the lab for later tests."""
        for stack in stacks:
            p = cli("rm", "--cluster", self.path, stack)
            assert p.returncode == 0, p.stderr

    def service(self, name: str) -> dict:
        return self.api.inspect_service(name)

    def running_tasks(self, name: str) -> list[dict]:
        return [t for t in self.api.tasks(filters={"service": name, "desired-state": "running"})
                if t["Status"]["State"] == "running"]

    def audit(self) -> list[dict]:
        path = os.path.join(self.dir, ".swarmsmith", CLUSTER, "audit.jsonl")
        with open(path) as fh:
            return [json.loads(ln) for ln in fh if ln.strip()]


def env_of(spec: dict) -> list:
    """Env of a ServiceSpec or of a task's Spec (a TaskTemplate)."""
    template = spec.get("TaskTemplate", spec)
    return template["ContainerSpec"].get("Env") or []


def only(report: dict) -> dict:
    (svc,) = report["watch"]["services"]
    return svc


APP = """
version: "3.8"
services:
  web:
    image: swarmsmith/busybox:1
    command: ["sleep", "100000"]
    environment: {{RELEASE: "{release}"}}
    deploy:
      replicas: 3
      endpoint_mode: dnsrr
"""


# --- convergence -----------------------------------------------------------------------------

def test_update_to_new_env_converges_and_matches_service_ps(lab):
    f = lab.compose("app1", APP.format(release="1"))
    rc, body, p, _ = lab.deploy(f, "ra")
    assert rc == 0, p.stderr
    f = lab.compose("app1", APP.format(release="2"))
    rc, body, p, _ = lab.deploy(f, "ra")
    assert rc == 0, p.stderr
    svc = only(body)
    assert (svc["outcome"], svc["running"], svc["desired"]) == ("converged", 3, 3)
    assert svc["update_state"] == "completed"
    # the report against docker's own view
    ps = lab.ssh("docker service ps ra_web --filter desired-state=running "
                 "--format '{{.Name}} {{.CurrentState}}'").split("\n")
    ps = [ln for ln in ps if ln.strip()]
    assert len(ps) == svc["running"] and all(" Running " in ln + " " for ln in ps), ps
    assert lab.ssh("docker service inspect ra_web -f '{{.UpdateStatus.State}}'").strip() \
        == "completed"
    for t in lab.running_tasks("ra_web"):
        assert "RELEASE=2" in env_of(t["Spec"])
    # defaults were applied (the file has no update_config) and the plan said so
    spec = lab.service("ra_web")["Spec"]
    assert spec["UpdateConfig"]["FailureAction"] == "rollback"
    assert spec["UpdateConfig"]["Order"] == "start-first"
    # a second deploy with the same file changes nothing
    rc, body, p, _ = lab.deploy(f, "ra")
    assert rc == 0 and body["watch"] is None and body["applied"]["done"] == []


def test_rollback_command_returns_to_the_previous_spec(lab):
    # after the test above ra_web runs RELEASE=2 with RELEASE=1 as its previous spec
    p = cli("rollback", "--cluster", lab.path, "--json", "ra", "web")
    assert p.returncode == 0, p.stderr + p.stdout
    body = json.loads(p.stdout)
    assert body["requested"] == ["ra_web"]
    assert body["watch"]["services"][0]["outcome"] == "rolled_back"
    assert "RELEASE=1" in env_of(lab.service("ra_web")["Spec"])
    tasks = lab.running_tasks("ra_web")
    assert len(tasks) == 3 and all("RELEASE=1" in env_of(t["Spec"]) for t in tasks)
    assert lab.audit()[-1]["command"] == "rollback"
    # unknown service: bad input
    p = cli("rollback", "--cluster", lab.path, "ra", "nope")
    assert p.returncode == 2 and "no service named nope" in p.stderr


FAILING = """
version: "3.8"
services:
  web:
    image: swarmsmith/busybox:1
    command: {command}
    deploy:
      replicas: 3
      endpoint_mode: dnsrr
      update_config: {{parallelism: 1, failure_action: rollback, monitor: 5s}}
"""


def test_update_whose_tasks_exit_1_is_rolled_back(lab):
    good = lab.compose("fail", FAILING.format(command='["sleep", "100000"]'))
    assert lab.deploy(good, "rf")[0] == 0
    bad = lab.compose("fail", FAILING.format(
        command='["sh", "-c", "echo booting release 2; echo fatal: DB_URL missing; exit 1"]'))
    rc, body, p, took = lab.deploy(bad, "rf")
    assert rc == 11, p.stderr + p.stdout
    svc = only(body)
    assert svc["outcome"] == "rolled_back"
    assert "task exited with code 1" in svc["reason"]
    assert "fatal: DB_URL missing" in svc["log_tail"]
    assert took < 90
    # the old spec runs again
    spec = lab.service("rf_web")["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Args"] == ["sleep", "100000"]
    tasks = lab.running_tasks("rf_web")
    assert len(tasks) == 3
    assert all(t["Spec"]["ContainerSpec"]["Args"] == ["sleep", "100000"] for t in tasks)
    # allowed: the same rollback exits 0
    rc, body, p, _ = lab.deploy(bad, "rf", "--allow-rollback")
    assert rc == 0 and only(body)["outcome"] == "rolled_back", p.stderr + p.stdout


def test_resources_larger_than_any_node_fail_quickly(lab):
    f = lab.compose("big", """
        version: "3.8"
        services:
          big:
            image: swarmsmith/busybox:1
            command: ["sleep", "100000"]
            deploy:
              replicas: 1
              endpoint_mode: dnsrr
              resources:
                limits: {memory: 200G}
                reservations: {memory: 100G}
        """)
    rc, body, p, took = lab.deploy(f, "rr")
    assert rc == 10, p.stderr + p.stdout
    svc = only(body)
    assert "insufficient resources" in svc["reason"], svc
    assert took < 60
    # a CPU limit above the node's CPUs: the engine rejects the task
    f = lab.compose("cpu", """
        version: "3.8"
        services:
          cpu:
            image: swarmsmith/busybox:1
            command: ["sleep", "100000"]
            deploy:
              endpoint_mode: dnsrr
              resources: {limits: {cpus: "64"}}
        """)
    rc, body, p, took = lab.deploy(f, "rc")
    lab.rm("rr", "rc")
    assert rc == 10 and "CPUs" in only(body)["reason"] and took < 60, p.stdout


MISSING = """
version: "3.8"
services:
  m:
    image: {image}
    command: ["sleep", "100000"]
    deploy:
      replicas: {replicas}
      endpoint_mode: dnsrr
"""


def test_missing_image_fails_on_create_and_on_update(lab, registry):
    # the image names the lab registry (so the plan's image check lets it through), which
    # does not have it: every node rejects the task
    image = f"{registry}/nosuch:1"
    f = lab.compose("miss", MISSING.format(image=image, replicas=2))
    rc, body, p, took = lab.deploy(f, "rm1", "--timeout", "120")
    assert rc == 10 and "No such image" in only(body)["reason"] and took < 60, p.stdout
    # the lead's case: scaling 2 -> 3 ran into the timeout before the watcher fix
    f = lab.compose("miss", MISSING.format(image=image, replicas=3))
    rc, body, p, took = lab.deploy(f, "rm1", "--timeout", "120")
    assert rc == 10, p.stdout + p.stderr
    svc = only(body)
    assert "No such image" in svc["reason"] and svc["desired"] == 3 and took < 60
    # a running service updated to the missing image: rolled back (swarmsmith's defaults)
    g = lab.compose("miss2", MISSING.format(image=IMAGE, replicas=2))
    assert lab.deploy(g, "rm2")[0] == 0
    g = lab.compose("miss2", MISSING.format(image=image, replicas=2))
    rc, body, p, took = lab.deploy(g, "rm2", "--timeout", "120")
    assert rc == 11 and "No such image" in only(body)["reason"] and took < 90, p.stdout
    # ... and with failure_action continue (no rollback, no pause): failed, not a timeout
    h = lab.compose("miss3", MISSING.format(image=IMAGE, replicas=2) +
                    "      update_config: {failure_action: continue}\n")
    assert lab.deploy(h, "rm3")[0] == 0
    h = lab.compose("miss3", MISSING.format(image=image, replicas=2) +
                    "      update_config: {failure_action: continue}\n")
    rc, body, p, took = lab.deploy(h, "rm3", "--timeout", "120")
    lab.rm("rm1", "rm2", "rm3")
    assert rc == 10 and "No such image" in only(body)["reason"] and took < 90, p.stdout


NEVER_HEALTHY = """
version: "3.8"
services:
  h:
    image: swarmsmith/busybox:1
    command: ["sleep", "100000"]
    environment: {{RELEASE: "{release}"}}
    {healthcheck}
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
"""
HC = 'healthcheck: {test: ["CMD", "false"], interval: 60s, start_period: 120s}'


def test_timeout_20_gives_the_timeout_code_in_about_20_s(lab):
    # new service whose tasks never become healthy
    f = lab.compose("hc", NEVER_HEALTHY.format(release="1", healthcheck=HC))
    rc, body, p, took = lab.deploy(f, "rt", "--timeout", "20")
    assert rc == 12, p.stdout + p.stderr
    svc = only(body)
    assert svc["outcome"] == "timed_out"
    # the watch itself ends at its deadline; the process adds plan and apply
    assert 19.5 <= body["watch"]["seconds"] < 22 and took < 40, (took, body["watch"])
    # an update stuck on tasks that never become healthy: the stall bound must not
    # pre-empt the user's 20 s
    g = lab.compose("hc2", NEVER_HEALTHY.format(release="1", healthcheck=""))
    assert lab.deploy(g, "rt2")[0] == 0
    g = lab.compose("hc2", NEVER_HEALTHY.format(release="2", healthcheck=HC))
    rc, body, p, took = lab.deploy(g, "rt2", "--timeout", "20")
    assert rc == 12 and only(body)["update_state"] == "updating", p.stdout
    assert 19.5 <= body["watch"]["seconds"] < 22 and took < 40, (took, body["watch"])
    lab.rm("rt", "rt2")


def test_replicated_job_finishes_and_is_reported_done(lab):
    f = lab.compose("job", """
        version: "3.8"
        services:
          once:
            image: swarmsmith/busybox:1
            command: ["sh", "-c", "echo migrated"]
            deploy:
              mode: replicated-job
              replicas: 2
              endpoint_mode: dnsrr
        """)
    rc, body, p, took = lab.deploy(f, "rj")
    assert rc == 0, p.stdout + p.stderr
    svc = only(body)
    # a job: `updated` counts completed tasks, `running` those still running
    assert (svc["outcome"], svc["updated"], svc["running"], svc["desired"]) == ("done", 2, 0, 2)
    assert took < 60


def test_global_service_converges(lab):
    f = lab.compose("glob", """
        version: "3.8"
        services:
          agent:
            image: swarmsmith/busybox:1
            command: ["sleep", "100000"]
            deploy:
              mode: global
              endpoint_mode: dnsrr
        """)
    rc, body, p, _ = lab.deploy(f, "rg")
    assert rc == 0, p.stdout + p.stderr
    svc = only(body)
    assert (svc["outcome"], svc["running"], svc["desired"]) == ("converged", 3, 3)


def test_no_update_defaults_sends_no_update_config(lab):
    f = lab.compose("nodef", APP.format(release="1"))
    assert lab.deploy(f, "rn", "--no-update-defaults")[0] == 0
    spec = lab.service("rn_web")["Spec"]
    assert (spec.get("UpdateConfig") or {}).get("FailureAction", "pause") == "pause"
    f = lab.compose("port", """
        version: "3.8"
        services:
          web:
            image: swarmsmith/busybox:1
            command: ["httpd", "-f", "-p", "8080"]
            ports: [{target: 8080, published: 8080, mode: host}]
            deploy: {replicas: 2, endpoint_mode: dnsrr}
        """)
    assert lab.deploy(f, "rp")[0] == 0
    assert lab.service("rp_web")["Spec"]["UpdateConfig"]["Order"] == "stop-first"


# --- redeploy, registry, lock ------------------------------------------------------------------

@pytest.fixture(scope="module")
def registry(lab):
    """docker-registry inside the manager's namespaces, on its lab address, port 5000."""
    addr = lab.manager.public_address
    root = lab.dir / "registry"
    root.mkdir()
    (root / "config.yml").write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage:\n  filesystem: {{rootdirectory: {root}/data}}\n"
        f"http:\n  addr: {addr}:5000\n")
    lab.ssh(f"setsid sh -c 'exec /usr/bin/docker-registry serve {root}/config.yml "
            f">{root}/log 2>&1' & echo $! > {root}/pid")
    pid = int((root / "pid").read_text())
    try:
        import requests
        for _ in range(50):
            try:
                if requests.get(f"http://{addr}:5000/v2/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            raise AssertionError("registry did not answer")
        yield f"{addr}:5000"
    finally:
        os.kill(pid, signal.SIGTERM)


def push(lab, ref: str, build: int | None = None) -> str:
    """Push a tag; build N makes a new image (an ENV line) under the same tag."""
    if build is None:
        lab.ssh(f"docker tag {IMAGE} {ref}")
    else:
        lab.ssh(f"printf 'FROM {IMAGE}\\nENV BUILD={build}\\n' | docker build -q -t {ref} -")
    out = lab.ssh(f"docker push {ref}")
    return next(w for w in out.split() if w.startswith("sha256:"))


REG_APP = """
version: "3.8"
services:
  app:
    image: {image}
    command: ["sleep", "100000"]
    environment:
      DB_PASSWORD: hunter2-do-not-print
      RUN: "${{RUN:-0}}"
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
"""


def redeploy(lab, f, stack, *extra, env=None, registry):
    return lab.deploy(f, stack, "--insecure-registry", registry, *extra, command="redeploy",
                      env=env)


def test_redeploy_rolls_out_a_new_image_behind_the_same_tag(lab, registry):
    ref = f"{registry}/bb:v1"
    d1 = push(lab, ref)
    f = lab.compose("reg", REG_APP.format(image=ref))
    rc, body, p, _ = redeploy(lab, f, "rd", registry=registry)
    assert rc == 0, p.stderr + p.stdout
    assert body["images"] == {"rd_app": f"{ref}@{d1}"}
    assert lab.service("rd_app")["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"] == f"{ref}@{d1}"
    version = lab.service("rd_app")["Version"]["Index"]

    # same tag, same digest: nothing changes
    p = cli("redeploy", "--cluster", lab.path, "-c", f, "--insecure-registry", registry, "rd")
    assert p.returncode == 0 and "no changes" in p.stdout, p.stdout + p.stderr
    assert lab.service("rd_app")["Version"]["Index"] == version

    # a new image under the same tag: the plan shows old -> new digest, the service updates
    d2 = push(lab, ref, build=2)
    assert d2 != d1
    p = cli("redeploy", "--cluster", lab.path, "-c", f, "--insecure-registry", registry, "rd")
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"{ref}@{d1}" in p.stdout and f"{ref}@{d2}" in p.stdout
    assert "converged" in p.stdout
    tasks = lab.running_tasks("rd_app")
    assert len(tasks) == 2
    assert all(t["Spec"]["ContainerSpec"]["Image"] == f"{ref}@{d2}" for t in tasks)
    # never prints secrets; one audit line per run that changed something (the no-op run in
    # between is not history)
    assert "hunter2" not in p.stdout + p.stderr
    lines = [r for r in lab.audit() if r["command"] == "redeploy" and r["stack"] == "rd"
             and r["phase"] == "end"]
    assert len(lines) == 2
    assert lines[0]["changes"] and lines[1]["images"]["rd_app"].endswith(d2)
    assert "hunter2" not in open(os.path.join(lab.dir, ".swarmsmith", CLUSTER,
                                              "audit.jsonl")).read()


def _start(lab, f, stack, registry, *extra, run):
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "cli.py"), "redeploy", "--cluster", lab.path,
         "-c", f, "--insecure-registry", registry, *extra, stack], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "RUN": str(run)})


def _lock_id(lab, stack):
    found = [c for c in lab.api.configs(filters={"name": [f"swarmsmith-lock-{stack}"]})
             if c["Spec"]["Name"] == f"swarmsmith-lock-{stack}"]
    return found[0]["ID"] if found else None


def test_two_redeploys_at_once_one_waits_or_exits_4(lab, registry):
    ref = f"{registry}/bb:v1"
    f = lab.compose("lock", REG_APP.format(image=ref))
    assert redeploy(lab, f, "rl", registry=registry)[0] == 0
    # both want RUN=1; each update takes several seconds (start-first, monitor 5 s)
    runs = [_start(lab, f, "rl", registry, "--lock-wait", "3", run=1) for _ in range(2)]
    outs = [(r.wait(timeout=300), *r.communicate()) for r in runs]
    codes = sorted(o[0] for o in outs)
    assert codes == [0, 4], outs
    loser = next(o for o in outs if o[0] == 4)
    assert "is locked" in loser[2] and "held by" in loser[2]
    # with a wait long enough the second proceeds after the first, and finds nothing to do
    runs = [_start(lab, f, "rl", registry, "--lock-wait", "120", run=2) for _ in range(2)]
    outs = [(r.wait(timeout=300), *r.communicate()) for r in runs]
    assert [o[0] for o in outs] == [0, 0], outs
    assert sum("no changes" in o[1] for o in outs) == 1, outs
    assert _lock_id(lab, "rl") is None


PAUSING = """
version: "3.8"
services:
  app:
    image: swarmsmith/busybox:1
    command: ["sh", "-c", "{command}"]
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      update_config: {{parallelism: 1, delay: 0s, failure_action: pause, monitor: 60s,
                      order: stop-first}}
"""


def test_deploy_killed_mid_update_next_neither_waits_nor_says_ok(lab):
    """SIGKILL a deploy while its update runs (the new tasks fail after a few seconds; the
    update pauses). The next deploy of the same files: the dead run's lock is broken at once
    (same host, pid gone; not after the 30-minute TTL), the plan is empty, and the paused
    update is reported with exit 10, never 0. The killed run left its audit start line; its
    socket folder is removed by the next run."""
    good = lab.compose("k1", PAUSING.format(command="sleep 100000"))
    assert lab.deploy(good, "rk")[0] == 0
    bad = lab.compose("k2", PAUSING.format(command="sleep 6; exit 1"))
    victim = subprocess.Popen([sys.executable, os.path.join(REPO, "cli.py"), "deploy",
                               "--cluster", lab.path, "-c", bad, "rk"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              stdin=subprocess.DEVNULL)
    t0 = time.monotonic()
    while (lab.service("rk_app").get("UpdateStatus") or {}).get("State") != "updating":
        assert time.monotonic() - t0 < 60 and victim.poll() is None
        time.sleep(0.1)
    assert victim.poll() is None        # killed mid-update, still watching
    # its socket folder, read before the kill: after it, another lab test's swarmsmith run
    # (in parallel under CI) may already have removed the folder of a pid that is gone
    socket_dirs = [d for d in os.listdir("/tmp")
                   if d.startswith(f"swarmsmith-docker-{victim.pid}-")]
    assert socket_dirs
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert _lock_id(lab, "rk") is not None     # the killed run could not release it

    p = cli("deploy", "--cluster", lab.path, "-c", bad, "--lock-wait", "0", "--timeout", "120",
            "rk")
    assert p.returncode == 10, p.stdout + p.stderr
    assert "broke the lock of a run that is gone" in p.stderr and "pid" in p.stderr
    assert "0 to create, 0 to update" in p.stdout
    assert "not settled, watching too: rk_app" in p.stdout and "paused" in p.stdout
    assert _lock_id(lab, "rk") is None
    assert not any(os.path.exists(os.path.join("/tmp", d)) for d in socket_dirs)
    mine = [r for r in lab.audit() if r["stack"] == "rk"]
    assert [r["phase"] for r in mine[-3:]] == ["end", "start", "end"]   # killed: no end
    assert mine[-1]["exit_code"] == 10 and mine[-2]["exit_code"] is None
    lab.rm("rk")
