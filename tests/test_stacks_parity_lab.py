"""Stacks on a real swarm: parity of swarmsmith's specs with the
20.10 `docker stack deploy` on a lab manager, CLI stacks updated by swarmsmith and
swarmsmith stacks handled by `docker stack ls/ps/services/rm`, no-op redeploys, bad input
that leaves the cluster unchanged, and the image check.

One module-scoped lab cluster `pt1` (1 manager + 2 workers), always brought down at the end.
The same compose files (tests/fixtures/stacks/parity/) are deployed twice: by
`/usr/bin/docker stack deploy --resolve-image never` on the manager as stack `pta`, and by
`swarmsmith deploy --no-versioned-names --no-update-defaults --detach` as `ptb`.  Both use the
same absolute folder (/tmp is shared by the lab hosts and this machine), so bind sources and
file paths agree; `${PP}` prefixes published ports (2 for pta, 3 for ptb) so the two stacks
fit on one swarm, `${STACK}` names the objects with an explicit `name:`.

Every difference between the two stacks' specs must be listed in KNOWN_DIFFERENCES (each
documented in docs/stacks.md, "Differences from docker stack deploy").
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from tests.conftest import REPO
from tests.lab_ssh import remove_cli_stacks

pytestmark = pytest.mark.lab

CLUSTER = "pt1"
FIXTURES = os.path.join(REPO, "tests", "fixtures", "stacks", "parity")
DOCKER = "/usr/bin/docker"      # the 20.10 CLI of apt's docker.io, on the manager
A, B = "pta", "ptb"
PP = {A: 2, B: 3}
FILES = ("base.yml", "override.yml")
SWARMSMITH_AS_CLI = ("--no-versioned-names", "--no-update-defaults")

# (service, flattened spec path) -> why swarmsmith differs from the 20.10 CLI on purpose
KNOWN_DIFFERENCES = {
    ("plain", "TaskTemplate.ContainerSpec.Args"):
        "merging -c files: 20.10 appends the override's command list to the base's "
        "(['sleep', '1000000', 'sleep 1000000']); current CLIs and swarmsmith replace it",
}
# secret/config label swarmsmith adds (content hash; versioned names rely on it)
CONTENT_LABEL = "com.swarmsmith.content-hash"


# --- helpers ---------------------------------------------------------------------------

def swarmsmith(*args: str, env: dict | None = None, cwd: str | None = None,
               timeout: float = 300) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args],
                          cwd=cwd or REPO, env=e, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


class Lab:
    """The cluster file, one SSH session to the manager and one docker SDK client."""

    def __init__(self, path: str):
        from provision.engine_api.access import connect
        self.path = path
        manager = connect(path, shared=True)
        self.session = manager.session
        self.api = manager.api.api

    def sh(self, script: str, check: bool = True, stdin: bytes | None = None):
        from provision.remote.command import Command
        r = self.session.run(Command.shell(script, stdin=stdin), check=False, timeout=300)
        if check and r.exit_status != 0:
            raise AssertionError(f"manager: {script}\n-> {r.exit_status}\n{r.stdout}\n{r.stderr}")
        return r

    def deploy(self, *args: str, stack: str, files=FILES, folder: str, env=None,
               expect: int = 0) -> subprocess.CompletedProcess:
        cf = []
        for f in files:
            cf += ["-c", os.path.join(folder, f)]
        proc = swarmsmith("deploy", "--cluster", self.path, *args, *cf, stack,
                          env={"STACK": stack, "PP": str(PP.get(stack, 4)), **(env or {})})
        assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def cli_deploy(self, stack: str, folder: str, files=FILES) -> None:
        cf = " ".join(f"-c {shlex.quote(f)}" for f in files)
        self.sh(f"cd {shlex.quote(folder)} && STACK={stack} PP={PP[stack]} "
                f"{DOCKER} stack deploy --resolve-image never {cf} {stack}")

    def services(self, stack: str) -> dict:
        """short service name -> inspect record, for one stack."""
        out = {}
        for s in self.api.services(filters={"label": f"com.docker.stack.namespace={stack}"}):
            out[s["Spec"]["Name"][len(stack) + 1:]] = s
        return out

    def snapshot(self) -> dict:
        """Everything a bad deploy could touch: services with versions, networks,
        secrets and configs with versions."""
        return {"services": sorted((s["Spec"]["Name"], s["Version"]["Index"])
                                   for s in self.api.services()),
                "networks": sorted(n["Name"] for n in self.api.networks()),
                "secrets": sorted((s["Spec"]["Name"], s["Version"]["Index"])
                                  for s in self.api.secrets()),
                "configs": sorted((c["Spec"]["Name"], c["Version"]["Index"])
                                  for c in self.api.configs())}

    def network_names(self) -> dict:
        return {n["Id"]: n["Name"] for n in self.api.networks()}

    def wait_gone(self, stack: str, deadline: float = 60, networks: bool = True) -> None:
        end = time.monotonic() + deadline
        label = f"com.docker.stack.namespace={stack}"
        while time.monotonic() < end:
            if not (self.api.services(filters={"label": label})
                    or networks and self.api.networks(filters={"label": label})):
                return
            time.sleep(0.5)
        raise AssertionError(f"stack {stack} still has services or networks")


def normalise(spec, stack: str, nets: dict, pp: int = 0):
    """A service Spec with the stack name, IDs and the port prefix taken out."""
    def walk(v):
        if isinstance(v, dict):
            out = {}
            for k, x in v.items():
                if k in ("SecretID", "ConfigID"):
                    continue          # names are compared (SecretName/ConfigName)
                if k == "Target" and isinstance(x, str) and x in nets:
                    x = nets[x]       # network IDs -> names
                if k == "PublishedPort" and isinstance(x, int) and x >= 10000 and pp:
                    x -= pp * 10000
                out[k] = walk(x)
            return out
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, str):
            return v.replace(stack, "STACK")
        return v
    return walk(spec)


def flatten(v, path: str = "") -> dict:
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            out.update(flatten(x, f"{path}.{k}" if path else k))
        return out or {path: {}}
    if isinstance(v, list):
        out = {}
        for i, x in enumerate(v):
            out.update(flatten(x, f"{path}[{i}]"))
        return out or {path: []}
    return {path: v}


def spec_diff(a, b) -> dict:
    fa, fb = flatten(a), flatten(b)
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}


def grouped(diffs: dict) -> set:
    """Flattened paths cut at their first list index: Args[0], Args[2] -> Args."""
    return {k.split("[")[0] for k in diffs}


# --- fixtures --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    folder = tempfile.mkdtemp(prefix="swarmsmith-pt1-", dir="/tmp")
    path = os.path.join(folder, "swarmsmith.yml")
    with open(path, "w") as f:
        f.write(f"name: {CLUSTER}\nprovider: lab\nmanagers: 1\nworkers: 2\n")
    try:
        ok(swarmsmith("up", path, timeout=600))
        ok(swarmsmith("image-load", path, timeout=600))
        yield Lab(path)
    finally:
        down = swarmsmith("down", path, timeout=900)
        shutil.rmtree(folder, ignore_errors=True)
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def folder(lab):
    """The parity files under one absolute /tmp path, copied to the manager with the
    session (the same path there, so relative bind sources resolve alike)."""
    d = tempfile.mkdtemp(prefix="swarmsmith-parity-", dir="/tmp")
    lab.sh(f"mkdir -p {d}/mnt")
    for root, _, names in os.walk(FIXTURES):
        rel = os.path.relpath(root, FIXTURES)
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            target = os.path.normpath(os.path.join(d, rel, name))
            lab.sh(f"mkdir -p {shlex.quote(os.path.dirname(target))}")
            lab.session.put(data, target)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def stacks(lab, folder):
    """Stack pta by the CLI, ptb by swarmsmith, from the same files."""
    lab.sh(f"{DOCKER} network create -d overlay --attachable ptparity_ext >/dev/null && "
           f"printf x | {DOCKER} secret create ptparity_ext_secret - >/dev/null && "
           f"printf y | {DOCKER} config create ptparity_ext_config - >/dev/null")
    lab.cli_deploy(A, folder)
    lab.deploy(*SWARMSMITH_AS_CLI, "--detach", stack=B, folder=folder)
    return folder


# --- parity ----------------------------------------------------------------------------

def test_service_specs_match_docker_stack_deploy(lab, stacks):
    a, b = lab.services(A), lab.services(B)
    assert sorted(a) == sorted(b) == ["extra", "plain", "web", "worker"]
    nets = lab.network_names()
    found = {}
    for name in sorted(a):
        d = spec_diff(normalise(a[name]["Spec"], A, nets, PP[A]),
                      normalise(b[name]["Spec"], B, nets, PP[B]))
        for path in grouped(d):
            found[(name, path)] = {k: v for k, v in d.items() if k.split("[")[0] == path}
    assert set(found) == set(KNOWN_DIFFERENCES), json.dumps(
        {f"{s} {p}": v for (s, p), v in found.items()}, indent=1, default=str)
    # the one known difference is exactly the 20.10 append
    args = found[("plain", "TaskTemplate.ContainerSpec.Args")]
    assert args["TaskTemplate.ContainerSpec.Args[0]"] == ("sleep", "sleep 1000000")


def test_every_key_reached_the_specs(lab, stacks):
    """Guard against a fixture that silently stopped exercising a key: spot checks on
    swarmsmith's specs for each key family."""
    web = lab.services(B)["web"]["Spec"]
    cs, tt = web["TaskTemplate"]["ContainerSpec"], web["TaskTemplate"]
    assert "NODE_ID={{.Node.ID}}" in cs["Env"] and "FROM_FILE=yes" in cs["Env"]
    assert cs["Command"] == ["/bin/sh", "-c"] and cs["Hostname"].startswith("{{")
    assert cs["Init"] is True and cs["ReadOnly"] is True and cs["User"] == "0:0"
    assert {m["Type"] for m in cs["Mounts"]} == {"volume", "bind", "tmpfs"}
    assert cs["CapabilityAdd"] == ["CAP_NET_ADMIN", "CAP_SYS_NICE", "CAP_SYS_TIME"]
    assert cs["Sysctls"] and cs["Ulimits"] and cs["Hosts"] and cs["DNSConfig"]["Nameservers"]
    assert cs["Healthcheck"]["Retries"] == 3 and cs["StopGracePeriod"] == 90 * 10**9
    assert {s["SecretName"] for s in cs["Secrets"]} == {"ptb_db_pw", "ptparity_ext_secret"}
    assert {c["ConfigName"] for c in cs["Configs"]} == {"ptb_app_conf", "ptparity_ext_config"}
    assert tt["LogDriver"]["Name"] == "json-file" and tt["Placement"]["MaxReplicas"] == 1
    assert tt["Resources"]["Limits"]["NanoCPUs"] == 250_000_000
    assert web["UpdateConfig"]["Order"] == "stop-first" and web["RollbackConfig"]["Delay"]
    modes = {n: next(iter(s["Spec"]["Mode"])) for n, s in lab.services(B).items()}
    assert modes == {"web": "Replicated", "worker": "Global", "plain": "Replicated",
                     "extra": "Replicated"}
    ports = {(p.get("PublishMode"), p["TargetPort"]) for p in web["EndpointSpec"]["Ports"]}
    assert ("host", 8080) in ports and ("ingress", 80) in ports
    nets = {lab.network_names()[n["Target"]] for n in tt["Networks"]}
    assert nets == {"ptb_front", "ptb_backnet", "ptparity_ext"}


