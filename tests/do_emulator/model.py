"""The emulated account: droplets, keys, tags, firewalls, VPCs, actions. No HTTP here.

Every handler takes (params, body) and returns (status, json_body or None). Shapes follow
DigitalOcean's API v2 documentation (droplet, network_v4, action, ssh_key, firewall, vpc, error).
"""
from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import threading
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

REGIONS = {"fra1": "Frankfurt 1", "ams3": "Amsterdam 3", "nyc3": "New York 3", "lon1": "London 1"}
REGION_FEATURES = ["backups", "ipv6", "metadata", "install_agent", "storage", "image_transfer"]
ANY_REGION = "nyc3"                      # where a create without a region lands
SIZES = {"s-1vcpu-1gb": (1024, 1, 25), "s-1vcpu-2gb": (2048, 1, 50), "s-2vcpu-4gb": (4096, 2, 80)}
IMAGES = {"ubuntu-24-04-x64": 170000001, "ubuntu-22-04-x64": 170000002, "debian-12-x64": 170000003}
PRIVATE_IMAGES = {190000001: "swarm-base-snapshot"}     # addressed by id only, as the API does
RFC1918 = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
MAX_NAMES = 10
CREATED_AT = "2024-01-01T00:00:00Z"

NAME_RE = re.compile(r"^[a-zA-Z0-9.-]{1,253}$")
TAG_RE = re.compile(r"^[a-zA-Z0-9_:-]{1,255}$")
FINGERPRINT_RE = re.compile(r"^([0-9a-f]{2}:){15}[0-9a-f]{2}$")


def request_id() -> str:
    return str(uuid.uuid4())


def error(status: int, error_id: str, message: str) -> tuple[int, dict]:
    return status, {"id": error_id, "message": message, "request_id": request_id()}


def not_found() -> tuple[int, dict]:
    return error(404, "not_found", "The resource you were accessing could not be found.")


def unprocessable(message: str) -> tuple[int, dict]:
    return error(422, "unprocessable_entity", message)


def key_fingerprint(public_key: str) -> str | None:
    """MD5 of the key blob, colon-separated, as DigitalOcean shows it; None if unparsable."""
    parts = public_key.strip().split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        return None
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return None
    digest = hashlib.md5(blob).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, 32, 2))


def iso_time(stamp: float) -> str:
    import datetime
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def region_json(slug: str) -> dict:
    """A region object with every field the API description marks required."""
    return {"slug": slug, "name": REGIONS[slug], "features": list(REGION_FEATURES),
            "available": True, "sizes": list(SIZES)}


def size_json(slug: str) -> dict:
    """A size object with every field the API description marks required."""
    memory, vcpus, disk = SIZES[slug]
    monthly = 6.0 * vcpus * memory / 1024
    return {"slug": slug, "memory": memory, "vcpus": vcpus, "disk": disk, "transfer": 1.0,
            "price_monthly": monthly, "price_hourly": round(monthly / 672, 5),
            "regions": list(REGIONS), "available": True, "description": "Basic"}


def default_host_factory(droplet_name: str, index: int) -> tuple[str, str]:
    """Fake addresses (documentation and DO-private ranges); creates nothing."""
    if index >= 250 * 250:
        raise ValueError("default host factory ran out of addresses")
    public = f"203.0.113.{index % 250 + 2}"
    private = f"10.130.{index // 250}.{index % 250 + 2}"
    return public, private


@dataclass
class Droplet:
    id: int
    name: str
    region: str
    size: str
    image: str
    tags: list[str]
    vpc_uuid: str
    features: list[str]
    created: float                       # emulator clock at creation
    ready_at: float                      # emulator clock when it may turn active
    action_id: int
    index: int
    addresses: Future | None = None      # -> (public_ip, private_ip)
    failed: str = ""
    errors_at: float | None = None       # emulator clock when its create action errors

    def errored(self, now: float) -> bool:
        return bool(self.failed) or (self.errors_at is not None and now >= self.errors_at)

    def is_active(self, now: float) -> bool:
        return (not self.failed and self.errors_at is None and now >= self.ready_at
                and self.addresses is not None and self.addresses.done()
                and self.addresses.exception() is None)


