"""Create, check and dismantle one lab host (namespaces, veths, mounts, sshd)."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

from ...base.errors import SwarmsmithError
from ...base.localrun import ok, run
from .layout import HostLayout

SSHD_CONFIG = """\
# written by swarmsmith lab: key-only root login on this host's own addresses
ListenAddress {public}
ListenAddress {private}
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# root's home is shared with the machine: keep the lab's key out of it
AuthorizedKeysFile /etc/ssh/authorized_keys
PidFile /run/sshd.pid
UseDNS no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
"""

# Debian's init script raises limits it may not (no CAP_SYS_RESOURCE here): keep going.
DOCKER_DEFAULTS = 'ulimit() { command ulimit "$@" 2>/dev/null || true; }\n'

# Runs inside the new mount+UTS namespaces (already in the host's netns).
SETUP_SCRIPT = r"""
hostname "$HOSTNAME_"
# /sys must show this netns; keep the machine's cgroup mounts
cg=$(mktemp -d /tmp/swsm-cg.XXXXXX)
mount --rbind /sys/fs/cgroup "$cg"
umount -l /sys
mount -t sysfs sysfs /sys
mount --move "$cg" /sys/fs/cgroup
rmdir "$cg"
# drop references to other hosts' namespace files, or they outlive `ip netns del`
umount -l /run/netns 2>/dev/null || true
umount -l "$NSDIR" 2>/dev/null || true
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/sshd /run/lock
for pair in $BINDS; do
  mount --bind "${pair%%=*}" "${pair#*=}"
done
mount --bind "$HOSTDIR/hosts" /etc/hosts
mount --bind "$HOSTDIR/resolv.conf" /etc/resolv.conf
"""


# Runs inside the new mount+UTS namespaces of a host with its own root: an overlayfs over the
# shared image, the kernel's file systems inside it, then pivot_root so that whoever enters
# the mount namespace (nsenter, sshd's sessions) sees only the host's own root.
OWN_ROOT_SCRIPT = r"""
hostname "$HOSTNAME_"
R="$MERGED"
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$UPPER,workdir=$WORK" "$R"
mount --rbind /dev "$R/dev"
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount --rbind /sys/fs/cgroup "$R/sys/fs/cgroup"
mount -t tmpfs -o mode=755 tmpfs "$R/run"
mkdir -p "$R/run/sshd" "$R/run/lock"
for pair in $BINDS; do
  mkdir -p "$R${pair#*=}"
  mount --bind "${pair%%=*}" "$R${pair#*=}"
