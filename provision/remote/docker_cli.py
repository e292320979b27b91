"""Every `docker` CLI command line run on a host, built here as data (Command): one place to read
what swarmsmith asks of a host's CLI, each a value a test can compare. Secrets (unlock keys) go
on stdin, never into the command line.

Most calls go through the Engine API (provision/engine_api/); the CLI serves where the API is
not reachable yet or not the right tool: swarm membership (init, join, leave, unlock), the
fallbacks of `facts.socket_or` where a host has no curl, and images streamed in over SSH
(`docker load`, `docker import`)."""
from __future__ import annotations

import shlex

from .command import Command

# --- fallbacks of facts.socket_or (shell fragments: the output is parsed like the API's) -----
SWARM_INFO = "docker info -f '{{json .Swarm}}'"
NODES_INSPECT = "{ ids=$(docker node ls -q) && docker node inspect $ids; }"
VERSION_AND_SWARM = "docker info -f '{{.ServerVersion}} {{json .Swarm}}'"
ENGINE_VERSION = "docker version -f '{{.Server.Version}}'"
CONFIGS_INSPECT = "docker config inspect $ids"     # the IDs in $ids
IMAGES_WITH_DIGESTS = "docker image ls --digests --format '{{.Repository}}|{{.Tag}}|{{.Digest}}'"


def config_ids(label_selector: str) -> str:
    """IDs of the configs carrying a label (`label_selector`: shell-quoted "key=value")."""
    return f"docker config ls -q --filter label={label_selector}"


def join_token(role: str) -> str:
    return f"docker swarm join-token -q {role}"


# --- the Engine API's own transport over SSH -------------------------------------------------
DIAL_STDIO = Command.of("docker", "system", "dial-stdio",
                        description="a connection to the engine's API socket")

# --- swarm membership ------------------------------------------------------------------------

def swarm_init(addr: str, *, force_new_cluster: bool = False, description: str = "swarm init"
               ) -> Command:
    force = ("--force-new-cluster",) if force_new_cluster else ()
    return Command.of("docker", "swarm", "init", *force, "--advertise-addr", addr,
                      "--listen-addr", f"{addr}:2377", description=description)


def swarm_leave(description: str, *, force: bool = True) -> Command:
    return Command.of("docker", "swarm", "leave", *(("--force",) if force else ()),
                      description=description)


def swarm_unlock(key: str, description: str) -> Command:
    return Command.of("docker", "swarm", "unlock", stdin=(key + "\n").encode(),
                      description=description)


# --- nodes -----------------------------------------------------------------------------------

def node_rm(node_id: str, description: str) -> Command:
    return Command.of("docker", "node", "rm", "--force", node_id, description=description)


def node_promote(node_id: str, description: str = "promote to manager") -> Command:
    return Command.of("docker", "node", "promote", node_id, description=description)


def node_demote(node_id: str, description: str = "demote to worker") -> Command:
    return Command.of("docker", "node", "demote", node_id, description=description)


def node_availability(node_id: str, availability: str) -> Command:
    return Command.of("docker", "node", "update", "--availability", availability, node_id,
                      description=f"set node availability to {availability}")


def node_label_add(node_id: str, label: str, description: str) -> Command:
    """`label`: "key=value"."""
    return Command.of("docker", "node", "update", "--label-add", label, node_id,
                      description=description)


def node_label_rm(node_id: str, key: str, description: str) -> Command:
    return Command.of("docker", "node", "update", "--label-rm", key, node_id,
                      description=description)


OWN_NODE_LABELS = Command.of("docker", "node", "inspect", "self", "--format",
                             "{{json .Spec.Labels}}", description="read the node's labels")

# --- services and tasks ----------------------------------------------------------------------
SERVICE_NAMES = Command.of("docker", "service", "ls", "--format", "{{.Name}}",
                           description="list the services of the swarm to leave")
SERVICES_INSPECT = Command.shell("ids=$(docker service ls -q); if [ -n \"$ids\" ]; then docker "
                                 "service inspect $ids; else echo '[]'; fi",
                                 description="list services")
RUNNING_TASKS_INSPECT = Command.shell(
    "ids=$(docker service ls -q); t=; [ -z \"$ids\" ] || t=$(docker service ps -q --no-trunc "
    "-f desired-state=running $ids); if [ -n \"$t\" ]; then docker inspect --type task $t; "
    "else echo '[]'; fi", description="list running tasks")

# --- images ----------------------------------------------------------------------------------
# one line per reference given as $@: "<ref> <image ID or ->"
IMAGE_IDS_PROBE = ('for r in "$@"; do printf "%s " "$r"; '
                   "docker image inspect -f '{{.Id}}' \"$r\" 2>/dev/null || echo -; done")
IMAGE_LOAD = Command.of("docker", "load", "-q", description="docker load")


def image_tag(image_id: str, tag: str) -> Command:
    return Command.of("docker", "tag", image_id, tag, description="tag image")


def image_label(name: str, label: str) -> str:
    """The command line printing one label of a local image."""
    fmt = '{{index .Config.Labels "%s"}}' % label
    return f"docker image inspect -f {shlex.quote(fmt)} {shlex.quote(name)}"


def image_import(name: str, changes: list[str]) -> str:
    """The command line importing a root filesystem tar from stdin as image `name`."""
    return "docker import " + " ".join(f"-c {shlex.quote(c)}" for c in changes) + \
        f" - {shlex.quote(name)}"
