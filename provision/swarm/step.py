"""Swarm step: init on the first manager, managers joined one at a time (each waited for until
Reachable, so quorum is never at risk), workers in parallel, labels applied. Idempotent: nodes
already in this swarm are left alone; a host in another swarm is refused unless force.

Join tokens are fetched from the leader just in time, wrapped in Secret, and never printed,
logged or stored; joins go through the joining host's Engine API with the token in the request
body, so it is never in any process's arguments either: the body is sent on the stdin of `curl`
on the engine's socket where the host has curl, else through swarmsmith's Engine API client.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from ..remote import facts as F
from ..remote import docker_cli
from ..engine_api.cluster_record import NODE_LABEL
from ..remote.command import Command, Secret
from ..engine_api.sessions import api_client
from ..base.errors import EXIT_BAD_INPUT, GroupError, SwarmsmithError
from ..base.hosts import Host
from .join_pacing import JoinPacer, joins_in_background
from ..remote.parallel import each

log = logging.getLogger("swarmsmith.swarm")     # SWARMSMITH_DEBUG=1: cli.py shows debug lines


# one SSH command and no `docker` process: the CLI costs the host ~20 ms of CPU, a join
# through the Engine API client a `docker system dial-stdio` and three requests
CURL_JOIN = F.socket_post("/swarm/join")
CURL_INIT = F.socket_post("/swarm/init")
NOT_SENT = (127, 7)      # socket_post's statuses when nothing was sent: no curl, no socket


# How each change reads, written once: converge reports it when it has made it and plan prints
# it beforehand, so a dry run lists the lines the run after it reports.
LEFT = "left its previous swarm"
LEFT_FORCED = "left its previous swarm (--force)"
PROMOTED = "promoted to manager"
DEMOTED = "demoted to worker"


def initialised(addr: str | None) -> str:
    return "swarm initialised" + (f" (advertise {addr})" if addr else "")


def joined_as(role: str, addr: str | None) -> str:
    return f"joined as {role}" + (f" (advertise {addr})" if addr else "")


def stale_removed(node_id: str) -> str:
    return f"removed stale node {node_id[:12]}"


class ForeignSwarmError(SwarmsmithError):
    pass


class JoinContinues(SwarmsmithError):
    """Swarm's 503: the join timed out on the joining side and goes on in the background."""


class DestroyRefused(SwarmsmithError):
    """--force would destroy a swarm's services: needs --destroy-services as well."""
    exit_code = EXIT_BAD_INPUT


