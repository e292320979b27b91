"""A cluster's manager as every command holds it (Manager), and how one is found (probe);
connect(cluster) -> Manager in access.py is the one way to it.

A manager whose SSH answers may still have its engine stopped, be locked, or be cut off from the
majority. The cluster's managers (the local state, else the provider: ClusterAccess, which also
decides which key each host must show) are tried in turn, and the first whose engine reports
itself a manager with control available and lists the nodes (raft has a leader) is kept. A
changed host key is refused at once, never skipped for another manager.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..base.errors import EXIT_UNREACHABLE, HostKeyMismatchError, HostKeyUnknownError, \
    SwarmsmithError, UnreachableError
from ..remote import facts as F
from .adapter import EngineAPI


class NoManagerError(SwarmsmithError):
    """No manager of the cluster can answer swarm calls (all down, locked, or quorum lost)."""

    def __init__(self, reasons: dict[str, str], facts: dict[str, dict],
                 unknown: HostKeyUnknownError | None = None):
        self.reasons = reasons
        self.facts = facts
        self.unknown = unknown      # a host nothing pins, refused (the first one)
        # no manager even answered over SSH: exit 3, as for any unreachable host
        self.all_unreachable = not facts
        if self.all_unreachable:
            self.exit_code = EXIT_UNREACHABLE
        lines = "\n  ".join(f"{h}: {r}" for h, r in sorted(reasons.items()))
        super().__init__(f"no manager answers swarm calls:\n  {lines}")


@dataclass
class Manager:
    host: object                  # provision.base.hosts.Host
    session: object               # provision.remote.ssh.Session
    api: EngineAPI
    facts: dict = field(default_factory=dict)   # swarm facts of that manager
    cluster_path: str = ""
    access: object = None         # the ClusterAccess it was found through
    _names: object = None

    @property
    def names(self):
        """The cluster's names of its nodes (node_names.NodeNames): the local inventory, else
        the cluster's record read through this manager."""
        if self._names is None:
            if self.access is not None:
                self._names = self.access.node_names(self.api)
            else:
                from .node_names import NodeNames
                self._names = NodeNames()
        return self._names

    def close(self) -> None:
        close_client(self.api)
        self.session.close()

    def __enter__(self) -> "Manager":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def close_client(api) -> None:
    """Close an Engine API client and the SSH socket forwarder under it (a test's fake may
    have neither)."""
    client = getattr(api, "api", api)
    close = getattr(client, "close_forwarder", None)
    if close is not None:
        close()


def probe(acc, hosts: list, *, timeout: int = 60) -> Manager:
    """The first of `hosts` (of ClusterAccess `acc`) that is a usable manager; NoManagerError
    with every host's reason otherwise."""
    from .registry_auth import Credentials
    from .transport import api_client
    reasons: dict[str, str] = {}
    seen: dict[str, dict] = {}
    unknown = None
    for host in hosts:
        s = acc.session(host)
        try:
            s.connect()
        except HostKeyMismatchError:
            raise
        except UnreachableError as e:
            if isinstance(e, HostKeyUnknownError):
                unknown = unknown or e
            reasons[host.name] = e.message
            continue
        try:
            client = api_client(s, timeout=timeout)
        except SwarmsmithError as e:
            seen[host.name] = {"state": "engine-down", "error": e.message[-200:]}
            reasons[host.name] = _not_usable(seen[host.name])
            s.close()
            continue
        api = EngineAPI(client, credentials=Credentials.for_cluster(acc.path), where=host.name,
                        cluster_file=acc.path)
        try:
            swarm = client.info().get("Swarm") or {}
            f = seen[host.name] = F.swarm_facts(swarm)
            # the manager check read /info: asking again costs the engine a second /info
            client.node_id = f["node_id"]
            why = _not_usable(f)
            if why is None:
                api.nodes()   # raft must have a leader for this to answer
                return Manager(host, s, api, f, cluster_path=acc.path, access=acc)
        except SwarmsmithError as e:
            seen.setdefault(host.name, {"state": "engine-down", "error": e.message[-200:]})
            why = e.message
        reasons[host.name] = why
        close_client(api)
        s.close()
    raise NoManagerError(reasons, seen, unknown)


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
