"""The cluster's record, kept in the swarm: hosts, roles, addresses, node IDs, pinned host keys,
provider facts. Never a token, password or key that opens anything (tests grep for them).

Stored as versioned swarm configs `swarmsmith-cluster-<name>-<N>` labelled with the cluster name
and N. Configs cannot change, and the managers' raft store refuses a second config of a name
(HTTP 409), so creating version N+1 is a compare-and-swap: of two writers that read version N,
one create fails; that writer re-reads, merges and tries N+2 (or finds nothing left to write).
The last KEEP versions are kept, older ones removed.

The local `.swarmsmith/<name>/inventory.json` is a cache of this record.
"""
from __future__ import annotations

import base64
import json
import socket

from ..base.errors import EXIT_UNREACHABLE, SwarmsmithError, is_conflict

PREFIX = "swarmsmith-cluster-"
L_CLUSTER = "com.swarmsmith.cluster"
L_VERSION = "com.swarmsmith.cluster.version"
L_WRITER = "com.swarmsmith.cluster.written-by"
NODE_LABEL = "swarmsmith.cluster"     # on every node `up` manages
FORMAT = 1
KEEP = 5
HOST_FIELDS = ("role", "public_address", "private_address", "user", "port", "node_id",
               "host_key", "advertise_address", "labels", "hostname")


class RecordConflict(SwarmsmithError):
    """Another writer created the version this one meant to create."""


class RecordDisagrees(SwarmsmithError):
    """The record says another address or host key than the cluster file or the provider.
    Anyone who can reach a manager can create a record version; it must never decide where
    SSH goes or which key is trusted (exit 3, as for a changed host key)."""
    exit_code = EXIT_UNREACHABLE


def config_name(cluster: str, version: int) -> str:
    return f"{PREFIX}{cluster}-{version}"


def check_against(record: dict, version: int, cluster: str, known: dict, *,
                  authority: str = "the cluster file and the provider",
                  key_advice: str = "") -> None:
    """Refuse a record that disagrees with what the cluster file and the provider say about a
    host they list: `known` maps a host name to (address, port, key), the key "" when they do
    not know it. The record may add only what they do not know (node IDs, keys of hosts listed
    without one); hosts they do not list are never taken from it (the callers skip them)."""
    from ..remote.ssh import fingerprint
    moved, rekeyed = [], []
    for name, rec in sorted((record.get("hosts") or {}).items()):
        if name not in known or not isinstance(rec, dict):
            continue
        address, port, key = known[name]
        if rec.get("public_address") and rec["public_address"] != address:
            moved.append(f"{name} at {rec['public_address']} (not {address})")
        elif rec.get("port") and port and int(rec["port"]) != int(port):
            moved.append(f"{name} on port {rec['port']} (not {port})")
        elif rec.get("host_key") and key and rec["host_key"].split()[:2] != key.split()[:2]:
            rekeyed.append(f"{name} with host key {fingerprint(rec['host_key'])} "
                           f"(not {fingerprint(key)})")
    if not (moved or rekeyed):
        return
    name = config_name(cluster, version)
    raise RecordDisagrees(
        f"the swarm's cluster record version {version} ({name}) puts "
        f"{'; '.join(moved + rekeyed)}, which disagrees with {authority}. Refusing to use it: "
        "the record never decides where SSH connects or which host key is trusted, and anyone "
        f"with access to a manager can write one. Check who wrote it (`docker config inspect "
        f"{name}` on a manager); if it is not yours, remove it (`docker config rm {name}`)"
        + (f". {key_advice}" if key_advice and not moved else ""))


def from_inventory(inv: dict, cluster: str) -> dict:
    """What goes into the swarm: the inventory's durable facts (no journal, no local paths)."""
    hosts = {}
    for name, rec in sorted((inv.get("hosts") or {}).items()):
        if not rec.get("node_id"):
            continue          # not (yet) a node of this swarm
        hosts[name] = {k: rec[k] for k in HOST_FIELDS if rec.get(k) not in (None, "")}
    return {"format": FORMAT, "name": cluster, "provider": inv.get("provider", ""),
            "cluster_id": inv.get("cluster_id", ""), "hosts": hosts,
            "provider_state": inv.get("provider_state") or {}}


