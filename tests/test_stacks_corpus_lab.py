"""Parity on real-world-style stack files (tests/fixtures/stacks/corpus/): each file is
deployed by the 20.10 `docker stack deploy` on a lab manager, planned by swarmsmith against
that CLI stack (no changes), taken over by a swarmsmith deploy with only
`--no-update-defaults` (no service updated, no task restarted, nothing left to change),
removed, deployed by swarmsmith under the same stack name, and the stored specs of both
deploys compared (services, networks, secrets, configs).  One more small CLI stack checks
that swarm itself refuses the take-over of a secret whose content is not the file's.

One module-scoped lab `par1` (1 manager + 1 worker), always brought down at the end.  The
corpus images are only names: every node gets them as tags of one image built from the
busybox test image whose entrypoint sleeps whatever arguments it is given, so tasks run
quietly and no registry is needed.  The corpus folder sits at the same absolute /tmp path
for this machine and the lab hosts, so relative bind sources and file paths agree.

Every difference must be listed in KNOWN_DIFFERENCES (each documented in docs/stacks.md,
"Differences from docker stack deploy"); there are none for this corpus.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
import time

import pytest

from tests.conftest import REPO
from tests.lab_ssh import remove_cli_stacks
from tests.test_stacks_parity_lab import CONTENT_LABEL, grouped, normalise, ok, spec_diff, \
    swarmsmith

pytestmark = pytest.mark.lab

CLUSTER = "par1"
CORPUS = os.path.join(REPO, "tests", "fixtures", "stacks", "corpus")
DOCKER = "/usr/bin/docker"      # the 20.10 CLI of apt's docker.io, on the manager
STACKS = {"monitoring": "pcmon", "proxy": "pcprx", "app": "pcapp", "agents": "pcagt",
          "paths": "pcpth"}
AS_CLI = ("--no-versioned-names", "--no-update-defaults")
TAKEOVER = "--no-update-defaults"
# variables the corpus interpolates with defaults: unset for both deploys
CORPUS_VARS = ("RETENTION", "PUBLIC_NETWORK", "ACME_EMAIL", "LOG_LEVEL")
HOME = "/root"                  # the manager's SSH session has this HOME too (`~` in paths.yml)
# (stack file, service, flattened spec path) -> why swarmsmith differs on purpose
KNOWN_DIFFERENCES: dict = {}
SLEEPER = ('FROM swarmsmith/busybox:1\n'
           'ENTRYPOINT ["/bin/sh", "-c", "exec sleep 1000000", "sleep"]\n')


def corpus_images() -> list[str]:
    out = set()
    for name in STACKS:
        with open(os.path.join(CORPUS, f"{name}.yml")) as f:
            out |= set(re.findall(r"^\s+image:\s*(\S+)\s*$", f.read(), re.M))
    return sorted(out - {"swarmsmith/busybox:1"})


class Lab:
    def __init__(self, path: str):
        from provision.engine_api.access import connect
        from provision.engine_api.sessions import inventory_hosts
        self.path = path
        manager = connect(path, shared=True)
        self.session = manager.session
        self.api = manager.api.api
        self.hosts = inventory_hosts(path)

    def sh(self, script: str, check: bool = True):
        from provision.remote.command import Command
        r = self.session.run(Command.shell(script), check=False, timeout=300)
        if check and r.exit_status != 0:
            raise AssertionError(f"manager: {script}\n-> {r.exit_status}\n{r.stdout}\n{r.stderr}")
        return r

    def on_every_node(self, command: str) -> None:
        from tests.lab_ssh import ssh_exec
        for host in self.hosts:
            rc, out, err = ssh_exec(host, command, timeout=300)
            assert rc == 0, f"{host.name}: {command}\n{out}{err}"

    def swarmsmith(self, *args: str, stack: str, file: str) -> dict | str:
        env = {k: v for k, v in os.environ.items() if k not in CORPUS_VARS}
        proc = swarmsmith("deploy", "--cluster", self.path, *args, "-c", file, stack,
                          env={**env, "HOME": HOME})
        ok(proc)
        return json.loads(proc.stdout) if "--json" in args else proc.stdout

    def snapshot(self, stack: str) -> dict:
        """The stack's stored specs, network IDs replaced by names (they are recreated) and
        the stack name by STACK."""
        label = {"label": f"com.docker.stack.namespace={stack}"}
        nets = {n["Id"]: n["Name"] for n in self.api.networks()}
        out = {"services": {}, "networks": {}, "secrets": {}, "configs": {}}
        for s in self.api.services(filters=label):
            spec = normalise(s["Spec"], stack, nets)
            out["services"][spec["Name"]] = spec
        for n in self.api.networks(filters=label):
            n = self.api.inspect_network(n["Id"])
            opts = {k: v for k, v in (n.get("Options") or {}).items()
                    if k != "com.docker.network.driver.overlay.vxlanid_list"}  # allocated
            out["networks"][n["Name"].replace(stack, "STACK")] = normalise({
                "Driver": n["Driver"], "Options": opts, "Attachable": n["Attachable"],
                "Internal": n["Internal"], "Scope": n["Scope"], "Labels": n["Labels"],
                "IPAMDriver": n["IPAM"]["Driver"]}, stack, {})
        for kind in ("secrets", "configs"):
            for o in getattr(self.api, kind)(filters=label):
                spec = normalise(o["Spec"], stack, {})
                spec["Labels"] = {k: v for k, v in spec["Labels"].items() if k != CONTENT_LABEL}
                out[kind][spec["Name"]] = spec
        return out

    def tasks(self, stack: str) -> tuple[dict, list]:
        """({service: version}, sorted IDs of the tasks meant to run) of a stack."""
        label = {"label": f"com.docker.stack.namespace={stack}"}
        services = {s["ID"]: (s["Spec"]["Name"], s["Version"]["Index"])
                    for s in self.api.services(filters=label)}
        tasks = sorted(t["ID"] for t in self.api.tasks()
                       if t["ServiceID"] in services and t["DesiredState"] == "running")
        return dict(services.values()), tasks

    def settled(self, stack: str, deadline: float = 60) -> tuple[dict, list]:
        """tasks() once swarm has finished with the new services itself: it updates each one
        as it allocates its endpoint (a new version, no spec change), and on a loaded machine
        that can come seconds after `docker stack deploy` returned. A service's tasks get past
        "new" only once it is allocated; two reads must agree as well. Past the deadline (a
        global service no node may run has no task at all), the last read."""
        label = {"label": f"com.docker.stack.namespace={stack}"}
        end, last = time.monotonic() + deadline, None
        while True:
            ids = {s["ID"] for s in self.api.services(filters=label)}
            allocated = {t["ServiceID"] for t in self.api.tasks()
                         if t["ServiceID"] in ids and (t.get("Status") or {}).get("State") != "new"}
            now = self.tasks(stack)
            if (ids and allocated == ids and now == last) or time.monotonic() > end:
                return now
            last = now
            time.sleep(0.5)

    def wait_gone(self, stacks, deadline: float = 90) -> None:
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            if not any(self.api.services(filters={"label": f"com.docker.stack.namespace={s}"})
                       or self.api.networks(filters={"label": f"com.docker.stack.namespace={s}"})
                       for s in stacks):
                return
            time.sleep(0.5)
        raise AssertionError(f"stacks {stacks} still have services or networks")


@pytest.fixture(scope="module")
def lab():
    folder = tempfile.mkdtemp(prefix="swarmsmith-par1-", dir="/tmp")
    path = os.path.join(folder, "swarmsmith.yml")
    with open(path, "w") as f:
        f.write(f"name: {CLUSTER}\nprovider: lab\nmanagers: 1\nworkers: 1\n")
    try:
        ok(swarmsmith("up", path, timeout=600))
        ok(swarmsmith("image-load", path, timeout=600))
        yield Lab(path)
    finally:
        down = swarmsmith("down", path, timeout=900)
        shutil.rmtree(folder, ignore_errors=True)
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def runs(lab):
    """Both deploys of every corpus file, swarmsmith's plans against the CLI stacks, and its
    take-over of them: {"cli": {file: snapshot}, "ours": {file: snapshot}, "plans": {file:
    {flags: plan}}, "takeover": {file: {"before"/"after": Lab.tasks(), "replan": plan}}}."""
    folder = tempfile.mkdtemp(prefix="swarmsmith-corpus-", dir="/tmp")
    out: dict = {"cli": {}, "ours": {}, "plans": {}, "takeover": {}}
    try:
        shutil.copytree(CORPUS, folder, dirs_exist_ok=True)
        tags = " ".join(f"-t {shlex.quote(i)}" for i in corpus_images())
        lab.on_every_node(f"printf %s {shlex.quote(SLEEPER)} | {DOCKER} build -q {tags} - "
                          ">/dev/null")
        lab.sh(f"{DOCKER} network create -d overlay --attachable corpus_public >/dev/null && "
               f"printf k | {DOCKER} secret create session_key - >/dev/null")
        for name, stack in STACKS.items():
            lab.sh(f"cd {shlex.quote(folder)} && HOME={HOME} {DOCKER} stack deploy "
                   f"--resolve-image never -c {name}.yml {stack}")
        for name, stack in STACKS.items():
            out["cli"][name] = lab.snapshot(stack)
            file = os.path.join(folder, f"{name}.yml")
            out["plans"][name] = {
                AS_CLI: lab.swarmsmith(*AS_CLI, "--dry-run", "--json", stack=stack, file=file)}
            # the take-over: a real deploy (its plan is the one checked), then a second plan
            before = lab.settled(stack)
            run = lab.swarmsmith(TAKEOVER, "--detach", "--json", stack=stack, file=file)
            out["plans"][name][(TAKEOVER,)] = run["plan"]
            out["takeover"][name] = {
                "before": before, "after": lab.tasks(stack),
                "replan": lab.swarmsmith(TAKEOVER, "--dry-run", "--json", stack=stack,
                                         file=file)}
        remove_cli_stacks(lab.sh, STACKS.values(), DOCKER)
        lab.wait_gone(STACKS.values())
        for name, stack in STACKS.items():
            lab.swarmsmith(*AS_CLI, "--detach", stack=stack, file=os.path.join(folder, f"{name}.yml"))
            out["ours"][name] = lab.snapshot(stack)
        yield out
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("name", list(STACKS))
def test_service_specs_match_docker_stack_deploy(runs, name):
    cli, ours = runs["cli"][name]["services"], runs["ours"][name]["services"]
    assert sorted(cli) == sorted(ours) and cli, (sorted(cli), sorted(ours))
    found = {}
    for service in sorted(cli):
        d = spec_diff(cli[service], ours[service])
        for path in grouped(d):
            found[(name, service, path)] = {k: v for k, v in d.items()
                                            if k.split("[")[0] == path}
    expected = {k for k in KNOWN_DIFFERENCES if k[0] == name}
    assert set(found) == expected, json.dumps({" ".join(k): v for k, v in found.items()},
                                              indent=1, default=str)


@pytest.mark.parametrize("name", list(STACKS))
def test_networks_secrets_configs_match(runs, name):
    cli, ours = runs["cli"][name], runs["ours"][name]
    for kind in ("networks", "secrets", "configs"):
        assert cli[kind] == ours[kind], kind


@pytest.mark.parametrize("name", list(STACKS))
def test_plan_of_the_cli_stack_shows_no_changes(runs, name):
    for flags, plan in runs["plans"][name].items():
        changed = [(a["kind"], a["name"], a["action"], a.get("changes"))
                   for a in plan["actions"] if a["action"] != "unchanged"]
        assert not plan["problems"], plan["problems"]
        if flags == AS_CLI or name != "app":
            assert changed == [], (flags, changed)
        else:
            # versioned names (the default): the CLI's configs are kept (same data); its
            # secret is kept and only gets swarmsmith's content-hash label, which the plan
            # says it could not check (docs/stacks.md, "Taking over a CLI stack")
            assert changed == [("secret", "pcapp_db_password", "update", [{
                "path": f"Labels.{CONTENT_LABEL}", "old": None,
                "new": "(keyed hash of the file)"}])], changed
            secret = next(a for a in plan["actions"] if a["name"] == "pcapp_db_password")
            assert secret["content_checked"] is False and "could not be" in secret["note"]


@pytest.mark.parametrize("name", list(STACKS))
def test_takeover_of_the_cli_stack_restarts_no_task(runs, name):
    """The CLI's stack deployed by swarmsmith with only --no-update-defaults: not one service
    updated (same versions), the same tasks run, and a second plan has nothing to change."""
    run = runs["takeover"][name]
    (versions, tasks), after = run["before"], run["after"]
    assert versions and tasks and after == (versions, tasks)
    replan = run["replan"]
    assert replan["counts"]["create"] == replan["counts"]["update"] == 0, replan
    assert not [w for w in replan["warnings"] if "could not be checked" in w], replan
    kept = {a["name"].replace(STACKS[name], "STACK", 1) for a in replan["actions"]
            if a["kind"] in ("secret", "config")}
    assert kept == set(runs["cli"][name]["secrets"]) | set(runs["cli"][name]["configs"])


def test_takeover_of_a_secret_with_other_content_is_refused_by_swarm(lab):
    """A CLI secret whose file changed since: swarm refuses the label update carrying the
    file's content (exit 1, no service touched); the next deploy moves to a new secret."""
    folder = tempfile.mkdtemp(prefix="swarmsmith-tkref-", dir="/tmp")
    stack = "tkref"
    try:
        file = os.path.join(folder, "s.yml")
        with open(file, "w") as f:
            f.write('version: "3.8"\nservices:\n  app:\n    image: swarmsmith/busybox:1\n'
                    '    command: sleep 1000000\n    secrets: [pw]\n'
                    'secrets:\n  pw: {file: ./pw.txt}\n')
        with open(os.path.join(folder, "pw.txt"), "w") as f:
            f.write("first")
        lab.sh(f"cd {folder} && {DOCKER} stack deploy --resolve-image never -c s.yml {stack}")
        with open(os.path.join(folder, "pw.txt"), "w") as f:
            f.write("second")
        before = lab.settled(stack)[0]
        proc = swarmsmith("deploy", "--cluster", lab.path, TAKEOVER, "--detach", "-c", file,
                          stack)
        assert proc.returncode == 1 and "holds other content than its file" in proc.stderr, \
            (proc.stdout, proc.stderr)
        assert lab.tasks(stack)[0] == before
        lab.swarmsmith(TAKEOVER, "--detach", stack=stack, file=file)
        spec = lab.api.services(filters={"name": f"{stack}_app"})[0]["Spec"]
        ref = spec["TaskTemplate"]["ContainerSpec"]["Secrets"][0]
        assert ref["SecretName"].startswith(f"{stack}_pw-"), ref
    finally:
        lab.sh(f"{DOCKER} stack rm {stack} >/dev/null", check=False)
        shutil.rmtree(folder, ignore_errors=True)