class SwarmStep:
    def __init__(self, sessions: dict, hosts: list[Host], addresses: dict[str, str],
                 labels: dict[str, dict], inventory: dict, hostnames: dict[str, str] | None = None,
                 force: bool = False,
                 progress=None, save=None, concurrency: int = 16, waiting=None,
                 cluster_name: str = "", destroy_services: bool = False,
                 clock=time.monotonic, sleep=time.sleep, engine_api=None,
                 join_deadline: float = 300.0):
        self.s = sessions
        self.hosts = hosts
        self.addr = addresses
        self.labels = labels
        self.inv = inventory
        self.force = force
        self.progress = progress or (lambda host, msg: None)
        self.waiting = waiting or (lambda text: None)
        self.save = save or (lambda: None)
        self.concurrency = concurrency
        self.clock, self.sleep = clock, sleep
        # how long a join that swarm finishes in the background is followed: a manager
        # signing a hundred certificates on a small machine takes minutes
        self.join_deadline = join_deadline
        self.pacer = JoinPacer(concurrency, clock=clock)
        self._joined_count = [0, 0]         # workers joined, workers to join
        self._count_lock = threading.Lock()
        self.hostnames = hostnames or {}
        # the docker SDK's APIClient on one host, over that host's SSH session
        self.engine_api = engine_api or (lambda host: api_client(self.s[host.name]))
        self.cluster_name = cluster_name
        self.destroy_services = destroy_services
        self.changes: list[str] = []
        self._rejoined: set[str] = set()
        self._leader_api = None
        self._leader_api_lock = threading.Lock()
        self.managers = [h for h in hosts if h.role == "manager"]
        self.workers = [h for h in hosts if h.role == "worker"]

    # --- helpers ----------------------------------------------------------------------
    def run(self, host: Host, cmd: Command, check: bool = True):
        return self.s[host.name].run(cmd, check=check)

    def swarm_facts(self, host: Host) -> dict:
        return F.parse_swarm_facts(self.run(host, F.SWARM_FACTS).stdout)

    def nodes(self, leader: Host) -> list[dict]:
        return F.parse_nodes(self.run(leader, F.NODES).stdout)

    def api_nodes(self, leader: Host) -> list[dict]:
        """The node listing through the leader's Engine API client: no CLI process on the
        leader, which a wait polling it would otherwise start again and again."""
        from ..engine_api.adapter import EngineAPI
        return F.node_rows(EngineAPI(self.leader_api(leader), where=leader.name).nodes())

    def phase(self, what: str) -> None:
        """What the step waits for now (a renderer repeats it after a silent second)."""
        self.waiting(what)

    def change(self, host: Host, what: str) -> None:
        self.changes.append(f"{host.name}: {what}")
        self.progress(host.name, what)

    def token(self, leader: Host, role: str) -> Secret:
        """The join token for `role`, from the swarm's inspect through the leader's engine
        socket where it has curl (no `docker` process), else `docker swarm join-token -q`."""
        out = self.run(leader, Command.shell(
            F.socket_or("/swarm", docker_cli.join_token(role)),
            description=f"fetch the {role} join token")).stdout.strip()
        if out.startswith("{"):
            try:
                out = ((json.loads(out).get("JoinTokens") or {}).get(role.title()) or "").strip()
            except (ValueError, AttributeError):
                out = ""
        if not out:
            raise SwarmsmithError(f"fetch the {role} join token: the leader's engine gave none",
                                  host=leader.name)
        return Secret(out)

    # --- the step ---------------------------------------------------------------------
    def converge(self, arrivals=None, known: dict | None = None) -> list[dict]:
        """`arrivals`: (host name, swarm facts or the error that host met) in the order hosts
        become ready (their engines answer). The leader is found or the swarm initialised once
        every manager has arrived; workers join as they arrive. `known`: swarm facts read
        earlier (engines that answered then). Every host known or arrived is checked for a
        foreign swarm before anything changes, and each later one again before its join.
        Default: read every host's swarm facts now."""
        if arrivals is None:
            arrivals = self._read_all()
        known = known or {}
        self._arrivals = iter(arrivals)
        self._errors: dict = {}
        facts: dict = {}
        self._ids: dict = {}
        manager_names = {m.name for m in self.managers}
        while not manager_names <= facts.keys() | self._errors.keys():
            self._take(facts)
        if self._errors:
            self._fail(facts)          # a manager that is not ready stops the swarm step
        locked = sorted(m.name for m in self.managers if facts[m.name]["state"] == "locked")
        if locked:
            # a locked manager (autolock, engine restarted) holds the swarm's state: leaving
            # or re-initialising it would destroy the swarm
            raise SwarmsmithError(f"the swarm is locked on {', '.join(locked)} (autolock): run "
                                  "`swarmsmith unlock-swarm` first; nothing was changed")

        leader = self.leader = self._find_leader(facts)
        if leader is None:
            self._check_first(facts)
            for h in self.hosts:        # no swarm of ours yet: every active host is foreign
                f = facts.get(h.name) or known.get(h.name)
                if h is not self.managers[0] and f:
                    self._classify(h, f, {}, None)
            leader = self.leader = self._init_leader(facts, checked=True)
        nodes = {n["id"]: n for n in self.nodes(leader)}
        cluster_id = self.inv["cluster_id"]

        # refuse foreign swarms among the hosts known so far before changing anything
        todo = {h.name: self._classify(h, facts[h.name], nodes, cluster_id)
                for h in self.hosts if h is not leader and h.name in facts}
        for h in self.hosts:
            if h is not leader and h.name not in facts and h.name in known:
                self._classify(h, known[h.name], nodes, cluster_id)

        leader_addr = self.addr[leader.name]
        # workers do not wait for the managers: only managers join one at a time (quorum), so
        # workers join the leader meanwhile, and the leader gets its labels then too
        background = ThreadPoolExecutor(max_workers=3)
        pending = [background.submit(self._joins, leader, leader_addr, facts, todo, nodes,
                                     cluster_id)]
        if leader.name in facts and facts[leader.name]["node_id"] in nodes:
            pending.append(background.submit(self._label, leader, leader,
                                             nodes[facts[leader.name]["node_id"]]))
        try:
            self._join_managers(leader, leader_addr, facts, todo, nodes,
                                later=lambda *a: pending.append(background.submit(*a)))
        finally:
            background.shutdown(wait=True)
        for fut in pending:
            fut.result()        # the workers' errors, once the managers are done

        for h in self.hosts:
            self._ids.setdefault(h.name, facts[h.name]["node_id"])
        for w in self.workers:
            node = nodes.get(self._ids[w.name]) if w.name not in self._rejoined else None
            if node and node["role"] == "manager":
                self.run(leader, docker_cli.node_demote(node["id"]))
                self.change(w, DEMOTED)
        for h in self.hosts:
            if h is not leader and h.name not in self._rejoined and self._ids[h.name] in nodes:
                self._label(leader, h, nodes[self._ids[h.name]])
        result = []
        for h in self.hosts:
            rec = self.inv["hosts"].setdefault(h.name, {})
            rec["node_id"] = self._ids[h.name]
            rec["labels"] = sorted(self.labels.get(h.name, {}))
            result.append({"name": h.name, "role": h.role, "advertise_address": self._address(h, facts),
                           "node_id": self._ids[h.name],
                           "hostname": self.hostnames.get(h.name, "")})
        self.save()
        return result

    def plan(self, facts: dict) -> list[str]:
        """What converge would change, decided as converge decides (the same leader search,
        foreign-swarm refusals, joins, stale nodes, promotions, demotions and label changes)
        from the same facts, in the words converge reports them with; it only reads (the
        leader's node listing, a node's own labels). `facts`: swarm facts of the hosts whose
        engines answered; a host without them is outside any swarm (no engine answering yet:
        up finds it so once it has started it). A host's advertise address is named where the
        step's addresses know it (the host exists). Also sets what converge would return per
        host: `planned_ids` (its node ID, "" for a node to be made) and `planned_addresses`."""
        out: list[str] = []
        self.planned_ids, self.planned_addresses = {}, {}
        inactive = F.swarm_facts({})
        facts = {h.name: facts.get(h.name) or inactive for h in self.hosts}

        def say(h: Host, what: str) -> None:
            out.append(f"{h.name}: {what}")

        locked = sorted(m.name for m in self.managers if facts[m.name]["state"] == "locked")
        if locked:
            raise SwarmsmithError(f"the swarm is locked on {', '.join(locked)} (autolock): run "
                                  "`swarmsmith unlock-swarm` first; nothing was changed")
        leader = self._find_leader(facts)
        nodes: dict = {}
        cluster_id = None
        if leader is None:
            leader = self.managers[0]
            self._check_first(facts)
            if facts[leader.name]["state"] == "active":
                say(leader, LEFT_FORCED)
            say(leader, initialised(self.addr.get(leader.name)))
        else:
            nodes = {n["id"]: n for n in self.nodes(leader)}
            cluster_id = self.inv["cluster_id"]
        for h in self.hosts:
            how = "" if h is leader else self._classify(h, facts[h.name], nodes, cluster_id)
            node = None if how else nodes.get(facts[h.name]["node_id"])
            if how == "leave":
                say(h, LEFT)
            if how:
                for n in self._stale_nodes(h, nodes.values()):
                    say(h, stale_removed(n["id"]))
                say(h, joined_as(h.role, self.addr.get(h.name)))
            elif node and h.role == "manager" and node["role"] != "manager":
                say(h, PROMOTED)
            elif node and h.role == "worker" and node["role"] == "manager":
                say(h, DEMOTED)
            # a node that joins (or the swarm's first) starts without labels
            have = node["labels"] if node else {} if how or not nodes else None
            labels = self._label_diff(h, have)[2] if have is not None else ""
            if labels:
                say(h, labels)
            fresh = bool(how) or not nodes
            self.planned_ids[h.name] = "" if fresh else facts[h.name]["node_id"]
            self.planned_addresses[h.name] = (None if fresh else facts[h.name]["node_addr"]) \
                or self.addr.get(h.name)
        return out

    def _join_managers(self, leader: Host, leader_addr: str, facts: dict, todo: dict,
                       nodes: dict, later=None) -> None:
        """Managers one at a time, each waited for until Reachable (or promoted). Their labels
        change nothing of the quorum: `later(fn, *args)` runs them beside the next join."""
        later = later or (lambda fn, *args: fn(*args))
        token = None
        for m in self.managers:
            if m is leader:
                continue
            joined = ""
            if todo[m.name]:
                token = token or self.token(leader, "manager")      # once for all managers
                joined = self._join(m, leader, "manager", leader_addr, todo[m.name] == "leave",
                                    token, known_nodes=nodes)
            else:
                node = nodes.get(facts[m.name]["node_id"])
                if node and node["role"] != "manager":
                    self.run(leader, docker_cli.node_promote(node["id"]))
                    self.change(m, PROMOTED)
                elif node and node["reachability"] == "reachable":
                    continue        # listed reachable a moment ago: nothing to wait for
            self._ids[m.name] = self._wait_reachable(leader, m, joined)
            if m.name in self._rejoined:
                later(self._label, leader, m, {"labels": {}, "id": self._ids[m.name]})

    def _read_all(self):
        facts = each(self.swarm_facts, self.hosts, concurrency=self.concurrency)
        return ((h.name, facts[h.name]) for h in self.hosts)

    def _take(self, facts: dict) -> str:
        name, f = next(self._arrivals)
        if isinstance(f, BaseException):
            self._errors[name] = f
        else:
            facts[name] = f
        return name

    def _fail(self, facts: dict):
        """Wait for the hosts still on their way (their errors are reported too), then raise."""
        while len(facts) + len(self._errors) < len(self.hosts):
            self._take(facts)
        errors = self._errors
        if len(errors) == 1:
            raise next(iter(errors.values()))
        raise GroupError(errors)

    def _classify(self, h: Host, f: dict, nodes: dict, cluster_id) -> str:
        """'' when the node is ours, 'join', or 'leave' (then join); a host in another swarm is
        refused unless force."""
        if f["state"] == "active":
            ours = cluster_id and ((f["cluster_id"] == cluster_id) if f["is_manager"]
                                   else (f["node_id"] in nodes))
            if ours:
                return ""
            if not self.force:
                raise ForeignSwarmError(
                    f"this host is already in another swarm (node {f['node_id'][:12]}, "
                    f"managers {', '.join(f['remote_managers']) or 'unknown'}); refusing to "
                    "take it over. Make it leave (docker swarm leave --force) or run with --force",
                    host=h.name)
            self._check_destroy(h, f)
            return "leave"
        if f["state"] in ("pending", "error", "locked"):
            return "leave"
        return "join"

    def _joins(self, leader: Host, leader_addr: str, facts: dict, todo: dict, nodes: dict,
               cluster_id: str) -> None:
        """Workers join in parallel: those known now at once, the others as they arrive."""
        token_lock = threading.Lock()
        token: list = []

        def worker_token() -> Secret:
            with token_lock:
                if not token:
                    token.append(self.token(leader, "worker"))
                return token[0]

        def join(w: Host, how: str) -> None:
            with self.pacer.slot() as busy:
                joined = self._join(w, leader, "worker", leader_addr, how == "leave",
                                    worker_token(), known_nodes=nodes, busy=busy)
            self._ids[w.name] = joined or self.swarm_facts(w)["node_id"]
            self._label(leader, w, {"labels": {}, "id": self._ids[w.name]})
            self._count_join(done=1)

        def submit(w: Host, how: str) -> None:
            self._count_join(todo=1)
            jobs[w.name] = pool.submit(join, w, how)

        pool = ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(self.workers))))
        jobs = {}
        try:
            for w in self.workers:
                if todo.get(w.name):
                    submit(w, todo[w.name])
            while len(facts) + len(self._errors) < len(self.hosts):
                name = self._take(facts)
                if name not in facts:
                    continue
                w = next(h for h in self.hosts if h.name == name)
                try:
                    how = self._classify(w, facts[name], nodes, cluster_id)
                except SwarmsmithError as e:     # refused before anything changed on it
                    self._errors[name] = e
                    continue
                if how:
                    submit(w, how)
        finally:
            pool.shutdown(wait=True)
        for name, fut in jobs.items():
            if fut.exception() is not None:
                self._errors[name] = fut.exception()
        if self._errors:
            self._fail(facts)

    def _count_join(self, todo: int = 0, done: int = 0) -> None:
        """The phase line says how many workers joined of how many: a hundred joins paced to
        what the manager takes are minutes, never a silent one."""
        with self._count_lock:
            self._joined_count[0] += done
            self._joined_count[1] += todo
            joined, total = self._joined_count
        self.phase(f"workers joined: {joined} of {total} (at most {self.pacer.limit} at once)")

    def _address(self, h: Host, facts: dict) -> str:
        """The address the node really advertises. A node left alone keeps the one it joined
        with, even when the policy now picks another: report that, not the policy's pick."""
        f = facts[h.name]
        have = f.get("node_addr") if h.name not in self._rejoined else None
        if have and have != self.addr[h.name]:
            self.progress(h.name, f"note: advertises {have}, the policy now picks {self.addr[h.name]}; "
                                  "it changes only when the node leaves and joins again")
        return have or self.addr[h.name]

    def _find_or_init_leader(self, facts: dict) -> Host:
        return self._find_leader(facts) or self._init_leader(facts)

    def _find_leader(self, facts: dict) -> Host | None:
        """An active manager of our swarm (the inventory's, the journal's or our label's)."""
        known = self.inv.get("cluster_id")
        journal = self.inv.get("init_started_on")
        for m in self.managers:
            f = facts[m.name]
            if f["state"] == "active" and f["is_manager"]:
                if f["cluster_id"] == known or (not known and journal == m.name) or \
                        (not known and self._labelled_ours(m)):
                    self.inv["cluster_id"] = f["cluster_id"]
                    self.inv.pop("init_started_on", None)
                    self.save()
                    return m
        return None

    def _check_first(self, facts: dict) -> None:
        """The first manager, in a swarm we do not know, is refused (naming the swarmsmith
        cluster its node says it belongs to) unless force; force that would destroy services
        needs destroy_services."""
        first = self.managers[0]
        f = facts[first.name]
        if f["state"] != "active":
            return
        if not self.force:
            owner = self._cluster_label(first) if f["is_manager"] else ""
            raise ForeignSwarmError(
                f"this host is already in another swarm (cluster {f['cluster_id'][:12] or '?'}"
                + (f", swarmsmith cluster {owner}" if owner else "") + ") "
                "that this cluster's inventory does not know; refusing to take it over. "
                "Make it leave (docker swarm leave --force) or run with --force", host=first.name)
        self._check_destroy(first, f)

    def _init_leader(self, facts: dict, checked: bool = False) -> Host:
        first = self.managers[0]
        f = facts[first.name]
        if f["state"] == "active":
            if not checked:
                self._check_first(facts)
            self.run(first, docker_cli.swarm_leave("leave the foreign swarm (--force)"))
            self.change(first, LEFT_FORCED)
        elif f["state"] in ("pending", "error", "locked"):
            self.run(first, docker_cli.swarm_leave("reset a half-joined node"), check=False)
        # journal before acting: a run killed right after init adopts this swarm next time
        self.inv["init_started_on"] = first.name
        self.save()
        addr = self.addr[first.name]
        self.phase(f"swarm init on {first.name}")
        body = json.dumps({"ListenAddr": f"{addr}:2377", "AdvertiseAddr": addr}).encode()
        r = self.run(first, Command.shell(CURL_INIT, description="swarm init", stdin=body),
                     check=False)
        if r.exit_status in NOT_SENT:       # no curl, or the engine listens elsewhere: the CLI
            self.run(first, docker_cli.swarm_init(addr))
            swarm = {}
        else:
            swarm = self._posted(first, "swarm init", r)
        self.change(first, initialised(addr))
        info = F.swarm_facts(swarm)
        if info["state"] != "active" or not info["cluster_id"]:   # the info did not come
            info = self.swarm_facts(first)
        self.inv["cluster_id"] = info["cluster_id"]
        self.inv.pop("init_started_on", None)
        facts[first.name] = info
        self.save()
        return first

    def _labelled_ours(self, m: Host) -> bool:
        """A manager whose own node carries our cluster label is ours (lost inventory, no record)."""
        if not self.cluster_name:
            return False
        return self._cluster_label(m) == self.cluster_name

    def _cluster_label(self, m: Host) -> str:
        r = self.run(m, docker_cli.OWN_NODE_LABELS, check=False)
        try:
            labels = (json.loads(r.stdout or "null") or {}) if r.ok else {}
        except ValueError:
            return ""
        return str(labels.get(NODE_LABEL, "")) if isinstance(labels, dict) else ""

    def _check_destroy(self, h: Host, f: dict) -> None:
        """A manager leaving with --force takes its swarm's services with it when it is the last
        one; say what would go and ask for --destroy-services as well."""
        if not f.get("is_manager") or self.destroy_services:
            return
        r = self.run(h, docker_cli.SERVICE_NAMES, check=False)
        services = sorted(r.stdout.split()) if r.ok else []
        if services:
            shown = ", ".join(services[:10]) + (f" and {len(services) - 10} more"
                                                if len(services) > 10 else "")
            raise DestroyRefused(
                f"--force would make this manager leave swarm {f['cluster_id'][:12] or '?'}, which "
                f"runs {len(services)} service(s): {shown}. When it is that swarm's last manager, "
                "the swarm and everything in it (services, their networks, secrets and configs) "
                "is destroyed. Nothing was changed; to do it anyway add --destroy-services",
                host=h.name)

    def _join(self, h: Host, leader: Host, role: str, leader_addr: str, leave_first: bool,
              token: Secret | None = None, known_nodes: dict | None = None, busy=None) -> str:
        """Join `h`; returns its node ID when its engine told it with the join ("" if not)."""
        if leave_first:
            self.run(h, docker_cli.swarm_leave("leave the previous swarm"), check=False)
            self.change(h, LEFT)
        self._remove_stale_nodes(leader, h, known_nodes)
        token = token or self.token(leader, role)
        addr = self.addr[h.name]
        node_id = self._engine_join(h, role, token, addr, leader_addr, busy or (lambda: None))
        self._rejoined.add(h.name)
        self.change(h, joined_as(role, addr))
        return node_id

    def _engine_join(self, h: Host, role: str, token: Secret, addr: str, leader_addr: str,
                     busy=lambda: None) -> str:
        """Join through the host's Engine API, the token in the request body: as an argument of
        `docker swarm join` it would be readable by every user of the host (ps, /proc)."""
        what = f"join the swarm as {role} (Engine API POST /swarm/join via {leader_addr}:2377)"
        log.debug("%s: %s, token ***", h.name, what)
        body = json.dumps({"ListenAddr": f"{addr}:2377", "AdvertiseAddr": addr,
                           "RemoteAddrs": [f"{leader_addr}:2377"],
                           "JoinToken": token.reveal()}).encode()
        # the token in what the host sends back (an engine's error may quote the request) is masked
        cmd = replace(Command.shell(CURL_JOIN, description=what, stdin=body), secrets=(token,))
        r = self.run(h, cmd, check=False)
        if r.exit_status not in NOT_SENT:
            try:
                return F.swarm_facts(self._posted(h, what, r, token))["node_id"]
            except JoinContinues as e:
                busy()
                return self._follow_join(h, what, e.swarm_message)
        api = self.engine_api(h)
        try:
            api.join_swarm([f"{leader_addr}:2377"], token.reveal(), listen_addr=f"{addr}:2377",
                           advertise_addr=addr)
        except Exception as e:      # docker.errors.APIError, requests' connection errors
            text = str(getattr(e, "detail", None) or getattr(e, "explanation", None) or e)
            text = text.replace(token.reveal(), "***")
            if joins_in_background(text):
                busy()
                return self._follow_join(h, what, text)
            raise SwarmsmithError(f"{what} failed: {text}", host=h.name) from None
        else:
            # the new node's ID from the same connection: no `docker info` process on the host
            try:
                return ((api.info() or {}).get("Swarm") or {}).get("NodeID", "")
            except Exception:       # the SSH facts tell it then
                return ""
        finally:
            close = getattr(api, "close_forwarder", None) or getattr(api, "close", None)
            if close:
                close()

    @staticmethod
    def _posted(h: Host, what: str, r, token: Secret | None = None) -> dict:
        """A facts.socket_post answer: the engine's `Swarm` info after it ({} when the info did not
        come: the SSH facts tell it then), or the engine's refusal as an error naming host and
        operation (a token it quoted masked)."""
        answer, _, info = (r.stdout or "").partition("\n---info---\n")
        body, _, status = answer.strip().rpartition("\n")
        status = status.strip()
        if status == "200":
            try:
                swarm = json.loads(info).get("Swarm")
            except (ValueError, AttributeError):
                swarm = None
            return swarm if isinstance(swarm, dict) else {}
        if status in ("", "000"):
            detail = f"no answer from the engine's socket (curl exit {r.exit_status})"
        else:
            try:
                message = (json.loads(body) or {}).get("message") or body
            except (ValueError, AttributeError):
                message = body
            detail = f"{message.strip() or 'no message'} (HTTP {status})"
        if token is not None:
            detail = detail.replace(token.reveal(), "***")
        if status == "503" and joins_in_background(detail):
            e = JoinContinues(f"{what}: {detail}", host=h.name)
            e.swarm_message = detail
            raise e
        raise SwarmsmithError(f"{what} failed: {detail}", host=h.name)

    def _follow_join(self, h: Host, what: str, message: str) -> str:
        """A join swarm finishes in the background: the host's own swarm state is read until it
        is active (the node is then in the node list, with its certificate), or the deadline
        passes or swarm gives up on it, and the failure says what swarm said."""
        self.progress(h.name, "the manager is busy: swarm finishes the join in the background, "
                              "following it")
        end = self.clock() + self.join_deadline
        delay, f, gave_up = 0.5, {}, 0
        while True:
            try:
                f = self.swarm_facts(h)
            except SwarmsmithError:     # a starved host's SSH channel: ask again
                pass
            if f.get("state") == "active" and f.get("node_id"):
                return f["node_id"]
            # pending while it goes on; inactive or error (twice: not a read between two
            # attempts) once swarm stopped trying
            gave_up = gave_up + 1 if f.get("state") in ("inactive", "error") else 0
            if gave_up >= 2 or self.clock() >= end:
                state = f.get("state", "unknown")
                why = (f" ({f['error']})" if f.get("error") else "")
                when = "swarm stopped trying" if gave_up >= 2 else \
                    f"after {self.join_deadline:.0f}s"
                raise SwarmsmithError(
                    f"{what} failed: swarm answered that the join goes on in the background "
                    f"({message}), but {when} the node is {state}{why}", host=h.name)
            self.sleep(delay)
            delay = min(delay * 1.5, 5.0)

    def _stale_nodes(self, h: Host, nodes) -> list[dict]:
        """Down nodes under `h`'s hostname: what a rebuilt host leaves behind."""
        hostname = self.hostnames.get(h.name, h.name)
        return [n for n in nodes if n["hostname"] == hostname and n["state"] == "down"]

    def _remove_stale_nodes(self, leader: Host, h: Host, known: dict | None = None) -> None:
        """A rebuilt host leaves a Down node behind under the same hostname: remove it.
        `known`: the nodes listed once for all joins (a stale node is down before they start)."""
        for n in self._stale_nodes(h, known.values() if known is not None else self.nodes(leader)):
            if n["role"] == "manager":
                self.run(leader, docker_cli.node_demote(n["id"], "demote a down stale manager"))
            self.run(leader, docker_cli.node_rm(n["id"], "remove a stale down node"))
            self.change(h, stale_removed(n["id"]))

    def _wait_reachable(self, leader: Host, m: Host, node_id: str = "",
                        deadline: float = 60.0) -> str:
        node_id = node_id or self.swarm_facts(m)["node_id"]
        self.phase(f"manager {m.name} to be reachable (managers join one at a time)")
        end = self.clock() + deadline
        delay = 0.1
        while True:
            node = {n["id"]: n for n in self.api_nodes(leader)}.get(node_id)
            if node and node["reachability"] == "reachable":
                return node_id
            if self.clock() > end:
                state = node["reachability"] if node else "not listed"
                raise SwarmsmithError(f"manager not reachable after {deadline:.0f}s ({state}); "
                                      "stopped before adding more managers", host=m.name)
            self.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _label_diff(self, h: Host, have: dict) -> tuple[dict, list, str]:
        """(labels to add, labels to remove, the change's text) for a node with labels `have`:
        the cluster file's labels; labels we set before and no longer want go."""
        want = self.labels.get(h.name, {})
        managed = set(self.inv["hosts"].get(h.name, {}).get("labels", []))
        add = {k: v for k, v in want.items() if have.get(k) != v}
        rm = sorted(k for k in managed - set(want) if k in have)
        parts = [f"{k}={v}" for k, v in sorted(add.items())] + [f"-{k}" for k in rm]
        return add, rm, ("labels " + " ".join(parts)) if parts else ""

    def _label(self, leader: Host, h: Host, node: dict) -> None:
        add, rm, text = self._label_diff(h, node["labels"])
        if add or rm:
            self._update_node_labels(leader, node["id"], add, rm)
            self.change(h, text)

    def leader_api(self, leader: Host):
        """One Engine API client on the leader for the whole step (labels, then the cluster
        record): a `docker node update` per node is a CLI process on the manager each, which
        the manager's CPU pays while a dozen engines start and join."""
        with self._leader_api_lock:
            if self._leader_api is None:
                self._leader_api = self.engine_api(leader)
            return self._leader_api

    def close(self) -> None:
        """Close the leader's Engine API client, if the step opened one."""
        with self._leader_api_lock:
            api, self._leader_api = self._leader_api, None
        close = api is not None and (getattr(api, "close_forwarder", None)
                                     or getattr(api, "close", None))
        if close:
            close()

    def _update_node_labels(self, leader: Host, node_id: str, add: dict, rm: list) -> None:
        from ..engine_api.adapter import EngineAPI, change_node
        log.debug("%s: update node %s labels: add %s, remove %s", leader.name, node_id[:12],
                  sorted(add), rm)

        def change(spec: dict) -> dict:
            labels = {k: v for k, v in {**(spec.get("Labels") or {}), **add}.items()
                      if k not in rm}
            return {**spec, "Labels": labels}
        try:
            change_node(EngineAPI(self.leader_api(leader), where=leader.name), node_id, change,
                        sleep=self.sleep, attempts=10)
        except SwarmsmithError as e:        # the adapter's, naming the call
            raise SwarmsmithError(f"update the labels of node {node_id[:12]}: "
                                  f"{getattr(e, 'detail', None) or e.message}",
                                  host=leader.name) from None
