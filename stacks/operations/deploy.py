"""Plan, deploy and rm of one stack: typed options in, typed results out (the public names are
re-exported by stacks/api.py).

A deploy reads and checks its compose files once, offline (load_stack: nothing touches a
cluster before the files are known good); then connects, takes the stack lock, reads the live
state, plans, reports the plan (PlanReady), applies and watches. Progress goes to the
`on_progress` callback (stacks/events.py); nothing here prints.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from provision.engine_api.access import connect
from provision.engine_api.adapter import EngineAPI
from provision.base.errors import EXIT_BAD_INPUT, EXIT_OK, InputError, SwarmsmithError
from stacks.compose.loader import Compose
from stacks.events import (ImagePush, Notice, OperationWarning, PlanReady, ProgressCallback,
                           StepDone, UnsettledService, WatchFinished,
                           WatchProgress, WatchStarted, emit)
from stacks.plan_apply.apply import ApplyResult, apply, refuse_problems, rm_plan
from stacks.plan_apply.plan import CREATE, UNCHANGED, UPDATE, Plan, make_plan
from stacks.specs.convert import STACK_LABEL


@dataclass
class StackOptions:
    """What plan and deploy share: where the cluster is and how the files are read."""
    cluster_file: str | None = None     # None: $SWARMSMITH_CLUSTER, then ./swarmsmith.yml
    accept_new_host_keys: bool = False  # trust hosts nothing pins on first use
    env_file: str | None = None         # ${VAR} values (default: .env beside the first file)
    strict: bool = False                # refuse keys swarm ignores (build, depends_on, ...)
    prune: bool = False                 # remove what the files no longer have
    versioned_names: bool = True        # secrets/configs get a content hash in their name
    update_defaults: bool = True        # swarmsmith's rolling-update defaults (docs/rollouts.md)


@dataclass
class DeployOptions(StackOptions):
    timeout: float = 300                # seconds to wait for the services (then exit 12)
    allow_rollback: bool = False        # a rolled-back update counts as success (exit 0)
    detach: bool = False                # apply and return without watching
    lock_wait: float = 0                # seconds to wait for another run's stack lock
    lock_ttl: float | None = None       # default max(1800, 2 x timeout + 300)
    push_images: bool = False           # push images the image check finds missing, then deploy
    push_from: str | None = None        # their source: archive or image file (else local engine)
    lock_holder: object | None = None   # lock.Holder to record (default: this host and process)


@dataclass
class RmOptions:
    cluster_file: str | None = None
    accept_new_host_keys: bool = False
    timeout: float = 60                 # seconds to wait for swarm to remove the networks


@dataclass
class LoadedStack:
    """A stack's compose files, read and checked once (offline)."""
    name: str
    compose: Compose
    warnings: list              # from the files alone; node-count checks come at plan time
    versioned_names: bool = True


@dataclass
class PlanResult:
    stack: str
    plan: Plan

    @property
    def problems(self) -> list:
        return self.plan.problems

    @property
    def exit_code(self) -> int:
        return EXIT_BAD_INPUT if self.plan.problems else EXIT_OK

    def to_dict(self) -> dict:
        return self.plan.to_dict()


@dataclass
class DeployResult:
    stack: str
    plan: Plan
    applied: ApplyResult = field(default_factory=ApplyResult)
    watch: object | None = None                         # WatchReport; None: nothing watched
    changed_services: list = field(default_factory=list)
    images: dict | None = None          # redeploy: service -> name:tag@digest pinned
    not_resolved: dict | None = None    # redeploy: service -> why its image was not resolved

    @property
    def exit_code(self) -> int:
        """The watch's: 0 converged, 10 failed/paused, 11 rolled back, 12 timed out."""
        return self.watch.exit_code if self.watch is not None else EXIT_OK

    @property
    def outcomes(self) -> dict:
        """Service name -> outcome ("converged", "failed", ...) of every watched service."""
        if self.watch is None:
            return {}
        return {s.name: str(s.outcome) if s.outcome else None for s in self.watch.services}

    def to_dict(self) -> dict:
        out = {"plan": self.plan.to_dict(), "applied": self.applied.to_dict(),
               "watch": self.watch.to_dict() if self.watch is not None else None}
        if self.images is not None:
            out.update(images=self.images, not_resolved=self.not_resolved or {})
        return out


