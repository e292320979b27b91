"""Engine step: install when missing, daemon.json only when it differs, start, verify.

Planning is pure (facts in, steps out) so it is tested with tables; apply runs the steps.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from .command import Command
from .errors import SwarmsmithError

WAIT_SERVER = Command.shell(
    "i=0; while ! docker version -f '{{.Server.Version}}' >/dev/null 2>&1; do "
    "i=$((i+1)); [ $i -gt 300 ] && { tail -n 20 /var/log/docker.log /var/log/dockerd.log "
    "2>/dev/null; exit 1; }; sleep 0.1; done",
    description="wait until the Docker engine answers (30 s)")

APT_INSTALL = r"""set -e
export DEBIAN_FRONTEND=noninteractive
. /etc/os-release
apt-get update -qq
apt-get install -y -qq ca-certificates curl >/dev/null
install -m 0755 -d /etc/apt/keyrings
curl -fsSL "https://download.docker.com/linux/$ID/gpg" -o /etc/apt/keyrings/docker.asc
chmod a+r /etc/apt/keyrings/docker.asc
echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/$ID $VERSION_CODENAME stable" > /etc/apt/sources.list.d/docker.list
apt-get update -qq
apt-get install -y -qq docker-ce docker-ce-cli containerd.io >/dev/null
"""
# a private folder (mktemp -d: mode 0700, unpredictable name): a fixed path in /tmp lets
# another local user plant or swap the script that then runs as root
GET_DOCKER_INSTALL = ("set -e; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; "
                      "curl -fsSL https://get.docker.com -o \"$d/get-docker.sh\"; "
                      "sh \"$d/get-docker.sh\"")


@dataclass(frozen=True)
class Step:
    change: str          # what the summary says
    command: Command


def desired_daemon(engine_defaults: dict, user_daemon: dict) -> dict:
    """Provider needs first (lab: cgroup-parent), the user's settings win."""
    return {**engine_defaults, **user_daemon}


def plan(facts: dict, daemon: dict, install: str) -> list[Step]:
    steps: list[Step] = []
    write = facts.get("daemon_json") != daemon and (daemon or facts.get("daemon_json_present"))
    if write:
        # before the install: the packages start dockerd themselves (systemd), and a daemon.json
        # written after that would only be read at the next restart, which no later run makes
        body = (json.dumps(daemon, indent=2, sort_keys=True) + "\n").encode()
        steps.append(Step("daemon.json updated" if facts.get("daemon_json_present") else "daemon.json written",
                          Command.shell("mkdir -p /etc/docker && cat > /etc/docker/daemon.json.tmp && "
                                        "mv /etc/docker/daemon.json.tmp /etc/docker/daemon.json",
                                        description="write /etc/docker/daemon.json", stdin=body)))
    if not facts.get("dockerd"):
        steps.append(_install_step(facts, install))
    running = bool(facts.get("server"))
    if not running:
        steps.append(Step(f"engine started ({_manager(facts)})", _start(facts)))
    elif write:
        steps.append(Step(f"engine restarted for daemon.json ({_manager(facts)})", _restart(facts)))
    if steps:
        steps.append(Step("", WAIT_SERVER))
    return steps


def _install_step(facts: dict, install: str) -> Step:
    if install == "never":
        raise SwarmsmithError("Docker is not installed and engine.install is never")
    family = {facts.get("os", "")} | set(facts.get("os_like", "").split())
    if install == "apt" or (install == "auto" and family & {"debian", "ubuntu"}):
        return Step("engine installed (Docker apt repository)",
                    Command.shell(APT_INSTALL, description="install Docker from its apt repository"))
    return Step("engine installed (get.docker.com)",
                Command.shell(GET_DOCKER_INSTALL, description="install Docker with get.docker.com"))


def _manager(facts: dict) -> str:
    if facts.get("systemd"):
        return "systemd"
    if facts.get("initscript"):
        return "init script"
    return "dockerd directly"


def _start(facts: dict) -> Command:
    if facts.get("systemd"):
        return Command.of("systemctl", "enable", "--now", "docker", description="start Docker (systemd)")
    if facts.get("initscript"):
        return Command.shell("/etc/init.d/docker start >/dev/null", description="start Docker (init script)")
    return Command.shell("setsid -f dockerd >>/var/log/dockerd.log 2>&1 </dev/null",
                         description="start dockerd")


def _restart(facts: dict) -> Command:
    if facts.get("systemd"):
        return Command.of("systemctl", "restart", "docker", description="restart Docker (systemd)")
    if facts.get("initscript"):
        return Command.shell("/etc/init.d/docker restart >/dev/null", description="restart Docker (init script)")
    return Command.shell("kill $(cat /var/run/docker.pid) && while [ -e /var/run/docker.pid ]; do sleep 0.1; done; "
                         "setsid -f dockerd >>/var/log/dockerd.log 2>&1 </dev/null", description="restart dockerd")