def test_networks_secrets_configs_match(lab, stacks):
    def nets(stack):
        out = {}
        for n in lab.api.networks(filters={"label": f"com.docker.stack.namespace={stack}"}):
            n = lab.api.inspect_network(n["Id"])
            opts = {k: v for k, v in (n.get("Options") or {}).items()
                    if k != "com.docker.network.driver.overlay.vxlanid_list"}  # allocated
            out[n["Name"].replace(stack, "STACK")] = normalise(
                {"Driver": n["Driver"], "Options": opts, "Attachable": n["Attachable"],
                 "Internal": n["Internal"], "Scope": n["Scope"], "Labels": n["Labels"],
                 "IPAMDriver": n["IPAM"]["Driver"]}, stack, {})
        return out
    assert nets(A) == nets(B)
    assert set(nets(B)) == {"STACK_front", "STACK_backnet", "STACK_default"}
    assert nets(B)["STACK_front"]["Attachable"] is True
    assert nets(B)["STACK_backnet"]["Options"] == {"encrypted": ""}

    def objs(kind, stack):
        items = getattr(lab.api, kind)(filters={"label": f"com.docker.stack.namespace={stack}"})
        out = {}
        for o in items:
            spec = normalise(o["Spec"], stack, {})
            spec["Labels"].pop(CONTENT_LABEL, None)     # documented: swarmsmith's hash label
            out[spec["Name"]] = spec
        return out
    for kind in ("secrets", "configs"):
        assert objs(kind, A) == objs(kind, B), kind
        assert all(CONTENT_LABEL in o["Spec"]["Labels"] for o in getattr(lab.api, kind)(
            filters={"label": f"com.docker.stack.namespace={B}"}))


