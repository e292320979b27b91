"""Types of every key a stack file may hold (compose file format 3.x, as the
Docker CLI's JSON schema has it), checked per file after interpolation.

Each checker reports through `ctx.problems.add(path, message)` and never
raises, so one run lists every problem.  Keys added in a later 3.x version than
the file declares are refused, as the CLI's per-version schema does.
"""
from __future__ import annotations

import re

from stacks.compose.problems import Problems, describe
from stacks.compose.values import parse_cpus, parse_duration, parse_memory


class Ctx:
    def __init__(self, problems: Problems, version: tuple[int, int]):
        self.problems = problems
        self.version = version

    def bad(self, path, message):
        self.problems.add(path, message)


class T:
    def check(self, v, path, ctx: Ctx) -> None:
        raise NotImplementedError


class Any_(T):
    def check(self, v, path, ctx):
        pass


class Str(T):
    def __init__(self, what="a string", pattern: str | None = None, hint=""):
        self.what, self.rx, self.hint = what, re.compile(pattern) if pattern else None, hint

    def check(self, v, path, ctx):
        if not isinstance(v, str):
            ctx.bad(path, f"expected {self.what}, got {describe(v)}{self.hint}")
        elif self.rx and not self.rx.fullmatch(v):
            ctx.bad(path, f"expected {self.what}, got {describe(v)}")


class Int(T):
    def __init__(self, minimum=None, maximum=None):
        self.min, self.max = minimum, maximum

    def check(self, v, path, ctx):
        if isinstance(v, bool) or not isinstance(v, int):
            ctx.bad(path, f"expected an integer, got {describe(v)}")
        elif self.min is not None and v < self.min:
            ctx.bad(path, f"expected an integer >= {self.min}, got {v}")
        elif self.max is not None and v > self.max:
            ctx.bad(path, f"expected an integer <= {self.max}, got {v}")


class Num(T):
    def check(self, v, path, ctx):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            ctx.bad(path, f"expected a number, got {describe(v)}")


class Bool(T):
    def check(self, v, path, ctx):
        if not isinstance(v, bool):
            hint = " (write true or false; yes/no/on/off are strings)" if isinstance(v, str) else ""
            ctx.bad(path, f"expected a boolean, got {describe(v)}{hint}")


class Parsed(T):
    """A string that a parser must accept (duration, memory size, cpus)."""

    def __init__(self, what, parse, example):
        self.what, self.parse, self.example = what, parse, example

    def check(self, v, path, ctx):
        if not isinstance(v, str):
            ctx.bad(path, f"expected {self.what} as a string such as \"{self.example}\", "
                          f"got {describe(v)}")
            return
        try:
            value = self.parse(v)
        except ValueError:
            ctx.bad(path, f"expected {self.what} such as \"{self.example}\", got {describe(v)}")
            return
        if isinstance(value, int) and value < 0:
            ctx.bad(path, f"expected a non-negative {self.what}, got {describe(v)}")


DURATION = Parsed("a duration", parse_duration, "1m30s")
MEMORY = Parsed("a memory size", parse_memory, "512M")
CPUS = Parsed("a CPU count", parse_cpus, "0.5")


class Enum(T):
    def __init__(self, *values, fold=False):
        self.values, self.fold = values, fold

    def check(self, v, path, ctx):
        key = v.lower() if self.fold and isinstance(v, str) else v
        if key not in self.values:
            ctx.bad(path, "expected one of " + ", ".join(self.values) + f", got {describe(v)}")


class ListOf(T):
    def __init__(self, item: T, unique=False):
        self.item, self.unique = item, unique

    def check(self, v, path, ctx):
        if not isinstance(v, list):
            ctx.bad(path, f"expected a list, got {describe(v)}")
            return
        for i, x in enumerate(v):
            self.item.check(x, path + (i,), ctx)
        if self.unique:
            seen = set()
            for i, x in enumerate(v):
                if isinstance(x, (str, int)) and x in seen:
                    ctx.bad(path + (i,), f"duplicate entry {describe(x)}")
                seen.add(x) if isinstance(x, (str, int)) else None


