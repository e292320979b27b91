"""The cluster file: schema, defaults and validation. Everything is checked before any
connection is opened; every error names the file and the key path (exit 2).

    name: demo            # required: lowercase letters, digits, '-'
    provider: lab         # lab (default) | static | digitalocean
    managers: 1           # 1, 3 or 5 (quorum-safe sizes)
    workers: 2
    ssh: {user: root, key: ~/.ssh/id_ed25519, port: 22, connect_timeout: 60,
          known_hosts: FILE}         # pinned host keys, OpenSSH known_hosts form
    advertise_address: private   # private | public | a CIDR (10.0.0.0/8) | an interface (eth1)
    labels: {all: {...}, managers: {...}, workers: {...}, <host name>: {...}}
    engine: {install: auto|distro|docker-repo|get-docker|never, version: "24.0",
             apt_proxy: http://proxy:3142, apt_mirror: http://mirror/debian,
             daemon: {<daemon.json keys>}}
    stacks: [{name: web, compose: [stack.yml], env_file: .env}]
    lab: {name: <lab name>, image: default|debian-12}   # provider settings sit under its key
    lab: {vm: true, engine_preinstalled: false|true|[<host>, ...]}   # QEMU VMs (docs/lab.md)
    static: {hosts: [{name, address, private_address, role, port, user, key, host_key}]}
    agent: {repo: URL, branch: main, path: ., interval: 60, deploy_key: FILE,
            known_hosts: FILE, correct_drift: false, prune: false}   # docs/scheduled-redeploys.md
    digitalocean: {region, size, image, ssh_key, ...}   # see docs/digitalocean.md

SSH keys with provider digitalocean: SSH uses ONE private key, and the droplets are created with
its public half. `digitalocean.ssh_key` is the public key registered with DigitalOcean; the
private key is `ssh.key` if given, else `digitalocean.ssh_private_key`, else `digitalocean.ssh_key`
without `.pub`. Giving both `ssh.key` and `digitalocean.ssh_private_key` with different paths is an
error, and so is an `ssh.key` whose `.pub` beside it is not `digitalocean.ssh_key`. Likewise
`ssh.user` and `digitalocean.user` must agree (either one sets both). The resolved key ends up in
`ClusterFile.ssh_key` and `provider_settings["ssh_private_key"]` alike, so `up`, `status` and the
provider's hosts all log in with the same key.
"""
from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass, field

import yaml

from inventory.errors import InputError
from inventory.yaml_keys import refuse_duplicate_keys

PROVIDERS = ("lab", "static", "digitalocean")
TOP_KEYS = {"name", "provider", "managers", "workers", "ssh", "advertise_address", "labels",
            "engine", "stacks", "registries", "images", "agent", *PROVIDERS}
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$")
INTERFACE_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,15}$")
LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
MAX_CONNECT_TIMEOUT = 3600
VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+~:-]{0,63}$")
URL_RE = re.compile(r"^https?://[^\s#\"'\\;]+$")
INSTALLS = ("auto", "distro", "docker-repo", "get-docker", "never")


@dataclass(frozen=True)
class WantedHost:
    name: str
    role: str


@dataclass
class StackRef:
    name: str
    compose: list[str]
    env_file: str | None = None


@dataclass
class AgentSettings:
    """`agent:`: the in-swarm reconciler that keeps the stacks equal to a git branch. Paths
    are absolute (relative ones are taken from the cluster file's folder); the deploy key's
    contents are read only when the agent is installed, and only into a swarm secret."""
    repo: str
    branch: str = "main"
    path: str = "."                 # folder of the cluster file in the repository (or the file)
    interval: float = 60.0
    deploy_key: str = ""
    known_hosts: str = ""
    correct_drift: bool = False
    prune: bool = False             # remove stacks taken out of the file (else: reported)

    @property
    def over_ssh(self) -> bool:
        return not self.repo.startswith(("https://", "http://", "file://", "/"))