# --- CLI stacks and swarmsmith stacks, both ways ------------------------------------------

def test_plan_against_cli_stack_shows_unchanged(lab, stacks):
    before = lab.snapshot()
    proc = lab.deploy(*SWARMSMITH_AS_CLI, "--dry-run", "--json", stack=A, folder=stacks)
    plan = json.loads(proc.stdout)
    actions = {(a["kind"], a["name"]): a for a in plan["actions"]}
    changed = {k: a for k, a in actions.items() if a["action"] != "unchanged"}
    # only the documented 20.10 merge difference; secrets/configs the CLI made stay as they are
    assert set(changed) == {("service", "pta_plain")}, changed
    assert [c["path"] for c in changed[("service", "pta_plain")]["changes"]] == \
        ["TaskTemplate.ContainerSpec.Args"]
    assert ("secret", "pta_db_pw") in actions and ("network", "pta_front") in actions
    assert any("pta_db_pw was not made by swarmsmith" in w for w in plan["warnings"])
    assert lab.snapshot() == before


def test_swarmsmith_updates_cli_stack(lab, stacks):
    before = {n: s["Version"]["Index"] for n, s in lab.services(A).items()}
    with open(os.path.join(stacks, "scale.yml"), "w") as f:
        f.write('version: "3.9"\nservices:\n  extra:\n    deploy:\n      replicas: 2\n')
    proc = lab.deploy(*SWARMSMITH_AS_CLI, "--detach", stack=A,
                      files=FILES + ("scale.yml",), folder=stacks)
    assert "update service pta_extra" in proc.stdout and "update service pta_plain" in proc.stdout
    after = lab.services(A)
    for name in ("web", "worker"):
        assert after[name]["Version"]["Index"] == before[name], name
    for name in ("extra", "plain"):
        assert after[name]["Version"]["Index"] > before[name], name
    assert after["extra"]["Spec"]["Mode"]["Replicated"]["Replicas"] == 2
    assert after["extra"]["Spec"]["Labels"]["com.docker.stack.namespace"] == A
    out = lab.sh(f"{DOCKER} stack services {A} --format '{{{{.Name}}}} {{{{.Replicas}}}}'").stdout
    assert "pta_extra" in out and len(out.split("\n")) >= 4
    # and the CLI takes its stack back: one more `docker stack deploy` works on it
    lab.cli_deploy(A, stacks)
    assert lab.services(A)["extra"]["Spec"]["Mode"]["Replicated"]["Replicas"] == 1
    # pta_plain crash-loops with 20.10's appended command, and its updates bump service
    # versions: remove the CLI stack so later before/after comparisons see a quiet swarm
    remove_cli_stacks(lab.sh, [A], DOCKER)
    lab.wait_gone(A)


