"""Backup and restore of a swarm's manager state, the way Docker's admin guide describes it.

Backup: on a manager that is not the leader (when there are several), stop the engine only while
`/var/lib/docker/swarm` is copied, start it again and wait until it is a reachable manager again.
Stop, copy and start run as one script on the host, detached from the SSH session, so the engine
comes back even if swarmsmith dies. All of it under the cluster's managers lock, with quorum read
again just before the stop: refused when stopping that manager would cost the swarm its quorum.
The archive (mode 0600), never written over an existing file, is a
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
import dataclasses
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable

from ..engine import install as engine
from ..remote import facts as F
from ..remote import docker_cli
from ..remote.command import Command
from ..base.errors import InputError, SwarmsmithError
from ..base.progress import ProgressCallback, lines_to
from .quorum import QuorumRefused, manager_reachable, node_name, quorum_of

_hostname = node_name

FORMAT = 1
MANIFEST = "manifest.json"
PAYLOAD = "swarm.tar.gz"
SWARM_DIR = "/var/lib/docker/swarm"


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
    from ..engine_api.node_names import NodeNames, NodeNotFound
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


def write_archive(path: str, manifest: dict, payload: bytes, *, unique: bool = False) -> str:
    """Write the archive (mode 0600 from the first byte) and return its path. An existing file
    is never replaced: the archive is written to a temporary name of its own, then linked to
    `path`, which fails when `path` exists (a rename would replace it). With `unique`, a taken
    name gets a -2, -3... suffix; else FileExistsError."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".swarmsmith-backup-", suffix=".tmp", dir=folder)
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
        stem, ext = os.path.splitext(path)
        for n in range(1, 1000):
            target = path if n == 1 else f"{stem}-{n}{ext}"
            try:
                os.link(tmp, target)
                return target
            except FileExistsError:
                if not unique:
                    raise
        raise FileExistsError(path)
    finally:
        os.unlink(tmp)


def read_archive(path: str) -> tuple[dict, bytes]:
    """(manifest, payload), the payload checked through (check_payload); InputError naming the
    file, in one line, for anything that is not a good archive: before any host is touched."""
    try:
        # a plain tar, as write_archive makes it ("r" would try every compression and list
        # each one's complaint)
        with tarfile.open(path, mode="r:") as tar:
            members = {m.name: m for m in tar.getmembers()}
            if MANIFEST not in members or PAYLOAD not in members:
                raise InputError(f"not a swarmsmith backup (needs {MANIFEST} and {PAYLOAD})",
                                 file=path)
            manifest = json.loads(tar.extractfile(members[MANIFEST]).read())
            payload = tar.extractfile(members[PAYLOAD]).read()
    except FileNotFoundError:
        raise InputError("no such file", file=path) from None
    except IsADirectoryError:
        raise InputError("a folder, not a backup archive", file=path) from None
    except (tarfile.TarError, OSError, ValueError, UnicodeDecodeError, AttributeError) as e:
        raise InputError(f"not a readable backup archive ({_one_line(e)})", file=path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"manifest.json: format {manifest.get('format') if isinstance(manifest, dict) else '?'}"
                         f", expected {FORMAT}", file=path)
    if hashlib.sha256(payload).hexdigest() != manifest.get("payload_sha256"):
        raise InputError("swarm.tar.gz does not match the manifest's checksum (damaged?)",
                         file=path)
    problem = check_payload(payload)
    if problem:
        raise InputError(f"swarm.tar.gz is not a swarm state swarmsmith can restore: {problem}",
                         file=path)
    return manifest, payload


# what a manager's swarm folder always holds (engine 20.10 and later)
REQUIRED = ("swarm/docker-state.json", "swarm/state.json", "swarm/certificates/swarm-node.crt",
            "swarm/certificates/swarm-node.key", "swarm/certificates/swarm-root-ca.crt")


