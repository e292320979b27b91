"""Engine step: install when missing, daemon.json only when it differs, start, verify.

Planning is pure (facts in, steps out) so it is tested with tables; apply runs the steps.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

from ..remote import docker_cli
from ..remote.command import Command
from ..base.errors import SwarmsmithError
from ..remote.facts import SOCKET, socket_get

WAIT_SECONDS = 120      # a first start on a busy host sets up its iptables chains and storage
# Until the engine answers, by the clock (not a count of tries: each `docker version` is slower
# on a loaded host). Gives up early when no dockerd has been running for 5 s (it exited: waiting
# longer cannot help), and in both cases prints the engine's last log lines as the reason.
ENGINE_LOG_TAIL = (
    "for f in /var/log/docker.log /var/log/dockerd.log; do [ -s $f ] && tail -n 6 $f; done; "
    "[ -d /run/systemd/system ] && journalctl -u docker -n 6 --no-pager 2>/dev/null; true")
LOG_TAIL = Command.shell(ENGINE_LOG_TAIL, description="read the Docker engine's last log lines")
WAIT_SERVER = Command.shell(
    # a `docker` process costs the host ~20 ms of CPU, and a dozen starting engines on shared
    # cores were each polled every 0.2 s: the engine is asked only once its socket exists
    # (dockerd makes it as it starts, and answers on it when ready), with curl where the host
    # has it, else the CLI; with DOCKER_HOST set the socket is elsewhere: the CLI, every time;
    # an engine told to listen elsewhere is asked through the CLI about once a second. Whether
    # dockerd still runs, and the clock, are checked as often.
    f"end=$(($(date +%s) + {WAIT_SECONDS})); gone=0; n=0; "
    "while :; do "
    f"if [ -z \"${{DOCKER_HOST:-}}\" ] && [ -S {SOCKET} ] && command -v curl >/dev/null; then "
    f"{socket_get('/_ping')} >/dev/null 2>&1 && break; "
    f"elif [ -n \"${{DOCKER_HOST:-}}\" ] || [ -S {SOCKET} ] || [ $((n % 5)) -eq 4 ]; then "
    f"timeout 20 {docker_cli.ENGINE_VERSION} >/dev/null 2>&1 && break; fi; "
    "n=$((n+1)); "
    "if [ $((n % 5)) -eq 0 ]; then "
    "if ! command -v pgrep >/dev/null || pgrep -x dockerd >/dev/null; then gone=0; "
    "else gone=$((gone+1)); fi; "
    f"if [ $gone -ge 5 ] || [ $(date +%s) -ge $end ]; then "
    "{ if [ $gone -ge 5 ]; then echo 'dockerd exited; its last log lines:'; "
    f"else echo 'no answer within {WAIT_SECONDS} s; the last log lines:'; fi; "
    f"{ENGINE_LOG_TAIL}; }} >&2; exit 1; fi; fi; "
    "sleep 0.2; done",
    description=f"wait until the Docker engine answers ({WAIT_SECONDS} s)")

# apt-get that never asks: keep configuration files already on the host (the admin's or the
# provider's), take the package's defaults elsewhere
APT_GET = "apt-get -y -qq -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold"

# Package $1's version $V exactly if apt has it, else the newest whose version starts with $V
# at a boundary (an epoch like "5:" aside): `version: "24.0"` finds 5:24.0.7-1~debian.12~bookworm
# and "20.10.24" 20.10.24+dfsg1-1+deb12u1.
PICK_VERSION = r"""pick() {
  ve=$(printf %s "$V" | sed 's/[.+]/[&]/g')
  apt-cache madison "$1" | awk -v v="$V" -v re="^([0-9]+:)?$ve([.+~-]|\$)" '
    { x = $3; sub(/^[0-9]+:/, "", x) }
    x == v && e == "" { e = $3 }
    $3 ~ re && p == "" { p = $3 }
    END { print (e != "" ? e : p) }'
}
# The network half of apt, bounded and tried three times: a proxy can leave apt waiting for
# good (apt-cacher-ng, three hosts fetching one index at once: one got the headers only, and
# its apt-get sat idle until `timeout` ended it, 180 s). apt sends one request at a time on a
# connection (pipelining through proxies is a known cause of such answers; in the lab the
# stall came 1 time in 11 runs without it, 3 in 8 with it), gives up on a connection silent for
# 30 s (its own default is 120 s), and fetches a failed file again itself (3 times; older apt
# tries once). Packages are downloaded first, so the install itself (dpkg, which must never be
# killed half-way) runs from apt's cache with no network left to wait for.
NET="-o Acquire::http::Pipeline-Depth=0 -o Acquire::http::Timeout=30 \
-o Acquire::https::Timeout=30 -o Acquire::Retries=3"
# apt-get update exits 0 when an index could not be fetched (a proxy's cut answer), and the
# install then finds no such package: where apt knows --error-on=any (2.1.16 and newer), a
# failed index fails the try and the next one fetches it again
ERR_ON=""
dpkg --compare-versions "$(apt-get --version | sed -n '1s/^apt \([^ ]*\).*/\1/p')" ge 2.1.16 \
  2>/dev/null && ERR_ON="--error-on=any"