@dataclass
class Action:
    id: int
    type: str
    droplet_id: int | None
    region: str
    status: str = "in-progress"          # for create actions derived from the droplet
    started: float = 0.0                 # wall clock
    frozen: bool = False                 # the droplet is gone: status no longer derived


@dataclass
class Account:
    droplets: dict[int, Droplet] = field(default_factory=dict)
    actions: dict[int, Action] = field(default_factory=dict)
    keys: dict[int, dict] = field(default_factory=dict)
    tags: dict[str, None] = field(default_factory=dict)      # canonical capitalisation
    firewalls: dict[str, dict] = field(default_factory=dict)
    vpcs: dict[str, dict] = field(default_factory=dict)


class Model:
    """All state behind one lock. `clock` is the emulator's notion of now (seconds)."""

    def __init__(self, *, clock, activation_delay: float, host_factory, host_destroyer,
                 factory_in_background: bool, wall_clock=None):
        self.clock = clock
        self.wall_clock = wall_clock or clock
        self.activation_delay = activation_delay
        self.activation_delays: dict[str, float] = {}    # per droplet name, overrides the default
        self.action_errors: dict[str, float] = {}        # droplet name -> seconds until it errors
        self.list_lag = 0.0                               # seconds before a new droplet is listed
        self.actions_lag = False                          # the action history lags the same way
        self.reverse_create_links = False                 # create answers list actions backwards
        self.droplet_limit = 25
        self.base_url = ""                                # http://127.0.0.1:PORT (hrefs)
        self.host_factory = host_factory
        self.host_destroyer = host_destroyer
        self.lock = threading.RLock()
        self.account = Account()
        self.errors: list[str] = []                       # factory/destroyer failures
        self._next_droplet = 300000001
        self._next_action = 2000000001
        self._next_key = 4100001
        self._next_index = 0
        self._pool = ThreadPoolExecutor(max_workers=16) if factory_in_background else None
        for region in ("fra1", "ams3", "nyc3", "lon1"):
            self._add_vpc(f"default-{region}", region, "", _default_range(region), default=True)

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown(wait=True)

    # --- helpers --------------------------------------------------------------------------
    def _add_vpc(self, name, region, description, ip_range, default=False) -> dict:
        vpc_id = str(uuid.uuid4())
        vpc = {"id": vpc_id, "urn": f"do:vpc:{vpc_id}", "name": name, "description": description,
               "region": region, "ip_range": ip_range, "default": default, "created_at": CREATED_AT}
        self.account.vpcs[vpc_id] = vpc
        return vpc

    def _default_vpc(self, region: str) -> str:
        return next(v["id"] for v in self.account.vpcs.values()
                    if v["default"] and v["region"] == region)

    def _droplet_json(self, d: Droplet) -> dict:
        now = self.clock()
        active = d.is_active(now)
        networks = {"v4": [], "v6": []}
        if active:
            public, private = d.addresses.result()
            networks["v4"] = [
                {"ip_address": private, "netmask": "255.255.0.0", "gateway": None, "type": "private"},
                {"ip_address": public, "netmask": "255.255.255.0", "gateway": "203.0.113.1",
                 "type": "public"}]
        memory, vcpus, disk = SIZES[d.size]
        image_id = IMAGES.get(d.image) or next(i for i, n in PRIVATE_IMAGES.items() if n == d.image)
        public = d.image in IMAGES
        return {
            "id": d.id, "name": d.name, "memory": memory, "vcpus": vcpus, "disk": disk,
            "locked": not active, "status": "active" if active else "new", "kernel": None,
            "created_at": CREATED_AT, "features": list(d.features), "backup_ids": [],
            "next_backup_window": None, "snapshot_ids": [], "volume_ids": [],
            "image": {"id": image_id, "slug": d.image if public else None, "name": d.image,
                      "distribution": d.image.split("-")[0], "public": public,
                      "regions": list(REGIONS), "type": "base" if public else "snapshot"},
            "size": size_json(d.size), "size_slug": d.size, "networks": networks,
            "region": region_json(d.region),
            "tags": list(d.tags), "vpc_uuid": d.vpc_uuid}

    def _action_status(self, a: Action) -> str:
        if a.frozen or a.type != "create" or a.droplet_id not in self.account.droplets:
            return a.status
        d = self.account.droplets[a.droplet_id]
        now = self.clock()
        return "errored" if d.errored(now) else ("completed" if d.is_active(now)
                                                 else "in-progress")

    def _action_json(self, a: Action) -> dict:
        status = self._action_status(a)
        return {"id": a.id, "status": status, "type": a.type, "started_at": iso_time(a.started),
                "completed_at": None if status == "in-progress" else iso_time(a.started),
                "resource_id": a.droplet_id, "resource_type": "droplet",
                "region": region_json(a.region), "region_slug": a.region}

    def _tag_json(self, name: str) -> dict:
        count = sum(1 for d in self.account.droplets.values() if name in d.tags)
        return {"name": name, "resources": {"count": count,
                                            "droplets": {"count": count, "last_tagged_uri": ""}}}

    def canonical_tag(self, name: str) -> str:
        """Tag names are case stable: the capitalisation a tag was first made with is its name
        from then on (asking for `prod` when `PROD` exists gives `PROD`)."""
        return next((t for t in self.account.tags if t.lower() == name.lower()), name)

    # --- droplets -------------------------------------------------------------------------
    def list_droplets(self, params: dict, lag: bool = True) -> list[dict]:
        tag = params.get("tag_name")
        name = params.get("name")
        visible = self.clock() - (self.list_lag if lag else 0.0)
        return [self._droplet_json(d) for d in sorted(self.account.droplets.values(),
                                                      key=lambda d: d.id)
                if (not tag or tag in d.tags) and (not name or d.name == name)
                and d.created <= visible]

    def count_droplets(self) -> int:
        return len(self.account.droplets)

    def get_droplet(self, droplet_id: str):
        d = self.account.droplets.get(_int(droplet_id))
        return (200, {"droplet": self._droplet_json(d)}) if d else not_found()

    def validate_create(self, body: dict) -> tuple[list[str], dict] | tuple[int, dict]:
        if "names" in body and body.get("names") is not None:
            names = body["names"]
            if not isinstance(names, list) or not names:
                return unprocessable("names must be a non-empty list")
            if len(names) > MAX_NAMES:
                return unprocessable(f"You may only create up to {MAX_NAMES} Droplets at once.")
        elif body.get("name"):
            names = [body["name"]]
        else:
            return unprocessable("Name is required.")
        for n in names:
            if not isinstance(n, str) or not NAME_RE.match(n):
                return unprocessable(f"Name {n!r} is invalid: only a-z, A-Z, 0-9, . and - are allowed.")
        region = self._region(body.get("region"), body.get("vpc_uuid"))
        if region is None:
            return unprocessable("Region is not available.")
        body = {**body, "region": region}
        if body.get("size") not in SIZES:
            return unprocessable("Size is not available in this region.")
        image = body.get("image")
        if image not in IMAGES and image not in IMAGES.values() and image not in PRIVATE_IMAGES:
            return unprocessable("Image is invalid.")
        for key in body.get("ssh_keys") or []:
            if not self._find_key(str(key)):
                return unprocessable(f"SSH key {key} is invalid.")
        tags = body.get("tags") or []
        if not isinstance(tags, list) or not all(isinstance(t, str) and TAG_RE.match(t) for t in tags):
            return unprocessable("Tags must be strings of letters, digits, '_', ':' and '-'.")
        vpc = body.get("vpc_uuid")
        if vpc:
            v = self.account.vpcs.get(vpc)
            if not v:
                return unprocessable("VPC not found.")
            if v["region"] != body["region"]:
                return unprocessable("VPC is not in the Droplet's region.")
        if len(self.account.droplets) + len(names) > self.droplet_limit:
            return unprocessable("creating this/these droplet(s) will exceed your droplet limit")
        return names, body

    def _region(self, asked, vpc_uuid) -> str | None:
        """A slug, a slug's prefix (`nyc`: any of that city's regions) or nothing (any region;
        the VPC's when one is given), as the API description allows."""
        vpc_region = (self.account.vpcs.get(vpc_uuid) or {}).get("region") if vpc_uuid else None
        if asked is None:
            return vpc_region or ANY_REGION
        if not isinstance(asked, str):
            return None
        if asked in REGIONS:
            return asked
        matching = sorted(r for r in REGIONS if r.startswith(asked) and re.match(r"^[a-z]{3}$",
                                                                                  asked))
        if vpc_region in matching:
            return vpc_region
        return matching[0] if matching else None

    def create_droplets(self, body: dict, limit: int | None = None):
        """Creates all names (or only the first `limit` of them: the caller fakes a half-failure)."""
        checked = self.validate_create(body)
        if isinstance(checked[0], int):
            return checked
        names, body = checked
        image = body["image"] if body["image"] in IMAGES else PRIVATE_IMAGES.get(body["image"]) \
            or next(slug for slug, i in IMAGES.items() if i == body["image"])
        vpc = body.get("vpc_uuid") or self._default_vpc(body["region"])
        features = ["private_networking"] + (["monitoring"] if body.get("monitoring") else []) \
            + (["ipv6"] if body.get("ipv6") else [])
        tags = list(dict.fromkeys(self.canonical_tag(t) for t in body.get("tags") or []))
        for t in tags:
            self.account.tags.setdefault(t, None)
        created = []
        now = self.clock()
        for name in names[:limit] if limit is not None else names:
            d = Droplet(id=self._next_droplet, name=name, region=body["region"], size=body["size"],
                        image=image, tags=list(tags), vpc_uuid=vpc, features=features, created=now,
                        ready_at=now + self.activation_delays.get(name, self.activation_delay),
                        action_id=self._next_action, index=self._next_index)
            if name in self.action_errors:
                d.errors_at = now + self.action_errors.pop(name)
            self._next_droplet += 1
            self._next_action += 1
            self._next_index += 1
            self.account.droplets[d.id] = d
            self.account.actions[d.action_id] = Action(d.action_id, "create", d.id, d.region,
                                                       started=self.wall_clock())
            self._start_factory(d)
            created.append(d)
        return created

    def _start_factory(self, d: Droplet) -> None:
        def make():
            try:
                return tuple(self.host_factory(d.name, d.index))
            except BaseException as e:
                with self.lock:
                    d.failed = f"host factory failed: {e}"
                    self.errors.append(f"{d.name}: {d.failed}")
                raise
        if self._pool:
            d.addresses = self._pool.submit(make)
        else:
            fut: Future = Future()
            try:
                fut.set_result(make())
            except BaseException as e:
                fut.set_exception(e)
            d.addresses = fut

    def create_response(self, created: list[Droplet], single: bool) -> tuple[int, dict]:
        # the API does not promise the actions in the droplets' order
        actions = [{"id": d.action_id, "rel": "create",
                    "href": f"{self.base_url}/v2/actions/{d.action_id}"} for d in created]
        if self.reverse_create_links:
            actions.reverse()
        if single:
            return 202, {"droplet": self._droplet_json(created[0]), "links": {"actions": actions}}
        return 202, {"droplets": [self._droplet_json(d) for d in created],
                     "links": {"actions": actions}}

    def delete_droplet(self, droplet_id: str):
        d = self.account.droplets.get(_int(droplet_id))
        if not d:
            return not_found()
        for a in self.account.actions.values():
            if a.droplet_id == d.id and not a.frozen:
                # what the action came to stays in the history (an errored create stays errored)
                a.status, a.frozen = self._action_status(a), True
        destroy = Action(self._next_action, "destroy", d.id, d.region, status="completed",
                         started=self.wall_clock(), frozen=True)
        self._next_action += 1
        self.account.actions[destroy.id] = destroy
        del self.account.droplets[d.id]
        self._destroy_host(d)
        return 204, None

    def _destroy_host(self, d: Droplet) -> None:
        if not self.host_destroyer:
            return
        try:
            if d.addresses is not None:
                d.addresses.exception()  # waits for a factory still running
            self.host_destroyer(d.name)
        except BaseException as e:
            self.errors.append(f"{d.name}: host destroyer failed: {e}")

    def droplet_actions(self, droplet_id: str):
        d = self.account.droplets.get(_int(droplet_id))
        if not d:
            return not_found()
        return 200, [self._action_json(a) for a in self.account.actions.values()
                     if a.droplet_id == d.id]

    def get_action(self, action_id: str, droplet_id: str | None = None):
        a = self.account.actions.get(_int(action_id))
        if not a or (droplet_id is not None and a.droplet_id != _int(droplet_id)):
            return not_found()
        return 200, {"action": self._action_json(a)}

    def list_actions(self) -> list[dict]:
        """Newest first, as the account's action history reads; with `actions_lag` an action
        shows up there only `list_lag` seconds after it started (GET by id sees it at once)."""
        visible = self.wall_clock() - (self.list_lag if self.actions_lag else 0.0)
        return [self._action_json(a) for a in sorted(self.account.actions.values(),
                                                       key=lambda a: -a.id)
                if a.started <= visible]

    # --- ssh keys -------------------------------------------------------------------------
    def _find_key(self, ident: str) -> dict | None:
        for k in self.account.keys.values():
            if str(k["id"]) == ident or k["fingerprint"] == ident:
                return k
        return None

    def list_keys(self) -> list[dict]:
        return [dict(k) for k in self.account.keys.values()]

    def get_key(self, ident: str):
        k = self._find_key(ident)
        return (200, {"ssh_key": dict(k)}) if k else not_found()

    def create_key(self, body: dict):
        name, public_key = body.get("name"), body.get("public_key")
        if not name or not isinstance(name, str):
            return unprocessable("Name is required.")
        fp = key_fingerprint(public_key or "") if isinstance(public_key, str) else None
        if not fp:
            return unprocessable("Key invalid type, we support 'ssh-rsa', 'ssh-ed25519' and ECDSA keys.")
        if self._find_key(fp):
            return unprocessable("SSH Key is already in use on your account")
        key = {"id": self._next_key, "fingerprint": fp, "public_key": public_key.strip(), "name": name}
        self._next_key += 1
        self.account.keys[key["id"]] = key
        return 201, {"ssh_key": dict(key)}

    def delete_key(self, ident: str):
        k = self._find_key(ident)
        if not k:
            return not_found()
        del self.account.keys[k["id"]]
        return 204, None

    # --- tags -----------------------------------------------------------------------------
    def list_tags(self) -> list[dict]:
        return [self._tag_json(t) for t in self.account.tags]

    def create_tag(self, body: dict):
        name = body.get("name")
        if not isinstance(name, str) or not TAG_RE.match(name):
            return unprocessable("Tag name must be letters, digits, '_', ':' and '-'.")
        name = self.canonical_tag(name)            # `prod` when `PROD` exists is `PROD`
        self.account.tags.setdefault(name, None)   # DigitalOcean answers 201 for an existing tag too
        return 201, {"tag": self._tag_json(name)}

    def get_tag(self, name: str):
        return (200, {"tag": self._tag_json(name)}) if name in self.account.tags else not_found()

    def delete_tag(self, name: str):
        if name not in self.account.tags:
            return not_found()
        del self.account.tags[name]
        for d in self.account.droplets.values():
            if name in d.tags:
                d.tags.remove(name)
        for fw in self.account.firewalls.values():
            if name in fw["tags"]:
                fw["tags"].remove(name)
        return 204, None

    def tag_resources(self, name: str, body: dict, add: bool):
        if name not in self.account.tags:
            return not_found()
        resources = body.get("resources")
        if not isinstance(resources, list) or not resources:
            return unprocessable("resources must be a non-empty list")
        for r in resources:
            if not isinstance(r, dict) or r.get("resource_type") != "droplet":
                return unprocessable("only droplet resources are supported by this emulator")
            d = self.account.droplets.get(_int(r.get("resource_id")))
            if not d:
                return unprocessable(f"droplet {r.get('resource_id')} not found")
        for r in resources:
            d = self.account.droplets[_int(r["resource_id"])]
            if add and name not in d.tags:
                d.tags.append(name)
            if not add and name in d.tags:
                d.tags.remove(name)
        return 204, None

    # --- firewalls ------------------------------------------------------------------------
    def _check_rules(self, rules, key: str) -> str:
        """What the schema table cannot say: ports per protocol, addresses, existing tags and
        droplets. The API names all ports "0" and answers 422 to "all"."""
        side = "sources" if key == "inbound_rules" else "destinations"
        for r in rules:
            ports = r.get("ports")
            if r["protocol"] != "icmp":
                if ports is None or not re.match(r"^(0|[1-9]\d{0,4}(-[1-9]\d{0,4})?)$", ports):
                    return f"invalid ports {ports!r}: a port, a range 'a-b', or '0' for all"
                low, _, high = ports.partition("-")
                if int(low) > 65535 or int(high or low) > 65535 or int(high or low) < int(low):
                    return f"invalid ports {ports!r}"
            targets = r[side]
            if not any(targets.get(k) for k in ("addresses", "droplet_ids", "load_balancer_uids",
                                                "kubernetes_ids", "tags")):
                return f"each of {key} needs at least one source or destination"
            for cidr in targets.get("addresses") or []:
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    return f"invalid address {cidr!r}"
            for tag in targets.get("tags") or []:
                if tag not in self.account.tags:
                    return f"tag {tag!r} does not exist"
            for i in targets.get("droplet_ids") or []:
                if i not in self.account.droplets:
                    return f"droplet {i} not found"
        return ""

    def _firewall_body(self, body: dict) -> dict | tuple[int, dict]:
        for key in ("inbound_rules", "outbound_rules"):
            problem = self._check_rules(body.get(key) or [], key)
            if problem:
                return unprocessable(problem)
        droplet_ids = body.get("droplet_ids") or []
        if any(i not in self.account.droplets for i in droplet_ids):
            return unprocessable("droplet not found")
        for tag in body.get("tags") or []:
            if tag not in self.account.tags:
                return unprocessable(f"tag {tag!r} does not exist")

        def normal(rule):
            # ICMP has no ports: the API answers "0" whatever was sent
            return {**rule, "ports": "0"} if rule["protocol"] == "icmp" else dict(rule)
        return {"name": body["name"],
                "inbound_rules": [normal(r) for r in body.get("inbound_rules") or []],
                "outbound_rules": [normal(r) for r in body.get("outbound_rules") or []],
                "droplet_ids": list(droplet_ids), "tags": list(body.get("tags") or [])}

    def create_firewall(self, body: dict):
        fields = self._firewall_body(body)
        if isinstance(fields, tuple):
            return fields
        fw = {"id": str(uuid.uuid4()), "status": "waiting", "created_at": CREATED_AT,
              "pending_changes": [], **fields}
        self.account.firewalls[fw["id"]] = fw
        out = dict(fw)
        fw["status"] = "succeeded"
        return 202, {"firewall": out}

    def update_firewall(self, fw_id: str, body: dict):
        fw = self.account.firewalls.get(fw_id)
        if not fw:
            return not_found()
        fields = self._firewall_body(body)
        if isinstance(fields, tuple):
            return fields
        fw.update(fields)
        return 200, {"firewall": dict(fw)}

    def get_firewall(self, fw_id: str):
        fw = self.account.firewalls.get(fw_id)
        return (200, {"firewall": dict(fw)}) if fw else not_found()

    def list_firewalls(self) -> list[dict]:
        return [dict(f) for f in self.account.firewalls.values()]

    def delete_firewall(self, fw_id: str):
        if self.account.firewalls.pop(fw_id, None) is None:
            return not_found()
        return 204, None

    def firewall_members(self, fw_id: str, body: dict, key: str, add: bool):
        fw = self.account.firewalls.get(fw_id)
        if not fw:
            return not_found()
        items = body.get(key)
        if not isinstance(items, list) or not items:
            return unprocessable(f"{key} must be a non-empty list")
        if key == "droplet_ids" and any(i not in self.account.droplets for i in items):
            return unprocessable("droplet not found")
        if key == "tags" and any(t not in self.account.tags for t in items):
            return unprocessable("tag does not exist")
        for i in items:
            if add and i not in fw[key]:
                fw[key].append(i)
            if not add and i in fw[key]:
                fw[key].remove(i)
        return 204, None

    # --- vpcs -----------------------------------------------------------------------------
    def list_vpcs(self) -> list[dict]:
        return [dict(v) for v in self.account.vpcs.values()]

    def create_vpc(self, body: dict):
        name, region = body.get("name"), body.get("region")
        if not isinstance(name, str) or not re.match(r"^[a-zA-Z0-9-]{1,255}$", name):
            return unprocessable("name must be letters, digits and '-'")
        if region not in REGIONS:
            return unprocessable("Region is not available.")
        if any(v["name"] == name for v in self.account.vpcs.values()):
            return unprocessable("A VPC with this name already exists.")
        ip_range = body.get("ip_range") or f"10.{200 + len(self.account.vpcs) % 50}.0.0/20"
        try:
            net = ipaddress.ip_network(ip_range)
        except ValueError:
            return unprocessable("ip_range is invalid")
        if not any(net.subnet_of(n) for n in RFC1918 if n.version == net.version):
            return unprocessable("ip_range must lie in an RFC 1918 private range")
        if net.prefixlen > 28 or net.prefixlen < 16:
            return unprocessable("ip_range may be no smaller than /28 and no larger than /16")
        if any(net.overlaps(ipaddress.ip_network(v["ip_range"]))
               for v in self.account.vpcs.values()):
            return unprocessable("ip_range overlaps another network of the account")
        vpc = self._add_vpc(name, region, body.get("description") or "", ip_range)
        return 201, {"vpc": dict(vpc)}

    def get_vpc(self, vpc_id: str):
        v = self.account.vpcs.get(vpc_id)
        return (200, {"vpc": dict(v)}) if v else not_found()

    def patch_vpc(self, vpc_id: str, body: dict):
        v = self.account.vpcs.get(vpc_id)
        if not v:
            return not_found()
        for key in ("name", "description"):
            if key in body:
                v[key] = body[key]
        return 200, {"vpc": dict(v)}

    def delete_vpc(self, vpc_id: str):
        v = self.account.vpcs.get(vpc_id)
        if not v:
            return not_found()
        if v["default"]:
            return error(403, "forbidden", "Cannot delete the default VPC.")
        if any(d.vpc_uuid == vpc_id for d in self.account.droplets.values()):
            return error(403, "forbidden", "Cannot delete a VPC with members.")
        del self.account.vpcs[vpc_id]
        return 204, None


def _default_range(region: str) -> str:
    return {"fra1": "10.114.0.0/20", "ams3": "10.110.0.0/20", "nyc3": "10.108.0.0/20",
            "lon1": "10.106.0.0/20"}[region]


def _int(value) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1
