"""`swarmsmith redeploy`: deploy again from cron or CI, rolling out new images
pushed under the same tag.

What it adds to `deploy` (stacks/operations/deploy.py run_deploy, which it calls):
- every image whose name carries a registry host (`reg.example:5000/app:1`;
  `--resolve-image always` adds Docker Hub images) is resolved to the digest
  its tag points at now, by the manager's daemon (Engine API distribution
  inspect: the same registry credentials as the deploy, and the daemon's own
  insecure-registries list), and the service spec is pinned to
  `name:tag@sha256:...`, so the plan shows `old digest -> new digest` and swarm
  rolls the service exactly when the digest moved;
- the stack lock is waited for up to `--lock-wait` seconds (default 60), then
  exit 4; `--lock-ttl` bounds how long a killed run's lock blocks others;
- nothing changed -> "no changes", exit 0, no service touched;
- one JSON line per run in the audit trail (command "redeploy", the images
  resolved, the changes made, the outcome per service; no secret values).
"""
from __future__ import annotations

import sys

from provision.errors import SwarmsmithError
from stacks.images.registry import RegistryError, parse_reference

RESOLVE_MODES = ("registry", "always", "never")


class ImagePinner:
    """Called with the desired StackSpec (stacks/operations/deploy.py adjust_desired); pins images."""

    def __init__(self, mode: str = "registry", *, resolve=None, out=None):
        # resolve(ImageRef) -> digest; bound to the cluster's engine when not given
        self.mode, self.resolve, self.out = mode, resolve, out
        self.pins: dict[str, str] = {}      # service -> name:tag@digest
        self.skipped: dict[str, str] = {}   # service -> why not resolved

    def wants(self, ref) -> str | None:
        if ref.digest:
            return "pinned to a digest in the compose file"
        if self.mode == "never":
            return "--resolve-image never"
        if self.mode == "registry" and not ref.explicit_registry:
            return "no registry host in the image name (use --resolve-image always)"
        return None

    def bind(self, engine) -> None:
        """Resolve through the manager's daemon (provision/engine_api.py distribution_digest)."""
        if self.resolve is None:
            self.resolve = lambda ref: engine.distribution_digest(f"{ref.name()}:{ref.tag}")

    def __call__(self, desired) -> None:
        cache: dict[tuple, str] = {}
        for name, spec in sorted(desired.services.items()):
            cs = spec["TaskTemplate"]["ContainerSpec"]
            ref = parse_reference(cs["Image"])
            why = self.wants(ref)
            if why:
                self.skipped[name] = why
                continue
            key = (ref.registry, ref.repository, ref.tag)
            if key not in cache:
                try:
                    cache[key] = self.resolve(ref)
                except SwarmsmithError as exc:
                    err = RegistryError(f"service {name}: {exc}; nothing was changed")
                    err.exit_code = exc.exit_code     # bad input stays exit 2
                    raise err from exc
            cs["Image"] = ref.pinned(cache[key])
            self.pins[name] = cs["Image"]
            if self.out is not None:
                print(f"  image {name}: {ref.name()}:{ref.tag} is {cache[key]}", file=self.out)


def run_redeploy(args, *, engine=None, out=sys.stdout, resolve=None) -> int:
    from stacks.operations.deploy import run_deploy
    as_json = getattr(args, "json", False)
    pinner = ImagePinner(getattr(args, "resolve_image", None) or "registry",
                         resolve=resolve, out=None if as_json else out)
    args.image_resolver = pinner
    args.audit_extra = {"images": pinner.pins}
    args.extra_json = {"images": pinner.pins, "not_resolved": pinner.skipped}
    return run_deploy(args, engine=engine, out=out, command="redeploy")
