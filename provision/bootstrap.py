"""`swarmsmith up`: provider -> SSH -> engine -> swarm, per-host steps concurrent.

Order of safety: the cluster file is validated before anything connects; the state folder is
locked for the whole run; every step checks the host's state before acting, so a run killed at
any point converges when run again.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

from inventory import clusterfile
from inventory.state import StateDir

from .engine import install as engine
from .remote import facts as F
from .remote import docker_cli
from .hosts import providers
from .hosts.addresses import choose
from .engine_api.cluster_record import L_CLUSTER, NODE_LABEL
from .base.errors import HostKeyMismatchError, InputError, SwarmsmithError
from .base.hosts import Host
from .remote.parallel import each, raise_open_files, ticking
from .base.progress import HostProgress, ProgressCallback, Waiting
from .remote.ssh import Session, fingerprint

# a dry run's line for a host the provider has yet to make: nothing of it can be read before
ENGINE_SET_UP = "engine set up (its steps are decided once the host exists)"


@dataclass
class UpOptions:
    dry_run: bool = False   # plan only: read what exists, change nothing
    force: bool = False     # take over hosts that are in another swarm
    accept_host_keys: set = field(default_factory=set)   # hosts whose changed key is accepted
    concurrency: int = 16   # hosts handled at once
    prune: bool = False     # digitalocean: destroy droplets the cluster file no longer asks for
    destroy_services: bool = False   # with force: let a manager leave a swarm that runs services


@dataclass
class DownOptions:
    dry_run: bool = False


@dataclass
class UpResult:
    cluster: str
    changes: list = field(default_factory=list)     # what was done (or, dry run, would be)
    nodes: list = field(default_factory=list)       # {name, role, advertise_address, node_id}
    dry_run: bool = False
    warnings: list = field(default_factory=list)    # e.g. an engine version other than asked
    stacks: list = field(default_factory=list)      # DeployResult per stack (stacks/api.py up)

    def to_dict(self) -> dict:
        out = {"cluster": self.cluster, "nodes": self.nodes, "changes": self.changes}
        if self.warnings:
            out["warnings"] = self.warnings
        if self.dry_run:
            out["dry_run"] = True
        return out


@dataclass
class DownResult:
    cluster: str
    changes: list = field(default_factory=list)
    dry_run: bool = False

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "changes": self.changes,
                **({"dry_run": True} if self.dry_run else {})}


def _reporter(on_progress: ProgressCallback | None):
    """The (host, message) callable the steps and providers call, as HostProgress events."""
    def report(host: str, message: str) -> None:
        if on_progress is not None:
            on_progress(HostProgress(host, message))
    return report


def _waiter(on_progress: ProgressCallback | None):
    """The (text) callable that says what the run waits for now, as Waiting events: a renderer
    repeats it when a second passes without a line."""
    def waiting(text: str) -> None:
        if on_progress is not None:
            on_progress(Waiting(text))
    return waiting


def _names(names: list[str], shown: int = 3) -> str:
    names = sorted(names)
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


@dataclass
class Run:
    cluster: clusterfile.ClusterFile
    state: StateDir
    inventory: dict
    opts: UpOptions
    progress: object        # (host, message) -> None
    changes: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    sessions: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)   # host name -> engine and swarm facts
    record_api: object = None          # docker APIClient on a manager, for the swarm's record
    record_base: tuple = (0, None)     # (version, record) read before the swarm step
    pruned: list = field(default_factory=list)   # (host, node ID) destroyed by --prune
    pruning: bool = False              # the provider destroys hosts the file no longer asks for
    waiting: object = None             # (what the run waits for) -> None; see _waiter

    def save(self) -> None:
        if not self.opts.dry_run:
            self.state.save(self.inventory)


def _open(cluster) -> tuple[clusterfile.ClusterFile, StateDir]:
    cf = cluster if isinstance(cluster, clusterfile.ClusterFile) else clusterfile.load(cluster)
    return cf, StateDir(cf.path, cf.name)


def _preload() -> None:
    """Import the SSH stack in the background while the provider works (~0.4 s saved)."""
    import threading

    from .remote.ssh import load_ssh_stack     # imports under a lock that Session.connect shares
    threading.Thread(target=load_ssh_stack, daemon=True).start()


def _preload_docker_sdk(run: Run) -> None:
    """The docker SDK (joins, a record to write) in the background, only when the facts show
    work to do: on a no-op run its import would only take CPU from the run."""
    if all(f.get("server") and f["swarm"]["state"] == "active" for f in run.facts.values()):
        return
    import threading

    from .engine_api.transport import load_docker_sdk
    threading.Thread(target=load_docker_sdk, daemon=True).start()


def up(cluster, opts: UpOptions | None = None,
       on_progress: ProgressCallback | None = None) -> UpResult:
    """Bring the cluster to what its file asks for (hosts, engine, swarm); `cluster` is the
    cluster file's path or its loaded ClusterFile. The file's `stacks:` are deployed above
    this layer (stacks/api.py up)."""
    opts = opts or UpOptions()
    cf, state = _open(cluster)
    if opts.dry_run and not os.path.isdir(state.path):
        # plan / --dry-run change nothing, not even by creating the state folder for its lock
        lock = contextlib.nullcontext()
    else:
        _preload()
        lock = state.lock()
    with lock:
        inv = state.load()
        inv.setdefault("hosts", {})
        inv.update(name=cf.name, provider=cf.provider)
        run = Run(cf, state, inv, opts, _reporter(on_progress), waiting=_waiter(on_progress))
        try:
            return _up(run)
        finally:
            run.waiting("")         # nothing to wait for any more: the renderer goes quiet
            for s in run.sessions.values():
                s.close()


def _up(run: Run) -> UpResult:
    cf, inv = run.cluster, run.inventory
    def save_provider_state(provider_state: dict) -> None:
        inv["provider_state"] = provider_state
        run.save()
    provider = providers.make(cf, inv.get("provider_state", {}), prune=run.opts.prune,
                              on_state=save_provider_state)
    wanted = cf.wanted_hosts()
    if run.opts.dry_run:
        return _plan(run, provider, wanted)

    if run.opts.prune:
        # destroying managers before demoting them would cost the swarm its quorum
        gone = sorted(n for n, r in inv["hosts"].items()
                      if r.get("role") == "manager" and n not in {w.name for w in wanted})
        if gone:
            raise InputError(f"--prune would destroy manager(s) {', '.join(gone)}: reducing the "
                             "number of managers is not done by --prune (demote them first)",
                             file=cf.path, path="managers")
    run.waiting(f"{cf.provider} provider: {len(wanted)} host(s)")
    try:
        hosts, changes = provider.ensure(wanted, progress=run.progress)
    finally:
        # a key, VPC or firewall may exist before a later step fails: record it either way
        # (an empty state is not written: the record's merge drops it, and a no-op run would
        # then change the inventory)
        if provider.state or "provider_state" in inv:
            inv["provider_state"] = provider.state
        run.save()
    run.changes += changes
    run.warnings += getattr(provider, "warnings", [])    # e.g. a cloud account's warning status
    pruned_nodes = run.pruned
    run.pruning = bool(provider.prune)
    if run.pruning:
        names = {w.name for w in wanted}
        for name in [n for n in inv["hosts"] if n not in names]:
            # destroyed by ensure(); its node is removed from the swarm after the swarm step
            if inv["hosts"][name].get("node_id"):
                pruned_nodes.append((name, inv["hosts"][name]["node_id"]))
            del inv["hosts"][name]
    _remember_hosts(inv, hosts)
    run.save()

    run.waiting(f"connecting to {len(hosts)} host(s) and reading their facts")
    raise_open_files(len(hosts))
    _connect(run, hosts)
    labels = _node_labels(cf, hosts)
    from .swarm.step import SwarmStep
    addresses: dict = {}
    hostnames: dict = {}
    step = SwarmStep(run.sessions, hosts, addresses, labels, inv, hostnames=hostnames,
                     force=run.opts.force, progress=run.progress, waiting=run.waiting,
                     save=run.save,
                     concurrency=run.opts.concurrency, cluster_name=cf.name,
                     destroy_services=run.opts.destroy_services)
    # hosts reach the swarm step as their engines answer: the first manager's init and the
    # workers' joins do not wait for the slowest engine
    try:
        return _swarm_and_record(run, step, hosts, addresses, hostnames, pruned_nodes)
    finally:
        step.close()


def _remember_hosts(inv: dict, hosts) -> None:
    """The provider's facts of each host into the inventory (a dry run's copy is not saved)."""
    for h in hosts:
        rec = inv["hosts"].setdefault(h.name, {})
        # port and key too: a static host may name its own, and every later command needs them
        rec.update(role=h.role, public_address=h.public_address,
                   private_address=h.private_address, user=h.user, port=h.port,
                   key=h.key_path or None)


def _swarm_and_record(run: Run, step, hosts, addresses: dict, hostnames: dict,
                      pruned_nodes: list) -> UpResult:
    inv, cf = run.inventory, run.cluster
    nodes = _converge(run, step, hosts, addresses, hostnames)
    run.changes += step.changes
    leader = run.sessions[step.leader.name]
    for name, node_id in pruned_nodes:
        r = leader.run(docker_cli.node_rm(node_id, "remove the node of a pruned host"), check=False)
        if r.ok:
            run.changes.append(f"{name}: node {node_id[:12]} removed from the swarm")
    for n in nodes:
        inv["hosts"][n["name"]]["advertise_address"] = n["advertise_address"]
        if hostnames.get(n["name"]):
            inv["hosts"][n["name"]]["hostname"] = hostnames[n["name"]]
    run.changes += _forget_old_names(inv, hosts, nodes)
    run.save()
    run.waiting("writing the cluster record")
    _write_record(run, step.leader, step)
    _write_known_hosts(run)
    return UpResult(cluster=cf.name, nodes=nodes, changes=run.changes, warnings=run.warnings)


def _converge(run: Run, step, hosts, addresses: dict, hostnames: dict) -> list[dict]:
    """The swarm step over the hosts as their engines answer. The engine steps' generator is
    closed here, its pool shut down, once converge is done with it: left to the garbage
    collector, its pool's join could run inside another thread's start in a later run of the
    same process and wait there for ever."""
    arrivals = _engines(run, hosts, addresses, hostnames)
    try:
        return step.converge(arrivals=arrivals,
                             known={n: f["swarm"] for n, f in run.facts.items() if f.get("server")})
    finally:
        arrivals.close()


def _forget_old_names(inv: dict, hosts, nodes: list[dict]) -> list[str]:
    """A host renamed in the cluster file is one machine under a new name: the entry of its old
    name (same node ID, or same address and SSH port) leaves the inventory, and with it the
    cluster's record, instead of standing for a second host (every command that goes to each
    host would go to that machine twice)."""
    names = {h.name for h in hosts}
    by_id = {n["node_id"]: n["name"] for n in nodes if n.get("node_id")}
    by_addr = {(h.public_address, h.port): h.name for h in hosts}
    changes = []
    for old, rec in list(inv["hosts"].items()):
        if old in names:
            continue
        new = by_id.get(rec.get("node_id") or "") or \
            by_addr.get((rec.get("public_address"), rec.get("port") or 22))
        if new:
            del inv["hosts"][old]
            changes.append(f"{new}: the cluster file's new name for {old} (same machine)")
    return changes


def _engines(run: Run, hosts, addresses: dict, hostnames: dict):
    """(host name, swarm facts) per host as soon as its engine step is done, or (host name,
    error). Addresses and hostnames are filled in before a host is handed on. Closing the
    generator cancels engine steps not yet started and waits for the running ones."""
    from concurrent.futures import ThreadPoolExecutor, as_completed
    pool = ThreadPoolExecutor(max_workers=max(1, min(run.opts.concurrency, len(hosts))))
    try:
        futures = {pool.submit(_engine, run, h): h for h in hosts}
        pending = {h.name for h in hosts}
        run.waiting(f"engines on {_names(pending)}")
        for fut in as_completed(futures):
            h = futures[fut]
            pending.discard(h.name)
            run.waiting(f"engines on {_names(pending)}" if pending else "swarm step")
            try:
                facts = fut.result()
                addresses[h.name] = choose(h, facts["interfaces"], run.cluster.advertise)
            except Exception as e:      # handed on: the swarm step decides what still runs
                yield h.name, e
                continue
            hostnames[h.name] = facts.get("hostname") or h.name
            yield h.name, facts["swarm"]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _connect(run: Run, hosts, tolerate: bool = False) -> dict:
    """Connect to every host and read its facts (one command) in parallel; then the record.
    `tolerate` (a dry run): a host that cannot be reached or read is left out and returned
    ({host name: why}) instead of stopping the run; a changed host key still stops it."""
    inv = run.inventory
    unread: dict = {}

    def read(h):
        try:
            return reach(h)
        except HostKeyMismatchError:
            raise
        except SwarmsmithError as e:
            if not tolerate:
                raise
            unread[h.name] = e.message
            s = run.sessions.pop(h.name, None)
            if s is not None:
                s.close()

    def reach(h):
        from .engine_api.access import pin_of
        rec = inv["hosts"].setdefault(h.name, {})
        # the provider's key (h.host_key) comes after the file's and this folder's
        pin = pin_of(run.cluster, h, cached=rec.get("host_key", ""), provider=h.host_key)[0]
        s = Session(h, pinned_key=pin,
                    connect_deadline=run.cluster.connect_timeout,
                    accept_new_key=h.name in run.opts.accept_host_keys)
        s.connect()
        run.sessions[h.name] = s
        # reading changes nothing, so it may come before the record's key check; a manager
        # sends the cluster's record along
        run.facts[h.name] = F.parse_engine_facts(s.run(F.host_facts(run.cluster.name, L_CLUSTER)).stdout)
        return s

    try:
        each(read, hosts, concurrency=run.opts.concurrency)
    except BaseException:
        _pin_keys(run)
        raise
    if run.facts and not run.opts.dry_run:
        _preload_docker_sdk(run)
    # before pinning: a key the record disagrees with is refused
    _read_record(run, [h for h in hosts if h.name not in unread])
    _pin_keys(run)
    return unread


def _check_record(run: Run, hosts, version: int, record: dict, check_against) -> None:
    """Addresses from the provider, keys the host showed when something other than the record
    pins them (the cluster file, the provider, this folder's state): the record must agree with
    both. A key only the record pins must be the one the host shows."""
    from .engine_api.cluster_record import config_name
    inv_hosts = run.inventory.get("hosts") or {}
    known = {}
    for h in hosts:
        s = run.sessions.get(h.name)
        pinned = (run.cluster.pinned_key(h.name, h.public_address, h.port) or h.host_key
                  or (inv_hosts.get(h.name) or {}).get("host_key"))
        accepted = h.name in run.opts.accept_host_keys
        key = s.seen_key if s is not None and pinned and not accepted else ""
        known[h.name] = (h.public_address, h.port, key)
    check_against(record, version, run.cluster.name, known,
                  authority="the cluster file, the provider and the host keys pinned for them",
                  key_advice="If the host was rebuilt on purpose and the key it shows now (the "
                             "one its pin names) is right, `swarmsmith up --accept-host-key "
                             "HOST` writes that key, never the record's, into a new version")
    where = config_name(run.cluster.name, version)
    for name, sess in run.sessions.items():
        want = (record["hosts"].get(name) or {}).get("host_key")
        if want and known.get(name, ("", "", ""))[2] == "" and sess.seen_key != want \
                and name not in run.opts.accept_host_keys:
            raise HostKeyMismatchError(
                f"host key for {sess.host.public_address} is {fingerprint(sess.seen_key)}, "
                f"but the cluster's record in the swarm has {fingerprint(want)} (version "
                f"{version}, {where}), and nothing else pins {name}. Refusing to go on: either "
                f"{name} was rebuilt or the record was changed. Check the key on the host itself "
                f"(on its console: ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub); if it is "
                f"{fingerprint(sess.seen_key)}, pin it in the cluster file (host_key or "
                "ssh.known_hosts) and run `swarmsmith up` again", host=name)


def _read_record(run: Run, hosts) -> None:
    """The cluster's record from the swarm, read from the first manager that is in one: it
    tells a fresh folder (or a lost inventory) which swarm is ours, its node IDs and the host keys
    recorded by earlier runs; a host showing another key than the record's is refused. The record
    never moves a host or overrides a key the cluster file, the provider or this folder pins
    (RecordDisagrees, exit 3), and hosts only the record lists are not taken from it."""
    from .engine_api.cluster_record import ConfigSnapshot, RecordStore, check_against, merge_into_inventory
    from .engine_api.sessions import api_client
    from .engine_api.adapter import EngineAPI
    for h in hosts:
        if h.role != "manager":
            continue
        s = run.sessions[h.name]
        if h.name in run.facts:
            f = run.facts[h.name]["swarm"]      # inactive when no engine answers yet
        else:
            r = s.run(F.SWARM_FACTS, check=False)
            f = F.parse_swarm_facts(r.stdout if r.ok else "")
        if f["state"] != "active" or not f["is_manager"]:
            continue
        api = _Lazy(lambda s=s: api_client(s))      # connected only if the record is written
        records = run.facts.get(h.name, {}).get("records")
        reader = ConfigSnapshot(records) if records is not None else EngineAPI(api, where=h.name)
        version, record = RecordStore(reader, run.cluster.name).read()
        if record is None:
            run.record_api = api
            continue
        if record.get("cluster_id") != f["cluster_id"]:
            continue       # a copy from another swarm cannot describe this one
        _check_record(run, hosts, version, record, check_against)
        run.record_api, run.record_base = api, (version, record)
        # hosts the provider does not list are not taken from the record (it does not decide
        # which hosts exist)
        skip = set(record["hosts"]) - {w.name for w in hosts}
        if run.pruning:
            # hosts the record knows and the file no longer asks for were destroyed by the
            # provider just now (a fresh folder's cache never knew them): their nodes go too
            wanted = {w.name for w in hosts}
            known = {name for name, _ in run.pruned}
            for name, h in record["hosts"].items():
                if name not in wanted:
                    skip.add(name)
                    if name not in known and h.get("node_id"):
                        run.pruned.append((name, h["node_id"]))
        merge_into_inventory(run.inventory, record, skip=skip)
        run.save()
        return


class _Lazy:
    """An Engine API client made on first use: a run that writes nothing never connects one."""

    def __init__(self, make):
        self._make, self._api = make, None

    def __getattr__(self, name):
        if self._api is None:
            self._api = self._make()
        return getattr(self._api, name)


def _write_record(run: Run, leader, step=None) -> None:
    """The inventory's durable facts into the swarm (a new version only when they changed),
    through the client the record was read with, else the swarm step's on the leader."""
    from .engine_api.cluster_record import RecordStore, from_inventory
    from .engine_api.sessions import api_client
    from .engine_api.adapter import EngineAPI
    api = run.record_api or (step.leader_api(leader) if step is not None
                             else api_client(run.sessions[leader.name]))
    try:
        version = RecordStore(EngineAPI(api, where=leader.name), run.cluster.name).save(
            from_inventory(run.inventory, run.cluster.name), run.record_base)
    except SwarmsmithError as e:
        e.host = e.host or leader.name
        raise
    if version is not None:
        run.changes.append(record_written(version))
        run.progress(leader.name, f"cluster record version {version} written")


def _write_known_hosts(run: Run) -> None:
    """The cluster file's ssh.known_hosts, when it names a file that does not exist yet: written
    once with the keys this run pinned, as `swarmsmith hostkeys` prints them, for the operator
    to commit. An existing file is never changed (it is the operator's)."""
    from inventory.hostkeys import known_hosts_line
    cf = run.cluster
    path = cf.known_hosts_file
    if not path or not cf.known_hosts_missing or os.path.lexists(path):
        return
    lines = [f"# swarmsmith cluster {cf.name}: SSH host keys (known_hosts form)"]
    for name, s in sorted(run.sessions.items()):
        if s.seen_key:
            lines.append(known_hosts_line(s.host.public_address, s.host.port, s.seen_key, name))
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    try:
        os.link(tmp, path)        # never over a file someone wrote meanwhile
    except FileExistsError:
        return
    finally:
        os.unlink(tmp)
    run.changes.append(known_hosts_written(path, len(lines) - 1))


def _pin_keys(run: Run) -> None:
    """Keys of hosts that answered are pinned even when another host failed."""
    inv = run.inventory
    recorded = (run.record_base[1] or {}).get("hosts") or {}
    for name, s in run.sessions.items():
        rec = inv["hosts"][name]
        if rec.get("host_key") != s.seen_key:
            known = {run.cluster.pinned_key(name, s.host.public_address, s.host.port),
                     (recorded.get(name) or {}).get("host_key")}
            action = "replaced (accepted)" if rec.get("host_key") else "pinned"
            # a first local pin of a key the cluster file or the record already pins is no news;
            # replacing a local pin always is
            report = rec.get("host_key") or s.seen_key not in known
            rec["host_key"] = s.seen_key
            if report:
                run.changes.append(f"{name}: host key {fingerprint(s.seen_key)} {action}")
    run.save()


def _engine(run: Run, h) -> dict:
    try:
        return _engine_step(run, h)
    except SwarmsmithError as e:
        if e.host is None:      # engine.plan's errors do not know the host; name it
            e.host = h.name
        raise


def _apt(cf, h) -> engine.AptSettings:
    return engine.AptSettings(proxy=cf.apt_proxy or h.apt_proxy, mirror=cf.apt_mirror)


def _engine_step(run: Run, h) -> dict:
    s = run.sessions[h.name]
    cf = run.cluster
    facts = run.facts[h.name]      # read when connecting
    daemon = engine.desired_daemon(h.engine_defaults, cf.daemon)
    waits = 0
    # once more after an install (the package decides how to start), and a second start and
    # wait for an engine that answered `docker version` but not `docker info` (restarting)
    for _ in range(3):
        steps = engine.plan(facts, daemon, cf.install, _apt(cf, h), cf.version)
        installed = False
        for st in steps:
            if st.command is engine.WAIT_SERVER:
                continue        # waited for below, with the facts, in one round trip
            if st.installs:
                with ticking(run.progress, h.name, "installing the engine"):
                    r = s.run(st.command, timeout=st.timeout)
            else:
                r = s.run(st.command, timeout=st.timeout)
            change = engine.fallback_change(r.stdout) or st.change
            if change:
                run.changes.append(f"{h.name}: {change}")
                run.progress(h.name, change)
            if st.installs:
                installed = True
                break
        if steps and installed:
            facts = F.parse_engine_facts(s.run(F.ENGINE_FACTS).stdout)
        elif steps:
            facts = F.parse_engine_facts(s.run(F.after(engine.WAIT_SERVER)).stdout)
            waits += 1
            if facts.get("server"):
                run.progress(h.name, f"engine answers (Docker {facts['server']})")
        run.facts[h.name] = facts
        if not steps or not facts.get("dockerd") or facts.get("server") or waits == 2:
            break
    if not facts.get("server"):
        log = s.run(engine.LOG_TAIL, check=False, timeout=30).stdout.strip()
        raise SwarmsmithError("the Docker engine does not answer after start"
                              + (": its last log lines:\n    " + log.replace("\n", "\n    ") if log else ""),
                              host=h.name)
    if not engine.version_matches(facts["server"], cf.version):
        note = (f"{h.name}: engine {facts['server']} runs, engine.version is {cf.version} "
                "(swarmsmith engine upgrade installs it node by node)")
        run.warnings.append(note)
        run.progress(h.name, note.split(": ", 1)[1])
    return facts


def _plan(run: Run, provider, wanted) -> UpResult:
    """--dry-run / plan: what up would change, from the same facts and decisions as up (host
    keys checked and pinned as up pins them, engine and swarm facts and the cluster's record
    read in one command per host, the engine step's plan, the swarm step's decisions), each
    change in the words up reports it with. Reads hosts that exist; changes nothing (the
    inventory is not saved in a dry run)."""
    cf, inv = run.cluster, run.inventory
    plan = list(provider.plan(wanted))
    existing = {h.name: h for h in provider.existing()}
    hosts, placeholders, nodes = [], [], []
    for w in wanted:
        nodes.append({"name": w.name, "role": w.role, "advertise_address": None,
                      "node_id": inv["hosts"].get(w.name, {}).get("node_id")})
        h = existing.get(w.name)
        if h is None:       # made by up: nothing to read yet
            placeholders.append(Host(name=w.name, public_address="", role=w.role))
            continue
        h.role = w.role
        hosts.append(h)
    _remember_hosts(inv, hosts)
    unread = _connect(run, hosts, tolerate=True)     # a host not read is named in the plan
    plan += run.changes             # host keys up would pin
    swarm_facts, addresses, hostnames = {}, {}, {}
    entries = {n["name"]: n for n in nodes}
    for h in hosts:
        if h.name in unread:
            plan.append(f"{h.name}: cannot read state ({unread[h.name]})")
            continue
        facts = run.facts[h.name]
        daemon = engine.desired_daemon(h.engine_defaults, cf.daemon)
        plan += [f"{h.name}: {st.change}" for st in
                 engine.plan(facts, daemon, cf.install, _apt(cf, h), cf.version) if st.change]
        addresses[h.name] = choose(h, facts["interfaces"], cf.advertise)
        hostnames[h.name] = facts.get("hostname") or h.name
        if facts.get("server"):
            swarm_facts[h.name] = facts["swarm"]
        elif _starts_outside_swarm(facts, daemon):
            pass            # up starts its engine and finds it in no swarm: as if absent
        elif h.role == "manager" and facts.get("dockerd"):
            # up starts it first, then reads its swarm state: so can a plan only after that
            unread[h.name] = "its engine is not running; up starts it"
        elif inv["hosts"].get(h.name, {}).get("node_id") and inv.get("cluster_id"):
            # a stopped engine of a worker of ours: up starts it and finds it in the swarm
            swarm_facts[h.name] = {**facts["swarm"], "state": "active",
                                   "node_id": inv["hosts"][h.name]["node_id"],
                                   "is_manager": False, "cluster_id": inv["cluster_id"]}
    plan += [f"{h.name}: {ENGINE_SET_UP}" for h in placeholders]
    by_name = {h.name: h for h in hosts + placeholders}
    ordered = [by_name[w.name] for w in wanted]
    unread_managers = sorted(n for n in unread if by_name[n].role == "manager")
    if unread_managers:
        # up stops before its swarm step when a manager is not ready; so does its plan
        plan.append("swarm: decided when up runs (" + "; ".join(
            f"{n}: {unread[n]}" for n in unread_managers) + ")")
        return UpResult(cluster=cf.name, nodes=nodes, changes=plan, dry_run=True)
    from .swarm.step import SwarmStep
    step = SwarmStep(run.sessions, ordered, addresses, _node_labels(cf, ordered), inv,
                     hostnames=hostnames, force=run.opts.force, cluster_name=cf.name,
                     destroy_services=run.opts.destroy_services)
    try:
        plan += [p for p in step.plan(swarm_facts) if p.split(": ", 1)[0] not in unread]
    finally:
        step.close()
    for h in hosts:
        if h.name not in unread:
            entries[h.name]["advertise_address"] = step.planned_addresses[h.name]
    read = [h for h in hosts if h.name not in unread]
    plan += _planned_record(run, read, step, placeholders)
    if cf.known_hosts_missing and not os.path.lexists(cf.known_hosts_file):
        plan.append(known_hosts_written(cf.known_hosts_file, len(run.sessions) + len(placeholders)))
    return UpResult(cluster=cf.name, nodes=nodes, changes=plan, dry_run=True)


def _starts_outside_swarm(facts: dict, daemon: dict) -> bool:
    """An engine not answering (stopped or not installed) whose data folder holds no swarm
    state: once started it is in no swarm. Only the default data folder is looked at."""
    return facts.get("swarm_on_disk") == "0" and "data-root" not in daemon \
        and "data-root" not in (facts.get("daemon_json") or {})


def _planned_record(run: Run, hosts, step, placeholders) -> list[str]:
    """The inventory as up leaves it, where the plan knows it (node IDs of nodes that stay,
    addresses, labels, hostnames, old names forgotten), and the record version up writes when
    that differs from the record read (a host made or joining gets a new node ID: a write)."""
    from .engine_api.cluster_record import encode, from_inventory
    inv = run.inventory
    planned = [{"name": h.name, "node_id": step.planned_ids[h.name]} for h in hosts]
    changes = _forget_old_names(inv, hosts, planned)
    for h in hosts:
        rec = inv["hosts"].setdefault(h.name, {})
        rec.update(node_id=step.planned_ids[h.name], labels=sorted(step.labels.get(h.name, {})),
                   advertise_address=step.planned_addresses[h.name],
                   hostname=step.hostnames[h.name])
    version, latest = run.record_base
    new = any(not step.planned_ids[h.name] for h in hosts) or placeholders
    if new or latest is None or \
            encode(from_inventory(inv, run.cluster.name)) != encode(latest):
        changes.append(record_written(version + 1))
    return changes


def record_written(version: int) -> str:
    return f"cluster record version {version} written to the swarm"


def known_hosts_written(path: str, keys: int) -> str:
    return (f"{path}: written with {keys} host keys (ssh.known_hosts did not exist; commit it "
            "beside the cluster file)")


def _node_labels(cf, hosts) -> dict:
    """The labels the swarm step puts on each host's node: the cluster file's, and the
    cluster's name (a lost or absent inventory can tell our swarm by it)."""
    return {h.name: {**cf.labels_for(h.name, h.role), NODE_LABEL: cf.name} for h in hosts}


def down(cluster, opts: DownOptions | None = None,
         on_progress: ProgressCallback | None = None) -> DownResult:
    """Remove what `up` made (lab: the hosts; digitalocean: the droplets, key, VPC, firewall)."""
    opts = opts or DownOptions()
    cf, state = _open(cluster)
    with state.lock():
        inv = state.load()
        provider = providers.make(cf, inv.get("provider_state", {}))
        if opts.dry_run:
            return DownResult(cf.name, [f"remove {n}" for n in inv.get("hosts", {})],
                              dry_run=True)
        try:
            changes = provider.destroy(progress=_reporter(on_progress))
        finally:
            inv["provider_state"] = provider.state    # empty once everything is gone
            state.save(inv)
        inv["hosts"] = {}
        inv.pop("cluster_id", None)
        state.save(inv)
        return DownResult(cf.name, changes)
