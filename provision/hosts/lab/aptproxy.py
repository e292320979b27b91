"""The labs' apt proxy: Debian's apt-cacher-ng on the machine, so lab hosts (which have no
route out) can install Debian packages.

One proxy process serves every lab on the machine: apt-cacher-ng coordinates the downloads of
one file inside its own process only, so two of them writing one package cache (labs in
parallel, as CI runs them) can collide on a file both fetch. It listens only on
SHARED_ADDRESS, an address on an interface of its own (a bridge with no port) that nothing
routes to. Each lab that uses it (labs with their own image) gets one DNAT rule that sends its
hosts' connections to its bridge address, port 3142, there: the hosts keep finding the proxy
at their gateway (`apt-proxy.lab` in their /etc/hosts), and no other address listens.

`lab up` starts it, or adds the lab's rule when it runs already; `lab down` removes the lab's
rule, and stops the proxy once no lab uses it. Both run under the machine's lab lock. The
package cache stays after the last `down`, so a second install is served from it.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from ...base.errors import SwarmsmithError
from ...base.localrun import ok, run
from .bridge import ensure_bridge
from .image import debian_mirror
from .layout import ROOT, LabLayout

PORT = 3142
PACKAGE_CACHE = os.environ.get("SWARMSMITH_APT_CACHE",
                               os.path.join(os.path.dirname(ROOT), "apt-cache"))
PACKAGED_CONFIG = "/etc/apt-cacher-ng"
# 198.18.0.0/24 is no lab's (lab indexes start at 1: layout.py)
SHARED_ADDRESS = "198.18.0.1"
INTERFACE = "swsm0apt"
MARKER = "apt-proxy"      # a lab's folder holds this folder while the lab uses the proxy


def shared_folder() -> str:
    return os.path.join(os.path.dirname(ROOT), "apt-proxy")


def folder(lab: LabLayout) -> str:
    return os.path.join(lab.dir, MARKER)


def url(lab: LabLayout) -> str:
    return f"http://{lab.public_gateway}:{PORT}"


def _read_pid(pid_file: str) -> int | None:
    """The pid a file names when that process is an apt-cacher-ng, else None."""
    try:
        with open(pid_file) as f:
            n = int(f.read().strip())
        with open(f"/proc/{n}/cmdline", "rb") as f:
            if b"apt-cacher-ng" in f.read():
                return n
    except (OSError, ValueError):
        pass
    return None


def pid() -> int | None:
    """The running proxy's pid, or None (no pid file, or it names another program)."""
    return _read_pid(os.path.join(shared_folder(), "pid"))


