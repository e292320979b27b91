"""What a deploy would change: desired specs (stacks/specs/convert.py) against the
live ones (as the Engine API lists them), per service, network, secret and
config: create / update (changed fields, old -> new) / unchanged / remove
(only with prune).  Pure: no API calls here; provision/engine_api/adapter.py fetches.
Secrets and configs `docker stack deploy` made under its names are kept while
they hold the files' content (stacks/plan_apply/takeover.py).

Never holds secret contents in what it shows: secret/config Data stays in
`Action.spec` (needed to create them) and is left out of to_dict() and the
changes; environment values whose names look secret are masked.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from provision.engine_api.adapter import Current  # noqa: F401  (the live state a plan compares with)
from stacks.operations.audit import SECRET_HINTS
from stacks.specs.convert import CONTENT_LABEL, IMAGE_LABEL, STACK_LABEL, StackSpec
from stacks.specs.normalize import effective_spec
from stacks.plan_apply.takeover import (UNCHECKED as TAKEOVER_UNCHECKED, Takeover,
                                        find_takeovers, note as takeover_note, with_takeovers)

CREATE, UPDATE, UNCHANGED, REMOVE = "create", "update", "unchanged", "remove"
KINDS = ("network", "secret", "config", "service")
_BUILTIN_NETWORKS = ("host", "bridge", "none", "default")


@dataclass
class Change:
    path: str
    old: Any
    new: Any

    def to_dict(self) -> dict:
        return {"path": self.path, "old": self.old, "new": self.new}


@dataclass
class Action:
    kind: str                    # network | secret | config | service
    name: str
    action: str                  # create | update | unchanged | remove
    changes: list = field(default_factory=list)
    id: str | None = None        # of the live object
    version: int | None = None   # of the live object (updates need it)
    spec: dict | None = None     # what to send (secrets/configs: with Data)
    current: dict | None = None  # live Spec (services)
    note: str = ""
    # a secret made by docker stack deploy whose content the plan could not check; its
    # labels-only update carries the file's content, which swarm refuses if it differs
    unchecked: bool = False

    def to_dict(self) -> dict:
        out = {"kind": self.kind, "name": self.name, "action": self.action}
        if self.changes:
            out["changes"] = [c.to_dict() for c in self.changes]
        if self.id:
            out["id"] = self.id
        if self.note:
            out["note"] = self.note
        if self.unchecked:
            out["content_checked"] = False
        return out




@dataclass
class Plan:
    stack: str
    actions: list = field(default_factory=list)
    problems: list = field(default_factory=list)   # stop the apply
    warnings: list = field(default_factory=list)
    ids: dict = field(default_factory=dict)        # (kind, name) -> live ID, for references
    # service ID -> Version.Index of the stack's live services when planned: the watch's
    # baseline (under the stack lock nothing else moves them before the apply)
    versions: dict = field(default_factory=dict)

    def of(self, kind: str, action: str | None = None) -> list:
        return [a for a in self.actions if a.kind == kind and (action is None or a.action == action)]

    @property
    def has_changes(self) -> bool:
        return any(a.action != UNCHANGED for a in self.actions)

    def counts(self) -> dict:
        out = {k: 0 for k in (CREATE, UPDATE, UNCHANGED, REMOVE)}
        for a in self.actions:
            out[a.action] += 1
        return out

    def to_dict(self) -> dict:
        return {"stack": self.stack, "counts": self.counts(),
                "actions": [a.to_dict() for a in self.actions],
                "problems": list(self.problems), "warnings": list(self.warnings)}


# --- diffs ------------------------------------------------------------------------------

def diff(old, new, path: str = "") -> list[Change]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{k}" if path else str(k)
            out += diff(old.get(k), new.get(k), sub)
        return out
    if (isinstance(old, list) and isinstance(new, list) and len(old) == len(new)
            and all(isinstance(x, dict) for x in old + new)):
        return [c for i, (a, b) in enumerate(zip(old, new)) for c in diff(a, b, f"{path}[{i}]")]
    return [] if old == new else [Change(path, old, new)]


def _looks_secret(name: str) -> bool:
    low = name.lower().replace("-", "_")
    return any(h in low for h in SECRET_HINTS)


def mask_env(entries):
    if not isinstance(entries, list):
        return entries
    out = []
    for e in entries:
        k, sep, v = str(e).partition("=")
        out.append(f"{k}=***" if sep and _looks_secret(k) else e)
    return out


def _mask(changes: list[Change]) -> list[Change]:
    for c in changes:
        if c.path.endswith("ContainerSpec.Env"):
            c.old, c.new = mask_env(c.old), mask_env(c.new)
    return changes


_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def comparable_current(desired: dict, current: dict) -> dict:
    """The live spec with the digest pin dropped when swarm (or `docker stack
    deploy --resolve-image`) only pinned the image we asked for: same stack
    image label, same name:tag."""
    cs = (current.get("TaskTemplate") or {}).get("ContainerSpec") or {}
    want = ((desired.get("TaskTemplate") or {}).get("ContainerSpec") or {}).get("Image", "")
    have = cs.get("Image", "")
    if (_DIGEST.search(have) and not _DIGEST.search(want)
            and (current.get("Labels") or {}).get(IMAGE_LABEL)
            == (desired.get("Labels") or {}).get(IMAGE_LABEL)):
        from stacks.images.references import familiar_image
        if familiar_image(_DIGEST.sub("", have)) == familiar_image(want):
            current = {**current, "TaskTemplate": {**current["TaskTemplate"], "ContainerSpec": {
                **cs, "Image": want}}}
    return current


# --- the plan ---------------------------------------------------------------------------

def make_plan(desired: StackSpec, current: Current, *, prune: bool = False) -> Plan:
    plan = Plan(desired.stack)
    stack = desired.stack
    # objects `docker stack deploy` made under its names are kept while they hold the files'
    # content, so taking over a CLI stack restarts no task (stacks/plan_apply/takeover.py)
    takeovers = find_takeovers(desired, current.secrets, current.configs)
    desired = with_takeovers(desired, takeovers)
    net_by_name = {n.get("Name"): n for n in current.networks}
    net_names = {n.get("Id") or n.get("ID"): n.get("Name") for n in current.networks}
    cfg_names = {c["ID"]: c["Spec"]["Name"] for c in current.configs}
    plan.ids = {**{("secret", o["Spec"]["Name"]): o["ID"] for o in current.secrets},
                **{("config", o["Spec"]["Name"]): o["ID"] for o in current.configs}}
    _plan_networks(plan, desired, net_by_name, prune)
    for kind, want, have, externals in (
            ("secret", desired.secrets, current.secrets, desired.external_secrets),
            ("config", desired.configs, current.configs, desired.external_configs)):
        taken = {t.name: t for t in takeovers if t.kind == kind}
        _plan_objects(plan, kind, want, have, externals, stack, prune, taken)
    mine = {s["Spec"]["Name"]: s for s in current.services
            if (s["Spec"].get("Labels") or {}).get(STACK_LABEL) == stack}
    others = {s["Spec"]["Name"] for s in current.services} - set(mine)
    plan.versions = {s["ID"]: (s.get("Version") or {}).get("Index", 0) for s in mine.values()}
    for name, spec in sorted(desired.services.items()):
        live = mine.get(name)
        if name in others:
            plan.problems.append(f"service {name} exists but is not part of stack {stack} "
                                 "(no com.docker.stack.namespace label); remove or rename it")
            continue
        if live is None:
            plan.actions.append(Action("service", name, CREATE, spec=spec))
            continue
        cur = comparable_current(spec, live["Spec"])
        changes = diff(effective_spec(cur, network_names=net_names, config_names=cfg_names),
                       effective_spec(spec, network_names=net_names, config_names=cfg_names))
        from stacks.operations.service_ops import scaled_note
        plan.actions.append(Action("service", name, UPDATE if changes else UNCHANGED,
                                   _mask(changes), live["ID"], live["Version"]["Index"],
                                   spec=spec, current=live["Spec"],
                                   note=scaled_note(live["Spec"]) if changes else ""))
    for name, live in sorted(mine.items()):
        if name not in desired.services and prune:
            plan.actions.append(Action("service", name, REMOVE, id=live["ID"]))
    plan.actions.sort(key=lambda a: (KINDS.index(a.kind), a.name))
    return plan


def _plan_networks(plan: Plan, desired: StackSpec, live: dict, prune: bool) -> None:
    for name in desired.external_networks:
        if name in _BUILTIN_NETWORKS:
            continue
        net = live.get(name)
        if net is None:
            plan.problems.append(f"network {name} is declared external but does not exist; "
                                 "create a swarm-scoped network first")
        elif net.get("Scope") not in (None, "swarm"):
            plan.problems.append(f"network {name} is external but has scope {net.get('Scope')}"
                                 "; services need a swarm-scoped network")
    for name, spec in sorted(desired.networks.items()):
        net = live.get(name)
        if net is None:
            plan.actions.append(Action("network", name, CREATE, spec=spec))
            continue
        changes = diff(_net_view(net, want=spec), _net_view(spec))
        note = ""
        if changes:
            # the CLI never updates networks either; recreating needs every service off it
            note = "differs from the file but networks cannot be updated; remove the stack " \
                   "to recreate it"
            plan.warnings.append(f"network {name}: {note} ("
                                 + ", ".join(c.path for c in changes) + ")")
        plan.actions.append(Action("network", name, UNCHANGED, changes, net.get("Id"),
                                   note=note))
    if prune:
        for name, net in sorted(live.items()):
            if (net.get("Labels") or {}).get(STACK_LABEL) == plan.stack \
                    and name not in desired.networks:
                plan.actions.append(Action("network", name, REMOVE, id=net.get("Id")))


def _net_view(n: dict, want: dict | None = None) -> dict:
    """Comparable view of a network. With `want` (the file's spec), what the daemon fills in by
    itself — driver options such as the VXLAN id, subnets from the address pool — is left out
    unless the file sets it, or every redeploy would warn about a difference."""
    ipam = n.get("IPAM") or {}
    options = n.get("Options") or {}
    subnets = sorted(c.get("Subnet") for c in ipam.get("Config") or [] if c.get("Subnet"))
    if want is not None:
        wanted_opts = want.get("Options") or {}
        options = {k: v for k, v in options.items() if k in wanted_opts}
        if not _net_view(want)["Subnets"]:
            subnets = []
    return {"Driver": n.get("Driver") or "overlay", "Options": options,
            "Internal": bool(n.get("Internal")), "Attachable": bool(n.get("Attachable")),
            "Labels": n.get("Labels") or {}, "Subnets": subnets}


_KEYED_HASH = "(keyed hash of the file)"


def _label_changes(kind: str, old_labels: dict, new_labels: dict) -> list[Change]:
    changes = diff({"Labels": old_labels}, {"Labels": new_labels})
    if kind == "secret":    # a hash of a secret's content is not shown, keyed or not
        for c in changes:
            if c.path == f"Labels.{CONTENT_LABEL}":
                c.old, c.new = (None if v is None else _KEYED_HASH for v in (c.old, c.new))
    return changes


def _takeover_action(plan: Plan, kind: str, t: Takeover, obj: dict, spec: dict) -> Action:
    changes = _label_changes(kind, obj["Spec"].get("Labels") or {}, spec["Labels"])
    unchecked = t.how == TAKEOVER_UNCHECKED
    if unchecked:
        plan.warnings.append(
            f"{kind} {t.name} was made by docker stack deploy and its content could not be "
            "checked against the file (swarm never returns it); it is kept under its name "
            "and the deploy records the file's content hash on it, which swarm refuses if "
            "the content differs")
    return Action(kind, t.name, UPDATE if changes else UNCHANGED, changes, obj["ID"],
                  obj["Version"]["Index"], spec=spec, note=takeover_note(t),
                  unchecked=unchecked)


def _plan_objects(plan: Plan, kind: str, want: dict, have: list, externals: list,
                  stack: str, prune: bool, taken: dict | None = None) -> None:
    live = {o["Spec"]["Name"]: o for o in have}
    for name in externals:
        if name not in live:
            plan.problems.append(f"{kind} {name} is declared external but does not exist")
    for name, spec in sorted(want.items()):
        obj = live.get(name)
        if obj is None:
            plan.actions.append(Action(kind, name, CREATE, spec=spec))
            continue
        if name in (taken or {}):
            plan.actions.append(_takeover_action(plan, kind, taken[name], obj, spec))
            continue
        old_labels = obj["Spec"].get("Labels") or {}
        old_hash, new_hash = old_labels.get(CONTENT_LABEL), spec["Labels"].get(CONTENT_LABEL)
        data = obj["Spec"].get("Data")
        if (old_hash and old_hash != new_hash) or (
                not old_hash and data is not None and data != spec.get("Data")):
            plan.problems.append(f"{kind} {name} exists with other content and swarm cannot "
                                 f"change it; drop its name: to get versioned names, or "
                                 f"remove the {kind}")
            continue
        if not old_hash:
            # made without swarmsmith (docker stack deploy): the hash label would claim a
            # content we could not check (secret data is never returned), so it is not added
            spec = {**spec, "Labels": {k: v for k, v in spec["Labels"].items()
                                       if k != CONTENT_LABEL}}
            if data is None:
                plan.warnings.append(f"{kind} {name} was not made by swarmsmith and swarm does "
                                     "not return its content: a changed file is not noticed")
        changes = _label_changes(kind, old_labels, spec["Labels"])
        plan.actions.append(Action(kind, name, UPDATE if changes else UNCHANGED, changes,
                                   obj["ID"], obj["Version"]["Index"], spec=spec))
    if prune:
        for name, obj in sorted(live.items()):
            if (obj["Spec"].get("Labels") or {}).get(STACK_LABEL) == stack and name not in want:
                plan.actions.append(Action(kind, name, REMOVE, id=obj["ID"],
                                           note="no longer used by the stack"))
