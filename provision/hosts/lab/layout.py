"""Names, addresses and paths of a lab and its hosts: pure functions, no I/O.

Addresses come from 198.18.0.0/15 (reserved for benchmarking, never routed): outside the
swarm overlay pool (10.0.0.0/8) and Docker's bridge pools (172.17-31.x, 192.168.x), so
overlays and docker0 in every host never collide with the lab's own networks.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

ROOT = os.environ.get("SWARMSMITH_LAB_ROOT", "/var/lib/swarmsmith/labs")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
MAX_INDEX = 255       # labs per machine (one /24 pair each)
MAX_HOSTS = 250       # hosts per lab (.2 ... .251)


def valid_name(name: str) -> bool:
    return bool(NAME_RE.match(name))


@dataclass(frozen=True)
class LabLayout:
    name: str
    index: int          # picks the subnets and interface names; unique per machine
    image_root: str | None = None   # hosts' shared read-only root; None: the machine's own
    vm: bool = False    # hosts are QEMU guests with their own kernel (vmhost.py)

    @property
    def dir(self) -> str:
        return os.path.join(ROOT, self.name)

    @property
    def key_path(self) -> str:
        return os.path.join(self.dir, "id_ed25519")

    @property
    def ns_dir(self) -> str:
        return os.path.join(self.dir, "ns")

    @property
    def public_bridge(self) -> str:
        return f"swsm{self.index}pub"

    @property
    def private_bridge(self) -> str:
        return f"swsm{self.index}prv"

    @property
    def public_gateway(self) -> str:
        return f"198.18.{self.index}.1"

    @property
    def private_gateway(self) -> str:
        return f"198.19.{self.index}.1"

    def host(self, slot: int, name: str) -> "HostLayout":
        return HostLayout(self, slot, name)


@dataclass(frozen=True)
class HostLayout:
    lab: LabLayout
    slot: int           # 1-based position in the lab; fixes the addresses
    name: str           # hostname inside the host

    @property
    def netns(self) -> str:
        return f"swsm-{self.lab.name}-{self.slot}"

    @property
    def public_address(self) -> str:
        return f"198.18.{self.lab.index}.{self.slot + 1}"

    @property
    def private_address(self) -> str:
        return f"198.19.{self.lab.index}.{self.slot + 1}"

    @property
    def veth_public(self) -> str:
        return f"sw{self.lab.index}h{self.slot}p"

    @property
    def veth_private(self) -> str:
        return f"sw{self.lab.index}h{self.slot}v"

    @property
    def dir(self) -> str:
        return os.path.join(self.lab.dir, "hosts", self.name)

    @property
    def mnt_file(self) -> str:
        return os.path.join(self.lab.ns_dir, f"{self.slot}.mnt")

    @property
    def uts_file(self) -> str:
        return os.path.join(self.lab.ns_dir, f"{self.slot}.uts")

    @property
    def cgroup_parent(self) -> str:
        return f"/swarmsmith-{self.lab.name}-{self.slot}"

    @property
    def own_root(self) -> bool:
        return self.lab.image_root is not None

    @property
    def root_upper(self) -> str:
        return os.path.join(self.dir, "root-upper")

    @property
    def root_work(self) -> str:
        return os.path.join(self.dir, "root-work")

    @property
    def root_merged(self) -> str:
        return os.path.join(self.dir, "root")

    # host path -> path inside the host (bind mounted folders private to the host)
    def private_dirs(self) -> dict[str, str]:
        if self.own_root:
            # everything else lives in the host's own copy-on-write root; /var/lib/docker must
            # not (overlay2 refuses an overlayfs upper layer), /etc/ssh holds this host's key
            return {os.path.join(self.dir, leaf): target for leaf, target in (
                ("var-lib-docker", "/var/lib/docker"), ("etc-ssh", "/etc/ssh"))}
        return {os.path.join(self.dir, leaf): target for leaf, target in (
            ("var-lib-docker", "/var/lib/docker"),
            ("etc-docker", "/etc/docker"),
            ("etc-ssh", "/etc/ssh"),
            ("etc-default", "/etc/default"),
            ("var-log", "/var/log"),
            # the machine's /root (its .bashrc, pyenv shims) must not leak into lab hosts:
            # sshd's bash sources .bashrc, which cost 0.2 s per command here
            ("root-home", "/root"),
        )}

    @property
    def hosts_file(self) -> str:
        return os.path.join(self.dir, "hosts")

    @property
    def resolv_file(self) -> str:
        return os.path.join(self.dir, "resolv.conf")

    def nsenter(self) -> list[str]:
        return ["nsenter", f"--net=/run/netns/{self.netns}", f"--mount={self.mnt_file}",
                f"--uts={self.uts_file}", "--"]
