"""Fresh hosts on real lab hosts: `lab: {image: debian-12}` gives each host its own Debian 12
root without Docker, so `up` installs the engine for real (Debian's docker.io through the lab's
apt proxy), configures and starts it and forms the swarm; `down` leaves nothing running.

Cluster fri (1 manager + 2 workers). The image and the package cache are built by the first
test that needs them and reused by every later one (and by later runs). Needs root.
"""
from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from tests.lab_ssh import ssh_exec
from provision.hosts.lab import aptproxy, image as lab_image
from provision.hosts.lab.lab import Lab, machine_lock
from tests.lab_cluster import cluster

# its checks look at the whole machine (every mount, link, rule): no other lab module at once
MACHINE_WIDE = True

pytestmark = pytest.mark.lab

FRI = """\
name: fri
managers: 1
workers: 2
lab: {image: debian-12}
engine: {install: distro, apt_proxy: "http://apt-proxy.lab:3142"}
"""
NAMES = ["fri-manager-1", "fri-worker-1", "fri-worker-2"]


def sh(host, command: str) -> str:
    rc, out, err = ssh_exec(host, command, timeout=120)
    assert rc == 0, f"{host.name}: {command} -> {rc}: {out}{err}"
    return out


def mounts_mentioning(text: str) -> list[str]:
    """Mounts in any process's mount namespace that mention `text` (an overlay's lowerdir,
    a host folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                found += [f"{pid}: {line.strip()}" for line in f if text in line]
        except OSError:
            pass
    return found


def live_processes_mentioning(text: str) -> list[str]:
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    continue        # reaped by PID 1 a few seconds later
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            out.append(f"{pid}: {cmd}")
    return out


def listening_on(port: int) -> list[str]:
    """IPv4 addresses with a listening TCP socket on `port` (a connect test would not do: once
    the bridge is gone the address is routed away, and whatever answers there is not ours)."""
    found = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, _, p = local.partition(":")
            if state == "0A" and int(p, 16) == port:
                found.append(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
    return found


@pytest.fixture(scope="module")
def fri(tmp_path_factory):
    with cluster(tmp_path_factory.mktemp("fri"), FRI) as c:
        # the hosts first, as a provider makes them: no Docker on them yet
        hosts, _ = Lab("fri").up(NAMES, image="debian-12")
        c.absent = {h.name: sh(h, "command -v docker dockerd containerd || echo absent").strip()
                    for h in hosts}
        c.first = c.up()
        yield c


def test_hosts_have_their_own_debian_without_docker(fri):
    assert fri.absent == {n: "absent" for n in NAMES}
    for name, h in fri.hosts().items():
        out = sh(h, ". /etc/os-release; echo $VERSION_ID; findmnt -n -o FSTYPE /; hostname")
        assert out.split() == ["12", "overlay", name]
    # the machine's own root is untouched by what the hosts installed
    assert not mounts_mentioning(lab_image.IMAGES["debian-12"].path + "/")


def test_up_installs_configures_and_starts_the_engine(fri):
    changes = fri.first["changes"]
    for name in NAMES:
        mine = [c.split(": ", 1)[1] for c in changes if c.startswith(name + ": ")]
        assert "apt proxy set to http://apt-proxy.lab:3142" in mine, mine
        assert "engine installed (the distribution's docker.io)" in mine, mine
        assert "engine started (init script)" in mine, mine
        # the order a real host needs: proxy, daemon.json, install, start
        assert mine.index("apt proxy set to http://apt-proxy.lab:3142") < \
            mine.index("daemon.json written") < \
            mine.index("engine installed (the distribution's docker.io)") < \
            mine.index("engine started (init script)")
    assert sum("swarm initialised" in c for c in changes) == 1
    assert sum("joined as worker" in c for c in changes) == 2
    hosts = fri.hosts()
    for name, h in hosts.items():
        out = sh(h, "dpkg-query -W -f '${Version}' docker.io; echo; "
                    "docker version -f '{{.Server.Version}}'; "
                    "cat /etc/apt/apt.conf.d/90swarmsmith-proxy; "
                    "docker info -f '{{.Swarm.LocalNodeState}}'; "
                    "tr -d ' \n' < /etc/docker/daemon.json")
        pkg, server, proxy_http, _proxy_https, state, daemon = out.strip().splitlines()
        assert pkg.startswith(server.split("+")[0]), out
        assert proxy_http == 'Acquire::http::Proxy "http://apt-proxy.lab:3142";'
        assert state == "active"
        # the provider's daemon.json was in place when the engine first started
        assert f'"cgroup-parent":"/swarmsmith-fri-{NAMES.index(name) + 1}"' in daemon
    nodes = fri.nodes()
    assert sorted(n["hostname"] for n in nodes) == NAMES
    assert all(n["state"] == "ready" for n in nodes)


def test_second_up_changes_nothing(fri):
    before = (fri.node_view(), fri.engine_starts())
    report = fri.up()
    assert report["changes"] == [] and "warnings" not in report
    assert (fri.node_view(), fri.engine_starts()) == before


def test_a_pinned_version_that_differs_is_reported(fri):
    running = sh(fri.hosts()["fri-worker-1"], "docker version -f '{{.Server.Version}}'").strip()
    fri.write(FRI.replace("install: distro,", 'install: distro, version: "19.03",'))
    try:
        before = fri.engine_starts()
        report = fri.up()
        assert report["changes"] == []
        assert sorted(report["warnings"]) == [
            f"{n}: engine {running} runs, engine.version is 19.03 (swarmsmith engine upgrade "
            "installs it node by node)" for n in NAMES]
        assert fri.engine_starts() == before        # up reports; it does not upgrade
        fri.write(FRI.replace("install: distro,", f'install: distro, version: "{running}",'))
        assert "warnings" not in fri.up()
    finally:
        fri.write(FRI)


def proxy_status_line(host) -> str:
    """The apt proxy's report page asked from a lab host at `apt-proxy.lab` (its gateway), with
    bash alone: the status line."""
    script = ("exec 3<>/dev/tcp/apt-proxy.lab/3142; "
              "printf 'GET /acng-report.html HTTP/1.0\\r\\n\\r\\n' >&3; "
              "head -n 1 <&3 | tr -d '\\r'")
    return sh(host, f"bash -c {shlex.quote(script)}").strip()


def nat_rules() -> list[str]:
    out = subprocess.run(["iptables", "-t", "nat", "-S", "PREROUTING"], capture_output=True,
                         text=True, check=True).stdout
    return [line for line in out.splitlines() if f"--dport {aptproxy.PORT}" in line]


def test_labs_share_the_machines_one_apt_proxy(fri):
    """Another lab's hosts reach the same proxy process at their own gateway; that lab's down
    leaves it to fri. (The last lab's down stops it: the test below.)"""
    pid = aptproxy.pid()
    assert pid and aptproxy.users() == ["fri"]
    fri_host = fri.hosts()["fri-worker-1"]
    assert proxy_status_line(fri_host) == "HTTP/1.1 200 OK"
    other = Lab("frx")
    try:
        [host], _ = other.up(["frx-1"], image="debian-12")
        assert aptproxy.pid() == pid and aptproxy.users() == ["fri", "frx"]
        # one listener, on its own address only: not on either lab's gateway
        assert listening_on(aptproxy.PORT) == [aptproxy.SHARED_ADDRESS]
        assert len(nat_rules()) == 2
        assert proxy_status_line(host) == "HTTP/1.1 200 OK"
        with machine_lock():
            assert aptproxy.ensure(other.layout) is None          # nothing to do twice
    finally:
        changes = Lab("frx").down()
    assert "lab frx: apt proxy left to lab(s) fri" in changes
    assert aptproxy.pid() == pid and aptproxy.users() == ["fri"] and len(nat_rules()) == 1
    assert proxy_status_line(fri_host) == "HTTP/1.1 200 OK"


def test_a_proxy_killed_under_a_lab_is_started_again(fri):
    os.kill(aptproxy.pid(), 9)
    with machine_lock():
        change = aptproxy.ensure(Lab("fri").layout)
    assert change == f"lab fri: apt proxy on {aptproxy.url(Lab('fri').layout)} started"
    assert proxy_status_line(fri.hosts()["fri-worker-2"]) == "HTTP/1.1 200 OK"


def test_down_leaves_no_mount_process_proxy_or_lock(fri):
    layout = Lab("fri").layout
    lab_dir = layout.dir
    assert aptproxy.pid() and mounts_mentioning(lab_dir)
    assert aptproxy.users() == ["fri"]
    fri.down()
    assert not Lab("fri").exists and not os.path.exists(lab_dir)
    assert mounts_mentioning(lab_dir) == []
    assert mounts_mentioning(lab_image.IMAGES["debian-12"].path) == []
    assert live_processes_mentioning(lab_dir) == []
    # the last lab using the machine's proxy stopped it: no process, listener, rule, interface
    assert aptproxy.pid() is None and aptproxy.users() == []
    assert listening_on(aptproxy.PORT) == [] and nat_rules() == []
    assert not os.path.exists(f"/sys/class/net/{aptproxy.INTERFACE}")
    assert not any(p.startswith(("sw", "swsm")) and f"{layout.index}" in p
                   for p in os.listdir("/sys/class/net") if p.startswith(f"swsm{layout.index}"))
    # no build left half-done or locked; the image and the package cache stay for next time
    # (VM labs keep their finished base image and the KVM probe's answer beside them)
    from provision.hosts.lab import vmimage
    vm = vmimage.image()
    vm_kept = ({os.path.basename(vm.dir)} if vm.ready else set()) | {"vm-accel.json"}
    assert sorted(set(os.listdir(lab_image.CACHE)) - vm_kept) == sorted(
        f"{r.name}.v{r.version}" for r in lab_image.IMAGES.values()
        if os.path.isdir(r.path))
    with open("/proc/locks") as f:
        cache_inode = os.stat(lab_image.CACHE).st_ino
        assert not any(line.split()[5].endswith(f":{cache_inode}") for line in f)
    assert os.path.isdir(aptproxy.PACKAGE_CACHE)
