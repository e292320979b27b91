"""Node operations for operators: drain (waiting until the node's tasks run elsewhere), activate,
pause, promote, demote, label and rm, with the quorum refusals.

Library functions take an EngineAPI (provision/engine_api.py, or a fake with its methods), typed
options, an injected clock/sleep and an optional progress callback; they return typed results and
raise SwarmsmithError subclasses. Nothing here prints.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager

from .errors import (EXIT_DEPLOY_FAILED, EXIT_OK, EXIT_TIMED_OUT, InputError, SwarmsmithError)
from .quorum import QuorumRefused, check_manager_removal, is_manager, node_name, quorum_of

Progress = Callable[[str], None]
ACTIVE_STATES = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting",
                 "running")


class NodeNotFound(InputError):
    pass


# --- finding nodes ------------------------------------------------------------------------

def find_node(nodes: list[dict], ref: str) -> dict:
    """A node by hostname, full ID or unique ID prefix (as the docker CLI accepts)."""
    by_name = [n for n in nodes if node_name(n) == ref]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        ready = [n for n in by_name if (n.get("Status") or {}).get("State") == "ready"]
        if len(ready) == 1:
            return ready[0]
        raise InputError(f"node {ref}: {len(by_name)} nodes have this hostname; use its ID "
                         f"({', '.join(n['ID'][:12] for n in by_name)})")
    by_id = [n for n in nodes if n["ID"].startswith(ref)] if len(ref) >= 4 else []
    if len(by_id) == 1:
        return by_id[0]
    known = ", ".join(sorted(node_name(n) for n in nodes))
    raise NodeNotFound(f"node {ref}: no such node in the swarm (nodes: {known})")


def node_row(n: dict) -> dict:
    ms = n.get("ManagerStatus") or {}
    desc = n.get("Description") or {}
    return {"hostname": node_name(n), "id": n["ID"], "role": n["Spec"].get("Role"),
            "availability": n["Spec"].get("Availability"), "state": n["Status"].get("State"),
            "manager": ("leader" if ms.get("Leader") else ms.get("Reachability", "")) if ms else "",
            "addr": n["Status"].get("Addr", ""),
            "engine": (desc.get("Engine") or {}).get("EngineVersion", ""),
            "labels": n["Spec"].get("Labels") or {}}


def list_nodes(api) -> dict:
    nodes = api.nodes()
    return {"nodes": sorted((node_row(n) for n in nodes),
                            key=lambda r: (r["role"] != "manager", r["hostname"])),
            "quorum": quorum_of(nodes).to_dict()}


# --- results ------------------------------------------------------------------------------

@dataclass
class NodeChange:
    node: str
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exit_code: int = EXIT_OK

    def to_dict(self) -> dict:
        return {"node": self.node, "changes": self.changes, "notes": self.notes,
                "exit_code": self.exit_code}


@dataclass
class DrainOptions:
    timeout: float = 300.0          # seconds to wait for the node's tasks to move
    settle: float = 5.0             # a scheduling error seen this long counts as "cannot place"
    poll: float = 0.5


@dataclass
class DrainResult(NodeChange):
    moved: list[str] = field(default_factory=list)            # services whose tasks left the node
    unplaced: dict[str, str] = field(default_factory=dict)    # service -> why it has no place
    remaining: list[str] = field(default_factory=list)        # tasks still on the node (timeout)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return super().to_dict() | {"moved": self.moved, "unplaced": self.unplaced,
                                    "remaining": self.remaining, "seconds": round(self.seconds, 2)}


# --- availability -------------------------------------------------------------------------

def _set_spec(api, node: dict, **changes) -> bool:
    """Set spec fields of a node (a value may be a function of the node's current spec),
    through engine_api.change_node (which redoes a change swarm refused as out of sequence);
    False when the node had them already."""
    from .engine_api import change_node

    def change(spec: dict) -> dict | None:
        new = {k: v(spec) if callable(v) else v for k, v in changes.items()}
        return None if all(spec.get(k) == v for k, v in new.items()) else {**spec, **new}
    return change_node(api, node["ID"], change, node=node)


def set_availability(api, ref: str, availability: str) -> NodeChange:
    """activate / pause (drain waits: see drain_node)."""
    if availability not in ("active", "pause", "drain"):
        raise InputError(f"availability {availability}: expected active, pause or drain")
    node = find_node(api.nodes(), ref)
    res = NodeChange(node_name(node))
    if _set_spec(api, node, Availability=availability):
        res.changes.append(f"{res.node}: availability {node['Spec'].get('Availability')} -> "
                           f"{availability}")
    return res


def activate_node(api, ref: str) -> NodeChange:
    return set_availability(api, ref, "active")


def drain_node(api, ref: str, opts: DrainOptions | None = None, *,
               on_progress: Progress | None = None,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> DrainResult:
    """Set the node to drain and wait (bounded) until it runs no service task and the services
    it ran have their tasks running elsewhere. Services whose new tasks cannot be placed are
    named with the scheduler's reason (exit 10); the deadline passing first gives exit 12."""
    opts = opts or DrainOptions()
    say = on_progress or (lambda msg: None)
    node = find_node(api.nodes(), ref)
    nid, name = node["ID"], node_name(node)
    res = DrainResult(name)
    start = clock()
    before = [t for t in api.tasks(filters={"node": nid}) if _active(t)]
    affected = sorted({t["ServiceID"] for t in before})
    if _set_spec(api, node, Availability="drain"):
        res.changes.append(f"{name}: availability {node['Spec'].get('Availability')} -> drain")
        say(f"{name}: drain set; {len(before)} task(s) of {len(affected)} service(s) to move")
    services = {s["ID"]: s for s in api.services()} if affected else {}
    global_ids = {sid for sid in affected if "Global" in (services.get(sid, {}).get("Spec", {})
                                                          .get("Mode") or {})}
    stuck_since: dict[str, float] = {}
    last = None
    while True:
        now = clock()
        # a task told to shut down still counts until its container has stopped
        on_node = [t for t in api.tasks(filters={"node": nid})
                   if (t.get("Status") or {}).get("State") in ACTIVE_STATES]
        waiting: dict[str, str] = {}
        for sid in affected:
            if sid in global_ids or sid not in services:
                continue
            state = _service_placement(api.tasks(filters={"service": sid}), nid)
            if state is not None:
                waiting[sid] = state
        for sid in list(stuck_since):
            if sid not in waiting:
                del stuck_since[sid]
        for sid, why in waiting.items():
            if why.startswith("cannot place:"):
                stuck_since.setdefault(sid, now)
        unplaced = {sid: waiting[sid] for sid, t0 in stuck_since.items()
                    if now - t0 >= opts.settle}
        summary = (len(on_node), len(waiting))
        if summary != last:
            say(f"{name}: {len(on_node)} task(s) still on the node, "
                f"{len(waiting)} service(s) not yet running elsewhere")
            last = summary
        pending_other = set(waiting) - set(unplaced)
        if not on_node and not pending_other:
            res.unplaced = {_svc_name(services, sid): why.split(": ", 1)[1]
                            for sid, why in unplaced.items()}
            res.moved = sorted(_svc_name(services, sid) for sid in affected
                               if sid not in unplaced and sid not in global_ids)
            res.exit_code = EXIT_DEPLOY_FAILED if res.unplaced else EXIT_OK
            break
        if now - start >= opts.timeout:
            res.remaining = sorted(f"{_svc_name(services, t['ServiceID'])}.{t.get('Slot') or ''}"
                                   .rstrip(".") for t in on_node)
            res.unplaced = {_svc_name(services, sid): why.split(": ", 1)[-1]
                            for sid, why in waiting.items()}
            res.moved = sorted(_svc_name(services, sid) for sid in affected
                               if sid not in waiting and sid not in global_ids)
            res.exit_code = EXIT_TIMED_OUT
            break
        sleep(max(0.0, min(opts.poll, opts.timeout - (now - start))))
    res.seconds = clock() - start
    return res


def _active(t: dict) -> bool:
    return t.get("DesiredState") == "running" and \
        (t.get("Status") or {}).get("State") in ACTIVE_STATES


def _svc_name(services: dict, sid: str) -> str:
    return (services.get(sid) or {}).get("Spec", {}).get("Name", sid[:12])


def _service_placement(tasks: list[dict], drained: str) -> str | None:
    """None when every task meant to run (not on the drained node) is running; else why not:
    "cannot place: <scheduler message>" or "starting: ..."."""
    want = [t for t in tasks if t.get("DesiredState") == "running" and t.get("NodeID") != drained]
    for t in want:
        st = t.get("Status") or {}
        if st.get("State") == "running":
            continue
        msg = st.get("Err") or st.get("Message") or st.get("State", "")
        if st.get("State") == "pending" and ("no suitable node" in msg or "insufficient" in msg):
            return f"cannot place: {msg}"
        return f"starting: {msg}"
    return None


# --- roles ----------------------------------------------------------------------------

def promote_node(api, ref: str, *, force: bool = False) -> NodeChange:
    nodes = api.nodes()
    node = find_node(nodes, ref)
    res = NodeChange(node_name(node))
    if is_manager(node):
        return res
    count = quorum_of(nodes).managers + 1
    if count % 2 == 0 and not force:
        raise QuorumRefused(
            f"refusing to promote {res.node}: the swarm would have {count} managers, an even "
            f"number, which tolerates no more failures than {count - 1} while needing one more "
            "for a majority. Promote two nodes (one after the other, the first with --force) or "
            "pass --force")
    _set_spec(api, node, Role="manager")
    res.changes.append(f"{res.node}: promoted to manager ({count} managers)")
    if count % 2 == 0:
        res.notes.append(f"{count} managers is an even number: quorum needs {count // 2 + 1}")
    return res


def demote_node(api, ref: str, *, lock: Callable[[], ContextManager] | None = None) -> NodeChange:
    """`lock`: the cluster's managers lock (provision/managers.py), taken for a manager; the
    quorum check is then made under it."""
    node = find_node(api.nodes(), ref)
    if lock is not None and is_manager(node):
        with lock():
            return demote_node(api, node["ID"])
    nodes = api.nodes()
    node = find_node(nodes, node["ID"])
    res = NodeChange(node_name(node))
    if not is_manager(node):
        return res
    after = check_manager_removal(nodes, node, "demote")
    _set_spec(api, node, Role="worker")
    res.changes.append(f"{res.node}: demoted to worker ({after.managers} managers left)")
    if after.managers % 2 == 0:
        res.notes.append(f"{after.managers} managers is an even number: promote another node to "
                         "keep the failure tolerance")
    return res


def label_node(api, ref: str, add: dict[str, str], remove: list[str]) -> NodeChange:
    node = find_node(api.nodes(), ref)
    res = NodeChange(node_name(node))
    have = dict(node["Spec"].get("Labels") or {})
    want = {k: v for k, v in have.items() if k not in remove} | add
    if want != have:
        _set_spec(api, node, Labels=lambda spec: {
            k: v for k, v in (spec.get("Labels") or {}).items() if k not in remove} | add)
        parts = [f"{k}={v}" for k, v in sorted(add.items()) if have.get(k) != v] + \
            [f"-{k}" for k in sorted(remove) if k in have]
        res.changes.append(f"{res.node}: labels " + " ".join(parts))
    return res


# --- removal ------------------------------------------------------------------------------

FORCE_MEANING = ("--force removes the node from the swarm's records without it leaving: its "
                 "tasks were already rescheduled when it went down; if the host comes back, its "
                 "engine still believes it is in the swarm and must leave it before it can join "
                 "again (`docker swarm leave --force` on it, or `swarmsmith up --force` for a host "
                 "of the cluster file)")


@dataclass
class RemoveOptions:
    force: bool = False
    drain: DrainOptions = field(default_factory=DrainOptions)
    down_timeout: float = 60.0      # seconds for the node to show down after it left


def leave_over_ssh(cluster_path: str) -> Callable[[str], None]:
    """The `leave` of remove_node for a cluster's inventory: `docker swarm leave` over SSH on
    the host of that name; a node the inventory does not have cannot be made to leave."""
    def leave(hostname: str) -> None:
        from .command import Command
        from .dockerapi import inventory_hosts, session_for
        hosts = {h.name: h for h in inventory_hosts(cluster_path)}
        host = hosts.get(hostname)
        if host is None:
            raise SwarmsmithError(f"node {hostname}: not a host of this cluster's inventory, so "
                                  "swarmsmith cannot make it leave; use --force")
        s = session_for(host)
        try:
            s.run(Command.of("docker", "swarm", "leave", description="leave the swarm"))
        finally:
            s.close()
    return leave


def _refuse_down(name: str, down: bool, force: bool) -> None:
    if down and not force:
        raise SwarmsmithError(f"node {name} is down: it cannot drain or leave. Remove it with "
                              f"--force ({FORCE_MEANING})")


def remove_node(api, ref: str, opts: RemoveOptions | None = None, *,
                leave: Callable[[str], None] | None = None,
                on_progress: Progress | None = None,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep,
                lock: Callable[[], ContextManager] | None = None) -> NodeChange:
    """Drain, make the node leave (`leave(hostname)` runs `docker swarm leave` on it), wait until
    the swarm sees it down, then remove it. A manager is demoted first, refused when that would
    lose quorum or the last manager. With force: demote if a manager, then remove at once.
    `lock`: the cluster's managers lock, held from the quorum check through the demotion."""
    opts = opts or RemoveOptions()
    say = on_progress or (lambda msg: None)
    node = find_node(api.nodes(), ref)
    name = node_name(node)
    res = NodeChange(name)
    down = (node.get("Status") or {}).get("State") == "down"
    if is_manager(node):
        with (lock() if lock is not None else contextlib.nullcontext()):
            nodes = api.nodes()
            node = find_node(nodes, node["ID"])
            check_manager_removal(nodes, node, "remove")
            _refuse_down(name, down, opts.force)
            res.changes += demote_node(api, node["ID"]).changes
    _refuse_down(name, down, opts.force)
    if opts.force:
        res.notes.append(FORCE_MEANING)
        api.remove_node(node["ID"], force=True)
        res.changes.append(f"{name}: removed from the swarm (--force)")
        return res
    dr = drain_node(api, node["ID"], opts.drain, on_progress=on_progress, clock=clock, sleep=sleep)
    res.changes += dr.changes
    if dr.exit_code == EXIT_TIMED_OUT:
        raise SwarmsmithError(f"node {name}: tasks still on it after {opts.drain.timeout:g} s "
                              f"({', '.join(dr.remaining)}); not removed", host=name)
    if dr.unplaced:
        res.notes.append("could not be placed elsewhere: " + "; ".join(
            f"{k}: {v}" for k, v in sorted(dr.unplaced.items())))
    if leave is None:
        raise SwarmsmithError(f"node {name}: no way to reach the host to make it leave; "
                              f"use --force ({FORCE_MEANING})")
    say(f"{name}: leaving the swarm")
    leave(name)
    res.changes.append(f"{name}: left the swarm")
    end = clock() + opts.down_timeout
    while (api.node(node["ID"]).get("Status") or {}).get("State") != "down":
        if clock() >= end:
            raise SwarmsmithError(f"node {name} left but the swarm still shows it up after "
                                  f"{opts.down_timeout:g} s; run again", host=name)
        sleep(0.5)
    api.remove_node(node["ID"])
    res.changes.append(f"{name}: removed from the swarm")
    return res
