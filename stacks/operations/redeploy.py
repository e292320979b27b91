"""`swarmsmith redeploy`: deploy again from cron or CI, rolling out new images
pushed under the same tag.

What it adds to `deploy` (stacks/operations/deploy.py deploy_stack, which it calls):
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

from dataclasses import dataclass

from provision.base.errors import SwarmsmithError
from stacks.events import ImageResolved, ProgressCallback, emit
from stacks.images.registry import RegistryError, parse_reference
from stacks.operations.deploy import (DeployOptions, DeployResult, PlanResult, deploy_stack,
                                      plan_stack)

RESOLVE_MODES = ("registry", "always", "never")


@dataclass
class RedeployOptions(DeployOptions):
    lock_wait: float = 60               # cron and CI runs queue behind each other
    resolve_image: str = "registry"     # registry | always (Docker Hub too) | never


class ImagePinner:
    """The deploy's DesiredHook for redeploy: pins images to the digests their tags resolve to."""

    def __init__(self, mode: str = "registry", *, resolve=None,
                 on_progress: ProgressCallback | None = None):
        # resolve(ImageRef) -> digest; bound to the cluster's engine when not given
        self.mode, self.resolve, self.on_progress = mode, resolve, on_progress
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
        """Resolve through the manager's daemon (provision/engine_api/adapter.py distribution_digest)."""
        if self.resolve is None:
            self.resolve = lambda ref: engine.distribution_digest(f"{ref.name()}:{ref.tag}")

    def __call__(self, desired, engine=None) -> None:
        if engine is not None:
            self.bind(engine)
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
            emit(self.on_progress, ImageResolved(name, f"{ref.name()}:{ref.tag}", cache[key]))


def redeploy_stack(stack, compose_files=(), options: RedeployOptions | None = None, *,
                   engine=None, on_progress: ProgressCallback | None = None,
                   resolve=None, command: str = "redeploy",
                   audit_extra=None) -> DeployResult:
    """deploy_stack with image tags re-resolved to digests, as `command` ("redeploy"; the
    agent's runs say "agent") in the audit trail, with `audit_extra()`'s fields; the result
    carries the pins (images) and what was not resolved."""
    options = options or RedeployOptions()
    pinner = ImagePinner(options.resolve_image, resolve=resolve, on_progress=on_progress)
    result = deploy_stack(stack, compose_files, options, engine=engine, on_progress=on_progress,
                          adjust=pinner, command=command,
                          audit_extra=lambda: {**(audit_extra() if audit_extra else {}),
                                               "images": pinner.pins})
    result.images, result.not_resolved = pinner.pins, pinner.skipped
    return result


def plan_redeploy_stack(stack, compose_files=(), options: RedeployOptions | None = None, *,
                        engine=None, on_progress: ProgressCallback | None = None,
                        resolve=None) -> PlanResult:
    """What redeploy would change (tags resolved to digests now); changes nothing."""
    options = options or RedeployOptions()
    pinner = ImagePinner(options.resolve_image, resolve=resolve, on_progress=on_progress)
    return plan_stack(stack, compose_files, options, engine=engine, adjust=pinner)
