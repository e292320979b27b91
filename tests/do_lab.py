"""The DigitalOcean emulator's droplets as real lab hosts (test infrastructure).

    hosts = LabDroplets("doemu", public_key_line)
    emu = DOEmulator(token, host_factory=hosts.factory, host_destroyer=hosts.destroyer)

Each droplet the emulator creates becomes a lab host of ONE lab (named here, e.g. `doemu`) with the
droplet's name; its (public, private) lab addresses become the droplet's `networks.v4`. The host's
sshd then accepts the cluster's key (the DO `ssh_key` setting, given here: the emulator does not
hand the request's ssh_keys to the factory) beside the lab's own key. Deleting the droplet removes
the host; `close()` removes the whole lab.

The emulator runs the factory in background threads, one per droplet. Lab.up/remove_hosts read
the lab's state when the Lab object is made and write it back later, so two at once could hand out
the same slot: calls are serialised here (a host takes about a second to make).
"""
from __future__ import annotations

import os
import threading

from provision.hosts.lab.layout import HostLayout
from provision.hosts.lab.lab import Lab



def _authorize_key(h: HostLayout, public_key: str) -> bool:
    """Let `public_key` ("type base64 [comment]") log in as root too, beside the lab's own key.
    Idempotent (matched by type and blob); False when it was already there. A repair rewrites
    the file with the lab key only: authorize again after one."""
    path = os.path.join(h.dir, "etc-ssh", "authorized_keys")
    wanted = public_key.split()[:2]
    if len(wanted) != 2:
        raise ValueError("expected an OpenSSH public key line")
    with open(path) as f:
        text = f.read()
    if any(line.split()[:2] == wanted for line in text.splitlines()):
        return False
    with open(path, "w") as f:
        f.write(text + ("" if not text or text.endswith("\n") else "\n")
                + public_key.strip() + "\n")
    os.chmod(path, 0o600)
    return True

class LabDroplets:
    def __init__(self, lab_name: str, public_key: str):
        if not lab_name.startswith("do"):
            raise ValueError("lab names for the DigitalOcean tests start with 'do'")
        self.lab_name = lab_name
        self.public_key = public_key.strip()
        self._lock = threading.Lock()
        self.made: list[str] = []           # every host the factory made, in order
        self.removed: list[str] = []

    def factory(self, name: str, index: int) -> tuple[str, str]:
        with self._lock:
            lab = Lab(self.lab_name)
            hosts, _ = lab.up([name])
            layout = next(h for h in lab.host_layouts() if h.name == name)
            _authorize_key(layout, self.public_key)
            self.made.append(name)
        return hosts[0].public_address, hosts[0].private_address

    def destroyer(self, name: str) -> None:
        with self._lock:
            lab = Lab(self.lab_name)
            if lab.exists:
                lab.remove_hosts([name])
            self.removed.append(name)

    def hosts(self) -> list[str]:
        """Names of the lab's hosts that exist now."""
        with self._lock:
            return sorted(h.name for h in Lab(self.lab_name).hosts())

    def close(self) -> list[str]:
        """Remove the lab and everything in it (only this lab)."""
        with self._lock:
            return Lab(self.lab_name).down()