def answers(timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((SHARED_ADDRESS, PORT), timeout=timeout):
            return True
    except OSError:
        return False


def users() -> list[str]:
    """The labs whose hosts use the proxy (their folder holds the marker)."""
    if not os.path.isdir(ROOT):
        return []
    return sorted(d for d in os.listdir(ROOT) if os.path.isdir(os.path.join(ROOT, d, MARKER)))


def nat_rule(lab: LabLayout) -> list[str]:
    """The lab's rule in the nat table: its hosts' connections to the gateway's port 3142 go
    to the shared proxy."""
    return ["PREROUTING", "-i", lab.public_bridge, "-d", lab.public_gateway, "-p", "tcp",
            "--dport", str(PORT), "-j", "DNAT", "--to-destination", f"{SHARED_ADDRESS}:{PORT}"]


def _configure() -> str:
    conf = os.path.join(shared_folder(), "conf")
    if os.path.isdir(conf):
        shutil.rmtree(conf)
    shutil.copytree(PACKAGED_CONFIG, conf)
    # the packaged backend list names mirrors this machine may not reach (503 for every
    # request): use the one the machine's own apt sources name
    with open(os.path.join(conf, "backends_debian"), "w") as f:
        f.write(debian_mirror() + "/\n")
    return conf


def command(conf: str) -> list[str]:
    d = shared_folder()
    return ["apt-cacher-ng", "-c", conf, "ForeGround=0", f"BindAddress={SHARED_ADDRESS}",
            f"Port={PORT}", f"CacheDir={PACKAGE_CACHE}", f"LogDir={d}/log",
            f"PidFile={d}/pid", f"SocketPath={d}/socket"]


def _start(deadline: float) -> None:
    if not shutil.which("apt-cacher-ng"):
        raise SwarmsmithError("lab images need apt-cacher-ng on this machine (apt-get install -y "
                              "apt-cacher-ng, or run scripts/setup.sh)")
    _stop_shared(deadline)
    os.makedirs(os.path.join(shared_folder(), "log"), exist_ok=True)
    os.makedirs(PACKAGE_CACHE, exist_ok=True)
    proc = subprocess.run(command(_configure()), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, start_new_session=True)
    end = time.monotonic() + deadline
    while not (pid() and answers()):
        if time.monotonic() > end:
            raise SwarmsmithError(f"apt proxy did not answer on {SHARED_ADDRESS}:{PORT} within "
                                  f"{deadline:.0f}s: {(proc.stderr or proc.stdout).strip()[-300:]}")
        time.sleep(0.05)


def ensure(lab: LabLayout, deadline: float = 10.0) -> str | None:
    """The proxy runs and the lab's hosts reach it (under the machine's lab lock); a change
    line, or None when both held already."""
    _stop_own(lab, deadline)            # a proxy of the lab's own, from an earlier swarmsmith
    os.makedirs(folder(lab), exist_ok=True)
    ensure_bridge(INTERFACE, f"{SHARED_ADDRESS}/32")   # a bridge with no port holds the address
    # a running proxy that is slow to accept (a loaded machine) is waited for, not restarted:
    # a restart cuts the downloads other labs' hosts have in flight
    started = not (pid() and any(answers(timeout=t) for t in (0.5, 2.0, 5.0)))
    if started:
        _start(deadline)
    routed = ok(["iptables", "-t", "nat", "-C", *nat_rule(lab)])
    if not routed:
        run(["iptables", "-t", "nat", "-I", *nat_rule(lab)])
    if started:
        return f"lab {lab.name}: apt proxy on {url(lab)} started"
    if not routed:
        return f"lab {lab.name}: apt proxy on {url(lab)} (the machine's, shared with other labs)"
    return None


def stop(lab: LabLayout, deadline: float = 10.0) -> str | None:
    """The lab no longer reaches the proxy, and the proxy stops when no other lab uses it
    (under the machine's lab lock); a change line, or None when there was nothing to undo."""
    changed = _stop_own(lab, deadline)
    while ok(["iptables", "-t", "nat", "-C", *nat_rule(lab)]):
        run(["iptables", "-t", "nat", "-D", *nat_rule(lab)])
        changed = True
    if os.path.isdir(folder(lab)):
        shutil.rmtree(folder(lab))
        changed = True
    others = users()
    if not others:
        changed = _stop_shared(deadline) or changed
        if ok(["ip", "link", "show", INTERFACE]):
            run(["ip", "link", "del", INTERFACE])
        shutil.rmtree(shared_folder(), ignore_errors=True)
    if not changed:
        return None
    if others:
        return f"lab {lab.name}: apt proxy left to lab(s) {', '.join(others)}"
    return f"lab {lab.name}: apt proxy stopped"


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


def _kill(n: int, still_there, deadline: float) -> None:
    os.kill(n, signal.SIGTERM)
    end = time.monotonic() + deadline
    while _running(n) or still_there():
        if time.monotonic() > end:
            try:
                os.kill(n, signal.SIGKILL)
            except ProcessLookupError:
                pass
            end += deadline
        time.sleep(0.05)


def _stop_shared(deadline: float) -> bool:
    n = pid()
    if n is None:
        return False
    _kill(n, lambda: answers(timeout=0.1), deadline)
    return True


def _stop_own(lab: LabLayout, deadline: float) -> bool:
    """Stops a proxy of the lab's own (one per lab, bound to its gateway, before the machine
    had one proxy for all labs), so its port is free and its cache writes end."""
    n = _read_pid(os.path.join(folder(lab), "pid"))
    if n is None:
        return False

    def still_there() -> bool:
        try:
            with socket.create_connection((lab.public_gateway, PORT), timeout=0.1):
                return True
        except OSError:
            return False
    _kill(n, still_there, deadline)
    for leftover in ("pid", "conf", "log", "socket"):
        path = os.path.join(folder(lab), leftover)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        elif os.path.lexists(path):
            os.unlink(path)
    return True
