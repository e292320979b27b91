"""Roll services of a stack back to their previous spec, then watch them.

docker-py 7.1's `update_service` has no rollback parameter, so the request is
made the way the docker CLI makes it: POST /services/{id}/update with
`?version=N&rollback=previous` and the current spec as body; swarm swaps in
PreviousSpec, sets UpdateStatus to rollback_started and rolls the tasks back
with the service's RollbackConfig.  Only services with a PreviousSpec that
differs from their spec, and whose last change was not itself a rollback, are
touched (after a rollback, PreviousSpec is the spec rolled back from).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from provision.base.errors import EXIT_OK, InputError
from stacks.events import ProgressCallback, WatchFinished, WatchProgress, WatchStarted, emit
from stacks.watch.outcomes import WatchReport
from stacks.watch.watcher import _short, stack_services, watch_services


@dataclass
class RollbackResult:
    requested: list[str] = field(default_factory=list)      # service names rolled back
    skipped: dict[str, str] = field(default_factory=dict)   # name -> why not
    report: WatchReport | None = None

    @property
    def exit_code(self) -> int:
        return self.report.exit_code if self.report else EXIT_OK

    def to_dict(self) -> dict:
        return {"requested": self.requested, "skipped": self.skipped,
                "watch": self.report.to_dict() if self.report else None,
                "exit_code": self.exit_code}


def _same(a, b) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def plan_rollback(found: list[dict], stack: str, names=None) -> tuple[list[dict], dict[str, str]]:
    """Pick the services to roll back: (services, {name: reason skipped})."""
    wanted = set(names or ())
    chosen, skipped = [], {}
    seen = set()
    for s in sorted(found, key=lambda s: s["Spec"]["Name"]):
        name = s["Spec"]["Name"]
        if wanted and not {name, _short(name, stack)} & wanted:
            continue
        seen |= {name, _short(name, stack)}
        prev = s.get("PreviousSpec")
        # after a rollback swarm keeps the spec it rolled back from as the previous one: a
        # second rollback would re-apply exactly what was just rolled back
        last = (s.get("UpdateStatus") or {}).get("State") or ""
        if not prev:
            skipped[name] = "no previous spec"
        elif _same(prev, s.get("Spec")):
            skipped[name] = "previous spec is the same as the current one"
        elif last == "rollback_started":
            skipped[name] = "a rollback is already under way"
        elif last.startswith("rollback_"):
            skipped[name] = ("already rolled back (its previous spec is the one it was rolled "
                             "back from; a deploy changes it again)")
        else:
            chosen.append(s)
    missing = sorted(wanted - seen)
    if missing:
        raise InputError(f"stack {stack}: no service named {', '.join(missing)}")
    return chosen, skipped


def rollback_services(engine, stack: str, services=None, *, watch: bool = True,
                      on_progress: ProgressCallback | None = None,
                      **watch_kwargs) -> RollbackResult:
    """Roll back `services` of `stack` (names short or full; default: every service
    that has a previous spec) and watch them.  A completed rollback is success
    here (allow_rollback=True): exit 0; paused or failed 10; timed out 12.
    `engine`: the EngineAPI adapter (requests carry the previous image's registry
    credentials); on_progress gets the watch events (stacks/events.py); watch_kwargs go to
    watch_services (policy, log_fetcher, clock, sleep).
    """
    chosen, skipped = plan_rollback(stack_services(engine, stack), stack, services)
    result = RollbackResult(skipped=skipped)
    for s in chosen:
        prev_image = ((s.get("PreviousSpec") or {}).get("TaskTemplate") or {}).get(
            "ContainerSpec", {}).get("Image", "")
        engine.rollback_service(s, engine.auth_headers(prev_image))
        result.requested.append(s["Spec"]["Name"])
    if watch and chosen:
        watch_kwargs.setdefault("allow_rollback", True)
        emit(on_progress, WatchStarted(stack, list(result.requested)))
        try:
            result.report = watch_services(
                engine, [s["ID"] for s in chosen], stack=stack,
                on_progress=None if on_progress is None else
                (lambda report: on_progress(WatchProgress(report))), **watch_kwargs)
        finally:
            emit(on_progress, WatchFinished(result.report))
    return result


@dataclass
class RollbackOptions:
    cluster_file: str | None = None
    accept_new_host_keys: bool = False
    services: tuple = ()            # short or full names; empty: every service with a previous spec
    timeout: float = 300            # seconds to wait for the rollback to finish (then exit 12)
    lock_wait: float = 0
    lock_ttl: float | None = None   # default max(1800, 2 x timeout + 300)


def rollback_stack(stack: str, options: RollbackOptions | None = None, *, engine=None,
                   on_progress: ProgressCallback | None = None) -> RollbackResult:
    """Roll services of `stack` back under the stack's lock, watch them, and write the
    audit line."""
    import time

    from provision.engine_api.access import connect
    from stacks.compose.validate import validate_stack_name
    from stacks.events import Notice
    from stacks.operations.deploy import audit_run
    from provision.swarm.lock import SwarmLock
    from stacks.watch.watcher import WatchPolicy
    options = options or RollbackOptions()
    started = time.monotonic()
    validate_stack_name(stack)
    engine = engine or connect(options.cluster_file, accept_new_host_keys=options.accept_new_host_keys,
                               shared=True).api
    ttl = options.lock_ttl or max(1800, 2 * options.timeout + 300)
    with SwarmLock(engine, stack, ttl=ttl, wait=options.lock_wait,
                   notify=lambda line: emit(on_progress, Notice(line))):
        result = rollback_services(engine, stack, list(options.services) or None,
                                   policy=WatchPolicy(timeout=options.timeout),
                                   on_progress=on_progress)
    audit_run(options.cluster_file, "rollback", stack, result.report,
              {"requested": result.requested, "skipped": result.skipped, "phase": "end",
               "exit_code": result.exit_code, "seconds": time.monotonic() - started},
              on_progress, engine)
    return result
