"""The lab's apt proxy: Debian's apt-cacher-ng on the machine, listening only on the lab's public
bridge address, so lab hosts (which have no route out) can install Debian packages.

One proxy process per lab (started by `lab up` for labs with their own image, stopped by
`lab down`); the package cache is shared by all labs and stays after `down`, so a second
install is served from it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from ..errors import SwarmsmithError
from .image import debian_mirror
from .layout import ROOT, LabLayout

PORT = 3142
PACKAGE_CACHE = os.environ.get("SWARMSMITH_APT_CACHE",
                               os.path.join(os.path.dirname(ROOT), "apt-cache"))
PACKAGED_CONFIG = "/etc/apt-cacher-ng"


def folder(lab: LabLayout) -> str:
    return os.path.join(lab.dir, "apt-proxy")


def url(lab: LabLayout) -> str:
    return f"http://{lab.public_gateway}:{PORT}"


def _pid_file(lab: LabLayout) -> str:
    return os.path.join(folder(lab), "pid")


def pid(lab: LabLayout) -> int | None:
    """The running proxy's pid, or None (no pid file, or it names another program)."""
    try:
        with open(_pid_file(lab)) as f:
            n = int(f.read().strip())
        with open(f"/proc/{n}/cmdline", "rb") as f:
            if b"apt-cacher-ng" in f.read():
                return n
    except (OSError, ValueError):
        pass
    return None


def answers(lab: LabLayout, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((lab.public_gateway, PORT), timeout=timeout):
            return True
    except OSError:
        return False


def _configure(lab: LabLayout) -> str:
    conf = os.path.join(folder(lab), "conf")
    if os.path.isdir(conf):
        shutil.rmtree(conf)
    shutil.copytree(PACKAGED_CONFIG, conf)
    # the packaged backend list names mirrors this machine may not reach (503 for every
    # request): use the one the machine's own apt sources name
    with open(os.path.join(conf, "backends_debian"), "w") as f:
        f.write(debian_mirror() + "/\n")
    return conf


def command(lab: LabLayout, conf: str) -> list[str]:
    d = folder(lab)
    return ["apt-cacher-ng", "-c", conf, "ForeGround=0", f"BindAddress={lab.public_gateway}",
            f"Port={PORT}", f"CacheDir={PACKAGE_CACHE}", f"LogDir={d}/log",
            f"PidFile={_pid_file(lab)}", f"SocketPath={d}/socket"]


def ensure(lab: LabLayout, deadline: float = 10.0) -> str | None:
    """Start the lab's proxy unless it runs; returns a change line or None."""
    if pid(lab) and answers(lab):
        return None
    if not shutil.which("apt-cacher-ng"):
        raise SwarmsmithError("lab images need apt-cacher-ng on this machine (apt-get install -y "
                              "apt-cacher-ng, or run scripts/setup.sh)")
    stop(lab)
    os.makedirs(os.path.join(folder(lab), "log"), exist_ok=True)
    os.makedirs(PACKAGE_CACHE, exist_ok=True)
    proc = subprocess.run(command(lab, _configure(lab)), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, start_new_session=True)
    end = time.monotonic() + deadline
    while not (pid(lab) and answers(lab)):
        if time.monotonic() > end:
            raise SwarmsmithError(f"apt proxy did not answer on {lab.public_gateway}:{PORT} within "
                                  f"{deadline:.0f}s: {(proc.stderr or proc.stdout).strip()[-300:]}")
        time.sleep(0.05)
    return f"lab {lab.name}: apt proxy on {url(lab)} started"


def _running(n: int) -> bool:
    """Any thread of process n still runs: when the main thread has exited its other threads
    may still hold the listening socket (and the cmdline already reads empty)."""
    try:
        with open(f"/proc/{n}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
    except OSError:
        return False
    return not fields.get("State", "").strip().startswith("Z") or \
        int(fields.get("Threads", "1")) > 1


def stop(lab: LabLayout, deadline: float = 10.0) -> bool:
    n = pid(lab)
    if n is None:
        return False
    os.kill(n, signal.SIGTERM)
    end = time.monotonic() + deadline
    while _running(n) or answers(lab, timeout=0.1):
        if time.monotonic() > end:
            try:
                os.kill(n, signal.SIGKILL)
            except ProcessLookupError:
                pass
            end += deadline
        time.sleep(0.05)
    return True