def check_payload(payload: bytes) -> str | None:
    """Why the payload cannot be put in place as /var/lib/docker/swarm, or None: a gzip'd tar
    whose members are all under swarm/, plain files and folders only (no absolute path, no
    `..`, no link or device: extracting as root must write nothing elsewhere), holding the
    files a manager's state has, docker-state.json readable."""
    try:
        with tarfile.open(fileobj=io.BytesIO(payload), mode="r:gz") as tar:
            members = tar.getmembers()
            files = {}
            for m in members:
                name = m.name
                parts = name.split("/")
                if name.startswith("/") or ".." in parts:
                    return f"member {name!r} points outside the swarm folder"
                if not (m.isfile() or m.isdir()):
                    return f"member {name!r} is not a plain file or folder"
                if parts[0] != "swarm":
                    return f"member {name!r} is not under swarm/"
                if m.isfile():
                    files[name] = m
            missing = [f for f in REQUIRED if f not in files]
            if not any(n.startswith("swarm/raft/wal") for n in files):
                missing.append("swarm/raft/wal*")
            if missing:
                return "missing " + ", ".join(missing)
            state = json.loads(tar.extractfile(files["swarm/docker-state.json"]).read())
            if not isinstance(state, dict):
                return "swarm/docker-state.json is not an object"
    except (tarfile.TarError, OSError, EOFError, ValueError, UnicodeDecodeError) as e:
        return f"not a gzip'd tar ({_one_line(e)})"
    return None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}"[:200] if text else type(e).__name__


# --- remote steps -----------------------------------------------------------------------

def engine_facts(session) -> dict:
    return F.parse_engine_facts(session.run(F.ENGINE_FACTS).stdout)


def stop_engine(session, facts: dict) -> None:
    session.run(engine.stop_command(facts), timeout=120)


def start_engine(session, facts: dict) -> None:
    # past the wait's own deadline, so a failure ends with the engine's log lines, not a timeout
    for cmd in engine.start_commands(facts):
        session.run(cmd, timeout=engine.WAIT_SECONDS + 30)


# The host's own folder for the copy, next to the swarm folder (never /tmp: shared by lab hosts,
# and the copy holds the swarm's keys)
WORK = "/var/lib/docker/swarmsmith"
MARK, COPY, DONE, PID, LOG = (f"{WORK}/backup.{x}" for x in ("marker", "tgz", "done", "pid", "log"))
SCRIPT = f"{WORK}/backup.sh"


def host_copy_script(facts: dict) -> str:
    """Stop, copy and start as one script that runs on the host in a session of its own, so
    the engine is started again even when the SSH connection or swarmsmith itself dies mid-way;
    it writes "<copy status> <engine status>" to DONE when the engine answers again."""
    start = "; ".join(c.wire() for c in engine.start_commands(facts))
    return f"""umask 077
echo $$ > {PID}
finish() {{
  rc=$?; trap - EXIT HUP INT TERM
  {{ {start}; }} </dev/null >>{LOG} 2>&1; up=$?
  echo "$rc $up" > {DONE}.tmp && mv {DONE}.tmp {DONE}
}}
trap finish EXIT
trap 'exit 143' HUP INT TERM
{engine.stop_command(facts).wire()} </dev/null >>{LOG} 2>&1 || exit 90
tar -C {os.path.dirname(SWARM_DIR)} -czf {COPY}.tmp swarm >>{LOG} 2>&1 || exit 91
mv {COPY}.tmp {COPY}
"""


# refuses (exit 75) while a marker is there: the caller has dealt with any earlier run first
LAUNCH = Command.shell(
    f"set -e; umask 077; mkdir -p {WORK}; chmod 700 {WORK}; [ ! -e {MARK} ] || exit 75; "
    f"date -u +%Y-%m-%dT%H:%M:%SZ > {MARK}; rm -f {COPY} {COPY}.tmp {DONE} {PID} {LOG}; "
    f"cat > {SCRIPT}; setsid -f sh {SCRIPT} </dev/null >/dev/null 2>&1",
    description="start the stop-copy-start script on the host")
CLEAN = Command.shell(f"rm -f {COPY} {COPY}.tmp {DONE} {PID} {LOG} {SCRIPT} {MARK}",
                      description="remove the backup's working files on the host")


