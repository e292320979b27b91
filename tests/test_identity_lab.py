"""Existing hosts whose names in the cluster file (m1, w1, w2) are not their hostnames (dri1-1,
dri1-2, dri1-3), as nearly always on real machines: after `up`, `plan` says no changes; apt
settings on hosts that have Docker change nothing in apt; node
commands, `backup --node` and `images push --nodes` take either name and listings show both;
`images push --file` sends once per machine, also after a host is renamed in the file; `node
drain` names a task rejected where it moved (and says so again when run again); `up` that adds a
node names the stack images it lacks.

Lab dri1 (3 hosts), cluster dri1 (`provider: static` pointing at them). Needs root.
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time

import pytest

from provision.hosts.lab.lab import Lab
from tests.conftest import REPO

pytestmark = pytest.mark.lab
LAB = "dri1"
NAMES = {"m1": "dri1-1", "w1": "dri1-2", "w2": "dri1-3"}
STACK = """services:
  app:
    image: swarmsmith/busybox:1
    command: ["sh", "-c", "sleep 100000"]
    deploy: {replicas: 2, endpoint_mode: dnsrr}
"""


ENGINE = "install: never, daemon: {storage-driver: overlay2}"


def cluster_file(hosts, names: dict, engine: str = ENGINE) -> str:
    """`names`: the file's name -> lab host name."""
    by = {h.name: h for h in hosts}
    lines = [f"name: {LAB}", "provider: static",
             f"ssh: {{key: {hosts[0].key_path}, connect_timeout: 10}}",
             f"engine: {{{engine}}}", "static:", "  hosts:"]
    for name, host in names.items():
        h = by[host]
        role = "manager" if name.startswith("m") else "worker"
        lines.append(f"    - {{name: {name}, address: {h.public_address}, "
                     f"private_address: {h.private_address}, role: {role}}}")
    return "\n".join(lines) + "\n"


