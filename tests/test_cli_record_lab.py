"""On real lab hosts, as a newcomer and as an unlucky operator meet them: the README's static
cluster-file example (with `known_hosts: known_hosts`) through a first `up`; a cluster record
planted in the swarm that moves a host and adds one is refused (exit 3) by fresh-folder commands
and by `up`; a killed `scale` leaves its lock and the re-run clears it; `ca rotate` progress only
grows; `logs --tail N` is the last N lines of the service in time order; a second `rollback`
re-applies nothing.

Lab clr1 (3 hosts): m1 and w1 form the cluster (file names that differ from the hostnames); the
third host is the "other address" a planted record points at. Needs root.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from provision.hosts.lab.lab import Lab
from tests.conftest import REPO
from tests.lab_cluster import swarmsmith as sw

pytestmark = pytest.mark.lab
LAB = "clr1"
STACK = """services:
  web:
    image: swarmsmith/busybox:1
    command: ["sh", "-c", "sleep 100000"]
    deploy:
      replicas: 1
      placement: {max_replicas_per_node: 1, constraints: ["node.hostname == %(m1)s"]}
  talk:
    image: swarmsmith/busybox:1
    command: ["sh", "-c", "i=0; while true; do i=$$((i+1)); echo line $$i; sleep 0.2; done"]
    deploy: {replicas: 2, placement: {max_replicas_per_node: 1}}
  roll:
    image: swarmsmith/busybox:1
    command: ["sh", "-c", "sleep 100000"]
    environment: {V: "%(v)s"}
    deploy: {replicas: 1}
"""


def readme_cluster_file(hosts) -> dict:
    """The README's static example, as written, with what lab hosts need instead: their
    addresses, the lab's key, overlay2 (lab hosts' engines need it), no apt settings (lab
    hosts share this machine's /etc/apt) and no agent (it needs a git server: the agent's own
    lab test runs one)."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    block = readme.split("## Cluster file", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    cf = yaml.safe_load(block)
    assert cf["ssh"]["known_hosts"] == "known_hosts" and cf["provider"] == "static"
    cf["name"] = LAB
    m1, w1 = cf["static"]["hosts"]
    assert (m1["name"], w1["name"]) == ("m1", "w1")
    for entry, h in zip((m1, w1), hosts):
        entry.update(address=h.public_address, private_address=h.private_address)
    cf["ssh"].update(key=hosts[0].key_path, connect_timeout=20)
    for key in ("apt_proxy", "apt_mirror"):
        cf["engine"].pop(key)
    cf.pop("agent")
    cf["engine"]["daemon"]["storage-driver"] = "overlay2"
    return cf