@dataclass
class RmResult:
    stack: str
    applied: ApplyResult = field(default_factory=ApplyResult)
    found: bool = False         # anything carried the stack's label

    exit_code = EXIT_OK

    def to_dict(self) -> dict:
        return self.applied.to_dict()


# --- reading the files --------------------------------------------------------------------

def load_stack(name: str, compose_files, options: StackOptions | None = None) -> LoadedStack:
    """Read, interpolate, merge and check the compose files; raises InputError (exit 2)."""
    from stacks.compose.loader import load
    from stacks.compose.validate import check_stack, validate_stack_name
    options = options or StackOptions()
    if not name:
        raise InputError("a stack name is needed: swarmsmith plan -c FILE STACK "
                         "(or deploy --dry-run -c FILE STACK)")
    validate_stack_name(name)
    compose = load(list(compose_files), env_file=options.env_file)
    warnings = check_stack(compose, stack=name, strict=options.strict,
                           versioned_objects=options.versioned_names)
    return LoadedStack(name, compose, warnings, options.versioned_names)


def _loaded(stack, compose_files, options: StackOptions) -> LoadedStack:
    return stack if isinstance(stack, LoadedStack) else load_stack(stack, compose_files, options)


# --- planning -----------------------------------------------------------------------------

# called with the desired StackSpec and the EngineAPI before planning (redeploy pins images)
DesiredHook = Callable[[object, EngineAPI], None]


def make_stack_plan(loaded: LoadedStack, engine: EngineAPI, options: StackOptions,
                    adjust: DesiredHook | None = None) -> Plan:
    """Convert with the cluster's secret naming key, add swarmsmith's update defaults (and
    `adjust`, e.g. redeploy's image pins), plan against the live state, check images."""
    from stacks.compose.validate import deadlock_warnings
    from stacks.images.check import for_plan
    from stacks.specs.convert import convert
    from stacks.specs.update_defaults import apply_update_defaults

    from provision.engine_api.adapter import schedulable
    nodes = engine.nodes()         # once: the deadlock check counts them, the image check asks them
    node_count = schedulable(nodes)
    desired = convert(loaded.compose, loaded.name, versioned_objects=loaded.versioned_names,
                      secret_key=engine.secret_naming_key)   # read only if needed
    apply_update_defaults(desired, enabled=options.update_defaults)
    if adjust is not None:
        adjust(desired, engine)
    plan = make_plan(desired, engine.current(), prune=options.prune)
    plan.warnings[:0] = loaded.warnings + deadlock_warnings(loaded.compose, node_count)
    refuse_update_deadlocks(plan, loaded.compose, loaded.name, node_count)
    for_plan(loaded.compose, desired, plan, engine, nodes)
    return plan


def refuse_update_deadlocks(plan: Plan, compose, stack: str, node_count: int) -> None:
    """An update of a service set up to deadlock is a plan problem; a create only warned."""
    from stacks.compose.validate import update_deadlocks
    risky = {f"{stack}_{name}": p for name, p in update_deadlocks(compose, node_count).items()}
    for a in plan.actions:
        if a.kind == "service" and a.action == UPDATE and a.name in risky:
            plan.problems.append(str(risky[a.name]))


def plan_stack(stack, compose_files=(), options: StackOptions | None = None, *,
               engine: EngineAPI | None = None,
               adjust: DesiredHook | None = None) -> PlanResult:
    """What a deploy would change; changes nothing. Problems are in the result (exit 2)."""
    options = options or StackOptions()
    loaded = _loaded(stack, compose_files, options)
    engine = engine or connect(options.cluster_file, accept_new_host_keys=options.accept_new_host_keys,
                               shared=True).api
    return PlanResult(loaded.name, make_stack_plan(loaded, engine, options, adjust))


