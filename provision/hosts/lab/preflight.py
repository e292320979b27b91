"""Checks before touching anything: root, commands (with the apt package to install), kernel."""
from __future__ import annotations

import os
import shutil

from ...base.errors import SwarmsmithError

# command -> Debian package that provides it
REQUIRED = {
    "ip": "iproute2",
    "nsenter": "util-linux",
    "unshare": "util-linux",
    "mount": "mount",
    "iptables": "iptables",
    "ssh-keygen": "openssh-client",
    "/usr/sbin/sshd": "openssh-server",
    "/usr/sbin/dockerd": "docker.io",
    "/usr/bin/busybox": "busybox-static",
}

# what VM lab hosts need beyond that
VM_REQUIRED = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "genisoimage": "genisoimage",
    "mmdebstrap": "mmdebstrap",
    "mkfs.ext4": "e2fsprogs",
}


class LabPreflightError(SwarmsmithError):
    pass


def check(vm: bool = False) -> None:
    if os.geteuid() != 0:
        raise LabPreflightError("the lab needs root (it creates network namespaces, bridges and "
                                "mounts): run as root or with sudo")
    required = {**REQUIRED, **VM_REQUIRED} if vm else REQUIRED
    missing = sorted({pkg for cmd, pkg in required.items()
                      if not (os.path.exists(cmd) if cmd.startswith("/") else shutil.which(cmd))})
    if missing:
        raise LabPreflightError("missing packages for the lab: " + " ".join(missing) +
                                f" (install with: apt-get install -y {' '.join(missing)}, "
                                "or run scripts/setup.sh)")
    for feature, path in (("network namespaces", "/proc/self/ns/net"),
                          ("mount namespaces", "/proc/self/ns/mnt"),
                          ("UTS namespaces", "/proc/self/ns/uts")):
        if not os.path.exists(path):
            raise LabPreflightError(f"this kernel lacks {feature} ({path} is missing)")
    if vm and not os.path.exists("/dev/net/tun"):
        raise LabPreflightError("VM lab hosts need tap devices: /dev/net/tun is missing "
                                "(modprobe tun)")
    # bridge/veth support shows up as soon as one is created; a clear message is given there.