class MapOf(T):
    def __init__(self, value: T, key_pattern: str | None = None):
        self.value, self.key_rx = value, re.compile(key_pattern) if key_pattern else None

    def check(self, v, path, ctx):
        if not isinstance(v, dict):
            ctx.bad(path, f"expected a mapping, got {describe(v)}")
            return
        for k, x in v.items():
            if not isinstance(k, str) or (self.key_rx and not self.key_rx.fullmatch(k)):
                ctx.bad(path + (k,), f"invalid key {describe(k)}")
                continue
            self.value.check(x, path + (k,), ctx)


class Obj(T):
    """A mapping with known keys; `since` gates keys by compose file version."""

    def __init__(self, keys: dict, required=(), since: dict | None = None, extensions=True):
        self.keys, self.required, self.since = keys, required, since or {}
        self.extensions = extensions

    def check(self, v, path, ctx):
        if not isinstance(v, dict):
            ctx.bad(path, f"expected a mapping, got {describe(v)}")
            return
        for k, x in v.items():
            if isinstance(k, str) and k.startswith("x-") and self.extensions:
                continue
            if k not in self.keys:
                ctx.bad(path + (k,), "unknown key" + _suggest(k, self.keys))
                continue
            need = self.since.get(k)
            if need and ctx.version < need:
                ctx.bad(path + (k,), f"needs compose file version {need[0]}.{need[1]} or "
                                     f"later (this file is {ctx.version[0]}.{ctx.version[1]})")
            self.keys[k].check(x, path + (k,), ctx)
        for k in self.required:
            if k not in v:
                ctx.bad(path + (k,), "is required")


