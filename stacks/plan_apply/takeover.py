"""Taking over the secrets and configs `docker stack deploy` made.

The CLI names a secret or config read from a file `<stack>_<key>`; swarmsmith names it
`<stack>_<key>-<hash>` (stacks/specs/convert.py).  Moving a stack the CLI deployed to
those names would update every service using them and restart their tasks for nothing,
so an object the stack already has under the CLI's name is kept while it holds the
file's content:

- a config: swarm returns its data, so it is compared with the file and kept when equal,
  as it is (no label added: the data is compared again on every plan);
- a secret: swarm never returns its data, so the plan cannot compare it.  It is kept under
  the CLI's name (what `docker stack deploy` itself assumes), and the deploy records
  swarmsmith's keyed content hash on it as a label: a labels-only update, which swarm
  allows and which restarts no task.  That update carries the file's content and swarm
  refuses it when the stored content differs, so the label never vouches for a content
  that is not the file's; later plans compare the label, so a changed file is noticed;
- either, once it carries swarmsmith's content-hash label (recorded by an earlier
  take-over, or made with `--no-versioned-names`): kept while the label matches the file.

Anything else (other content, another driver or template driver, not labelled as part of
the stack) is not taken over: the versioned object is created and the services move to
it, as for any changed file.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

from stacks.specs.convert import CONTENT_LABEL, STACK_LABEL, StackSpec, placeholder
from stacks.specs.normalize import strip_empty

# how a take-over was justified
BY_CONTENT = "content"      # a config's data equals the file's
BY_LABEL = "label"          # swarmsmith's content-hash label equals the file's
UNCHECKED = "unchecked"     # a secret without the label: recorded by the deploy
# written on a taken-over secret whose label update swarm refused (other content): the
# next plan sees a hash that is not the file's and moves the services to a new secret
MISMATCH = "differs-from-file"
REFUSED = "only updates to Labels are allowed"    # swarmkit's answer to a content change


@dataclass(frozen=True)
class Takeover:
    kind: str        # secret | config
    name: str        # the live object's name (the CLI's), kept
    versioned: str   # the name swarmsmith would have given it
    how: str         # BY_CONTENT | BY_LABEL | UNCHECKED


def find_takeovers(desired: StackSpec, secrets: list, configs: list) -> list[Takeover]:
    """The versioned objects of `desired` that do not exist yet and whose CLI-named
    counterpart in the live `secrets`/`configs` (Engine API lists) can be kept instead."""
    live = {"secret": {o["Spec"]["Name"]: o for o in secrets},
            "config": {o["Spec"]["Name"]: o for o in configs}}
    out = []
    for (kind, versioned), cli_name in sorted(desired.cli_names.items()):
        want = (desired.secrets if kind == "secret" else desired.configs).get(versioned)
        obj = live[kind].get(cli_name)
        if want is None or obj is None or versioned in live[kind]:
            continue
        how = _justified(kind, want, obj["Spec"], desired.stack)
        if how:
            out.append(Takeover(kind, cli_name, versioned, how))
    return out


def _same(a, b) -> bool:
    return (strip_empty(a) or None) == (strip_empty(b) or None)


def _justified(kind: str, want: dict, have: dict, stack: str) -> str | None:
    labels = have.get("Labels") or {}
    if labels.get(STACK_LABEL) != stack:
        return None
    if not (_same(have.get("Driver"), want.get("Driver"))
            and _same(have.get("Templating"), want.get("Templating"))):
        return None
    data = have.get("Data")
    if data is not None and data != want.get("Data"):
        return None
    if CONTENT_LABEL in labels:
        return BY_LABEL if labels[CONTENT_LABEL] == want["Labels"][CONTENT_LABEL] else None
    if data is not None:
        return BY_CONTENT
    return UNCHECKED if kind == "secret" else None


def with_takeovers(desired: StackSpec, takeovers: list[Takeover]) -> StackSpec:
    """A copy of `desired` in which each taken-over object has the live name and the
    services refer to it by that name."""
    if not takeovers:
        return desired
    out = replace(desired, secrets=dict(desired.secrets), configs=dict(desired.configs),
                  services=copy.deepcopy(desired.services))
    for t in takeovers:
        store = out.secrets if t.kind == "secret" else out.configs
        spec = store.pop(t.versioned)
        labels = dict(spec["Labels"])
        if t.how == BY_CONTENT:     # left as the CLI made it: its data is compared each time
            labels.pop(CONTENT_LABEL, None)
        store[t.name] = {**spec, "Name": t.name, "Labels": labels}
        for service in out.services.values():
            _rename_refs(service, t.kind, t.versioned, t.name)
    return out


def _rename_refs(service: dict, kind: str, old: str, new: str) -> None:
    cs = service["TaskTemplate"]["ContainerSpec"]
    key, id_key, name_key = (("Secrets", "SecretID", "SecretName") if kind == "secret"
                             else ("Configs", "ConfigID", "ConfigName"))
    refs = cs.get(key) or []
    for ref in refs:
        if ref.get(name_key) == old:
            ref[name_key], ref[id_key] = new, placeholder(new)
    refs.sort(key=lambda r: r[name_key])
    cred = (cs.get("Privileges") or {}).get("CredentialSpec") or {}
    if kind == "config" and cred.get("Config") == placeholder(old):
        cred["Config"] = placeholder(new)


def note(t: Takeover) -> str:
    """What the plan says about a taken-over object."""
    if t.how == BY_CONTENT:
        return "made by docker stack deploy with the file's content: kept under its name"
    if t.how == BY_LABEL:
        return "kept under its name: its content-hash label matches the file"
    return ("made by docker stack deploy; its content could not be checked, swarm never "
            "returns it: kept under its name, the file's content hash recorded as a label, "
            "no task restarts")
