"""Fresh hosts on real lab hosts: `lab: {image: debian-12}` gives each host its own Debian 12
root without Docker, so `up` installs the engine for real (Debian's docker.io through the lab's
apt proxy), configures and starts it and forms the swarm; `down` leaves nothing running.

Cluster fri (1 manager + 2 workers). The image and the package cache are built by the first
test that needs them and reused by every later one (and by later runs). Needs root.
"""
from __future__ import annotations

import os

import pytest

from tests.lab_ssh import ssh_exec
from provision.lab import aptproxy, image as lab_image
from provision.lab.lab import Lab
from tests.test_bootstrap_lab import cluster

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
    # the last lab using the machine's proxy stopped it
    assert aptproxy.pid() is None and aptproxy.users() == []
    assert listening_on(aptproxy.PORT) == []
    assert not any(p.startswith(("sw", "swsm")) and f"{layout.index}" in p
                   for p in os.listdir("/sys/class/net") if p.startswith(f"swsm{layout.index}"))
    # no build left half-done or locked; the image and the package cache stay for next time
    assert sorted(os.listdir(lab_image.CACHE)) == sorted(
        f"{r.name}.v{r.version}" for r in lab_image.IMAGES.values()
        if os.path.isdir(r.path))
    with open("/proc/locks") as f:
        cache_inode = os.stat(lab_image.CACHE).st_ino
        assert not any(line.split()[5].endswith(f":{cache_inode}") for line in f)
    assert os.path.isdir(aptproxy.PACKAGE_CACHE)
