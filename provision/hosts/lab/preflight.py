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


class LabPreflightError(SwarmsmithError):
    pass


def check() -> None:
    if os.geteuid() != 0:
        raise LabPreflightError("the lab needs root (it creates network namespaces, bridges and "
                                "mounts): run as root or with sudo")
    missing = sorted({pkg for cmd, pkg in REQUIRED.items()
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
    # bridge/veth support shows up as soon as one is created; a clear message is given there.