def merge_into_inventory(inv: dict, record: dict, skip=()) -> list[str]:
    """Refresh the local cache from the record (a fresh folder, a lost or stale inventory): the
    record names the swarm; host facts fill what the cache lacks; managed label keys are the
    union (so a label either side set can be removed). Hosts in `skip` are left out. Host keys
    are not copied here: the caller compares them with the keys it saw."""
    filled = []
    if record.get("cluster_id") and inv.get("cluster_id") != record["cluster_id"]:
        inv["cluster_id"] = record["cluster_id"]
        inv.pop("init_started_on", None)
        filled.append("cluster_id")
    # what the provider created (DigitalOcean: VPC, firewall, key, with `created` flags that
    # decide what `down` may remove): the record's facts fill what this run's provider lacks
    had_state = "provider_state" in inv
    mine = inv.setdefault("provider_state", {})
    for resource, facts in (record.get("provider_state") or {}).items():
        if isinstance(facts, dict):
            mine[resource] = {**facts, **(mine.get(resource) or {})}
    if not mine and not had_state:     # a no-op run must leave the cache byte for byte as it was
        inv.pop("provider_state")
    held = {r.get("node_id"): n for n, r in (inv.get("hosts") or {}).items() if r.get("node_id")}
    for name, rec in (record.get("hosts") or {}).items():
        if name in skip:          # gone from the cluster (pruned): not brought back
            continue
        if held.get(rec.get("node_id"), name) != name:
            continue              # the same node under the name the cache knows (renamed)
        mine = inv.setdefault("hosts", {}).setdefault(name, {})
        for k in ("node_id", "advertise_address", "role", "public_address",
                  "private_address", "user", "hostname"):
            if k in rec and k not in mine:
                mine[k] = rec[k]
        if rec.get("labels"):
            mine["labels"] = sorted(set(mine.get("labels") or []) | set(rec["labels"]))
    return filled


def merge(latest: dict, ours: dict) -> dict:
    """On a conflict: the hosts this run observed win, hosts only the other writer knew stay."""
    out = dict(latest)
    out.update({k: v for k, v in ours.items() if k != "hosts"})
    mine = ours.get("hosts") or {}
    held = {h.get("node_id") for h in mine.values() if h.get("node_id")}
    # a node this run knows under another name (renamed in the cluster file) is not kept twice
    theirs = {n: h for n, h in (latest.get("hosts") or {}).items()
              if n in mine or h.get("node_id") not in held}
    out["hosts"] = {**theirs, **mine}
    return out


def encode(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def decode(data: bytes | str, where: str) -> dict:
    try:
        rec = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise SwarmsmithError(f"cluster record {where} is not JSON: {e}") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("hosts"), dict):
        raise SwarmsmithError(f"cluster record {where} has no hosts mapping")
    return rec


def _version(cfg: dict) -> int:
    try:
        return int(((cfg.get("Spec") or {}).get("Labels") or {}).get(L_VERSION, "0"))
    except ValueError:
        return 0


def record_filters(cluster: str) -> dict:
    """The config listing filter that finds a cluster's record versions."""
    return {"label": [f"{L_CLUSTER}={cluster}"]}


class ConfigSnapshot:
    """The record's configs as read earlier in one command (`docker config inspect`, the Engine
    API's shape), for RecordStore.read without an Engine API connection."""

    def __init__(self, configs: list[dict]):
        self._configs = configs

    def configs(self, filters=None) -> list[dict]:
        return list(self._configs)

    def config(self, id_: str) -> dict:
        return next(c for c in self._configs if c.get("ID") == id_)


class RecordStore:
    """The record's configs through the Engine API adapter (provision/engine_api/adapter.py's EngineAPI),
    or read from a ConfigSnapshot."""

    def __init__(self, api, cluster: str):
        self.api, self.cluster = api, cluster

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SwarmsmithError as exc:
            if is_conflict(exc):
                raise RecordConflict(f"{what}: another run wrote it first") from exc
            raise

    def versions(self) -> list[dict]:
        found = self._call("list cluster records", self.api.configs, record_filters(self.cluster))
        mine = [c for c in found
                if ((c.get("Spec") or {}).get("Name") or "").startswith(PREFIX + self.cluster + "-")
                and _version(c) > 0]
        return sorted(mine, key=_version)

    def read(self) -> tuple[int, dict | None]:
        """(version, record) of the newest version; (0, None) when the swarm has none."""
        found = self.versions()
        if not found:
            return 0, None
        cfg = found[-1]
        data = (cfg.get("Spec") or {}).get("Data")
        if data is None:     # a list without data: inspect the one config
            cfg = self._call("read the cluster record", self.api.config, cfg["ID"])
            data = cfg["Spec"].get("Data", "")
        return _version(cfg), decode(base64.b64decode(data), cfg["Spec"]["Name"])

    def create(self, version: int, record: dict) -> None:
        labels = {L_CLUSTER: self.cluster, L_VERSION: str(version),
                  L_WRITER: socket.gethostname()}
        self._call(f"write cluster record version {version}", self.api.add_config,
                   config_name(self.cluster, version), encode(record), labels)

    def prune(self, keep: int = KEEP) -> None:
        for old in self.versions()[:-keep]:
            try:
                self.api.remove_config(old["ID"], old["Spec"]["Name"])
            except Exception:
                pass     # another writer pruned it first; pruning is best effort

    def save(self, record: dict, base: tuple[int, dict | None], attempts: int = 5) -> int | None:
        """Write `record` as the version after `base` (version, record read earlier) unless it
        equals the newest; on a conflict re-read, merge and retry. The version written, or None
        when nothing needed writing."""
        version, latest = base
        for _ in range(attempts):
            if latest is not None:
                record = merge(latest, record) if version != base[0] else record
                if encode(record) == encode(latest):
                    return None
            try:
                self.create(version + 1, record)
            except RecordConflict:
                version, latest = self.read()
                continue
            self.prune()
            return version + 1
        raise SwarmsmithError(f"cluster record of {self.cluster}: {attempts} writers raced; "
                              "run again")
