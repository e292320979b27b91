"""Node operations for operators: drain (waiting until the node's tasks run elsewhere), activate,
pause, promote, demote, label and rm, with the quorum refusals.

Library functions take an EngineAPI (provision/engine_api/adapter.py, or a fake with its methods), typed
options, an injected clock/sleep and an optional progress callback; they return typed results and
raise SwarmsmithError subclasses. Nothing here prints.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, ContextManager

from ..base.errors import (EXIT_DEPLOY_FAILED, EXIT_OK, EXIT_TIMED_OUT, InputError, SwarmsmithError)
from ..base.progress import ProgressCallback, lines_to
from ..engine_api.node_names import NodeNames, NodeNotFound  # noqa: F401  (NodeNotFound: callers catch it here)
from .quorum import QuorumRefused, check_manager_removal, is_manager, node_name, quorum_of

ACTIVE_STATES = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting",
                 "running")


# --- finding nodes ------------------------------------------------------------------------

def _found(api, ref: str, names, nodes: list[dict] | None = None):
    """(nodes, the node, how it is shown: `m1 (hostname)`) for a command's NODE argument."""
    names = names or NodeNames()
    nodes = api.nodes() if nodes is None else nodes
    node = names.find(nodes, ref)
    return nodes, node, names.show(node)


def node_row(n: dict, names=None) -> dict:
    ms = n.get("ManagerStatus") or {}
    desc = n.get("Description") or {}
    return {"hostname": node_name(n), "name": names.name_of(n) if names else "", "id": n["ID"],
            "role": n["Spec"].get("Role"),
            "availability": n["Spec"].get("Availability"), "state": n["Status"].get("State"),
            "manager": ("leader" if ms.get("Leader") else ms.get("Reachability", "")) if ms else "",
            "addr": n["Status"].get("Addr", ""),
            "engine": (desc.get("Engine") or {}).get("EngineVersion", ""),
            "labels": n["Spec"].get("Labels") or {}}


