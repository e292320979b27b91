"""`swarmsmith config -c FILE…`: the merged, interpolated stack as YAML, printed
only after it validated (warnings to stderr), in the form `docker stack config`
prints, so the two outputs can be diffed:

- keys in the order of the CLI's compose types (mappings such as services,
  labels and environment sorted), zero values left out where the CLI leaves
  them out (`read_only: false`), kept where it keeps them (`init: false`);
- durations in Go form (`90s` -> `1m30s`), memory sizes in bytes (as strings),
  file modes in decimal, short syntaxes expanded, single ulimits as numbers;
- bind sources and secret/config files absolute, `env_file` as written;
- external networks, volumes, secrets and configs with the `name:` the CLI
  resolves (the key when none is given);
- strings quoted as go yaml v3 quotes them (stacks/compose/yaml_source.py dump_like_go).

Keys the Docker CLI has no field for are still printed (`oom_score_adj` after
`networks`), so nothing written is hidden.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from stacks.compose.loader import Compose
from stacks.compose.values import format_duration, parse_duration, parse_memory
from stacks.compose.yaml_source import dump_like_go

# Field kinds, as the CLI's Go types marshal them:
#   "s" string/value, omitted when empty     "b" bool, omitted when false
#   "i" number, omitted when 0               "p" pointer: kept unless absent/None
#   "d" duration, omitted when 0             "pd" duration pointer, kept when 0
#   "m" memory size -> bytes as a string     "map" sorted mapping, omitted when empty
#   "l" list, omitted when empty             "any" printed as is when present
#   "sl" list of strings (numbers as text)
#   a tuple: a nested struct (omitted when all fields are empty)
#   ("ptr", struct): a nested struct pointer (`{}` when present but empty)
#   ("list", struct): list of structs        ("maps", struct): sorted map of structs

_PORT = (("mode", "s"), ("target", "i"), ("published", "i"), ("protocol", "s"))
_VOLUME = (("type", "s"), ("source", "s"), ("target", "s"), ("read_only", "b"),
           ("consistency", "s"),
           ("bind", ("ptr", (("propagation", "s"),))),
           ("volume", ("ptr", (("nocopy", "b"), ("subpath", "s")))),
           ("tmpfs", ("ptr", (("size", "i"),))),
           ("cluster", ("ptr", ())))
_FILE_REF = (("source", "s"), ("target", "s"), ("uid", "s"), ("gid", "s"), ("mode", "p"))
_UPDATE = (("parallelism", "p"), ("delay", "d"), ("failure_action", "s"), ("monitor", "d"),
           ("max_failure_ratio", "i"), ("order", "s"))
_DEPLOY = (
    ("mode", "s"), ("replicas", "p"), ("labels", "map"),
    ("update_config", ("ptr", _UPDATE)), ("rollback_config", ("ptr", _UPDATE)),
    ("resources", (("limits", ("ptr", (("cpus", "s"), ("memory", "m"), ("pids", "i")))),
                   ("reservations", ("ptr", (
                       ("cpus", "s"), ("memory", "m"),
                       ("generic_resources", ("list", (("discrete_resource_spec", ("ptr", (
                           ("kind", "any"), ("value", "any")))),)))))))),
    ("restart_policy", ("ptr", (("condition", "s"), ("delay", "pd"), ("max_attempts", "p"),
                                ("window", "pd")))),
    ("placement", (("constraints", "l"), ("preferences", ("list", (("spread", "s"),))),
                   ("max_replicas_per_node", "i"))),
    ("endpoint_mode", "s"))
_HEALTHCHECK = (("test", "l"), ("timeout", "pd"), ("interval", "pd"), ("retries", "p"),
                ("start_period", "pd"), ("start_interval", "pd"), ("disable", "b"))
_SERVICE = (
    ("build", "build"), ("cap_add", "l"), ("cap_drop", "l"), ("cgroupns_mode", "s"),
    ("cgroup_parent", "s"), ("command", "l"), ("configs", ("list", _FILE_REF)),
    ("container_name", "s"),
    ("credential_spec", (("config", "s"), ("file", "s"), ("registry", "s"))),
    ("depends_on", "l"), ("deploy", _DEPLOY), ("devices", "l"), ("dns", "l"),
    ("dns_search", "l"), ("domainname", "s"), ("entrypoint", "l"), ("environment", "map"),
    ("env_file", "l"), ("expose", "sl"), ("external_links", "l"), ("extra_hosts", "l"),
    ("hostname", "s"), ("healthcheck", ("ptr", _HEALTHCHECK)), ("image", "s"),
    ("init", "p"), ("ipc", "s"), ("isolation", "s"), ("labels", "map"), ("links", "l"),
    ("logging", ("ptr", (("driver", "s"), ("options", "map")))), ("mac_address", "s"),
    ("network_mode", "s"),
    ("networks", ("maps", (("aliases", "l"), ("ipv4_address", "s"), ("ipv6_address", "s"),
                           ("driver_opts", "map")))),
    ("oom_score_adj", "i"), ("pid", "s"), ("ports", ("list", _PORT)), ("privileged", "b"),
    ("read_only", "b"), ("restart", "s"), ("secrets", ("list", _FILE_REF)),
    ("security_opt", "l"), ("shm_size", "s"), ("stdin_open", "b"),
    ("stop_grace_period", "pd"), ("stop_signal", "s"), ("sysctls", "map"), ("tmpfs", "l"),
    ("tty", "b"), ("ulimits", "ulimits"), ("user", "s"), ("userns_mode", "s"),
    ("volumes", ("list", _VOLUME)), ("working_dir", "s"))
_IPAM = (("driver", "s"), ("config", ("list", (("subnet", "s"),))))
_NETWORK = (("name", "s"), ("driver", "s"), ("driver_opts", "map"), ("ipam", _IPAM),
            ("external", "b"), ("internal", "b"), ("attachable", "b"), ("labels", "map"))
_TOP_VOLUME = (("name", "s"), ("driver", "s"), ("driver_opts", "map"), ("external", "b"),
               ("labels", "map"))
_FILE_OBJECT = (("name", "s"), ("file", "s"), ("external", "b"), ("labels", "map"),
                ("driver", "s"), ("driver_opts", "map"), ("template_driver", "s"))


def _absent(v) -> bool:
    return v is None or v == "" or v == [] or v == {} or v is False or v == 0


def _value(kind, v):
    """The printed form of one field, or _SKIP."""
    if kind == "p":
        return _SKIP if v is None else v
    if kind == "any":
        return v
    if kind == "pd":
        return _SKIP if v is None else format_duration(parse_duration(v))
    if kind == "d":
        ns = parse_duration(v) if isinstance(v, str) else 0
        return format_duration(ns) if ns else _SKIP
    if kind == "m":
        size = parse_memory(v) if isinstance(v, str) else int(v or 0)
        return str(size) if size else _SKIP
    if kind == "sl":
        return [str(x) for x in v] if v else _SKIP
    if kind == "map":
        return dict(sorted(v.items())) if v else _SKIP
    if kind == "ulimits":
        return {k: (u if isinstance(u, int) else
                    {x: u[x] for x in ("soft", "hard") if u.get(x)})
                for k, u in sorted(v.items())} if v else _SKIP
    if kind == "build":
        b = {"context": v} if isinstance(v, str) else v
        return b or _SKIP
    if isinstance(kind, tuple) and kind and kind[0] == "ptr":
        return _SKIP if v is None else _struct(kind[1], v)
    if isinstance(kind, tuple) and kind and kind[0] == "list":
        return [_struct(kind[1], x) for x in v] if v else _SKIP
    if isinstance(kind, tuple) and kind and kind[0] == "maps":
        return {k: (None if x is None else _struct(kind[1], x))
                for k, x in sorted(v.items())} if v else _SKIP
    if isinstance(kind, tuple):
        out = _struct(kind, v or {})
        return out or _SKIP
    return _SKIP if _absent(v) else v


_SKIP = object()


def _struct(fields: tuple, data: dict) -> dict:
    out = {}
    for key, kind in fields:
        if key in data:
            v = _value(kind, data[key])
            if v is not _SKIP:
                out[key] = v
    # x- fields (and keys of later formats) after the known ones, sorted, as the CLI's
    # inline Extras are
    known = {k for k, _ in fields}
    for key in sorted(k for k in data if k not in known):
        if data[key] is not None:
            out[key] = _sorted_maps(data[key])
    return out


def _sorted_maps(v):
    """x- fields as the CLI prints them: plain Go maps, keys sorted at every level."""
    if isinstance(v, dict):
        return {k: _sorted_maps(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))}
    if isinstance(v, list):
        return [_sorted_maps(x) for x in v]
    return v


def _external_named(objects: dict, fields: tuple) -> dict:
    """Top-level objects; externals carry the name the CLI resolves for them."""
    out = {}
    for key, obj in sorted((objects or {}).items()):
        obj = dict(obj or {})
        if obj.get("external"):
            obj["name"] = obj.get("name") or key
        out[key] = _struct(fields, obj)
    return out


def config_document(compose: Compose) -> dict:
    m = compose.model
    out = {"version": m.get("version"),
           "services": {name: _struct(_SERVICE, svc or {})
                        for name, svc in sorted((m.get("services") or {}).items())}}
    for kind, fields in (("networks", _NETWORK), ("volumes", _TOP_VOLUME),
                         ("secrets", _FILE_OBJECT), ("configs", _FILE_OBJECT)):
        if m.get(kind):
            out[kind] = _external_named(m[kind], fields)
    for key in sorted(k for k in m if k not in out and
                      k not in ("networks", "volumes", "secrets", "configs")):
        out[key] = _sorted_maps(m[key])
    return out


@dataclass
class ConfigOptions:
    env_file: str | None = None     # ${VAR} values (default: .env beside the first file)
    strict: bool = False            # refuse keys swarm ignores


@dataclass
class ConfigResult:
    document: dict                  # the merged stack, in `docker stack config`'s shape
    warnings: list = field(default_factory=list)

    exit_code = 0

    def text(self) -> str:
        """The YAML `docker stack config` would print."""
        return dump_like_go(self.document)

    def to_dict(self) -> dict:
        return {"config": self.document, "warnings": self.warnings}


def config_stack(compose_files, options: ConfigOptions | None = None) -> ConfigResult:
    """Load, merge and check the files (no cluster needed); raises InputError (exit 2)."""
    from stacks.compose.loader import load
    from stacks.compose.validate import validate
    options = options or ConfigOptions()
    compose = load(list(compose_files), env_file=options.env_file)
    warnings = validate(compose, strict=options.strict)
    return ConfigResult(config_document(compose), warnings)
