"""The `digitalocean` provider: droplets for a cluster, idempotent by tag.

Every droplet carries the cluster tag `swarmsmith:<cluster>` from its create request on, so a
listing by that tag is the journal: a re-run after any failure sees what exists and creates only
the rest. Role tags (`swarmsmith:<cluster>:manager|worker`) are added after creation, so one create
request can hold managers and workers alike; a missing role tag is repaired on every run.

State (`provider.state`, a small dict the inventory persists) records what swarmsmith created, so
destroy() removes the VPC, firewall and SSH key only when they are ours. Without a record, a
firewall or VPC named `swarmsmith-<cluster>` counts as ours (that name is our namespace).
"""
from __future__ import annotations

import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from inventory.digitalocean_settings import (ALL, NAME_RE, md5_fingerprint,  # noqa: F401
                                             validate_settings)

from .errors import InputError, SwarmsmithError, TimeoutError_, UnreachableError
from .hosts import Host, WantedHost

log = logging.getLogger("swarmsmith.digitalocean")

MAX_PER_CREATE = 10
CREATE_ATTEMPTS = 3
SWARM_PORTS = [("tcp", "2377"), ("tcp", "7946"), ("udp", "7946"), ("udp", "4789")]


def tcp_ssh_check(address: str, port: int = 22, timeout: float = 3.0) -> bool:
    """True when something on address:port answers with an SSH banner."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def cluster_tag(cluster: str) -> str:
    return f"swarmsmith:{cluster}"


def role_tag(cluster: str, role: str) -> str:
    return f"swarmsmith:{cluster}:{role}"


def ssh_anywhere_note(sources) -> str:
    """The plan says so when SSH is open to the whole internet (the default)."""
    open_to = [x for x in sources if x in ALL]
    if not open_to:
        return ""
    return (" (WARNING: SSH open to the whole internet, " + ", ".join(open_to)
            + "; set digitalocean.ssh_sources to your own addresses)")


def firewall_rules(cluster: str, settings: dict) -> tuple[list[dict], list[dict]]:
    """Swarm ports only between the cluster's droplets (by tag); SSH and published ports from
    the configured sources; all outbound traffic allowed ("0" = all ports; the API rejects "all",
    and names ICMP's ports "0" too)."""
    none = {"addresses": [], "droplet_ids": [], "load_balancer_uids": [], "tags": []}
    inbound = [{"protocol": proto, "ports": port, "sources": {**none, "tags": [cluster_tag(cluster)]}}
               for proto, port in SWARM_PORTS]
    inbound.append({"protocol": "tcp", "ports": "22",
                    "sources": {**none, "addresses": list(settings["ssh_sources"])}})
    for p in settings["published_ports"]:
        inbound.append({"protocol": p["protocol"], "ports": p["ports"],
                        "sources": {**none, "addresses": list(p["sources"])}})
    outbound = [{"protocol": proto, "ports": "0", "destinations": {**none, "addresses": list(ALL)}}
                for proto in ("tcp", "udp", "icmp")]
    return inbound, outbound


def _rule_key(rule: dict, side: str) -> tuple:
    ports = str(rule.get("ports") or "0")
    if rule.get("protocol") == "icmp" or ports in ("all", "1-65535"):
        ports = "0"
    t = rule.get(side) or {}
    return (rule.get("protocol"), ports, tuple(sorted(t.get("addresses") or [])),
            tuple(sorted(t.get("tags") or [])), tuple(sorted(map(int, t.get("droplet_ids") or []))))


def _same_rules(fw: dict, inbound: list[dict], outbound: list[dict], tags: list[str]) -> bool:
    return (sorted(_rule_key(r, "sources") for r in fw.get("inbound_rules") or [])
            == sorted(_rule_key(r, "sources") for r in inbound)
            and sorted(_rule_key(r, "destinations") for r in fw.get("outbound_rules") or [])
            == sorted(_rule_key(r, "destinations") for r in outbound)
            and sorted(fw.get("tags") or []) == sorted(tags))


# --- provider -------------------------------------------------------------------------------
class DigitalOceanProvider:
    name = "digitalocean"

    def __init__(self, cluster_name: str, settings: dict, state: dict | None = None, *,
                 api=None, clock=time.monotonic, sleep=time.sleep, wall_clock=time.time,
                 ssh_check=tcp_ssh_check, prune: bool = False, env=None,
                 file: str | None = None, on_state=None):
        """`on_state(state)` is called whenever the state must reach disk before the next
        request: names are recorded there before their create is sent (see _create)."""
        if not isinstance(cluster_name, str) or not NAME_RE.match(cluster_name):
            raise InputError(f"invalid cluster name {cluster_name!r} for DigitalOcean: lowercase "
                             "letters, digits and '-'", file=file, path="name")
        self.cluster = cluster_name
        self.settings = settings if "_public_key" in settings else validate_settings(settings, file)
        self._state = {k: dict(v) for k, v in (state or {}).items() if isinstance(v, dict)}
        self._api = api
        self.clock, self.sleep, self.wall_clock = clock, sleep, wall_clock
        self.on_state = on_state
        self.ssh_check = ssh_check
        self.prune = prune
        self._env = env
        self.tag = cluster_tag(cluster_name)
        self.resource_name = f"swarmsmith-{cluster_name}"

    @property
    def state(self) -> dict:
        """What swarmsmith created (ids, never secrets); the inventory persists it."""
        return {k: dict(v) for k, v in self._state.items()}

    @property
    def api(self):
        if self._api is None:
            from .do_api import DOApi
            self._api = DOApi.from_env(self._env, clock=self.clock, sleep=self.sleep,
                                       wall_clock=self.wall_clock)
        return self._api

    def __repr__(self) -> str:
        return f"DigitalOceanProvider({self.cluster!r})"

    # --- helpers ------------------------------------------------------------------------
    def _say(self, progress, name: str, message: str) -> None:
        log.info("%s: %s", name, message)
        if progress:
            progress(name, message)

    def _check_wanted(self, wanted: list[WantedHost]) -> None:
        names = [w.name for w in wanted]
        if len(set(names)) != len(names):
            raise InputError("host names must be unique", path="hosts")
        for w in wanted:
            if not NAME_RE.match(w.name):
                raise InputError(f"{w.name!r} is not a valid droplet name", path="hosts")
            if w.role not in ("manager", "worker"):
                raise InputError(f"{w.name}: role must be manager or worker", path="hosts")

    def _listing(self) -> tuple[dict, list]:
        """Droplets by name (the oldest of any duplicates) and the duplicates."""
        by_name, duplicates = {}, []
        for d in sorted(self.api.list_droplets(self.tag), key=lambda d: d.id):
            if d.name in by_name:
                duplicates.append(d)
            else:
                by_name[d.name] = d
        return by_name, duplicates

    def _save(self) -> None:
        if self.on_state is not None:
            self.on_state(self.state)

    # --- creates in flight ----------------------------------------------------------------
    # A create is answered 202 "accepted", and a droplet may show up in lists only a little
    # later. If the answer is lost (5xx, timeout, a killed run), the names may or may not exist:
    # creating them again at once could make every droplet twice. So each name is recorded in
    # the state before its create is sent; while the record is younger than `list_lag`, a name
    # missing from the list counts as "maybe made" and is waited for, not created again.
    # A record also carries the droplet and create action ids once the create is answered, so
    # a later run can still follow the action; it is dropped when the droplet is active.
    def _creating(self) -> dict:
        return self._state.setdefault("creating", {})

    def _recent(self, name: str) -> bool:
        record = self._creating().get(name)
        return bool(record) and self.wall_clock() - record.get("at", 0) < self.settings["list_lag"]

    def _forget(self, names) -> None:
        creating = self._creating()
        for name in names:
            creating.pop(name, None)
        if not creating:
            self._state.pop("creating", None)

    def _await_listed(self, names: list[str], progress) -> tuple[dict, list]:
        """Poll the tagged list until every name is listed or its record is older than
        `list_lag`; the last listing (by name, duplicates)."""
        s = self.settings
        self._say(progress, "digitalocean", f"waiting up to {s['list_lag']:g}s for "
                  f"{', '.join(names)} to be listed (a create may have been accepted)")
        give_up = self.clock() + s["list_lag"]     # bounded even if the wall clock jumps back
        while True:
            by_name, duplicates = self._listing()
            waiting = [n for n in names if n not in by_name and self._recent(n)]
            if not waiting or self.clock() >= give_up:
                return by_name, duplicates
            oldest = min(self._creating()[n].get("at", 0) for n in waiting)
            left = oldest + s["list_lag"] - self.wall_clock()
            self.sleep(max(0.0, min(s["poll_interval"], left)))

    def _find_key(self) -> dict | None:
        fp = md5_fingerprint(self.settings["_public_key"])
        return next((k for k in self.api.list_ssh_keys() if k["fingerprint"] == fp), None)

    def _find_named(self, items: list[dict]) -> dict | None:
        return next((i for i in items if i.get("name") == self.resource_name), None)

    def _converge(self, what: str, find, create) -> tuple[dict, bool]:
        """find() or create(); after an ambiguous create failure, look again before retrying."""
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            found = find()
            if found:
                return found, False
            try:
                return create(), True
            except SwarmsmithError as e:
                if not getattr(e, "ambiguous", False) or attempt == CREATE_ATTEMPTS:
                    raise
                log.warning("%s: %s; checking what exists before retrying", what, e)
                self.sleep(self.settings["poll_interval"])
        raise AssertionError("unreachable")

    # --- plan ---------------------------------------------------------------------------
    def plan(self, wanted: list[WantedHost], *, prune: bool | None = None) -> list[str]:
        self._check_wanted(wanted)
        prune = self.prune if prune is None else prune
        s, changes = self.settings, []
        if not self._find_key():
            changes.append(f"SSH key {self.resource_name}: register {s['ssh_key']}")
        if s["vpc"] == "create" and not self._find_named(self.api.list_vpcs()):
            changes.append(f"VPC {self.resource_name}: create in {s['region']}")
        by_name, duplicates = self._listing()
        for w in wanted:
            d = by_name.get(w.name)
            if d is None and self._recent(w.name):
                changes.append(f"droplet {w.name}: wait (a create was sent; not listed yet)")
            elif d is None:
                changes.append(f"droplet {w.name}: create ({w.role}, {s['size']}, {s['region']})")
            elif role_tag(self.cluster, w.role) not in d.tags:
                changes.append(f"droplet {w.name}: add tag {role_tag(self.cluster, w.role)}")
        changes += self._extras_lines(wanted, by_name, duplicates, prune, done=False)
        if s["firewall"]:
            inbound, outbound = firewall_rules(self.cluster, s)
            fw = self._find_named(self.api.list_firewalls())
            flag = ssh_anywhere_note(s["ssh_sources"])
            if fw is None:
                changes.append(f"firewall {self.resource_name}: create{flag}")
            elif not _same_rules(fw, inbound, outbound, [self.tag]):
                changes.append(f"firewall {self.resource_name}: update rules{flag}")
        return changes

    def _extras(self, wanted, by_name, duplicates) -> list:
        names = {w.name for w in wanted}
        return [d for n, d in by_name.items() if n not in names] + duplicates

    def _extras_lines(self, wanted, by_name, duplicates, prune, done: bool) -> list[str]:
        lines = []
        for d in self._extras(wanted, by_name, duplicates):
            if prune:
                lines.append(f"droplet {d.name} (id {d.id}): {'destroyed' if done else 'destroy'}"
                             " (not in the cluster file)")
            else:
                lines.append(f"droplet {d.name} (id {d.id}): not in the cluster file; kept "
                             "(--prune removes it)")
        return lines

    # --- ensure -------------------------------------------------------------------------
    def ensure(self, wanted: list[WantedHost], progress=None, *,
               prune: bool | None = None) -> tuple[list[Host], list[str]]:
        self._check_wanted(wanted)
        prune = self.prune if prune is None else prune
        changes: list[str] = []
        key_id = self._ensure_key(changes, progress)
        vpc_id = self._ensure_vpc(changes, progress)
        by_name, duplicates = self._listing()
        in_flight = [w.name for w in wanted if w.name not in by_name and self._recent(w.name)]
        if in_flight:
            by_name, duplicates = self._await_listed(in_flight, progress)
        missing = [w for w in wanted if w.name not in by_name]
        created = {w.name for w in missing}
        if missing:
            self._create(missing, key_id, vpc_id, changes, progress)
        if self.settings["firewall"]:
            self._ensure_firewall(changes, progress)
        if missing or not all(by_name[w.name].ready for w in wanted):
            by_name, duplicates = self._wait_active(wanted, progress)
        self._forget([w.name for w in wanted])
        self._save()
        self._ensure_role_tags(wanted, by_name, changes, created)
        extras = self._extras(wanted, by_name, duplicates)
        if prune:
            for d in extras:
                self._say(progress, d.name, "destroying (not in the cluster file)")
                self.api.delete_droplet(d.id)
        changes += self._extras_lines(wanted, by_name, duplicates, prune, done=True)
        hosts = [Host(name=w.name, public_address=by_name[w.name].public_ip,
                      private_address=by_name[w.name].private_ip, user=self.settings["user"],
                      key_path=self.settings["ssh_private_key"], role=w.role) for w in wanted]
        self._wait_ssh(hosts, progress)
        return hosts, changes

    def _ensure_key(self, changes, progress) -> int:
        def create():
            self._say(progress, "digitalocean", f"registering SSH key {self.resource_name}")
            return self.api.create_ssh_key(self.resource_name, self.settings["_public_key"])
        key, created = self._converge("register SSH key", self._find_key, create)
        previous = self._state.get("ssh_key", {})
        ours = created or (previous.get("id") == key["id"] and previous.get("created", False))
        self._state["ssh_key"] = {"id": key["id"], "created": ours,
                                  "fingerprint": md5_fingerprint(self.settings["_public_key"])}
        if created:
            changes.append(f"SSH key {self.resource_name}: registered (id {key['id']})")
        return int(key["id"])

    def _ensure_vpc(self, changes, progress) -> str | None:
        s = self.settings
        if s["vpc"] == "default":
            self._state.pop("vpc", None)
            return None
        if s["vpc"] != "create":
            self._state["vpc"] = {"id": s["vpc"], "created": False}
            return s["vpc"]

        def create():
            self._say(progress, "digitalocean", f"creating VPC {self.resource_name}")
            return self.api.create_vpc(self.resource_name, s["region"], s["vpc_ip_range"],
                                       f"swarmsmith cluster {self.cluster}")
        vpc, created = self._converge("create VPC", lambda: self._find_named(self.api.list_vpcs()),
                                      create)
        if vpc.get("region") and vpc["region"] != s["region"]:
            raise SwarmsmithError(f"VPC {self.resource_name} exists in {vpc['region']}, "
                                  f"not in {s['region']}")
        self._state["vpc"] = {"id": vpc["id"], "created": True}
        if created:
            changes.append(f"VPC {self.resource_name}: created (id {vpc['id']})")
        return vpc["id"]

    def _create(self, missing, key_id, vpc_id, changes, progress) -> None:
        s = self.settings
        tags = [self.tag, *[t for t in s["tags"] if t != self.tag]]
        todo = list(missing)
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                while todo:
                    batch, todo = todo[:MAX_PER_CREATE], todo[MAX_PER_CREATE:]
                    try:
                        self._create_batch(batch, key_id, vpc_id, tags, progress)
                    except BaseException:
                        todo = batch + todo
                        raise
                    changes += [f"droplet {w.name}: created ({w.role}, {s['size']}, {s['region']})"
                                for w in batch]
                return
            except SwarmsmithError as e:
                if not getattr(e, "ambiguous", False) or attempt == CREATE_ATTEMPTS:
                    raise
                log.warning("%s; looking for the droplets by name before creating again", e)
                by_name, _ = self._await_listed([w.name for w in todo], progress)
                changes += [f"droplet {w.name}: created ({w.role}, {s['size']}, {s['region']})"
                            for w in todo if w.name in by_name]
                todo = [w for w in todo if w.name not in by_name]

    def _create_batch(self, batch, key_id, vpc_id, tags, progress) -> None:
        s = self.settings
        at = self.wall_clock()
        for w in batch:
            self._creating()[w.name] = {"at": at}
        self._save()                      # on disk before the request: a killed run knows
        self._say(progress, "digitalocean", f"creating {', '.join(w.name for w in batch)}")
        made = self.api.create_droplets(
            [w.name for w in batch], region=s["region"], size=s["size"], image=s["image"],
            ssh_key_ids=[key_id], tags=tags, vpc_uuid=vpc_id, monitoring=s["monitoring"],
            ipv6=s["ipv6"], user_data=s["user_data"])
        for d in made:
            record = self._creating().setdefault(d.name, {"at": at})
            record["id"] = d.id
            if d.action_id:
                record["action"] = d.action_id
        self._save()

    def _ensure_firewall(self, changes, progress) -> None:
        inbound, outbound = firewall_rules(self.cluster, self.settings)
        tags = [self.tag]

        def create():
            self._say(progress, "digitalocean", f"creating firewall {self.resource_name}")
            self.api.ensure_tag(self.tag)   # a firewall may only name existing tags
            return self.api.create_firewall(self.resource_name, tags, inbound, outbound)
        fw, created = self._converge(
            "create firewall", lambda: self._find_named(self.api.list_firewalls()), create)
        self._state["firewall"] = {"id": fw["id"], "created": True}
        if created:
            changes.append(f"firewall {self.resource_name}: created (swarm ports between "
                           f"{self.tag}, SSH from {', '.join(self.settings['ssh_sources'])})")
        elif not _same_rules(fw, inbound, outbound, tags):
            self.api.update_firewall(fw["id"], self.resource_name, tags, inbound, outbound)
            changes.append(f"firewall {self.resource_name}: rules updated")

    def _wait_active(self, wanted, progress) -> tuple[dict, list]:
        """One tagged list call per poll interval until every wanted droplet is active, and,
        while a droplet whose create was answered is pending, one look at the account's recent
        actions: a create action that errored fails the run at that poll instead of when
        wait_timeout runs out (the droplet would stay `new` for good)."""
        s = self.settings
        deadline = self.clock() + s["wait_timeout"]
        reported: set[str] = set()
        while True:
            self.sleep(min(s["poll_interval"], max(0.0, deadline - self.clock())))
            by_name, duplicates = self._listing()
            pending = []
            for w in wanted:
                d = by_name.get(w.name)
                if d is not None and d.status not in ("new", "active"):
                    raise SwarmsmithError(f"droplet is {d.status}, expected active", host=w.name)
                if d is None or not d.ready:
                    pending.append(w.name)
                elif w.name not in reported:
                    reported.add(w.name)
                    self._say(progress, w.name, f"active at {d.public_ip}")
            if not pending:
                return by_name, duplicates
            self._check_actions(pending, by_name, progress)
            if self.clock() >= deadline:
                states = [f"{n} ({by_name[n].status if n in by_name else 'not listed yet'})"
                          for n in pending]
                raise TimeoutError_(f"droplets not active after {s['wait_timeout']:g}s: "
                                    + ", ".join(states))

    def _check_actions(self, pending: list[str], by_name: dict, progress) -> None:
        creating = self._creating()
        followed = {n: int(creating[n]["action"]) for n in pending
                    if n in creating and creating[n].get("action")}
        if not followed:
            return
        statuses = self.api.action_statuses(list(followed.values()))
        errored = [n for n, a in followed.items() if statuses.get(a) == "errored"]
        if not errored:
            return
        for name in errored:
            self._say(progress, name, f"create action {followed[name]} errored; destroying the "
                                      "droplet")
            droplet_id = creating[name].get("id") or (by_name[name].id if name in by_name else None)
            if droplet_id:
                self.api.delete_droplet(int(droplet_id))
            self._forget([name])
        self._save()
        others = [n for n in pending if n not in errored]
        detail = "; ".join(f"droplet {n}: create action {followed[n]} errored at DigitalOcean"
                           for n in errored)
        raise SwarmsmithError(
            f"{detail} (destroyed; a re-run creates it again"
            + (f"; still being created: {', '.join(others)}" if others else "") + ")",
        )

    def _ensure_role_tags(self, wanted, by_name, changes, created: set[str]) -> None:
        """Role tags go on after creation (one create request mixes roles); repaired every run."""
        for role in ("manager", "worker"):
            tag = role_tag(self.cluster, role)
            lacking = [by_name[w.name] for w in wanted
                       if w.role == role and tag not in by_name[w.name].tags]
            if lacking:
                self.api.ensure_tag(tag)
                self.api.tag_droplets(tag, [d.id for d in lacking])
                changes += [f"droplet {d.name}: tagged {tag}" for d in lacking
                            if d.name not in created]

    def _wait_ssh(self, hosts: list[Host], progress) -> None:
        if self.ssh_check is None or not hosts:
            return
        deadline = self.clock() + self.settings["ssh_timeout"]
        pending = list(hosts)
        with ThreadPoolExecutor(max_workers=min(16, len(hosts))) as pool:
            while True:
                answers = list(pool.map(lambda h: self.ssh_check(h.public_address, h.port), pending))
                for h, ok in zip(pending, answers):
                    if ok:
                        self._say(progress, h.name, "SSH answers")
                pending = [h for h, ok in zip(pending, answers) if not ok]
                if not pending:
                    return
                if self.clock() >= deadline:
                    raise UnreachableError(
                        f"SSH did not answer within {self.settings['ssh_timeout']:g}s on "
                        + ", ".join(f"{h.name} ({h.public_address}:{h.port})" for h in pending))
                self.sleep(min(self.settings["poll_interval"],
                               max(0.0, deadline - self.clock())))

    def existing(self) -> list[Host]:
        """The cluster's droplets as they are now (one tagged list call), sorted by name."""
        manager = role_tag(self.cluster, "manager")
        return [Host(name=d.name, public_address=d.public_ip or "", private_address=d.private_ip,
                     user=self.settings["user"], key_path=self.settings["ssh_private_key"],
                     role="manager" if manager in d.tags else (
                         "worker" if role_tag(self.cluster, "worker") in d.tags else ""))
                for d in sorted(self.api.list_droplets(self.tag), key=lambda d: d.name)]

    # --- destroy ------------------------------------------------------------------------
    def destroy(self, progress=None) -> list[str]:
        s, changes = self.settings, []
        # droplets whose create was sent recently may not be listed yet: wait for them (bounded)
        # and delete the ones whose id the create answer gave, listed or not
        recent = [n for n in self._creating() if self._recent(n)]
        if recent:
            self._await_listed(recent, progress)
        by_id = {d.id: d.name for d in self.api.list_droplets(self.tag)}
        by_id.update({int(r["id"]): n for n, r in self._creating().items() if r.get("id")})
        for droplet_id, name in sorted(by_id.items(), key=lambda i: i[1]):
            self._say(progress, name, "destroying")
            if self.api.delete_droplet(droplet_id):
                changes.append(f"droplet {name} (id {droplet_id}): destroyed")
        self._state.pop("creating", None)
        deadline = self.clock() + s["wait_timeout"]
        while True:
            left = self.api.list_droplets(self.tag)
            if not left:
                break
            if self.clock() >= deadline:
                raise TimeoutError_("droplets still listed after destroy: "
                                    + ", ".join(d.name for d in left))
            self.sleep(min(s["poll_interval"], max(0.0, deadline - self.clock())))

        fw = self._ours("firewall", self.api.list_firewalls())
        if fw and self.api.delete_firewall(fw):
            changes.append(f"firewall {self.resource_name}: deleted")
        self._state.pop("firewall", None)

        vpc = self._ours("vpc", self.api.list_vpcs())
        if vpc:
            self._delete_vpc(vpc, deadline)
            changes.append(f"VPC {self.resource_name}: deleted")
        self._state.pop("vpc", None)

        key = self._state.get("ssh_key", {})
        if key.get("created") and self.api.delete_ssh_key(key["id"]):
            changes.append(f"SSH key {self.resource_name}: deleted (id {key['id']})")
        self._state.pop("ssh_key", None)

        left = [f"droplet {d.name}" for d in self.api.list_droplets(self.tag)]
        if self._find_named(self.api.list_firewalls()):
            left.append(f"firewall {self.resource_name}")
        if left:
            raise SwarmsmithError("destroy incomplete, still present: " + ", ".join(left))
        for tag in (self.tag, role_tag(self.cluster, "manager"), role_tag(self.cluster, "worker")):
            self.api.delete_tag(tag)
        return changes

    def _ours(self, kind: str, items: list[dict]) -> str | None:
        """Id of the resource swarmsmith created, if it still exists."""
        record = self._state.get(kind)
        if record and not record.get("created"):
            return None                                   # the user's, given in the settings
        if record and record["id"] in {i["id"] for i in items}:
            return record["id"]
        named = self._find_named(items)
        return named["id"] if named else None

    def _delete_vpc(self, vpc_id: str, deadline: float) -> None:
        from .do_api import DigitalOceanError
        while True:
            try:
                self.api.delete_vpc(vpc_id)
                return
            except DigitalOceanError as e:
                # members are released a little after their droplets are deleted
                if e.status not in (403, 409) or self.clock() >= deadline:
                    raise
                self.sleep(self.settings["poll_interval"])
