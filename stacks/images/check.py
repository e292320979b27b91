"""Before a deploy changes anything: is every image of a service that will be created
or updated on each node that may run it, or can those nodes pull it?

- Nodes that may run a service: ready, active nodes that pass its placement
  constraints.  Simple constraints are evaluated here (node.id, node.hostname,
  node.role, node.platform.os/arch, node.labels.*, engine.labels.*, with == or
  !=); any other constraint is not evaluated, so it does not narrow the set.
  Global and replicated services are treated alike: the scheduler may pick any
  candidate node.
- Pullable: only an image whose reference names a registry (`host.tld/…`,
  `host:port/…`, `localhost/…`; `docker.io/…` counts) is assumed pullable and
  is not looked for.  A short name (`nginx:1.25`, `swarmsmith/busybox:1`) must
  be present on the nodes: swarmsmith never assumes Docker Hub is reachable
  (lab and private clusters cannot reach it; write `docker.io/nginx:1.25` to
  rely on a pull).
- Node image lists come from the Engine API for the manager the deploy talks to, and
  from one SSH command per other node, all in parallel (the engine's socket through
  curl, else `docker image ls`; a manager's Engine API cannot list other nodes' images).
  Only nodes that are candidates for some checked service are asked; no service to
  create or update means no SSH at all.
- Nodes that cannot be asked (not in the inventory, unreachable) give a warning,
  not an error: the check cannot vouch for them, and the deploy goes on.

Missing images are plan problems, so a deploy stops before any change with exit 2
("the plan has problems; nothing was changed"), as for a missing external network.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Callable

from provision.remote import docker_cli
from provision.remote.facts import socket_or
from stacks.images.references import familiar_image, parse_image

_CONSTRAINT = re.compile(r"^\s*([A-Za-z0-9_.\-/]+)\s*(==|!=)\s*(.*?)\s*$")
# the engine's own listing through its socket (JSON) where the host has curl, else the CLI's
# lines: a `docker` process costs the host ~20 ms of CPU
LIST_IMAGES = socket_or("/images/json", docker_cli.IMAGES_WITH_DIGESTS)


@dataclass
class Node:
    id: str
    hostname: str
    role: str
    addr: str
    labels: dict
    engine_labels: dict
    os: str = ""
    arch: str = ""

    @classmethod
    def from_api(cls, n: dict) -> "Node":
        spec, desc = n.get("Spec") or {}, n.get("Description") or {}
        plat = desc.get("Platform") or {}
        return cls(id=n.get("ID", ""), hostname=desc.get("Hostname") or "",
                   role=spec.get("Role") or "", addr=(n.get("Status") or {}).get("Addr") or "",
                   labels=spec.get("Labels") or {},
                   engine_labels=(desc.get("Engine") or {}).get("Labels") or {},
                   os=plat.get("OS") or "", arch=plat.get("Architecture") or "")


def usable(n: dict) -> bool:
    return ((n.get("Status") or {}).get("State") == "ready"
            and (n.get("Spec") or {}).get("Availability", "active") == "active")


def _value(node: Node, key: str):
    """The node's value for a constraint key; NotImplemented when not evaluated here."""
    k = key.lower()
    if k == "node.id":
        return node.id
    if k == "node.hostname":
        return node.hostname
    if k == "node.role":
        return node.role
    if k == "node.platform.os":
        return node.os
    if k == "node.platform.arch":
        return node.arch
    for prefix, labels in (("node.labels.", node.labels), ("engine.labels.", node.engine_labels)):
        if key.startswith(prefix) or k.startswith(prefix):
            return labels.get(key[len(prefix):])
    return NotImplemented


def matches(node: Node, constraints: list[str]) -> bool:
    """As swarmkit's constraint filter for the keys above: == needs the value
    (case-insensitive, labels case-sensitive in the value), != holds when it differs or
    the label is absent."""
    for c in constraints or []:
        m = _CONSTRAINT.match(c)
        if not m:
            continue
        key, op, want = m.groups()
        have = _value(node, key)
        if have is NotImplemented:
            continue
        labelled = key.lower().startswith(("node.labels.", "engine.labels."))
        equal = have is not None and (have == want if labelled else
                                      str(have).lower() == want.lower())
        if (op == "==") != equal:
            return False
    return True


def names_registry(ref: str) -> bool:
    first, sep, _ = ref.partition("/")
    return bool(sep) and ("." in first or ":" in first or first == "localhost")


def _name(repo: str) -> str:
    """Familiar repository name: `docker.io/library/nginx` -> `nginx`."""
    return familiar_image(repo + ":x")[:-2]


def present(image: str, listed: set[str]) -> bool:
    """`listed` holds `name:tag` and `name@digest` entries from a node (familiar form)."""
    try:
        name, tag, digest = parse_image(image)
    except ValueError:
        return False
    if digest:
        return f"{_name(name)}@{digest}" in listed
    return f"{_name(name)}:{tag or 'latest'}" in listed