class Env:
    def __init__(self, root, hosts, plan, first_up):
        self.root, self.hosts, self.plan, self.first_up = root, hosts, plan, first_up
        self.a = root / "a"

    def folder(self, name: str, known_hosts: bool = True):
        d = self.root / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir()
        shutil.copy(self.a / "swarmsmith.yml", d / "swarmsmith.yml")
        if known_hosts:
            shutil.copy(self.a / "known_hosts", d / "known_hosts")
        else:
            text = (d / "swarmsmith.yml").read_text().replace("known_hosts: known_hosts", "")
            (d / "swarmsmith.yml").write_text(text)
        return d

    def ssh(self, host, command: str, stdin: str | None = None) -> str:
        p = subprocess.run(["ssh", "-i", host.key_path, "-o", "StrictHostKeyChecking=no",
                            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                            f"root@{host.public_address}", command], input=stdin,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        return p.stdout

    def configs(self, prefix: str) -> list[str]:
        out = self.ssh(self.hosts[0], "docker config ls --format '{{.Name}}'")
        return [n for n in out.split() if n.startswith(prefix)]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("clr1")
    lab = Lab(LAB)
    try:
        hosts, _ = lab.up([f"{LAB}-1", f"{LAB}-2", f"{LAB}-3"])
        a = root / "a"
        a.mkdir()
        with open(a / "swarmsmith.yml", "w") as f:
            yaml.safe_dump(readme_cluster_file(hosts), f)
        plan = sw(a, "plan", timeout=300)
        plan.wrote = sorted(p.name for p in a.iterdir())        # a plan writes nothing
        first = sw(a, "up", timeout=600)
        if first.returncode == 0:
            # the stacks' image (the README's images: {push_missing: true} would look for it in
            # a local engine, which this machine has none of)
            assert sw(a, "image-load").returncode == 0
        yield Env(root, hosts, plan, first)
    finally:
        lab.down()


def test_the_readme_static_example_with_known_hosts_runs_a_first_up(env):
    plan = env.plan
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert f"{env.a / 'known_hosts'}: written with 2 host keys" in plan.stdout
    assert plan.wrote == ["swarmsmith.yml"]
    up = env.first_up
    assert up.returncode == 0, up.stdout + up.stderr
    m1, w1 = env.hosts[0], env.hosts[1]
    # each key pinned is listed, and the known_hosts file the example names is written
    for name in ("m1", "w1"):
        assert re.search(rf"~ {name}: host key SHA256:\S+ pinned", up.stdout), up.stdout
    assert f"{env.a / 'known_hosts'}: written with 2 host keys" in up.stdout
    lines = [l for l in (env.a / "known_hosts").read_text().splitlines() if not l.startswith("#")]
    assert lines == [f"{m1.public_address} {m1.host_key} m1", f"{w1.public_address} {w1.host_key} w1"]
    keys = sw(env.a, "hostkeys")
    assert keys.returncode == 0 and keys.stdout.splitlines()[1:] == lines
    again = sw(env.a, "up")
    assert again.returncode == 0 and f"cluster {LAB}: no changes" in again.stdout, again.stdout
    assert (env.a / "known_hosts").read_text().splitlines()[1:] == lines
    # a runner with only the cluster file and the known_hosts it names needs no other pin
    b = env.folder("b")
    st = sw(b, "status")
    assert st.returncode == 0, st.stdout + st.stderr
    assert not (b / ".swarmsmith").exists()
    # without pins, the flag the refusal names exists on every command, before or after it
    e = env.folder("e", known_hosts=False)
    refused = sw(e, "node", "ls")
    assert refused.returncode == 3 and "--accept-new-host-keys" in refused.stderr
    for argv in (("node", "ls", "--accept-new-host-keys"), ("--accept-new-host-keys", "node", "ls"),
                 ("--cluster", str(e / "swarmsmith.yml"), "tokens", "rotate", "--worker",
                  "--accept-new-host-keys")):
        p = sw(env.root, *argv) if argv[0] == "--cluster" else sw(e, *argv)
        assert p.returncode == 0, (argv, p.stdout + p.stderr)


def _plant(env) -> int:
    """A newer record version, as anyone with a manager's Engine API could write it: m1 at the
    third host's address with that host's key, and a host the cluster file does not have."""
    m1, other = env.hosts[0], env.hosts[2]
    names = env.configs(f"swarmsmith-cluster-{LAB}-")
    newest = max(names, key=lambda n: int(n.rsplit("-", 1)[1]))
    version = int(newest.rsplit("-", 1)[1]) + 1
    data = env.ssh(m1, f"docker config inspect --format '{{{{json .Spec.Data}}}}' {newest}")
    record = json.loads(base64.b64decode(json.loads(data)))
    record["hosts"]["m1"].update(public_address=other.public_address, host_key=other.host_key)
    record["hosts"]["x9"] = {**record["hosts"]["w1"], "public_address": other.public_address,
                             "host_key": other.host_key, "node_id": "x9x9x9x9x9x9"}
    env.ssh(m1, f"docker config create --label com.swarmsmith.cluster={LAB} "
                f"--label com.swarmsmith.cluster.version={version} "
                f"swarmsmith-cluster-{LAB}-{version} -", stdin=json.dumps(record))
    return version


def test_a_planted_record_that_moves_a_host_is_refused(env):
    version = _plant(env)
    inv = env.a / ".swarmsmith" / LAB / "inventory.json"
    before = inv.read_text()
    try:
        for folder, extra in ((env.folder("c"), ()),
                              (env.folder("d", known_hosts=False), ("--accept-new-host-keys",))):
            p = sw(folder, "image-load", *extra)
            assert p.returncode == 3, p.stdout + p.stderr
            assert f"cluster record version {version}" in p.stderr, p.stderr
            assert f"m1 at {env.hosts[2].public_address}" in p.stderr
            assert "--accept-host-key" not in p.stderr
            assert "changes" not in p.stdout
        up = sw(env.a, "up")
        assert up.returncode == 3, up.stdout + up.stderr
        assert f"cluster record version {version}" in up.stderr
        assert "--accept-host-key" not in up.stdout + up.stderr
        assert inv.read_text() == before            # nothing taken from it, x9 not cached
    finally:
        env.ssh(env.hosts[0], f"docker config rm swarmsmith-cluster-{LAB}-{version}")
    assert sw(env.folder("c"), "image-load").returncode == 0
    again = sw(env.a, "up")
    assert again.returncode == 0 and "no changes" in again.stdout, again.stdout + again.stderr


def test_a_rerun_of_a_killed_scale_clears_its_lock(env):
    (env.a / "stack.yml").write_text(STACK % {"m1": env.hosts[0].name, "v": "1"})
    dep = sw(env.a, "deploy", "-c", "stack.yml", "st", timeout=600)
    assert dep.returncode == 0, dep.stdout + dep.stderr
    # the second replica can never be placed (one per node, only m1): the scale watches on
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, "cli.py"), "scale",
                             "--timeout", "300", "st_web=2"], cwd=env.a, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            replicas = env.ssh(env.hosts[0], "docker service inspect --format "
                               "'{{.Spec.Mode.Replicated.Replicas}}' st_web").strip()
            if env.configs("swarmsmith-lock-st") and replicas == "2":
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.3)
        else:
            pytest.fail("the scale never held its lock with the update made")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert env.configs("swarmsmith-lock-st") == ["swarmsmith-lock-st"]   # the killed run's
    again = sw(env.a, "scale", "--detach", "st_web=2")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already at 2" in again.stdout
    assert "broke the lock of a run that is gone" in again.stderr, again.stderr
    assert env.configs("swarmsmith-lock-st") == []
    assert sw(env.a, "scale", "--detach", "st_web=1").returncode == 0