def _suggest(key, known) -> str:
    import difflib
    close = difflib.get_close_matches(str(key), list(known), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


class OneOf(T):
    """Dispatch on the Python type of the value: {str: T, list: T, dict: T, ...}."""

    def __init__(self, what: str, **by_type: T):
        self.what, self.by = what, by_type

    def check(self, v, path, ctx):
        kind = ("bool" if isinstance(v, bool) else "int" if isinstance(v, int)
                else "float" if isinstance(v, float) else "str" if isinstance(v, str)
                else "list" if isinstance(v, list) else "dict" if isinstance(v, dict)
                else "null" if v is None else "?")
        t = self.by.get(kind)
        if t is None:
            ctx.bad(path, f"expected {self.what}, got {describe(v)}")
        else:
            t.check(v, path, ctx)


STR = Str()
INT = Int()
UINT = Int(minimum=0)
BOOL = Bool()
STR_LIST = ListOf(STR)
STR_OR_LIST = OneOf("a string or a list of strings", str=STR, list=STR_LIST)
SCALAR = OneOf("a string or a number", str=STR, int=INT, float=Num(), null=Any_())
# labels / environment / sysctls / extra_hosts: "KEY=VALUE" list or a mapping
LIST_OR_DICT = OneOf("a list of KEY=VALUE strings or a mapping",
                     list=ListOf(STR, unique=True), dict=MapOf(SCALAR))
OCTAL_MODE = Int(0, 0o7777)
SIZE_INT = Int(minimum=0)

_ULIMIT = OneOf("an integer or {soft, hard}", int=INT,
                dict=Obj({"soft": INT, "hard": INT}, required=("soft", "hard")))

_PORT_LONG = Obj({"mode": Enum("host", "ingress"), "target": Int(1, 65535),
                  "published": Int(0, 65535), "protocol": Enum("tcp", "udp", "sctp")},
                 required=("target",))
PORTS = ListOf(OneOf("a port such as \"8080:80\" or {target: 80, published: 8080}",
                     str=STR, int=Int(1, 65535), dict=_PORT_LONG))

_VOLUME_LONG = Obj({
    "type": Enum("volume", "bind", "tmpfs", "npipe"),
    "source": STR, "target": STR, "read_only": BOOL, "consistency": STR,
    "bind": Obj({"propagation": Enum("rprivate", "private", "rshared", "shared",
                                     "rslave", "slave")}),
    "volume": Obj({"nocopy": BOOL, "subpath": STR}),
    "tmpfs": Obj({"size": SIZE_INT}, since={"size": (3, 6)}),
}, required=("type",))
SERVICE_VOLUMES = ListOf(OneOf("a volume such as \"data:/var/lib/data\" or a mapping",
                               str=STR, dict=_VOLUME_LONG))

_FILE_REF = OneOf("a name or {source, target, uid, gid, mode}", str=STR,
                  dict=Obj({"source": STR, "target": STR, "uid": STR, "gid": STR,
                            "mode": OCTAL_MODE}, required=("source",)))

_HEALTHCHECK = Obj({"test": STR_OR_LIST, "interval": DURATION, "timeout": DURATION,
                    "retries": UINT, "start_period": DURATION, "start_interval": DURATION,
                    "disable": BOOL},
                   since={"start_period": (3, 4), "start_interval": (3, 12)})

_UPDATE = lambda actions: Obj({  # noqa: E731
    "parallelism": UINT, "delay": DURATION, "failure_action": Enum(*actions),
    "monitor": DURATION, "max_failure_ratio": Num(), "order": Enum("stop-first", "start-first"),
}, since={"order": (3, 4)})

_RES = lambda reservations: Obj({  # noqa: E731
    "cpus": CPUS, "memory": MEMORY,
    **({"generic_resources": ListOf(Obj({"discrete_resource_spec": Obj(
        {"kind": STR, "value": UINT}, required=("kind", "value"))}))} if reservations
       else {"pids": UINT}),
}, since={"generic_resources": (3, 5), "pids": (3, 9)})

DEPLOY = Obj({
    "mode": Enum("replicated", "global", "replicated-job", "global-job"),
    "replicas": UINT,
    "labels": LIST_OR_DICT,
    "update_config": _UPDATE(("continue", "rollback", "pause")),
    "rollback_config": _UPDATE(("continue", "pause")),
    "resources": Obj({"limits": _RES(False), "reservations": _RES(True)}),
    "restart_policy": Obj({"condition": Enum("none", "on-failure", "any"),
                           "delay": DURATION, "max_attempts": UINT, "window": DURATION}),
    "placement": Obj({"constraints": ListOf(Str("a constraint such as \"node.role==manager\"",
                                                r"\s*[^=!]+\s*(==|!=)\s*\S.*")),
                      "preferences": ListOf(Obj({"spread": STR}, required=("spread",))),
                      "max_replicas_per_node": UINT},
                     since={"preferences": (3, 3), "max_replicas_per_node": (3, 8)}),
    "endpoint_mode": Enum("vip", "dnsrr", fold=True),
}, since={"endpoint_mode": (3, 2), "rollback_config": (3, 7)})

_SERVICE_NET = OneOf("a mapping of network settings or null", null=Any_(), dict=Obj({
    "aliases": STR_LIST, "ipv4_address": STR, "ipv6_address": STR,
    "driver_opts": MapOf(SCALAR)}, since={"driver_opts": (3, 13)}))

# keys swarm does not use; accepted here with loose types, reported by validate.py
IGNORED_KEYS = ("build", "cgroupns_mode", "cgroup_parent", "devices", "domainname",
                "external_links", "ipc", "links", "mac_address", "network_mode", "pid",
                "privileged", "restart", "security_opt", "shm_size", "userns_mode")
DEPRECATED_KEYS = ("container_name", "expose")
SILENTLY_IGNORED_KEYS = ("depends_on", "tmpfs")
FORBIDDEN_KEYS = {"extends": "extends is not supported by docker stack",
                  "volume_driver": "use a top-level volume with driver: instead",
                  "volumes_from": "share a named volume instead",
                  "cpu_quota": "use deploy.resources.limits.cpus",
                  "cpu_shares": "use deploy.resources.limits.cpus",
                  "cpuset": "not supported by swarm services",
                  "mem_limit": "use deploy.resources.limits.memory",
                  "memswap_limit": "not supported by swarm services"}

SERVICE = Obj({
    **{k: Any_() for k in IGNORED_KEYS + DEPRECATED_KEYS},
    "restart": STR,  # values checked in validate.py: the legacy policy is still converted
    "privileged": BOOL,
    "depends_on": OneOf("a list or a mapping", list=STR_LIST, dict=MapOf(Any_())),
    "tmpfs": STR_OR_LIST,
    "image": STR,
    "command": STR_OR_LIST, "entrypoint": STR_OR_LIST,
    "environment": LIST_OR_DICT, "env_file": STR_OR_LIST,
    "labels": LIST_OR_DICT,
    "ports": PORTS,
    "networks": OneOf("a list of network names or a mapping", list=ListOf(STR, unique=True),
                      dict=MapOf(_SERVICE_NET)),
    "volumes": SERVICE_VOLUMES,
    "secrets": ListOf(_FILE_REF), "configs": ListOf(_FILE_REF),
    "healthcheck": _HEALTHCHECK,
    "user": STR, "working_dir": STR, "hostname": STR,
    "init": BOOL, "read_only": BOOL, "tty": BOOL, "stdin_open": BOOL,
    "cap_add": ListOf(STR, unique=True), "cap_drop": ListOf(STR, unique=True),
    "sysctls": LIST_OR_DICT,
    "ulimits": MapOf(_ULIMIT),
    "extra_hosts": LIST_OR_DICT,
    "dns": STR_OR_LIST, "dns_search": STR_OR_LIST,
    "stop_signal": STR, "stop_grace_period": DURATION,
    "logging": Obj({"driver": STR, "options": MapOf(SCALAR)}),
    "isolation": STR,
    "oom_score_adj": Int(-1000, 1000),
    "credential_spec": Obj({"config": STR, "file": STR, "registry": STR},
                           since={"config": (3, 8)}),
    "deploy": DEPLOY,
}, since={"secrets": (3, 1), "configs": (3, 3), "credential_spec": (3, 3),
          "isolation": (3, 5), "init": (3, 7), "cgroupns_mode": (3, 9),
          "oom_score_adj": (3, 13)})

_EXTERNAL = OneOf("a boolean or {name}", bool=BOOL, dict=Obj({"name": STR}))
_IPAM = Obj({"driver": STR, "config": ListOf(Obj({"subnet": STR})),
             "options": MapOf(STR)})

TOP = Obj({
    "version": Any_(),  # checked by loader.py before anything else
    "services": MapOf(SERVICE, key_pattern=r"[a-zA-Z0-9._-]+"),
    "networks": MapOf(OneOf("a mapping or null", null=Any_(), dict=Obj({
        "driver": STR, "driver_opts": MapOf(SCALAR), "ipam": _IPAM, "external": _EXTERNAL,
        "internal": BOOL, "attachable": BOOL, "labels": LIST_OR_DICT, "name": STR},
        since={"attachable": (3, 2), "name": (3, 5)}))),
    "volumes": MapOf(OneOf("a mapping or null", null=Any_(), dict=Obj({
        "driver": STR, "driver_opts": MapOf(SCALAR), "external": _EXTERNAL,
        "labels": LIST_OR_DICT, "name": STR}, since={"name": (3, 4)}))),
    "secrets": MapOf(Obj({"file": STR, "external": _EXTERNAL, "labels": LIST_OR_DICT,
                          "name": STR, "driver": STR, "driver_opts": MapOf(SCALAR),
                          "template_driver": STR},
                         since={"name": (3, 5), "driver": (3, 8), "driver_opts": (3, 8),
                                "template_driver": (3, 8)})),
    "configs": MapOf(Obj({"file": STR, "external": _EXTERNAL, "labels": LIST_OR_DICT,
                          "name": STR, "template_driver": STR},
                         since={"name": (3, 5), "template_driver": (3, 8)})),
}, since={"secrets": (3, 1), "configs": (3, 3)})

# `x-` extension fields need 3.4 (top level) like the CLI's schema
EXTENSIONS_SINCE = (3, 4)
