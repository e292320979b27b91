"""Compose model -> swarm specs, in the JSON shape the Engine API takes (and
`docker service inspect` shows under Spec), as `docker stack deploy` builds
them.

Deliberate differences from the CLI, each marked QUIRK below:
- secrets/configs read from files (or with a driver) get versioned names,
  `<stack>_<key>-<10 hex>`, the hex being a salted sha256 of everything swarm
  cannot update in place (data, driver, template driver); for secrets an
  HMAC-SHA256 under the cluster's naming key instead (engine_api.py
  secret_naming_key), so a name in a log gives no way to test guesses of a
  short secret offline.  A content change
  makes a new object instead of a refused update (swarm cannot update the data of a
  secret or config in place).  An
  explicit `name:` is kept as written (the user chose that name).  Services
  still see the file under `target`, default the compose key.
- Object IDs are not known offline: SecretID/ConfigID and
  CredentialSpec.Config hold `<id:NAME>` placeholders; stacks/plan_apply/apply.py
  resolve_ids() swaps them for real IDs once the objects exist.
- dns entries that are not IP addresses are refused by validate.py instead of
  dropped.
Images: the Go client's `:latest` rule is applied (familiar form); digests are
not resolved (like `--resolve-image never`).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Callable

from stacks.compose.loader import Compose
from stacks.compose.values import parse_cpus, parse_duration, parse_memory
from stacks.images.references import familiar_image

STACK_LABEL = "com.docker.stack.namespace"
IMAGE_LABEL = "com.docker.stack.image"
CONTENT_LABEL = "com.swarmsmith.content-hash"
DEFAULT_NETWORK = "default"
DEFAULT_DRIVER = "overlay"


def placeholder(name: str) -> str:
    return f"<id:{name}>"


def is_placeholder(value) -> bool:
    return isinstance(value, str) and value.startswith("<id:") and value.endswith(">")


@dataclass
class StackSpec:
    stack: str
    services: dict = field(default_factory=dict)      # full name -> ServiceSpec
    networks: dict = field(default_factory=dict)      # name -> network create body
    secrets: dict = field(default_factory=dict)       # name -> SecretSpec (with Data)
    configs: dict = field(default_factory=dict)       # name -> ConfigSpec (with Data)
    external_networks: list = field(default_factory=list)
    external_secrets: list = field(default_factory=list)
    external_configs: list = field(default_factory=list)
    # (kind, versioned name) -> the name `docker stack deploy` gives that object
    # (`<stack>_<key>`), so a plan can take over what the CLI made (stacks/plan_apply/takeover.py)
    cli_names: dict = field(default_factory=dict)


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _ns(value) -> int | None:
    return None if value is None else parse_duration(value)


def convert(compose: Compose, stack: str, *, versioned_objects: bool = True,
            secret_key: bytes | Callable[[], bytes] | None = None) -> StackSpec:
    """`secret_key`: the key itself, or a function that gives it, called only when the stack
    has a secret with content (reading the cluster's key costs two calls to the manager)."""
    c = _Converter(compose.model, stack, versioned_objects, secret_key)
    return c.run()


class _Converter:
    def __init__(self, model: dict, stack: str, versioned: bool,
                 secret_key: bytes | Callable[[], bytes] | None):
        self.m, self.stack, self.versioned = model, stack, versioned
        self._secret_key = secret_key
        self.out = StackSpec(stack)
        self.secret_names: dict = {}
        self.config_names: dict = {}

    def secret_key(self) -> bytes | None:
        if callable(self._secret_key):
            self._secret_key = self._secret_key()
        return self._secret_key

    def scope(self, key: str) -> str:
        return f"{self.stack}_{key}"

    def labels(self, labels: dict | None) -> dict:
        return {**(labels or {}), STACK_LABEL: self.stack}

    def run(self) -> StackSpec:
        for kind, names, store, ext in (
                ("secrets", self.secret_names, self.out.secrets, self.out.external_secrets),
                ("configs", self.config_names, self.out.configs, self.out.external_configs)):
            for key, obj in sorted((self.m.get(kind) or {}).items()):
                names[key] = self.file_object(kind, key, obj, store, ext)
        used = set()
        for key, svc in sorted((self.m.get("services") or {}).items()):
            spec = self.service(key, svc)
            self.out.services[spec["Name"]] = spec
            used |= set(svc.get("networks") or {DEFAULT_NETWORK: None})
        for key in sorted(used):
            self.network(key)
        return self.out

    # --- networks -----------------------------------------------------------------
    def network_target(self, key: str) -> str:
        cfg = (self.m.get("networks") or {}).get(key) or {}
        if cfg.get("external"):
            return cfg.get("name") or key
        return cfg.get("name") or self.scope(key)

    def network(self, key: str) -> None:
        cfg = (self.m.get("networks") or {}).get(key) or {}
        name = self.network_target(key)
        if cfg.get("external"):
            self.out.external_networks.append(name)
            return
        body = {"Name": name, "Driver": cfg.get("driver") or DEFAULT_DRIVER,
                "Options": cfg.get("driver_opts") or None,
                "Internal": bool(cfg.get("internal")),
                "Attachable": bool(cfg.get("attachable")),
                "Labels": self.labels(cfg.get("labels"))}
        ipam = cfg.get("ipam") or {}
        if ipam.get("driver") or ipam.get("config"):
            body["IPAM"] = _drop_none({"Driver": ipam.get("driver") or None,
                                       "Config": [{"Subnet": c["subnet"]}
                                                  for c in ipam.get("config") or []
                                                  if c.get("subnet")] or None})
        self.out.networks[name] = _drop_none(body)

    # --- secrets and configs --------------------------------------------------------
    def file_object(self, kind, key, obj, store, externals) -> str:
        if obj.get("external"):
            name = obj.get("name") or key
            externals.append(name)
            return name
        data = b""
        if obj.get("file"):
            with open(obj["file"], "rb") as fh:
                data = fh.read()
        spec = {"Labels": self.labels(obj.get("labels")),
                "Data": base64.b64encode(data).decode()}
        if kind == "secrets" and obj.get("driver"):
            spec["Data"] = ""
            spec["Driver"] = _drop_none({"Name": obj["driver"],
                                         "Options": obj.get("driver_opts") or None})
        if obj.get("template_driver"):
            spec["Templating"] = {"Name": obj["template_driver"]}
        digest = content_hash(self.stack, key, data, spec.get("Driver"), spec.get("Templating"),
                              self.secret_key() if kind == "secrets" else None)
        spec["Labels"][CONTENT_LABEL] = digest
        name = obj.get("name") or self.scope(key)
        if self.versioned and not obj.get("name"):
            self.out.cli_names[(kind[:-1], versioned_name(name, digest))] = name
            name = versioned_name(name, digest)   # QUIRK: see module docstring
        store[name] = {"Name": name, **spec}
        return name

    def file_refs(self, kind: str, refs: list) -> list:
        names = self.secret_names if kind == "secrets" else self.config_names
        id_key, name_key = ("SecretID", "SecretName") if kind == "secrets" else (
            "ConfigID", "ConfigName")
        out = []
        for ref in refs:
            name = names[ref["source"]]
            mode = ref.get("mode")
            out.append({"File": {"Name": ref.get("target") or ref["source"],
                                 "UID": ref.get("uid") or "0", "GID": ref.get("gid") or "0",
                                 "Mode": 0o444 if mode is None else mode},
                        id_key: placeholder(name), name_key: name})
        return sorted(out, key=lambda r: r[name_key])

    # --- services -------------------------------------------------------------------
    def service(self, key: str, s: dict) -> dict:
        d = s.get("deploy") or {}
        container = _drop_none({
            "Image": familiar_image(s["image"]),
            "Labels": self.labels(s.get("labels")),
            "Command": s.get("entrypoint") or None,
            "Args": s.get("command") or None,
            "Hostname": s.get("hostname") or None,
            "Env": env_list(s.get("environment")),
            "Dir": s.get("working_dir") or None,
            "User": s.get("user") or None,
            "Privileges": {},
            "Init": s.get("init"),
            "TTY": s.get("tty") or None,
            "OpenStdin": s.get("stdin_open") or None,
            "ReadOnly": s.get("read_only") or None,
            "Mounts": [self.mount(v) for v in s.get("volumes") or []] or None,
            "StopSignal": s.get("stop_signal") or None,
            "StopGracePeriod": _ns(s.get("stop_grace_period")),
            "Healthcheck": healthcheck(s.get("healthcheck")),
            "Hosts": [f"{ip} {host}" for host, _, ip in
                      (h.partition(":") for h in s.get("extra_hosts") or [])] or None,
            "DNSConfig": _drop_none({"Nameservers": s.get("dns") or None,
                                     "Search": s.get("dns_search") or None}) or None,
            "Secrets": self.file_refs("secrets", s.get("secrets") or []) or None,
            "Configs": self.file_refs("configs", s.get("configs") or []) or None,
            "Isolation": s.get("isolation") or None,
            "Sysctls": s.get("sysctls") or None,
            "Ulimits": ulimits(s.get("ulimits")),
            "OomScoreAdj": s.get("oom_score_adj") or None,
        })
        container.update(capabilities(s.get("cap_add"), s.get("cap_drop")))
        cred = s.get("credential_spec")
        if cred:
            self.credential_spec(container, cred)
        task = _drop_none({
            "ContainerSpec": container,
            "Resources": resources(d.get("resources")),
            "RestartPolicy": restart_policy(d.get("restart_policy"), s.get("restart")),
            "Placement": placement(d.get("placement")),
            "Networks": self.attachments(key, s.get("networks")),
            "LogDriver": (_drop_none({"Name": s["logging"].get("driver") or None,
                                      "Options": s["logging"].get("options") or None})
                          if s.get("logging") is not None else None),
        })
        return _drop_none({
            "Name": self.scope(key),
            "Labels": {**(d.get("labels") or {}), STACK_LABEL: self.stack,
                       IMAGE_LABEL: s["image"]},
            "TaskTemplate": task,
            "Mode": mode(d),
            "UpdateConfig": update_config(d.get("update_config")),
            "RollbackConfig": update_config(d.get("rollback_config")),
            "EndpointSpec": endpoint_spec(d.get("endpoint_mode"), s.get("ports")),
        })

    def credential_spec(self, container: dict, cred: dict) -> None:
        if cred.get("config"):
            name = self.config_names[cred["config"]]
            container["Privileges"] = {"CredentialSpec": {"Config": placeholder(name)}}
            refs = container.setdefault("Configs", [])
            if not any(r["ConfigName"] == name and "Runtime" in r for r in refs):
                refs.append({"Runtime": {}, "ConfigID": placeholder(name), "ConfigName": name})
                refs.sort(key=lambda r: r["ConfigName"])
        else:
            container["Privileges"] = {"CredentialSpec": _drop_none(
                {"File": cred.get("file"), "Registry": cred.get("registry")})}

    def attachments(self, key: str, networks: dict | None) -> list:
        out = []
        for net, cfg in (networks or {DEFAULT_NETWORK: None}).items():
            cfg = cfg or {}
            target = self.network_target(net)
            aliases = list(cfg.get("aliases") or [])
            if target not in ("default", "bridge", "host", "none") and \
                    not target.startswith("container:"):
                aliases.append(key)  # the CLI adds the service key on user-defined networks
            out.append(_drop_none({"Target": target, "Aliases": aliases or None,
                                   "DriverOpts": cfg.get("driver_opts") or None}))
        return sorted(out, key=lambda n: n["Target"])

    def mount(self, v: dict) -> dict:
        kind = v.get("type") or "volume"
        out = _drop_none({"Type": kind, "Source": v.get("source") or None,
                          "Target": v.get("target"), "ReadOnly": v.get("read_only") or None,
                          "Consistency": v.get("consistency") or None})
        if kind == "bind" and (v.get("bind") or {}).get("propagation"):
            out["BindOptions"] = {"Propagation": v["bind"]["propagation"]}
        elif kind == "tmpfs" and v.get("tmpfs") is not None:
            out["TmpfsOptions"] = _drop_none({"SizeBytes": v["tmpfs"].get("size") or None})
        elif kind == "volume" and v.get("source"):
            top = (self.m.get("volumes") or {}).get(v["source"]) or {}
            vol = v.get("volume") or {}
            opts = _drop_none({"NoCopy": vol.get("nocopy") or None,
                               "Subpath": vol.get("subpath") or None})
            if top.get("external"):
                out["Source"] = top.get("name") or v["source"]
            else:
                out["Source"] = top.get("name") or self.scope(v["source"])
                opts["Labels"] = self.labels(top.get("labels"))
                if top.get("driver") or top.get("driver_opts") is not None:
                    opts["DriverConfig"] = _drop_none({"Name": top.get("driver") or None,
                                                       "Options": top.get("driver_opts")})
            out["VolumeOptions"] = opts
        return out


def versioned_name(base: str, digest: str) -> str:
    return f"{base}-{digest[:10]}"


def content_hash(stack: str, key: str, data: bytes, driver, templating,
                 secret_key: bytes | None = None) -> str:
    """sha256 of what swarm cannot update in place, salted with stack and key so
    equal contents in different stacks or keys do not share a hash; an HMAC
    under secret_key when one is given (secrets: see the module docstring)."""
    h = hmac.new(secret_key, digestmod=hashlib.sha256) if secret_key else hashlib.sha256()
    h.update(f"swarmsmith\0{stack}\0{key}\0".encode())
    h.update(json.dumps({"driver": driver, "templating": templating}, sort_keys=True).encode())
    h.update(b"\0")
    h.update(data)
    return h.hexdigest()


def env_list(env: dict | None) -> list | None:
    if not env:
        return None
    return sorted(k if v is None else f"{k}={v}" for k, v in env.items())


def healthcheck(hc: dict | None) -> dict | None:
    if hc is None:
        return None
    if hc.get("disable"):
        return {"Test": ["NONE"]}
    return _drop_none({"Test": hc.get("test") or None,
                       "Interval": _ns(hc.get("interval")) or None,
                       "Timeout": _ns(hc.get("timeout")) or None,
                       "Retries": hc.get("retries") or None,
                       "StartPeriod": _ns(hc.get("start_period")) or None,
                       "StartInterval": _ns(hc.get("start_interval")) or None})


def capabilities(add, drop) -> dict:
    def norm(caps):
        out = set()
        for c in caps or []:
            c = c.strip().upper()
            out.add(c if c == "ALL" or c.startswith("CAP_") else "CAP_" + c)
        return {"ALL"} if "ALL" in out else out
    a, d = norm(add), norm(drop)
    d -= a
    return _drop_none({"CapabilityAdd": sorted(a) or None, "CapabilityDrop": sorted(d) or None})


def ulimits(ul: dict | None) -> list | None:
    if not ul:
        return None
    out = []
    for name, v in sorted(ul.items()):
        soft, hard = (v, v) if isinstance(v, int) else (v["soft"], v["hard"])
        out.append({"Name": name, "Soft": soft, "Hard": hard})
    return out


def resources(r: dict | None) -> dict:
    r = r or {}
    out = {}
    if r.get("limits") is not None:
        lim = r["limits"]
        out["Limits"] = _drop_none({
            "NanoCPUs": parse_cpus(lim["cpus"]) if lim.get("cpus") else None,
            "MemoryBytes": parse_memory(lim["memory"]) if lim.get("memory") else None,
            "Pids": lim.get("pids") or None})
    if r.get("reservations") is not None:
        res = r["reservations"]
        out["Reservations"] = _drop_none({
            "NanoCPUs": parse_cpus(res["cpus"]) if res.get("cpus") else None,
            "MemoryBytes": parse_memory(res["memory"]) if res.get("memory") else None,
            "GenericResources": [{"DiscreteResourceSpec": {
                "Kind": g["discrete_resource_spec"]["kind"],
                "Value": g["discrete_resource_spec"]["value"]}}
                for g in res.get("generic_resources") or []] or None})
    return out


def restart_policy(rp: dict | None, legacy: str | None) -> dict | None:
    if rp is not None:
        return _drop_none({"Condition": rp.get("condition") or None,
                           "Delay": _ns(rp.get("delay")),
                           "MaxAttempts": rp.get("max_attempts"),
                           "Window": _ns(rp.get("window"))})
    if legacy in (None, "", "no"):
        return None
    if legacy in ("always", "unless-stopped"):
        return {"Condition": "any"}
    attempts = int(legacy.partition(":")[2] or 0)  # on-failure[:N]; validated before
    return _drop_none({"Condition": "on-failure", "MaxAttempts": attempts or None})


def placement(p: dict | None) -> dict:
    p = p or {}
    return _drop_none({
        "Constraints": p.get("constraints") or None,
        "Preferences": [{"Spread": {"SpreadDescriptor": x["spread"]}}
                        for x in p.get("preferences") or []] or None,
        "MaxReplicas": p.get("max_replicas_per_node") or None})


def mode(d: dict) -> dict:
    m = d.get("mode") or "replicated"
    replicas = d.get("replicas")
    if m == "global":
        return {"Global": {}}
    if m == "global-job":
        return {"GlobalJob": {}}
    if m == "replicated-job":
        return {"ReplicatedJob": _drop_none({"MaxConcurrent": replicas,
                                             "TotalCompletions": replicas})}
    return {"Replicated": _drop_none({"Replicas": replicas})}


def update_config(u: dict | None) -> dict | None:
    if u is None:
        return None
    return _drop_none({
        "Parallelism": u.get("parallelism", 1),
        "Delay": _ns(u.get("delay")) or None,
        "FailureAction": u.get("failure_action") or None,
        "Monitor": _ns(u.get("monitor")) or None,
        "MaxFailureRatio": u.get("max_failure_ratio") or None,
        "Order": u.get("order") or None})


def endpoint_spec(endpoint_mode: str | None, ports: list | None) -> dict:
    out = _drop_none({"Mode": endpoint_mode.lower() if endpoint_mode else None})
    pcs = [_drop_none({"Protocol": p.get("protocol") or None, "TargetPort": p["target"],
                       "PublishedPort": p.get("published") or None,
                       "PublishMode": p.get("mode") or None}) for p in ports or []]
    if pcs:
        out["Ports"] = sorted(pcs, key=lambda p: (p.get("PublishedPort", 0), p["TargetPort"],
                                                  p.get("Protocol", ""),
                                                  p.get("PublishMode", "")))
    return out
