"""Progress events of stack operations, for the `on_progress` callback of stacks/api.py.

The command line renders them (plan text and applied steps on stdout, the watch table on
stderr); the API itself never prints.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from provision.base.progress import (HostProgress, Notice, OperationWarning, ProgressCallback,
                                     TransferProgress, emit)

__all__ = ["HostProgress", "ImagePush", "ImageResolved", "Notice", "OperationWarning", "PlanReady",
           "ProgressCallback", "StepDone", "TransferProgress", "UnsettledService",
           "WatchFinished", "WatchProgress", "WatchStarted", "emit"]


@dataclass(frozen=True)
class PlanReady:
    """The plan of a deploy, computed under the stack lock, before anything is applied."""
    plan: object            # stacks.plan_apply.plan.Plan


@dataclass(frozen=True)
class ImageResolved:
    """redeploy: an image tag resolved to the digest it points at now."""
    service: str
    image: str              # name:tag as written
    digest: str


@dataclass(frozen=True)
class StepDone:
    """One change applied to the swarm ("create service web_app", "remove network ...")."""
    text: str


@dataclass(frozen=True)
class ImagePush:
    """deploy --push-images: what is being pushed where ("saving ...", "pushing ...")."""
    message: str


@dataclass(frozen=True)
class UnsettledService:
    """A service this deploy does not change that is still moving; it is watched too."""
    service: str
    reason: str


@dataclass(frozen=True)
class WatchStarted:
    stack: str
    services: list = field(default_factory=list)


@dataclass(frozen=True)
class WatchProgress:
    """A poll of the watch: every watched service with its counts and outcome so far."""
    report: object          # stacks.watch.outcomes.WatchReport


@dataclass(frozen=True)
class WatchFinished:
    """Sent after WatchStarted whatever happened (also when the watch raised)."""
    report: object | None = None