# --- deploying ----------------------------------------------------------------------------

def lock_ttl(options: DeployOptions) -> float:
    return options.lock_ttl or max(1800, 2 * options.timeout + 300)


def deploy_stack(stack, compose_files=(), options: DeployOptions | None = None, *,
                 engine: EngineAPI | None = None, on_progress: ProgressCallback | None = None,
                 adjust: DesiredHook | None = None, command: str = "deploy",
                 audit_extra: Callable[[], dict] | None = None) -> DeployResult:
    """Take the stack's lock, plan, apply, then watch every changed service until it
    converged, rolled back, failed or timed out. Raises InputError (after PlanReady) when
    the plan has problems; nothing is changed then."""
    from stacks.images import push_missing as pm
    from provision.swarm.lock import SwarmLock
    options = options or DeployOptions()
    loaded = _loaded(stack, compose_files, options)    # bad files never open a connection
    pm.check_source(options.push_from)
    engine = engine or connect(options.cluster_file, accept_new_host_keys=options.accept_new_host_keys,
                               shared=True).api
    name = loaded.name

    def record(result, **fields):
        extra = audit_extra() if audit_extra else {}
        changes = result.applied.done if result else [
            f"{a.action} {a.kind} {a.name}" for a in plan.actions if a.action != UNCHANGED]
        audit_run(options.cluster_file, command, name, result.watch if result else None,
                  {"changes": changes, **extra, **fields}, on_progress, engine)

    with SwarmLock(engine, name, ttl=lock_ttl(options), wait=options.lock_wait,
                   me=options.lock_holder,
                   notify=lambda line: emit(on_progress, Notice(line))):
        plan = make_stack_plan(loaded, engine, options, adjust)   # under the lock
        if getattr(plan, "missing_images", None):
            path = _cluster_path_if_any(options.cluster_file)
            source = pm.source_of(options.push_from, options.push_images, path)
            if source and path:   # push what the image check found missing, then plan again
                pm.push_missing(plan.missing_images, source, path,
                                say=lambda m: emit(on_progress, ImagePush(m)),
                                on_progress=on_progress)
                plan = make_stack_plan(loaded, engine, options, adjust)
        emit(on_progress, PlanReady(plan))
        refuse_problems(plan)     # bad input changes nothing, not even the audit history
        started = time.monotonic()
        if plan.has_changes:    # a run killed while applying still leaves a trace
            record(None, phase="start", exit_code=None, seconds=0.0)
        try:
            result = _apply_and_watch(name, plan, engine, options, on_progress)
        except SwarmsmithError as e:
            record(None, phase="end", exit_code=e.exit_code,
                   seconds=time.monotonic() - started, error=str(e).splitlines()[0])
            raise
    if plan.has_changes or result.watch is not None or result.exit_code:
        # a run that found nothing to change or to watch is not history: cron's every-few-
        # minutes no-ops would push the real changes out of the bounded record
        record(result, phase="end", exit_code=result.exit_code,
               seconds=time.monotonic() - started)
    return result


def _cluster_path_if_any(cluster_file: str | None) -> str | None:
    from provision.base.clusters import find_cluster_file
    try:
        return find_cluster_file(cluster_file)
    except SwarmsmithError:
        return None


