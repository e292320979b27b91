"""What the lab test modules share to drive a cluster as a user drives it: swarmsmith run as a
subprocess in the cluster's folder (this checkout's cli.py, no SWARMSMITH_ variables from the
caller), every output checked for join tokens on the spot, SSH to the lab's hosts, and a wait
that names what it waited for."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

from tests.conftest import REPO, run_cli

TOKEN_MARK = "SWMTKN-"
# stop a host's dockerd the hard way (no init script) and wait until it is gone
STOP_ENGINE = ("kill $(cat /var/run/docker.pid); i=0; while [ -e /var/run/docker.pid ] && "
               "kill -0 $(cat /var/run/docker.pid) 2>/dev/null; do i=$((i+1)); "
               "[ $i -gt 600 ] && exit 1; sleep 0.1; done")


# a stack holding what a swarm's backup must keep besides services: a secret and a config
STATEFUL_STACK = """\
services:
  app:
    image: swarmsmith/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    secrets: [token]
    configs: [{source: settings, target: /settings}]
    deploy: {replicas: 2}
secrets:
  token: {file: ./token.txt}
configs:
  settings: {file: ./settings.txt}
"""


def write_stateful_stack(folder: str) -> None:
    """STATEFUL_STACK as stack.yml in `folder`, with the files its secret and config read."""
    for name, text in (("stack.yml", STATEFUL_STACK), ("token.txt", "s3cr3t-value\n"),
                       ("settings.txt", "a=1\n")):
        with open(os.path.join(folder, name), "w") as f:
            f.write(text)


@contextlib.contextmanager
def brought_up(path, up_timeout: float = 300, down_timeout: float = 600):
    """The cluster of the file at `path` up with the lab's image loaded, and down afterwards
    whatever happened."""
    try:
        up = run_cli("up", str(path), timeout=up_timeout)
        assert up.returncode == 0, up.stderr + up.stdout
        load = run_cli("image-load", str(path))
        assert load.returncode == 0, load.stderr
        yield
    finally:
        down = run_cli("down", str(path), timeout=down_timeout)
        assert down.returncode == 0, down.stderr


def assert_no_token(*texts: str, what: str = "") -> None:
    for t in texts:
        assert TOKEN_MARK not in (t or ""), f"join token printed by {what}"


def clean_env(extra: dict | None = None) -> dict:
    """The caller's environment without SWARMSMITH_ settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSMITH_")}
    env.update(extra or {})
    return env


def argv(*args: str) -> list[str]:
    """The command line of `swarmsmith ARGS` from this checkout."""
    return [sys.executable, os.path.join(REPO, "cli.py"), *args]