def list_nodes(api, names=None) -> dict:
    """Every node with both its names: the cluster file's (`name`, "" for a node no host of
    the cluster is) and its hostname."""
    nodes = api.nodes()
    if names is not None:
        names.bind(nodes)
    return {"nodes": sorted((node_row(n, names) for n in nodes),
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
    from ..engine_api.adapter import change_node

    def change(spec: dict) -> dict | None:
        new = {k: v(spec) if callable(v) else v for k, v in changes.items()}
        return None if all(spec.get(k) == v for k, v in new.items()) else {**spec, **new}
    return change_node(api, node["ID"], change, node=node)


def set_availability(api, ref: str, availability: str, names=None) -> NodeChange:
    """activate / pause (drain waits: see drain_node)."""
    if availability not in ("active", "pause", "drain"):
        raise InputError(f"availability {availability}: expected active, pause or drain")
    _, node, shown = _found(api, ref, names)
    res = NodeChange(shown)
    if _set_spec(api, node, Availability=availability):
        res.changes.append(f"{res.node}: availability {node['Spec'].get('Availability')} -> "
                           f"{availability}")
    return res


def drain_node(api, ref: str, opts: DrainOptions | None = None, *, names=None,
               on_progress: ProgressCallback | None = None,
               clock: Callable[[], float] = time.monotonic,
               sleep: Callable[[float], None] = time.sleep) -> DrainResult:
    """Set the node to drain and wait (bounded) until it runs no service task and the services
    it ran have all their replicas running elsewhere. Services whose new tasks cannot be placed,
    or are rejected or fail where they were placed (an image the node lacks), are named with
    the scheduler's or the node's reason (exit 10); the deadline passing first gives exit 12.
    A node drained already is checked the same way, for the services that ran on it (its task
    history) and those short of replicas: a re-run tells whether they run elsewhere now."""
    opts = opts or DrainOptions()
    say = lines_to(on_progress)
    nodes, node, name = _found(api, ref, names)
    shown = {n["ID"]: (names or NodeNames()).show(n) for n in nodes}
    nid = node["ID"]
    res = DrainResult(name)
    start = clock()
    history = api.tasks(filters={"node": nid})
    before = [t for t in history if _active(t)]
    affected = sorted({t["ServiceID"] for t in before})
    rerun = not before and node["Spec"].get("Availability") == "drain"
    services = {s["ID"]: s for s in api.services()} if affected or rerun else {}
    if rerun:
        # nothing runs here: the services that did must run elsewhere for the drain to be
        # done. The node's task history names them only for a while (swarm keeps a few tasks
        # per slot, and a task rejected again and again elsewhere pushes the old ones out), so
        # every service short of its replicas is checked too.
        affected = sorted({t["ServiceID"] for t in history if t.get("ServiceID")}
                          | _short(services, api.tasks()))
    # failures seen before this run belong to another story (a first run: not the drain's)
    old_failures = set() if rerun else {
        t["ID"] for sid in affected if sid in services
        for t in api.tasks(filters={"service": sid}) if _failed(t)}
    if _set_spec(api, node, Availability="drain"):
        res.changes.append(f"{name}: availability {node['Spec'].get('Availability')} -> drain")
        say(f"{name}: drain set; {len(before)} task(s) of {len(affected)} service(s) to move")
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
            state = _service_placement(api.tasks(filters={"service": sid}), nid,
                                       _replicas(services[sid]), old_failures, shown)
            if state is not None:
                waiting[sid] = state
        for sid in list(stuck_since):
            if sid not in waiting or waiting[sid].split(":", 1)[0] != stuck_since[sid][1]:
                del stuck_since[sid]
        for sid, why in waiting.items():
            kind = why.split(":", 1)[0]
            if kind in ("cannot place", "rejected"):
                stuck_since.setdefault(sid, (now, kind))
        unplaced = {sid: waiting[sid] for sid, (t0, _) in stuck_since.items()
                    if now - t0 >= opts.settle}
        summary = (len(on_node), len(waiting))
        if summary != last:
            say(f"{name}: {len(on_node)} task(s) still on the node, "
                f"{len(waiting)} service(s) not yet running elsewhere")
            last = summary
        pending_other = set(waiting) - set(unplaced)
        if not on_node and not pending_other:
            res.unplaced = {_svc_name(services, sid): _reason(why)
                            for sid, why in unplaced.items()}
            res.moved = sorted(_svc_name(services, sid) for sid in affected
                               if sid not in unplaced and sid not in global_ids
                               and sid in services)
            res.exit_code = EXIT_DEPLOY_FAILED if res.unplaced else EXIT_OK
            break
        if now - start >= opts.timeout:
            res.remaining = sorted(f"{_svc_name(services, t['ServiceID'])}.{t.get('Slot') or ''}"
                                   .rstrip(".") for t in on_node)
            res.unplaced = {_svc_name(services, sid): _reason(why)
                            for sid, why in waiting.items()}
            res.moved = sorted(_svc_name(services, sid) for sid in affected
                               if sid not in waiting and sid not in global_ids
                               and sid in services)
            res.exit_code = EXIT_TIMED_OUT
            break
        sleep(max(0.0, min(opts.poll, opts.timeout - (now - start))))
    res.seconds = clock() - start
    return res


def _active(t: dict) -> bool:
    return t.get("DesiredState") == "running" and \
        (t.get("Status") or {}).get("State") in ACTIVE_STATES


def _short(services: dict, tasks: list[dict]) -> set[str]:
    """Replicated services with fewer running tasks than replicas."""
    running: dict[str, int] = {}
    for t in tasks:
        if _active(t) and (t.get("Status") or {}).get("State") == "running":
            running[t["ServiceID"]] = running.get(t["ServiceID"], 0) + 1
    return {sid for sid, s in services.items()
            if (_replicas(s) or 0) > running.get(sid, 0)}


def _failed(t: dict) -> bool:
    return (t.get("Status") or {}).get("State") in ("rejected", "failed")


def _reason(why: str) -> str:
    """"cannot place: MSG" -> MSG; "rejected: on NODE: ERR" -> "rejected on NODE: ERR"."""
    kind, _, rest = why.partition(": ")
    return f"{kind} {rest}" if kind == "rejected" else rest


def _replicas(service: dict) -> int | None:
    mode = (service.get("Spec") or {}).get("Mode") or {}
    return (mode.get("Replicated") or {}).get("Replicas", 1) if "Replicated" in mode else None


def _svc_name(services: dict, sid: str) -> str:
    return (services.get(sid) or {}).get("Spec", {}).get("Name", sid[:12])


def _service_placement(tasks: list[dict], drained: str, replicas: int | None = None,
                       old_failures=frozenset(), shown: dict | None = None) -> str | None:
    """None when the service's replicas all run (none on the drained node); else why not:
    "cannot place: <scheduler message>", "rejected: on <node>: <error>" (the newest task that
    was rejected or failed on another node since the drain, while the service is short), or
    "starting: ...". `shown`: node ID -> how the node is named."""
    want = [t for t in tasks if t.get("DesiredState") == "running" and t.get("NodeID") != drained]
    running = [t for t in want if (t.get("Status") or {}).get("State") == "running"]
    if len(running) == len(want) and (replicas is None or len(running) >= replicas):
        return None
    for t in want:
        st = t.get("Status") or {}
        msg = st.get("Err") or st.get("Message") or st.get("State", "")
        if st.get("State") == "pending" and ("no suitable node" in msg or "insufficient" in msg):
            return f"cannot place: {msg}"
    failed = sorted((t for t in tasks if _failed(t) and t["ID"] not in old_failures
                     and t.get("NodeID") and t.get("NodeID") != drained),
                    key=lambda t: (t.get("Status") or {}).get("Timestamp", ""))
    if failed:
        t = failed[-1]
        st = t.get("Status") or {}
        where = (shown or {}).get(t["NodeID"], t["NodeID"][:12])
        return f"rejected: on {where}: {st.get('Err') or st.get('Message') or st.get('State')}"
    for t in want:
        st = t.get("Status") or {}
        if st.get("State") != "running":
            return f"starting: {st.get('Err') or st.get('Message') or st.get('State', '')}"
    return f"starting: {len(running)} of {replicas} running"


# --- roles ----------------------------------------------------------------------------

def promote_node(api, ref: str, *, force: bool = False, names=None) -> NodeChange:
    nodes, node, shown = _found(api, ref, names)
    res = NodeChange(shown)
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


def demote_node(api, ref: str, names=None, *,
                lock: Callable[[], ContextManager] | None = None) -> NodeChange:
    """`lock`: the cluster's managers lock (provision/swarm/managers.py), taken for a manager; the
    quorum check is then made under it."""
    nodes, node, shown = _found(api, ref, names)
    if lock is not None and is_manager(node):
        with lock():
            return demote_node(api, node["ID"], names)
    res = NodeChange(shown)
    if not is_manager(node):
        return res
    after = check_manager_removal(nodes, node, "demote")
    _set_spec(api, node, Role="worker")
    res.changes.append(f"{res.node}: demoted to worker ({after.managers} managers left)")
    if after.managers % 2 == 0:
        res.notes.append(f"{after.managers} managers is an even number: promote another node to "
                         "keep the failure tolerance")
    return res


def label_node(api, ref: str, add: dict[str, str], remove: list[str],
               names=None) -> NodeChange:
    _, node, shown = _found(api, ref, names)
    res = NodeChange(shown)
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
    the host that is that node (named by the file's name, hostname or node ID); a node the
    inventory does not have cannot be made to leave."""
    def leave(ref: str) -> None:
        from ..remote import docker_cli
        from ..engine_api.sessions import inventory_hosts, session_for
        from ..engine_api.access import for_cluster
        hosts = {h.name: h for h in inventory_hosts(cluster_path)}
        host = hosts.get(for_cluster(cluster_path).host_name(ref, hosts))
        if host is None:
            raise SwarmsmithError(f"node {ref}: not a host of this cluster's inventory, so "
                                  "swarmsmith cannot make it leave; use --force")
        s = session_for(host)
        try:
            s.run(docker_cli.swarm_leave("leave the swarm", force=False))
        finally:
            s.close()
    return leave


def _refuse_down(name: str, down: bool, force: bool) -> None:
    if down and not force:
        raise SwarmsmithError(f"node {name} is down: it cannot drain or leave. Remove it with "
                              f"--force ({FORCE_MEANING})")


def remove_node(api, ref: str, opts: RemoveOptions | None = None, *, names=None,
                leave: Callable[[str], None] | None = None,
                on_progress: ProgressCallback | None = None,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep,
                lock: Callable[[], ContextManager] | None = None) -> NodeChange:
    """Drain, make the node leave (`leave(node ID)` runs `docker swarm leave` on it), wait until
    the swarm sees it down, then remove it. A manager is demoted first, refused when that would
    lose quorum or the last manager. With force: demote if a manager, then remove at once.
    `lock`: the cluster's managers lock, held from the quorum check through the demotion."""
    opts = opts or RemoveOptions()
    say = lines_to(on_progress)
    nodes, node, name = _found(api, ref, names)
    res = NodeChange(name)
    down = (node.get("Status") or {}).get("State") == "down"
    if is_manager(node):
        with (lock() if lock is not None else contextlib.nullcontext()):
            nodes, node, _ = _found(api, node["ID"], names)      # read again under the lock
            check_manager_removal(nodes, node, "remove")
            _refuse_down(name, down, opts.force)
            res.changes += demote_node(api, node["ID"], names).changes
    _refuse_down(name, down, opts.force)
    if opts.force:
        res.notes.append(FORCE_MEANING)
        api.remove_node(node["ID"], force=True)
        res.changes.append(f"{name}: removed from the swarm (--force)")
        return res
    dr = drain_node(api, node["ID"], opts.drain, names=names, on_progress=on_progress,
                    clock=clock, sleep=sleep)
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
    leave(node["ID"])
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
