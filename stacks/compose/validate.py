"""Checks on the merged stack that no single key's type can catch: references
between keys, files that must exist, combinations swarm refuses or that
deadlock, and keys swarm ignores.

validate() raises one InputError listing every problem (exit 2) and returns
the warnings (ignored keys, dropped port addresses, ...).  With strict=True,
keys that swarm would ignore are problems too.
"""
from __future__ import annotations

import ipaddress
import os
import re

from stacks.compose import schema
from stacks.compose.loader import Compose
from stacks.compose.problems import Problem, Problems
from stacks.compose.yaml_source import format_path
from stacks.images.references import parse_image

STACK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
OBJECT_NAME = re.compile(r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$")
MAX_SERVICE_NAME = 63   # swarm service names are DNS labels
MAX_OBJECT_NAME = 64    # swarm secret/config names
BUILTIN_NETWORKS = ("host", "bridge", "none")
VERSION_SUFFIX_LEN = 11  # "-" + 10 hex digits, see convert.versioned_name


def validate_stack_name(stack: str) -> None:
    from provision.base.errors import InputError
    if not stack or not STACK_NAME.match(stack):
        raise InputError(f"invalid stack name {stack!r}: use letters, digits, '_', '.', '-', "
                         "starting with a letter or digit")


def validate(compose: Compose, *, stack: str = "", strict: bool = False,
             node_count: int | None = None, versioned_objects: bool = True) -> list[str]:
    """check_stack() and the deadlock warnings for `node_count` nodes (None: unknown)."""
    return (check_stack(compose, stack=stack, strict=strict, versioned_objects=versioned_objects)
            + deadlock_warnings(compose, node_count))


def check_stack(compose: Compose, *, stack: str = "", strict: bool = False,
                versioned_objects: bool = True) -> list[str]:
    """Every check that needs no cluster: raises one InputError listing every problem,
    returns the warnings."""
    p = Problems(compose.locate)
    warnings = list(compose.warnings)
    m = compose.model
    services = m.get("services") or {}
    if not services:
        p.add(("services",), "no services defined")
    for kind in ("secrets", "configs"):
        for key, obj in (m.get(kind) or {}).items():
            _check_file_object(p, kind, key, obj, stack, versioned_objects)
    for key, vol in (m.get("volumes") or {}).items():
        if (vol or {}).get("external"):
            for bad in ("driver", "driver_opts", "labels"):
                if bad in vol:
                    p.add(("volumes", key, bad), "cannot be set on an external volume")
    for name, svc in services.items():
        _check_service(p, warnings, m, name, svc, stack, strict)
    _check_ingress_conflicts(p, services)
    p.raise_if_any()
    return warnings


def deadlock_warnings(compose: Compose, node_count: int | None) -> list[str]:
    return [f"{problem} (creating the service is fine; an update of it is refused)"
            for problem in update_deadlocks(compose, node_count).values()]


def _check_file_object(p, kind, key, obj, stack, versioned):
    path = (kind, key)
    if obj.get("external"):
        return
    if obj.get("driver") and obj.get("file"):
        p.add(path + ("driver",), "cannot be combined with file:")
    elif not obj.get("driver") and not obj.get("file"):
        p.add(path, "expected file:, driver: or external: true")
    elif obj.get("file"):
        f = obj["file"]
        if not os.path.exists(f):
            p.add(path + ("file",), f"file not found: {f}")
        elif not os.path.isfile(f):
            p.add(path + ("file",), f"not a regular file: {f}")
    name = obj.get("name") or f"{stack or 'x'}_{key}"
    if not obj.get("name") and versioned:
        name += "x" * VERSION_SUFFIX_LEN
    if stack and (len(name) > MAX_OBJECT_NAME or not OBJECT_NAME.match(name)):
        p.add(path, f"name {name!r} is not a valid swarm {kind[:-1]} name (at most "
                    f"{MAX_OBJECT_NAME} characters of letters, digits, '-', '_', '.')")


def _check_service(p, warnings, m, name, svc, stack, strict):
    path = ("services", name)
    fmt = f"services.{name}"
    if stack and len(f"{stack}_{name}") > MAX_SERVICE_NAME:
        p.add(path, f"service name {stack}_{name!r} is longer than {MAX_SERVICE_NAME} characters")
    image = svc.get("image")
    if not image:
        p.add(path + ("image",), "is required (swarm services run images; build: is ignored)")
    else:
        try:
            parse_image(image)
        except ValueError:
            p.add(path + ("image",), f"expected an image reference such as \"nginx:1.25\", "
                                     f"got \"{image}\"")
    for key in schema.IGNORED_KEYS + schema.DEPRECATED_KEYS + schema.SILENTLY_IGNORED_KEYS:
        if key not in svc:
            continue
        if key == "restart" and "restart_policy" not in (svc.get("deploy") or {}):
            _check_legacy_restart(p, path, svc["restart"], strict, warnings, fmt)
            continue
        if strict:
            p.add(path + (key,), "ignored by swarm (refused with --strict)")
        else:
            warnings.append(f"{fmt}.{key}: ignored by swarm"
                            + (" (deprecated)" if key in schema.DEPRECATED_KEYS else ""))
    _check_refs(p, m, name, svc)
    _check_volumes(p, m, path, svc.get("volumes") or [])
    _check_healthcheck(p, path, svc.get("healthcheck"))
    _check_deploy(p, path, svc)
    cred = svc.get("credential_spec") or {}
    if len([k for k in ("config", "file", "registry") if cred.get(k)]) > 1:
        p.add(path + ("credential_spec",), "set only one of config, file and registry")
    if cred.get("config") and cred["config"] not in (m.get("configs") or {}):
        p.add(path + ("credential_spec", "config"), f"undefined config \"{cred['config']}\"")
    ul = svc.get("ulimits") or {}
    for k, v in ul.items():
        if isinstance(v, dict) and v["soft"] > v["hard"]:
            p.add(path + ("ulimits", k), f"soft limit {v['soft']} above hard limit {v['hard']}")


def _check_legacy_restart(p, path, value, strict, warnings, fmt):
    # Used when deploy.restart_policy is absent: no, always, unless-stopped, on-failure[:N]
    if value in ("", "no", "always", "unless-stopped") or re.fullmatch(r"on-failure(:\d+)?",
                                                                      value or ""):
        if strict:
            p.add(path + ("restart",), "ignored by swarm (use deploy.restart_policy; "
                                       "refused with --strict)")
        else:
            warnings.append(f"{fmt}.restart: converted to deploy.restart_policy; "
                            "prefer deploy.restart_policy")
    else:
        p.add(path + ("restart",), "expected no, always, unless-stopped or on-failure[:N], "
                                   f"got \"{value}\"")


def _check_refs(p, m, name, svc):
    path = ("services", name)
    nets = m.get("networks") or {}
    for net in (svc.get("networks") or {}):
        if net not in nets and net != "default":
            hint = (f"declare it as networks: {{{net}: {{external: true}}}}"
                    if net in BUILTIN_NETWORKS else "add it under top-level networks:")
            p.add(path + ("networks", net), f"undefined network \"{net}\" ({hint})")
    for key in ("dns",):
        for i, addr in enumerate(svc.get(key) or []):
            try:
                ipaddress.ip_address(addr)
            except ValueError:
                # the CLI drops such entries without a word
                p.add(path + (key, i), f"expected an IP address, got \"{addr}\"")
    for kind in ("secrets", "configs"):
        defined = m.get(kind) or {}
        targets: dict = {}
        for i, ref in enumerate(svc.get(kind) or []):
            src = ref.get("source")
            if src not in defined:
                p.add(path + (kind, i), f"undefined {kind[:-1]} \"{src}\" (add it under "
                                        f"top-level {kind}:)")
            target = ref.get("target") or src
            if target in targets:
                p.add(path + (kind, i), f"target \"{target}\" is used twice")
            targets[target] = i


def _check_volumes(p, m, path, volumes):
    defined = m.get("volumes") or {}
    for i, v in enumerate(volumes):
        vp = path + ("volumes", i)
        kind, src = v.get("type"), v.get("source")
        if not v.get("target"):
            p.add(vp, "target is required")
        if kind == "volume" and src and src not in defined:
            p.add(vp, f"undefined volume \"{src}\" (add it under top-level volumes:)")
        if kind == "bind" and not src:
            p.add(vp, "a bind mount needs a source")
        if kind == "tmpfs" and src:
            p.add(vp, "a tmpfs mount cannot have a source")
        for block, allowed in (("bind", "bind"), ("volume", "volume"), ("tmpfs", "tmpfs")):
            if v.get(block) and kind != allowed:
                p.add(vp + (block,), f"{block} options cannot be used with type {kind}")


def _check_healthcheck(p, path, hc):
    if not hc:
        return
    if hc.get("disable") and hc.get("test"):
        p.add(path + ("healthcheck",), "test and disable: true cannot both be set")
    test = hc.get("test")
    if test and test[0] not in ("NONE", "CMD", "CMD-SHELL"):
        p.add(path + ("healthcheck", "test"), "a list test must start with CMD, CMD-SHELL "
                                              f"or NONE, got \"{test[0]}\"")


def _check_deploy(p, path, svc):
    d = svc.get("deploy") or {}
    dp = path + ("deploy",)
    mode = d.get("mode") or "replicated"
    if mode in ("global", "global-job") and "replicas" in d:
        p.add(dp + ("replicas",), f"cannot be set with mode {mode}")
    if mode.endswith("-job"):
        for key in ("update_config", "rollback_config"):
            if key in d:
                p.add(dp + (key,), f"swarm refuses {key} for jobs (mode {mode})")
    ports = svc.get("ports") or []
    if (d.get("endpoint_mode") or "").lower() == "dnsrr":
        for i, port in enumerate(ports):
            if (port.get("mode") or "ingress") == "ingress":
                p.add(path + ("ports", i), "ingress ports cannot be used with endpoint_mode "
                                           "dnsrr; use mode: host")


def update_deadlocks(compose: Compose, node_count: int | None) -> dict[str, Problem]:
    """Services whose *update* would deadlock: start-first with a host-mode published port and
    no node that has the port free for the new task (global mode, or replicas >= nodes).
    A create cannot deadlock (no old task holds the port; `docker stack deploy` accepts the
    file), so validate() only warns and the plan refuses updates of these services."""
    out = {}
    for name, svc in (compose.model.get("services") or {}).items():
        d = svc.get("deploy") or {}
        mode = d.get("mode") or "replicated"
        host_ports = sorted({pt.get("published") for pt in svc.get("ports") or []
                             if pt.get("mode") == "host" and pt.get("published")})
        if not host_ports:
            continue
        replicas = d.get("replicas", 1)
        for key in ("update_config", "rollback_config"):
            if (d.get(key) or {}).get("order") != "start-first":
                continue
            where = f"host-mode published port {host_ports[0]}"
            if mode == "global":
                why = (f"start-first with a {where} in global mode deadlocks on update: the new "
                       "task needs the port its old task still holds")
            elif node_count is not None and mode == "replicated" and replicas >= node_count:
                why = (f"start-first with a {where} and {replicas} replicas on {node_count} "
                       "node(s) deadlocks on update: no node has the port free for the new task")
            else:
                continue
            path = ("services", name, "deploy", key, "order")
            file, line = compose.locate(path)
            out[name] = Problem(file, format_path(path), why + "; use stop-first, an ingress "
                                "port, or fewer replicas than nodes", line)
            break
    return out


def _check_ingress_conflicts(p, services):
    seen: dict = {}
    for name, svc in services.items():
        for i, port in enumerate(svc.get("ports") or []):
            if (port.get("mode") or "ingress") != "ingress" or not port.get("published"):
                continue
            key = (port["published"], port.get("protocol") or "tcp")
            if key in seen and seen[key][0] != name:
                p.add(("services", name, "ports", i),
                      f"published port {key[0]}/{key[1]} is also published by service "
                      f"{seen[key][0]}")
            elif key in seen:
                p.add(("services", name, "ports", i),
                      f"published port {key[0]}/{key[1]} is listed twice")
            seen.setdefault(key, (name, i))
