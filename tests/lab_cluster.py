"""What the lab test modules share to drive a cluster as a user drives it: swarmsmith run as a
subprocess in the cluster's folder (this checkout's cli.py, no SWARMSMITH_ variables from the
caller), every output checked for join tokens on the spot, SSH to the lab's hosts, and a wait
that names what it waited for."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from tests.conftest import REPO

TOKEN_MARK = "SWMTKN-"
# stop a host's dockerd the hard way (no init script) and wait until it is gone
STOP_ENGINE = ("kill $(cat /var/run/docker.pid); i=0; while [ -e /var/run/docker.pid ] && "
               "kill -0 $(cat /var/run/docker.pid) 2>/dev/null; do i=$((i+1)); "
               "[ $i -gt 600 ] && exit 1; sleep 0.1; done")


def assert_no_token(*texts: str, what: str = "") -> None:
    for t in texts:
        assert TOKEN_MARK not in (t or ""), f"join token printed by {what}"


def clean_env(extra: dict | None = None) -> dict:
    """The caller's environment without SWARMSMITH_ settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMSMITH_")}
    env.update(extra or {})
    return env


def swarmsmith(cwd, *args: str, timeout: float = 300, env: dict | None = None,
               check: int | None = None) -> subprocess.CompletedProcess:
    """`swarmsmith ARGS` in `cwd`; its output never carries a join token; `check`: the exit
    status it must end with."""
    p = subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=cwd,
                       env=clean_env(env), capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert_no_token(p.stdout, p.stderr, what=f"swarmsmith {' '.join(args)}")
    if check is not None:
        assert p.returncode == check, (args, p.returncode, p.stdout, p.stderr)
    return p


class LabCluster:
    """A cluster folder (its cluster file `swarmsmith.yml`) whose hosts are lab `lab`'s."""
    timeout = 600       # a command's default time limit

    def __init__(self, d, lab: str):
        self.dir = str(d)
        self.lab = lab
        self.file = os.path.join(self.dir, "swarmsmith.yml")

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