def parse_listing(text: str) -> set[str]:
    """A node's images from LIST_IMAGES: the Engine API's JSON, or the CLI's lines. JSON that
    does not parse (a transfer cut short, the CLI's lines after it) raises ValueError: the
    node could not be asked, which is not the same as a node without the image."""
    if text.lstrip().startswith("["):
        return api_listing(json.loads(text))
    out = set()
    for line in text.splitlines():
        repo, _, rest = line.partition("|")
        tag, _, digest = rest.partition("|")
        if not repo or repo == "<none>":
            continue
        name = _name(repo)
        if tag and tag != "<none>":
            out.add(f"{name}:{tag}")
        if digest and digest != "<none>":
            out.add(f"{name}@{digest}")
    return out


def api_listing(images: list) -> set[str]:
    """The same entries from the Engine API's image list (RepoTags, RepoDigests)."""
    out = set()
    for img in images if isinstance(images, list) else []:
        for ref in (img.get("RepoTags") or []) if isinstance(img, dict) else []:
            repo, sep, tag = ref.rpartition(":")
            if sep and repo and "/" not in tag and ref != "<none>:<none>":
                out.add(f"{_name(repo)}:{tag}")
        for ref in (img.get("RepoDigests") or []) if isinstance(img, dict) else []:
            repo, sep, digest = ref.partition("@")
            if sep and repo and repo != "<none>":
                out.add(f"{_name(repo)}@{digest}")
    return out


# node id -> set of images, or an Exception when the node could not be asked
Lister = Callable[[list], dict]


def check_images(compose, desired, plan, nodes: list[dict], lister: Lister,
                 missing_out: dict | None = None) -> tuple[list, list]:
    """(problems, warnings) for the services the plan creates or updates; `missing_out`
    collects {image: {node hostname, ...}} for `deploy --push-images`."""
    from stacks.plan_apply.plan import CREATE, UPDATE
    changing = {a.name for a in plan.of("service") if a.action in (CREATE, UPDATE)}
    wanted = []   # (service key, image, candidate nodes)
    all_nodes = [Node.from_api(n) for n in nodes if usable(n)]
    for name in sorted(changing):
        spec = desired.services[name]
        image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        written = (spec.get("Labels") or {}).get("com.docker.stack.image", image)
        if names_registry(written):
            continue
        constraints = ((spec["TaskTemplate"].get("Placement") or {}).get("Constraints") or [])
        cands = [n for n in all_nodes if matches(n, constraints)]
        if cands:
            wanted.append((name[len(desired.stack) + 1:], image, cands))
    if not wanted:
        return [], []
    ask = {n.id: n for _, _, cands in wanted for n in cands}
    listings = lister(list(ask.values()))
    problems, warnings, unknown = [], [], set()
    for key, image, cands in wanted:
        missing = []
        for n in cands:
            got = listings.get(n.id)
            if isinstance(got, set):
                if not present(image, got):
                    missing.append(n.hostname or n.id)
            else:
                unknown.add((n.hostname or n.id, str(got) if got else "not in the inventory"))
        if missing:
            if missing_out is not None:
                missing_out.setdefault(image, set()).update(missing)
            file, line = compose.locate(("services", key, "image")) if compose else (None, None)
            where = ": ".join(x for x in (file, f"services.{key}.image") if x)
            problems.append(
                f"{where}: image {image} is not on node(s) {', '.join(sorted(missing))} "
                f"that may run it ({len(cands)} candidate node(s)) and names no registry to "
                "pull from; put it there (swarmsmith images push, or deploy --push-images) "
                "or use an image from a registry" + (f" (line {line})" if line else ""))
    for host, why in sorted(unknown):
        warnings.append(f"images on node {host} could not be checked: {why}")
    return problems, warnings


def registry_problems(compose, desired, plan, engine) -> tuple[list, list]:
    """For services to create or update whose image names a registry: ask the manager's
    daemon for the image's digest with the credentials swarmsmith will send. A refusal is a
    problem naming the registry and how to provide credentials (nodes would fail to pull
    for the same reason); any other failure is only a warning (the check cannot vouch)."""
    from provision.base.errors import InputError
    from provision.engine_api.adapter import RegistryAccessError
    from stacks.plan_apply.plan import CREATE, UPDATE
    creds = getattr(engine, "credentials", None)
    if creds is None or not hasattr(engine, "distribution_digest"):
        return [], []
    problems, warnings, seen = [], [], {}
    changing = {a.name for a in plan.of("service") if a.action in (CREATE, UPDATE)}
    for name in sorted(changing):
        spec = desired.services[name]
        image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        written = (spec.get("Labels") or {}).get("com.docker.stack.image", image)
        if not names_registry(written):
            continue
        if image not in seen:
            try:
                engine.distribution_digest(image)
                seen[image] = None
            except RegistryAccessError as e:
                seen[image] = e
            except InputError:
                raise
            except Exception as e:   # unreachable, no such tag: pulls will tell; warn only
                seen[image] = str(e)
        got = seen[image]
        if got is None:
            continue
        key = name[len(desired.stack) + 1:]
        file, line = compose.locate(("services", key, "image")) if compose else (None, None)
        where = ": ".join(x for x in (file, f"services.{key}.image") if x)
        if isinstance(got, RegistryAccessError):
            why = creds.explain_refusal(written)
            problems.append(f"{where}: {why}" + (f" (line {line})" if line else ""))
        elif got not in warnings:
            warnings.append(f"{where}: could not check the image in its registry: {got}")
    return problems, warnings