def swarmsmith(cwd, *args: str, timeout: float = 300, env: dict | None = None,
               check: int | None = None) -> subprocess.CompletedProcess:
    """`swarmsmith ARGS` in `cwd`; its output never carries a join token; `check`: the exit
    status it must end with."""
    p = subprocess.run(argv(*args), cwd=cwd,
                       env=clean_env(env), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert_no_token(p.stdout, p.stderr, what=f"swarmsmith {' '.join(args)}")
    if check is not None:
        assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
    return p


class LabCluster:
    """A cluster folder (its cluster file `swarmsmith.yml`) whose hosts are lab `lab`'s."""
    timeout = 600       # a command's default time limit
    token_free_ssh = False     # what the hosts answer over SSH is checked for join tokens too

    def __init__(self, d, lab: str):
        self.dir = str(d)
        self.lab = lab
        self.file = os.path.join(self.dir, "swarmsmith.yml")

    def argv(self, *args: str) -> list[str]:
        return argv(*args)

    def env(self) -> dict:
        return clean_env()

    def write(self, text: str) -> None:
        with open(self.file, "w") as f:
            f.write(text)

    def cli(self, *args, timeout=None, check=None, cwd=None, env=None):
        return swarmsmith(cwd or self.dir, *args, timeout=timeout or self.timeout, env=env,
                          check=check)

    def json(self, *args, check=0, cwd=None):
        return json.loads(self.cli(*args, "--json", check=check, cwd=cwd).stdout)

    def hosts(self) -> dict:
        from provision.hosts.lab.lab import Lab
        return {h.name: h for h in Lab(self.lab).hosts()}

    def ssh(self, host: str, command: str, check: bool = True) -> str:
        from tests.lab_ssh import ssh_exec
        rc, out, err = ssh_exec(self.hosts()[host], command, timeout=120)
        if check and rc != 0:
            raise AssertionError(f"{host}: {command!r} -> {rc}\n{out}{err}")
        if self.token_free_ssh:
            assert_no_token(out, err, what=f"{host}: {command}")
        return out

    def stop_engine(self, host: str) -> None:
        self.ssh(host, STOP_ENGINE)

    def wait(self, what: str, check, timeout: float = 120.0, every: float = 1.0):
        """`check()`'s first true answer; fails naming `what` after `timeout` seconds."""
        end = time.monotonic() + timeout
        while True:
            got = check()
            if got:
                return got
            if time.monotonic() > end:
                raise AssertionError(f"not within {timeout:g} s: {what}")
            time.sleep(every)


class Cluster(LabCluster):
    """A `provider: lab` cluster whose lab is named as the cluster; every SSH answer checked
    for join tokens as well."""
    token_free_ssh = True

    def __init__(self, tmp, text: str):
        super().__init__(tmp, "")
        os.makedirs(self.dir, exist_ok=True)
        self.write(text)

    def write(self, text: str) -> None:
        self.text = text
        self.name = self.lab = next(l.split(":", 1)[1].strip() for l in text.splitlines()
                                    if l.startswith("name:"))
        super().write(text)

    @property
    def state_dir(self) -> str:
        return os.path.join(self.dir, ".swarmsmith", self.name)

    def up(self, *extra: str, env: dict | None = None) -> dict:
        proc = self.cli("up", "--json", *extra, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return json.loads(proc.stdout)

    def down(self) -> None:
        proc = self.cli("down")
        assert proc.returncode == 0, proc.stderr

    def inventory(self) -> dict:
        with open(os.path.join(self.state_dir, "inventory.json")) as f:
            return json.load(f)

    def manager(self) -> str:
        return f"{self.name}-manager-1"

    def nodes(self, on: str | None = None) -> list[dict]:
        from provision.remote import facts as F
        return F.parse_nodes(self.ssh(on or self.manager(),
                                      "docker node inspect $(docker node ls -q)"))

    def node_view(self) -> list[tuple]:
        """What `docker node ls` shows, in a comparable form."""
        return sorted((n["id"], n["hostname"], n["role"], n["state"], n["addr"],
                       tuple(sorted(n["labels"].items())), n["reachability"])
                      for n in self.nodes())

    def swarm_id(self) -> str:
        return self.ssh(self.manager(), "docker info -f '{{.Swarm.Cluster.ID}}'").strip()

    def engine_starts(self) -> dict[str, str]:
        """dockerd's pid and kernel start time on each host (changes on any restart)."""
        cmd = "p=$(cat /var/run/docker.pid) && echo $p $(cut -d' ' -f22 /proc/$p/stat)"
        return {n: self.ssh(n, cmd).strip() for n in self.hosts()}

    def state_files_have_no_token(self) -> None:
        for root, _, files in os.walk(os.path.join(self.dir, ".swarmsmith")):
            for f in files:
                with open(os.path.join(root, f), errors="replace") as fh:
                    assert TOKEN_MARK not in fh.read(), os.path.join(root, f)


@contextlib.contextmanager
def cluster(tmp, text: str):
    """A Cluster brought down (its lab removed) whatever the test did."""
    from provision.hosts.lab.lab import Lab
    c = Cluster(tmp, text)
    try:
        yield c
    finally:
        with contextlib.suppress(Exception):
            c.state_files_have_no_token()
        proc = c.cli("down")
        Lab(c.name).down()          # in case the cluster file was changed to something broken
        assert proc.returncode == 0, proc.stderr
