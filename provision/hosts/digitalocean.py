"""The `digitalocean` provider: droplets for a cluster, idempotent by tag.

Every droplet carries the cluster tag `swarmsmith:<cluster>` from its create request on, so a
listing by that tag is the journal: a re-run after any failure sees what exists and creates only
the rest. Role tags (`swarmsmith:<cluster>:manager|worker`) are added after creation, so one create
request can hold managers and workers alike; a missing role tag is repaired on every run.

Each run that creates droplets also tags them `swarmsmith:<cluster>:run-<id>`, so a droplet made
twice (a create whose answer was lost, sent again before the first showed up) can be told apart:
one copy per name is kept (the one already handed to the swarm, else an active one) and the
others are destroyed at the poll or the run that sees them.

State (`provider.state`, a small dict the inventory persists) records what swarmsmith created, so
destroy() removes the VPC, firewall and SSH key only when they are ours. Without a record, a
firewall or VPC named `swarmsmith-<cluster>` counts as ours (that name is our namespace).
"""
from __future__ import annotations

import logging
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor

from inventory.digitalocean_settings import (ALL, NAME_RE, md5_fingerprint,  # noqa: F401
                                             validate_settings)

from ..base.errors import InputError, SwarmsmithError, TimeoutError_, UnreachableError
from ..base.hosts import Host, WantedHost

log = logging.getLogger("swarmsmith.digitalocean")

MAX_PER_CREATE = 10
CREATE_ATTEMPTS = 3
# The action history is searched back to this long before our oldest create was sent: our clock
# and DigitalOcean's may disagree by a little.
CLOCK_SKEW = 120.0
OWN_ACTIONS_PER_POLL = 5      # droplets whose create is not in the history: read their own
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


