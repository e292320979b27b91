"""The local lab on real namespaces, sshd and dockerd.

One module-scoped lab `tlab` (3 hosts) serves most tests; the teardown test uses its own
one-host lab `tlab2` and runs first, before `tlab` exists. Needs root; skips only without it.
"""
from __future__ import annotations

import glob
import json
import os
import re
import shlex
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from provision.images import busybox as images
from provision.base.hosts import Host
from provision.hosts.lab import hostns, preflight
from provision.hosts.lab.lab import Lab, list_labs
from provision.hosts.lab.layout import ROOT
from tests.conftest import run_cli
from tests.lab_ssh import ssh_exec

# its checks look at the whole machine (every mount, link, rule): no other lab module at once
MACHINE_WIDE = True

pytestmark = pytest.mark.lab

LAB, LAB2 = "tlab", "tlab2"
ENGINE_COMMS = {"sshd", "dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2",
                "docker-proxy", "runc"}


# --- helpers ----------------------------------------------------------------------------

def sh(argv: list[str] | str, check: bool = True) -> str:
    proc = subprocess.run(argv, shell=isinstance(argv, str), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"{argv} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def ssh(host: Host, command: str, check: bool = True, timeout: float = 120) -> str:
    """Run on a lab host with the lab key and its pinned host key."""
    rc, out, err = ssh_exec(host, command, timeout=timeout)
    if check and rc != 0:
        raise AssertionError(f"{host.name}: {command!r} -> {rc}\n{out}\n{err}")
    return out


def lab_up(name: str, nodes: int) -> dict:
    proc = run_cli("lab", "up", "--name", name, "--nodes", str(nodes), "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def lab_down(name: str) -> None:
    proc = run_cli("lab", "down", "--name", name)
    assert proc.returncode == 0, proc.stderr


def start_engine(host: Host, deadline: float = 60) -> str:
    """Configure and start dockerd over SSH as the provisioner would; returns the engine ID."""
    conf = json.dumps({"storage-driver": "overlay2",
                       "cgroup-parent": host.engine_defaults["cgroup-parent"]})
    ssh(host, f"mkdir -p /etc/docker && echo {shlex.quote(conf)} > /etc/docker/daemon.json && "
              "/etc/init.d/docker start")
    end = time.monotonic() + deadline
    while True:
        rc, out, err = ssh_exec(host, "docker info -f '{{.ID}}'")
        if rc == 0 and out.strip():
            return out.strip()
        if time.monotonic() > end:
            raise AssertionError(f"{host.name}: dockerd did not answer: {err}")
        time.sleep(0.2)


def parallel(fn, items):
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        return list(pool.map(fn, items))


def other_labs() -> dict[str, int]:
    """Labs of other engineers running on this machine: ignored by the snapshots."""
    labs = {}
    for name in list_labs():
        if name in (LAB, LAB2):
            continue
        try:
            with open(os.path.join(ROOT, name, "lab.json")) as f:
                labs[name] = json.load(f)["index"]
        except (OSError, ValueError, KeyError):
            pass
    return labs


def _foreign_filter(labs: dict[str, int]):
    pats = []
    for name, idx in labs.items():
        pats += [rf"\bswsm{idx}(pub|prv)\b", rf"\bsw{idx}h\d+[pv]\b", rf"swsm-{re.escape(name)}-\d",
                 rf"/labs/{re.escape(name)}(/|$|\s)", rf"swarmsmith-{re.escape(name)}-\d"]
    rx = re.compile("|".join(pats)) if pats else None
    return (lambda line: not rx.search(line)) if rx else (lambda line: True)


def _ns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def engine_processes(exclude_netns: set[int] = frozenset()) -> list[tuple[int, str]]:
    """sshd/dockerd/containerd… processes, minus those in the given network namespaces."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as f:
                comm = f.read().strip()
            if comm not in ENGINE_COMMS:
                continue
            ino = _ns_inode(f"/proc/{entry}/ns/net")
            if ino is not None and ino not in exclude_netns:      # None: it just exited
                found.append((int(entry), comm))
        except OSError:
            continue
    return sorted(found)


HIDDEN_CGROUPS = r"""
mount -t tmpfs tmpfs /mnt
for c in hugetlb net_cls net_prio perf_event; do
  mkdir /mnt/$c
  mount -t cgroup -o $c cgroup /mnt/$c 2>/dev/null || continue
  for d in /mnt/$c/swarmsmith-*; do [ -e "$d" ] && echo "$c:${d#/mnt/$c/}"; done
done
true
"""


def cgroup_dirs() -> list[str]:
    """swarmsmith-* cgroups in every hierarchy, including those the machine never mounts
    (mounted here in a throw-away mount namespace)."""
    seen = [p for p in glob.glob("/sys/fs/cgroup/swarmsmith-*") +
            glob.glob("/sys/fs/cgroup/*/swarmsmith-*")]
    hidden = sh(["unshare", "--mount", "--propagation", "private", "sh", "-c", HIDDEN_CGROUPS])
    return sorted(seen + ["hidden " + line for line in hidden.split()])


def machine_snapshot() -> dict:
    """What a lab may leave behind, unfiltered; `comparable` drops other labs' parts."""
    labs = other_labs()
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            # root, mount point, fs type, source (mount IDs of new mounts differ run to run)
            mounts.append(" ".join([fields[3], fields[4], fields[sep + 1], fields[sep + 2]]))
    tree = []
    for base, dirs, files in os.walk("/var/lib/swarmsmith"):
        tree += [os.path.join(base, n) for n in dirs + files]
    return {
        "labs": labs,
        "netns_inodes": {os.path.basename(p): _ns_inode(p) for p in glob.glob("/run/netns/*")},
        "netns": sh(["ip", "netns", "list"]).splitlines(),
        "links": re.sub(r"@\S+", "", sh(["ip", "-br", "link"])).splitlines(),
        "mounts": mounts,
        "iptables": sh(["iptables", "-S"]).splitlines() + sh(["iptables", "-t", "nat",
                                                               "-S"]).splitlines(),
        "processes": [(p, c, ino) for p, c in engine_processes()
                      if (ino := _ns_inode(f"/proc/{p}/ns/net")) is not None],
        "var_lib_swarmsmith": tree,
        "var_lib_swarmsmith_exists": os.path.exists("/var/lib/swarmsmith"),
        "var_lib_docker_exists": os.path.isdir("/var/lib/docker"),
        "cgroups": cgroup_dirs(),
    }


def comparable(snap: dict, *others: dict) -> dict:
    """`snap` without what belongs to labs of other engineers seen in any of the snapshots."""
    labs = dict(snap["labs"])
    for o in others:
        labs.update(o["labs"])
    keep = _foreign_filter(labs)
    foreign_netns = {ino for s in (snap, *others) for name, ino in s["netns_inodes"].items()
                     if not keep(name)}
    out = {key: sorted(x for x in snap[key] if keep(x))
           for key in ("netns", "links", "mounts", "iptables", "cgroups")}
    out["processes"] = sorted((p, c) for p, c, ino in snap["processes"] if ino not in foreign_netns)
    tree = [p for p in snap["var_lib_swarmsmith"] if keep(p)]
    if labs:
        # while other labs exist, the machine-wide lab folders and markers are theirs too
        tree = [p for p in tree if os.path.basename(p) not in (".lock", ".created-var-lib-docker")
                and p not in (ROOT, os.path.dirname(ROOT))]
    else:
        out["var_lib_swarmsmith_exists"] = snap["var_lib_swarmsmith_exists"]
        out["var_lib_docker_exists"] = snap["var_lib_docker_exists"]
    out["var_lib_swarmsmith"] = sorted(tree)
    return out


# --- teardown leaves the machine as it found it (own lab, runs first) ---------------------

def test_down_leaves_machine_as_found(tmp_path):
    lab_down(LAB2)      # a leftover from an interrupted run would spoil "before"
    before = machine_snapshot()
    try:
        [host] = Lab(LAB2).up([f"{LAB2}-1"])[0]
        start_engine(host)
        tar = images.build_busybox_tar(str(tmp_path))
        images.load_image(host, tar.path, transport=ssh_exec, sha256=tar.sha256)
        cid = ssh(host, "docker run -d --name sleeper swarmsmith/busybox:1 sleep 600").strip()
        assert ssh(host, f"docker inspect -f '{{{{.State.Running}}}}' {cid}").strip() == "true"
        during = comparable(machine_snapshot())
        # the snapshot sees the lab (or this test would prove nothing)
        assert f"swsm-{LAB2}-1" in " ".join(during["netns"])
        assert any(comm == "dockerd" for _, comm in during["processes"])
        assert any(f"swarmsmith-{LAB2}-1" in c for c in during["cgroups"])
        assert any(f"/labs/{LAB2}/" in m for m in during["mounts"])
        assert any("swsm" in r for r in during["iptables"])
    finally:
        lab_down(LAB2)
    after = machine_snapshot()
    b, a = comparable(before, after), comparable(after, before)
    for key in b:
        assert a[key] == b[key], f"{key} differs after lab down"


# --- errors -------------------------------------------------------------------------------

def test_bad_name_exit_2():
    proc = run_cli("lab", "up", "--name", "BAD_NAME", "--nodes", "1")
    assert proc.returncode == 2
    assert "invalid lab name 'BAD_NAME'" in proc.stderr
    assert "lowercase" in proc.stderr
    assert not os.path.exists(os.path.join(ROOT, "BAD_NAME"))


def test_not_root_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(preflight.LabPreflightError, match="needs root"):
        preflight.check()
    import cli
    existed = os.path.exists(os.path.join(ROOT, LAB2))
    assert cli.main(["lab", "up", "--name", LAB2, "--nodes", "1"]) == 1
    assert "needs root" in capsys.readouterr().err
    assert os.path.exists(os.path.join(ROOT, LAB2)) == existed     # nothing was made


def test_missing_packages_are_named(monkeypatch):
    real_which, real_exists = preflight.shutil.which, os.path.exists
    monkeypatch.setattr(preflight.shutil, "which",
                        lambda cmd, *a, **k: None if cmd == "iptables" else real_which(cmd, *a, **k))
    monkeypatch.setattr(os.path, "exists",
                        lambda p: False if p in ("/usr/sbin/dockerd", "/usr/sbin/sshd")
                        else real_exists(p))
    with pytest.raises(preflight.LabPreflightError) as exc:
        preflight.check()
    msg = str(exc.value)
    for pkg in ("iptables", "docker.io", "openssh-server"):
        assert pkg in msg
    assert "apt-get install" in msg
    assert "iproute2" not in msg       # present packages are not blamed


# --- the shared 3-host lab ------------------------------------------------------------------

@pytest.fixture(scope="module")
def tlab():
    lab_down(LAB)                   # leftovers of an interrupted run
    try:
        out = lab_up(LAB, 3)
        assert [h["name"] for h in out["hosts"]] == [f"{LAB}-{i}" for i in (1, 2, 3)]
        yield Lab(LAB).hosts()
    finally:
        lab_down(LAB)
        assert not os.path.exists(os.path.join(ROOT, LAB))


@pytest.fixture(scope="module")
def busybox_tar(tmp_path_factory):
    return images.build_busybox_tar(str(tmp_path_factory.mktemp("images")))


@pytest.fixture(scope="module")
def engines(tlab):
    return dict(zip([h.name for h in tlab], parallel(start_engine, tlab)))


@pytest.fixture(scope="module")
def swarm(tlab, engines):
    mgr, *workers = tlab
    ssh(mgr, f"docker swarm init --advertise-addr {mgr.private_address}")
    token = ssh(mgr, "docker swarm join-token -q worker").strip()
    parallel(lambda w: ssh(w, f"docker swarm join --advertise-addr {w.private_address} "
                              f"--token {token} {mgr.private_address}:2377"), workers)
    return mgr


def test_ls_json_keys(tlab):
    proc = run_cli("lab", "ls", "--json", "--name", LAB)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["name"] for r in rows] == [h.name for h in tlab]
    for row, h in zip(rows, tlab):
        assert set(row) == {"lab", "name", "kind", "public_address", "private_address", "user",
                            "key_path", "host_key", "fingerprint"}
        assert row["lab"] == LAB and row["kind"] == "netns"
        assert row["public_address"] == h.public_address
        assert row["private_address"] == h.private_address
        assert row["user"] == "root"
        assert row["key_path"] == f"{ROOT}/{LAB}/id_ed25519" and os.path.isfile(row["key_path"])
        # the key (as a pin takes it) and its fingerprint are the ones the host's sshd presents
        keyscan = sh(f"ssh-keyscan -t ed25519 {h.public_address} 2>/dev/null")
        assert row["host_key"] == " ".join(keyscan.split()[1:3])
        scanned = sh(f"ssh-keyscan -t ed25519 {h.public_address} 2>/dev/null | ssh-keygen -lf -")
        assert row["fingerprint"] == scanned.split()[1]
    every = json.loads(run_cli("lab", "ls", "--json").stdout)
    assert all(set(r) == set(rows[0]) for r in every)
    assert {r["name"] for r in rows} <= {r["name"] for r in every}


def test_ssh_lands_in_each_host(tlab):
    on_machine = set(os.listdir("/var/lib/docker"))
    for h in tlab:
        assert ssh(h, "hostname").strip() == h.name
        addrs = ssh(h, "ip -br -4 addr")
        assert h.public_address in addrs and h.private_address in addrs
        for other in tlab:
            if other is not h:
                assert other.public_address not in addrs
        assert "default" not in ssh(h, "ip route")           # no way out of the lab
        assert ssh(h, "ls /var/lib/docker/swsm-probe-* 2>/dev/null || true").strip() == ""
    try:
        for h in tlab:
            ssh(h, f"touch /var/lib/docker/swsm-probe-{h.name}")
        for h in tlab:
            seen = ssh(h, "ls /var/lib/docker").split()
            assert [p for p in seen if p.startswith("swsm-probe-")] == [f"swsm-probe-{h.name}"]
        assert set(os.listdir("/var/lib/docker")) == on_machine
        assert not glob.glob("/var/lib/docker/swsm-probe-*")
    finally:
        for h in tlab:
            ssh(h, "rm -f /var/lib/docker/swsm-probe-*", check=False)


def test_engines_are_independent(tlab, engines):
    assert len(set(engines.values())) == 3, engines
    for h in tlab:
        # each engine is reached over SSH inside its own host and runs its own daemon
        assert ssh(h, "docker info -f '{{.ID}}'").strip() == engines[h.name]
        assert ssh(h, "docker info -f '{{.Driver}} {{.CgroupDriver}}'").split()[0] == "overlay2"
        assert ssh(h, "cat /run/docker.pid").strip().isdigit()
    pids = {ssh(h, "cat /run/docker.pid").strip() for h in tlab}
    assert len(pids) == 3


def test_swarm_forms(tlab, swarm):
    out = ssh(swarm, "docker node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'")
    rows = sorted(line.split()[:2] for line in out.splitlines())
    assert rows == [[h.name, "Ready"] for h in tlab]
    addrs = ssh(swarm, "docker node ls -q | xargs docker node inspect "
                       "-f '{{.Description.Hostname}} {{.Status.Addr}}'")
    assert sorted(addrs.split("\n")[:-1]) == sorted(f"{h.name} {h.private_address}" for h in tlab)


def test_image_load_is_idempotent(tlab, engines, busybox_tar):
    again = images.build_busybox_tar(os.path.dirname(busybox_tar.path))
    assert again == busybox_tar                         # same bytes, same name
    assert parallel(lambda h: images.load_image(h, busybox_tar.path, transport=ssh_exec), tlab) == [True] * 3
    assert parallel(lambda h: images.load_image(h, busybox_tar.path, transport=ssh_exec), tlab) == [False] * 3
    h = tlab[0]
    out = ssh(h, "docker run --rm swarmsmith/busybox:1 sh -c 'echo $PATH; ls -l /bin/busybox; "
                 "readlink /bin/sh; wget --help 2>&1 | head -1'")
    path, ls, link, _ = out.splitlines()
    assert path == "/bin" and link == "busybox" and ls.startswith("-rwx")
    assert ssh(h, "docker image inspect -f '{{json .Config.Cmd}}' swarmsmith/busybox:1").strip() \
        == '["/bin/sh"]'


def test_overlay_carries_traffic_between_hosts(tlab, swarm, busybox_tar):
    server_host, client_host = tlab[1], tlab[2]
    parallel(lambda h: images.load_image(h, busybox_tar.path, transport=ssh_exec), tlab)
    ssh(swarm, "docker network create -d overlay --attachable swsmnet")
    ssh(swarm, f"docker service create --detach --no-resolve-image --name web --network swsmnet "
               f"--endpoint-mode dnsrr --constraint node.hostname=={server_host.name} "
               "swarmsmith/busybox:1 sh -c 'mkdir -p /www && hostname > /www/index.html && "
               "exec httpd -f -p 8080 -h /www'")
    end = time.monotonic() + 60
    while True:
        cid = ssh(server_host, "docker ps -q -f label=com.docker.swarm.service.name=web").strip()
        if cid:
            break
        assert time.monotonic() < end, ssh(swarm, "docker service ps --no-trunc web")
        time.sleep(0.5)
    task_ip = ssh(server_host, "docker inspect -f "
                  "'{{(index .NetworkSettings.Networks \"swsmnet\").IPAddress}}' " + cid).strip()
    assert re.fullmatch(r"10\.\d+\.\d+\.\d+", task_ip), task_ip
    # a client on another host fetches from the task by IP and by tasks.<service> name
    client = ("for i in $(seq 40); do timeout 5 wget -qO- http://%s:8080/ && exit 0; "
              "sleep 0.5; done; exit 1")
    for target in (task_ip, "tasks.web", "web"):
        out = ssh(client_host, "docker run --rm --network swsmnet swarmsmith/busybox:1 sh -c "
                  + shlex.quote(client % target), timeout=180)
        assert out.strip() == cid[:12], (target, out)
    # and the server really is on another host than the client
    assert ssh(client_host, "docker ps -aq -f label=com.docker.swarm.service.name=web").strip() == ""


def _state(hosts: list[Host]) -> dict:
    netns = sh(["ip", "netns", "list"])
    return {
        "netns": sorted(l for l in netns.splitlines() if f"swsm-{LAB}-" in l),
        "links": sorted(l for l in sh(["ip", "-br", "link"]).splitlines()
                        if re.match(r"(swsm\d+|sw\d+h)", l)),
        "inner_links": {h.name: sh(["ip", "-n", f"swsm-{LAB}-{h.name.rsplit('-', 1)[1]}",
                                    "-br", "addr"]) for h in hosts},
        "host_keys": [h.host_key for h in Lab(LAB).hosts()],
        "sshd": {h.name: sorted(p for p, c in engine_processes() if c == "sshd" and
                                _ns_inode(f"/proc/{p}/ns/net") ==
                                _ns_inode(f"/run/netns/swsm-{LAB}-{h.name.rsplit('-', 1)[1]}"))
                 for h in hosts},
        "iptables": sh(["iptables", "-S", "FORWARD"]),
        "mounts": sorted(l.split()[4] for l in open("/proc/self/mountinfo") if f"/labs/{LAB}/" in l),
    }


def test_second_up_changes_nothing(tlab, engines):
    before = _state(tlab)
    assert all(before["sshd"].values())
    out = lab_up(LAB, 3)
    assert out["changes"] == []
    assert [h["name"] for h in out["hosts"]] == [h.name for h in tlab]
    assert _state(tlab) == before
    # and the engines kept running
    assert [ssh(h, "docker info -f '{{.ID}}'").strip() for h in tlab] == \
        [engines[h.name] for h in tlab]


def _orphans(lab: str) -> list[tuple[int, str]]:
    """Processes of `lab` (their mounts come from its folders) whose network namespace is no
    longer any lab host's: leaked, unreachable by `ip netns`, invisible to `lab down`."""
    live = {_ns_inode(p) for p in glob.glob(f"/run/netns/swsm-{lab}-*")}
    leaked = []
    for p, c in engine_processes():
        try:
            with open(f"/proc/{p}/mountinfo") as f:
                ours = f"/labs/{lab}/" in f.read()
        except OSError:
            continue
        if ours and _ns_inode(f"/proc/{p}/ns/net") not in live:
            leaked.append((p, c))
    return leaked


def test_half_made_lab_is_repaired(tlab):
    # runs last on tlab: repairing a host restarts it without its engine
    h1, h2, h3 = tlab
    keys_before = [h.host_key for h in tlab]
    idx = Lab(LAB).layout.index
    # crash 1: sshd of host 1 killed and one of its veths gone
    for p, c in engine_processes():
        if c == "sshd" and _ns_inode(f"/proc/{p}/ns/net") == _ns_inode(f"/run/netns/swsm-{LAB}-1"):
            os.kill(p, signal.SIGKILL)
    sh(["ip", "link", "del", f"sw{idx}h1p"])
    # crash 2: host 2's network namespace deleted under it
    sh(["ip", "netns", "del", f"swsm-{LAB}-2"])
    layouts = Lab(LAB).host_layouts()
    assert [hostns.healthy(hl) for hl in layouts] == [False, False, True]
    out = lab_up(LAB, 3)
    changed = " ".join(out["changes"])
    assert f"host {LAB}-1: repaired" in changed and f"host {LAB}-2: repaired" in changed
    assert f"{LAB}-3" not in changed
    assert [h.host_key for h in Lab(LAB).hosts()] == keys_before
    for h in tlab:
        assert ssh(h, "hostname").strip() == h.name
        # the hosts reach each other on both networks again
        for other in tlab:
            ssh(h, f"timeout 5 bash -c '</dev/tcp/{other.private_address}/22' && "
                   f"timeout 5 bash -c '</dev/tcp/{other.public_address}/22'")
    # nothing of the crashed hosts lingers in a namespace nobody can reach any more
    time.sleep(0.5)
    assert _orphans(LAB) == []
    # and a second up is quiet again
    assert lab_up(LAB, 3)["changes"] == []


def test_session_moves_files_with_the_pinned_key(tlab, tmp_path):
    """Session.put/get carry files over the session's own verified connection (fabric's
    transfer): atomic write with the asked mode, and the same bytes back."""
    from provision.remote.ssh import Session
    h = tlab[0]
    s = Session(h, pinned_key=h.host_key, connect_deadline=30, require_pin=True)
    try:
        data = os.urandom(200_000)
        s.put(data, "/root/put-test.bin", mode=0o600)
        assert ssh(h, "stat -c %a /root/put-test.bin; ls /root").split() == \
            ["600", "put-test.bin"]              # no temporary file left behind
        s.get("/root/put-test.bin", str(tmp_path / "back.bin"))
        assert (tmp_path / "back.bin").read_bytes() == data
    finally:
        s.close()
        ssh(h, "rm -f /root/put-test.bin")
