"""Run a command on a lab host with the ssh binary, for tests and benches that look at a host
from outside swarmsmith (the lab knows each host's key, so it is pinned)."""
from __future__ import annotations

import os
import subprocess
import tempfile
from typing import BinaryIO

from provision.base.errors import UnreachableError
from provision.base.hosts import Host


def ssh_exec(host: Host, command: str, stdin: BinaryIO | None = None,
             timeout: float = 300) -> tuple[int, str, str]:
    """Run `command` on `host` with the ssh binary (stdin streamed from a file object);
    returns (exit status, stdout, stderr). The provider's host key is pinned when known."""
    with tempfile.TemporaryDirectory(prefix="swsm-ssh-") as tmp:
        known = os.path.join(tmp, "known_hosts")
        opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR",
                "-o", f"UserKnownHostsFile={known}", "-o", "GlobalKnownHostsFile=/dev/null"]
        if host.host_key:
            with open(known, "w") as f:
                target = host.public_address if host.port == 22 else \
                    f"[{host.public_address}]:{host.port}"
                f.write(f"{target} {host.host_key}\n")
            opts += ["-o", "StrictHostKeyChecking=yes"]
        else:
            opts += ["-o", "StrictHostKeyChecking=accept-new"]
        if host.key_path:
            opts += ["-i", host.key_path, "-o", "IdentitiesOnly=yes"]
        argv = ["ssh", *opts, "-p", str(host.port), f"{host.user}@{host.public_address}", command]
        proc = subprocess.run(argv, stdin=stdin if stdin is not None else subprocess.DEVNULL,
                              capture_output=True, timeout=timeout)
    out, err = proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
    if proc.returncode == 255:
        raise UnreachableError(f"ssh failed: {err.strip()}", host=host.name)
    return proc.returncode, out, err


def remove_cli_stacks(sh, stacks, docker: str = "docker", deadline: float = 120) -> None:
    """`docker stack rm` as an operator would run it, until it succeeds: the 20.10 CLI removes
    a stack's networks right after its services, and swarm refuses that while their tasks are
    still stopping ("network ... is in use by task"); run again, it removes what is left (and
    may list a network the swarm has just removed: "not found", gone already).
    `sh(script, check=False)` runs a shell line on a manager and returns .exit_status etc."""
    import shlex
    import time
    end = time.monotonic() + deadline
    line = f"{docker} stack rm " + " ".join(shlex.quote(s) for s in stacks) + " >/dev/null"
    while True:
        r = sh(line, check=False)
        if r.exit_status == 0:
            return
        said = r.stdout + r.stderr
        if not ("in use by task" in said or " not found" in said) or time.monotonic() > end:
            raise AssertionError(f"{line}\n-> {r.exit_status}\n{r.stdout}\n{r.stderr}")
        time.sleep(1)
