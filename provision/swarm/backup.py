"""Backup and restore of a swarm's manager state, the way Docker's admin guide describes it.

Backup: on a manager that is not the leader (when there are several), stop the engine only while
`/var/lib/docker/swarm` is copied, start it again and wait until it is a reachable manager again.
Refused when stopping that manager would cost the swarm its quorum. The archive (mode 0600) is a
tar holding `manifest.json` (cluster, node, time, engine version, services, secrets, configs) and
`swarm.tar.gz` (the folder). It holds the raft store: secrets, join tokens and keys; keep it
like a password.

Restore: the folder goes onto a host of the cluster with its engine stopped; the node's recorded
addresses are rewritten to the host's own (the backup's are another machine's, and
`swarm init --force-new-cluster --advertise-addr` alone keeps the old ones), the engine started,
and `swarm init --force-new-cluster` makes it the one manager of the restored swarm. The other
nodes of the old swarm are removed from it; `swarmsmith up` then joins the cluster file's hosts.
The raft store itself keeps the backed-up node's address as the manager's address, and swarm
offers no way to change it: managers can join the restored swarm only when the host it is
restored onto has that address (Docker's restore procedure has the same requirement), so a
restore onto a host with another address is refused unless forced (it then stays one manager).
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from ..engine import install as engine
from ..remote import facts as F
from ..remote.command import Command
from ..base.errors import InputError, SwarmsmithError
from .quorum import QuorumRefused, manager_reachable, node_name, quorum_of

_hostname = node_name

FORMAT = 1
MANIFEST = "manifest.json"
PAYLOAD = "swarm.tar.gz"
SWARM_DIR = "/var/lib/docker/swarm"
Progress = Callable[[str], None]


@dataclass
class BackupResult:
    path: str
    host: str
    manifest: dict
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    engine_stopped_seconds: float = 0.0

    def to_dict(self) -> dict:
        return {"path": self.path, "host": self.host, "manifest": self.manifest,
                "notes": self.notes, "seconds": round(self.seconds, 2),
                "engine_stopped_seconds": round(self.engine_stopped_seconds, 2)}


def default_out(cluster: str, now: datetime) -> str:
    return f"{cluster}-swarm-{now.strftime('%Y%m%dT%H%M%SZ')}.tar"


def pick_backup_node(nodes: list[dict], hosts: dict[str, object], want: str | None = None,
                     names=None) -> dict:
    """A reachable manager that is not the leader when there are several (or the one asked
    for, by the cluster file's name, hostname or node ID); refuse when stopping it would lose
    quorum. `hosts`: the cluster file's name -> inventory host; `names`: node_names.NodeNames."""
    from .node_names import NodeNames, NodeNotFound
    names = (names or NodeNames()).bind(nodes)

    def node_name(n: dict) -> str:      # the inventory's name of node n
        return names.name_of(n) or _hostname(n)
    managers = [n for n in nodes if (n.get("Spec") or {}).get("Role") == "manager"]
    q = quorum_of(nodes)
    if want:
        try:
            found = names.find(nodes, want)
        except NodeNotFound:
            found = None
        chosen = [n for n in managers if n is found]
        if not chosen or node_name(chosen[0]) not in hosts:
            raise InputError(f"--node {want}: not a manager of this cluster's inventory "
                             f"(managers: {', '.join(sorted(names.show(n) for n in managers))})")
        if len(managers) > 1 and not (manager_reachable(chosen[0]) and q.after_losing(1, 0).ok):
            raise QuorumRefused(f"refusing to back up from {want}: {q.text()}; stopping its "
                                "engine for the copy would lose quorum")
        return chosen[0]
    if len(managers) == 1:
        if node_name(managers[0]) not in hosts:
            raise SwarmsmithError(f"the only manager {node_name(managers[0])} is not a host of "
                                  "this cluster's inventory")
        return managers[0]
    candidates = [n for n in managers if manager_reachable(n)
                  and not (n.get("ManagerStatus") or {}).get("Leader")
                  and node_name(n) in hosts]
    if not candidates:
        raise SwarmsmithError("no reachable non-leader manager of the inventory to take the "
                              "backup from")
    if not q.after_losing(1, 0).ok:
        raise QuorumRefused(f"refusing to back up: {q.text()}; stopping a manager's engine "
                            "for the copy would lose quorum. Bring the other managers back first")
    return sorted(candidates, key=node_name)[0]


def build_manifest(*, cluster: str, swarm: dict, node: dict, engine_version: str,
                   services: list[dict], secrets: list[dict], configs: list[dict],
                   managers: int, payload: bytes, now: datetime) -> dict:
    enc = ((swarm.get("Spec") or {}).get("EncryptionConfig") or {})
    raft_addr = ((node.get("ManagerStatus") or {}).get("Addr") or "").rpartition(":")[0]
    return {"format": FORMAT, "cluster": cluster, "swarm_id": swarm.get("ID", ""),
            "node": node_name(node), "node_id": node["ID"],
            "node_addr": raft_addr or (node.get("Status") or {}).get("Addr", ""),
            "taken_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "engine_version": engine_version,
            "managers": managers, "autolock": bool(enc.get("AutoLockManagers")),
            "services": sorted(s["Spec"]["Name"] for s in services),
            "secrets": sorted(s["Spec"]["Name"] for s in secrets),
            "configs": sorted(c["Spec"]["Name"] for c in configs),
            "payload_sha256": hashlib.sha256(payload).hexdigest(), "payload_bytes": len(payload)}


def write_archive(path: str, manifest: dict, payload: bytes) -> None:
    """Atomically, mode 0600 from the first byte."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            with tarfile.open(fileobj=f, mode="w") as tar:
                for name, data in ((MANIFEST, json.dumps(manifest, indent=2).encode()),
                                   (PAYLOAD, payload)):
                    ti = tarfile.TarInfo(name)
                    ti.size, ti.mode, ti.mtime = len(data), 0o600, int(time.time())
                    tar.addfile(ti, io.BytesIO(data))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_archive(path: str) -> tuple[dict, bytes]:
    """(manifest, payload); InputError naming the file for anything that is not a good archive."""
    try:
        with tarfile.open(path, mode="r") as tar:
            members = {m.name: m for m in tar.getmembers()}
            if MANIFEST not in members or PAYLOAD not in members:
                raise InputError(f"not a swarmsmith backup (needs {MANIFEST} and {PAYLOAD})",
                                 file=path)
            manifest = json.loads(tar.extractfile(members[MANIFEST]).read())
            payload = tar.extractfile(members[PAYLOAD]).read()
    except FileNotFoundError:
        raise InputError("no such file", file=path) from None
    except (tarfile.TarError, OSError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"not a readable backup archive: {e}", file=path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"manifest.json: format {manifest.get('format') if isinstance(manifest, dict) else '?'}"
                         f", expected {FORMAT}", file=path)
    if hashlib.sha256(payload).hexdigest() != manifest.get("payload_sha256"):
        raise InputError("swarm.tar.gz does not match the manifest's checksum (damaged?)",
                         file=path)
    return manifest, payload


# --- remote steps -----------------------------------------------------------------------

def engine_facts(session) -> dict:
    return F.parse_engine_facts(session.run(F.ENGINE_FACTS).stdout)


def stop_engine(session, facts: dict) -> None:
    session.run(engine.stop_command(facts), timeout=120)


def start_engine(session, facts: dict) -> None:
    # past the wait's own deadline, so a failure ends with the engine's log lines, not a timeout
    for cmd in engine.start_commands(facts):
        session.run(cmd, timeout=engine.WAIT_SECONDS + 30)


def copy_swarm_dir(session) -> bytes:
    out = session.run(Command.shell(f"tar -C {os.path.dirname(SWARM_DIR)} -czf - swarm | base64",
                                    description="archive /var/lib/docker/swarm"),
                      timeout=300).stdout
    return base64.b64decode(out)


def retarget_payload(payload: bytes, advertise: str) -> bytes:
    """The backup's swarm folder with docker-state.json pointing at `advertise` (this host):
    the recorded addresses are the backed-up machine's, and `swarm init --force-new-cluster
    --advertise-addr` does not replace them."""
    src = tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz")
    out = io.BytesIO()
    with src, tarfile.open(fileobj=out, mode="w:gz") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            if m.name == "swarm/docker-state.json" and data is not None:
                st = json.loads(data)
                st.update(AdvertiseAddr=f"{advertise}:2377", ListenAddr=f"{advertise}:2377",
                          LocalAddr=advertise, DataPathAddr="")
                data = json.dumps(st).encode()
                m.size = len(data)
            dst.addfile(m, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def put_swarm_dir(session, payload: bytes) -> None:
    """Replace the host's swarm folder with the backup's (the engine must be stopped)."""
    script = (f"set -e; rm -rf {SWARM_DIR}.restore; mkdir -p {SWARM_DIR}.restore; "
              f"tar -C {SWARM_DIR}.restore -xzf -; rm -rf {SWARM_DIR}; "
              f"mv {SWARM_DIR}.restore/swarm {SWARM_DIR}; rmdir {SWARM_DIR}.restore")
    session.run(Command.shell(script, stdin=payload, description="put the backup in place"),
                timeout=300)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- the commands' library functions ----------------------------------------------------

@dataclass
class BackupOptions:
    out: str | None = None          # archive path (default <cluster>-swarm-<time>.tar here)
    node: str | None = None         # the manager to copy (default: a non-leader one)
    reachable_timeout: float = 120.0


def take_backup(cluster_path: str, opts: BackupOptions | None = None, *,
                on_progress: Progress | None = None,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> BackupResult:
    from inventory import clusterfile
    from ..engine_api.sessions import inventory_hosts, session_for
    from .managers import connect_manager
    opts = opts or BackupOptions()
    say = on_progress or (lambda msg: None)
    t0 = clock()
    cf = clusterfile.load(cluster_path)
    hosts = {h.name: h for h in inventory_hosts(cluster_path, "manager")}
    out = opts.out or default_out(cf.name, utcnow())
    if os.path.isdir(out):
        out = os.path.join(out, default_out(cf.name, utcnow()))
    if not os.path.isdir(os.path.dirname(os.path.abspath(out))):
        raise InputError("--out: the folder does not exist", file=out)
    conn = connect_manager(cluster_path)
    try:
        api = conn.api
        nodes = api.nodes()
        node = pick_backup_node(nodes, hosts, opts.node, conn.names)
        name = conn.names.name_of(node) or node_name(node)
        conn_other = conn.host.name != name
        swarm = api.swarm()
        services, secrets, configs = api.services(), api.secrets(), api.configs()
        managers = quorum_of(nodes).managers
        notes = []
        if (node.get("ManagerStatus") or {}).get("Leader") and managers > 1:
            notes.append("copied from the leader: the swarm elected another while its engine "
                         "was stopped")
        if managers == 1:
            notes.append("single manager: the swarm could not be changed while its engine was "
                         "stopped for the copy (running tasks kept running)")
        if not conn_other and managers > 1:
            conn.close()
            conn = connect_manager(cluster_path, prefer=next(h for h in hosts if h != name))
            api = conn.api
        s = session_for(hosts[name])
        try:
            facts = engine_facts(s)
            version = facts.get("server", "")
            say(f"{name}: stopping the engine for the copy")
            stopped = clock()
            stop_engine(s, facts)
            try:
                payload = copy_swarm_dir(s)
            finally:
                say(f"{name}: starting the engine again")
                start_engine(s, facts)
                stopped = clock() - stopped
        finally:
            s.close()
        manifest = build_manifest(cluster=cf.name, swarm=swarm, node=node, engine_version=version,
                                  services=services, secrets=secrets, configs=configs,
                                  managers=managers, payload=payload, now=utcnow())
        write_archive(out, manifest, payload)
        say(f"{name}: archive written ({len(payload)} bytes of swarm state)")
        if managers > 1:
            wait_reachable(api, node["ID"], opts.reachable_timeout, clock, sleep)
            say(f"{name}: reachable manager again")
        if manifest["autolock"]:
            notes.append("autolock is on: restoring needs the unlock key of the time of the backup")
        return BackupResult(out, name, manifest, notes, clock() - t0, stopped)
    finally:
        conn.close()


def wait_reachable(api, node_id: str, timeout: float, clock, sleep) -> None:
    end = clock() + timeout
    while True:
        try:
            n = api.node(node_id)
            if manager_reachable(n):
                return
        except SwarmsmithError:
            pass
        if clock() >= end:
            raise SwarmsmithError(f"manager {node_id[:12]} not reachable again after "
                                  f"{timeout:g} s; check it with `swarmsmith status`")
        sleep(0.5)