def test_bind_sources_reach_the_swarm_as_the_cli_sends_them(runs):
    """One check per way of writing a bind source (corpus/paths.yml), on both stored specs."""
    folder = None
    for name in ("paths",):
        for who in ("cli", "ours"):
            mounts = runs[who][name]["services"]["STACK_mounts"]["TaskTemplate"][
                "ContainerSpec"]["Mounts"]
            got = {m["Target"]: m["Source"] for m in mounts}
            folder = folder or got["/corpus"]
            assert got == {
                "/var/lib/docker": "/var/lib/docker/",
                "/host/log/": "/var/log/",
                "/etc/host-name": "/etc/./hostname",
                "/etc/host-name-2": "//etc//hostname",
                "/mnt/": f"{folder}/paths/mnt",
                "/mnt2": f"{folder}/paths/mnt",
                "/corpus": folder,
                "/home-dir": f"{HOME}/",
                "/volumes/": "/var/lib/docker/volumes/",
                "/mnt3/": f"{folder}/paths/mnt",
            }, who
    assert folder.startswith("/tmp/swarmsmith-corpus-")
    cadvisor = runs["ours"]["monitoring"]["services"]["STACK_cadvisor"]
    sources = [m["Source"] for m in cadvisor["TaskTemplate"]["ContainerSpec"]["Mounts"]]
    assert "/var/lib/docker/" in sources


