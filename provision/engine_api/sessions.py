"""A cluster's hosts and SSH sessions to them, host keys checked against what pins them
(provision/engine_api/access.py); the transport's names re-exported. A manager is reached
through access.connect()."""
from __future__ import annotations

from .access import access, accepts_new_host_keys, opened
from .transport import (  # noqa: F401
    DIR_PREFIX, EngineAPIError, EngineUnreachableError, GuardedAPI, SocketForwarder, api_client,
    engine_error, remove_dead_forwarder_dirs)
from ..remote.ssh import Session


def inventory_hosts(cluster_path: str, role: str | None = None) -> list:
    """The cluster's hosts (local cache, else the swarm's record), each with the key it must show."""
    return access(cluster_path).hosts(role)


def session_for(host, cluster_path: str | None = None) -> Session:
    """A session that requires the host's pinned key (host.host_key); unpinned hosts are refused
    unless the cluster was opened with accept_new."""
    if cluster_path is not None:
        return access(cluster_path).session(host)
    acc = opened()
    return Session(host, pinned_key=host.host_key, connect_deadline=10,
                   require_pin=not accepts_new_host_keys(),
                   mismatch_hint=acc.mismatch_hint(host) if acc is not None else "")