def copy_on_host(session, facts: dict, *, timeout: float = 600.0,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> bytes:
    """The host's swarm folder as a gzip'd tar, copied while its engine is stopped; returns once
    the engine answers again (host_copy_script)."""
    session.run(dataclasses.replace(LAUNCH, stdin=host_copy_script(facts).encode()),
                timeout=60)
    rc, up = _wait_done(session, timeout, clock, sleep)
    if rc != 0 or up != 0:
        log = session.run(Command.shell(f"tail -n 8 {LOG} 2>/dev/null; true"),
                          check=False).stdout.strip()
        session.run(CLEAN, check=False)
        what = {90: "stopping the engine failed", 91: "copying the swarm folder failed"}.get(
            rc, f"the copy script ended with status {rc}")
        raise SwarmsmithError(
            (what if rc else "copied") + ("; the engine did not answer again" if up else
                                          "; the engine runs again")
            + (f" ({' | '.join(log.splitlines()[-4:])})" if log else ""), host=session.host.name)
    out = session.run(Command.shell(f"base64 {COPY}", description="read the copy"),
                      timeout=300).stdout
    session.run(CLEAN)
    return base64.b64decode(out)


def _wait_done(session, timeout: float, clock, sleep) -> tuple[int, int]:
    end = clock() + timeout
    read = Command.shell(f"cat {DONE} 2>/dev/null || true", description="has the copy ended?")
    while True:
        text = session.run(read, timeout=60).stdout.split()
        if len(text) == 2:
            return int(text[0]), int(text[1])
        if clock() >= end:
            raise SwarmsmithError(f"the stop-copy-start script has not ended after {timeout:g} s "
                                  f"(see {LOG} on the host)", host=session.host.name)
        sleep(0.5)


PREVIOUS = Command.shell(
    f"[ -e {MARK} ] || exit 0; echo \"started=$(cat {MARK})\"; "
    f"echo \"done=$(cat {DONE} 2>/dev/null)\"; p=$(cat {PID} 2>/dev/null); "
    "if [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; then echo running=1; fi",
    description="look for an earlier backup's marker")


def interrupted_backup(session, *, timeout: float = 600.0,
                       clock: Callable[[], float] = time.monotonic,
                       sleep: Callable[[float], None] = time.sleep) -> str | None:
    """What an earlier backup whose swarmsmith went away left on this host, said in a line
    (None: nothing). Its script still running is waited for (it starts the engine again);
    its working files (a copy of the swarm's keys among them) are removed."""
    facts = dict(line.split("=", 1) for line in session.run(PREVIOUS).stdout.splitlines()
                 if "=" in line)
    if not facts:
        return None
    done = facts.get("done", "").split()
    if len(done) != 2 and facts.get("running"):
        done = list(map(str, _wait_done(session, timeout, clock, sleep)))
    session.run(CLEAN)
    engine_line = ("its script had started the engine again" if done[1:] == ["0"] else
                   "its script did not see the engine answer again" if done else
                   "its script did not finish (the host restarted?)")
    return (f"{session.host.name}: a backup started there at {facts.get('started', '?')} was "
            f"interrupted (swarmsmith or its connection went away); {engine_line}; its "
            "working files were removed")


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


# restore keeps the host's swarm state of before here until the restored one runs as a manager
BEFORE = f"{WORK}/swarm.before-restore"
RESTORE_MARK = f"{WORK}/restore.marker"


def put_swarm_dir(session, payload: bytes) -> None:
    """Put the backup's swarm folder in place (the engine must be stopped), keeping the host's
    own: moved to BEFORE, where put_back_swarm_dir finds it and drop_previous_swarm_dir removes
    it. A restore interrupted earlier left its marker: the state of before that one is the one
    kept, and the half-restored folder is replaced."""
    script = (f"set -e; umask 077; mkdir -p {WORK}; chmod 700 {WORK}; "
              f"rm -rf {WORK}/swarm.restore; mkdir {WORK}/swarm.restore; "
              f"tar -C {WORK}/swarm.restore --no-same-owner -xzf -; "
              f"if [ ! -e {RESTORE_MARK} ]; then "
              f"if [ -e {SWARM_DIR} ]; then mv {SWARM_DIR} {BEFORE}; fi; "
              f"date -u +%Y-%m-%dT%H:%M:%SZ > {RESTORE_MARK}; "
              f"else rm -rf {SWARM_DIR}; fi; "
              f"mv {WORK}/swarm.restore/swarm {SWARM_DIR}; rmdir {WORK}/swarm.restore")
    session.run(Command.shell(script, stdin=payload, description="put the backup in place"),
                timeout=300)


def put_back_swarm_dir(session) -> None:
    """The host's swarm state of before the restore back in place (the engine must be
    stopped); none there: no swarm folder, as before."""
    session.run(Command.shell(
        f"set -e; rm -rf {SWARM_DIR} {WORK}/swarm.restore; "
        f"if [ -e {BEFORE} ]; then mv {BEFORE} {SWARM_DIR}; fi; rm -f {RESTORE_MARK}",
        description="put the swarm state of before the restore back"), timeout=120)


def drop_previous_swarm_dir(session) -> None:
    session.run(Command.shell(f"rm -rf {BEFORE} {WORK}/swarm.restore {RESTORE_MARK}",
                              description="remove the swarm state of before the restore"),
                timeout=120)


INTERRUPTED_RESTORE = Command.shell(
    f"[ -e {RESTORE_MARK} ] && cat {RESTORE_MARK}; true",
    description="look for an interrupted restore's marker")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


# --- the commands' library functions ----------------------------------------------------

@dataclass
class BackupOptions:
    out: str | None = None          # archive path (default <cluster>-swarm-<time>.tar here)
    node: str | None = None         # the manager to copy (default: a non-leader one)
    reachable_timeout: float = 120.0
    lock_wait: float = 600.0        # for another run holding the cluster's managers lock


def resolve_out(out: str | None, cluster: str, now: datetime) -> tuple[str, bool]:
    """(archive path, whether a taken name may get a suffix): the default name, or one in the
    folder `out` names, may; a file named by the operator is never replaced. The folder must
    exist and be writable: checked before any engine stops."""
    if out and (os.path.isdir(out) or out.endswith(os.sep)):
        if not os.path.isdir(out):
            raise InputError("--out: the folder does not exist (create it first)", file=out)
        path, unique = os.path.join(out, default_out(cluster, now)), True
    elif out:
        path, unique = out, False
        if os.path.lexists(out):
            raise InputError("--out: the file exists; a backup never replaces one (name "
                             "another file, or a folder)", file=out)
    else:
        path, unique = default_out(cluster, now), True
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InputError("--out: the folder does not exist (create it first)", file=out or path)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError("--out: the folder is not writable", file=out or path)
    return path, unique


SWARM_SIZE = Command.shell(
    f"du -sk {SWARM_DIR} | cut -f1; df -Pk {os.path.dirname(SWARM_DIR)} | awk 'NR==2 {{print $4}}'",
    description="size of the swarm folder and free space next to it")


def check_space(session, path: str) -> int:
    """The swarm folder's size (bytes); refused (exit 2) before the engine stops when the
    archive's folder here, or the host's disk for its copy, has less room than that (the copy
    is compressed: it needs at most as much)."""
    out = session.run(SWARM_SIZE).stdout.split()
    size, host_free = int(out[0]) * 1024, int(out[1]) * 1024
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    if free < size + (1 << 20):
        raise InputError(f"--out: {free >> 20} MiB free in its folder; the swarm folder of "
                         f"{session.host.name} is {size >> 20} MiB (make room first)", file=path)
    if host_free < size + (1 << 20):
        raise SwarmsmithError(f"only {host_free >> 20} MiB free under "
                              f"{os.path.dirname(SWARM_DIR)} for a copy of the {size >> 20} MiB "
                              "swarm folder; the engine was not stopped", host=session.host.name)
    return size


def check_quorum_before_stop(api, node_id: str) -> None:
    """Read again, under the cluster's managers lock, just before the engine stops: what was
    true when the node was picked may not be now (a manager went down meanwhile)."""
    nodes = api.nodes()
    q = quorum_of(nodes)
    if q.managers <= 1:
        return
    node = next((n for n in nodes if n["ID"] == node_id), None)
    if node is None or not manager_reachable(node) or not q.after_losing(1, 0).ok:
        raise QuorumRefused(f"refusing to stop {node_name(node) if node else node_id[:12]}'s "
                            f"engine for the copy: {q.text()}; it would lose quorum now")


def take_backup(cluster_path: str, opts: BackupOptions | None = None, *,
                on_progress: ProgressCallback | None = None,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> BackupResult:
    from inventory import clusterfile
    from ..engine_api.sessions import inventory_hosts, session_for
    from ..engine_api.adapter import as_engine
    from ..engine_api.access import connect
    from .managers import host_swarm_facts, managers_lock
    opts = opts or BackupOptions()
    say = lines_to(on_progress)
    t0 = clock()
    cf = clusterfile.load(cluster_path)
    hosts = {h.name: h for h in inventory_hosts(cluster_path, "manager")}
    out, unique = resolve_out(opts.out, cf.name, utcnow())
    conn = connect(cluster_path)
    try:
        with managers_lock(cluster_path, "backup", api=conn.api, wait=opts.lock_wait,
                           notify=say) as lock:
            api = conn.api
            nodes = api.nodes()
            node = pick_backup_node(nodes, hosts, opts.node, conn.names)
            name = conn.names.name_of(node) or node_name(node)
            swarm = api.swarm()
            services, secrets, configs = api.services(), api.secrets(), api.configs()
            configs = [c for c in configs if c["Spec"]["Name"] != lock.name]
            managers = quorum_of(nodes).managers
            notes = []
            if (node.get("ManagerStatus") or {}).get("Leader") and managers > 1:
                notes.append("copied from the leader: the swarm elected another while its "
                             "engine was stopped")
            if managers == 1:
                # the engine's stop takes its containers with it (live restore is not allowed
                # in swarm mode), and the tasks elsewhere lose their manager for the copy
                notes.append(f"single manager: the swarm had no manager while {name}'s engine "
                             f"was stopped for the copy, and the tasks on {name} stopped with "
                             "it; swarm starts them again, so services may run short for a "
                             "minute (with more managers, a non-leader is copied instead)")
            autolock = bool(((swarm.get("Spec") or {}).get("EncryptionConfig") or {})
                            .get("AutoLockManagers"))
            # read before the stop, kept in memory only: the restarted manager comes back
            # locked, and a backup must not leave it so
            key = api.unlock_key() if autolock else ""
            if autolock and not key:
                raise SwarmsmithError("autolock is on but the unlock key cannot be read; the "
                                      "engine was not stopped")
            if conn.host.name == name and managers > 1:
                conn.close()
                conn = connect(cluster_path, prefer=next(h for h in hosts if h != name))
                api = conn.api
                lock.api = as_engine(api)
            s = session_for(hosts[name])
            try:
                earlier = interrupted_backup(s, clock=clock, sleep=sleep)
                if earlier:
                    notes.append(earlier)
                    say(earlier)
                facts = engine_facts(s)
                version = facts.get("server", "")
                check_space(s, out)
                check_quorum_before_stop(api, node["ID"])
                say(f"{name}: stopping the engine for the copy (a script on the host starts "
                    "it again)")
                stopped = clock()
                payload = copy_on_host(s, facts, clock=clock, sleep=sleep)
                stopped = clock() - stopped
                say(f"{name}: engine started again")
                if autolock:
                    _unlock_again(s, key, host_swarm_facts)
                    notes.append(f"{name}: unlocked again after the restart (autolock is on)")
            finally:
                s.close()
            manifest = build_manifest(cluster=cf.name, swarm=swarm, node=node,
                                      engine_version=version, services=services,
                                      secrets=secrets, configs=configs, managers=managers,
                                      payload=payload, now=utcnow())
            try:
                path = write_archive(out, manifest, payload, unique=unique)
            except FileExistsError:
                path = write_archive(out, manifest, payload, unique=True)
                raise SwarmsmithError(f"{out} was created meanwhile by another run; a backup "
                                      f"never replaces one: this one is {path}") from None
            say(f"{name}: archive written ({len(payload)} bytes of swarm state)")
            if managers > 1:
                wait_reachable(api, node["ID"], opts.reachable_timeout, clock, sleep)
                say(f"{name}: reachable manager again")
        if manifest["autolock"]:
            notes.append("autolock is on: restoring needs the unlock key of the time of the backup")
        return BackupResult(path, name, manifest, notes, clock() - t0, stopped)
    finally:
        conn.close()


def _unlock_again(session, key: str, swarm_facts) -> None:
    """The manager restarted locked (autolock): unlock it with the key read before the stop,
    sent on stdin; never exit 0 with it left locked."""
    st = swarm_facts(session).get("state")
    if st == "locked":
        r = session.run(docker_cli.swarm_unlock(key, "unlock the restarted manager"), check=False)
        st = swarm_facts(session).get("state")
        if r.exit_status != 0 or st != "active":
            raise SwarmsmithError("the manager restarted locked (autolock) and could not be "
                                  "unlocked again; `swarmsmith unlock-swarm` with the key",
                                  host=session.host.name)


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
