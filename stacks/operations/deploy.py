"""Deploy, plan and rm for the command line.

run_* functions: load + validate + convert offline (nothing touches a cluster
before the files are known good), then connect, read the live state, plan,
print, and (deploy only) apply.
"""
from __future__ import annotations

import json
import sys
import time

from provision.errors import InputError, SwarmsmithError
from stacks.specs.convert import STACK_LABEL, convert
from provision.engine_api import EngineAPI
from stacks.plan_apply.plan import CREATE, UNCHANGED, UPDATE, Plan, make_plan
from stacks.plan_apply.apply import ApplyResult, apply, rm_plan


def cluster_engine(args) -> EngineAPI:
    from inventory.clusterfile import find          # lazy: docker, paramiko behind it
    from provision.dockerapi import cluster_client
    from provision.registry_auth import Credentials
    path = getattr(args, "cluster_file", None) or find(getattr(args, "cluster", None))
    return EngineAPI(cluster_client(path, getattr(args, "accept_new_host_keys", False)),
                     credentials=Credentials.for_cluster(path))


def _stack_name(args) -> str:
    stack = getattr(args, "stack", None)
    if not stack:
        raise InputError("a stack name is needed: swarmsmith plan -c FILE STACK "
                         "(or deploy --dry-run -c FILE STACK)")
    return stack


def prepare(args, node_count: int | None = None, secret_key: bytes | None = None):
    """(compose, warnings, desired StackSpec) from the files; raises InputError.
    Without secret_key (the offline pass) secret names are not the cluster's."""
    from stacks.compose.loader import load
    from stacks.compose.validate import validate, validate_stack_name
    validate_stack_name(_stack_name(args))
    compose = load(args.compose_files, env_file=getattr(args, "env_file", None))
    versioned = not getattr(args, "no_versioned_names", False)
    warnings = validate(compose, stack=args.stack, strict=getattr(args, "strict", False),
                        node_count=node_count,
                        versioned_objects=versioned)
    return compose, warnings, convert(compose, args.stack, versioned_objects=versioned,
                                      secret_key=secret_key)


def plan_for(args, engine: EngineAPI | None) -> tuple[Plan, EngineAPI]:
    prepare(args)  # offline checks first: bad files never open a connection
    engine = engine or cluster_engine(args)
    naming_key = getattr(engine, "secret_naming_key", None)   # test fakes may have none
    node_count = engine.node_count()
    compose, warnings, desired = prepare(args, node_count=node_count,
                                         secret_key=naming_key() if naming_key else None)
    resolver = getattr(args, "image_resolver", None)
    if hasattr(resolver, "bind"):
        resolver.bind(engine)
    adjust_desired(args, desired)
    plan = make_plan(desired, engine.current(), prune=getattr(args, "prune", False))
    plan.warnings[:0] = warnings
    refuse_update_deadlocks(plan, compose, args.stack, node_count)
    from stacks.images.check import for_plan
    for_plan(args, compose, desired, plan, engine)  # images on the nodes (issue 5 item 7)
    return plan, engine


def refuse_update_deadlocks(plan: Plan, compose, stack: str, node_count: int) -> None:
    """An update of a service set up to deadlock is a plan problem; a create only warned."""
    from stacks.compose.validate import update_deadlocks
    risky = {f"{stack}_{name}": p for name, p in update_deadlocks(compose, node_count).items()}
    for a in plan.actions:
        if a.kind == "service" and a.action == UPDATE and a.name in risky:
            plan.problems.append(str(risky[a.name]))


def _print_plan(plan: Plan, args, out) -> None:
    if getattr(args, "json", False):
        return
    from stacks.plan_apply.plan_render import render_text
    print(render_text(plan, show_unchanged=True), file=out)


def run_plan(args, *, engine: EngineAPI | None = None, out=sys.stdout) -> int:
    plan, engine = plan_for(args, engine)
    if getattr(args, "json", False):
        json.dump(plan.to_dict(), out, indent=2)
        out.write("\n")
    else:
        _print_plan(plan, args, out)
    if plan.problems:
        raise InputError("the plan has problems; nothing was changed:\n  "
                         + "\n  ".join(plan.problems))
    return 0


