"""A Linux bridge on the machine with one IPv4 address, made or mended in place: each lab's two
bridges, and the apt proxy's own (a bridge with no port holds its address)."""
from __future__ import annotations

from ...base.errors import SwarmsmithError
from ...base.localrun import ok, run


def ensure_bridge(name: str, address: str) -> bool:
    """`name` up with `address` ("198.18.1.1/24"); True when the bridge had to be created. One
    look for the usual case (up, with its address): a no-op `up` pays one command, not three."""
    have = run(["ip", "-o", "-4", "addr", "show", "dev", name, "up"], check=False)
    if have.returncode == 0 and f" {address} " in have.stdout.decode(errors="replace"):
        return False
    created = False
    if not ok(["ip", "link", "show", name]):
        proc = run(["ip", "link", "add", name, "type", "bridge"], check=False)
        if proc.returncode != 0:
            raise SwarmsmithError(f"cannot create the Linux bridge {name} (kernel lacks bridge "
                                  f"support?): {proc.stderr.decode().strip()}")
        created = True
    run(["ip", "addr", "replace", address, "dev", name])
    run(["ip", "link", "set", name, "up"])
    return created