update() {
  for t in 1 2 3; do
    timeout 180 apt-get update -qq $NET $ERR_ON && return 0
    echo "apt-get update failed or took over 180 s (try $t of 3)" >&2
  done
  return 1
}
fetch() {
  for t in 1 2 3; do
    timeout 600 $APT_GET $NET install --download-only "$@" >/dev/null && return 0
    echo "downloading $* failed or took over 600 s (try $t of 3)" >&2
  done
  return 1
}
"""

DISTRO_INSTALL = r"""set -e
update
pkg=docker.io
if [ -n "$V" ]; then
  found=$(pick docker.io)
  [ -n "$found" ] || { echo "docker.io $V is not available from this host's apt sources" \
    "(available: $(apt-cache madison docker.io | awk '{print $3}' | tr '\n' ' '))" >&2; exit 1; }
  pkg="docker.io=$found"
fi
fetch --allow-downgrades $REINSTALL "$pkg"
$APT_GET install --allow-downgrades $REINSTALL "$pkg" >/dev/null
"""

DOCKER_REPO_INSTALL = r"""set -e
. /etc/os-release
update
fetch ca-certificates curl
$APT_GET install ca-certificates curl >/dev/null
install -m 0755 -d /etc/apt/keyrings
if ! curl -fsSL --max-time 30 "https://download.docker.com/linux/$ID/gpg" -o /etc/apt/keyrings/docker.asc.tmp; then
  rm -f /etc/apt/keyrings/docker.asc.tmp
  [ "$FALLBACK" = 1 ] || { echo "Docker's apt repository (download.docker.com) is unreachable" >&2; exit 1; }
  echo "FALLBACK: Docker's apt repository (download.docker.com) is unreachable"
  DISTRO
  exit 0
fi
mv /etc/apt/keyrings/docker.asc.tmp /etc/apt/keyrings/docker.asc
chmod a+r /etc/apt/keyrings/docker.asc
echo "deb [arch=$(dpkg --print-architecture) signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/$ID $VERSION_CODENAME stable" > /etc/apt/sources.list.d/docker.list
update
pkgs="docker-ce docker-ce-cli containerd.io"
if [ -n "$V" ]; then
  ce=$(pick docker-ce); cli=$(pick docker-ce-cli)
  [ -n "$ce" ] && [ -n "$cli" ] || { echo "docker-ce $V is not in Docker's apt repository" >&2; exit 1; }
  pkgs="docker-ce=$ce docker-ce-cli=$cli containerd.io"
