"""Lab figures on this machine: bring-up of 3 and 6 hosts, engines started over SSH in
parallel, memory per host with dockerd running, teardown. Needs root; cleans up after itself.

    python bench/lab.py [--sizes 3 6]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from provision.base.hosts import Host  # noqa: E402
from tests.lab_ssh import ssh_exec  # noqa: E402
from provision.hosts.lab import hostns  # noqa: E402
from provision.hosts.lab.lab import Lab  # noqa: E402

NAMES = {3: "blab3", 6: "blab6"}


def start_engine(h: Host, deadline: float = 90) -> None:
    conf = json.dumps({"storage-driver": "overlay2",
                       "cgroup-parent": h.engine_defaults["cgroup-parent"]})
    rc, out, err = ssh_exec(h, f"echo {shlex.quote(conf)} > /etc/docker/daemon.json && "
                               "/etc/init.d/docker start")
    if rc != 0:
        raise RuntimeError(f"{h.name}: docker start failed: {out}{err}")
    end = time.monotonic() + deadline
    while ssh_exec(h, "docker info -f '{{.ID}}' >/dev/null")[0] != 0:
        if time.monotonic() > end:
            raise RuntimeError(f"{h.name}: dockerd did not answer within {deadline}s")
        time.sleep(0.1)


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0            # exited, or a kernel thread


def host_memory_mib(lab: Lab) -> dict[str, float]:
    """Sum of RSS of every process in each host's namespaces (sshd, dockerd, containerd and
    their children). Shared pages are counted once per process, so this is an upper bound."""
    return {h.name: sum(rss_kib(p) for p in hostns.host_pids(h)) / 1024
            for h in lab.host_layouts()}


def bench(n: int) -> dict:
    name = NAMES[n]
    lab = Lab(name)
    if lab.exists:
        lab.down()                       # a leftover of an interrupted run
        lab = Lab(name)
    try:
        t0 = time.monotonic()
        hosts, _ = lab.up([f"{name}-{i}" for i in range(1, n + 1)])
        up = time.monotonic() - t0
        t0 = time.monotonic()
        Lab(name).up([h.name for h in hosts])
        up_again = time.monotonic() - t0
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(start_engine, hosts))
        engines = time.monotonic() - t0
        time.sleep(2)                    # let dockerd and containerd settle
        mem = host_memory_mib(lab)
    finally:
        t0 = time.monotonic()
        Lab(name).down()
        down = time.monotonic() - t0
    return {"hosts": n, "up": up, "up_again": up_again, "engines": engines, "mem": mem,
            "down": down}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[3, 6], choices=sorted(NAMES))
    args = p.parse_args()
    if os.geteuid() != 0:
        print("bench/lab.py needs root", file=sys.stderr)
        return 1
    rows = [bench(n) for n in args.sizes]
    print(f"{'hosts':>5} {'lab up':>8} {'up again':>9} {'dockerd (ssh, ∥)':>17} "
          f"{'MiB/host avg':>13} {'min–max':>13} {'teardown':>9}")
    for r in rows:
        m = list(r["mem"].values())
        print(f"{r['hosts']:>5} {r['up']:>7.2f}s {r['up_again']:>8.2f}s {r['engines']:>16.2f}s "
              f"{sum(m) / len(m):>13.1f} {min(m):>6.1f}–{max(m):<6.1f} {r['down']:>8.2f}s")
    for r in rows:
        print(f"memory per host, {r['hosts']} hosts (MiB, RSS sum of the host's processes): " +
              ", ".join(f"{k} {v:.1f}" for k, v in r["mem"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
