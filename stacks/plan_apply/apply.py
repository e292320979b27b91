"""apply(): carry out a plan through the Engine API adapter, and the plan of `rm`.

apply() needs only an EngineAPI, so tests drive it with a fake APIClient.

Order of apply (the CLI's, with removals last so nothing in use is removed
first): networks -> secrets -> configs -> services created or updated ->
(prune) services removed -> secrets/configs removed -> networks removed.
Before all of them, the label updates of secrets taken over from `docker stack
deploy` whose content the plan could not check (stacks/plan_apply/takeover.py):
swarm checks it then, and a refusal stops the deploy before anything changed.
Unchanged services are not sent at all (no version bump, no task restart).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

from provision.base.errors import InputError, SwarmsmithError, is_not_found
from stacks.specs.convert import CONTENT_LABEL, STACK_LABEL, is_placeholder
from provision.engine_api.adapter import EngineAPI
from stacks.plan_apply.plan import (CREATE, REMOVE, UPDATE, Action, Current, Plan,
                                    comparable_current)


@dataclass
class ApplyResult:
    done: list = field(default_factory=list)       # "create service st_web", ...
    warnings: list = field(default_factory=list)   # from the daemon

    def to_dict(self) -> dict:
        return {"done": self.done, "warnings": self.warnings}


# --- applying a plan ----------------------------------------------------------------------

def resolve_ids(spec: dict, ids: dict) -> dict:
    """A copy of a ServiceSpec with `<id:NAME>` placeholders replaced by the IDs
    of the secrets/configs named (ids: {(kind, name): id})."""
    out = copy.deepcopy(spec)
    cs = out["TaskTemplate"]["ContainerSpec"]
    for key, kind, id_key, name_key in (("Secrets", "secret", "SecretID", "SecretName"),
                                        ("Configs", "config", "ConfigID", "ConfigName")):
        for ref in cs.get(key) or []:
            if is_placeholder(ref.get(id_key)):
                ref[id_key] = _lookup(ids, kind, ref[name_key], spec["Name"])
    cred = (cs.get("Privileges") or {}).get("CredentialSpec") or {}
    if is_placeholder(cred.get("Config")):
        cred["Config"] = _lookup(ids, "config", cred["Config"][4:-1], spec["Name"])
    return out


def _lookup(ids: dict, kind: str, name: str, service: str) -> str:
    try:
        return ids[(kind, name)]
    except KeyError:
        raise SwarmsmithError(f"service {service}: {kind} {name} not found") from None


def update_body(action: Action, ids: dict) -> dict:
    """What to send for an update: the desired spec with IDs resolved, the live
    ForceUpdate counter kept, and the live image kept when it is only the
    digest-pinned form of the image asked for (so no needless restart)."""
    body = resolve_ids(action.spec, ids)
    live = action.current or {}
    tt = body["TaskTemplate"]
    force = (live.get("TaskTemplate") or {}).get("ForceUpdate")
    if force:
        tt["ForceUpdate"] = force
    if comparable_current(action.spec, live) is not live:
        tt["ContainerSpec"]["Image"] = live["TaskTemplate"]["ContainerSpec"]["Image"]
    return body


def refuse_problems(plan: Plan) -> None:
    """A plan with problems is bad input: nothing of it is applied."""
    if plan.problems:
        raise InputError("the plan has problems; nothing was changed:\n  "
                         + "\n  ".join(plan.problems))


def apply(plan: Plan, engine: EngineAPI, *, on_step: Callable[[str], None] | None = None,
          clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None,
          network_release_timeout: float | None = None) -> ApplyResult:
    refuse_problems(plan)
    result = ApplyResult()
    ids = dict(plan.ids)

    def step(text: str) -> None:
        result.done.append(text)
        if on_step:
            on_step(text)

    for a in plan.of("secret", UPDATE):
        if a.unchecked:
            _record_takeover_label(engine, a)
            step(f"update secret {a.name} (labels: content hash recorded)")
    for a in plan.of("network", CREATE):
        engine.create_network(a.spec)
        step(f"create network {a.name}")
    for kind in ("secret", "config"):
        create = engine.create_secret if kind == "secret" else engine.create_config
        update = engine.update_secret if kind == "secret" else engine.update_config
        for a in plan.of(kind):
            if a.action == CREATE:
                ids[(kind, a.name)] = create(a.spec)
                step(f"create {kind} {a.name}")
            elif a.action == UPDATE and not a.unchecked:
                update(a.id, a.version, a.spec)   # labels only; content changes are problems
                step(f"update {kind} {a.name} (labels)")
    _services(plan, engine, ids, result, step)
    for kind in ("service", "secret", "config"):
        for a in plan.of(kind, REMOVE):
            _remove(engine, kind, a)
            step(f"remove {kind} {a.name}")
    for a in plan.of("network", REMOVE):
        _remove_network(engine, a, clock, sleep, network_release_timeout)
        step(f"remove network {a.name}")
    return result


# How long a network whose services were just removed may stay attached to their stopping tasks.
NETWORK_RELEASE_TIMEOUT = 90.0


def _remove(engine: EngineAPI, kind: str, a: Action) -> None:
    """An object already gone counts as removed: a re-run after a kill or a lost answer, or
    another remover (swarm's own clean-up, a concurrent `rm`), got there first."""
    try:
        engine.remove(kind, a.id, a.name)
    except SwarmsmithError as exc:
        if not is_not_found(exc):
            raise


def _remove_network(engine: EngineAPI, a: Action, clock=None, sleep=None,
                    timeout: float | None = None) -> None:
    """Swarm refuses to remove a network while tasks of services removed a moment ago are
    still shutting down on it ("in use by task"): `docker stack rm` then fails half-way.
    Those tasks go on their own, so the removal is retried (bounded) until they have."""
    import time
    clock, sleep = clock or time.monotonic, sleep or time.sleep
    deadline = clock() + (NETWORK_RELEASE_TIMEOUT if timeout is None else timeout)
    delay = 0.2
    while True:
        try:
            _remove(engine, "network", a)
            return
        except SwarmsmithError as exc:
            if "in use by task" not in str(exc) or clock() >= deadline:
                raise
        sleep(delay)
        delay = min(delay * 1.5, 2.0)


SERVICE_CONCURRENCY = 8


def _services(plan: Plan, engine: EngineAPI, ids: dict, result: ApplyResult, step) -> None:
    """Services are created and updated in parallel: each is its own object in the swarm (what
    they use exists by now), and one at a time a 50-service stack pays 50 round trips to the
    manager in a row. Steps are reported in plan order; the first failure is raised once every
    request has been answered (a re-run converges the rest)."""
    from concurrent.futures import ThreadPoolExecutor

    def send(a: Action) -> list:
        if a.action == CREATE:
            engine.create_service(resolve_ids(a.spec, ids))
            return []
        return engine.update_service(a.id, a.version, update_body(a, ids))

    todo = [a for a in plan.of("service") if a.action in (CREATE, UPDATE)]
    if not todo:
        return
    with ThreadPoolExecutor(max_workers=min(SERVICE_CONCURRENCY, len(todo))) as pool:
        futures = [(a, pool.submit(send, a)) for a in todo]
    failure = None
    for a, fut in futures:
        exc = fut.exception()
        if exc is not None:
            failure = failure or exc
            continue
        result.warnings += fut.result()
        step(f"{'create' if a.action == CREATE else 'update'} service {a.name}")
    if failure is not None:
        raise failure


def _record_takeover_label(engine: EngineAPI, a: Action) -> None:
    """The labels-only update of a secret docker stack deploy made, carrying the file's
    content so that swarm compares it. When swarm refuses (other content), the secret is
    labelled as differing (labels only, no content sent), so the next plan does not take it
    over but moves the services to a new secret with the file's content."""
    from stacks.plan_apply.takeover import MISMATCH, REFUSED
    try:
        engine.update_secret(a.id, a.version, a.spec)
    except SwarmsmithError as exc:
        if REFUSED not in str(exc):
            raise
        marked = {k: v for k, v in a.spec.items() if k != "Data"}
        marked["Labels"] = {**a.spec["Labels"], CONTENT_LABEL: MISMATCH}
        engine.update_secret(a.id, a.version, marked)
        raise SwarmsmithError(
            f"secret {a.name} (made by docker stack deploy) holds other content than its "
            "file: swarm refused to record the file's content hash on it. Nothing else was "
            "changed; the secret is now labelled as differing, so the next deploy creates a "
            "new secret with the file's content and moves the services to it (their tasks "
            "restart)") from None


def rm_plan(current: Current, stack: str) -> Plan:
    """Everything carrying the stack label, removed (what `docker stack rm` removes)."""
    plan = Plan(stack)
    def mine(labels):
        return (labels or {}).get(STACK_LABEL) == stack
    for s in current.services:
        if mine(s["Spec"].get("Labels")):
            plan.actions.append(Action("service", s["Spec"]["Name"], REMOVE, id=s["ID"]))
    for kind, objs in (("secret", current.secrets), ("config", current.configs)):
        for o in objs:
            if mine(o["Spec"].get("Labels")):
                plan.actions.append(Action(kind, o["Spec"]["Name"], REMOVE, id=o["ID"]))
    for n in current.networks:
        if mine(n.get("Labels")):
            plan.actions.append(Action("network", n["Name"], REMOVE, id=n.get("Id")))
    return plan
