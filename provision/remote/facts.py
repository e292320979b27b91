"""Facts: a command plus a parser of its output. One SSH round trip gathers each set."""
from __future__ import annotations

import json
import re
import shlex
from urllib.parse import quote

from . import docker_cli
from .command import Command

# the engine's socket, asked with curl where the host has it: a `docker` CLI process costs the
# host ~20 ms of CPU each, curl a few; without curl (or with another socket) the CLI answers
SOCKET = "/var/run/docker.sock"
_CURL = f"curl -sf --max-time 30 --unix-socket {SOCKET}"


def socket_get(path: str) -> str:
    """A shell command that GETs `path` (with its query) from the engine's socket with curl;
    it fails, printing nothing, where the host lacks curl or the socket, or the engine says
    no: callers fall back to the `docker` CLI."""
    return f"{_CURL} {shlex.quote('http://localhost' + path)}"


def socket_or(path: str, cli: str) -> str:
    """A shell command that prints the engine's answer for `path` through its socket (kept
    whole: a transfer cut short prints nothing), else runs `cli`, a `docker` command that
    prints the same facts in its own form."""
    return f"out=$({socket_get(path)}) && printf '%s\\n' \"$out\" || {cli}"


def socket_post(path: str) -> str:
    """A shell command that POSTs the request on its stdin (a join token never in a process's
    arguments) to `path` on the engine's socket; then prints the answer's status line, and the
    engine's info (the node's swarm state after it) after a `---info---` marker. Its exit
    status is the POST's: 127 (no curl) or 7 (no socket to connect to) means nothing was sent,
    and the caller uses the CLI or the Engine API client instead."""
    return (f"curl -s --max-time 120 --unix-socket {SOCKET} -X POST "
            "-H 'Content-Type: application/json' --data-binary @- -w '\\n%{http_code}' "
            f"{shlex.quote('http://localhost' + path)}; rc=$?; "
            f"if [ $rc -eq 0 ]; then echo; echo ---info---; {socket_get('/info')}; fi; "
            "exit $rc")


# engine and swarm state in one engine call, and no other process than `ip` and `cat` (a no-op
# run costs one round trip per host, and every fork is paid by every host on every run)
_FACTS_SCRIPT = r"""
. /etc/os-release 2>/dev/null || true
echo "os=${ID:-unknown}"; echo "os_like=${ID_LIKE:-}"; echo "codename=${VERSION_CODENAME:-}"
hn=""; { read -r hn < /proc/sys/kernel/hostname; } 2>/dev/null || [ -n "$hn" ] || hn=$(hostname)
echo "hostname=$hn"
printf 'dockerd='; command -v dockerd || echo
if [ -d /run/systemd/system ]; then echo systemd=1; else echo systemd=0; fi
if [ -x /etc/init.d/docker ]; then echo initscript=1; else echo initscript=0; fi
if command -v apt-get >/dev/null; then echo apt=1; else echo apt=0; fi
p=""; { while IFS= read -r l || [ -n "$l" ]; do case $l in 'Acquire::http::Proxy "'*'";') p=${l#*\"}; p=${p%\";} ;; esac; done < /etc/apt/apt.conf.d/90swarmsmith-proxy; } 2>/dev/null
echo "apt_proxy=$p"
m=""; { read -r m < /etc/apt/swarmsmith-mirror; } 2>/dev/null
echo "apt_mirror=$m"
# swarm state in the engine's default data folder: a stopped engine without it starts in no
# swarm (0); unknown (?) where the folder cannot be searched
if [ -e /var/lib/docker/swarm/state.json ] || [ -e /var/lib/docker/swarm/docker-state.json ]; then echo swarm_on_disk=1
elif [ ! -e /var/lib/docker ] || [ -x /var/lib/docker ]; then echo swarm_on_disk=0; else echo 'swarm_on_disk=?'; fi
echo "addresses=$(ip -4 -o addr show 2>/dev/null | while read -r _ dev _ cidr _; do printf '%s=%s ' "$dev" "$cidr"; done)"
if info=$(GET_INFO 2>/dev/null); then
  api=1; echo "---info---"; printf '%s\n' "$info"
else
  # the CLI where curl is missing or the engine listens elsewhere; not for an engine that
  # has neither its socket nor its pid file (stopped: the CLI would only fail, slower)
  api=0; info=""
  if [ -n "${DOCKER_HOST:-}" ] || [ -e SOCK ] || [ -e /var/run/docker.pid ]; then
    info=$(DOCKER_INFO 2>/dev/null) || info=""
  fi
  echo "server=${info%% *}"
  echo "---swarm---"
  printf '%s\n' "${info#* }"    # not echo: dash's echo turns the JSON's escapes into newlines
fi
echo "---daemon.json---"
cat /etc/docker/daemon.json 2>/dev/null || true
""".replace("GET_INFO", socket_get("/info")).replace("SOCK", SOCKET) \
    .replace("DOCKER_INFO", docker_cli.VERSION_AND_SWARM)
ENGINE_FACTS = Command.shell(_FACTS_SCRIPT, description="gather engine and swarm facts")