def _apply_and_watch(stack: str, plan: Plan, engine: EngineAPI, options: DeployOptions,
                     on_progress: ProgressCallback | None) -> DeployResult:
    from stacks.watch.in_flight import unsettled
    from stacks.watch.watcher import WatchPolicy, watch_stack

    result = DeployResult(stack, plan)
    if not plan.has_changes and not plan.problems and options.detach:
        return result
    baseline = plan.versions        # read with the plan, under the lock
    if plan.has_changes or plan.problems:
        result.applied = apply(plan, engine, on_step=lambda s: emit(on_progress, StepDone(s)))
    result.changed_services = [a.name for a in plan.of("service")
                               if a.action in (CREATE, UPDATE)]
    if options.detach:
        return result
    # unchanged services may still be moving (a killed deploy's update, a pause, missing
    # replicas): their outcome is this run's too, so "no changes" cannot hide a failing rollout
    in_flight = unsettled(engine, stack,
                          [a.name for a in plan.of("service") if a.action == UNCHANGED])
    for name, why in in_flight:
        emit(on_progress, UnsettledService(name, why))
    watched = result.changed_services + [name for name, _ in in_flight]
    if watched:
        emit(on_progress, WatchStarted(stack, list(watched)))
        try:
            result.watch = watch_stack(
                engine, stack, services=watched, baseline=baseline,
                policy=WatchPolicy(timeout=options.timeout),
                allow_rollback=options.allow_rollback,
                on_progress=None if on_progress is None else
                (lambda report: on_progress(WatchProgress(report))))
        finally:
            emit(on_progress, WatchFinished(result.watch))
    return result


def audit_run(cluster_file: str | None, command: str, stack: str, report, extra: dict,
              on_progress: ProgressCallback | None, engine: EngineAPI | None = None) -> None:
    """Records of a run (never secrets: names, outcomes, images): deploys write one with phase
    "start" before applying and one with phase "end" after, each with exit_code and seconds
    (null and 0 at the start), so an interrupted run is visible too. Kept in the swarm (the
    history every machine shares) and in the local audit.jsonl when the state folder exists."""
    from provision.base.clusters import state_path_if_any
    from stacks.operations.audit import audit_record, keep_record, live_images

    def warn(message: str) -> None:
        emit(on_progress, OperationWarning(message))

    extra = dict(extra)
    if extra.get("phase") == "end" and engine is not None:
        try:    # what runs now, with the digests swarm pinned
            extra["images"] = {**live_images(engine, stack), **extra.get("images", {})}
        except Exception as e:
            warn(f"could not read the stack's images for the audit record: {e}")
    extra = {k: round(v, 2) if isinstance(v, float) else v for k, v in extra.items()}
    rec = audit_record(command, stack, report, **extra)
    keep_record(engine, state_path_if_any(cluster_file),
                rec, warn)


# --- removing -----------------------------------------------------------------------------

def _wait_gone(engine: EngineAPI, stack: str, timeout: float, clock=None, sleep=None) -> list:
    """Swarm removes a stack's networks only after its tasks are gone: wait (bounded), so a
    deploy right after `rm` does not find the old network half-removed."""
    import time
    clock, sleep = clock or time.monotonic, sleep or time.sleep
    deadline = clock() + timeout
    delay = 0.2
    while True:
        cur = engine.current()
        left = [f"service {s['Spec']['Name']}" for s in cur.services
                if (s["Spec"].get("Labels") or {}).get(STACK_LABEL) == stack]
        left += [f"network {n['Name']}" for n in cur.networks
                 if (n.get("Labels") or {}).get(STACK_LABEL) == stack]
        if not left or clock() >= deadline:
            return left
        sleep(delay)
        delay = min(delay * 1.5, 2.0)


def rm_stack(stack: str, options: RmOptions | None = None, *,
             engine: EngineAPI | None = None,
             on_progress: ProgressCallback | None = None) -> RmResult:
    """Remove everything carrying the stack's label (what `docker stack rm` removes)."""
    from stacks.compose.validate import validate_stack_name
    options = options or RmOptions()
    validate_stack_name(stack)
    engine = engine or connect(options.cluster_file, accept_new_host_keys=options.accept_new_host_keys,
                               shared=True).api
    plan = rm_plan(engine.current(), stack)
    if not plan.actions:
        return RmResult(stack)
    applied = apply(plan, engine, on_step=lambda s: emit(on_progress, StepDone(s)),
                    network_release_timeout=options.timeout)
    leftover = _wait_gone(engine, stack, timeout=options.timeout)
    if leftover:
        applied.warnings.append("still being removed by swarm: " + ", ".join(leftover))
    return RmResult(stack, applied, found=True)
