"""`provider: static` — existing hosts listed in the cluster file. Creates and destroys nothing."""
from __future__ import annotations

from ..base.errors import SwarmsmithError
from ..base.hosts import Host, WantedHost


class StaticProvider:
    name = "static"
    prune = False       # never: the machines are not ours

    def __init__(self, cluster, settings: dict | None = None):
        self.cluster = cluster

    @property
    def state(self) -> dict:
        return {}       # nothing created, nothing to remember

    def existing(self) -> list[Host]:
        # the machines exist already: a plan reads them as up does (and tells the truth)
        return self.ensure(self.cluster.wanted_hosts())[0]

    def plan(self, wanted: list[WantedHost]) -> list[str]:
        return []

    def ensure(self, wanted: list[WantedHost], progress=None) -> tuple[list[Host], list[str]]:
        by_name = {h["name"]: h for h in self.cluster.static_hosts}
        hosts = []
        for w in wanted:
            h = by_name.get(w.name)
            if h is None:
                raise SwarmsmithError(f"host {w.name} is not listed under static.hosts")
            hosts.append(Host(name=w.name, public_address=h["address"],
                              private_address=h.get("private_address"),
                              user=h.get("user") or self.cluster.ssh_user,
                              key_path=h.get("key") or self.cluster.ssh_key,
                              port=h.get("port") or self.cluster.ssh_port, role=w.role))
        return hosts, []

    def destroy(self, progress=None) -> list[str]:
        return []   # we never delete machines we did not create
