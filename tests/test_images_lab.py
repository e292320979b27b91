"""Images end to end on a real lab swarm: `images push` (archive and local engine).

One module-scoped cluster `img1` (1 manager, 2 workers, the lab's addresses trusted as
insecure registries); `swarmsmith down` always runs at the end.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.lab

CLUSTER = "img1"


def cli(*args, env=None, timeout=600):
    import time
    t0 = time.monotonic()
    try:
        return _cli(*args, env=env, timeout=timeout)
    finally:
        if os.environ.get("IMG_TIMING"):
            print(f"\n[{time.monotonic() - t0:.1f}s] {' '.join(args[:2])}")


def _cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})})


class Lab:
    def __init__(self, path: str, dir_):
        from provision.engine_api.sessions import inventory_hosts
        self.path, self.dir = path, dir_
        self.hosts = {h.name: h for h in inventory_hosts(path)}
        self.manager = next(h for h in self.hosts.values() if h.role == "manager")
        self.workers = sorted(n for n, h in self.hosts.items() if h.role == "worker")

    def ssh(self, host: str, command: str, check: bool = True) -> str:
        from provision.remote.command import Command
        from provision.engine_api.sessions import session_for
        s = session_for(self.hosts[host])
        try:
            r = s.run(Command.shell(command), check=check, timeout=300)
            return r.stdout
        finally:
            s.close()

    def cli(self, *args, env=None):
        n = 2 if args[0] == "images" else 1        # --cluster after the command's words
        return cli(*args[:n], "--cluster", self.path, *args[n:], env=env)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    d = tmp_path_factory.mktemp(CLUSTER)
    path = d / "swarmsmith.yml"
    path.write_text(f"name: {CLUSTER}\nprovider: lab\nmanagers: 1\nworkers: 2\n"
                    "engine:\n  daemon:\n    insecure-registries: [\"198.18.0.0/15\"]\n")
    try:
        up = cli("up", str(path))
        assert up.returncode == 0, up.stderr + up.stdout
        yield Lab(str(path), d)
    finally:
        down = cli("down", str(path))
        assert down.returncode == 0, down.stderr


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A busybox image archive (docker save format) made here, without an engine."""
    from provision.images.archive import ImageConfig, write_archive
    from provision.images.busybox import write_rootfs_tar
    d = tmp_path_factory.mktemp("archive")
    with open(d / "rootfs.tar", "wb") as f:
        write_rootfs_tar(f)
    [img] = write_archive(str(d / "bb.tar"), [ImageConfig(
        "imgtest/bb:1", [str(d / "rootfs.tar")], cmd=["/bin/sh"], env=["PATH=/bin"])])
    return str(d / "bb.tar"), img.id


def _ids(lab, host, ref):
    return lab.ssh(host, f"docker image inspect -f '{{{{.Id}}}}' {ref} 2>/dev/null || true").strip()