def run_tag(cluster: str, run_id: str) -> str:
    return f"swarmsmith:{cluster}:run-{run_id}"


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
                 file: str | None = None, on_state=None, run_id: str | None = None):
        """`on_state(state)` is called whenever the state must reach disk before the next
        request: names are recorded there before their create is sent (see _create).
        `run_id` names this run's tag (random unless given)."""
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
        self.run_tag = run_tag(cluster_name, run_id or secrets.token_hex(4))
        self.resource_name = f"swarmsmith-{cluster_name}"
        self.file = file
        self.warnings: list[str] = []   # said to the user beside the changes (account warning)
        # droplets known by id that the tagged list does not show yet (a list lags behind a
        # create): from create answers, GETs of recorded ids, and the action history
        self._unlisted: dict = {}
        self._listed: list = []
        self._deleted: set[int] = set()
        self._looked: set[int] = set()   # droplet ids read once by id in this run
        self._own_turn = 0

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
        """One tagged list call; then the cluster's droplets by name, and the other copies of
        any name made twice. Droplets a record names by id but the list does not show yet are
        read by id, once a run."""
        self._listed = [d for d in self.api.list_droplets(self.tag) if d.id not in self._deleted]
        listed = {d.id for d in self._listed}
        for name, record in list(self._creating().items()):
            droplet_id = int(record.get("id") or 0)
            if not droplet_id or droplet_id in listed or droplet_id in self._unlisted \
                    or droplet_id in self._looked or droplet_id in self._deleted:
                continue
            self._looked.add(droplet_id)
            d = self._get_droplet(droplet_id)
            if d is None:
                self._forget([name])        # deleted since: the name is simply missing
            else:
                self._unlisted[d.id] = d
        return self._group()

    def _get_droplet(self, droplet_id: int):
        from .do_api import DigitalOceanNotFound
        try:
            return self.api.get_droplet(droplet_id)
        except DigitalOceanNotFound:
            return None

    def _group(self) -> tuple[dict, list]:
        """By name, the copy to keep: the one handed out before (it may be in the swarm), else
        an active one, else the one a create answer of ours named, else the oldest."""
        listed = {d.id: d for d in self._listed if d.id not in self._deleted}
        for droplet_id in [i for i in self._unlisted if i in listed or i in self._deleted]:
            del self._unlisted[droplet_id]
        groups: dict[str, list] = {}
        for d in sorted([*listed.values(), *self._unlisted.values()], key=lambda d: d.id):
            groups.setdefault(d.name, []).append(d)
        in_use, creating = self._in_use(), self._creating()
        by_name, copies = {}, []
        for name, ds in groups.items():
            answered = int((creating.get(name) or {}).get("id") or 0)
            keep = min(ds, key=lambda d: (d.id != in_use.get(name), not d.ready,
                                          d.id != answered, d.id))
            by_name[name] = keep
            copies += [d for d in ds if d is not keep]
        return by_name, copies

    def _in_use(self) -> dict:
        """name -> id of the droplet each name was handed out as (by the last run's end)."""
        return {n: int(i) for n, i in (self._state.get("droplets") or {}).items()}

    def _remove_copies(self, by_name: dict, copies: list, changes: list, progress) -> None:
        """Droplets made twice: the copy by_name holds stays, the others are destroyed (no
        --prune needed: nobody asked for them, and each is billed)."""
        creating = self._creating()
        for d in copies:
            keep = by_name[d.name]
            answered = int((creating.get(d.name) or {}).get("id") or 0)
            why = ("in use" if self._in_use().get(d.name) == keep.id
                   else "active" if keep.ready and not d.ready
                   else "named by a create answer" if keep.id == answered else "older")
            made = next((t.split(":")[-1] for t in d.tags if t.startswith(self.tag + ":run-")),
                        "")
            self._say(progress, d.name, f"made twice: destroying id {d.id}, keeping id {keep.id}")
            self.api.delete_droplet(d.id)
            self._deleted.add(d.id)
            self._unlisted.pop(d.id, None)
            changes.append(f"droplet {d.name} (id {d.id}{', ' + made if made else ''}): a second "
                           f"copy (a create sent again after its answer was lost); destroyed, "
                           f"id {keep.id} kept ({why})")

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
            if waiting and self._find_lost(waiting, progress):
                by_name, duplicates = self._group()
                waiting = [n for n in waiting if n not in by_name]
            if not waiting or self.clock() >= give_up:
                return by_name, duplicates
            oldest = min(self._creating()[n].get("at", 0) for n in waiting)
            left = oldest + s["list_lag"] - self.wall_clock()
            self.sleep(max(0.0, min(s["poll_interval"], left)))

    def _history(self, names: list[str], *, lost: list[str]):
        """Create actions of the account's recent history by droplet id: back to the first
        action our creates of `names` were answered with, and, for names whose answer was lost
        (`lost`), back to a little before their create was sent."""
        creating = self._creating()
        floors = [int(creating[n]["floor"]) for n in names if (creating.get(n) or {}).get("floor")]
        sent = [creating[n]["at"] for n in lost if "at" in (creating.get(n) or {})]
        since = min(sent) - CLOCK_SKEW if sent else None
        history, complete = self.api.recent_actions(
            back_to_id=min(floors) if floors else None, since=since)
        creates = {}
        for a in reversed(history):               # oldest first: a droplet's latest create wins
            if a.type == "create" and a.resource_id is not None:
                creates[a.resource_id] = a
        return creates, complete, since

    def _find_lost(self, names: list[str], progress, creates=None, since=None) -> list:
        """Droplets of ours whose create answer was lost and that no list shows yet, found
        through the account's create actions (their resource_id) and one GET each."""
        if creates is None:
            creates, _, since = self._history(names, lost=names)
        waiting, found = set(names), []
        known = {d.id for d in self._listed} | set(self._unlisted) | self._deleted
        for droplet_id, action in sorted(creates.items(), reverse=True):
            if not waiting:
                break
            if droplet_id in known or droplet_id in self._looked or (
                    since is not None and action.started is not None and action.started < since):
                continue
            self._looked.add(droplet_id)
            d = self._get_droplet(droplet_id)
            if d is None or self.tag not in d.tags:
                continue                          # another cluster's, or gone
            self._unlisted[d.id] = d
            if d.name in waiting:
                waiting.discard(d.name)
                found.append(d)
                self._creating().setdefault(d.name, {"at": self.wall_clock()})["id"] = d.id
                self._say(progress, d.name, f"found by its create action {action.id} (id {d.id}); "
                                            "not listed yet")
        if found:
            self._save()
        return found

    def _check_account(self, wanted, by_name: dict, progress) -> list[str]:
        """Refuse before anything is made when DigitalOcean would refuse the droplets: the
        account's droplet limit, a locked account, an unverified email. A `warning` status is
        said (and returned as a plan line)."""
        account = self.api.get_account()
        status = account.get("status")
        message = str(account.get("status_message") or "").strip()
        if status == "locked":
            raise InputError("the DigitalOcean account is locked"
                             + (f" ({message})" if message else "")
                             + "; nothing was created: resolve it with DigitalOcean (control "
                             "panel or support), then run again", file=self.file)
        if account.get("email_verified") is False:
            raise InputError("the DigitalOcean account's email address is not verified; "
                             "nothing was created: verify it (DigitalOcean sent a link), then "
                             "run again", file=self.file)
        lines = []
        if status == "warning":
            note = "DigitalOcean account warning: " + (message or "(no message given)")
            self._say(progress, "digitalocean", note)
            if note not in self.warnings:
                self.warnings.append(note)
            lines.append(note)
        needed = [w.name for w in wanted if w.name not in by_name]
        if needed:
            limit = int(account.get("droplet_limit") or 0)
            have = self.api.count_droplets()
            free = max(0, limit - have)
            if len(needed) > free:
                raise InputError(
                    f"{len(needed)} droplet(s) to create, but the DigitalOcean account's droplet "
                    f"limit is {limit} and it has {have} droplet(s) already ({free} free); "
                    "nothing was created: ask DigitalOcean to raise the droplet limit (control "
                    "panel or support), or ask for fewer droplets (managers, workers)",
                    file=self.file)
        return lines

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
        by_name, duplicates = self._listing()
        s, changes = self.settings, self._check_account(wanted, by_name, None)
        if not self._find_key():
            changes.append(f"SSH key {self.resource_name}: register {s['ssh_key']}")
        if s["vpc"] == "create" and not self._find_named(self.api.list_vpcs()):
            changes.append(f"VPC {self.resource_name}: create in {s['region']}")
        for w in wanted:
            d = by_name.get(w.name)
            if d is None and self._recent(w.name):
                changes.append(f"droplet {w.name}: wait (a create was sent; not listed yet)")
            elif d is None:
                changes.append(f"droplet {w.name}: create ({w.role}, {s['size']}, {s['region']})")
            elif role_tag(self.cluster, w.role) not in d.tags:
                changes.append(f"droplet {w.name}: add tag {role_tag(self.cluster, w.role)}")
        changes += [f"droplet {d.name} (id {d.id}): a second copy; destroy (id "
                    f"{by_name[d.name].id} kept)" for d in duplicates]
        changes += self._extras_lines(wanted, by_name, prune, done=False)
        if s["firewall"]:
            inbound, outbound = firewall_rules(self.cluster, s)
            fw = self._find_named(self.api.list_firewalls())
            flag = ssh_anywhere_note(s["ssh_sources"])
            if fw is None:
                changes.append(f"firewall {self.resource_name}: create{flag}")
            elif not _same_rules(fw, inbound, outbound, [self.tag]):
                changes.append(f"firewall {self.resource_name}: update rules{flag}")
        return changes

    def _extras(self, wanted, by_name) -> list:
        names = {w.name for w in wanted}
        return [d for n, d in by_name.items() if n not in names]

    def _extras_lines(self, wanted, by_name, prune, done: bool) -> list[str]:
        lines = []
        for d in self._extras(wanted, by_name):
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
        by_name, duplicates = self._listing()
        self._check_account(wanted, by_name, progress)     # before anything costs money
        self._remove_copies(by_name, duplicates, changes, progress)
        key_id = self._ensure_key(changes, progress)
        vpc_id = self._ensure_vpc(changes, progress)
        in_flight = [w.name for w in wanted if w.name not in by_name and self._recent(w.name)]
        if in_flight:
            by_name, duplicates = self._await_listed(in_flight, progress)
            self._remove_copies(by_name, duplicates, changes, progress)
        missing = [w for w in wanted if w.name not in by_name]
        created = {w.name for w in missing}
        if missing:
            self._create(missing, key_id, vpc_id, changes, progress)
        if self.settings["firewall"]:
            self._ensure_firewall(changes, progress)
        if missing or not all(by_name[w.name].ready for w in wanted):
            by_name = self._wait_active(wanted, progress, changes)
        self._forget([w.name for w in wanted])
        self._state["droplets"] = {n: d.id for n, d in sorted(by_name.items())}
        self._save()
        self._ensure_role_tags(wanted, by_name, changes, created)
        extras = self._extras(wanted, by_name)
        if prune:
            for d in extras:
                self._say(progress, d.name, "destroying (not in the cluster file)")
                self.api.delete_droplet(d.id)
                self._state["droplets"].pop(d.name, None)
        changes += self._extras_lines(wanted, by_name, prune, done=True)
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
        tags = [self.tag, self.run_tag, *[t for t in s["tags"] if t != self.tag]]
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
                if getattr(e, "status", None) == 422 and "droplet limit" in str(e):
                    # checked before this run's first create: someone made droplets since
                    raise SwarmsmithError(
                        f"{e} (droplets were made in the account since this run checked its "
                        "limit; ask DigitalOcean to raise the droplet limit, or ask for fewer "
                        "droplets)") from None
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
            self._creating()[w.name] = {"at": at, "run": self.run_tag.split(":")[-1]}
        self._save()                      # on disk before the request: a killed run knows
        self._say(progress, "digitalocean", f"creating {', '.join(w.name for w in batch)}")
        try:
            made = self.api.create_droplets(
                [w.name for w in batch], region=s["region"], size=s["size"], image=s["image"],
                ssh_key_ids=[key_id], tags=tags, vpc_uuid=vpc_id, monitoring=s["monitoring"],
                ipv6=s["ipv6"], user_data=s["user_data"])
        except SwarmsmithError as e:
            if not getattr(e, "ambiguous", True):
                # refused (4xx): nothing was made, so the next run need not wait for the names
                self._forget([w.name for w in batch])
                self._save()
            raise
        for d in made:
            record = self._creating().setdefault(d.name, {"at": at})
            record["id"] = d.id
            if d.batch_actions:
                # which action is whose is read from the actions' resource_id (_check_actions);
                # the first of them bounds how far back the history is read
                record["floor"] = min(d.batch_actions)
            self._unlisted[d.id] = d          # known before any list shows it
            self._looked.add(d.id)
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

    def _wait_active(self, wanted, progress, changes: list) -> dict:
        """One tagged list call per poll interval until every wanted droplet is active; while
        one is not, one look at the account's recent actions too (_check_actions). A droplet
        made twice is destroyed at the poll that sees both copies."""
        s = self.settings
        deadline = self.clock() + s["wait_timeout"]
        reported: set[str] = set()
        while True:
            self.sleep(min(s["poll_interval"], max(0.0, deadline - self.clock())))
            by_name, duplicates = self._listing()
            self._remove_copies(by_name, duplicates, changes, progress)
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
                return by_name
            self._check_actions(pending, by_name, progress)
            if self.clock() >= deadline:
                states = [f"{n} ({by_name[n].status if n in by_name else 'not listed yet'})"
                          for n in pending]
                raise TimeoutError_(f"droplets not active after {s['wait_timeout']:g}s: "
                                    + ", ".join(states))

    def _check_actions(self, pending: list[str], by_name: dict, progress) -> None:
        """A create action that errored fails the run at this poll instead of when
        wait_timeout runs out (such a droplet stays `new` for good). Actions are tied to
        droplets by their resource_id, never by their position in a create answer. Droplets
        whose create answer was lost are found through the same history (_find_lost); a
        droplet known by id whose create completed but that no list shows yet is read by id."""
        ids = {by_name[n].id: n for n in pending if n in by_name}
        lost = [n for n in pending if n not in by_name and n in self._creating()]
        if not ids and not lost:
            return
        creates, _, since = self._history(pending, lost=lost)
        for d in self._find_lost(lost, progress, creates, since) if lost else []:
            ids[d.id] = d.name
        from .do_api import DigitalOceanNotFound
        unseen = sorted(i for i in ids if i not in creates)
        if unseen:                            # a few a poll, taking turns
            turn = self._own_turn % len(unseen)
            unseen = (unseen[turn:] + unseen[:turn])[:OWN_ACTIONS_PER_POLL]
            self._own_turn += len(unseen)
        for droplet_id in unseen:             # older than the history read, or not in it yet
            try:
                own = self.api.droplet_actions(droplet_id)
            except DigitalOceanNotFound:
                continue
            creates.update({droplet_id: a for a in own if a.type == "create"})
        for droplet_id, action in creates.items():
            if droplet_id in self._unlisted and droplet_id in ids and action.status == "completed":
                d = self._get_droplet(droplet_id)
                if d is not None:
                    self._unlisted[droplet_id] = d
        errored = {n: (i, creates[i]) for i, n in ids.items()
                   if i in creates and creates[i].status == "errored"}
        if not errored:
            return
        for name, (droplet_id, action) in errored.items():
            self._say(progress, name, f"create action {action.id} errored; destroying the "
                                      "droplet")
            self.api.delete_droplet(droplet_id)
            self._deleted.add(droplet_id)
            self._unlisted.pop(droplet_id, None)
            self._forget([name])
        self._save()
        others = [n for n in pending if n not in errored]
        detail = "; ".join(f"droplet {n}: create action {a.id} errored at DigitalOcean"
                           for n, (_, a) in errored.items())
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
        by_id.update({d.id: d.name for d in self._unlisted.values()})
        # handed out by earlier runs: a list may not show the newest of them yet
        by_id.update({i: n for n, i in self._in_use().items()})
        for droplet_id, name in sorted(by_id.items(), key=lambda i: i[1]):
            self._say(progress, name, "destroying")
            if self.api.delete_droplet(droplet_id):
                changes.append(f"droplet {name} (id {droplet_id}): destroyed")
        self._state.pop("creating", None)
        self._state.pop("droplets", None)
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
        runs = [t for t in self.api.list_tags() if t.startswith(self.tag + ":run-")]
        for tag in (self.tag, role_tag(self.cluster, "manager"), role_tag(self.cluster, "worker"),
                    *runs):
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
