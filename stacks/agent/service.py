"""`swarmsmith agent install | status | remove`: the agent as a service of the swarm.

install: read the cluster file's `agent:` (bad input: exit 2 before anything else), build the
agent's image (provision/images/agent.py, cached) and push it to the managers over SSH (no
registry), then converge, in this order: the deploy key as a swarm secret and the git server's
host keys as a config (names carry a keyed hash of the contents, as stack secrets do, so a new
key is a new secret and the old one goes once the service no longer uses it), then the service
itself: one replica on a manager, the engine's socket mounted, settings in its environment (no
key in them: the key is a file under /run/secrets). The service carries a fingerprint of the
spec it was made from, so installing again changes nothing when nothing changed.
"""
from __future__ import annotations

import base64
import hashlib
import json
import time
from dataclasses import dataclass, field

from provision.base.errors import InputError, SwarmsmithError

SERVICE = "swarmsmith-agent"
L_AGENT = "com.swarmsmith.agent"
L_FINGERPRINT = "com.swarmsmith.agent.spec"
SOCKET = "/var/run/docker.sock"
KEY_FILE = "swarmsmith-agent-deploy-key"            # under /run/secrets
KNOWN_HOSTS_FILE = "/etc/swarmsmith-agent/known_hosts"
REGISTRY_FILE = "swarmsmith-agent-registry"        # under /run/secrets, one per registry
ENV = "SWARMSMITH_AGENT_"


@dataclass
class AgentResult:
    changes: list = field(default_factory=list)
    image: str = ""
    service: dict | None = None         # status: the service and its task
    status: dict | None = None          # status: the agent's last reconcile
    exit_code = 0

    def to_dict(self) -> dict:
        return {"changes": self.changes, "image": self.image, "service": self.service,
                "status": self.status}


def agent_settings(cluster_path: str):
    from provision.base.clusters import load_cluster
    cluster = load_cluster(cluster_path)
    if cluster.agent is None:
        raise InputError("no agent: section (repo, branch, path, interval, deploy_key) to "
                         "install from", file=cluster_path, path="agent")
    return cluster.agent