def ssh_lister(cluster_path: str, local=None) -> Lister:
    """Ask each node with one SSH command, in parallel; nodes matched to inventory hosts by
    hostname, then by address. `local`: the EngineAPI the deploy talks to; its own node is
    asked through it, with no second SSH connection to that manager."""
    def run(nodes: list) -> dict:
        from provision.remote.command import Command
        from provision.engine_api.sessions import inventory_hosts, session_for
        from provision.remote.parallel import each
        hosts = inventory_hosts(cluster_path)
        by_node = {}
        for n in nodes:
            h = next((h for h in hosts if h.name == n.hostname), None) or next(
                (h for h in hosts if n.addr and n.addr in (h.private_address, h.public_address)),
                None)
            if h is not None:
                by_node[n.id] = h
        asked = {n.id for n in nodes}

        def ask(item):
            node_id, host = item
            if host is None:        # the manager the deploy talks to
                try:
                    return api_listing(local.local_images())
                except Exception as e:   # reported as a warning, as over SSH
                    return e
            s = session_for(host, cluster_path)
            try:
                r = s.run(Command.shell(LIST_IMAGES), check=False, timeout=60)
                if r.exit_status != 0:
                    return RuntimeError((r.stderr or r.stdout).strip()[:200])
                return parse_listing(r.stdout)
            except Exception as e:   # reported as a warning per node
                return e
            finally:
                s.close()
        if local is not None:
            try:
                own = local.own_node_id()
            except Exception:       # asked over SSH then, as any node
                own = ""
            if own in asked:
                by_node[own] = None
        return each(ask, sorted(by_node.items()), key=lambda i: i[0])
    return run


def for_plan(compose, desired, plan, engine, nodes: list[dict] | None = None) -> None:
    """The one call from make_stack_plan: adds problems and warnings to the plan.
    The engine's `node_images` lister when it has one (tests); else the nodes are asked over
    SSH when the engine was connected to a swarmsmith cluster (engine.cluster_file); an
    engine a caller handed in without either is not checked."""
    lister = engine.node_images
    if lister is None:
        if not engine.cluster_file:
            return
        lister = ssh_lister(engine.cluster_file, local=engine)
    nodes = engine.nodes() if nodes is None else nodes
    missing: dict = {}
    problems, warnings = check_images(compose, desired, plan, nodes, lister, missing)
    plan.missing_images = missing      # for deploy --push-images
    plan.problems += problems
    plan.warnings += warnings
    problems, warnings = registry_problems(compose, desired, plan, engine)
    plan.problems += problems
    plan.warnings += warnings


def missing_on_new_nodes(services: list[dict], nodes: list[dict], lister: Lister,
                         new: set[str]) -> dict:
    """{image: {node hostname}} for the swarm's services whose image names no registry (it is
    put on nodes, not pulled) and that may run on a node of `new` (node IDs: nodes that joined
    just now) which lacks it: the next task swarm places there would be rejected."""
    cands: dict[str, list] = {}      # image -> candidate new nodes
    listed = {n["ID"]: Node.from_api(n) for n in nodes if n.get("ID") in new and usable(n)}
    for s in services:
        spec = s.get("Spec") or {}
        task = spec.get("TaskTemplate") or {}
        image = (task.get("ContainerSpec") or {}).get("Image", "")
        written = (spec.get("Labels") or {}).get("com.docker.stack.image", image)
        if not image or names_registry(written):
            continue
        constraints = (task.get("Placement") or {}).get("Constraints") or []
        for n in listed.values():
            if matches(n, constraints):
                cands.setdefault(image, []).append(n)
    if not cands:
        return {}
    listings = lister(list({n.id: n for ns in cands.values() for n in ns}.values()))
    missing: dict = {}
    for image, ns in cands.items():
        for n in ns:
            got = listings.get(n.id)
            if isinstance(got, set) and not present(image, got):
                missing.setdefault(image.split("@")[0], set()).add(n.hostname or n.id)
    return missing
