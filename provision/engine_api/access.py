"""Reaching an existing cluster with or without a local state folder; connect(cluster) ->
Manager is the one way every command reaches a manager (provision/engine_api/manager.py).

Managers are looked for in the local cache (`.swarmsmith/<name>/inventory.json`, when present),
then from the provider: the cluster file's static hosts, the lab's hosts, DigitalOcean droplets
by tag. The first one whose host key verifies and that is a swarm manager is used. Every other
host (image checks, image-load) comes from the cache or, without one, from the provider, with
the cluster's record in the swarm telling which of them are nodes.

The cluster file and the provider decide which hosts exist, where they are and, when they know
it, their host key: the record (which anyone with access to a manager can write) only adds node
IDs and keys of hosts listed without one. A record that puts a host elsewhere or gives it another
key than they do is refused (exit 3, naming its version); hosts only the record lists are left
out.

Host keys, first match wins (pin_of, which `up` uses too): the cluster file (`host_key:` / `ssh.known_hosts`), the local
cache, the provider (the lab knows its hosts' keys), the swarm's record. A host with none is
refused (exit 3) unless accept_new (`--accept-new-host-keys`); a changed key is refused always.
Nothing is written locally.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from ..base.errors import HostKeyMismatchError, HostKeyUnknownError, SwarmsmithError, UnreachableError
from ..base.hosts import Host
from ..remote.ssh import Session

if TYPE_CHECKING:
    from .manager import Manager
    from .node_names import NodeNames

_CACHE: dict[str, "ClusterAccess"] = {}
# the command line's --accept-new-host-keys, for every cluster this process opens (a command
# opens one cluster; the commands without an option of their own for it read it from here)
_ACCEPT_NEW = [False]
MISMATCH_HINT = ("If the host was rebuilt on purpose, update its pin in the cluster file, or "
                 "accept the new key on the machine that ran `up` with `swarmsmith up "
                 "--accept-host-key HOST`")


def accept_new_host_keys(on: bool = True) -> None:
    """From here on, clusters opened in this process trust unpinned hosts on first use (or,
    with on=False, no longer do)."""
    _ACCEPT_NEW[0] = on
    for acc in _CACHE.values():
        acc.accept_new = on


def accepts_new_host_keys() -> bool:
    return _ACCEPT_NEW[0]


def opened() -> "ClusterAccess | None":
    """The cluster this process opened, when it opened exactly one (every command does)."""
    return next(iter(_CACHE.values())) if len(_CACHE) == 1 else None


def access(cluster_path: str, accept_new: bool | None = None) -> "ClusterAccess":
    """One ClusterAccess per cluster file and process (the deploy, its image check and its audit
    share the manager connection and the record read)."""
    key = os.path.abspath(cluster_path)
    if key not in _CACHE:
        _CACHE[key] = ClusterAccess(cluster_path, accept_new=_ACCEPT_NEW[0])
    if accept_new is not None:
        _CACHE[key].accept_new = accept_new
    return _CACHE[key]


def connect(cluster_file: str | None = None, *, accept_new_host_keys: bool | None = None,
            prefer: str | None = None, shared: bool = False) -> Manager:
    """A reachable manager of the cluster (`cluster_file` None: the usual lookup), tried
    `prefer` first; the caller closes it (`with connect(path) as m:`). `shared`: the process's
    one connection to the cluster instead, which a deploy, its image check, its audit and the
    record read share and nobody closes. `accept_new_host_keys` None: as the process was told
    (the command line's flag). Raises NoManagerError (exit 3 when no manager answered over SSH
    at all); the shared connection raises what the deploy commands always said: the host key
    nobody pins, else UnreachableError."""
    from ..base.clusters import find_cluster_file
    acc = access(find_cluster_file(cluster_file), accept_new_host_keys)
    return acc.shared_manager() if shared else acc.find_manager(prefer=prefer)


def pin_of(cluster, host: Host, *, cached: str = "", provider: str = "",
           recorded: str = "") -> tuple[str, str]:
    """The key `host` must show and what pins it, first match wins: the cluster file
    (`host_key:` / `ssh.known_hosts`), the local cache, the provider, the swarm's record;
    ("", "") when nothing does. `up` and every later connection decide it here."""
    for key, source in ((cluster.pinned_key(host.name, host.public_address, host.port), "file"),
                        (cached, "cache"), (provider, "provider"), (recorded, "record")):
        if key:
            return key, source
    return "", ""


def for_cluster(cluster_path: str, api=None) -> "NodeNames":
    """The cluster's names of its nodes (ClusterAccess.node_names)."""
    return access(cluster_path).node_names(api)


