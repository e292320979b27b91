"""A VM's cloud-init NoCloud seed: the way a cloud hands a new machine its name, addresses, the
key that may log in as root and its own SSH host key (made here, so the lab knows and pins it
before the VM has booted). Written as an ISO 9660 disk labelled `cidata`."""
from __future__ import annotations

import json
import os
import subprocess
import tempfile

from ...base.errors import SwarmsmithError


def meta_data(instance_id: str, hostname: str) -> str:
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}) + "\n"


def user_data(authorized_key: str, host_key: str, host_key_pub: str,
              etc_hosts: list[str]) -> str:
    """#cloud-config (JSON is YAML): root logs in with the key only; the host key is the one
    given; lines appended to /etc/hosts (the lab's apt proxy by name)."""
    config = {
        "disable_root": False,
        "users": [],                # no default user: root and the lab's key only
        "ssh_pwauth": False,
        "ssh_authorized_keys": [authorized_key.strip()],
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_key, "ed25519_public": host_key_pub.strip()},
        "write_files": [{"path": "/etc/hosts", "append": True,
                         "content": "".join(line + "\n" for line in etc_hosts)}],
    }
    return "#cloud-config\n" + json.dumps(config, indent=1) + "\n"


def network_config(interfaces: list[tuple[str, str, str]]) -> str:
    """(name, mac, address/prefix) each: static addresses, no gateway (lab hosts reach each
    other and the lab's bridges, nothing else)."""
    return json.dumps({"version": 2, "ethernets": {
        name: {"match": {"macaddress": mac}, "set-name": name, "addresses": [cidr]}
        for name, mac, cidr in interfaces}}) + "\n"


def write_iso(path: str, files: dict[str, str]) -> None:
    """The seed disk at `path` (replaced whole)."""
    with tempfile.TemporaryDirectory(prefix=".seed-", dir=os.path.dirname(path)) as d:
        for name, text in files.items():
            fd = os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
        tmp = path + ".tmp"
        proc = subprocess.run(["genisoimage", "-quiet", "-output", tmp, "-volid", "cidata",
                               "-joliet", "-rock", *sorted(files)], cwd=d,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SwarmsmithError(f"writing the cloud-init seed {path} failed: "
                                  f"{proc.stderr.strip()[-300:]}")
        os.chmod(tmp, 0o600)        # it holds the VM's private host key
        os.replace(tmp, path)