def test_ca_rotate_progress_only_grows_and_names_its_phase(env):
    p = sw(env.a, "ca", "rotate", "--timeout", "240", timeout=400)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = [l.split("] ", 1)[1] for l in p.stderr.splitlines() if "CA rotation:" in l]
    counts = [int(l.split(": ", 1)[1].split("/")[0]) for l in lines]
    assert counts and counts == sorted(counts) and counts[-1] == 2, p.stderr
    assert all(re.search(r"nodes on the new root \(.+\)$", l) for l in lines), lines
    assert lines[-1].endswith("(done)")


def test_logs_tail_is_the_services_last_lines_in_time_order(env):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:       # both tasks have written a few lines
        p = sw(env.a, "logs", "st_talk", "--tail", "40", "-t")
        if p.returncode == 0 and {l.split("@")[0] for l in p.stdout.splitlines()} >= \
                {"st_talk.1", "st_talk.2"}:
            break
        time.sleep(1)
    p = sw(env.a, "logs", "st_talk", "--tail", "3", "-t")
    assert p.returncode == 0, p.stderr
    got = p.stdout.splitlines()
    assert len(got) == 3, got                # not 3 per task
    stamps = [l.split(" | ", 1)[1].split(" ", 1)[0] for l in got]
    assert stamps == sorted(stamps), got


def test_a_second_rollback_reapplies_nothing(env):
    (env.a / "stack.yml").write_text(STACK % {"m1": env.hosts[0].name, "v": "2"})
    assert sw(env.a, "deploy", "-c", "stack.yml", "st", timeout=600).returncode == 0
    env_of = ("docker service inspect --format '{{json .Spec.TaskTemplate.ContainerSpec.Env}}' "
              "st_roll")
    assert "V=2" in env.ssh(env.hosts[0], env_of)
    first = sw(env.a, "rollback", "st", "roll", timeout=600)
    assert first.returncode == 0 and "rollback requested: st_roll" in first.stdout, first.stdout
    assert "V=1" in env.ssh(env.hosts[0], env_of)
    second = sw(env.a, "rollback", "st", "roll", timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "skipped st_roll: already rolled back" in second.stdout
    assert "nothing to roll back" in second.stdout and "rollback requested" not in second.stdout
    assert "V=1" in env.ssh(env.hosts[0], env_of)