class ClusterAccess:
    def __init__(self, cluster_path: str, accept_new: bool = False):
        from inventory import clusterfile
        from inventory.state import StateDir
        self.path = cluster_path
        self.cluster = clusterfile.load(cluster_path)
        self.inventory = StateDir(cluster_path, self.cluster.name).load()
        self.accept_new = accept_new
        self.manager: Host | None = None
        self._manager: "Manager | None" = None
        self._record: dict | None = None
        self._record_version = 0
        self._record_read = False
        self._provider_hosts: list[Host] | None = None
        self._from_record: set[str] = set()     # hosts whose key only the record gives

    # --- host records -------------------------------------------------------------------
    def _key_path(self) -> str | None:
        """The lab's own key (every lab host takes it); None for other providers."""
        if self.cluster.provider == "lab":
            from ..hosts.lab.lab import Lab
            lab = Lab(self.cluster.provider_settings.get("name") or self.cluster.name)
            return lab.layout.key_path if lab.exists else ""
        return None

    def _cached_hosts(self, role: str | None) -> list[Host]:
        key_path = self._key_path()
        out = []
        for name, rec in sorted((self.inventory.get("hosts") or {}).items()):
            if not rec.get("node_id") or (role and rec.get("role") != role):
                continue
            out.append(self._host(name, rec, key_path))
        return out

    def _host(self, name: str, rec: dict, key_path: str | None) -> Host:
        static = next((h for h in self.cluster.static_hosts if h["name"] == name), {})
        host = Host(name=name, public_address=rec["public_address"],
                    private_address=rec.get("private_address"),
                    user=rec.get("user") or self.cluster.ssh_user,
                    # the key `up` used for this host: the lab's, a static host's own, the file's
                    key_path=key_path if key_path is not None else (
                        rec.get("key") or static.get("key") or self.cluster.ssh_key),
                    port=rec.get("port") or static.get("port") or self.cluster.ssh_port,
                    host_key=rec.get("host_key", ""), role=rec.get("role", ""))
        host.host_key = self.pin_for(host)
        return host

    def _one_per_machine(self, hosts: list[Host]) -> list[Host]:
        """One host per node ID and per SSH address: an inventory or record written before a
        host was renamed in the cluster file may hold it under both names; the file's name
        wins."""
        in_file = {w.name for w in self.cluster.wanted_hosts()}
        recs = {**((self._record or {}).get("hosts") or {}),
                **(self.inventory.get("hosts") or {})}
        out, seen = [], {}
        for h in sorted(hosts, key=lambda h: h.name not in in_file):
            keys = {("addr", h.public_address, h.port)}
            node_id = (recs.get(h.name) or {}).get("node_id")
            if node_id:
                keys.add(("id", node_id))
            if not keys & seen.keys():
                out.append(h)
            seen.update(dict.fromkeys(keys, h.name))
        order = {h.name: i for i, h in enumerate(hosts)}
        return sorted(out, key=lambda h: order[h.name])

    def provider_hosts(self, role: str | None = "manager") -> list[Host]:
        """The hosts the provider knows, without any local state (listed once per process)."""
        if self._provider_hosts is None:
            self._provider_hosts = self._list_provider_hosts()
        return [h for h in self._provider_hosts if not role or h.role == role]

    def _list_provider_hosts(self) -> list[Host]:
        cf = self.cluster
        if cf.provider == "lab":
            from ..hosts.lab.lab import Lab
            lab = Lab(cf.provider_settings.get("name") or cf.name)
            hosts = lab.hosts()
            for h in hosts:
                h.role = "manager" if "-manager-" in h.name else "worker"
            return hosts
        from ..hosts import providers
        provider = providers.make(cf, self.inventory.get("provider_state", {}))
        return list(provider.existing())

    def _pin(self, host: Host) -> tuple[str, str]:
        """(key, where it comes from: file, cache, provider, record) a host must show; ("", "")
        when nothing pins it."""
        cached = ((self.inventory.get("hosts") or {}).get(host.name) or {}).get("host_key", "")
        recorded = (((self._record or {}).get("hosts") or {}).get(host.name) or {}).get("host_key", "")
        # hosts() hands on the record's key as host_key: it is still the record's
        provider = "" if host.name in self._from_record else host.host_key
        return pin_of(self.cluster, host, cached=cached, provider=provider, recorded=recorded)

    def pin_for(self, host: Host) -> str:
        """The key a host must show ("" when nothing pins it)."""
        return self._pin(host)[0]

    def mismatch_hint(self, host: Host) -> str:
        """What to do when the host shows another key than its pin. Never "accept it" for a key
        only the swarm's record vouches for."""
        if self._pin(host)[1] != "record":
            return MISMATCH_HINT.replace("--accept-host-key HOST", f"--accept-host-key {host.name}")
        from .cluster_record import config_name
        return (f"Only the swarm's cluster record (version {self._record_version}, "
                f"{config_name(self.cluster.name, self._record_version)}) pins this host's key: "
                "either the host was rebuilt or the record was changed. Check the key on the "
                "host itself and pin it in the cluster file (static.hosts[].host_key or "
                "ssh.known_hosts)")

    def session(self, host: Host, connect_deadline: float = 10) -> Session:
        # accept_new trusts a host nothing pins; a pinned key is required to match either way
        return Session(host, pinned_key=self.pin_for(host), connect_deadline=connect_deadline,
                       require_pin=not self.accept_new, mismatch_hint=self.mismatch_hint(host))

    # --- the manager ----------------------------------------------------------------------
    def candidates(self) -> list[Host]:
        seen, out = set(), []
        for h in self._cached_hosts("manager") + self.provider_hosts("manager"):
            where = (h.public_address, h.port)
            if where not in seen:
                seen.add(where)
                out.append(h)
        # hosts with a pin first: an unpinned one is tried only when no pinned one answers
        return sorted(out, key=lambda h: not self.pin_for(h))

    def find_manager(self, prefer: str | None = None) -> "Manager":
        """A new connection to the first usable manager (`prefer` tried first)."""
        from .manager import probe
        hosts = self.candidates()
        if not hosts:
            raise SwarmsmithError(f"cluster {self.cluster.name}: no manager found (no local "
                                  f"state, and the {self.cluster.provider} provider lists none); "
                                  f"run `swarmsmith up {self.path}` first")
        if prefer:
            hosts.sort(key=lambda h: h.name != prefer)
        return probe(self, hosts)

    def shared_manager(self) -> "Manager":
        """The process's one connection to this cluster's manager (the deploy, its image check,
        its audit and the record read share it); a host nothing pins is refused as such, else
        no manager is exit 3."""
        if self._manager is None:
            from .manager import NoManagerError
            try:
                self._manager = self.find_manager()
            except NoManagerError as e:
                if e.unknown is not None:
                    raise e.unknown from None
                raise UnreachableError(f"cluster {self.cluster.name}: no manager reachable:\n  "
                                       + "\n  ".join(f"{h}: {r}" for h, r in e.reasons.items())
                                       ) from None
            self.manager = self._manager.host
        return self._manager

    def client(self):
        """The docker SDK client (guarded) of the shared manager."""
        return self.shared_manager().api.api

    def node_names(self, api=None) -> "NodeNames":
        """The cluster's names: its local inventory, else the cluster's record in the swarm (read
        through `api`, an EngineAPI on a manager, when given)."""
        from .node_names import NodeNames
        hosts = {n: r for n, r in (self.inventory.get("hosts") or {}).items() if r.get("node_id")}
        if not hosts:
            from .cluster_record import RecordStore
            try:
                record = RecordStore(api, self.cluster.name).read()[1] if api is not None \
                    else self.record()
            except Exception:       # a record that cannot be read leaves hostnames and IDs
                record = None
            hosts = (record or {}).get("hosts") or {}
        return NodeNames(hosts)

    # --- the record -----------------------------------------------------------------------
    def record(self) -> dict | None:
        """The newest record version, checked against the cluster file and the provider (a
        record that disagrees with them is refused: RecordDisagrees, exit 3)."""
        if not self._record_read:
            # one listing through the guarded client (errors name the manager), read as a
            # snapshot: the Engine API adapter sits above this module (it connects through it)
            from .cluster_record import ConfigSnapshot, RecordStore, check_against, record_filters
            configs = self.client().configs(filters=record_filters(self.cluster.name))
            version, record = RecordStore(ConfigSnapshot(configs), self.cluster.name).read()
            if record is not None:
                known = {h.name: (h.public_address, h.port, self.cluster.pinned_key(
                    h.name, h.public_address, h.port) or h.host_key)
                    for h in self.provider_hosts(None)}
                check_against(record, version, self.cluster.name, known,
                              authority=f"the cluster file and the {self.cluster.provider} "
                                        "provider")
            self._record, self._record_version = record, version
            self._record_read = True
        return self._record

    def hosts(self, role: str | None = None) -> list[Host]:
        """Every node host of the cluster, one per machine: the local cache, else the hosts the
        provider lists that the swarm's record names as nodes (addresses always the provider's)."""
        hosts = self._one_per_machine(self._cached_hosts(role))
        if hosts:
            return hosts
        nodes = (self.record() or {}).get("hosts") or {}
        key_path = self._key_path()
        hosts = []
        for listed in sorted(self.provider_hosts(None), key=lambda h: h.name):
            node = nodes.get(listed.name) or {}
            if not node.get("node_id") or (role and (node.get("role") or listed.role) != role):
                continue
            h = dataclasses.replace(listed, role=node.get("role") or listed.role)
            if key_path is not None:
                h.key_path = key_path
            h.host_key, source = self._pin(h)
            if source == "record":
                self._from_record.add(h.name)
            hosts.append(h)
        if not hosts:
            raise SwarmsmithError(f"cluster {self.cluster.name} has no {role or 'host'} in its "
                                  f"local state nor in the swarm's record: run "
                                  f"`swarmsmith up {self.path}` first")
        return hosts