def test_redeploy_unchanged_stack_makes_no_update(lab, stacks):
    for flags, stack in ((SWARMSMITH_AS_CLI, B), ((), "ptc")):
        if stack == "ptc":   # swarmsmith's defaults: versioned names, update defaults
            lab.deploy("--detach", stack=stack, folder=stacks)
        before = lab.snapshot()
        proc = lab.deploy(*flags, "--detach", stack=stack, folder=stacks)
        assert "0 to create, 0 to update, 0 to remove" in proc.stdout, proc.stdout
        assert "done:" not in proc.stdout
        assert lab.snapshot() == before, stack
        # the JSON plan says the same
        plan = json.loads(lab.deploy(*flags, "--dry-run", "--json", stack=stack,
                                     folder=stacks).stdout)
        assert plan["counts"]["create"] == plan["counts"]["update"] == 0, plan["counts"]
    ok(swarmsmith("rm", "--cluster", lab.path, "ptc"))
    lab.wait_gone("ptc")


# --- bad input on a live cluster --------------------------------------------------------

GOOD = """version: "3.9"
services:
  web:
    image: swarmsmith/busybox:1
    command: ["sleep", "1000000"]
"""

BAD_CASES = [
    # (id, compose text, extra flags, strings the error must contain)
    ("replicas-type", GOOD + "    deploy:\n      replicas: three\n", (),
     ("services.web.deploy.replicas", "expected an integer")),
    ("undefined-network", GOOD + "    networks: [nope]\n", (),
     ("services.web.networks.nope", "undefined network")),
    ("missing-secret-file", GOOD + "    secrets: [pw]\nsecrets:\n  pw:\n    file: ./nothere.txt\n",
     (), ("secrets.pw.file", "file not found")),
    ("undefined-secret", GOOD + "    secrets: [pw]\n", (), ("services.web.secrets[0]",
                                                          "undefined secret")),
    ("undefined-volume", GOOD + "    volumes: ['data:/data']\n", (),
     ("services.web.volumes[0]", "undefined volume")),
    ("bad-duration", GOOD + "    deploy:\n      update_config:\n        delay: 10\n", (),
     ("services.web.deploy.update_config.delay", "duration")),
    ("bad-memory", GOOD + "    deploy:\n      resources:\n        limits:\n"
                          "          memory: 12XB\n", (),
     ("services.web.deploy.resources.limits.memory",)),
    ("bad-port", GOOD + "    ports: ['99999:80']\n", (), ("services.web.ports",)),
    ("bad-mode", GOOD + "    deploy:\n      mode: sometimes\n", (), ("services.web.deploy.mode",)),
    ("bad-order", GOOD + "    deploy:\n      update_config:\n        order: first\n", (),
     ("services.web.deploy.update_config.order",)),
    # start-first with a host port is not here: creating such a service is accepted (as
    # docker stack deploy accepts it), only an update is refused (test_stacks_plan_apply_units.py)
    ("dnsrr-ingress", GOOD + "    ports: ['48001:80']\n    deploy:\n      endpoint_mode: dnsrr\n",
     (), ("services.web.ports[0]", "dnsrr")),
    ("strict-build", GOOD + "    build: .\n", ("--strict",), ("services.web.build", "--strict")),
    ("required-variable", GOOD.replace("swarmsmith/busybox:1", "${PT_UNSET_IMAGE:?set it}"), (),
     ("services.web.image", "PT_UNSET_IMAGE")),
    ("bad-image", GOOD.replace("swarmsmith/busybox:1", "Bad Image!"), (), ("services.web.image",)),
    ("unknown-key", GOOD + "    replica: 2\n", (), ("services.web.replica",)),
    ("yaml-syntax", "version: '3.9'\nservices:\n  web: [\n", (), ("invalid YAML",)),
    ("ulimit-soft-above-hard", GOOD + "    ulimits:\n      nofile: {soft: 10, hard: 5}\n", (),
     ("services.web.ulimits.nofile",)),
    ("global-replicas", GOOD + "    deploy:\n      mode: global\n      replicas: 2\n", (),
     ("services.web.deploy.replicas",)),
    ("healthcheck-both", GOOD + "    healthcheck:\n      test: ['CMD', 'true']\n"
                                "      disable: true\n", (), ("services.web.healthcheck",)),
    ("missing-env-file", GOOD, ("--env-file", "/nonexistent/pt.env"), ("pt.env",)),
    ("bad-stack-name", GOOD, ("STACK=bad name!",), ("invalid stack name",)),
    ("external-network-missing", GOOD + "    networks: [gone]\nnetworks:\n  gone:\n"
                                        "    external: true\n", (), ("network gone",)),
    ("service-name-clash", GOOD, ("STACK=ptclash",), ("ptclash_web", "not part of stack")),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_exit_2_cluster_unchanged(lab, stacks, tmp_path, case):
    name, text, flags, needles = case
    stack = "ptbad"
    flags = list(flags)
    for f in list(flags):
        if f.startswith("STACK="):
            stack = f[len("STACK="):]
            flags.remove(f)
    if name == "service-name-clash":   # a service named like the stack's, without its label
        lab.sh(f"{DOCKER} service ls -q --filter name=ptclash_web | grep -q . || "
               f"{DOCKER} service create --detach --name ptclash_web --replicas 0 "
               "swarmsmith/busybox:1 true >/dev/null 2>&1")
    f = tmp_path / "stack.yml"
    f.write_text(text)
    before = lab.snapshot()
    proc = swarmsmith("deploy", "--cluster", lab.path, "--detach", *flags, "-c", str(f), stack)
    assert proc.returncode == 2, f"{proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    message = proc.stderr
    for needle in needles:
        assert needle in message, message
    if name not in ("bad-stack-name", "missing-env-file", "external-network-missing",
                    "service-name-clash"):
        assert "stack.yml" in message, message     # the file is named
    assert lab.snapshot() == before
    if name == "service-name-clash":
        lab.sh(f"{DOCKER} service rm ptclash_web >/dev/null")


def test_changed_secret_with_fixed_name_is_refused_unchanged(lab, stacks, tmp_path):
    """--no-versioned-names: a secret whose file changed cannot be updated by swarm; the
    deploy stops before any change (exit 2) and names the secret."""
    folder = tmp_path
    (folder / "pw.txt").write_text("one\n")
    (folder / "s.yml").write_text(GOOD + "    secrets: [pw]\nsecrets:\n  pw:\n"
                                  "    file: ./pw.txt\n")
    ok(swarmsmith("deploy", "--cluster", lab.path, "--detach", "--no-versioned-names",
                  "-c", str(folder / "s.yml"), "ptsec"))
    (folder / "pw.txt").write_text("two\n")
    before = lab.snapshot()
    proc = swarmsmith("deploy", "--cluster", lab.path, "--detach", "--no-versioned-names",
                      "-c", str(folder / "s.yml"), "ptsec")
    assert proc.returncode == 2 and "secret ptsec_pw exists with other content" in proc.stderr
    assert lab.snapshot() == before
    # with versioned names (the default) the same change deploys: a new secret, one update
    proc = ok(swarmsmith("deploy", "--cluster", lab.path, "--detach",
                         "-c", str(folder / "s.yml"), "ptsec"))
    assert "create secret ptsec_pw-" in proc.stdout and "update service ptsec_web" in proc.stdout
    ok(swarmsmith("rm", "--cluster", lab.path, "ptsec"))
    lab.wait_gone("ptsec")


# --- images -----------------------------------------------------------------------------

def test_image_missing_on_candidate_nodes_stops_before_any_change(lab, stacks, tmp_path):
    lab.sh(f"{DOCKER} tag swarmsmith/busybox:1 ptonly/manager:1")
    f = tmp_path / "img.yml"
    f.write_text("""version: "3.9"
services:
  onworkers:
    image: ptonly/manager:1
    command: ["sleep", "1000000"]
    deploy:
      placement: {constraints: [node.role == worker]}
  onmanager:
    image: ptonly/manager:1
    command: ["sleep", "1000000"]
    deploy:
      placement: {constraints: ["node.role==manager"]}
""")
    before = lab.snapshot()
    proc = swarmsmith("deploy", "--cluster", lab.path, "--detach", "-c", str(f), "ptimg")
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr
    assert "services.onworkers.image" in err and "ptonly/manager:1" in err
    assert "pt1-worker-1" in err and "pt1-worker-2" in err and "img.yml" in err
    assert "onmanager" not in err and "pt1-manager-1" not in err
    assert lab.snapshot() == before
    # the service the manager can run deploys; an image that names a registry is not looked
    # for (nodes may pull it), even though nothing here could pull it
    f.write_text(f.read_text().split("  onworkers:")[0] + "  onmanager:" +
                 f.read_text().split("  onmanager:")[1] +
                 "  pulled:\n    image: registry.invalid:5000/x:1\n"
                 "    deploy: {replicas: 0}\n")
    proc = ok(swarmsmith("deploy", "--cluster", lab.path, "--detach", "-c", str(f), "ptimg"))
    assert "create service ptimg_onmanager" in proc.stdout
    # a global service with the image only on the manager is refused too (all nodes)
    g = tmp_path / "global.yml"
    g.write_text('version: "3.9"\nservices:\n  everywhere:\n    image: ptonly/manager:1\n'
                 '    deploy: {mode: global}\n')
    before = lab.snapshot()
    proc = swarmsmith("deploy", "--cluster", lab.path, "--detach", "-c", str(g), "ptimg2")
    assert proc.returncode == 2 and "pt1-worker-1, pt1-worker-2" in proc.stderr, proc.stderr
    assert lab.snapshot() == before
    ok(swarmsmith("rm", "--cluster", lab.path, "ptimg"))
    lab.wait_gone("ptimg")


# --- docker stack commands on a swarmsmith stack (last: removes ptb) ----------------------

def test_docker_stack_commands_work_on_swarmsmith_stack(lab, stacks):
    ls = lab.sh(f"{DOCKER} stack ls --format '{{{{.Name}}}} {{{{.Services}}}}'").stdout.split("\n")
    assert f"{B} 4" in ls
    services = lab.sh(f"{DOCKER} stack services {B} --format '{{{{.Name}}}}'").stdout.split()
    assert sorted(services) == [f"{B}_extra", f"{B}_plain", f"{B}_web", f"{B}_worker"]
    ps = lab.sh(f"{DOCKER} stack ps {B} --format '{{{{.Name}}}}'").stdout.split()
    assert any(p.startswith(f"{B}_worker.") for p in ps)
    remove_cli_stacks(lab.sh, [B], DOCKER)
    lab.wait_gone(B)
    assert not lab.api.secrets(filters={"label": f"com.docker.stack.namespace={B}"})
    assert not lab.api.configs(filters={"label": f"com.docker.stack.namespace={B}"})
    assert B not in lab.sh(f"{DOCKER} stack ls").stdout


# --- job modes (last) ------------------------------------------------------------------

def test_job_modes_match_docker_service_create(lab, stacks):
    """(Last: the job stacks leave their networks behind, see below.)
    The 20.10 `docker stack deploy` refuses job modes ("Unknown mode"); the reference is
    `docker service create --mode replicated-job|global-job` with the stack's labels."""
    folder = stacks
    r = lab.sh(f"cd {folder} && {DOCKER} stack deploy --resolve-image never -c jobs.yml ptj",
               check=False)
    assert r.exit_status != 0 and "Unknown mode" in r.stdout + r.stderr
    lab.deploy("--detach", stack="ptj", files=("jobs.yml",), folder=folder)
    common = ("--detach --label com.docker.stack.namespace=ptk "
              "--label com.docker.stack.image=swarmsmith/busybox:1 "
              "--container-label com.docker.stack.namespace=ptk")
    lab.sh(f"{DOCKER} network create -d overlay --label com.docker.stack.namespace=ptk "
           f"ptk_default >/dev/null && "
           f"{DOCKER} service create {common} --name ptk_once --network name=ptk_default,alias=once "
           "--mode replicated-job --replicas 2 --restart-condition none "
           "swarmsmith/busybox:1 true >/dev/null 2>&1 && "
           f"{DOCKER} service create {common} --name ptk_everywhere "
           "--network name=ptk_default,alias=everywhere --mode global-job "
           "--restart-condition on-failure --restart-max-attempts 1 "
           "swarmsmith/busybox:1 true >/dev/null 2>&1")
    nets = lab.network_names()
    ours, ref = lab.services("ptj"), lab.services("ptk")
    assert sorted(ours) == sorted(ref) == ["everywhere", "once"]
    from stacks.specs.normalize import effective_spec
    for name in ours:
        want = normalise(ref[name]["Spec"], "ptk", nets)
        # `service create` sends what compose leaves unset: Init false, empty DNSConfig and
        # Resources, the 5 s restart delay; effective_spec() takes those daemon defaults out
        if want["TaskTemplate"]["ContainerSpec"].get("Init") is False:
            del want["TaskTemplate"]["ContainerSpec"]["Init"]
        have = normalise(ours[name]["Spec"], "ptj", nets)
        assert want["Mode"] == have["Mode"], name
        assert spec_diff(effective_spec(want), effective_spec(have)) == {}, name
    assert ours["once"]["Spec"]["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 2,
                                                              "TotalCompletions": 2}}
    for stack in ("ptj", "ptk"):
        lab.sh(f"{DOCKER} stack rm {stack} >/dev/null", check=False)
        # swarm keeps completed job tasks, and with them the stack network: only services go
        lab.wait_gone(stack, networks=False)
