"""swarmsmith's rolling-update defaults for services whose compose file gives none.

Swarm's own defaults (parallelism 1, stop-first, failure_action pause, monitor
5 s) leave a failed update paused half-way, with some tasks on the new spec and
some on the old one, and `docker stack deploy` sends them whenever the file
has no update_config.  swarmsmith sends these instead (docs/rollouts.md):

  update_config:   parallelism 1, delay 0, order start-first (stop-first when
                   start-first cannot work, see below), failure_action rollback,
                   monitor 5s, max_failure_ratio 0
  rollback_config: parallelism 1, delay 0, same order, failure_action pause,
                   monitor 5s, max_failure_ratio 0

stop-first instead of start-first when the service publishes a port in host
mode (the new task would need the port the old one holds: it stays pending
for ever) or caps tasks per node (max_replicas_per_node: the
extra task may find no node).  Jobs (replicated-job, global-job) get nothing:
swarm does not roll them.

Each key (update_config, rollback_config) is filled only when the file does
not have it at all; a file's own block, even a partial one, is kept as
written.  `update_defaults=False` in the stack options (`--no-update-defaults`) turns this off, so
the specs are exactly what `docker stack deploy` would send.
"""
from __future__ import annotations

import copy

SECOND = 1_000_000_000
MONITOR_NS = 5 * SECOND


def _order(spec: dict) -> str:
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    if any((p.get("PublishMode") or "ingress") == "host" for p in ports):
        return "stop-first"
    placement = (spec.get("TaskTemplate") or {}).get("Placement") or {}
    if placement.get("MaxReplicas"):
        return "stop-first"
    return "start-first"


def default_update_config(spec: dict) -> dict:
    return {"Parallelism": 1, "FailureAction": "rollback", "Monitor": MONITOR_NS,
            "Order": _order(spec)}


def default_rollback_config(spec: dict) -> dict:
    return {"Parallelism": 1, "FailureAction": "pause", "Monitor": MONITOR_NS,
            "Order": _order(spec)}


def _is_job(spec: dict) -> bool:
    mode = spec.get("Mode") or {}
    return "ReplicatedJob" in mode or "GlobalJob" in mode


def with_update_defaults(spec: dict) -> tuple[dict, list[str]]:
    """(a copy of one ServiceSpec with the defaults filled in, keys filled)."""
    if _is_job(spec):
        return spec, []
    out, filled = copy.deepcopy(spec), []
    if out.get("UpdateConfig") is None:
        out["UpdateConfig"] = default_update_config(out)
        filled.append("update_config")
    if out.get("RollbackConfig") is None:
        out["RollbackConfig"] = default_rollback_config(out)
        filled.append("rollback_config")
    return out, filled


def apply_update_defaults(desired, enabled: bool = True) -> dict[str, list[str]]:
    """Fill the defaults into every service of a StackSpec, in place.

    Returns {service name: keys filled}, for the plan's notes and tests.
    """
    if not enabled:
        return {}
    done = {}
    for name, spec in list(desired.services.items()):
        new, filled = with_update_defaults(spec)
        if filled:
            desired.services[name] = new
            done[spec.get("Name", name)] = filled
    return done
