"""One identity per host: the cluster file's name for it (`m1`), the machine's hostname (what
the swarm lists) and its swarm node ID are three names of one node.

Every command that takes a node (node drain/activate/pause/promote/demote/label/rm, backup
--node, restore --to, images push --nodes) resolves it here, and every listing shows both names.
The link between them is the cluster's hosts as `up` recorded them (the local inventory, else the
cluster's record in the swarm): each has its node ID, and its hostname and addresses as they were
when it joined. A node is matched by its ID first; by hostname or address only when no host holds
its ID (a host that joined again under a new ID since the record was written).
"""
from __future__ import annotations

from ..base.errors import InputError


class NodeNotFound(InputError):
    pass


class NodeNames:
    def __init__(self, hosts: dict[str, dict] | None = None):
        """`hosts`: cluster-file name -> host record (node_id, hostname, public_address,
        private_address, advertise_address), as the inventory or the record keeps them."""
        self.hosts = {n: r for n, r in (hosts or {}).items() if isinstance(r, dict)}
        self._by_id = {r["node_id"]: n for n, r in self.hosts.items() if r.get("node_id")}
        self._live: frozenset = frozenset()     # node IDs the swarm lists now (see bind)

    # --- from a node to the file's name --------------------------------------------------
    def name_of(self, node: dict) -> str:
        """The cluster file's name of an Engine API node ("" when no host of the cluster is it)."""
        name = self._by_id.get(node.get("ID", ""))
        if name:
            return name
        hostname = _hostname(node)
        addr = (node.get("Status") or {}).get("Addr", "")
        for n, r in self.hosts.items():
            if r.get("node_id") and r["node_id"] != node.get("ID") and r["node_id"] in self._live:
                continue        # that host is another node, listed now
            if hostname and r.get("hostname") == hostname:
                return n
            if addr and addr in (r.get("advertise_address"), r.get("public_address"),
                                 r.get("private_address")):
                return n
        return ""

    def bind(self, nodes: list[dict]) -> "NodeNames":
        """Tell the resolver which nodes the swarm lists now (a host whose recorded ID is among
        them is that node, never another one)."""
        self._live = frozenset(n.get("ID", "") for n in nodes)
        return self

    def show(self, node: dict) -> str:
        """`m1 (host-a)` when the file's name differs from the hostname, else the hostname."""
        return label(self.name_of(node), _hostname(node) or node.get("ID", "")[:12])

    # --- from what the operator typed to a node -----------------------------------------------
    def find(self, nodes: list[dict], ref: str) -> dict:
        """A node by the cluster file's name, hostname, full ID or unique ID prefix."""
        self.bind(nodes)
        if ref in self.hosts:
            hit = [n for n in nodes if self.name_of(n) == ref]
            if len(hit) == 1:
                return hit[0]
        by_name = [n for n in nodes if _hostname(n) == ref]
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
        known = ", ".join(sorted(self.show(n) for n in nodes))
        raise NodeNotFound(f"node {ref}: no such node in the swarm (nodes: {known}; a node is "
                           "named by the cluster file's name, its hostname or its ID)")

    def host_name(self, ref: str, names=None) -> str:
        """The cluster file's name for `ref` (that name, a recorded hostname or node ID, or a
        unique ID prefix), among `names` (default: every host); "" when none matches."""
        pool = {n: r for n, r in self.hosts.items() if names is None or n in names}
        if ref in pool:
            return ref
        for key in ("hostname", "node_id"):
            hit = [n for n, r in pool.items() if r.get(key) == ref]
            if len(hit) == 1:
                return hit[0]
        hit = [n for n, r in pool.items()
               if len(ref) >= 4 and (r.get("node_id") or "").startswith(ref)]
        return hit[0] if len(hit) == 1 else ""


def label(name: str, hostname: str) -> str:
    return f"{name} ({hostname})" if name and hostname and name != hostname else (hostname or name)


def _hostname(node: dict) -> str:
    return (node.get("Description") or {}).get("Hostname") or ""
