"""Find a manager of a cluster that can answer Engine API swarm calls, and SSH sessions to hosts.

A manager whose SSH answers may still have its engine stopped, be locked, or be cut off from the
majority; this tries the inventory's managers in turn and keeps the first whose engine reports
itself a manager with control available (the CLI's `docker node ls` would fail on the others).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from ..remote import facts as F
from ..engine_api.sessions import api_client, inventory_hosts, session_for
from ..base.errors import EXIT_UNREACHABLE, HostKeyMismatchError, SwarmsmithError, UnreachableError
from ..engine_api.adapter import EngineAPI


class NoManagerError(SwarmsmithError):
    """No manager of the cluster can answer swarm calls (all down, locked, or quorum lost)."""

    def __init__(self, reasons: dict[str, str], facts: dict[str, dict]):
        self.reasons = reasons
        self.facts = facts
        # no manager even answered over SSH: exit 3, as for any unreachable host
        self.all_unreachable = not facts
        if self.all_unreachable:
            self.exit_code = EXIT_UNREACHABLE
        lines = "\n  ".join(f"{h}: {r}" for h, r in sorted(reasons.items()))
        super().__init__(f"no manager answers swarm calls:\n  {lines}")


@dataclass
class ManagerConn:
    host: object                  # provision.base.hosts.Host
    session: object               # provision.remote.ssh.Session
    api: "EngineAPI"
    facts: dict = field(default_factory=dict)   # swarm facts of that manager
    cluster_path: str = ""
    _names: object = None

    @property
    def names(self):
        """The cluster's names of its nodes (node_names.NodeNames): the local inventory, else
        the cluster's record read through this manager."""
        if self._names is None:
            from .node_names import NodeNames, for_cluster
            self._names = (for_cluster(self.cluster_path, self.api) if self.cluster_path
                           else NodeNames())
        return self._names

    def close(self) -> None:
        fwd = getattr(self.api.api, "_swarmsmith_forwarder", None)
        if fwd is not None:
            fwd.close()
        self.session.close()


def host_swarm_facts(session) -> dict:
    """Swarm facts of one host over SSH; {"state": "engine-down"} when its engine does not answer."""
    r = session.run(F.SWARM_FACTS, check=False, timeout=30)
    if r.exit_status != 0:
        return {"state": "engine-down", "error": (r.stderr or r.stdout).strip()[-200:]}
    return F.parse_swarm_facts(r.stdout)


def connect_manager(cluster_path: str, *, prefer: str | None = None,
                    accept_new: bool | None = None) -> ManagerConn:
    """Managers from the local state, else the provider (provision/engine_api/access.py), each verified by
    its pinned key; a changed key is refused at once, never skipped for another manager."""
    from ..engine_api.access import access
    acc = access(cluster_path, accept_new)
    hosts = acc.candidates()
    if not hosts:
        raise SwarmsmithError(f"cluster {acc.cluster.name}: no manager found; run "
                              f"`swarmsmith up {cluster_path}` first")
    if prefer:
        hosts.sort(key=lambda h: h.name != prefer)
    reasons: dict[str, str] = {}
    seen: dict[str, dict] = {}
    for host in hosts:
        s = acc.session(host)
        try:
            s.connect()
        except HostKeyMismatchError:
            raise
        except UnreachableError as e:
            reasons[host.name] = e.message
            continue
        f = seen[host.name] = host_swarm_facts(s)
        why = _not_usable(f)
        if why is None:
            api = EngineAPI(api_client(s, timeout=30), where=host.name)
            try:
                api.nodes()   # raft must have a leader for this to answer
                return ManagerConn(host, s, api, f, cluster_path=cluster_path)
            except SwarmsmithError as e:
                why = e.message
                _close_api(api)
        reasons[host.name] = why
        s.close()
    raise NoManagerError(reasons, seen)


@contextlib.contextmanager
def manager_session(cluster_path: str):
    """A manager's connection (connect_manager) for the length of a `with` block, closed
    however the block ends."""
    conn = connect_manager(cluster_path)
    try:
        yield conn
    finally:
        conn.close()


def _not_usable(f: dict) -> str | None:
    state = f.get("state")
    if state == "engine-down":
        return "the engine does not answer" + (f" ({f['error']})" if f.get("error") else "")
    if state == "locked":
        return "the swarm is locked on this manager (`swarmsmith unlock-swarm`)"
    if state != "active":
        return f"not in a swarm (state {state})"
    if not f.get("is_manager"):
        return "not a manager with control available" + (f" ({f['error']})" if f.get("error") else "")
    return None


def _close_api(api: "EngineAPI") -> None:
    fwd = getattr(api.api, "_swarmsmith_forwarder", None)
    if fwd is not None:
        fwd.close()


def sessions_by_name(cluster_path: str, role: str | None = None) -> dict:
    """{host name: (Host, Session)} for the cluster's hosts (sessions not yet connected)."""
    from ..engine_api.access import access
    acc = access(cluster_path)
    return {h.name: (h, acc.session(h)) for h in inventory_hosts(cluster_path, role)}


# --- the cluster's managers lock (provision/swarm/lock.py) ---------------------------------

MANAGERS_LOCK_WAIT = 600.0      # another backup, restore or upgrade step usually ends by then
MANAGERS_LOCK_TTL = 3600.0


@contextlib.contextmanager
def managers_lock(cluster_path: str, operation: str, *, api=None, wait: float = MANAGERS_LOCK_WAIT,
                  ttl: float = MANAGERS_LOCK_TTL, notify=None, **lock_kw):
    """Hold the cluster-wide lock of the commands that stop or re-form managers for a `with`
    block: two of them at once would each see quorum kept and together lose it. Taken through
    `api` (a manager's Engine API) or a manager found now. The release goes through that API,
    or a manager found again when that one went away (its engine restarted); a lock that
    cannot be released is said, and the next run on this machine breaks it (its holder is
    gone), another after the TTL."""
    from .lock import MANAGERS_LOCK, SwarmLock, default_owner
    say = notify or (lambda line: None)
    conn = None
    if api is None:
        conn = connect_manager(cluster_path)
        api = conn.api
    lock = SwarmLock(api, operation, name=MANAGERS_LOCK, what="the cluster's managers",
                     ttl=ttl, wait=wait, notify=say, owner=f"{operation}, {default_owner()}",
                     unlock_hint=f"`docker config rm {MANAGERS_LOCK}` on a manager", **lock_kw)
    try:
        lock.acquire()
        yield lock
    finally:
        try:
            _release(cluster_path, lock, say)
        finally:
            if conn is not None:
                conn.close()


def _release(cluster_path: str, lock, say) -> None:
    if not lock.id:
        return
    lock_id = lock.id
    try:
        lock.release()
        return
    except SwarmsmithError:
        pass
    try:
        with manager_session(cluster_path) as m:
            from ..engine_api.adapter import as_engine
            lock.api, lock.id = as_engine(m.api), lock_id
            lock.release()
    except SwarmsmithError as e:
        say(f"the cluster's managers lock could not be removed ({e.message}); the next run "
            "from this machine removes it, one from elsewhere after its TTL")
