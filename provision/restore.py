"""Restore a backup onto a host of the cluster, and re-form a swarm that lost quorum.

Both end with one manager holding the swarm's state (services, secrets, configs, networks,
workers) after `docker swarm init --force-new-cluster`; the managers it had before are removed
from it, and `swarmsmith up` (which `recover` runs itself) joins the cluster file's hosts again.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable

from .remote import facts as F
from .remote import docker_cli
from .swarm.backup import (INTERRUPTED_RESTORE, drop_previous_swarm_dir, engine_facts,
                           put_back_swarm_dir, put_swarm_dir, read_archive, retarget_payload,
                           start_engine, stop_engine)
from .remote.command import Command
from .base.errors import EXIT_DEGRADED, EXIT_FAILED, EXIT_OK, InputError, SwarmsmithError, UnreachableError
from .base.progress import ProgressCallback, lines_to
from .swarm.managers import host_swarm_facts
from .swarm.quorum import Quorum, is_manager, node_name



@dataclass
class RestoreResult:
    host: str
    swarm_id: str = ""
    services: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exit_code: int = EXIT_OK

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _inventory(cluster_path: str):
    from inventory import clusterfile
    from inventory.state import StateDir
    cf = clusterfile.load(cluster_path)
    return cf, StateDir(cluster_path, cf.name)


def _host_of(cluster_path: str, name: str):
    """A host of the local state, else one the provider knows (a new machine that replaces a
    lost one: no local state, and no swarm holds the cluster's record any more)."""
    from .engine_api.access import access
    from .engine_api.access import for_cluster
    hosts = _known_hosts(access(cluster_path))
    name = for_cluster(cluster_path).host_name(name, hosts) or name     # or hostname, node ID
    if name not in hosts:
        raise InputError(f"--to {name}: not a host of this cluster's inventory (hosts: "
                         f"{', '.join(sorted(hosts))}); `swarmsmith up` creates the cluster "
                         "file's hosts first")
    return hosts[name]


def _known_hosts(acc) -> dict:
    """name -> Host: the local state's, and the provider's it does not have."""
    hosts = {h.name: h for h in acc._cached_hosts(None)}
    try:
        hosts.update((h.name, h) for h in acc.provider_hosts(None) if h.name not in hosts)
    except SwarmsmithError:
        pass
    return hosts


def _advertise(cluster_path: str, host) -> str:
    _, state = _inventory(cluster_path)
    rec = state.load().get("hosts", {}).get(host.name, {})
    return rec.get("advertise_address") or host.private_address or host.public_address


def _force_new_cluster(session, addr: str) -> None:
    session.run(docker_cli.swarm_init(
        addr, force_new_cluster=True,
        description="re-form the swarm with this node as its only manager"), timeout=120)


def _local_api(session, where: str, timeout: float = 60.0, clock=time.monotonic,
               sleep=time.sleep):
    """The Engine API of this host once it answers swarm calls as the leader."""
    from .engine_api.sessions import api_client
    from .engine_api.adapter import EngineAPI
    api = EngineAPI(api_client(session, timeout=30), where=where)
    end = clock() + timeout
    while True:
        try:
            api.nodes()
            return api
        except SwarmsmithError:
            if clock() >= end:
                raise
            sleep(0.5)


def _drop_old_managers(api, self_id: str, changes: list[str]) -> list[str]:
    """After --force-new-cluster the other managers are no raft members but still listed as
    managers: demote and remove them (a host that comes back joins anew)."""
    gone = []
    for n in api.nodes():
        if n["ID"] == self_id or not is_manager(n):
            continue
        try:
            api.remove_node(n["ID"], force=True)    # no raft member any more: removable as is
        except SwarmsmithError:
            api.update_node(n["ID"], n["Version"]["Index"], {**n["Spec"], "Role": "worker"})
            api.remove_node(n["ID"], force=True)
        gone.append(node_name(n))
        changes.append(f"{node_name(n)}: old manager removed from the swarm ({n['ID'][:12]})")
    return gone


def _record(cluster_path: str, host_name: str, swarm_id: str, node_id: str, addr: str,
            removed_hosts: list[str], host=None, host_key: str = "") -> None:
    """The restored manager in the local state; a host the state did not know yet (a new
    machine) with what the next commands need to reach it."""
    _, state = _inventory(cluster_path)
    with state.lock(wait=30):
        inv = state.load()
        inv["cluster_id"] = swarm_id
        rec = inv.setdefault("hosts", {}).setdefault(host_name, {})
        if host is not None and not rec.get("public_address"):
            rec.update(role="manager", public_address=host.public_address,
                       private_address=host.private_address, user=host.user, port=host.port,
                       key=host.key_path or None)
            if host_key:
                rec["host_key"] = host_key
        rec.update(node_id=node_id, advertise_address=addr)
        for other in removed_hosts:
            if other != host_name and other in inv["hosts"]:
                inv["hosts"][other].pop("node_id", None)
        state.save(inv)


def restore(cluster_path: str, archive: str, to: str, *, force: bool = False,
            unlock_key: str | None = None, on_progress: ProgressCallback | None = None) -> RestoreResult:
    """The backup's swarm state onto host `to` as the only manager of the restored swarm. The
    archive is checked whole before any host is touched; a host that is a node of a live swarm
    is refused (exit 2: it leaves that swarm first); an engine never started is set up as `up`
    would. The host's own swarm state is kept until the restored one runs as a manager, and
    put back when anything fails before that."""
    from .engine_api.sessions import session_for
    say = lines_to(on_progress)
    manifest, payload = read_archive(archive)          # exit 2 before any connection
    cf, state = _inventory(cluster_path)
    check_backup_cluster(manifest, cf.name, state.load().get("cluster_id", ""), archive, force)
    host = _host_of(cluster_path, to)
    to = host.name          # the cluster file's name, however --to named it
    addr = _advertise(cluster_path, host)
    res = RestoreResult(to)
    check_restore_address(manifest, to, addr, _other_addresses(cluster_path, to), force,
                          res.notes)
    refuse_live_peers(cluster_path, to, manifest)
    s = session_for(host, cluster_path)
    try:
        facts = engine_facts(s)
        if not facts.get("server"):
            facts = _engine_up(cluster_path, host, s, facts, res, say)
        sw = host_swarm_facts(s)
        refuse_live_swarm(s, sw, to, manifest)
        earlier = s.run(INTERRUPTED_RESTORE).stdout.strip()
        if earlier:
            res.notes.append(f"{to}: a restore started there at {earlier} was interrupted; the "
                             "swarm state of before it was kept and is the one put back if "
                             "this one fails")
        with contextlib.ExitStack() as held:
            _lock_if_any(held, cluster_path, say)
            _restore_on(s, facts, manifest, payload, to, addr, unlock_key, res, say)
        api = _local_api(s, to)
        me = F.parse_swarm_facts(s.run(F.SWARM_FACTS).stdout)
        removed = _drop_old_managers(api, me["node_id"], res.changes)
        res.changes += _drop_backup_time_lock(api)
        res.swarm_id = me["cluster_id"]
        res.services = sorted(x["Spec"]["Name"] for x in api.services())
        res.secrets = sorted(x["Spec"]["Name"] for x in api.secrets())
        res.configs = sorted(x["Spec"]["Name"] for x in api.configs())
        _record(cluster_path, to, me["cluster_id"], me["node_id"], addr, removed, host,
                s.seen_key)
        if _replace_cluster_record(cluster_path, api):
            res.changes.append("cluster record in the swarm replaced: the backup's described "
                               "the hosts of before")
        res.changes += _leave_replaced_swarm(cluster_path, to, api)
        res.notes.append("run `swarmsmith up` to join the cluster file's other hosts")
        if manifest.get("autolock"):
            res.notes.append("rotate the unlock key (`swarmsmith unlock-key --rotate`): the "
                             "backup's key still unlocks this swarm")
        return res
    finally:
        s.close()


def _restore_on(s, facts: dict, manifest: dict, payload: bytes, to: str, addr: str,
                unlock_key: str | None, res: RestoreResult, say: Callable[[str], None]) -> None:
    """Stop, put the state in place (the host's own kept), start, unlock, re-form; on any
    failure the host's own state is put back and its engine started again."""
    say(f"{to}: stopping the engine")
    stop_engine(s, facts)
    try:
        put_swarm_dir(s, retarget_payload(payload, addr))
        say(f"{to}: starting the engine on the restored state")
        start_engine(s, facts)
        sw = host_swarm_facts(s)
        if sw.get("state") == "locked":
            if not unlock_key:
                raise SwarmsmithError("the restored swarm is autolocked: pass the unlock key of "
                                      "the time of the backup (--key-file or "
                                      "$SWARMSMITH_UNLOCK_KEY) and run restore again", host=to)
            s.run(docker_cli.swarm_unlock(unlock_key, "unlock the restored swarm"))
        say(f"{to}: swarm init --force-new-cluster (advertise {addr})")
        _force_new_cluster(s, addr)
        _local_api(s, to)
    except BaseException as e:
        _put_back(s, facts, to, say)
        if isinstance(e, SwarmsmithError):
            e.message = (f"{e.message}; the host's swarm state of before the restore was put "
                         "back and its engine started again")
            e.args = (e.message,)
        raise
    drop_previous_swarm_dir(s)
    res.changes.append(f"{to}: swarm state of {manifest['node']} ({manifest['taken_at']}) put "
                       "in place")
    res.changes.append(f"{to}: swarm re-formed with this node as its only manager "
                       f"(advertise {addr})")


def _put_back(s, facts: dict, to: str, say: Callable[[str], None]) -> None:
    say(f"{to}: the restore failed: putting the swarm state of before back")
    s.run(Command.shell(engine_stop_if_running(facts), description="stop the engine if it runs"),
          check=False, timeout=150)
    put_back_swarm_dir(s)
    start_engine(s, facts)


def engine_stop_if_running(facts: dict) -> str:
    from .engine.install import stop_command
    return (f"if [ -S {F.SOCKET} ] || [ -e /var/run/docker.pid ]; then "
            f"{stop_command(facts).wire()}; fi")


def check_backup_cluster(manifest: dict, cluster: str, cluster_id: str, archive: str,
                         force: bool) -> None:
    """A backup of another cluster (another name, or another swarm than the one the local
    state knows) is refused without force, saying whose it is."""
    theirs = manifest.get("cluster", "?")
    sid = manifest.get("swarm_id", "")
    other = theirs != cluster or (cluster_id and sid and sid != cluster_id)
    if other and not force:
        now = (f"; cluster {cluster} runs swarm {cluster_id[:12]} now (formed anew since the "
               "backup?)" if theirs == cluster else
               f"; this is cluster {cluster}" + (f" (swarm {cluster_id[:12]})" if cluster_id
                                                  else ""))
        raise InputError(f"a backup of cluster {theirs} (swarm {sid[:12] or '?'}, taken "
                         f"{manifest.get('taken_at', '?')} on {manifest.get('node', '?')}){now}"
                         ": pass --force to restore it here anyway", file=archive)


def refuse_live_swarm(session, sw: dict, to: str, manifest: dict | None = None) -> None:
    """A node of a live swarm is not restored onto (exit 2): swarm would hold two memberships
    of it, and an engine given both crash-loops. The way out is that it leaves first; when that
    swarm is the one the backup is of, every node of it (live_peers)."""
    st = sw.get("state")
    leave = (f"make it leave that swarm first (`docker swarm leave --force` on {to}, or "
             f"`swarmsmith node rm {to}` from a cluster that keeps the swarm), then restore again")
    if st == "locked":
        raise InputError(f"--to {to}: it is a manager of an autolocked swarm; unlock it "
                         f"(`swarmsmith unlock-swarm`) to see whether that swarm is live, or {leave}")
    if st != "active":
        return
    others = _other_ready_nodes(session, sw)
    if not others:
        return
    if manifest and sw.get("cluster_id") and sw.get("cluster_id") == manifest.get("swarm_id"):
        raise InputError(
            f"--to {to}: it is a node of the live swarm this backup is of, with {len(others)} "
            f"other ready node(s) ({', '.join(others[:5])}); restoring replaces that swarm, and "
            "its managers would meet the restored one (whose engine then crash-loops). To "
            f"replace it, make every node of it leave first (`docker swarm leave --force` on "
            f"{to} and on {', '.join(others[:5])}), then restore again")
    raise InputError(f"--to {to}: it is a node of a live swarm with {len(others)} other ready "
                     f"node(s) ({', '.join(others[:5])}); restoring onto it would break "
                     f"that swarm: {leave}")


def refuse_live_peers(cluster_path: str, to: str, manifest: dict) -> None:
    """Managers still running the swarm the backup is of would meet the restored manager (it
    starts with their membership and an older raft log) and its engine would crash-loop: they
    leave first (exit 2 naming them). Hosts that do not answer are taken as gone."""
    from .engine_api.access import access
    acc = access(cluster_path)
    hosts = _known_hosts(acc)
    live = []
    for name, h in sorted(hosts.items()):      # `to` too: it then leaves as well
        s = acc.session(h)
        try:
            f = host_swarm_facts(s)
        except (UnreachableError, SwarmsmithError):
            continue
        finally:
            s.close()
        if f.get("state") == "active" and f.get("is_manager") and \
                f.get("cluster_id") == manifest.get("swarm_id"):
            live.append(name)
    if [n for n in live if n != to]:      # the target alone: the swarm this restore replaces
        raise InputError(
            f"--to {to}: the swarm this backup is of still runs on {', '.join(live)}: its "
            "managers would meet the restored one (which starts with their membership and an "
            "older raft log; its engine then crash-loops). A restore replaces that swarm: make "
            f"them leave it first (`docker swarm leave --force` on {', '.join(live)}), then "
            "restore again")


def _engine_up(cluster_path: str, host, session, facts: dict, res: RestoreResult,
               say: Callable[[str], None]) -> dict:
    """An engine never started (a new machine): installed when missing and started with the
    cluster file's `engine:` settings, by `up`'s own engine step."""
    from .bootstrap import Run, UpOptions, _engine
    cf, state = _inventory(cluster_path)
    say(f"{host.name}: setting up the engine as `up` does")
    run = Run(cluster=cf, state=state, inventory=state.load(), opts=UpOptions(),
              progress=lambda h, msg: say(f"{h}: {msg}"), sessions={host.name: session},
              facts={host.name: facts})
    facts = _engine(run, host)
    res.changes += run.changes
    return facts


def _lock_if_any(stack: contextlib.ExitStack, cluster_path: str, say: Callable[[str], None]) -> None:
    """The cluster's managers lock, in the swarm this restore replaces when one of its
    managers still answers (a backup there waits), held until `stack` closes; none answers:
    there is none to take. Held by another run: LockedError (exit 4)."""
    from .base.errors import LockedError
    from .swarm.managers import managers_lock
    try:
        stack.enter_context(managers_lock(cluster_path, "restore", notify=say))
    except LockedError:
        raise
    except SwarmsmithError:
        say("no manager of the cluster answers: no cluster lock to take")


def _drop_backup_time_lock(api) -> list[str]:
    """The backup was taken under the cluster's managers lock, so the restored swarm holds that
    lock of the time of the backup: nobody holds it now."""
    from .swarm.lock import MANAGERS_LOCK
    out = []
    for c in api.configs({"name": [MANAGERS_LOCK]}):
        if c["Spec"]["Name"] == MANAGERS_LOCK:
            api.remove_config(c["ID"], MANAGERS_LOCK)
            out.append("the managers lock of the time of the backup removed")
    return out


def check_restore_address(manifest: dict, to: str, addr: str, others: dict[str, str],
                          force: bool, notes: list[str]) -> None:
    """The raft store keeps the backed-up manager's address for the restored one and swarm has
    no way to change it: a manager joining later is sent to that old address (the lab saw those
    joins time out). So a host with another address is refused unless forced; then the swarm
    stays one manager (workers can join)."""
    old = manifest.get("node_addr", "")
    if not old or old == addr:
        return
    taken = f", now {others[old]}'s" if old in others else ""
    if not force:
        raise InputError(
            f"--to {to}: the backup's manager {manifest['node']} had the address {old}{taken}; "
            f"{to} has {addr}. Swarm's raft store keeps {old} for the restored manager and "
            "cannot change it, so no manager could join the restored swarm. Restore onto the "
            f"host with {old} (or back up the manager you will restore onto: `swarmsmith "
            "backup --node`), or pass --force to stay one manager")
    notes.append(f"restored onto {addr} while raft records {old}: managers cannot join this "
                 "swarm (workers can)")


def _other_addresses(cluster_path: str, to: str) -> dict[str, str]:
    """address -> host name, for the cluster's other hosts (local state and provider)."""
    from .engine_api.access import access
    acc = access(cluster_path)
    out: dict[str, str] = {}
    hosts = acc._cached_hosts(None)
    try:
        hosts += acc.provider_hosts(None)
    except SwarmsmithError:
        pass
    for h in hosts:
        if h.name != to:
            for a in (h.private_address, h.public_address):
                if a:
                    out[a] = h.name
    return out


def _replace_cluster_record(cluster_path: str, api) -> bool:
    """The restored swarm carries the cluster's record (hosts, their SSH keys, node IDs) of the
    time of the backup; `up` would trust it over this host. A new version from the local state
    (which the restore just updated) takes its place; older versions stay as history."""
    from .engine_api.cluster_record import RecordStore, from_inventory
    cf, state = _inventory(cluster_path)
    store = RecordStore(api, cf.name)
    version, record = store.read()
    if record is None:
        return False
    store.create(version + 1, from_inventory(state.load(), cf.name))
    return True


def _other_ready_nodes(session, sw: dict) -> list[str]:
    if not sw.get("is_manager"):
        return ["(this host is a worker of another swarm)"]
    r = session.run(F.NODES, check=False)
    if r.exit_status != 0:
        return []
    return [n["hostname"] for n in F.parse_nodes(r.stdout)
            if n["id"] != sw.get("node_id") and n["state"] == "ready"]


def _leave_replaced_swarm(cluster_path: str, to: str, api) -> list[str]:
    """Hosts of the inventory still in the swarm this restore replaced (not nodes of the
    restored one) leave it, so `up` can join them."""
    from .engine_api.sessions import inventory_hosts, session_for
    known = {n["ID"] for n in api.nodes()}
    changes = []
    for h in inventory_hosts(cluster_path):
        if h.name == to:
            continue
        s = session_for(h)
        try:
            f = host_swarm_facts(s)
            if f.get("state") in ("active", "pending", "error", "locked") and \
                    f.get("node_id") not in known:
                s.run(docker_cli.swarm_leave("leave the swarm the restore replaced"))
                changes.append(f"{h.name}: left the swarm the restore replaced")
        except UnreachableError:
            continue
        finally:
            s.close()
    return changes


# --- recover ------------------------------------------------------------------------------

@dataclass
class RecoverResult:
    managers: dict[str, str] = field(default_factory=dict)    # host -> what was seen
    quorum: dict = field(default_factory=dict)
    survivor: str = ""
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exit_code: int = EXIT_OK

    def to_dict(self) -> dict:
        return dict(self.__dict__)


SERVICES_BACK_TIMEOUT = 120.0
QUORUM_SETTLE = 15.0        # seconds of looking for a quorum before re-forming (an election)


def _quorum_now(cluster_path: str):
    """The swarm's quorum as a manager that answers sees it; None when none answers."""
    from .engine_api.access import connect
    from .engine_api.manager import NoManagerError
    from .swarm.quorum import quorum_of
    try:
        conn = connect(cluster_path)
    except NoManagerError:
        return None
    try:
        return quorum_of(conn.api.nodes())
    except SwarmsmithError:
        return None
    finally:
        conn.close()


def recover(cluster_path: str, *, force_new_cluster: bool = False, grow: bool = True,
            on_progress: ProgressCallback | None = None,
            services_timeout: float = SERVICES_BACK_TIMEOUT,
            clock: Callable[[], float] = time.monotonic,
            sleep: Callable[[float], None] = time.sleep) -> RecoverResult:
    """Explain a swarm's manager state; with force_new_cluster and quorum lost, re-form it on a
    surviving manager, make the other managers' hosts leave the old swarm, and run `up` to join
    them again as managers (back to the cluster file's count); then wait up to
    `services_timeout` seconds (0: not at all) for the services to run their replicas again
    (the lost managers' tasks are rescheduled only now). Still short then: exit 5."""
    from .engine_api.sessions import inventory_hosts, session_for
    say = lines_to(on_progress)
    res = RecoverResult()
    # before re-forming, quorum is looked for a while longer: a swarm electing a leader (a
    # manager just restarted) answers no swarm call for a few seconds, and re-forming a swarm
    # that has its quorum would throw away its other managers for nothing
    end = clock() + (QUORUM_SETTLE if force_new_cluster else 0)
    while True:
        q = _quorum_now(cluster_path)
        if q is not None and q.ok:
            # a leader that just lost its majority still answers until it steps down: only a
            # majority of reachable managers means there is nothing to recover
            res.quorum = q.to_dict()
            res.notes.append(f"{q.text()}: nothing to recover"
                             + ("; `swarmsmith up` restarts stopped managers' engines"
                                if q.degraded else ""))
            return res
        if clock() >= end:
            break
        sleep(1.0)

    hosts = inventory_hosts(cluster_path, "manager")
    seen: dict[str, dict] = {}
    sessions = {}
    for h in hosts:
        s = session_for(h)
        try:
            s.connect()
            sessions[h.name] = s
            f = seen[h.name] = host_swarm_facts(s)
            res.managers[h.name] = _describe(f)
        except UnreachableError as e:
            res.managers[h.name] = f"unreachable over SSH ({e.message})"
    try:
        alive = [h for h in hosts if seen.get(h.name, {}).get("state") == "active"]
        res.quorum = Quorum(len(hosts), 0).to_dict() | {"reachable": len(alive)}
        if not force_new_cluster:
            res.exit_code = EXIT_FAILED
            res.notes += [
                f"quorum lost: a majority of {len(hosts) // 2 + 1} of {len(hosts)} managers is "
                f"needed; {len(alive)} engine(s) still run a manager",
                "if the lost managers' hosts still exist, `swarmsmith up` starts their engines "
                "and quorum comes back with nothing lost",
                "otherwise `swarmsmith recover --force-new-cluster` re-forms the swarm on "
                f"{alive[0].name if alive else 'a surviving manager'} (services, secrets, configs "
                "and workers are kept) and joins the other managers again"]
            return res
        if not alive:
            raise SwarmsmithError("no manager's engine holds the swarm's state any more: restore "
                                  "a backup (`swarmsmith restore FILE --to HOST`)")
        survivor = alive[0]
        res.survivor = survivor.name
        s = sessions[survivor.name]
        addr = _advertise(cluster_path, survivor)
        say(f"{survivor.name}: swarm init --force-new-cluster (advertise {addr})")
        _force_new_cluster(s, addr)
        res.changes.append(f"{survivor.name}: swarm re-formed with it as the only manager")
        api = _local_api(s, survivor.name)
        me = F.parse_swarm_facts(s.run(F.SWARM_FACTS).stdout)
        # a lock of the lost swarm's: its run worked on a membership that is gone
        res.changes += [c.replace("of the time of the backup", "of the lost swarm")
                        for c in _drop_backup_time_lock(api)]
        for other in hosts:
            if other.name == survivor.name or other.name not in sessions:
                continue
            _reset_lost_manager(sessions[other.name], other.name, res.changes, say)
        _drop_old_managers(api, me["node_id"], res.changes)
        _record(cluster_path, survivor.name, me["cluster_id"], me["node_id"], addr,
                [h.name for h in hosts])
    finally:
        for s in sessions.values():
            s.close()
    if grow:
        from .bootstrap import UpOptions, up
        from .swarm.managers import managers_lock
        with managers_lock(cluster_path, "recover", notify=say):
            say("swarmsmith up: joining the other managers again")
            out = up(cluster_path, UpOptions(), on_progress=on_progress)
        res.changes += out.changes
    if services_timeout > 0:
        _wait_services_back(cluster_path, res, say, services_timeout, clock, sleep)
    return res


def _wait_services_back(cluster_path: str, res: RecoverResult, say: Callable[[str], None], timeout: float,
                        clock, sleep) -> None:
    """Until no service is short of replicas (status's own test), or `timeout`. A failure
    to look is reported (exit 5), not raised: the swarm was re-formed, and the report says so."""
    try:
        _poll_services_back(cluster_path, res, say, timeout, clock, sleep)
    except SwarmsmithError as e:
        res.exit_code = EXIT_DEGRADED
        res.notes.append(f"the services could not be checked ({e}); see `swarmsmith status`")


def _poll_services_back(cluster_path: str, res: RecoverResult, say: Callable[[str], None], timeout: float,
                        clock, sleep) -> None:
    from .engine_api.access import connect
    from .swarm.status import gather
    conn = connect(cluster_path)
    try:
        start = clock()
        delay = 0.5
        while True:
            short = [p for p in gather(conn.api)["problems"] if p.startswith("service ")]
            waited = clock() - start
            if not short:
                res.notes.append(f"services run all their replicas again ({waited:.0f} s after "
                                 "the re-forming)")
                return
            if waited >= timeout:
                res.exit_code = EXIT_DEGRADED
                res.notes.append(f"after {timeout:.0f} s still short: {'; '.join(short)} "
                                 "(`swarmsmith status` and `swarmsmith ps` say why)")
                return
            # a line every poll (at most a second apart): the operator sees what is still short
            say(f"waiting for the services' tasks to be rescheduled ({waited:.0f} s): {short[0]}"
                + (f" and {len(short) - 1} more" if len(short) > 1 else ""))
            sleep(min(delay, max(0.0, timeout - waited)))
            delay = min(delay * 1.5, 1.0)
    finally:
        conn.close()


def _describe(f: dict) -> str:
    st = f.get("state")
    if st == "engine-down":
        return "engine down"
    if st == "active":
        return "manager, engine running (no quorum)" if not f.get("is_manager") or f.get("error") \
            else "manager, engine running"
    return f"swarm state {st}"


def _reset_lost_manager(session, name: str, changes: list[str], say: Callable[[str], None]) -> None:
    """A lost manager that comes back still believes in the old raft membership: start its
    engine if needed and make it leave, so it can join the re-formed swarm."""
    facts = engine_facts(session)
    if not facts.get("server"):
        say(f"{name}: starting the engine")
        start_engine(session, facts)
        changes.append(f"{name}: engine started")
    f = host_swarm_facts(session)
    if f.get("state") != "inactive":
        session.run(docker_cli.swarm_leave("leave the old swarm membership"))
        changes.append(f"{name}: left the old swarm membership")
