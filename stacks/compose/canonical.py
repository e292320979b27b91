"""Bring one checked compose file into the one shape the rest of swarmsmith
uses (the shape `docker stack config` prints): short syntaxes expanded, lists
of KEY=VALUE turned into mappings, env_file entries read into `environment`,
relative paths made absolute against the working dir (first file's folder).
"""
from __future__ import annotations

import os
import re

from stacks.compose.envfiles import parse_kvfile, read_text
from stacks.compose.problems import Problems
from stacks.compose.values import split_command
from provision.base.errors import InputError


def go_sprint(v) -> str:
    """Go fmt.Sprint of a YAML scalar: 1.0 -> "1", 1e6 -> "1e+06", 2.5 -> "2.5"."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        if v != v or v in (float("inf"), float("-inf")):
            return {True: "NaN"}.get(v != v, "+Inf" if v > 0 else "-Inf")
        digits, exp = _shortest(v)
        if exp < -4 or exp >= 6:  # Go %v: shortest digits, %e when exponent < -4 or >= 6
            mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
            return f"{'-' if v < 0 else ''}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
        text = repr(abs(v))
        text = text[:-2] if text.endswith(".0") else text
        return ("-" if v < 0 else "") + text
    return str(v)


def _shortest(v: float) -> tuple[str, int]:
    r = repr(abs(v))
    if "e" in r:
        m, _, e = r.partition("e")
        return m.replace(".", "").rstrip("0") or "0", int(e)
    intpart, _, frac = r.partition(".")
    digits = (intpart + frac).lstrip("0")
    if intpart != "0":
        e = len(intpart) - 1
    else:
        e = -(len(frac) - len(frac.lstrip("0")) + 1)
    return digits.rstrip("0") or "0", e


def kv_mapping(value, allow_nil: bool) -> dict:
    """list_or_dict -> {key: str or None}.  List items without '=' are None
    (environment) or "" (labels); null mapping values likewise."""
    out: dict = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out[str(k)] = (None if allow_nil else "") if v is None else go_sprint(v)
    else:
        for item in value or []:
            k, sep, v = item.partition("=")
            out[k] = v if sep else (None if allow_nil else "")
    return out


def resolve_path(path: str, workdir: str) -> str:
    """A file the loader reads (env_file, secret and config files): `~` expanded,
    relative paths joined to the working dir."""
    if path.startswith("~"):
        path = os.path.expanduser(path)
    return abs_path(path, workdir)


def abs_path(path: str, workdir: str) -> str:
    """The CLI's absPath: an absolute path is kept exactly as written (swarm
    stores bind sources verbatim, so `/var/lib/docker/` keeps its slash); only a
    relative one is joined to the working dir and cleaned, as Go's filepath.Join
    does."""
    if _is_abs(path):
        return path
    return os.path.normpath(os.path.join(workdir, path))


def _is_abs(path: str) -> bool:
    # POSIX absolute, or a Windows one (drive letter or UNC) for a Windows daemon
    return path.startswith(("/", "\\\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", path))


def bind_source(path: str, workdir: str, env: dict) -> str:
    """A bind mount's source as the CLI's resolveVolumePaths makes it: a leading
    `~` is replaced by $HOME as text (no user lookup, no cleaning), then a path
    that is still relative is joined to the working dir."""
    if path.startswith("~") and "HOME" in env:
        path = env["HOME"] + path[1:]
    return abs_path(path, workdir)


def as_list(v) -> list:
    return [v] if isinstance(v, str) else list(v or [])


class Canon:
    def __init__(self, problems: Problems, workdir: str, env: dict, warnings: list):
        self.problems, self.workdir, self.env, self.warnings = problems, workdir, env, warnings

    def file(self, doc: dict) -> dict:
        out = dict(doc)
        services = {}
        for name, svc in (doc.get("services") or {}).items():
            services[name] = self.service(svc, ("services", name))
        out["services"] = services
        for kind in ("networks", "volumes", "secrets", "configs"):
            if kind in doc:
                out[kind] = {k: self.top_object(kind, v or {}, (kind, k))
                             for k, v in (doc[kind] or {}).items()}
        return out

    def top_object(self, kind: str, obj: dict, path) -> dict:
        obj = dict(obj)
        if "labels" in obj:
            obj["labels"] = kv_mapping(obj["labels"], allow_nil=False)
        for key in ("driver_opts",):
            if key in obj:
                obj[key] = {k: go_sprint(v) for k, v in (obj[key] or {}).items()}
        ext = obj.get("external")
        if isinstance(ext, dict):  # deprecated external.name -> name
            if ext.get("name"):
                if obj.get("name") and obj["name"] != ext["name"]:
                    self.problems.add(path + ("external", "name"),
                                      "conflicts with name:; use only name:")
                obj["name"] = ext["name"]
            obj["external"] = True
        if kind in ("secrets", "configs") and obj.get("file"):
            obj["file"] = resolve_path(obj["file"], self.workdir)
        return obj

    def service(self, svc: dict, path) -> dict:
        s = dict(svc)
        for key in ("command", "entrypoint"):
            if isinstance(s.get(key), str):
                try:
                    s[key] = split_command(s[key])
                except ValueError as exc:
                    self.problems.add(path + (key,), f"cannot split into words: {exc}")
        for key in ("dns", "dns_search", "tmpfs", "env_file"):
            if key in s:
                s[key] = as_list(s[key])
        if "env_file" in s or "environment" in s:
            s["environment"] = self.environment(s, path)
        # env_file entries stay as written (`docker stack config` prints them so);
        # environment() read them relative to the working dir
        for key in ("labels", "sysctls"):
            if key in s:
                s[key] = kv_mapping(s[key], allow_nil=False)
        if "extra_hosts" in s:
            s["extra_hosts"] = self.extra_hosts(s["extra_hosts"])
        if isinstance(s.get("networks"), list):
            s["networks"] = {n: None for n in s["networks"]}
        if "ports" in s:
            s["ports"] = [p for i, item in enumerate(s["ports"])
                          for p in self.port(item, path + ("ports", i))]
        if "volumes" in s:
            s["volumes"] = [self.volume(v, path + ("volumes", i))
                            for i, v in enumerate(s["volumes"])]
        for key in ("secrets", "configs"):
            if key in s:
                s[key] = [{"source": r} if isinstance(r, str) else dict(r) for r in s[key]]
        hc = s.get("healthcheck")
        if hc is not None and isinstance(hc.get("test"), str):
            s["healthcheck"] = {**hc, "test": ["CMD-SHELL", hc["test"]]}
        if "logging" in s and s["logging"].get("options") is not None:
            s["logging"] = {**s["logging"], "options": {k: go_sprint(v) for k, v in
                                                        s["logging"]["options"].items()}}
        if "deploy" in s and "labels" in s["deploy"]:
            s["deploy"] = {**s["deploy"], "labels": kv_mapping(s["deploy"]["labels"], False)}
        return s

    def environment(self, s: dict, path) -> dict:
        # CLI resolveEnvironment: env_file entries first, then `environment`; a
        # null or empty value takes the deploying environment's value when set.
        env: dict = {}
        merged_files: dict = {}
        for i, f in enumerate(as_list(s.get("env_file"))):
            try:
                merged_files.update(parse_kvfile(read_text(resolve_path(f, self.workdir), f),
                                                 f, self.env))
            except InputError as exc:
                self.problems.add(path + ("env_file", i), exc.message)  # names the env file
        for source in (merged_files, kv_mapping(s.get("environment"), allow_nil=True)):
            for k, v in source.items():
                env[k] = self.env[k] if (v is None or v == "") and k in self.env else v
        return dict(sorted(env.items()))

    def extra_hosts(self, value) -> list[str]:
        # CLI transformHostsList: "host:ip" or "host=ip"; [v6] brackets dropped;
        # entries without a separator dropped; a mapping sorted by host.
        if isinstance(value, dict):
            return [f"{k}:{go_sprint(v)}" for k, v in sorted(value.items())]
        out = []
        for item in value:
            m = re.match(r"^([^:=]+)[:=](.*)$", item)
            if m:
                ip = m.group(2)
                if ip.startswith("[") and ip.endswith("]"):
                    ip = ip[1:-1]
                out.append(f"{m.group(1)}:{ip}")
        return out

    def port(self, item, path) -> list[dict]:
        if isinstance(item, dict):
            return [dict(item)]
        try:
            return parse_short_port(str(item), self.warnings, path)
        except ValueError as exc:
            self.problems.add(path, str(exc))
            return []

    def volume(self, item, path) -> dict:
        if isinstance(item, dict):
            v = dict(item)
        else:
            try:
                v = parse_short_volume(item)
            except ValueError as exc:
                self.problems.add(path, str(exc))
                return {"type": "volume", "target": str(item)}
        if v.get("type") == "bind" and v.get("source"):
            v["source"] = bind_source(v["source"], self.workdir, self.env)
        return v


_PORT_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def _port_range(text: str, what: str) -> tuple[int, int]:
    m = _PORT_RANGE.match(text)
    if not m:
        raise ValueError(f"invalid {what} {text!r}")
    lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
    if not (0 < lo <= hi <= 65535):
        raise ValueError(f"invalid {what} {text!r}: ports are 1-65535, low to high")
    return lo, hi


def parse_short_port(spec: str, warnings: list, path=()) -> list[dict]:
    """`[ip:][host[-host]:]container[-container][/proto]` as go-connections
    ParsePortSpec reads it; one long-syntax entry per port, ingress mode."""
    raw, _, proto = spec.rpartition("/") if "/" in spec else (spec, "", "tcp")
    proto = proto.lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise ValueError(f"invalid protocol {proto!r} in port {spec!r}")
    parts = raw.split(":")
    container = parts[-1]
    host = parts[-2] if len(parts) >= 2 else ""
    ip = ":".join(parts[:-2]) if len(parts) >= 3 else ""
    if ip:
        from stacks.compose.yaml_source import format_path
        warnings.append(f"{format_path(path)}: ignoring IP address {ip.strip('[]')} in port "
                        f"{spec!r}: swarm publishes on all interfaces")
    if not container:
        raise ValueError(f"no container port in {spec!r}")
    c_lo, c_hi = _port_range(container, "container port")
    if host:
        h_lo, h_hi = _port_range(host, "published port")
        if (h_hi - h_lo) != (c_hi - c_lo) and c_lo != c_hi:
            raise ValueError(f"port ranges of different sizes in {spec!r}")
        if c_lo == c_hi and h_hi != h_lo:   # one container port, a range of host ports
            pairs = [(h, c_lo) for h in range(h_lo, h_hi + 1)]
        else:
            pairs = [(h_lo + i, c_lo + i) for i in range(c_hi - c_lo + 1)]
    else:
        pairs = [(0, c) for c in range(c_lo, c_hi + 1)]
    return [{"mode": "ingress", "target": c, **({"published": h} if h else {}),
             "protocol": proto} for h, c in pairs]


_PROPAGATION = ("rprivate", "private", "rshared", "shared", "rslave", "slave")


def _is_file_path(src: str) -> bool:
    return bool(src) and (src[0] in "./~" or src.startswith("\\\\")
                          or bool(re.match(r"^[A-Za-z]:[\\/]", src)))


def parse_short_volume(spec: str) -> dict:
    """`[source:]target[:options]` as the CLI's volumespec.Parse reads it:
    a source starting with . / ~ is a bind mount, else a named volume; options
    ro, rw, nocopy and propagation modes; other options are ignored."""
    if not spec:
        raise ValueError("empty volume")
    if len(spec) <= 2:
        return {"type": "volume", "target": spec}
    parts = spec.split(":")
    if re.match(r"^[A-Za-z]$", parts[0]) and len(parts) > 1:  # windows drive C:\x
        parts = [parts[0] + ":" + parts[1]] + parts[2:]
    if any(p == "" for p in parts):
        raise ValueError(f"invalid volume {spec!r}: empty section between colons")
    if len(parts) > 3:
        raise ValueError(f"invalid volume {spec!r}: too many colons")
    v: dict = {}
    if len(parts) == 1:
        v["target"] = parts[0]
    else:
        v["source"], v["target"] = parts[0], parts[1]
    if len(parts) == 3:
        for opt in parts[2].split(","):
            if opt == "ro":
                v["read_only"] = True
            elif opt == "rw":
                v["read_only"] = False
            elif opt == "nocopy":
                v["volume"] = {"nocopy": True}
            elif opt in _PROPAGATION:
                v["bind"] = {"propagation": opt}
    v = {"type": "bind" if _is_file_path(v.get("source", "")) else "volume", **v}
    return v