@dataclass
class ClusterFile:
    path: str
    name: str
    provider: str
    managers: int
    workers: int
    ssh_user: str = "root"
    ssh_key: str = ""
    ssh_port: int = 22
    connect_timeout: float = 60.0
    advertise: str = "private"
    labels: dict = field(default_factory=dict)
    install: str = "auto"
    daemon: dict = field(default_factory=dict)
    version: str = ""           # engine version wanted ("" = whatever the install brings)
    apt_proxy: str = ""
    apt_mirror: str = ""
    stacks: list[StackRef] = field(default_factory=list)
    # registry host -> {username, password_env | password_file}: where the password is, never it
    registries: dict = field(default_factory=dict)
    push_missing_images: bool = False
    provider_settings: dict = field(default_factory=dict)
    static_hosts: list[dict] = field(default_factory=list)
    known_hosts: list = field(default_factory=list)    # inventory.hostkeys.KnownHost entries
    # ssh.known_hosts as an absolute path, and whether that file does not exist (yet): a first
    # `up` writes it with the keys it pins; until then it pins nothing
    known_hosts_file: str = ""
    known_hosts_missing: bool = False
    agent: AgentSettings | None = None

    def pinned_key(self, name: str, address: str, port: int = 22) -> str:
        """The host key this file pins for a host ("" when none): its own `host_key:`, else a
        `ssh.known_hosts` line for its address."""
        from .hostkeys import lookup
        for h in self.static_hosts:
            if h["name"] == name and h.get("host_key"):
                return h["host_key"]
        return lookup(self.known_hosts, address, port) if address else ""

    @property
    def dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def wanted_hosts(self) -> list[WantedHost]:
        if self.provider == "static":
            return [WantedHost(h["name"], h["role"]) for h in self.static_hosts]
        return ([WantedHost(f"{self.name}-manager-{i}", "manager") for i in range(1, self.managers + 1)]
                + [WantedHost(f"{self.name}-worker-{i}", "worker") for i in range(1, self.workers + 1)])

    def labels_for(self, host: str, role: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for key in ("all", role + "s", host):
            out.update(self.labels.get(key, {}))
        return out


class _Checker:
    def __init__(self, file: str):
        self.file = file
        self.errors: list[str] = []

    def err(self, path: str, msg: str) -> None:
        self.errors.append(f"{self.file}: {path}: {msg}")

    def type(self, value, types, path: str, expected: str) -> bool:
        if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
            self.err(path, f"expected {expected}, got {value!r}")
            return False
        if not isinstance(value, types):
            self.err(path, f"expected {expected}, got {_show(value)}")
            return False
        return True

    def unknown(self, mapping: dict, allowed, path: str) -> None:
        for k in mapping:
            if k not in allowed:
                where = f"{path}.{k}" if path else str(k)
                self.err(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _short(v) -> str:
    """A number as the user wrote it, cut short: 10**30 in an error line is noise."""
    text = repr(v)
    return text if len(text) <= 20 else f"{text[:8]}... ({len(text)} digits)"


def _show(v) -> str:
    if isinstance(v, str):
        return f'"{v}"'
    if v is None:
        return "nothing (null)"
    return f"{type(v).__name__} {v!r}"


def load(path: str) -> ClusterFile:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError("cluster file not found (give one with --cluster FILE, "
                         "$SWARMSMITH_CLUSTER, or ./swarmsmith.yml)", file=path)
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", file=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InputError(f"not UTF-8 text: byte 0x{raw[e.start]:02x} cannot be decoded "
                         "(save the file as UTF-8)", file=path, path=f"line {line}")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        refuse_duplicate_keys(node, path)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else None
        raise InputError(f"invalid YAML: {getattr(e, 'problem', None) or e}", file=path, path=where)
    return validate(data, path)


def validate(data, path: str) -> ClusterFile:
    c = _Checker(path)
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping at the top level, got {_show(data)}", file=path)
    c.unknown(data, TOP_KEYS, "")

    name = data.get("name")
    if name is None:
        c.err("name", "required (lowercase letters, digits and '-')")
    elif c.type(name, str, "name", "a string") and not NAME_RE.match(name):
        c.err("name", f'expected lowercase letters, digits and "-", starting with a letter, '
                      f'at most 24 characters, got "{name}"')

    provider = data.get("provider", "lab")
    if c.type(provider, str, "provider", "a string") and provider not in PROVIDERS:
        c.err("provider", f"expected one of {', '.join(PROVIDERS)}, got \"{provider}\"")
    for p in PROVIDERS:
        if p in data and p != provider:
            c.err(p, f"settings for provider {p!r}, but provider is {provider!r}")

    managers = data.get("managers", 1)
    workers = data.get("workers", 0)
    # nothing below may be sized from a count that failed here (a huge number would be a
    # huge list): counts_ok gates every use
    counts_ok = True
    if provider != "static":
        if not c.type(managers, int, "managers", "1, 3 or 5") or managers not in (1, 3, 5):
            if isinstance(managers, int) and not isinstance(managers, bool):
                c.err("managers", f"expected 1, 3 or 5 (an odd count keeps quorum), "
                                  f"got {_short(managers)}")
            counts_ok = False
        if not c.type(workers, int, "workers", "a whole number") or not 0 <= workers <= 200:
            if isinstance(workers, int) and not isinstance(workers, bool):
                c.err("workers", f"expected 0 to 200, got {_short(workers)}")
            counts_ok = False

    ssh = data.get("ssh", {}) or {}
    ssh_user, ssh_key, ssh_port, timeout = "root", "", 22, 60.0
    known_hosts: list = []
    known_hosts_file = ""
    if c.type(ssh, dict, "ssh", "a mapping"):
        c.unknown(ssh, {"user", "key", "port", "connect_timeout", "known_hosts"}, "ssh")
        known_hosts = _known_hosts(c, ssh.get("known_hosts"), path)
        if isinstance(ssh.get("known_hosts"), str):
            known_hosts_file = _known_hosts_path(ssh["known_hosts"], path)
        ssh_user = ssh.get("user", "root")
        c.type(ssh_user, str, "ssh.user", "a string")
        ssh_key = _key_path(c, ssh.get("key", ""), "ssh.key", path)
        ssh_port = ssh.get("port", 22)
        if c.type(ssh_port, int, "ssh.port", "a port number") and not 0 < ssh_port < 65536:
            c.err("ssh.port", f"expected 1-65535, got {_short(ssh_port)}")
        timeout = ssh.get("connect_timeout", 60)
        if c.type(timeout, (int, float), "ssh.connect_timeout", "seconds") and \
                not (0 < timeout <= MAX_CONNECT_TIMEOUT and math.isfinite(timeout)):
            c.err("ssh.connect_timeout", "expected a positive number of seconds, at most "
                                         f"{MAX_CONNECT_TIMEOUT}, got {_short(timeout)}")
            timeout = 60

    advertise = data.get("advertise_address", "private")
    if c.type(advertise, str, "advertise_address", "private, public, a CIDR or an interface name"):
        if advertise not in ("private", "public") and "/" in advertise:
            try:
                ipaddress.ip_network(advertise, strict=False)
            except ValueError:
                c.err("advertise_address", f'expected a CIDR like 10.0.0.0/8, got "{advertise}"')
        elif advertise not in ("private", "public") and not INTERFACE_RE.match(advertise):
            c.err("advertise_address", "expected private, public, a CIDR or an interface name, "
                                       f'got "{advertise}"')

    labels = data.get("labels", {}) or {}
    if c.type(labels, dict, "labels", "a mapping of all/managers/workers/<host> to labels"):
        for sel, kv in labels.items():
            if c.type(kv, dict, f"labels.{sel}", "a mapping of label names to values"):
                for k, v in kv.items():
                    if not isinstance(k, str) or not LABEL_KEY_RE.match(k):
                        c.err(f"labels.{sel}.{k}", "invalid label name")
                    if not isinstance(v, (str, int, float)) or isinstance(v, bool):
                        c.err(f"labels.{sel}.{k}", f"expected a string value, got {_show(v)}")
        labels = {sel: {str(k): str(v) for k, v in kv.items()} for sel, kv in labels.items()
                  if isinstance(kv, dict)}

    engine = data.get("engine", {}) or {}
    install, daemon, version, apt_proxy, apt_mirror = "auto", {}, "", "", ""
    if c.type(engine, dict, "engine", "a mapping"):
        c.unknown(engine, {"install", "daemon", "version", "apt_proxy", "apt_mirror"}, "engine")
        install = engine.get("install", "auto")
        if c.type(install, str, "engine.install", ", ".join(INSTALLS)):
            install = {"apt": "docker-repo"}.get(install, install)     # the older name
            if install not in INSTALLS:
                c.err("engine.install", f'expected one of {", ".join(INSTALLS)}, got "{install}"')
        daemon = engine.get("daemon", {}) or {}
        c.type(daemon, dict, "engine.daemon", "a mapping (daemon.json contents)")
        version = engine.get("version", "")
        if isinstance(version, (int, float)) and not isinstance(version, bool):
            c.err("engine.version", f'expected a quoted version like "24.0", got {version!r} '
                                    "(YAML reads an unquoted 24.0 as a number)")
        elif c.type(version, str, "engine.version", 'a version like "24.0"') and version \
                and not VERSION_RE.match(version):
            c.err("engine.version", f'expected a version like "24.0" or "20.10.24", got "{version}"')
        for key in ("apt_proxy", "apt_mirror"):
            v = engine.get(key, "")
            if c.type(v, str, f"engine.{key}", "an http(s) URL") and v and not URL_RE.match(v):
                c.err(f"engine.{key}", f'expected an http:// or https:// URL, got "{v}"')
        apt_proxy, apt_mirror = engine.get("apt_proxy", ""), engine.get("apt_mirror", "")
        if isinstance(apt_mirror, str):
            apt_mirror = apt_mirror.rstrip("/")

    stacks: list[StackRef] = []
    raw_stacks = data.get("stacks", []) or []
    if c.type(raw_stacks, list, "stacks", "a list"):
        for i, s in enumerate(raw_stacks):
            p = f"stacks[{i}]"
            if not c.type(s, dict, p, "a mapping with name and compose"):
                continue
            c.unknown(s, {"name", "compose", "env_file"}, p)
            compose = s.get("compose")
            if isinstance(compose, str):
                compose = [compose]
            if not isinstance(s.get("name"), str):
                c.err(f"{p}.name", f"expected a stack name, got {_show(s.get('name'))}")
            if not (isinstance(compose, list) and compose and all(isinstance(x, str) for x in compose)):
                c.err(f"{p}.compose", f"expected a compose file path or a list of them, got {_show(compose)}")
                continue
            base = os.path.dirname(os.path.abspath(path))
            files = [x if os.path.isabs(x) else os.path.join(base, x) for x in compose]
            for j, f in enumerate(files):
                if not os.path.isfile(f):
                    c.err(f"{p}.compose[{j}]", f"no such file: {f}")
            env_file = s.get("env_file")
            if env_file is not None and not isinstance(env_file, str):
                c.err(f"{p}.env_file", f"expected a path, got {_show(env_file)}")
                env_file = None
            elif env_file and not os.path.isabs(env_file):
                # like compose: relative to the file that names it, not the working directory
                env_file = os.path.join(base, env_file)
            stacks.append(StackRef(s.get("name"), files, env_file))

    registries = _registries(c, data.get("registries", {}) or {}, path)
    agent = _agent(c, data.get("agent"), path)
    images = data.get("images", {}) or {}
    push_missing = False
    if c.type(images, dict, "images", "a mapping"):
        c.unknown(images, {"push_missing"}, "images")
        push_missing = images.get("push_missing", False)
        if not c.type(push_missing, bool, "images.push_missing", "true or false"):
            push_missing = False

    settings = data.get(provider, {}) if isinstance(provider, str) else {}
    static_hosts: list[dict] = []
    if settings is None:
        settings = {}
    if c.type(settings, dict, str(provider), "a mapping of provider settings"):
        if provider == "lab":
            c.unknown(settings, {"name", "image", "vm", "engine_preinstalled"}, "lab")
            if "image" in settings and settings["image"] not in ("default", "debian-12"):
                c.err("lab.image", f"expected default or debian-12, got {_show(settings['image'])}")
            vm = settings.get("vm", False)
            if not isinstance(vm, bool):
                c.err("lab.vm", f"expected true or false, got {_show(vm)}")
            elif vm and settings.get("image", "default") != "default":
                c.err("lab.image", "VM lab hosts boot their own Debian 12 disk: leave lab.image "
                                   "out with lab.vm")
            pre = settings.get("engine_preinstalled", False)
            if not (isinstance(pre, bool) or (isinstance(pre, list)
                                              and all(isinstance(n, str) for n in pre))):
                c.err("lab.engine_preinstalled", f"expected true, false or a list of host names, "
                                                 f"got {_show(pre)}")
            elif pre and not vm:
                c.err("lab.engine_preinstalled", "applies to VM lab hosts only (lab.vm: true)")
            if "name" in settings and (not isinstance(settings["name"], str)
                                       or not NAME_RE.match(settings["name"])):
                c.err("lab.name", f"expected a lab name (lowercase letters, digits, '-'), "
                                  f"got {_show(settings['name'])}")
            if settings.get("image", "default") == "default":
                for key, v in (("apt_proxy", apt_proxy), ("apt_mirror", apt_mirror)):
                    if isinstance(v, str) and v and URL_RE.match(v):
                        c.err(f"engine.{key}", "lab hosts of the default image share this "
                              "machine's /etc, apt's settings with it (only /etc/docker, "
                              "/etc/ssh and /etc/default are their own): remove it, or use "
                              "`lab: {image: debian-12}` (hosts with their own root)")
        elif provider == "static":
            static_hosts = _static_hosts(c, settings, path)
            if not ssh_key and isinstance(ssh, dict) and any(not h["key"] for h in static_hosts):
                c.err("ssh.key", f"required for provider {provider} (path to the private key) "
                                 "unless every host under static.hosts names its own key")
        elif provider == "digitalocean":
            settings, ssh_key, ssh_user = _digitalocean(c, settings, path, ssh, ssh_key, ssh_user)

    # a label selector that names no host (a typo like `worker:`) would silently label nothing
    if isinstance(labels, dict) and isinstance(name, str):
        if provider == "static":
            names = {h["name"] for h in static_hosts}
        elif counts_ok:
            names = ({f"{name}-manager-{i}" for i in range(1, managers + 1)}
                     | {f"{name}-worker-{i}" for i in range(1, workers + 1)})
        else:
            names = None
        for sel in labels:
            if names is not None and sel not in ("all", "managers", "workers") and sel not in names:
                c.err(f"labels.{sel}", "expected all, managers, workers or a host of this cluster "
                                       f"({', '.join(sorted(names)) or 'none'})")
        # likewise a VM host named for a preinstalled engine that is no host of the cluster
        pre = settings.get("engine_preinstalled") if provider == "lab" and \
            isinstance(settings, dict) else None
        if names is not None and isinstance(pre, list):
            for i, host in enumerate(pre):
                if isinstance(host, str) and host not in names:
                    c.err(f"lab.engine_preinstalled[{i}]", f"{host} is no host of this cluster "
                                                          f"({', '.join(sorted(names))})")

    if c.errors:
        raise InputError("invalid cluster file:\n  " + "\n  ".join(c.errors)
                         if len(c.errors) > 1 else c.errors[0].split(": ", 2)[-1],
                         file=None if len(c.errors) > 1 else path,
                         path=None if len(c.errors) > 1 else c.errors[0].split(": ", 2)[1])
    if provider == "static":
        managers = sum(1 for h in static_hosts if h["role"] == "manager")
        workers = len(static_hosts) - managers
    return ClusterFile(path=path, name=name, provider=provider, managers=managers, workers=workers,
                       ssh_user=ssh_user, ssh_key=ssh_key, ssh_port=ssh_port,
                       connect_timeout=float(timeout), advertise=advertise, labels=labels,
                       install=install, daemon=daemon, version=version, apt_proxy=apt_proxy,
                       apt_mirror=apt_mirror, stacks=stacks,
                       registries=registries, push_missing_images=push_missing,
                       provider_settings=settings or {}, static_hosts=static_hosts,
                       known_hosts=known_hosts, known_hosts_file=known_hosts_file,
                       known_hosts_missing=bool(known_hosts_file)
                       and not os.path.lexists(known_hosts_file),
                       agent=agent)


def _known_hosts_path(value: str, path: str) -> str:
    file = os.path.expanduser(value)
    if not os.path.isabs(file):
        file = os.path.join(os.path.dirname(os.path.abspath(path)), file)
    return file


def load_stacks(path: str) -> list[StackRef]:
    """Only the `stacks:` of a cluster file (what the agent reads from its checkout, where the
    files the rest of the file names, keys and known_hosts, do not exist); errors as load()."""
    try:
        with open(path, "rb") as f:
            data = yaml.safe_load(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise InputError("cluster file not found in the repository", file=path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise InputError(f"cannot read: {str(e).splitlines()[0]}", file=path)
    if not isinstance(data, dict):
        raise InputError(f"expected a mapping at the top level, got {_show(data)}", file=path)
    # the stacks checked exactly as load() checks them, with nothing else of the file
    return validate({"name": data.get("name"), "provider": "lab",
                     "stacks": data.get("stacks")}, path).stacks


def _known_hosts(c: _Checker, value, path: str) -> list:
    from .hostkeys import parse_known_hosts
    if value is None:
        return []
    if not c.type(value, str, "ssh.known_hosts", "a path to a known_hosts file"):
        return []
    file = _known_hosts_path(value, path)
    try:
        with open(file, "rb") as f:
            text = f.read().decode("utf-8")
    except FileNotFoundError:
        # not made yet (`up` writes it with the keys it pins; `swarmsmith hostkeys` prints
        # them): it pins nothing, so every other command refuses unpinned hosts as usual
        if os.path.isdir(os.path.dirname(file)):
            return []
        c.err("ssh.known_hosts", f"no such folder: {os.path.dirname(file)}")
        return []
    except UnicodeDecodeError:
        c.err("ssh.known_hosts", f"{file}: not UTF-8 text")
        return []
    except OSError as e:
        c.err("ssh.known_hosts", f"{file}: {e.strerror}")
        return []
    try:
        return parse_known_hosts(text)
    except ValueError as e:
        c.err("ssh.known_hosts", f"{file}: {e}")
        return []


# ssh://[user@]host[:port]/path, scp-like user@host:path, https://host/path (no password in it)
GIT_URL_RE = re.compile(r"^(ssh://[^\s@/]+@?[^\s/]*/\S+|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:\S+"
                        r"|https?://[^\s:@/]+(:[0-9]{1,5})?/\S+|file:///\S+|/\S+)$")
BRANCH_RE = re.compile(r"^(?!.*\.\.)(?!/)[A-Za-z0-9._/-]{1,200}(?<![/.])$")
MAX_AGENT_INTERVAL = 86400


def _agent(c: _Checker, raw, path: str) -> AgentSettings | None:
    """`agent:` (see AgentSettings). A password in the repository URL is refused: the URL ends
    up in the agent's service spec, which anyone with manager access can read."""
    if raw is None:
        return None
    if not c.type(raw, dict, "agent", "a mapping with repo, branch, path, interval, deploy_key"):
        return None
    c.unknown(raw, {"repo", "branch", "path", "interval", "deploy_key", "known_hosts",
                    "correct_drift", "prune"}, "agent")
    n = len(c.errors)
    repo = raw.get("repo")
    if repo is None:
        c.err("agent.repo", "required: the git repository the agent follows (ssh:// with a "
                            "deploy key, or https://)")
    elif c.type(repo, str, "agent.repo", "a git URL"):
        if re.match(r"^https?://[^/]*:[^/]*@", repo):
            c.err("agent.repo", "a password does not belong in the repository URL: use an SSH "
                                "URL with agent.deploy_key")
        elif not GIT_URL_RE.match(repo):
            c.err("agent.repo", f'expected ssh://[user@]host/path, user@host:path or '
                                f'https://host/path, got "{repo}"')
    branch = raw.get("branch", "main")
    if c.type(branch, str, "agent.branch", "a branch name") and not BRANCH_RE.match(branch):
        c.err("agent.branch", f'expected a branch name, got "{branch}"')
    sub = raw.get("path", ".")
    if c.type(sub, str, "agent.path", "a folder inside the repository") and \
            (sub.startswith("/") or ".." in sub.split("/") or not sub):
        c.err("agent.path", f'expected a relative folder inside the repository, got "{sub}"')
    interval = raw.get("interval", 60)
    if c.type(interval, (int, float), "agent.interval", "seconds") and \
            not (1 <= interval <= MAX_AGENT_INTERVAL and math.isfinite(interval)):
        c.err("agent.interval", f"expected 1 to {MAX_AGENT_INTERVAL} seconds, "
                                f"got {_short(interval)}")
    correct = raw.get("correct_drift", False)
    c.type(correct, bool, "agent.correct_drift", "true or false")
    prune = raw.get("prune", False)
    c.type(prune, bool, "agent.prune", "true or false")
    deploy_key = _key_path(c, raw.get("deploy_key", ""), "agent.deploy_key", path)
    known = raw.get("known_hosts", "")
    known_path = ""
    if known:
        known_path = _key_path(c, known, "agent.known_hosts", path)
        if known_path and os.path.isfile(known_path):
            from .hostkeys import parse_known_hosts
            try:
                with open(known_path, encoding="utf-8") as f:
                    if not parse_known_hosts(f.read()):
                        c.err("agent.known_hosts", f"{known_path}: no host key in it")
            except (ValueError, UnicodeDecodeError) as e:
                c.err("agent.known_hosts", f"{known_path}: {e}")
    if len(c.errors) > n:
        return None
    settings = AgentSettings(repo, branch, sub.strip("/") or ".", float(interval), deploy_key,
                             known_path, correct, prune)
    if settings.over_ssh and not deploy_key:
        c.err("agent.deploy_key", "required for a repository over SSH (a private key file the "
                                  "repository accepts; it goes to the swarm as a secret)")
    if settings.over_ssh and not known_path:
        c.err("agent.known_hosts", "required for a repository over SSH (the git server's host "
                                   "key, OpenSSH known_hosts form: the agent refuses any other)")
    return settings


REGISTRY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?$")


def _registries(c: _Checker, raw, path: str) -> dict:
    """`registries: {HOST: {username, password_env | password_file}}`. A password written in
    the cluster file itself is refused: the file is often committed."""
    out: dict = {}
    if not c.type(raw, dict, "registries", "a mapping of registry hosts"):
        return out
    for host, entry in raw.items():
        p = f"registries.{host}"
        if not isinstance(host, str) or not REGISTRY_RE.match(host):
            c.err(p, "expected a registry host (ghcr.io, registry.example:5000)")
            continue
        if not c.type(entry, dict, p, "a mapping with username and password_env or password_file"):
            continue
        c.unknown(entry, {"username", "password_env", "password_file", "password"}, p)
        if "password" in entry:
            c.err(f"{p}.password", "a password does not belong in the cluster file: name an "
                                   "environment variable (password_env) or a file (password_file)")
            continue
        user = entry.get("username")
        if not isinstance(user, str) or not user:
            c.err(f"{p}.username", f"expected a user name, got {_show(user)}")
            continue
        sources = [k for k in ("password_env", "password_file") if k in entry]
        if len(sources) != 1:
            c.err(p, "expected exactly one of password_env, password_file")
            continue
        value = entry[sources[0]]
        if not isinstance(value, str) or not value:
            c.err(f"{p}.{sources[0]}", f"expected a name, got {_show(value)}")
            continue
        if sources[0] == "password_file":
            value = os.path.expanduser(value)
            if not os.path.isabs(value):
                value = os.path.join(os.path.dirname(os.path.abspath(path)), value)
        out[host] = {"username": user, sources[0]: value}
    return out


def _digitalocean(c: _Checker, settings: dict, path: str, ssh, ssh_key: str,
                  ssh_user: str) -> tuple[dict, str, str]:
    """The provider's settings with defaults, and the one private key and user SSH uses (see the
    module docstring)."""
    from inventory.digitalocean_settings import md5_fingerprint, validate_settings

    ssh = ssh if isinstance(ssh, dict) else {}
    given = dict(settings)
    if "user" in ssh and "user" not in given:
        given["user"] = ssh_user
    try:
        out = validate_settings(given, path, "digitalocean",
                                base_dir=os.path.dirname(os.path.abspath(path)))
    except InputError as e:
        c.errors.append(str(e))
        return settings, ssh_key, ssh_user
    if "user" in ssh and out["user"] != ssh_user:
        c.err("digitalocean.user", f'"{out["user"]}" differs from ssh.user "{ssh_user}" '
                                   "(set one of them)")
    key = ssh_key or out["ssh_private_key"]
    if ssh_key and "ssh_private_key" in settings and out["ssh_private_key"] != ssh_key:
        c.err("digitalocean.ssh_private_key", f"{out['ssh_private_key']} differs from ssh.key "
                                              f"{ssh_key}: SSH uses one key (set one of them)")
    elif not key:
        c.err("ssh.key", "required for provider digitalocean: the private half of "
                         f"digitalocean.ssh_key (no {out['ssh_key'].removesuffix('.pub')} found)")
    elif not os.path.isfile(key):
        if not ssh_key:     # ssh.key was checked above
            c.err("digitalocean.ssh_private_key", f"no such file: {key}")
    elif os.path.isfile(key + ".pub"):
        with open(key + ".pub") as f:
            if md5_fingerprint(f.read().strip()) != md5_fingerprint(out["_public_key"]):
                c.err("ssh.key", f"{key}.pub is not digitalocean.ssh_key {out['ssh_key']}: "
                                 "the droplets would refuse this key")
    out["ssh_private_key"] = key
    return out, key, out["user"]


def _key_path(c: _Checker, key, where: str, path: str) -> str:
    """A private key path: ~ expanded, relative to the cluster file's folder, must exist."""
    if key is None or not c.type(key, str, where, "a path to a private key") or not key:
        return ""
    key = os.path.expanduser(key)
    if not os.path.isabs(key):
        key = os.path.join(os.path.dirname(os.path.abspath(path)), key)
    if not os.path.isfile(key):
        c.err(where, f"no such file: {key}")
    return key


def _static_hosts(c: _Checker, settings: dict, path: str) -> list[dict]:
    c.unknown(settings, {"hosts"}, "static")
    hosts = settings.get("hosts")
    out: list[dict] = []
    if not c.type(hosts, list, "static.hosts", "a list of hosts") or not hosts:
        if isinstance(hosts, list):
            c.err("static.hosts", "expected at least one host")
        return out
    seen = set()
    for i, h in enumerate(hosts):
        p = f"static.hosts[{i}]"
        if not c.type(h, dict, p, "a mapping with name, address and role"):
            continue
        c.unknown(h, {"name", "address", "private_address", "role", "port", "user", "key",
                      "host_key"}, p)
        host_key = h.get("host_key")
        if host_key is not None:
            from .hostkeys import parse_key
            try:
                host_key = parse_key(host_key) if c.type(host_key, str, f"{p}.host_key",
                                                         '"KEYTYPE BASE64"') else None
            except ValueError as e:
                c.err(f"{p}.host_key", str(e))
                host_key = None
        name = h.get("name")
        if not isinstance(name, str) or not HOSTNAME_RE.match(name):
            c.err(f"{p}.name", f"expected a host name, got {_show(name)}")
        elif name in seen:
            c.err(f"{p}.name", f'duplicate host name "{name}"')
        seen.add(name)
        for key in ("address", "private_address"):
            if key in h or key == "address":
                try:
                    ipaddress.ip_address(h.get(key))
                except ValueError:
                    c.err(f"{p}.{key}", f"expected an IP address, got {_show(h.get(key))}")
        role = h.get("role", "worker")
        if role not in ("manager", "worker"):
            c.err(f"{p}.role", f"expected manager or worker, got {_show(role)}")
        port = h.get("port")
        if port is not None and c.type(port, int, f"{p}.port", "a port number") \
                and not 0 < port < 65536:
            c.err(f"{p}.port", f"expected 1-65535, got {_short(port)}")
        user = h.get("user")
        if user is not None:
            c.type(user, str, f"{p}.user", "a user name")
        key = _key_path(c, h.get("key"), f"{p}.key", path)
        out.append({"name": name, "address": h.get("address"),
                    "private_address": h.get("private_address"), "role": role,
                    "port": port, "user": user, "key": key or None,
                    "host_key": host_key or ""})
    n = sum(1 for h in out if h["role"] == "manager")
    if out and n not in (1, 3, 5):
        c.err("static.hosts", f"expected 1, 3 or 5 hosts with role manager, got {n}")
    return out


def find(explicit: str | None) -> str:
    """--cluster FILE, else $SWARMSMITH_CLUSTER, else ./swarmsmith.yml."""
    return explicit or os.environ.get("SWARMSMITH_CLUSTER") or "swarmsmith.yml"
