"""Merge several canonical compose files (later files override earlier ones),
following the Docker CLI (`cli/compose/loader/merge.go`):

- top-level networks/volumes/secrets/configs and x- fields: a later file's
  entry replaces the whole entry;
- services matched by name and deep-merged:
  ports keyed by published port, volumes by target, secrets/configs by source
  (override wins per key, result sorted by key); command/entrypoint replaced
  when the override is non-empty; logging options merged when the driver is
  the same or unset, else replaced; ulimits and service networks per name;
  mappings (labels, environment, sysctls, ...) merged per key; every other list
  appended (cap_add, cap_drop, dns, extra_hosts, constraints, preferences, ...).

Corrected CLI quirks (the CLI merges typed structs with mergo):
- a key present in the override wins even with a zero value: the CLI cannot
  undo `read_only: true` with `read_only: false`, or set `replicas: 0`
  in 20.10 (fixed later for uint64 fields only);
- `environment: {FOO: ""}` in an override sets FOO empty (the CLI keeps the
  base value); a bare `FOO` (null) keeps the base value;
- `healthcheck.test` is replaced, not appended to the base test;
- ports without a published port are keyed by target and protocol, so two
  such ports no longer collapse into one.
"""
from __future__ import annotations

import copy

_KEYED_LISTS = {
    "ports": lambda p: ((0, p["published"], p.get("protocol") or "tcp", 0)
                        if p.get("published") else
                        (1, 0, p.get("protocol") or "tcp", p.get("target", 0))),
    "volumes": lambda v: v.get("target", ""),
    "secrets": lambda r: r.get("source", ""),
    "configs": lambda r: r.get("source", ""),
}
_REPLACED_LISTS = {"command", "entrypoint"}
_REPLACED_PATHS = {("healthcheck", "test")}


def merge_files(docs: list[dict]) -> dict:
    out = copy.deepcopy(docs[0])
    for doc in docs[1:]:
        for key, value in doc.items():
            if key == "services":
                services = out.setdefault("services", {})
                for name, svc in value.items():
                    services[name] = (merge_service(services[name], svc)
                                      if name in services else copy.deepcopy(svc))
            elif key in ("networks", "volumes", "secrets", "configs"):
                out.setdefault(key, {}).update(copy.deepcopy(value))
            else:
                out[key] = copy.deepcopy(value)
    return out


def merge_service(base: dict, over: dict) -> dict:
    return _merge_map(base, over, ())


def _merge_map(base: dict, over: dict, path: tuple) -> dict:
    out = copy.deepcopy(base)
    for key, new in over.items():
        sub = path + (key,)
        old = out.get(key)
        if new is None:
            out.setdefault(key, None)
        elif not path and key in _KEYED_LISTS and isinstance(old, list):
            keyf = _KEYED_LISTS[key]
            merged = {keyf(x): x for x in old}
            merged.update({keyf(x): copy.deepcopy(x) for x in new})
            out[key] = [merged[k] for k in sorted(merged)]
        elif not path and key in _REPLACED_LISTS:
            if new:
                out[key] = copy.deepcopy(new)
        elif not path and key == "logging" and isinstance(old, dict):
            if not new.get("driver") or new.get("driver") == old.get("driver"):
                out[key] = {**old, **{k: v for k, v in new.items() if k != "options"},
                            "options": {**(old.get("options") or {}),
                                        **(new.get("options") or {})}}
            else:
                out[key] = copy.deepcopy(new)
        elif not path and key == "environment" and isinstance(old, dict):
            out[key] = {**old, **{k: v for k, v in new.items() if v is not None}}
        elif not path and key == "networks" and isinstance(old, dict):
            nets = dict(old)
            for name, cfg in new.items():
                nets[name] = ({**(nets.get(name) or {}), **cfg} if cfg else nets.get(name))
            out[key] = nets
        elif not path and key == "ulimits" and isinstance(old, dict):
            out[key] = {**old, **copy.deepcopy(new)}
        elif isinstance(old, dict) and isinstance(new, dict):
            out[key] = _merge_map(old, new, sub)
        elif isinstance(old, list) and isinstance(new, list) and sub not in _REPLACED_PATHS:
            out[key] = old + copy.deepcopy(new)
        else:
            out[key] = copy.deepcopy(new)
    return out
