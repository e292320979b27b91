"""Pick the provider module named in the cluster file."""
from __future__ import annotations


def make(cluster, state: dict, *, prune: bool = False, on_state=None):
    """`state`: the inventory's `provider_state` (what the provider created earlier); `prune`:
    remove machines the cluster file no longer asks for (digitalocean; `up --prune`);
    `on_state(state)`: persist the provider's state now (digitalocean records names before it
    sends their create, so a killed run cannot make them twice)."""
    if cluster.provider == "lab":
        from .lab.provider import LabProvider
        return LabProvider(cluster.name, cluster.provider_settings)
    if cluster.provider == "static":
        from .static import StaticProvider
        return StaticProvider(cluster)
    if cluster.provider == "digitalocean":
        from .digitalocean import DigitalOceanProvider
        return DigitalOceanProvider(cluster.name, cluster.provider_settings, state or {},
                                    prune=prune, file=cluster.path, on_state=on_state)
    raise ValueError(cluster.provider)