def adjust_desired(args, desired) -> None:
    """swarmsmith's additions to the converted specs, before planning (issue 6):
    rolling-update defaults (stacks/update_defaults.py; off with
    --no-update-defaults) and, for redeploy, images pinned to the digests their
    tags resolve to now (args.image_resolver, see stacks/redeploy.py)."""
    from stacks.specs.update_defaults import apply_update_defaults
    apply_update_defaults(desired, enabled=not getattr(args, "no_update_defaults", False))
    resolver = getattr(args, "image_resolver", None)
    if resolver is not None:
        resolver(desired)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def lock_ttl(args, timeout: float) -> float:
    return getattr(args, "lock_ttl", None) or max(1800, 2 * timeout + 300)


def run_deploy(args, *, engine: EngineAPI | None = None, out=sys.stdout,
               command: str = "deploy") -> int:
    """Take the stack's lock, plan, apply, then watch every changed service until it
    converged, rolled back, failed or timed out. The exit code is the watch's."""
    if getattr(args, "dry_run", False):
        return run_plan(args, engine=engine, out=out)
    from stacks.operations.lock import SwarmLock

    prepare(args)  # offline checks first: bad files never open a connection (nor the lock)
    from stacks.images import push_missing as pm
    pm.check_source(getattr(args, "push_from", None))
    engine = engine or cluster_engine(args)
    timeout = getattr(args, "timeout", None) or 300
    with SwarmLock(engine.api, args.stack, ttl=lock_ttl(args, timeout),
                   wait=getattr(args, "lock_wait", 0) or 0, notify=_say):
        plan, engine = plan_for(args, engine)   # planned under the lock: nobody moves it
        missing = getattr(plan, "missing_images", None)
        if missing:
            path = _cluster_path(args)
            source = pm.source_of(args, path)
            if source and path:   # push what the image check found missing, then plan again
                quiet = getattr(args, "json", False)
                from provision.image_commands import ProgressPrinter
                pm.push_missing(missing, source, path, say=None if quiet else _say,
                                progress=None if quiet else ProgressPrinter())
                plan, engine = plan_for(args, engine)
        _print_plan(plan, args, out)
        started = time.monotonic()
        if plan.has_changes:    # a run killed while applying still leaves a trace
            _audit(args, plan, None, None, command, engine, phase="start", exit_code=None, seconds=0.0)
        try:
            result, report, changed = _apply_and_watch(args, plan, engine, out, timeout)
        except SwarmsmithError as e:
            _audit(args, plan, None, None, command, engine, phase="end", exit_code=e.exit_code,
                   seconds=time.monotonic() - started, error=str(e).splitlines()[0])
            raise
    _audit(args, plan, result, report, command, engine, phase="end",
           exit_code=report.exit_code if report else 0, seconds=time.monotonic() - started)
    if getattr(args, "json", False):
        json.dump({"plan": plan.to_dict(), "applied": result.to_dict(),
                   "watch": report.to_dict() if report else None,
                   **getattr(args, "extra_json", {})}, out, indent=2)
        out.write("\n")
    else:
        for w in result.warnings:
            print(f"  warning: {w}", file=out)
        if report is not None:
            print(report.summary(), file=out)
        elif not plan.has_changes:
            print(f"stack {args.stack}: no changes", file=out)
        elif not changed:
            print(f"stack {args.stack}: no service changed; nothing to watch", file=out)
    return report.exit_code if report else 0


