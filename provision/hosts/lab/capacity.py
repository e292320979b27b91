"""What a lab of N hosts needs from this machine, checked before any host is made, and the
kernel limits that every network namespace shares, sized for the hosts the labs hold.

The neighbour (ARP) table is one per machine, not one per namespace: every lab host keeps an
entry for each peer it talks to on each of its two networks, and each swarm overlay (ingress
included) adds its own. At Linux's default limit (gc_thresh3 = 1024) a 100-host swarm overflows
it, and then no host answers at all ("neighbor table overflow")."""
from __future__ import annotations

import os
import resource

from ...base.errors import InputError

# measured on a lab host in a swarm with no task: dockerd 80-90 MB, containerd 38 MB, sshd 5 MB
MB_PER_HOST = 140
# a VM host: its guest memory (vmhost.MEMORY_MB) and QEMU's own, about 100 MB
MB_PER_VM = 1536 + 100
RESERVE_MB = 1024           # the machine itself, swarmsmith and the apt proxy
from ...remote.parallel import FDS_BASE, FDS_PER_HOST

NEIGH = "/proc/sys/net/{family}/neigh/default/gc_thresh{n}"


def neighbour_entries(hosts: int) -> int:
    """Room for every host to know every other on both lab networks and one overlay, twice
    over (entries linger until garbage-collected), never below Linux's default."""
    need = 2 * 3 * hosts * hosts + 2 * hosts
    return max(1024, -(-need // 1024) * 1024)


def read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def mem_available_mb(meminfo: str = "/proc/meminfo") -> int | None:
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError):
        return None
    return None


def check(new_hosts: int, total_hosts: int, available_mb: int | None = None,
          nofile: tuple[int, int] | None = None, mb_per_host: int = MB_PER_HOST) -> None:
    """Refuse (exit 2, with the numbers) a lab this machine cannot hold: memory for the new
    hosts' engines, and descriptors for a client connected to every lab host at once."""
    if new_hosts <= 0:
        return
    available_mb = mem_available_mb() if available_mb is None else available_mb
    if available_mb is not None:
        need = new_hosts * mb_per_host + RESERVE_MB
        if need > available_mb:
            fits = max(0, (available_mb - RESERVE_MB) // mb_per_host)
            raise InputError(
                f"{new_hosts} more lab host(s) need about {need / 1024:.1f} GiB of memory "
                f"({mb_per_host} MB each once its engine runs, {RESERVE_MB} MB kept for the "
                f"machine); {available_mb / 1024:.1f} GiB is available, room for {fits} more: "
                "ask for fewer hosts", path="lab nodes")
    soft, hard = nofile or resource.getrlimit(resource.RLIMIT_NOFILE)
    need = total_hosts * FDS_PER_HOST + FDS_BASE
    if hard != resource.RLIM_INFINITY and need > hard:
        fits = max(0, (hard - FDS_BASE) // FDS_PER_HOST)
        raise InputError(
            f"{total_hosts} lab hosts need about {need} open files in the swarmsmith process "
            f"that talks to all of them, and this machine allows {hard} (ulimit -Hn): raise it, "
            f"or use at most {fits} hosts", path="lab nodes")


def size_neighbour_table(total_hosts: int, root: str = "/") -> list[str]:
    """Raise the machine's neighbour-table limits (IPv4 and IPv6) to what `total_hosts` lab
    hosts need; never lowers them. Returns the change lines."""
    want3 = neighbour_entries(total_hosts)
    changes = []
    for family in ("ipv4", "ipv6"):
        paths = {n: os.path.join(root, NEIGH.format(family=family, n=n).lstrip("/"))
                 for n in (2, 3)}
        have3 = read_int(paths[3])
        if have3 is None or have3 >= want3:
            continue
        # thresh2 is where the kernel starts to collect entries older than 5 s: half the hard
        # limit, as in Linux's defaults
        for n, value in ((3, want3), (2, want3 // 2)):
            have = read_int(paths[n])
            if have is not None and have < value:
                with open(paths[n], "w") as f:
                    f.write(str(value))
        changes.append(f"machine: {family} neighbour table limit raised from {have3} to {want3} "
                       f"entries (net.{family}.neigh.default.gc_thresh3, shared by every "
                       f"network namespace) for {total_hosts} lab hosts")
    return changes