fi
fetch --allow-downgrades $REINSTALL $pkgs
$APT_GET install --allow-downgrades $REINSTALL $pkgs >/dev/null
"""

# a private folder (mktemp -d: mode 0700, unpredictable name): a fixed path in /tmp lets
# another local user plant or swap the script that then runs as root
GET_DOCKER_INSTALL = ("set -e; d=$(mktemp -d); trap 'rm -rf \"$d\"' EXIT; "
                      "curl -fsSL https://get.docker.com -o \"$d/get-docker.sh\"; "
                      "VERSION=\"$V\" sh \"$d/get-docker.sh\"")

FALLBACK_MARK = "FALLBACK: "
INSTALLS = ("auto", "distro", "docker-repo", "get-docker", "never")
ALIASES = {"apt": "docker-repo"}     # the older name


@dataclass(frozen=True)
class AptSettings:
    """How the host reaches packages: a proxy (Acquire::http(s)::Proxy) and/or a Debian/Ubuntu
    mirror that replaces the archive URLs of its sources."""
    proxy: str = ""
    mirror: str = ""


PROXY_FILE = "/etc/apt/apt.conf.d/90swarmsmith-proxy"
MIRROR_FILE = "/etc/apt/swarmsmith-mirror"
# Files under /etc/apt are replaced whole, through a temporary file of a unique name beside
# them (a fixed name lets two writers on one /etc collide: one's mv finds the file gone).
MIRROR_SCRIPT = r"""set -e
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  sed -i -E "s#https?://[^ ]+/(debian|ubuntu)/?( |\$)#$M\2#" "$f"
done
t=$(mktemp /etc/apt/.swarmsmith-mirror.XXXXXX)
printf '%s\n' "$M" > "$t" && chmod 644 "$t" && mv -f "$t" """ + MIRROR_FILE + "\n"


def _sh_assign(name: str, value: str) -> str:
    return f"{name}={shlex.quote(value)}\n"


def install_script(install: str, os_family: set[str], version: str = "",
                   reinstall: bool = False) -> tuple[str, str]:
    """(change text, shell script) for installing the engine; pure."""
    install = ALIASES.get(install, install)
    head = ("export DEBIAN_FRONTEND=noninteractive\n" + _sh_assign("V", version) + _sh_assign("APT_GET", APT_GET)
            + _sh_assign("REINSTALL", "--reinstall" if reinstall else "") + PICK_VERSION)
    debianish = bool(os_family & {"debian", "ubuntu"})
    if install == "distro":
        return "engine installed (the distribution's docker.io)", head + DISTRO_INSTALL
    if install == "docker-repo" or (install == "auto" and debianish):
        fallback = "1" if install == "auto" else "0"
        distro = DISTRO_INSTALL.replace("set -e\n", "")
        return ("engine installed (Docker apt repository)",
                head + _sh_assign("FALLBACK", fallback)
                + DOCKER_REPO_INSTALL.replace("  DISTRO\n", distro))
    return ("engine installed (get.docker.com" + ("" if install == "get-docker" else
            f"; {'/'.join(sorted(os_family - {''})) or 'this OS'} is not Debian or Ubuntu") + ")",
            head + GET_DOCKER_INSTALL)


def fallback_change(stdout: str) -> str | None:
    """The install's own account when auto fell back to the distribution's package."""
    for line in stdout.splitlines():
        if line.startswith(FALLBACK_MARK):
            return f"engine installed (the distribution's docker.io: {line[len(FALLBACK_MARK):]})"
    return None


def apt_steps(facts: dict, apt: AptSettings) -> list["Step"]:
    """Proxy and mirror, just before an install; only where the host differs. plan() asks for
    them only when it installs: apt's settings are how a host reaches packages, and a host that
    installs nothing keeps its own (nothing in /etc/apt changes)."""
    if not facts.get("apt"):
        return []
    steps = []
    if apt.mirror and facts.get("apt_mirror") != apt.mirror:
        steps.append(Step(f"apt mirror set to {apt.mirror}", Command.shell(
            _sh_assign("M", apt.mirror) + MIRROR_SCRIPT, description="point apt at the mirror")))
    if (facts.get("apt_proxy") or "") != apt.proxy:
        if apt.proxy:
            body = (f'Acquire::http::Proxy "{apt.proxy}";\n'
                    f'Acquire::https::Proxy "{apt.proxy}";\n').encode()
            # the temporary file outside apt.conf.d: apt would read a half-written one there
            steps.append(Step(f"apt proxy set to {apt.proxy}", Command.shell(
                "t=$(mktemp /etc/apt/.swarmsmith-proxy.XXXXXX) && "
                f"{{ cat > \"$t\" && chmod 644 \"$t\" && mv -f \"$t\" {PROXY_FILE}; }} "
                "|| { rm -f \"$t\"; exit 1; }",
                description="write apt's proxy setting", stdin=body)))
        else:
            steps.append(Step("apt proxy setting removed", Command.shell(
                f"rm -f {PROXY_FILE}", description="remove apt's proxy setting")))
    return steps


def version_matches(running: str, wanted: str) -> bool:
    """`wanted` "24.0" matches 24.0.7; "20.10.24" matches 20.10.24+dfsg1."""
    if not wanted:
        return True
    return running == wanted or any(running.startswith(wanted + sep) for sep in ".+~-")


@dataclass(frozen=True)
class Step:
    change: str          # what the summary says
    command: Command
    timeout: float = 300.0

    @property
    def installs(self) -> bool:
        return self.change.startswith("engine installed")


INSTALL_TIMEOUT = 1800.0    # a slow mirror or a busy host: apt may take minutes


def desired_daemon(engine_defaults: dict, user_daemon: dict) -> dict:
    """Provider needs first (lab: cgroup-parent), the user's settings win."""
    return {**engine_defaults, **user_daemon}