def test_corpus_reached_the_specs(runs):
    """Guard against a corpus file that silently stopped exercising what it is for."""
    prx = runs["ours"]["proxy"]["services"]
    labels = prx["STACK_edge"]["Labels"]
    assert labels["traefik.http.middlewares.admin-auth.basicauth.users"].count("$") == 3
    assert prx["STACK_whoami"]["Labels"][
        "traefik.http.services.whoami.loadbalancer.sticky.cookie.name"] == "srv_${HOSTNAME}"
    nets = {n["Target"] for n in prx["STACK_edge"]["TaskTemplate"]["Networks"]}
    assert nets == {"corpus_public"}
    mon = runs["ours"]["monitoring"]["services"]
    assert mon["STACK_node-exporter"]["Mode"] == {"Global": {}}
    assert any("$|/" in a for a in mon["STACK_node-exporter"]["TaskTemplate"]["ContainerSpec"]
               ["Args"])
    app = runs["ours"]["app"]
    env = app["services"]["STACK_web"]["TaskTemplate"]["ContainerSpec"]["Env"]
    assert 'GREETING="hello, world"' in env and "LOG_LEVEL" in env
    assert set(app["secrets"]) == {"STACK_db_password"}
    assert app["networks"]["STACK_backend"]["Internal"] is True