done
mount --bind "$HOSTDIR/hosts" "$R/etc/hosts"
mount --bind "$HOSTDIR/resolv.conf" "$R/etc/resolv.conf"
mkdir -p "$R/.machine"
cd "$R"
pivot_root . .machine
cd /
# the machine's mounts (and other hosts' namespace files) are dropped with the old root
umount -l /.machine
rmdir /.machine
"""

APT_PROXY_NAME = "apt-proxy.lab"


def _write(path: str, text: str, mode: int = 0o644) -> None:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def prepare_files(h: HostLayout, authorized_key: str) -> None:
    """Private folders and their contents; existing data (/var/lib/docker) is kept."""
    for src in h.private_dirs():
        os.makedirs(src, exist_ok=True)
    etc_ssh = os.path.join(h.dir, "etc-ssh")
    etc_default = os.path.join(h.dir, "etc-default")
    key = os.path.join(etc_ssh, "ssh_host_ed25519_key")
    if not os.path.exists(key):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", key])
    _write(os.path.join(etc_ssh, "sshd_config"),
           SSHD_CONFIG.format(public=h.public_address, private=h.private_address))
    _write(os.path.join(etc_ssh, "authorized_keys"), authorized_key, 0o600)
    hosts = f"127.0.0.1\tlocalhost\n{h.private_address}\t{h.name}\n"
    if h.own_root:
        for d in (h.root_upper, h.root_work, h.root_merged):
            os.makedirs(d, exist_ok=True)
        # the lab's apt proxy under a name a cluster file can use on any lab
        _write(h.hosts_file, hosts + f"{h.lab.public_gateway}\t{APT_PROXY_NAME}\n")
        _write(h.resolv_file, "# lab hosts have no DNS and no route out\nnameserver 127.0.0.1\n")
        return
    os.chmod(os.path.join(h.dir, "root-home"), 0o700)
    if not os.path.exists(os.path.join(etc_default, "locale")) and os.path.isdir("/etc/default"):
        for entry in os.listdir("/etc/default"):
            src = os.path.join("/etc/default", entry)
            if os.path.isfile(src):
                shutil.copy2(src, os.path.join(etc_default, entry))
    _write(os.path.join(etc_default, "docker"), DOCKER_DEFAULTS)
    _write(h.hosts_file, hosts)
    _write(h.resolv_file, "# lab hosts have no DNS and no route out\nnameserver 127.0.0.1\n")


def host_key_line(h: HostLayout) -> str:
    with open(os.path.join(h.dir, "etc-ssh", "ssh_host_ed25519_key.pub")) as f:
        kind, blob = f.read().split()[:2]
    return f"{kind} {blob}"


def create_network(h: HostLayout) -> None:
    lab = h.lab
    if not os.path.exists(f"/run/netns/{h.netns}"):
        run(["ip", "netns", "add", h.netns])
    for n, (veth, inner, bridge, addr) in enumerate((
            (h.veth_public, "eth0", lab.public_bridge, h.public_address),
            (h.veth_private, "eth1", lab.private_bridge, h.private_address)), start=1):
        if not ok(["ip", "-n", h.netns, "link", "show", inner]):
            run(["ip", "link", "del", veth], check=False)   # a half-made pair from a crash
            # a fixed MAC per host and interface: a repaired host keeps its MAC, so neighbours'
            # ARP entries (REACHABLE for up to 45 s) stay right
            mac = f"02:73:{lab.index:02x}:{h.slot:02x}:00:{n:02x}"
            run(["ip", "link", "add", veth, "type", "veth", "peer", "name", inner,
                 "address", mac, "netns", h.netns])
            run(["ip", "neigh", "del", addr, "dev", bridge], check=False)  # labs made before
        run(["ip", "link", "set", veth, "master", bridge, "up"])
        run(["ip", "-n", h.netns, "addr", "replace", f"{addr}/24", "dev", inner])
        run(["ip", "-n", h.netns, "link", "set", inner, "up"])
    run(["ip", "-n", h.netns, "link", "set", "lo", "up"])
    # deliberately no default route: lab hosts reach each other and nothing else


def _is_mountpoint(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def namespaces_alive(h: HostLayout) -> bool:
    return (os.path.exists(f"/run/netns/{h.netns}") and _is_mountpoint(h.mnt_file)
            and _is_mountpoint(h.uts_file))


def create_namespaces(h: HostLayout) -> None:
    for f in (h.mnt_file, h.uts_file):
        if _is_mountpoint(f):
            run(["umount", f], check=False)
        open(f, "a").close()
    binds = " ".join(f"{src}={dst}" for src, dst in h.private_dirs().items())
    env = dict(os.environ, HOSTNAME_=h.name, BINDS=binds, NSDIR=h.lab.ns_dir, HOSTDIR=h.dir)
    script = SETUP_SCRIPT
    if h.own_root:
        script = OWN_ROOT_SCRIPT
        env.update(MERGED=h.root_merged, LOWER=h.lab.image_root, UPPER=h.root_upper,
                   WORK=h.root_work)
    proc = subprocess.run(
        ["nsenter", f"--net=/run/netns/{h.netns}", "unshare", f"--mount={h.mnt_file}",
         f"--uts={h.uts_file}", "--propagation", "private", "sh", "-ec", script],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SwarmsmithError(f"could not set up namespaces: {proc.stderr.strip()}", host=h.name)


def sshd_answers(h: HostLayout, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((h.public_address, 22), timeout=timeout) as s:
            s.settimeout(timeout)
            return s.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def start_sshd(h: HostLayout, deadline: float = 10.0) -> None:
    run(h.nsenter() + ["/usr/sbin/sshd", "-f", "/etc/ssh/sshd_config"])
    end = time.monotonic() + deadline
    while not sshd_answers(h):
        if time.monotonic() > end:
            raise SwarmsmithError(f"sshd did not answer on {h.public_address}:22 within "
                                  f"{deadline:.0f}s", host=h.name)
        time.sleep(0.02)


def healthy(h: HostLayout) -> bool:
    # a dead sshd refuses at once; a slow banner on a loaded machine is no reason to rebuild
    return namespaces_alive(h) and sshd_answers(h, timeout=5.0)


# --- teardown -------------------------------------------------------------------------

def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    return children


def _ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def host_pids(h: HostLayout) -> set[int]:
    """Processes in the host's netns or mount namespace and all their descendants (containers
    live in their own namespaces, under shims that live in the host's). The mount namespace
    also finds them when the netns file is gone (`ip netns del` by a crash or by hand): the
    processes keep that netns alive, unreachable by name."""
    targets = set()
    if os.path.exists(f"/run/netns/{h.netns}"):
        targets.add(("net", _ns_inode(f"/run/netns/{h.netns}")))
    if _is_mountpoint(h.mnt_file):
        targets.add(("mnt", _ns_inode(h.mnt_file)))
    if not targets:
        return set()
    roots = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit() and any((kind, _ns_inode(f"/proc/{entry}/ns/{kind}")) in targets
                                   for kind in ("net", "mnt")):
            roots.add(int(entry))
    children = _children_map()
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid in found or pid == os.getpid():
            continue
        found.add(pid)
        todo.extend(children.get(pid, []))
    return found


def kill_processes(h: HostLayout, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while True:
        pids = host_pids(h)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > end:
            raise SwarmsmithError(f"processes {sorted(pids)[:10]} would not die", host=h.name)
        time.sleep(0.05)


CGROUP_CLEANUP = r"""
# cgroups that dockerd made under its cgroup-parent, including in hierarchies that only this
# host's mount namespace has mounted (Debian's init script mounts them): they outlive the host.
for d in /sys/fs/cgroup/*; do
  [ -d "$d$PARENT" ] || continue
  for i in 1 2 3 4 5 6 7 8 9 10; do
    find "$d$PARENT" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [ -d "$d$PARENT" ] || break
    sleep 0.1
  done
done
"""


MACHINE_CGROUP_MOUNTS = r"""
mount -t tmpfs tmpfs /mnt
for c in $(awk 'NR > 1 && $4 == 1 {print $1}' /proc/cgroups); do
  mountpoint -q "/sys/fs/cgroup/$c" && continue
  mkdir "/mnt/$c"
  mount -t cgroup -o "$c" cgroup "/mnt/$c" 2>/dev/null || rmdir "/mnt/$c"
done
"""
MACHINE_CGROUP_CLEANUP = MACHINE_CGROUP_MOUNTS + CGROUP_CLEANUP.replace(
    "for d in /sys/fs/cgroup/*; do", "for d in /sys/fs/cgroup/* /mnt/*; do")


def remove_cgroups(h: HostLayout) -> None:
    if namespaces_alive(h):
        subprocess.run(["nsenter", f"--mount={h.mnt_file}", "--", "sh", "-c", CGROUP_CLEANUP],
                       env=dict(os.environ, PARENT=h.cgroup_parent), stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=30)
    # and from the machine itself, also in hierarchies it never mounts (when the host's mount
    # namespace is already gone, e.g. after a crash): mounted in a throw-away mount namespace
    subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                    MACHINE_CGROUP_CLEANUP], env=dict(os.environ, PARENT=h.cgroup_parent),
                   stdin=subprocess.DEVNULL, capture_output=True, timeout=30)


def dismantle(h: HostLayout, keep_data: bool) -> None:
    """Tear down the running host; with keep_data its folders stay for a rebuild."""
    kill_processes(h)
    remove_cgroups(h)
    for f in (h.mnt_file, h.uts_file):
        while _is_mountpoint(f):
            run(["umount", "-l", f], check=False)
        if os.path.exists(f):
            os.unlink(f)
    for veth in (h.veth_public, h.veth_private):
        if ok(["ip", "link", "show", veth]):
            run(["ip", "link", "del", veth], check=False)
    if os.path.exists(f"/run/netns/{h.netns}"):
        run(["ip", "netns", "del", h.netns])
    if not keep_data and os.path.isdir(h.dir):
        shutil.rmtree(h.dir)
