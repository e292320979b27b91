"""Image references: registry, repository, tag, digest (what `redeploy` pins).

Digests themselves come from the manager's daemon (provision/engine_api/adapter.py
distribution_digest), which talks to the registry with the deploy's
credentials and its own insecure-registries list.
"""
from __future__ import annotations

from dataclasses import dataclass

from provision.base.errors import SwarmsmithError

DOCKER_HUB = "docker.io"


@dataclass(frozen=True)
class ImageRef:
    registry: str     # "docker.io", "198.18.3.2:5000", "ghcr.io"
    repository: str   # "library/busybox", "team/app"
    tag: str | None
    digest: str | None

    @property
    def explicit_registry(self) -> bool:
        return self.registry != DOCKER_HUB

    def name(self) -> str:
        """The familiar name (what the compose file would say), without tag or digest."""
        if self.registry == DOCKER_HUB:
            repo = self.repository
            return repo[len("library/"):] if repo.startswith("library/") else repo
        return f"{self.registry}/{self.repository}"

    def pinned(self, digest: str) -> str:
        return f"{self.name()}:{self.tag or 'latest'}@{digest}"


class RegistryError(SwarmsmithError):
    pass


def parse_reference(ref: str) -> ImageRef:
    rest, digest = ref, None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, remainder
    else:
        registry, path = DOCKER_HUB, rest
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path or path != path.lower():
        raise RegistryError(f"image {ref!r}: not a valid reference")
    return ImageRef(registry, path, tag if tag or digest else "latest", digest)