class Env:
    def __init__(self, root, hosts):
        self.dir, self.hosts = root, {h.name: h for h in hosts}

    def write(self, names: dict, engine: str = ENGINE) -> None:
        (self.dir / "swarmsmith.yml").write_text(
            cluster_file(list(self.hosts.values()), names, engine))

    def cli(self, *args, timeout=300, check=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSMITH_")}
        p = subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=self.dir,
                           env=env, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        assert "SWMTKN-" not in p.stdout + p.stderr
        if check is not None:
            assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
        return p

    def ssh(self, host: str, command: str) -> str:
        from tests.lab_ssh import ssh_exec
        rc, out, err = ssh_exec(self.hosts[host], command, timeout=120)
        assert rc == 0, f"{host}: {command!r} -> {rc}\n{out}{err}"
        return out

    def inventory(self) -> dict:
        return json.loads((self.dir / ".swarmsmith" / LAB / "inventory.json").read_text())

    def record(self) -> dict:
        """The newest version of the cluster's record in the swarm."""
        out = self.ssh("dri1-1", "docker config inspect $(docker config ls -q --filter "
                                 f"label=com.swarmsmith.cluster={LAB}) --format "
                                 "'{{index .Spec.Labels \"com.swarmsmith.cluster.version\"}} "
                                 "{{json .Spec.Data}}'")
        newest = max((line.split(" ", 1) for line in out.splitlines()), key=lambda x: int(x[0]))
        return json.loads(base64.b64decode(json.loads(newest[1])))

    def archive(self, tag: str) -> str:
        """A `docker save` archive of a new one-file image (an ID no node has), made on m1."""
        path = f"/tmp/{LAB}-{tag.replace(':', '-').replace('/', '-')}.tar"
        self.ssh("dri1-1", f"set -e; d=$(mktemp -d); echo {tag} $(date +%s%N) > $d/f; "
                           f"tar -C $d -c f | docker import - {tag} >/dev/null; "
                           f"docker save {tag} -o {path}; docker rmi {tag} >/dev/null; rm -rf $d")
        return path


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp(LAB)
    lab = Lab(LAB)
    try:
        hosts, _ = lab.up(list(NAMES.values()))
        e = Env(root, hosts)
        e.write(NAMES)
        e.cli("up", check=0, timeout=600)
        e.cli("image-load", check=0)
        yield e
    finally:
        for f in os.listdir("/tmp"):
            if f.startswith(f"{LAB}-") and f.endswith(".tar"):
                os.unlink(os.path.join("/tmp", f))
        Lab(LAB).down()         # read again: a test adds a host to the lab


def test_after_up_plan_and_dry_run_say_no_changes(env):
    assert json.loads(env.cli("up", "--json", check=0).stdout)["changes"] == []
    p = env.cli("plan", check=0)
    assert f"cluster {LAB}: nothing to do" in p.stdout, p.stdout
    assert json.loads(env.cli("up", "--dry-run", "--json", check=0).stdout)["changes"] == []
    inv = env.inventory()
    assert {n: r["hostname"] for n, r in inv["hosts"].items()} == NAMES


def apt_tree() -> dict:
    out = {}
    for d, _, files in os.walk("/etc/apt"):
        for f in files:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                out[p] = fh.read()
    return out


def test_apt_settings_on_hosts_that_have_docker_change_nothing_in_apt(env):
    """These lab hosts share the machine's /etc: a write would show in the machine's apt."""
    before = apt_tree()
    env.write(NAMES, ENGINE + ', apt_proxy: "http://127.0.0.1:9", '
                              'apt_mirror: "http://deb.debian.org/debian"')
    try:
        plan = json.loads(env.cli("plan", "--json", check=0).stdout)["changes"]
        assert plan == [], plan
        assert json.loads(env.cli("up", "--json", check=0).stdout)["changes"] == []
        assert apt_tree() == before
    finally:
        env.write(NAMES)
        for leftover in ("/etc/apt/apt.conf.d/90swarmsmith-proxy", "/etc/apt/swarmsmith-mirror"):
            if leftover not in before and os.path.exists(leftover):
                os.unlink(leftover)


def test_listings_show_both_names_and_node_commands_take_either(env):
    rows = json.loads(env.cli("node", "ls", "--json", check=0).stdout)["nodes"]
    assert {r["name"]: r["hostname"] for r in rows} == NAMES
    text = env.cli("node", "ls", check=0).stdout
    assert "NAME" in text and all(f"{h} " in text and f" {n} " in text
                                  for n, h in NAMES.items()), text
    (env.dir / "stack.yml").write_text(STACK)
    env.cli("deploy", "-c", "stack.yml", "--timeout", "120", "st", check=0)
    for ref, other in (("w1", "dri1-2"), ("dri1-3", "w2")):
        p = env.cli("node", "drain", ref, "--timeout", "120", check=0)
        shown = f"{ref} ({other})" if ref.startswith("w") else f"{other} ({ref})"
        assert f"{shown}: availability active -> drain" in p.stdout, p.stdout
        env.cli("node", "activate", other, check=0)
    ps = json.loads(env.cli("ps", "st", "--json", check=0).stdout)
    assert all(" (dri1-" in r["node"] for r in ps if r["state"] == "running"), ps
    bad = env.cli("node", "drain", "w9")
    assert bad.returncode == 2 and "w1 (dri1-2)" in bad.stderr


def test_drain_names_a_task_rejected_where_it_moved_and_says_so_again(env):
    """A service whose image only w1 has, placed on workers: drained off w1, its task goes to
    w2, which rejects it (No such image). drain says which node and why, exit 10; a second
    drain of w1 says it again instead of "already drained"."""
    env.ssh("dri1-2", "docker tag swarmsmith/busybox:1 dri/ro:1")
    env.ssh("dri1-1", "docker service create -d -q --name ro --no-resolve-image "
                      "--constraint node.role==worker --restart-delay 1s dri/ro:1 "
                      "sleep 100000 >/dev/null")
    try:
        deadline = time.monotonic() + 120
        while "dri1-2 Running" not in env.ssh(
                "dri1-1", "docker service ps ro -f desired-state=running "
                          "--format '{{.Node}} {{.CurrentState}}'"):
            assert time.monotonic() < deadline, "the ro service never ran on w1"
            time.sleep(1)
        for run in ("first", "again"):
            p = env.cli("node", "drain", "w1", "--timeout", "120")
            assert p.returncode == 10, (run, p.stdout, p.stderr)
            assert "ro: rejected on w2 (dri1-3):" in p.stdout, (run, p.stdout)
    finally:
        env.ssh("dri1-1", "docker service rm ro >/dev/null")
        env.cli("node", "activate", "w1", check=0)


def test_backup_by_either_name(env, tmp_path):
    for ref in (None, "m1", "dri1-1"):
        out = tmp_path / (ref or "default")
        out.mkdir()
        p = env.cli("backup", *(("--node", ref) if ref else ()), "--out", str(out) + "/",
                    timeout=600)
        assert p.returncode == 0, (ref, p.stdout, p.stderr)
        assert " from m1:" in p.stdout and len(os.listdir(out)) == 1, p.stdout
        # the one manager's stop takes its tasks along: the note says so, not that they ran on
        assert "the tasks on m1 stopped with it" in p.stdout, p.stdout


def test_images_push_sends_once_per_machine_also_after_a_rename(env):
    first = env.archive("dri/push:1")
    res = json.loads(env.cli("images", "push", "--file", first, "--json", timeout=600,
                             check=0).stdout)
    assert sorted((n["host"], n["action"]) for n in res["nodes"]) == [
        ("m1", "loaded"), ("w1", "loaded"), ("w2", "loaded")]
    # the file renames w2: the record and the inventory keep one host for that machine
    renamed = {"m1": "dri1-1", "w1": "dri1-2", "app2": "dri1-3"}
    env.write(renamed)
    try:
        report = json.loads(env.cli("up", "--json", check=0).stdout)
        assert "app2: the cluster file's new name for w2 (same machine)" in report["changes"]
        assert sorted(env.inventory()["hosts"]) == ["app2", "m1", "w1"]
        assert sorted(env.record()["hosts"]) == ["app2", "m1", "w1"]
        assert f"cluster {LAB}: nothing to do" in env.cli("plan", check=0).stdout
        second = env.archive("dri/push:2")
        res = json.loads(env.cli("images", "push", "--file", second, "--json", timeout=600,
                                 check=0).stdout)
        assert sorted((n["host"], n["action"]) for n in res["nodes"]) == [
            ("app2", "loaded"), ("m1", "loaded"), ("w1", "loaded")]
        # by hostname too
        third = env.archive("dri/push:3")
        res = json.loads(env.cli("images", "push", "--file", third, "--nodes", "dri1-3",
                                 "--json", timeout=600, check=0).stdout)
        assert [(n["host"], n["action"]) for n in res["nodes"]] == [("app2", "loaded")]
    finally:
        env.write(NAMES)


def test_up_adding_a_node_names_the_stack_images_it_lacks(env):
    """The stack st runs swarmsmith/busybox:1, put on the first three nodes by image-load; a
    fourth host joining lacks it."""
    hosts, _ = Lab(LAB).up([*NAMES.values(), "dri1-4"])
    env.hosts = {h.name: h for h in hosts}
    env.write({**NAMES, "w3": "dri1-4"})
    try:
        report = json.loads(env.cli("up", "--json", timeout=600, check=0).stdout)
        assert "w3: joined as worker" in " ".join(report["changes"]), report
        assert any(w.startswith("image swarmsmith/busybox:1 is not on new node(s) dri1-4")
                   for w in report.get("warnings", [])), report
        assert "w3" in json.dumps(env.cli("node", "ls", "--json", check=0).stdout)
    finally:
        env.write(NAMES)