def host_facts(cluster: str, label: str) -> Command:
    """ENGINE_FACTS plus, on a manager, the configs labelled `label=cluster` (the cluster's
    record): a no-op run reads the record in the same round trip, without the Engine API."""
    sel = shlex.quote(f"{label}={cluster}")
    get = socket_get("/configs?filters=" + quote(json.dumps({"label": [f"{label}={cluster}"]},
                                                             separators=(",", ":"))))
    return Command.shell(_FACTS_SCRIPT + f"""case "$info" in *'"ControlAvailable":true'*|*'"ControlAvailable": true'*)
  if [ "$api" = 1 ] && recs=$({get}); then
    echo; echo "---records---"; printf '%s\\n' "$recs"
  elif ids=$({docker_cli.config_ids(sel)}); then
    echo; echo "---records---"
    [ -z "$ids" ] || {docker_cli.CONFIGS_INSPECT}
  fi ;;
esac
true
""", description="gather engine and swarm facts, and the cluster's record")

def after(script: Command) -> Command:
    """A shell command, then ENGINE_FACTS, in one round trip (wait for a started engine)."""
    return Command.shell(script.argv[-1] + _FACTS_SCRIPT,
                         description=f"{script.description}, then gather engine facts")


_SECTION = re.compile(r"^---(info|swarm|daemon\.json|records)---$", re.M)


def parse_engine_facts(out: str) -> dict:
    parts = _SECTION.split(out)
    head, sections = parts[0], dict(zip(parts[1::2], parts[2::2]))
    daemon, records = sections.get("daemon.json", ""), sections.get("records")
    facts: dict = {}
    for line in head.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            facts[k.strip()] = v.strip()
    facts["systemd"] = facts.get("systemd") == "1"
    facts["initscript"] = facts.get("initscript") == "1"
    facts["apt"] = facts.get("apt") == "1"
    facts["interfaces"] = {}
    for item in facts.pop("addresses", "").split():
        dev, _, cidr = item.partition("=")
        facts["interfaces"].setdefault(dev, []).append(cidr)
    daemon = daemon.strip()
    try:
        facts["daemon_json"] = json.loads(daemon) if daemon else None
        facts["daemon_json_valid"] = True
    except ValueError:
        facts["daemon_json"], facts["daemon_json_valid"] = None, False
    facts["daemon_json_present"] = bool(daemon)
    # the record's configs as the Engine API lists them; None: not read (not a manager)
    facts["records"] = None
    if records is not None:
        try:
            listed = json.loads(records.strip() or "[]")
            facts["records"] = listed if isinstance(listed, list) else None
        except ValueError:
            pass
    if "info" in sections:      # the engine's whole /info, through its socket
        try:
            info = json.loads(sections["info"])
        except ValueError:
            info = None
        info = info if isinstance(info, dict) else {}
        facts["server"] = str(info.get("ServerVersion") or "")
        swarm = info.get("Swarm") if facts["server"] else None
        facts["swarm"] = swarm_facts(swarm if isinstance(swarm, dict) else {})
        return facts
    swarm = sections.get("swarm", "").strip() if facts.get("server") else ""
    try:
        facts["swarm"] = parse_swarm_facts(swarm if swarm.startswith("{") else "")
    except ValueError:
        facts["swarm"] = parse_swarm_facts("")
        facts["swarm"]["state"] = "error"
    return facts


# the engine's info through its socket where the host has curl, else the CLI's `Swarm` part: a
# `docker` process costs the host ~20 ms of CPU
SWARM_FACTS = Command.shell(socket_or("/info", docker_cli.SWARM_INFO),
                            description="read swarm state")


def parse_swarm_facts(out: str) -> dict:
    """From SWARM_FACTS: the whole info (curl) or its `Swarm` part (the CLI)."""
    info = json.loads(out.strip() or "{}")
    if isinstance(info, dict) and "LocalNodeState" not in info and "Swarm" in info:
        info = info["Swarm"]
    return swarm_facts(info if isinstance(info, dict) else {})


def swarm_facts(s: dict) -> dict:
    """The fields the swarm step uses, from the engine's `Swarm` info."""
    return {
        "state": s.get("LocalNodeState", "inactive"),   # inactive | pending | active | error | locked
        "node_id": s.get("NodeID", ""),
        "node_addr": s.get("NodeAddr", ""),
        "is_manager": bool(s.get("ControlAvailable")),
        "cluster_id": (s.get("Cluster") or {}).get("ID", ""),
        "remote_managers": [m.get("Addr") for m in (s.get("RemoteManagers") or [])],
        "error": s.get("Error", ""),
    }


NODES = Command.shell(socket_or("/nodes", docker_cli.NODES_INSPECT),
                      description="list swarm nodes")


def parse_nodes(out: str) -> list[dict]:
    return node_rows(json.loads(out or "[]"))


def node_rows(listing: list[dict]) -> list[dict]:
    """The fields the swarm step uses, from `docker node inspect` or the Engine API's listing."""
    nodes = []
    for n in listing:
        ms = n.get("ManagerStatus") or {}
        nodes.append({
            "id": n["ID"],
            # a node that joined a moment ago has not reported its description yet
            "hostname": (n.get("Description") or {}).get("Hostname", ""),
            "role": n["Spec"].get("Role", "worker"),
            "labels": n["Spec"].get("Labels") or {},
            "availability": n["Spec"].get("Availability", "active"),
            "state": n["Status"].get("State", ""),
            "addr": n["Status"].get("Addr", ""),
            "reachability": ms.get("Reachability", ""),
            "leader": bool(ms.get("Leader")),
            "manager_addr": ms.get("Addr", ""),
        })
    return nodes