def plan(facts: dict, daemon: dict, install: str, apt: AptSettings | None = None,
         version: str = "") -> list[Step]:
    """Steps in order. An install step's successors are a guess from facts gathered before it
    (the package decides between systemd and an init script): apply() plans again after it."""
    installs = not facts.get("dockerd")
    steps: list[Step] = list(apt_steps(facts, apt or AptSettings())) if installs else []
    write = facts.get("daemon_json") != daemon and (daemon or facts.get("daemon_json_present"))
    if write:
        # before the install: the packages start dockerd themselves (systemd), and a daemon.json
        # written after that would only be read at the next restart, which no later run makes
        body = (json.dumps(daemon, indent=2, sort_keys=True) + "\n").encode()
        steps.append(Step("daemon.json updated" if facts.get("daemon_json_present") else "daemon.json written",
                          Command.shell("mkdir -p /etc/docker && cat > /etc/docker/daemon.json.tmp && "
                                        "mv /etc/docker/daemon.json.tmp /etc/docker/daemon.json",
                                        description="write /etc/docker/daemon.json", stdin=body)))
    if installs:
        steps.append(_install_step(facts, install, version))
    running = bool(facts.get("server"))
    if not running:
        steps.append(Step(f"engine started ({_manager(facts)})", _start(facts)))
    elif write:
        steps.append(Step(f"engine restarted for daemon.json ({_manager(facts)})", _restart(facts)))
    if steps:
        steps.append(Step("", WAIT_SERVER))
    return steps


def _install_step(facts: dict, install: str, version: str = "") -> Step:
    if install == "never":
        raise SwarmsmithError("Docker is not installed and engine.install is never")
    family = {facts.get("os", "")} | set(facts.get("os_like", "").split())
    change, script = install_script(install, family, version)
    return Step(change, Command.shell(script, description="install the Docker engine"),
                timeout=INSTALL_TIMEOUT)


def _manager(facts: dict) -> str:
    if facts.get("systemd"):
        return "systemd"
    if facts.get("initscript"):
        return "init script"
    return "dockerd directly"


PIDFILE = "/var/run/docker.pid"
SSD_PIDFILE = "/var/run/docker-ssd.pid"     # Debian's init script's record of what it started


def _wait_exit(tenths: int, give_up: str = "exit 1") -> str:
    """Shell: wait until the process whose pid is in $p (if any) has exited, polling every
    0.1 s, `give_up` after `tenths` polls. dockerd removes its pid file as it finishes shutting
    down, then runs on for a while (seconds on a loaded host, its containerd connection
    retried): a wait on the file alone lets the next engine start beside the old one."""
    return ("i=0; while [ -n \"$p\" ] && kill -0 \"$p\" 2>/dev/null; do "
            f"i=$((i+1)); [ $i -gt {tenths} ] && {give_up}; sleep 0.1; done")


def _kill_and_wait() -> str:
    """Shell: stop the dockerd of the pid file and wait until its process has exited."""
    return (f"p=$(cat {PIDFILE} 2>/dev/null); [ -z \"$p\" ] || kill \"$p\" 2>/dev/null; "
            + _wait_exit(600))


def _start(facts: dict) -> Command:
    if facts.get("systemd"):
        return Command.of("systemctl", "enable", "--now", "docker", description="start Docker (systemd)")
    if facts.get("initscript"):
        # an engine still shutting down (its pid file already gone) is waited for first: the
        # init script asks whether the process it recorded still runs, takes the exiting engine
        # for a running one, and starts nothing
        return Command.shell(f"if [ ! -e {PIDFILE} ]; then p=$(cat {SSD_PIDFILE} 2>/dev/null); "
                             f"{_wait_exit(300, give_up='break')}; fi; "
                             "/etc/init.d/docker start >/dev/null", description="start Docker (init script)")
    return Command.shell("setsid -f dockerd >>/var/log/dockerd.log 2>&1 </dev/null",
                         description="start dockerd")


def _restart(facts: dict) -> Command:
    if facts.get("systemd"):
        return Command.of("systemctl", "restart", "docker", description="restart Docker (systemd)")
    if facts.get("initscript"):
        return Command.shell("/etc/init.d/docker restart >/dev/null", description="restart Docker (init script)")
    return Command.shell(f"{_kill_and_wait()}; setsid -f dockerd >>/var/log/dockerd.log 2>&1 </dev/null",
                         description="restart dockerd")


def stop_command(facts: dict) -> Command:
    """Stop the engine the way it was started (systemd also holds docker.socket, which would
    start it again on the next API call). Waits until dockerd is gone."""
    if facts.get("systemd"):
        return Command.of("systemctl", "stop", "docker.socket", "docker",
                          description="stop Docker (systemd)")
    if facts.get("initscript"):
        # the init script waits for the process it started (up to 10 s, then gives up quietly)
        return Command.shell(f"p=$(cat {PIDFILE} 2>/dev/null); /etc/init.d/docker stop >/dev/null; "
                             + _wait_exit(600), description="stop Docker (init script)")
    return Command.shell(_kill_and_wait(), description="stop dockerd")


def start_commands(facts: dict) -> list[Command]:
    """Start the engine and wait until it answers."""
    return [_start(facts), WAIT_SERVER]
