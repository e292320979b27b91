"""`swarmsmith engine upgrade`: install an engine version on every node of a running swarm, node
by node, without losing quorum or a service's placement.

Order: workers first, in batches chosen from the live task placement so that no batch holds
more than one running task of a replicated service and every service still has enough eligible
nodes left; then managers one at a time, the leader last, each only when the others keep
quorum. Per batch: drain, wait until the tasks run elsewhere, install, restart, wait until the
engine answers and the node is Ready (managers: reachable again, a leader elected), restore
its availability, wait until every service is at full strength again. The first failure stops
the run and says which node is in which state.

Planning (batches, constraint matching, quorum arithmetic) is pure and tested with tables; the
swarm is read and changed through the docker CLI over SSH on a manager that is not being
restarted, so the run survives each manager's restart.
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Callable

from .engine import install as engine
from .remote import facts as F
from .remote import docker_cli
from .remote.command import Command
from .base.errors import InputError, SwarmsmithError
from .base.progress import HostProgress, ProgressCallback, emit



# the cluster's managers lock cannot be renewed: longer than an upgrade of many nodes takes
LOCK_TTL = 6 * 3600.0


class UpgradeError(SwarmsmithError):
    pass


class UpgradeRefused(UpgradeError):
    """Not started, or not continued: restarting the next node would lose quorum or leave a
    service without room (exit 5: refused, nothing more changed)."""

    exit_code = 5


@dataclass
class UpgradeOptions:
    version: str = ""            # "" -> engine.version of the cluster file, else the newest
    dry_run: bool = False
    max_batch: int = 0           # workers restarted at once; 0 -> up to half of the workers
    drain_timeout: float = 300.0
    ready_timeout: float = 180.0
    poll: float = 0.5


@dataclass
class UpgradeResult:
    cluster: str
    version: str
    order: list[list[str]]                       # batches of node names, in order
    versions: dict[str, str] = field(default_factory=dict)   # node -> engine before
    changes: list[str] = field(default_factory=list)
    done: list[str] = field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "version": self.version or "newest available",
                "order": self.order, "versions": self.versions, "changes": self.changes,
                "done": self.done, "dry_run": self.dry_run}


# --- pure planning ------------------------------------------------------------------------

def _name(node: dict) -> str:
    return (node.get("Description") or {}).get("Hostname", "") or node["ID"][:12]


def _role(node: dict) -> str:
    return node["Spec"].get("Role", "worker")


def _reachable(node: dict) -> bool:
    ms = node.get("ManagerStatus") or {}
    return bool(ms.get("Leader")) or ms.get("Reachability") == "reachable"


def quorum_after_losing_one(nodes: list[dict]) -> tuple[bool, str]:
    """May one more manager go down for a while? (True, "") or (False, why)."""
    managers = [n for n in nodes if _role(n) == "manager"]
    reachable = sum(1 for n in managers if _reachable(n))
    majority = len(managers) // 2 + 1
    if len(managers) == 1:
        return True, ""       # a single manager is down during its restart whatever we do
    if reachable - 1 < majority:
        return False, (f"{reachable} of {len(managers)} managers reachable: restarting one "
                       f"more would leave {reachable - 1}, and quorum needs {majority}")
    return True, ""


def quorum_whole(nodes: list[dict]) -> bool:
    managers = [n for n in nodes if _role(n) == "manager"]
    return bool(managers) and all(_reachable(n) for n in managers) and \
        any((n.get("ManagerStatus") or {}).get("Leader") for n in managers)


def constraint_ok(node: dict, expr: str) -> bool:
    """One placement constraint (`node.role==worker`, `node.labels.zone!=a`, ...) against a
    node. Constraints on engine labels are not known from the node list: taken as met."""
    op = "!=" if "!=" in expr else "=="
    key, _, want = (part.strip() for part in expr.partition(op))
    spec, desc = node["Spec"], node.get("Description") or {}
    if key == "node.role":
        have = _role(node)
    elif key == "node.hostname":
        have = desc.get("Hostname", "")
    elif key == "node.id":
        have = node["ID"]
    elif key.startswith("node.labels."):
        have = (spec.get("Labels") or {}).get(key[len("node.labels."):])
    elif key == "node.platform.os":
        have = (desc.get("Platform") or {}).get("OS", "")
    elif key == "node.platform.arch":
        have = (desc.get("Platform") or {}).get("Architecture", "")
    else:
        return True
    return (have == want) if op == "==" else (have != want)


def _replicated(service: dict) -> int | None:
    mode = service["Spec"].get("Mode") or {}
    if "Replicated" in mode:
        return int(mode["Replicated"].get("Replicas", 1))
    return None


def _per_node_cap(service: dict) -> int | None:
    spec = service["Spec"]
    placement = (spec.get("TaskTemplate") or {}).get("Placement") or {}
    cap = placement.get("MaxReplicas") or None
    ports = (spec.get("EndpointSpec") or {}).get("Ports") or []
    if any(p.get("PublishMode") == "host" for p in ports):
        cap = 1        # one task per node can hold a host-mode port
    return cap


def _eligible(service: dict, nodes: list[dict], out: set[str]) -> list[dict]:
    placement = (service["Spec"].get("TaskTemplate") or {}).get("Placement") or {}
    cons = placement.get("Constraints") or []
    return [n for n in nodes if n["ID"] not in out and n["Spec"].get("Availability") == "active"
            and (n.get("Status") or {}).get("State") == "ready"
            and all(constraint_ok(n, c) for c in cons)]


def batch_problem(batch: list[dict], nodes: list[dict], services: list[dict],
                  tasks: list[dict]) -> str | None:
    """Why taking `batch` down now would put a service below replicas-1 or leave it
    unplaceable; None when it is safe."""
    out = {n["ID"] for n in batch}
    running = [t for t in tasks if t.get("DesiredState") == "running"
               and (t.get("Status") or {}).get("State") == "running"]
    for s in services:
        replicas = _replicated(s)
        if not replicas:
            continue
        name = s["Spec"]["Name"]
        here = sum(1 for t in running if t["ServiceID"] == s["ID"] and t.get("NodeID") in out)
        if here > 1 and len(batch) > 1:
            return f"{name} has {here} running tasks on these nodes"
        left = _eligible(s, nodes, out)
        cap = _per_node_cap(s)
        room = len(left) * cap if cap else (replicas if left else 0)
        if room < replicas:
            return (f"{name} needs room for {replicas} replicas; without "
                    f"{', '.join(sorted(_name(n) for n in batch))} the nodes it may run on "
                    f"hold {room}")
    return None


def next_worker_batch(left: list[dict], nodes: list[dict], services: list[dict],
                      tasks: list[dict], max_batch: int) -> list[dict]:
    """The largest safe batch (greedy, in name order) of workers still to do."""
    batch: list[dict] = []
    for n in sorted(left, key=_name):
        if len(batch) >= max_batch:
            break
        if batch_problem(batch + [n], nodes, services, tasks) is None:
            batch.append(n)
    if not batch:
        first = sorted(left, key=_name)[0]
        raise UpgradeRefused(f"{_name(first)}: draining it would leave a service without "
                             f"room: {batch_problem([first], nodes, services, tasks)}")
    return batch


def plan_order(nodes: list[dict], services: list[dict], tasks: list[dict],
               max_batch: int) -> list[list[str]]:
    """The order from the current placement (the run re-chooses worker batches from the
    placement it finds before each one, so it may differ where tasks moved meanwhile)."""
    workers = [n for n in nodes if _role(n) == "worker"]
    order = []
    left = list(workers)
    while left:
        batch = next_worker_batch(left, nodes, services, tasks, max_batch)
        order.append([_name(n) for n in batch])
        ids = {n["ID"] for n in batch}
        left = [n for n in left if n["ID"] not in ids]
    return order + [[_name(n)] for n in managers_in_order(nodes)]


def managers_in_order(nodes: list[dict]) -> list[dict]:
    """Followers first, the leader last (one leader election instead of one per restart)."""
    managers = [n for n in nodes if _role(n) == "manager"]
    return sorted(managers, key=lambda n: (bool((n.get("ManagerStatus") or {}).get("Leader")),
                                           _name(n)))


def default_max_batch(nodes: list[dict]) -> int:
    return max(1, sum(1 for n in nodes if _role(n) == "worker") // 2)


# --- the swarm, through the docker CLI on a manager ---------------------------------------

NODES = F.NODES
SERVICES = docker_cli.SERVICES_INSPECT
TASKS = docker_cli.RUNNING_TASKS_INSPECT


# A node label that keeps a node's availability from before its drain, so a run that is killed
# while the node is drained gives it back on the next run instead of taking "drain" for the
# operator's choice.
MARK = "swarmsmith.engine-upgrade.availability"


def availability_before(node: dict) -> str:
    labels = node["Spec"].get("Labels") or {}
    if labels.get(MARK) in ("active", "pause", "drain"):
        return labels[MARK]
    return node["Spec"].get("Availability", "active")


def set_availability(node_id: str, availability: str) -> Command:
    return docker_cli.node_availability(node_id, availability)


class Swarm:
    """Reads and changes the swarm through any manager that answers, skipping the ones that
    are being restarted."""

    def __init__(self, sessions: dict, managers: list[str], sleep=time.sleep):
        self.sessions = sessions
        self.managers = list(managers)
        self.busy: set[str] = set()
        self.sleep = sleep

    def _run(self, cmd: Command):
        errors = []
        for name in [m for m in self.managers if m not in self.busy]:
            for attempt in range(1, 6):
                r = self.sessions[name].run(cmd, check=False, timeout=60)
                if r.ok:
                    return r
                # a node back from its restart updates its own record: `docker node update`
                # read the version before that and is refused; it reads it again when re-run
                if "out of sequence" not in r.stderr + r.stdout or attempt == 5:
                    break
                self.sleep(0.1 * attempt)
            errors.append(f"{name}: {r.stderr.strip()[-200:]}")
        raise UpgradeError(f"{cmd.description}: no manager answered ({'; '.join(errors)})")

    def json(self, cmd: Command) -> list:
        return json.loads(self._run(cmd).stdout or "[]")

    def nodes(self) -> list[dict]:
        return self.json(NODES)

    def services(self) -> list[dict]:
        return self.json(SERVICES)

    def tasks(self) -> list[dict]:
        return self.json(TASKS)

    def set_availability(self, node_id: str, availability: str) -> None:
        self._run(set_availability(node_id, availability))

    def mark(self, node_id: str, availability: str) -> None:
        self._run(docker_cli.node_label_add(node_id, f"{MARK}={availability}",
                                            "remember the node's availability"))

    def unmark(self, node_id: str) -> None:
        self._run(docker_cli.node_label_rm(node_id, MARK, "forget the remembered availability"))


# --- the run ------------------------------------------------------------------------------

BUSY_STATES = ("new", "pending", "assigned", "accepted", "preparing", "ready", "starting",
               "running")


def drain(swarm, nodes: list[dict], timeout: float, poll: float = 0.5,
          progress: Callable[[str, str], None] | None = None, clock=time.monotonic,
          sleep=time.sleep) -> None:
    """Set `nodes` to drain and wait (bounded) until none of them runs a service task. `swarm`
    is anything with set_availability(id, availability) and tasks() (running-desired tasks as
    the Engine API shows them)."""
    ids = {n["ID"] for n in nodes}
    names = ", ".join(_name(n) for n in nodes)
    for n in nodes:
        if n["Spec"].get("Availability") != "drain":
            swarm.set_availability(n["ID"], "drain")
        if progress:
            progress(_name(n), "drained")

    def tasks_left():
        here = [t for t in swarm.tasks() if t.get("NodeID") in ids
                and (t.get("Status") or {}).get("State") in BUSY_STATES]
        return f"{len(here)} task(s) still on {names}" if here else None
    _wait(f"drain {names}", tasks_left, timeout, poll, clock, sleep)


def _wait(what: str, check: Callable[[], str | None], timeout: float, poll: float,
          clock=time.monotonic, sleep=time.sleep) -> None:
    """Poll `check` (None when done, else what is still awaited) until done or the deadline."""
    end = clock() + timeout
    while True:
        pending = check()
        if pending is None:
            return
        if clock() > end:
            raise UpgradeError(f"{what}: not done after {timeout:.0f}s ({pending})")
        sleep(poll)


def _not_ready(swarm: Swarm, wanted: dict) -> str | None:
    """Which of `wanted` (node ID -> name) are not Ready now, or None."""
    view = {n["ID"]: n for n in swarm.nodes()}
    waiting = sorted(name for node_id, name in wanted.items()
                     if (view.get(node_id, {}).get("Status") or {}).get("State") != "ready")
    return "not Ready: " + ", ".join(waiting) if waiting else None


def services_short(swarm: Swarm) -> str | None:
    services = {s["ID"]: s for s in swarm.services()}
    # a manager just restarted (a new leader) still lists the tasks of a node that went down
    # as running until that node reports again: only tasks on Ready nodes count
    ready = {n["ID"] for n in swarm.nodes() if (n.get("Status") or {}).get("State") == "ready"}
    running: dict[str, int] = {}
    for t in swarm.tasks():
        if (t.get("Status") or {}).get("State") == "running" and t.get("NodeID") in ready:
            running[t["ServiceID"]] = running.get(t["ServiceID"], 0) + 1
    short = [f"{s['Spec']['Name']} {running.get(sid, 0)}/{_replicated(s)}"
             for sid, s in services.items()
             if _replicated(s) is not None and running.get(sid, 0) < _replicated(s)]
    return ", ".join(sorted(short)) or None


class Upgrader:
    def __init__(self, swarm: Swarm, sessions: dict, facts: dict, install: str, version: str,
                 opts: UpgradeOptions, progress: Callable[[str, str], None], clock=time.monotonic,
                 sleep=time.sleep, lock=None, apt: dict | None = None):
        self.swarm, self.sessions, self.facts = swarm, sessions, facts
        # node -> engine.AptSettings: how `up` lets the host reach packages (the cluster
        # file's proxy and mirror, else the provider's proxy); an upgrade installs the same way
        self.apt = apt or {}
        # the cluster's managers lock (provision/swarm/managers.py), held for the whole run: a
        # backup or another upgrade would otherwise stop a manager of its own while this one
        # restarts one; the quorum checks below are made under it
        self.lock = lock or contextlib.nullcontext
        self.install, self.version, self.opts = install, version, opts
        self.say, self.clock, self.sleep = progress, clock, sleep
        self.result: UpgradeResult | None = None
        self.where: dict[str, str] = {}       # node -> the state it is left in
        self.before: dict[str, str] = {}      # node ID -> its availability before the drain

    def wait(self, what, check, timeout):
        _wait(what, check, timeout, self.opts.poll, self.clock, self.sleep)

    def batch(self, nodes: list[dict]) -> None:
        names = [_name(n) for n in nodes]
        manager = any(_role(n) == "manager" for n in nodes)
        if manager:
            ok, why = quorum_after_losing_one(self.swarm.nodes())
            if not ok:
                raise UpgradeRefused(f"{names[0]}: not restarted: {why}")
            self.swarm.busy.update(n for n in names if n in self.swarm.managers
                                   and len(self.swarm.managers) > 1)
        before = {n["ID"]: availability_before(n) for n in nodes}
        self.before.update(before)
        for n in nodes:
            self.where[_name(n)] = "being drained"
            if MARK not in (n["Spec"].get("Labels") or {}):
                self.swarm.mark(n["ID"], before[n["ID"]])
        drain(self.swarm, nodes, self.opts.drain_timeout, self.opts.poll, self.say,
              self.clock, self.sleep)
        for name in names:
            self.where[name] = "drained"
        for name in names:
            self.where[name] = "drained, engine being installed"
            self.install_on(name)
            self.where[name] = "drained, engine restarted"
        by_name = {_name(n): n for n in nodes}

        def not_ready():
            view = {n["ID"]: n for n in self.swarm.nodes()}
            waiting = [name for name, n in by_name.items()
                       if (view.get(n["ID"], {}).get("Status") or {}).get("State") != "ready"
                       or (_role(n) == "manager" and not _reachable(view.get(n["ID"], {})))]
            if waiting:
                return "not Ready: " + ", ".join(waiting)
            if manager and not quorum_whole(list(view.values())):
                return "managers not all reachable with a leader yet"
            return None
        self.swarm.busy.difference_update(names)
        self.wait(f"{', '.join(names)} Ready", not_ready, self.opts.ready_timeout)
        if manager:
            self.say(names[0], "Ready; quorum whole again (every manager reachable, a leader)")
        for n in nodes:
            self.swarm.set_availability(n["ID"], before[n["ID"]])
            self.swarm.unmark(n["ID"])
            self.where[_name(n)] = f"upgraded, {before[n['ID']]}"
            self.say(_name(n), f"availability {before[n['ID']]} again")
        self.wait("services at full strength", lambda: services_short(self.swarm),
                  self.opts.drain_timeout)

    def install_on(self, name: str) -> None:
        s, facts = self.sessions[name], self.facts[name]
        # a host whose engine came preinstalled never had `up` set its apt proxy or mirror: the
        # install needs them as much as up's would (a lab host has no route out but the proxy)
        for step in engine.apt_steps(facts, self.apt.get(name) or engine.AptSettings()):
            s.run(step.command, timeout=step.timeout)
            self.result.changes.append(f"{name}: {step.change}")
            self.say(name, step.change)
        family = {facts.get("os", "")} | set(facts.get("os_like", "").split())
        same = bool(self.version) and engine.version_matches(facts.get("server", ""), self.version)
        change, script = engine.install_script(self.install, family, self.version, reinstall=same)
        from .remote.parallel import ticking
        with ticking(self.say, name, ("re-installing" if same else "installing") + " the engine"):
            r = s.run(Command.shell(script, description="install the Docker engine"),
                      check=False, timeout=engine.INSTALL_TIMEOUT)
        if not r.ok:
            raise UpgradeError(f"install failed: {(r.stderr or r.stdout).strip()[-400:]}",
                               host=name)
        after = F.parse_engine_facts(s.run(F.ENGINE_FACTS).stdout)
        with ticking(self.say, name, "waiting for the engine to answer"):   # up to 2 minutes
            s.run(engine._restart(after) if after.get("server") else engine._start(after))
            s.run(engine.WAIT_SERVER)
        now = F.parse_engine_facts(s.run(F.ENGINE_FACTS).stdout).get("server", "")
        if self.version and not engine.version_matches(now, self.version):
            raise UpgradeError(f"engine runs {now} after the install, not {self.version}",
                               host=name)
        was = facts.get("server", "")
        text = (f"engine {was} -> {now}" if was != now else
                f"engine {now} re-installed" if same else f"engine {now} already the newest")
        self.result.changes.append(f"{name}: {text}")
        self.say(name, text + ", restarted")

    def run(self, result: UpgradeResult) -> UpgradeResult:
        with self.lock():
            return self._run(result)

    def _run(self, result: UpgradeResult) -> UpgradeResult:
        self.result = result
        nodes = self.swarm.nodes()
        if not quorum_whole(nodes):
            raise UpgradeRefused("not every manager is reachable (or there is no leader): "
                                 "the upgrade starts only on a whole quorum")
        short = services_short(self.swarm)
        if short:
            raise UpgradeRefused(f"services are short of replicas before the upgrade ({short})")
        max_batch = self.opts.max_batch or default_max_batch(nodes)
        ready_at_start = {n["ID"]: _name(n) for n in nodes
                          if (n.get("Status") or {}).get("State") == "ready"}
        left = [n for n in nodes if _role(n) == "worker"]
        current = None
        try:
            while left:
                current = next_worker_batch(left, self.swarm.nodes(), self.swarm.services(),
                                            self.swarm.tasks(), max_batch)
                self.batch(current)
                result.done += [_name(n) for n in current]
                done = {n["ID"] for n in current}
                left = [n for n in left if n["ID"] not in done]
                current = None
            for m in managers_in_order(self.swarm.nodes()):
                current = [m]
                self.batch(current)
                result.done.append(_name(m))
                current = None
            # a manager restart moves the leadership; the new leader sees the other nodes as
            # down until they report to it again: the run ends on the cluster as it began
            self.wait("every node Ready again", lambda: _not_ready(self.swarm, ready_at_start),
                      self.opts.ready_timeout)
            # the last restart's tasks are counted again by the leader that is now sure of them
            self.wait("services at full strength", lambda: services_short(self.swarm),
                      self.opts.drain_timeout)
        except SwarmsmithError as e:
            self._give_back(current or [])
            raise self._stopped(e, current or []) from e
        return result

    def _give_back(self, batch: list[dict]) -> None:
        """After a failure: the stopped batch's nodes that are Ready get the availability they
        had before the drain (an install that failed on the network left their engine as it
        was; kept drained they would refuse every task, unseen until a deploy has no room).
        A node that is not Ready stays drained and marked, so a run that finishes it, or
        `swarmsmith node activate`, gives it back; the error says which is which."""
        drained = [n for n in batch if n["ID"] in self.before
                   and self.where.get(_name(n), "").startswith(("being drained", "drained"))]
        if not drained:
            return
        try:
            view = {n["ID"]: n for n in self.swarm.nodes()}
        except SwarmsmithError as e:
            for n in drained:
                self.where[_name(n)] += (f", left drained (the swarm did not answer: {e}); "
                                         f"{_activate_hint(n)}")
            return
        for n in drained:
            name, before = _name(n), self.before[n["ID"]]
            if (view.get(n["ID"], {}).get("Status") or {}).get("State") != "ready":
                self.where[name] += f", not Ready, left drained; {_activate_hint(n)}"
                continue
            try:
                self.swarm.set_availability(n["ID"], before)
                self.swarm.unmark(n["ID"])
            except SwarmsmithError as e:
                self.where[name] += f", left drained ({e}); {_activate_hint(n)}"
                continue
            self.where[name] = f"{before} again (it was {self.where[name]})"
            self.say(name, f"availability {before} again (the upgrade stopped)")

    def _stopped(self, e: SwarmsmithError, batch: list[dict]) -> UpgradeError:
        names = [_name(n) for n in batch]
        state = "; ".join(f"{n} is {self.where.get(n, 'untouched')}" for n in names)
        todo = [n for n in self.result.versions if n not in self.result.done and n not in names]
        err = UpgradeError(
            f"engine upgrade stopped at {', '.join(names) or 'the start'}: {e}. "
            f"{state + '. ' if state else ''}"
            f"Upgraded: {', '.join(self.result.done) or 'none'}; "
            f"not started: {', '.join(todo) or 'none'}",
            host=None)
        err.exit_code = getattr(e, "exit_code", err.exit_code)
        return err


def _activate_hint(node: dict) -> str:
    return (f"`swarmsmith engine upgrade` run again finishes it and gives its availability "
            f"back, `swarmsmith node activate {_name(node)}` gives it back now")


def _apt_settings(cf, cluster_path: str, hosts: list) -> dict:
    """Host name -> engine.AptSettings as `up` applies them: the cluster file's proxy and
    mirror, else the proxy the provider's host needs (lab hosts with a root of their own
    reach packages only through the lab's proxy; no other provider sets one, and asking a
    cloud provider for its hosts would cost an API call for nothing)."""
    provider_proxy: dict[str, str] = {}
    if cf.provider == "lab" and not cf.apt_proxy:
        from .engine_api.access import access
        provider_proxy = {h.name: h.apt_proxy for h in access(cluster_path).provider_hosts(None)}
    return {h.name: engine.AptSettings(proxy=cf.apt_proxy or provider_proxy.get(h.name, ""),
                                       mirror=cf.apt_mirror) for h in hosts}


def upgrade(cluster_path: str, opts: UpgradeOptions,
            on_progress: ProgressCallback | None = None, clock=time.monotonic,
            sleep=time.sleep) -> UpgradeResult:
    """Load the cluster, connect to every node, plan the order; with dry_run stop there.
    Progress: HostProgress events, one per node step."""
    from inventory import clusterfile
    from inventory.state import StateDir

    from .engine_api.sessions import inventory_hosts, session_for
    from .remote.parallel import each

    def say(node: str, message: str) -> None:
        emit(on_progress, HostProgress(node, message))
    cf = clusterfile.load(cluster_path)
    if cf.provider == "lab" and cf.provider_settings.get("image", "default") == "default" \
            and not cf.provider_settings.get("vm"):
        # those hosts run this machine's own /usr and dpkg database: an install there would
        # change the machine's packages under every lab
        raise InputError("lab hosts with the default image share this machine's /usr: the "
                         "engine cannot be upgraded on them (use lab: {image: debian-12} or {vm: true})",
                         file=cluster_path, path="lab.image")
    version = opts.version or cf.version
    if cf.install == "never" and not opts.dry_run:
        raise UpgradeRefused("engine.install is never: swarmsmith does not install engines on "
                             "this cluster")
    state = StateDir(cluster_path, cf.name)
    hosts = inventory_hosts(cluster_path)
    if not hosts:
        raise UpgradeError(f"cluster {cf.name} has no nodes yet (run swarmsmith up)")
    sessions: dict = {}
    with state.lock():
        try:
            def reach(h):
                s = session_for(h)
                s.connect()
                sessions[h.name] = s
                return F.parse_engine_facts(s.run(F.ENGINE_FACTS).stdout)
            facts = each(reach, hosts)
            managers = [h.name for h in hosts if h.role == "manager"] or [h.name for h in hosts]
            swarm = Swarm(sessions, managers, sleep=sleep)
            nodes = swarm.nodes()
            known = {_name(n) for n in nodes}
            missing = sorted(set(facts) - known)
            if missing:
                raise UpgradeError(f"hosts {', '.join(missing)} are not nodes of the swarm "
                                   "(run swarmsmith up first)")
            order = plan_order(nodes, swarm.services(), swarm.tasks(),
                               opts.max_batch or default_max_batch(nodes))
            result = UpgradeResult(cf.name, version, order,
                                   versions={n: facts[n].get("server", "") for n in facts},
                                   dry_run=opts.dry_run)
            if opts.dry_run:
                return result
            from .swarm.managers import managers_lock
            lock = lambda: managers_lock(cluster_path, "engine upgrade",  # noqa: E731
                                         ttl=LOCK_TTL, notify=lambda line: say("cluster", line))
            return Upgrader(swarm, sessions, facts, cf.install, version, opts, say,
                            clock, sleep, lock=lock, apt=_apt_settings(cf, cluster_path, hosts)
                            ).run(result)
        finally:
            for s in sessions.values():
                s.close()
