"""Decide one service's state from one poll: counts, outcome and reason.

Pure: takes the Engine API's service dict, that service's tasks and the ready
nodes, plus a small per-service memory (`Track`) kept between polls by the
watch loop.  No API calls, no clock of its own.

Which tasks count: a task belongs to the current spec when its `Spec` equals
the service's `Spec.TaskTemplate` (swarm copies the template into each task it
creates, and the engine converts both with the same code), and for jobs when
its `JobIteration` is the service's current one.  Right after an update the
old tasks are still running with the old spec, so they never make a service
look converged before the new tasks are up.  Two cases do not depend on that
comparison: a service never updated (no UpdateStatus, no PreviousSpec) has only
current tasks, and once UpdateStatus is `completed` / `rollback_completed` every
task swarm still wants is current (swarm resets UpdateStatus on each new spec).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from stacks.watch import task_reasons as tr
from stacks.watch.outcomes import Outcome
from stacks.watch.waiting import (IN_PROGRESS, Seen, Wait, is_stopping, phase, rollout_config,
                                  waiting_for)

PAUSED = frozenset({"paused", "rollback_paused"})
_MSG_TASK_RE = re.compile(r"task (\w{10,})\b")


@dataclass
class WatchPolicy:
    """Bounds of a watch.  Seconds unless said otherwise."""

    timeout: float = 300.0
    poll_min: float = 0.5
    poll_max: float = 5.0
    poll_max_updating: float = 0.5     # while swarm's updater runs: its end is not a task change
    # the first seconds of a watch are when new tasks start: a backed-off poll there would
    # report a converged stack seconds late (each poll is two listings, whatever the stack)
    poll_max_early: float = 0.25
    early: float = 30.0
    backoff: float = 1.5
    unschedulable_after: float = 15.0  # a task pending on "no suitable node" this long: failed
    stall_after: float = 60.0          # update in progress, no task changed (+ UpdateConfig delay/monitor)
    stopped_after: float = 15.0        # no live task left after failures: swarm stopped retrying
    settle: float = 3.0                # global service or job with no task at all: wait this long first
    max_task_failures: int = 3         # failed tasks in one slot (or node) outside an update
    max_rejections: int = 2            # rejected tasks (e.g. "No such image") outside an update
    max_rejections_in_update: int = 6  # ... during an update, with no new task running
    log_tail: int = 20
    log_timeout: float = 10.0


@dataclass
class Track:
    """What the watcher remembers about one service between polls."""

    started: float
    last_change: float
    fingerprint: frozenset = frozenset()
    unschedulable_since: dict[str, float] = field(default_factory=dict)
    failed_by_slot: dict[str, set[str]] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)
    no_live_since: float | None = None
    message_task: str | None = None  # task id named in UpdateStatus.Message
    manual_rollback: bool = False    # UpdateStatus said "manually requested rollback"
    seen: Seen = field(default_factory=Seen)


@dataclass
class Verdict:
    mode: str
    updated: int                # slots (global: nodes) running the current spec; jobs: completed
    running: int                # slots (nodes) with a running task of any spec
    desired: int
    update_state: str | None
    phase: str = ""
    waiting: Wait | None = None  # what swarm waits for now (None when finished or nothing)
    outcome: Outcome | None = None
    reason: str = ""
    task_id: str | None = None  # the task the reason came from


def service_mode(service: dict) -> str:
    mode = (service.get("Spec") or {}).get("Mode") or {}
    for key, name in (("ReplicatedJob", "replicated-job"), ("GlobalJob", "global-job"),
                      ("Global", "global")):
        if key in mode:
            return name
    return "replicated"


def _strip(obj):
    """Go's omitempty, roughly: the daemon leaves out zero values in one copy of a
    spec and fills defaults in another (seen on 20.10: after an update the service's
    TaskTemplate carries `"Runtime": "container"`, its tasks' Spec does not)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            v = _strip(v)
            if v in (None, "", 0, False, {}, []) or (k == "Runtime" and v == "container"):
                continue
            out[k] = v
        return out
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _canon(obj) -> str:
    return json.dumps(_strip(obj or {}), sort_keys=True, separators=(",", ":"))


def _slot_key(task: dict, mode: str) -> str:
    if mode in ("replicated", "replicated-job") and task.get("Slot"):
        return f"slot {task['Slot']}"
    return f"node {task.get('NodeID') or '?'}"


def current_tasks(service: dict, tasks: list[dict]) -> list[dict]:
    spec = service.get("Spec") or {}
    ustate = (service.get("UpdateStatus") or {}).get("State")
    if ustate is None and not service.get("PreviousSpec"):
        wanted = list(tasks)
    else:
        template = _canon(spec.get("TaskTemplate"))
        wanted = [t for t in tasks if _canon(t.get("Spec")) == template
                  or ustate in ("completed", "rollback_completed") and tr.is_live(t)]
    if service_mode(service).endswith("job"):
        iteration = (((service.get("JobStatus") or {}).get("JobIteration")) or {}).get("Index")
        if iteration is not None:
            wanted = [t for t in wanted
                      if ((t.get("JobIteration") or {}).get("Index")) == iteration]
    return wanted


def _stall_bound(service: dict, policy: WatchPolicy) -> float:
    delay, monitor, _ = rollout_config(service)
    return policy.stall_after + delay + monitor


def _latest(tasks):
    return max(tasks, key=tr.age_key) if tasks else None


def _update_task(service: dict, tasks: list[dict], track: Track, cur_ids: set[str],
                 want_old: bool) -> dict | None:
    """The task an update was paused or rolled back for."""
    if track.message_task:
        for t in tasks:
            if t.get("ID", "").startswith(track.message_task):
                return t
    bad = [t for t in tasks if tr.state(t) in tr.BAD_STATES
           and (not want_old or t.get("ID") not in cur_ids)]
    return _latest(bad)


def evaluate(service: dict, tasks: list[dict], track: Track, now: float,
             policy: WatchPolicy, ready_nodes: set[str] | None = None,
             ignore_rollback: bool = False) -> Verdict:
    """One service, one poll.  `tasks` are all tasks of this service (any spec).

    `ignore_rollback`: the service has not changed since before the apply, so a
    rollback_completed in its UpdateStatus is old news, not this run's outcome.
    """
    mode = service_mode(service)
    update = service.get("UpdateStatus") or {}
    ustate = (update.get("State") or None)
    m = _MSG_TASK_RE.search(update.get("Message") or "")
    if m:
        track.message_task = m.group(1)
    if "manually requested rollback" in (update.get("Message") or ""):
        track.manual_rollback = True

    fingerprint = frozenset((t.get("ID"), tr.state(t), tr.desired_state(t)) for t in tasks)
    if fingerprint != track.fingerprint:
        track.fingerprint = fingerprint
        track.last_change = now

    cur = current_tasks(service, tasks)
    cur_ids = {t.get("ID") for t in cur}
    live = [t for t in cur if tr.is_live(t)]
    if ready_nodes is not None:
        live = [t for t in live if not t.get("NodeID") or t.get("NodeID") in ready_nodes]

    # remember failures of the current spec across polls (task history is capped)
    for t in cur:
        if tr.state(t) == "rejected":
            track.rejected.add(t["ID"])
        elif tr.state(t) == "failed":
            track.failed_by_slot.setdefault(_slot_key(t, mode), set()).add(t["ID"])
    # While a task of the service is stopping, a new one pending on "no suitable node" waits
    # for it (stop-first with a host-mode port: the old container holds the port for up to
    # its grace period), so the unschedulable bound counts from when nothing is stopping.
    stopping = any(is_stopping(t) for t in tasks)
    for t in live:
        if tr.is_unschedulable(t) and not stopping:
            track.unschedulable_since.setdefault(t["ID"], now)
    still = set() if stopping else {t["ID"] for t in live if tr.is_unschedulable(t)}
    track.unschedulable_since = {k: v for k, v in track.unschedulable_since.items() if k in still}

    updated, desired = _counts(service, mode, cur, live)
    live_any = [t for t in tasks if tr.is_live(t)
                and (ready_nodes is None or not t.get("NodeID") or t.get("NodeID") in ready_nodes)]
    track.seen.note(tasks, now)
    v = Verdict(mode, updated, _running_any(mode, live_any, cur), desired, ustate,
                phase=phase(service),
                waiting=waiting_for(service, tasks, cur_ids, track.seen, now, updated, desired))
    bad_cur = [t for t in cur if tr.state(t) in tr.BAD_STATES]
    hint_task = _latest([t for t in live if tr.is_unschedulable(t) and not stopping]) \
        or _latest(bad_cur)
    if hint_task is not None:
        v.reason, v.task_id = tr.describe(hint_task), hint_task.get("ID")

    if ustate in PAUSED:
        t = _update_task(service, tasks, track, cur_ids, want_old=False)
        what = "rollback paused" if ustate == "rollback_paused" else "update paused"
        desc = tr.describe(t) if t else ""
        v.outcome = Outcome.PAUSED
        v.reason = f"{what}: {desc}" if desc else (update.get("Message") or what)
        v.task_id = t.get("ID") if t else None
        return v
    # A rollback is this run's outcome only once the previous spec runs at full strength again:
    # swarm reports rollback_completed while the last rolled-back task may still be starting.
    rolled_back = ustate == "rollback_completed" and not ignore_rollback
    if rolled_back and (mode.endswith("job") or updated >= desired):
        if track.manual_rollback:
            v.outcome, v.reason, v.task_id = Outcome.ROLLED_BACK, "rolled back on request", None
            return v
        t = _update_task(service, tasks, track, cur_ids, want_old=True)
        desc = tr.describe(t) if t else ""
        v.outcome = Outcome.ROLLED_BACK
        v.reason = f"rolled back after: {desc}" if desc else (update.get("Message") or "rolled back")
        v.task_id = t.get("ID") if t else None
        return v

    in_update = ustate in IN_PROGRESS
    settled = now - track.started >= policy.settle
    stale_running = [t for t in tasks if t.get("ID") not in cur_ids and tr.is_live(t)
                     and tr.state(t) == "running"
                     and (ready_nodes is None or t.get("NodeID") in ready_nodes)]
    if mode.endswith("job"):
        if desired > 0 and updated >= desired or desired == 0 and not cur and settled:
            v.outcome, v.reason, v.task_id = Outcome.DONE, "", None
            return v
    elif not in_update and updated == desired and not stale_running \
            and (desired > 0 or mode == "replicated" or settled):
        v.outcome, v.reason, v.task_id = Outcome.CONVERGED, "", None
        return v

    # states that will not resolve by themselves
    for tid, since in track.unschedulable_since.items():
        if now - since >= policy.unschedulable_after:
            t = next(t for t in live if t["ID"] == tid)
            return _failed(v, tr.describe(t), tid)
    if in_update and now - track.last_change >= _stall_bound(service, policy):
        quiet = int(now - track.last_change)
        extra = f"; {v.reason}" if v.reason else ""
        return _failed(v, f"update stuck in '{ustate}' with no task progress for {quiet} s{extra}",
                       v.task_id)
    if in_update and updated == 0 and len(track.rejected) >= policy.max_rejections_in_update:
        # failure_action continue (or a high max_failure_ratio): swarm keeps making tasks
        # that the nodes reject ("No such image"); this never resolves by itself
        t = _latest([t for t in tasks if t.get("ID") in track.rejected]) or hint_task
        return _failed(v, f"{tr.describe(t)} ({len(track.rejected)} tasks rejected during "
                          f"the update)", t.get("ID"))
    if in_update:
        return v  # swarm's updater reacts to task failures itself (pause, rollback, continue)
    if len(track.rejected) >= policy.max_rejections:
        t = _latest([t for t in tasks if t.get("ID") in track.rejected]) or hint_task
        n = len(track.rejected)
        return _failed(v, f"{tr.describe(t)} ({n} tasks rejected)", t.get("ID"))
    worst_slot = max(track.failed_by_slot.values(), key=len, default=set())
    if len(worst_slot) >= policy.max_task_failures:
        t = _latest([t for t in tasks if t.get("ID") in worst_slot]) or hint_task
        return _failed(v, f"{tr.describe(t)} ({len(worst_slot)} failures in a row)", t.get("ID"))
    if not live and bad_cur:
        track.no_live_since = track.no_live_since if track.no_live_since is not None else now
        if now - track.no_live_since >= policy.stopped_after:
            t = _latest(bad_cur)
            return _failed(v, f"{tr.describe(t)} (swarm stopped restarting it)", t.get("ID"))
    else:
        track.no_live_since = None
    return v


def _failed(v: Verdict, reason: str, task_id: str | None) -> Verdict:
    v.outcome, v.reason, v.task_id = Outcome.FAILED, reason, task_id
    return v


def _running_any(mode: str, live_any: list[dict], cur: list[dict]) -> int:
    """Running tasks of any spec, one per slot (global: per node), so a start-first overlap
    of an old and a new task in one slot counts once; jobs: running tasks of this run."""
    if mode.endswith("job"):
        return sum(1 for t in cur if tr.state(t) == "running" and tr.is_live(t))
    key = "Slot" if mode == "replicated" else "NodeID"
    return len({t.get(key) for t in live_any if tr.state(t) == "running"})


def _counts(service: dict, mode: str, cur: list[dict], live: list[dict]) -> tuple[int, int]:
    spec_mode = (service.get("Spec") or {}).get("Mode") or {}
    if mode == "replicated":
        desired = int((spec_mode.get("Replicated") or {}).get("Replicas", 1) or 0)
        running = len({t.get("Slot") for t in live if tr.state(t) == "running"})
        return running, desired
    if mode == "global":
        nodes = {t.get("NodeID") for t in live}
        running = len({t.get("NodeID") for t in live if tr.state(t) == "running"})
        return running, len(nodes)
    done = [t for t in cur if tr.state(t) == "complete"]
    if mode == "replicated-job":
        job = spec_mode.get("ReplicatedJob") or {}
        total = int(job.get("TotalCompletions") or job.get("MaxConcurrent") or 1)
        return len(done), total
    # global-job: one completion per node that got a task
    nodes = {t.get("NodeID") for t in cur if tr.state(t) not in ("rejected",)}
    return len({t.get("NodeID") for t in done}), len(nodes)
