"""Resolve image tags to manifest digests with the registry HTTP API v2.

`HEAD /v2/<repository>/manifests/<tag>` with the manifest media types in
Accept answers with the `Docker-Content-Digest` header: the digest that
`name:tag@sha256:...` pins and that every node then pulls (and verifies).
Anonymous bearer tokens are fetched when the registry asks for them (the
`WWW-Authenticate: Bearer realm=...` challenge); registry credentials are not
supported yet.  Plain HTTP only for registries named in `insecure` (like the
daemon's insecure-registries); everything else is HTTPS.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from provision.errors import SwarmsmithError

DOCKER_HUB = "docker.io"
_HUB_API = "registry-1.docker.io"
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


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


def _bearer_token(session, challenge: str, timeout: float) -> str | None:
    kind, _, params = challenge.partition(" ")
    if kind.lower() != "bearer":
        return None
    fields = dict(_CHALLENGE_RE.findall(params))
    realm = fields.pop("realm", None)
    if not realm:
        return None
    resp = session.get(realm, params=fields, timeout=timeout)
    if resp.status_code != 200:
        return None
    body = resp.json()
    return body.get("token") or body.get("access_token")


def resolve_digest(ref: str | ImageRef, *, insecure=(), timeout: float = 10.0,
                   session=None) -> str:
    """The manifest digest behind `ref`'s tag now ("sha256:..."); raises RegistryError."""
    import requests   # lazy: keeps `swarmsmith --help` fast

    img = parse_reference(ref) if isinstance(ref, str) else ref
    host = _HUB_API if img.registry == DOCKER_HUB else img.registry
    scheme = "http" if img.registry in set(insecure) else "https"
    url = f"{scheme}://{host}/v2/{img.repository}/manifests/{img.tag or 'latest'}"
    headers = {"Accept": ", ".join(MANIFEST_TYPES)}
    s = session or requests.Session()
    try:
        resp = s.head(url, headers=headers, timeout=timeout, allow_redirects=True)
        if resp.status_code == 401:
            token = _bearer_token(s, resp.headers.get("WWW-Authenticate", ""), timeout)
            if token:
                resp = s.head(url, headers={**headers, "Authorization": f"Bearer {token}"},
                              timeout=timeout, allow_redirects=True)
    except requests.RequestException as exc:
        raise RegistryError(f"image {img.name()}:{img.tag}: registry {img.registry} "
                            f"did not answer: {type(exc).__name__}") from exc
    if resp.status_code == 404:
        raise RegistryError(f"image {img.name()}:{img.tag}: no such tag in {img.registry}")
    if resp.status_code in (401, 403):
        raise RegistryError(f"image {img.name()}:{img.tag}: registry {img.registry} refused "
                            f"access (HTTP {resp.status_code}; credentials are not supported yet)")
    if resp.status_code != 200:
        raise RegistryError(f"image {img.name()}:{img.tag}: registry {img.registry} answered "
                            f"HTTP {resp.status_code}")
    digest = resp.headers.get("Docker-Content-Digest", "")
    if not DIGEST_RE.match(digest):
        raise RegistryError(f"image {img.name()}:{img.tag}: registry {img.registry} gave no "
                            "usable Docker-Content-Digest")
    return digest
