"""The record every provider yields for a machine, and the provider interface."""
from __future__ import annotations

from dataclasses import dataclass, field, asdict
from typing import Protocol

from inventory.clusterfile import WantedHost  # noqa: F401  (what the cluster file asks for)


@dataclass
class Host:
    name: str
    public_address: str
    private_address: str | None = None
    user: str = "root"
    key_path: str = ""
    port: int = 22
    # "ssh-ed25519 AAAA…" when the provider knows the key out of band (lab); else "" and
    # the key is pinned on first contact.
    host_key: str = ""
    role: str = ""                 # "manager" | "worker", set by the cluster plan
    # daemon.json keys the provider needs (lab: cgroup-parent); user settings win.
    engine_defaults: dict = field(default_factory=dict)
    # apt proxy the host needs to reach packages (lab hosts with their own root); the cluster
    # file's engine.apt_proxy wins
    apt_proxy: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class Provider(Protocol):
    """One module per provider. All methods are idempotent. `progress`, where taken, is a
    (host, message) callable for long steps."""

    name: str
    prune: bool     # ensure() also destroys machines the cluster file no longer asks for

    @property
    def state(self) -> dict:
        """What the provider created and must find again (kept in the inventory as
        `provider_state`, handed back to the next run); {} when it keeps nothing."""

    def existing(self) -> list[Host]:
        """Hosts that exist now, which `plan` connects to and reads as `up` would."""

    def plan(self, wanted: list[WantedHost]) -> list[str]:
        """Human-readable changes ensure() would make; empty when nothing to do."""

    def ensure(self, wanted: list[WantedHost], progress=None) -> tuple[list[Host], list[str]]:
        """Create what is missing, reuse what exists; return hosts (in `wanted` order) and changes."""

    def destroy(self, progress=None) -> list[str]:
        """Remove everything this provider created for the cluster; return changes."""