def _read(path: str, key: str, cluster_path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise InputError(f"cannot read {path}: {e.strerror}", file=cluster_path,
                         path=key) from None


def registry_credentials(cluster_path: str) -> dict:
    """The cluster file's `registries:` with their passwords read (host -> Credential)."""
    from provision.engine_api.registry_auth import Credentials
    creds = Credentials.for_cluster(cluster_path)
    return {host: creds.lookup(host) for host in sorted(creds.registries)}


def service_spec(settings, image: str, secret: dict | None, config: dict | None,
                 registries: dict | None = None) -> dict:
    """The agent's service spec; `secret` / `config`: {"ID", "Name"} of the deploy key and the
    known hosts (None: not used); `registries`: registry host -> (user name, {"ID", "Name"} of
    the secret holding its password), the way the agent's deploys send registry credentials."""
    env = {"REPO": settings.repo, "BRANCH": settings.branch, "PATH": settings.path,
           "INTERVAL": f"{settings.interval:g}",
           "CORRECT_DRIFT": "true" if settings.correct_drift else "false"}
    if settings.prune:
        # only when set: the spec of an agent installed without it stays as it was (no update)
        env["PRUNE"] = "true"
    cs: dict = {"Image": image,
                "Mounts": [{"Type": "bind", "Source": SOCKET, "Target": SOCKET}],
                "Labels": {L_AGENT: "1"}}
    if secret:
        env["DEPLOY_KEY"] = f"/run/secrets/{KEY_FILE}"
        cs["Secrets"] = [{"File": {"Name": KEY_FILE, "UID": "0", "GID": "0", "Mode": 0o400},
                          "SecretID": secret["ID"], "SecretName": secret["Name"]}]
    if config:
        env["KNOWN_HOSTS"] = KNOWN_HOSTS_FILE
        cs["Configs"] = [{"File": {"Name": KNOWN_HOSTS_FILE, "UID": "0", "GID": "0",
                                   "Mode": 0o444},
                          "ConfigID": config["ID"], "ConfigName": config["Name"]}]
    if registries:
        files = {}
        for i, (host, (user, sec)) in enumerate(sorted(registries.items())):
            target = f"{REGISTRY_FILE}-{i}"
            files[host] = {"username": user, "password_file": f"/run/secrets/{target}"}
            cs.setdefault("Secrets", []).append(
                {"File": {"Name": target, "UID": "0", "GID": "0", "Mode": 0o400},
                 "SecretID": sec["ID"], "SecretName": sec["Name"]})
        env["REGISTRIES"] = json.dumps(files, sort_keys=True)   # user names and paths only
    cs["Env"] = sorted(f"{ENV}{k}={v}" for k, v in env.items())
    spec = {"Name": SERVICE, "Labels": {L_AGENT: "1"},
            "TaskTemplate": {"ContainerSpec": cs,
                             "Placement": {"Constraints": ["node.role == manager"]},
                             "RestartPolicy": {"Condition": "any", "Delay": 2 * 10**9,
                                               "MaxAttempts": 0}},
            "Mode": {"Replicated": {"Replicas": 1}},
            # one agent at a time: the old one stops before the new one starts
            "UpdateConfig": {"Parallelism": 1, "Order": "stop-first", "FailureAction": "pause"}}
    spec["Labels"][L_FINGERPRINT] = hashlib.sha256(
        json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return spec


def _versioned(kind: str, data: bytes, key: bytes | None) -> str:
    from stacks.specs.convert import content_hash, versioned_name
    return versioned_name(f"{SERVICE}-{kind}", content_hash(SERVICE, kind, data, None, None,
                                                            secret_key=key))


def _host_tag(host: str) -> str:
    return "".join(ch if ch.isalnum() else "-" for ch in host.lower())[:20]


def _ensure(engine, kind: str, name: str, data: bytes, changes: list) -> dict:
    """The secret or config named `name` (created when missing): {"ID", "Name"}."""
    listing = engine.secrets() if kind == "secret" else engine.configs({"name": [name]})
    for obj in listing:
        if (obj.get("Spec") or {}).get("Name") == name:
            return {"ID": obj["ID"], "Name": name}
    spec = {"Name": name, "Labels": {L_AGENT: "1"}, "Data": base64.b64encode(data).decode()}
    oid = (engine.create_secret if kind == "secret" else engine.create_config)(spec)
    changes.append(f"create {kind} {name}")
    return {"ID": oid, "Name": name}


def find_service(engine) -> dict | None:
    for s in engine.services({"name": [SERVICE]}):
        if (s.get("Spec") or {}).get("Name") == SERVICE:
            return s
    return None


def converge(engine, settings, image: str, deploy_key: bytes | None,
             known_hosts: bytes | None, registries: dict | None = None) -> list:
    """Secrets, config and service as `settings` want them; the changes made. `registries`:
    host -> provision.engine_api.registry_auth.Credential (its password becomes a secret)."""
    changes: list = []
    secret = config = None
    reg_secrets = {}
    for host, cred in sorted((registries or {}).items()):
        data = cred.password.reveal().encode()
        name = _versioned(f"registry-{_host_tag(host)}", data, engine.secret_naming_key())
        reg_secrets[host] = (cred.username, _ensure(engine, "secret", name, data, changes))
    if deploy_key is not None:
        secret = _ensure(engine, "secret", _versioned("deploy-key", deploy_key,
                                                      engine.secret_naming_key()),
                         deploy_key, changes)
    if known_hosts is not None:
        config = _ensure(engine, "config", _versioned("known-hosts", known_hosts, None),
                         known_hosts, changes)
    spec = service_spec(settings, image, secret, config, reg_secrets)
    live = find_service(engine)
    if live is None:
        engine.create_service(spec)
        changes.append(f"create service {SERVICE} ({image})")
    elif ((live["Spec"].get("Labels") or {}).get(L_FINGERPRINT)
          != spec["Labels"][L_FINGERPRINT]):
        engine.update_service(live["ID"], live["Version"]["Index"], spec)
        changes.append(f"update service {SERVICE} ({image})")
    keep = {x["Name"] for x in (secret, config, *(s for _u, s in reg_secrets.values())) if x}
    changes += _remove_objects(engine, keep)
    return changes


def _remove_objects(engine, keep: set) -> list:
    """The agent's secrets and configs no longer used (best effort: swarm refuses while the
    old task still holds one; the next install removes it)."""
    from stacks.agent.status import STATUS_PREFIX
    done = []
    for kind, listing in (("secret", engine.secrets()),
                          ("config", engine.configs({"label": [L_AGENT]}))):
        for o in listing:
            spec = o.get("Spec") or {}
            name = spec.get("Name") or ""
            if (spec.get("Labels") or {}).get(L_AGENT) != "1" or name in keep \
                    or name.startswith(STATUS_PREFIX):
                continue
            try:
                engine.remove(kind, o["ID"], name)
                done.append(f"remove {kind} {name}")
            except SwarmsmithError:
                pass
    return done


def wait_running(engine, image: str, timeout: float = 120, clock=time.monotonic,
                 sleep=time.sleep) -> dict | None:
    """The agent's task once it runs `image` (None: not within `timeout`)."""
    deadline = clock() + timeout
    while True:
        for t in engine.tasks({"service": [SERVICE], "desired-state": ["running"]}):
            cs = (t.get("Spec") or {}).get("ContainerSpec") or {}
            if (t.get("Status") or {}).get("State") == "running" and \
                    cs.get("Image", "").split("@")[0] == image:
                return t
        if clock() >= deadline:
            return None
        sleep(1.0)


@dataclass
class Prepared:
    """What install reads locally, before any host is touched (bad input: exit 2 first)."""
    path: str
    settings: object
    deploy_key: bytes | None
    known_hosts: bytes | None
    registries: dict


def prepare(cluster_path: str | None) -> Prepared:
    from provision.base.clusters import find_cluster_file
    path = find_cluster_file(cluster_path)
    settings = agent_settings(path)
    key = _read(settings.deploy_key, "agent.deploy_key", path) if settings.deploy_key else None
    known = _read(settings.known_hosts, "agent.known_hosts", path) \
        if settings.known_hosts else None
    return Prepared(path, settings, key, known, registry_credentials(path))


def install(cluster_path: str | None, *, engine=None, say=None, build=None, push=None,
            wait: float = 120, prepared: Prepared | None = None) -> AgentResult:
    """Build and push the image, converge the agent's secret, config and service."""
    say = say or (lambda _m: None)
    p = prepared or prepare(cluster_path)
    if build is None:
        from provision.images.agent import build_agent_image
        build = build_agent_image
    image = build(on_progress=lambda event: say(event.message))
    say(f"agent image {image.tag}" + (" (from the cache)" if image.built.cached else ""))
    if push is None:
        from provision.images.push import push_to_cluster

        def push(archive):
            return push_to_cluster(p.path, archive=archive, nodes=["managers"],
                                   keep_compressed=True).changes
    result = AgentResult(image=image.tag)
    result.changes += push(image.built.archive)
    if engine is None:
        from provision.engine_api.access import connect
        engine = connect(p.path, shared=True).api
    result.changes += converge(engine, p.settings, image.tag, p.deploy_key, p.known_hosts,
                               p.registries)
    if wait:
        task = wait_running(engine, image.tag, wait)
        if task is None:
            raise SwarmsmithError(f"service {SERVICE}: no task runs {image.tag} after "
                                  f"{wait:.0f} s (swarmsmith ps {SERVICE})")
    return result


def status(cluster_path: str | None, *, engine=None) -> AgentResult:
    from stacks.agent.status import read_status
    if engine is None:
        from provision.engine_api.access import connect
        engine = connect(cluster_path, shared=True).api
    result = AgentResult()
    live = find_service(engine)
    if live is not None:
        cs = live["Spec"]["TaskTemplate"]["ContainerSpec"]
        tasks = engine.tasks({"service": [SERVICE]})
        tasks.sort(key=lambda t: t.get("CreatedAt", ""))
        last = tasks[-1] if tasks else {}
        result.image = cs.get("Image", "").split("@")[0]
        env = dict(e.split("=", 1) for e in cs.get("Env") or [] if "=" in e)
        result.service = {"name": SERVICE, "image": result.image,
                          "repo": env.get(ENV + "REPO", ""),
                          "branch": env.get(ENV + "BRANCH", ""),
                          "interval": env.get(ENV + "INTERVAL", ""),
                          "correct_drift": env.get(ENV + "CORRECT_DRIFT") == "true",
                          "prune": env.get(ENV + "PRUNE") == "true",
                          "task_state": (last.get("Status") or {}).get("State", ""),
                          "task_error": (last.get("Status") or {}).get("Err", ""),
                          # tasks that ended on their own (killed, crashed): swarm restarted
                          "restarts": sum(1 for t in tasks if (t.get("Status") or {}).get(
                              "State") in ("failed", "rejected", "orphaned"))}
    result.status = read_status(engine)
    return result


def remove(cluster_path: str | None, *, engine=None, clock=time.monotonic,
           sleep=time.sleep) -> AgentResult:
    from stacks.agent.status import remove_statuses
    if engine is None:
        from provision.engine_api.access import connect
        engine = connect(cluster_path, shared=True).api
    result = AgentResult()
    live = find_service(engine)
    if live is not None:
        engine.remove("service", live["ID"], SERVICE)
        result.changes.append(f"remove service {SERVICE}")
    deadline = clock() + 60
    while True:     # the old task may still hold the secret for a moment
        done = _remove_objects(engine, set())
        result.changes += done
        left = [o for o in engine.secrets()
                if ((o.get("Spec") or {}).get("Labels") or {}).get(L_AGENT) == "1"]
        if not left or clock() >= deadline:
            break
        sleep(1.0)
    result.changes += [f"remove config {n}" for n in remove_statuses(engine)]
    return result
