"""What a rollout waits for right now, in words, from the facts swarm gives.

Pure functions over the Engine API's service dict (UpdateStatus, UpdateConfig /
RollbackConfig, StopGracePeriod), its tasks (state, desired state, error,
slot) and when the watch first saw each task running or stopping (`Seen`, kept
on the watch's own clock).  Nothing here calls the API or reads a clock.

How swarm's updater moves, which the words follow: it takes the slots that
are not on the current spec in batches of `Parallelism`.  stop-first (swarm's
own default order) sets the old task's desired state to shutdown, holds the
new task at desired state "ready" and starts it once the old container has
stopped (within its StopGracePeriod, then it is killed); start-first starts the
new task and shuts the old one down once the new one runs, without waiting
for it to stop.  After each slot the worker waits `Delay`; after the last one
swarm watches the new tasks `Monitor` more seconds (5 s when unset) before it
marks the update completed.  A rollback moves the same way with the service's
RollbackConfig.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from stacks.watch import task_reasons as tr

IN_PROGRESS = frozenset({"updating", "rollback_started"})
PHASES = {"updating": "updating", "rollback_started": "rolling back", "paused": "paused",
          "rollback_paused": "rollback paused", "completed": "completed",
          "rollback_completed": "rolled back"}
_NS = 1e9
_DEFAULT_MONITOR_S = 5.0
_DEFAULT_GRACE_S = 10.0          # the engine's stop timeout when the spec sets none
# states before running, in swarm's order: a task here is on its way up
_COMING = tr.STATE_ORDER[:tr.STATE_ORDER.index("running")]
# a container exists in these states: stopping it takes up to the grace period
_CONTAINER_UP = frozenset({"ready", "starting", "running"})
_STATE_WORDS = {"new": "pending", "allocated": "pending", "pending": "pending",
                "assigned": "assigned to a node", "accepted": "accepted by its node",
                "preparing": "preparing (image, networks, mounts)", "ready": "ready",
                "starting": "starting"}


@dataclass(frozen=True)
class Wait:
    """One thing swarm waits for.  `key` names it without the numbers that tick (seconds
    left), so a change of key is a change of what it waits for."""

    text: str
    key: str


@dataclass
class Seen:
    """When the watch first saw each task running, and each task stopping (desired state
    shutdown while its container was up).  Watch-clock seconds, by task id."""

    running: dict[str, float] = field(default_factory=dict)
    stopping: dict[str, float] = field(default_factory=dict)

    def note(self, tasks: list[dict], now: float) -> None:
        ids = {t.get("ID") for t in tasks}
        for t in tasks:
            if tr.state(t) == "running" and tr.is_live(t):
                self.running.setdefault(t["ID"], now)
            if is_stopping(t):
                self.stopping.setdefault(t["ID"], now)
        # task history is capped and the watch may run long: forget tasks swarm dropped
        self.running = {k: v for k, v in self.running.items() if k in ids}
        self.stopping = {k: v for k, v in self.stopping.items() if k in ids}


def phase(service: dict) -> str:
    """The rollout's phase in words, from UpdateStatus.State; "" when swarm reports none
    (a service never updated, or a new spec the updater has not picked up yet)."""
    state = (service.get("UpdateStatus") or {}).get("State") or ""
    return PHASES.get(state, state)


def task_name(service: dict, task: dict) -> str:
    """The task's name as `docker service ps` shows it: SERVICE.SLOT, or SERVICE.NODE-ID
    for a global service."""
    name = (service.get("Spec") or {}).get("Name") or "?"
    slot = task.get("Slot")
    return f"{name}.{slot}" if slot else f"{name}.{task.get('NodeID') or '?'}"


def duration(seconds: float) -> str:
    """2s, 1.5s, 90s: the way compose files write durations, short."""
    return f"{seconds:g}s"


def rollout_config(service: dict) -> tuple[float, float, str]:
    """(delay s, monitor s, order) of the update or rollback now running."""
    spec = service.get("Spec") or {}
    rollback = (service.get("UpdateStatus") or {}).get("State", "").startswith("rollback")
    cfg = spec.get("RollbackConfig" if rollback else "UpdateConfig") or {}
    delay = (cfg.get("Delay") or 0) / _NS
    monitor = (cfg.get("Monitor") or 0) / _NS or _DEFAULT_MONITOR_S
    return delay, monitor, cfg.get("Order") or "stop-first"


def grace_period(task: dict) -> float:
    cs = ((task.get("Spec") or {}).get("ContainerSpec")) or {}
    ns = cs.get("StopGracePeriod")
    return ns / _NS if ns is not None else _DEFAULT_GRACE_S


def is_stopping(task: dict) -> bool:
    """Swarm told the task to stop and its container is still up."""
    return not tr.is_live(task) and tr.state(task) in _CONTAINER_UP


def _left(total: float, since: float, now: float) -> int:
    return max(0, math.ceil(total - (now - since) - 1e-9))


def _order(task: dict):
    return (task.get("Slot") or 0, task.get("NodeID") or "", task.get("ID") or "")


def _more(items: list) -> str:
    return f" (+{len(items) - 1} more)" if len(items) > 1 else ""


def _starting_words(task: dict) -> str:
    st = tr.state(task)
    words = _STATE_WORDS.get(st, st)
    err = tr.error_text(task)
    if st == "starting":
        hc = (((task.get("Spec") or {}).get("ContainerSpec") or {}).get("Healthcheck")) or {}
        if hc.get("Test") and hc["Test"][0] != "NONE":
            words = "starting (waiting for its health check)"
    elif words == "pending" and err:
        words = f"pending: {err}"
    return words


def waiting_for(service: dict, tasks: list[dict], current_ids: set[str], seen: Seen,
                now: float, updated: int, desired: int) -> Wait | None:
    """What swarm waits for now, or None when nothing (settled, paused, or a moment between
    two steps).  `tasks` are all tasks of the service, `current_ids` those on the current
    spec, `updated` how many slots run the current spec out of `desired`."""
    state = (service.get("UpdateStatus") or {}).get("State")
    if state in ("paused", "rollback_paused"):
        return None
    in_update = state in IN_PROGRESS
    delay, monitor, order = rollout_config(service)
    what = "rollback" if state == "rollback_started" else "update"
    live_cur = sorted((t for t in tasks if t.get("ID") in current_ids and tr.is_live(t)),
                      key=_order)

    # stop-first: the new task of a slot starts only once the old one has stopped (until
    # then a host-mode port keeps it pending on "no suitable node": that is not the cause)
    stopping = sorted((t for t in tasks if is_stopping(t)), key=_order)
    if stopping and in_update and order == "stop-first":
        t = stopping[0]
        grace = grace_period(t)
        since = seen.stopping.get(t["ID"], now)
        left = _left(grace, since, now)
        # past the grace period the engine kills the container; the task's state follows
        # when its node reports it
        tail = f", {left}s left" if left else f", {int(now - since - grace)}s over"
        return Wait(f"task {task_name(service, t)} stopping (grace period "
                    f"{duration(grace)}{tail}){_more(stopping)}", f"stopping:{t['ID']}")
    pending = [t for t in live_cur if tr.is_unschedulable(t)]
    if pending:
        t = pending[0]
        return Wait(f"{task_name(service, t)} pending: {tr.describe(t)}{_more(pending)}",
                    f"pending:{t['ID']}")
    coming = [t for t in live_cur if tr.state(t) in _COMING]
    if coming:
        t = coming[0]
        return Wait(f"task {task_name(service, t)} {_starting_words(t)}{_more(coming)}",
                    f"starting:{t['ID']}")
    if (service.get("Spec") or {}).get("Mode", {}).keys() & {"ReplicatedJob", "GlobalJob"}:
        running = [t for t in live_cur if tr.state(t) == "running"]
        if running:
            t = running[0]
            return Wait(f"task {task_name(service, t)} running until it completes"
                        f"{_more(running)}", f"job:{t['ID']}")
        return None
    if not in_update:
        if state is None and service.get("PreviousSpec") and not live_cur \
                and any(tr.is_live(t) for t in tasks):
            return Wait("swarm to start the update", "update-start")
        return None

    up = [t for t in live_cur if tr.state(t) == "running"]
    if not up:
        return Wait(f"swarm to start the {what} of the next task", "next")
    last = max(up, key=lambda t: (seen.running.get(t["ID"], now), _order(t)))
    since = seen.running.get(last["ID"], now)
    if delay and now - since < delay:
        return Wait(f"{what} delay {duration(delay)} ({_left(delay, since, now)}s left)",
                    f"delay:{last['ID']}")
    if updated < desired:
        return Wait(f"swarm to start the {what} of the next task", "next")
    left = _left(delay + monitor, since, now)
    if left:
        return Wait(f"monitoring task {task_name(service, last)} ({left}s left)",
                    f"monitor:{last['ID']}")
    return Wait(f"swarm to mark the {what} completed", "complete")
