"""SSH sessions to a cluster's hosts, a host's swarm facts over SSH, and the cluster's managers
lock. A manager itself is reached through provision/engine_api/access.py's connect()."""
from __future__ import annotations

import contextlib

from ..base.errors import SwarmsmithError
from ..engine_api.sessions import inventory_hosts
from ..remote import facts as F


def host_swarm_facts(session) -> dict:
    """Swarm facts of one host over SSH; {"state": "engine-down"} when its engine does not answer."""
    r = session.run(F.SWARM_FACTS, check=False, timeout=30)
    if r.exit_status != 0:
        return {"state": "engine-down", "error": (r.stderr or r.stdout).strip()[-200:]}
    return F.parse_swarm_facts(r.stdout)


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
    from .lock import MANAGERS_LOCK, MANAGERS_UNLOCK, MANAGERS_WHAT, SwarmLock, default_owner
    say = notify or (lambda line: None)
    conn = None
    if api is None:
        from ..engine_api.access import connect
        conn = connect(cluster_path)
        api = conn.api
    lock = SwarmLock(api, operation, name=MANAGERS_LOCK, what=MANAGERS_WHAT,
                     ttl=ttl, wait=wait, notify=say, owner=f"{operation}, {default_owner()}",
                     unlock_hint=MANAGERS_UNLOCK, **lock_kw)
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
        from ..engine_api.access import connect
        with connect(cluster_path) as m:
            from ..engine_api.adapter import as_engine
            lock.api, lock.id = as_engine(m.api), lock_id
            lock.release()
    except SwarmsmithError as e:
        say(f"the cluster's managers lock could not be removed ({e.message}); the next run "
            "from this machine removes it, one from elsewhere after its TTL")
