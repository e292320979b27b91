"""`provider: lab` — the embedded default: cluster hosts are lab hosts on this machine."""
from __future__ import annotations

from ...base.hosts import Host, WantedHost
from .lab import Lab


class LabProvider:
    name = "lab"
    prune = False       # lab hosts of other names are left alone

    def __init__(self, cluster_name: str, settings: dict | None = None):
        self.lab_name = (settings or {}).get("name") or cluster_name
        self.image = (settings or {}).get("image", "default")
        self.vm = bool((settings or {}).get("vm", False))
        self.engine_preinstalled = (settings or {}).get("engine_preinstalled", False)
        self.lab = Lab(self.lab_name)

    @property
    def state(self) -> dict:
        return {}       # the lab keeps its own state file

    def plan(self, wanted: list[WantedHost]) -> list[str]:
        from . import image
        out = []
        if not image.ready(self.image):
            out.append(f"image {self.image}: build from Debian packages (about half a minute)")
        if self.vm:
            from . import vmimage
            if not vmimage.image().ready:
                out.append("VM base image: build from Debian packages (about a minute)")
        existing = {h.name for h in self.lab.hosts()}
        kind = "VM lab host" if self.vm else "lab host"
        return out + [f"host {w.name}: create {kind}" for w in wanted if w.name not in existing]

    def ensure(self, wanted: list[WantedHost], progress=None) -> tuple[list[Host], list[str]]:
        hosts, changes = self.lab.up([w.name for w in wanted], progress=progress, image=self.image,
                                     vm=self.vm, engine_preinstalled=self.engine_preinstalled)
        for h, w in zip(hosts, wanted):
            h.role = w.role
        return hosts, changes

    def existing(self) -> list[Host]:
        return self.lab.hosts()

    def destroy(self, progress=None) -> list[str]:
        return self.lab.down()