def _apply_and_watch(args, plan: Plan, engine: EngineAPI, out, timeout: float):
    from stacks.watch.watcher import WatchPolicy, snapshot_versions, watch_stack
    from stacks.watch.in_flight import unsettled
    from stacks.watch.render import progress_renderer

    as_json = getattr(args, "json", False)
    detach = getattr(args, "detach", False)
    if not plan.has_changes and not plan.problems and detach:
        return ApplyResult(), None, []
    baseline = snapshot_versions(engine.api, args.stack)
    result = ApplyResult()
    if plan.has_changes or plan.problems:
        result = apply(plan, engine, on_step=None if as_json else
                       (lambda s: print(f"  done: {s}", file=out)))
    changed = [a.name for a in plan.of("service") if a.action in (CREATE, UPDATE)]
    report = None
    if detach:
        return result, report, changed
    # unchanged services may still be moving (a killed deploy's update, a pause, missing
    # replicas): their outcome is this run's too, so "no changes" cannot hide a failing rollout
    in_flight = unsettled(engine.api, args.stack,
                          [a.name for a in plan.of("service") if a.action == UNCHANGED])
    for name, why in in_flight:
        if not as_json:
            print(f"  not settled, watching too: {name} ({why})", file=out)
    changed = changed + [name for name, _ in in_flight]
    if changed:
        renderer = progress_renderer(sys.stderr) if not as_json else None
        watch = dict(services=changed, baseline=baseline,
                     policy=WatchPolicy(timeout=timeout),
                     allow_rollback=getattr(args, "allow_rollback", False))
        if renderer is not None:
            with renderer as show:
                report = watch_stack(engine.api, args.stack, on_progress=show, **watch)
        else:
            report = watch_stack(engine.api, args.stack, **watch)
    return result, report, changed


def _audit(args, plan: Plan, result: ApplyResult | None, report, command: str = "deploy",
           engine: EngineAPI | None = None, **fields) -> None:
    """Records of a run (never secrets: names, outcomes, images): one with phase "start" before
    applying, one with phase "end" after, each with exit_code and seconds (null and 0 at the
    start), so an interrupted run is visible too. Kept in the swarm (the history every machine
    shares) and in the local audit.jsonl when the state folder exists."""
    from stacks.operations.audit import audit_record, keep_record, live_images

    extra = dict(getattr(args, "audit_extra", {}))
    if fields.get("phase") == "end" and engine is not None:
        try:    # what runs now, with the digests swarm pinned
            extra["images"] = {**live_images(engine.api, args.stack), **extra.get("images", {})}
        except Exception as e:
            _say(f"warning: could not read the stack's images for the audit record: {e}")
    extra.update({k: round(v, 2) if isinstance(v, float) else v for k, v in fields.items()})
    rec = audit_record(command, args.stack, report,
                       changes=result.done if result else
                       [f"{a.action} {a.kind} {a.name}" for a in plan.actions
                        if a.action != UNCHANGED], **extra)
    keep_record(engine.api if engine is not None else None, _state_path(args), rec,
                lambda msg: _say(f"warning: {msg}"))


def _state_path(args) -> str | None:
    from inventory import clusterfile
    from inventory.state import StateDir
    try:
        path = getattr(args, "cluster_file", None) or clusterfile.find(getattr(args, "cluster", None))
        return StateDir(path, clusterfile.load(path).name).path
    except Exception:
        return None


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


def run_rm(args, *, engine: EngineAPI | None = None, out=sys.stdout) -> int:
    from stacks.compose.validate import validate_stack_name
    validate_stack_name(args.stack)
    engine = engine or cluster_engine(args)
    plan = rm_plan(engine.current(), args.stack)
    if not plan.actions:
        print(f"nothing found in stack: {args.stack}", file=out)
        return 0
    result = apply(plan, engine)
    leftover = _wait_gone(engine, args.stack, timeout=getattr(args, "timeout", None) or 60)
    if leftover:
        result.warnings.append("still being removed by swarm: " + ", ".join(leftover))
    if getattr(args, "json", False):
        json.dump(result.to_dict(), out, indent=2)
        out.write("\n")
    else:
        for s in result.done:
            print(f"  {s}", file=out)
        for w in result.warnings:
            print(f"  warning: {w}", file=out)
    return 0


def _cluster_path(args) -> str:
    from inventory.clusterfile import find
    return getattr(args, "cluster_file", None) or find(getattr(args, "cluster", None))
