"""Helpers shared by tests/test_do_*.py: an SSH key pair on disk, a provider factory (the clock
is tests/fakes/clock.py's)."""
from __future__ import annotations

import base64
import os


def write_public_key(directory, name: str = "id_ed25519", comment: str = "me@laptop",
                     seed: bytes = b"k") -> str:
    """An ed25519-shaped public key (never used for a real login) and an empty private file."""
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + (seed * 32)[:32]
    line = f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}".strip()
    pub = os.path.join(str(directory), name + ".pub")
    with open(pub, "w") as f:
        f.write(line + "\n")
    with open(os.path.join(str(directory), name), "w") as f:
        f.write("not a real private key\n")
    return pub


def settings(pub_key_path: str, **overrides) -> dict:
    base = {"region": "fra1", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64",
            "ssh_key": pub_key_path, "poll_interval": 2, "wait_timeout": 120}
    base.update(overrides)
    return base