def test_push_to_one_node_then_all_then_nothing_to_send(lab, archive):
    path, image_id = archive
    w1, w2 = lab.workers
    for h in lab.hosts:
        assert _ids(lab, h, "imgtest/bb:1") == ""
    p = lab.cli("images", "push", "--file", path, "--nodes", w1, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [(n["host"], n["action"]) for n in out["nodes"]] == [(w1, "loaded")]
    assert out["nodes"][0]["bytes_sent"] == out["wire_bytes"] > 0
    assert out["wire_bytes"] < out["archive_bytes"]          # compressed on the wire
    assert _ids(lab, w1, "imgtest/bb:1") == image_id
    # the image runs there, and only there
    assert lab.ssh(w1, "docker run --rm imgtest/bb:1 echo ran-here").strip() == "ran-here"
    assert _ids(lab, w2, "imgtest/bb:1") == ""

    p = lab.cli("images", "push", "--file", path)                   # text output, all nodes
    assert p.returncode == 0, p.stderr
    assert f"= {w1}: already there" in p.stdout
    assert f"~ {w2}: loaded" in p.stdout and f"~ {lab.manager.name}: loaded" in p.stdout
    assert "MB/s" in p.stderr                                          # progress per node

    p = lab.cli("images", "push", "--file", path, "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["changes"] == [] and out["wire_bytes"] == 0
    assert {n["action"] for n in out["nodes"]} == {"present"}
    assert sum(n["bytes_sent"] for n in out["nodes"]) == 0
    for h in lab.hosts:
        assert _ids(lab, h, "imgtest/bb:1") == image_id


def test_node_with_the_image_under_another_tag_only_gets_a_tag(lab, archive):
    path, image_id = archive
    w2 = lab.workers[1]
    lab.cli("images", "push", "--file", path, "--nodes", w2)
    lab.ssh(w2, "docker tag imgtest/bb:1 keep/bb:1 && docker rmi imgtest/bb:1")
    p = lab.cli("images", "push", "--file", path, "--nodes", w2, "--json")
    assert p.returncode == 0, p.stderr
    [node] = json.loads(p.stdout)["nodes"]
    assert node["action"] == "tagged" and node["bytes_sent"] == 0
    assert _ids(lab, w2, "imgtest/bb:1") == image_id


def test_a_tag_naming_another_image_is_replaced(lab, archive):
    path, image_id = archive
    w1 = lab.workers[0]
    lab.cli("images", "push", "--file", path, "--nodes", w1)
    lab.ssh(w1, "printf 'FROM imgtest/bb:1\\nENV OTHER=1\\n' | docker build -q -t imgtest/bb:1 -")
    assert _ids(lab, w1, "imgtest/bb:1") != image_id
    p = lab.cli("images", "push", "--file", path, "--nodes", w1, "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["nodes"][0]["action"] in ("tagged", "loaded")
    assert _ids(lab, w1, "imgtest/bb:1") == image_id


def test_push_from_the_local_engine(lab, archive):
    """DOCKER_HOST names an engine (here: the manager's, through a local socket) and images
    come from it by name."""
    from provision.engine_api.sessions import SocketForwarder, session_for
    path, _ = archive
    m = lab.manager.name
    lab.cli("images", "push", "--file", path, "--nodes", m)
    lab.ssh(m, "printf 'FROM imgtest/bb:1\\nENV BUILT=local\\n' | docker build -q -t imgtest/local:1 -")
    want = _ids(lab, m, "imgtest/local:1")
    s = session_for(lab.manager)
    fwd = SocketForwarder(s)
    try:
        p = lab.cli("images", "push", "imgtest/local:1", "--nodes", "workers", "--json",
                    env={"DOCKER_HOST": f"unix://{fwd.path}"})
        assert p.returncode == 0, p.stderr
        assert {n["action"] for n in json.loads(p.stdout)["nodes"]} == {"loaded"}
        p = lab.cli("images", "push", "imgtest/nosuch:1", env={"DOCKER_HOST": f"unix://{fwd.path}"})
        assert p.returncode == 2 and "imgtest/nosuch:1 is not in the local engine" in p.stderr
    finally:
        fwd.close()
        s.close()
    for w in lab.workers:
        assert _ids(lab, w, "imgtest/local:1") == want
        assert lab.ssh(w, "docker run --rm imgtest/local:1 sh -c 'echo $BUILT'").strip() == "local"


def test_no_local_engine_is_one_clear_line(lab, tmp_path):
    p = lab.cli("images", "push", "imgtest/bb:1",
                env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"})
    assert p.returncode == 1
    assert "no local Docker engine answers at unix://" in p.stderr
    assert "--file" in p.stderr and "Traceback" not in p.stderr


def test_bad_inputs_change_nothing(lab, tmp_path):
    bad = tmp_path / "bad.tar"
    bad.write_bytes(b"junk")
    p = lab.cli("images", "push", "--file", str(bad))
    assert p.returncode == 2 and str(bad) in p.stderr
    p = lab.cli("images", "push", "--file", str(bad), "--nodes", "nosuch")
    assert p.returncode == 2
    p = lab.cli("images", "push")
    assert p.returncode == 2 and "not both or neither" in p.stderr


# --- a private registry with basic auth -------------------------------------------------------

PASSWORD = "Reg-pa55word-must-never-show"
PRIVATE_APP = """
version: "3.8"
services:
  app:
    image: {image}
    command: ["sleep", "100000"]
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      placement:
        constraints: [node.role == worker]
        max_replicas_per_node: 1
      update_config: {parallelism: 0, monitor: 1s, order: stop-first}
      rollback_config: {parallelism: 0, monitor: 1s}
"""


@pytest.fixture(scope="module")
def private_registry(lab, archive):
    """docker-registry (Debian's package) with htpasswd auth inside the manager's namespaces;
    an image only there, pushed with a throw-away Docker config (no node keeps a login)."""
    import signal
    import time

    import bcrypt
    import requests
    addr = lab.manager.public_address
    root = lab.dir / "registry"
    root.mkdir()
    (root / "htpasswd").write_text(
        "ci:" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode() + "\n")
    (root / "config.yml").write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage:\n  filesystem: {{rootdirectory: {root}/data}}\n"
        f"http:\n  addr: {addr}:5000\n"
        f"auth:\n  htpasswd: {{realm: swarmsmith-test, path: {root}/htpasswd}}\n")
    m = lab.manager.name
    lab.ssh(m, f"setsid sh -c 'exec /usr/bin/docker-registry serve {root}/config.yml "
               f">{root}/log 2>&1' & echo $! > {root}/pid")
    pid = int((root / "pid").read_text())
    try:
        for _ in range(50):
            try:
                if requests.get(f"http://{addr}:5000/v2/", timeout=2).status_code == 401:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("registry did not answer")
        reg = f"{addr}:5000"
        image = f"{reg}/private/app:1"
        lab.cli("images", "push", "--file", archive[0], "--nodes", m)
        lab.ssh(m, "printf 'FROM imgtest/bb:1\\nENV PRIVATE=1\\n' | docker build -q -t "
                   f"{image} - >/dev/null && export DOCKER_CONFIG=$(mktemp -d) && "
                   f"printf '%s' '{PASSWORD}' | docker login -u ci --password-stdin {reg} "
                   f">/dev/null && docker push -q {image} >/dev/null; rc=$?; "
                   f"rm -rf \"$DOCKER_CONFIG\"; docker rmi -f {image} >/dev/null; exit $rc")
        yield reg, image
    finally:
        os.kill(pid, signal.SIGTERM)


def _docker_config(tmp_path, reg=None) -> str:
    import base64
    d = tmp_path / "dockercfg"
    d.mkdir(exist_ok=True)
    auths = {}
    if reg:
        auths[reg] = {"auth": base64.b64encode(f"ci:{PASSWORD}".encode()).decode()}
    (d / "config.json").write_text(json.dumps({"auths": auths}))
    return str(d)


def _everything_written(lab) -> str:
    """Every file swarmsmith keeps beside the cluster file (inventory, audit trail, locks)."""
    out = []
    for dirpath, _, files in os.walk(lab.dir / ".swarmsmith"):
        for f in files:
            with open(os.path.join(dirpath, f), errors="replace") as fh:
                out.append(fh.read())
    return "\n".join(out)


def test_private_registry_without_credentials_says_how_to_provide_them(lab, private_registry,
                                                                       tmp_path):
    reg, image = private_registry
    f = tmp_path / "private.yml"
    f.write_text(PRIVATE_APP.replace("{image}", image))
    p = lab.cli("deploy", "-c", str(f), "pv0",
                env={"DOCKER_CONFIG": _docker_config(tmp_path)})
    assert p.returncode == 2, p.stdout + p.stderr
    assert f"registry {reg} refused access to {image}" in p.stderr
    assert f"docker login {reg}" in p.stderr and "password_env" in p.stderr
    assert "Traceback" not in p.stderr
    assert lab.ssh(lab.manager.name, "docker service ls -q --filter name=pv0_").strip() == ""


def test_private_image_deploys_on_nodes_that_never_logged_in(lab, private_registry, tmp_path):
    reg, image = private_registry
    for w in lab.workers:   # no login anywhere, and the image is not on the workers
        assert lab.ssh(w, "cat /root/.docker/config.json 2>/dev/null || true").strip() in ("", "{}")
        assert _ids(lab, w, image) == ""
    f = tmp_path / "private.yml"
    f.write_text(PRIVATE_APP.replace("{image}", image))
    env = {"DOCKER_CONFIG": _docker_config(tmp_path, reg), "SWARMSMITH_DEBUG": "1"}
    outputs = []
    p = lab.cli("deploy", "-c", str(f), "pv1", "--timeout", "120", env=env)
    outputs.append(p.stdout + p.stderr)
    assert p.returncode == 0, p.stdout + p.stderr
    running = lab.ssh(lab.manager.name, "docker service ps pv1_app --filter desired-state=running "
                      "--format '{{.Node}} {{.CurrentState}}'")
    assert sorted(l.split()[0] for l in running.splitlines()) == lab.workers, running
    for w in lab.workers:
        assert lab.ssh(w, "docker ps --filter name=pv1_app -q").strip()

    # the cluster file's registries (password from an environment variable) for redeploy:
    # the manager's daemon resolves the digest with those credentials
    second = lab.dir / "with-registry.yml"
    second.write_text(open(lab.path).read() +
                      f"registries:\n  \"{reg}\": {{username: ci, password_env: IMG_REG_PW}}\n")
    empty = {"DOCKER_CONFIG": _docker_config(tmp_path / "empty")} if (tmp_path / "empty").mkdir() \
        is None else {}
    p = cli("redeploy", "--cluster", str(second), "-c", str(f), "pv1", "--json",
            env={**empty, "IMG_REG_PW": PASSWORD})
    outputs.append(p.stdout + p.stderr)
    assert p.returncode == 0, p.stdout + p.stderr
    pins = json.loads(p.stdout)["images"]
    assert pins["pv1_app"].startswith(f"{image}@sha256:")
    p = cli("rollback", "--cluster", str(second), "pv1", env={**empty, "IMG_REG_PW": PASSWORD})
    outputs.append(p.stdout + p.stderr)
    assert p.returncode == 0, p.stdout + p.stderr

    # without the variable: one line naming the key, nothing changed
    p = cli("redeploy", "--cluster", str(second), "-c", str(f), "pv1",
            env={**empty, "IMG_REG_PW": ""})
    outputs.append(p.stdout + p.stderr)
    assert p.returncode == 2 and f"registries.{reg}.password_env" in p.stderr

    inspect = lab.ssh(lab.manager.name, "docker service inspect pv1_app")
    audit = lab.cli("audit", "pv1", "--json")           # the history kept in the swarm
    assert audit.returncode == 0 and "redeploy" in audit.stdout, audit.stderr
    for text in outputs + [_everything_written(lab), inspect, audit.stdout]:
        assert PASSWORD not in text
    lab.cli("rm", "pv1")


def test_deploy_pushes_missing_images_when_the_cluster_file_says_so(lab, archive, tmp_path):
    """`images: {push_missing: true}`: the image check finds the image missing on the workers,
    the deploy saves it from the local engine (here the manager's, through DOCKER_HOST) and
    pushes it to them, then goes on."""
    from provision.engine_api.sessions import SocketForwarder, session_for
    m = lab.manager.name
    lab.cli("images", "push", "--file", archive[0], "--nodes", m)
    lab.ssh(m, "printf 'FROM imgtest/bb:1\\nENV BUILT=deploy\\n' | docker build -q -t imgtest/dep:1 -")
    for w in lab.workers:
        assert _ids(lab, w, "imgtest/dep:1") == ""
    stack = tmp_path / "dep.yml"
    stack.write_text(PRIVATE_APP.replace("{image}", "imgtest/dep:1"))
    f = lab.dir / "push-missing.yml"
    f.write_text(open(lab.path).read() + "images: {push_missing: true}\n")
    plain = cli("deploy", "--cluster", lab.path, "-c", str(stack), "dep")
    assert plain.returncode == 2 and "deploy --push-images" in plain.stderr     # not asked to
    s = session_for(lab.manager)
    fwd = SocketForwarder(s)
    try:
        p = cli("deploy", "--cluster", str(f), "-c", str(stack), "--timeout", "120", "dep",
                env={"DOCKER_HOST": f"unix://{fwd.path}"})
    finally:
        fwd.close()
        s.close()
    assert p.returncode == 0, p.stdout + p.stderr
    assert "pushing imgtest/dep:1 to" in p.stderr
    want = _ids(lab, m, "imgtest/dep:1")
    for w in lab.workers:
        assert _ids(lab, w, "imgtest/dep:1") == want
        assert lab.ssh(w, "docker ps --filter name=dep_app -q").strip()
    lab.cli("rm", "dep")
