"""VM lab hosts without booting one: the QEMU command, the copy-on-write overlay, the cloud-init
seed, KVM-or-TCG, the boot wait, and the cluster file's lab.vm keys. No root, no QEMU."""
from __future__ import annotations

import json
import subprocess

import pytest

from inventory import clusterfile
from provision.base.errors import InputError, SwarmsmithError
from provision.hosts.lab import vmhost, vmimage, vmseed
from provision.hosts.lab.layout import LabLayout

LAB = LabLayout("vmu", 7, vm=True)
HOST = LAB.host(2, "vmu-worker-1")
IMG = vmimage.VmImage("/cache/vm-debian-12.v1")


def test_qemu_runs_on_the_labs_bridges_through_taps_and_never_user_networking():
    cmd = vmhost.qemu_command(HOST, IMG, "tcg")
    line = " ".join(cmd)
    assert "-nic" not in cmd and "user" not in [a.split(",")[0] for a in cmd]
    taps = [a for a in cmd if a.startswith("tap,")]
    assert [t.split("ifname=")[1].split(",")[0] for t in taps] == [HOST.veth_public,
                                                                   HOST.veth_private]
    assert all("script=no" in t and "downscript=no" in t for t in taps)
    assert "mac=02:73:07:02:00:01" in line and "mac=02:73:07:02:00:02" in line
    assert cmd[cmd.index("-accel") + 1] == "tcg" and cmd[cmd.index("-cpu") + 1] == "max"
    assert cmd[cmd.index("-smp") + 1] == "1"
    assert f"file={vmhost.disk(HOST)},format=qcow2" in line
    assert f"file={vmhost.seed(HOST)},format=raw,if=virtio,readonly=on" in cmd
    assert cmd[cmd.index("-kernel") + 1] == IMG.kernel and "net.ifnames=0" in line
    kvm = vmhost.qemu_command(HOST, IMG, "kvm")
    assert kvm[kvm.index("-accel") + 1] == "kvm" and kvm[kvm.index("-cpu") + 1] == "host"


def test_each_vm_is_a_copy_on_write_overlay_of_the_base_disk():
    cmd = vmhost.overlay_command(HOST, IMG.disk(engine=False))
    assert cmd[:2] == ["qemu-img", "create"]
    assert cmd[cmd.index("-f") + 1] == "qcow2"
    assert cmd[cmd.index("-b") + 1] == "/cache/vm-debian-12.v1/plain.raw"
    assert cmd[cmd.index("-F") + 1] == "raw" and cmd[-1] == vmhost.disk(HOST)
    assert IMG.disk(engine=True).endswith("engine.raw")


def test_the_base_image_names_apparmor_and_is_written_without_a_mount():
    assert {"apparmor", "cloud-init", "systemd-sysv", "linux-image-cloud-amd64",
            "docker.io"} <= set(vmimage.PACKAGES)
    assert set(vmimage.ENGINE_PACKAGES) >= {"docker.io", "containerd", "runc"}
    cmd = vmimage.mkfs_command("/root-dir", "/d.raw")
    assert cmd[0] == "mkfs.ext4" and cmd[cmd.index("-d") + 1] == "/root-dir"
    build = vmimage.build_command("/out", "http://mirror.example/debian")
    assert "--variant=minbase" in build and "deb http://mirror.example/debian bookworm main" in build


def test_the_seed_gives_names_addresses_the_lab_key_and_the_pinned_host_key(tmp_path):
    seed = {
        "meta-data": vmseed.meta_data("swarmsmith-vmu-2", "vmu-worker-1"),
        "user-data": vmseed.user_data("ssh-ed25519 AAAAlab lab", "-----PRIVATE-----\n",
                                      "ssh-ed25519 AAAAhost h\n", ["198.18.7.1\tapt-proxy.lab"]),
        "network-config": vmseed.network_config([("eth0", "02:73:07:02:00:01", "198.18.7.3/24")]),
    }
    assert json.loads(seed["meta-data"]) == {"instance-id": "swarmsmith-vmu-2",
                                             "local-hostname": "vmu-worker-1"}
    assert seed["user-data"].startswith("#cloud-config\n")
    user = json.loads(seed["user-data"].split("\n", 1)[1])
    assert user["ssh_authorized_keys"] == ["ssh-ed25519 AAAAlab lab"]
    assert user["disable_root"] is False and user["ssh_pwauth"] is False and user["users"] == []
    assert user["ssh_keys"]["ed25519_public"] == "ssh-ed25519 AAAAhost h"
    assert user["ssh_genkeytypes"] == []         # no other host key than the pinned one
    assert user["write_files"][0]["content"] == "198.18.7.1\tapt-proxy.lab\n"
    net = json.loads(seed["network-config"])
    assert net["ethernets"]["eth0"]["addresses"] == ["198.18.7.3/24"]
    # no gateway, no route: a lab host reaches the lab and nothing past it
    assert "gateway4" not in seed["network-config"] and "routes" not in seed["network-config"]


def test_the_seed_disk_is_labelled_cidata_and_private(tmp_path):
    if subprocess.run(["which", "genisoimage"], capture_output=True).returncode != 0:
        pytest.skip("genisoimage is installed by scripts/setup.sh")
    path = tmp_path / "seed.iso"
    vmseed.write_iso(str(path), {"meta-data": "{}\n", "user-data": "#cloud-config\n"})
    with open(path, "rb") as f:
        f.seek(32768 + 40)          # the ISO 9660 primary volume descriptor's volume id
        assert f.read(32).decode().strip() == "cidata"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in tmp_path.iterdir()] == ["seed.iso"]


def test_accel_from_the_environment_or_a_remembered_probe(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARMSMITH_VM_ACCEL", "tcg")
    assert vmhost.choose_accel(IMG, str(tmp_path)) == ("tcg", "SWARMSMITH_VM_ACCEL")
    monkeypatch.setenv("SWARMSMITH_VM_ACCEL", "fast")
    with pytest.raises(InputError, match="kvm or tcg"):
        vmhost.choose_accel(IMG, str(tmp_path))
    monkeypatch.delenv("SWARMSMITH_VM_ACCEL")
    probes = []
    monkeypatch.setattr(vmhost, "_probe", lambda img, progress: probes.append(1) or ("kvm", "ok"))
    monkeypatch.setattr(vmhost, "_boot_id", lambda: "boot-1")
    assert vmhost.choose_accel(IMG, str(tmp_path)) == ("kvm", "ok")
    assert vmhost.choose_accel(IMG, str(tmp_path)) == ("kvm", "ok") and len(probes) == 1
    monkeypatch.setattr(vmhost, "_boot_id", lambda: "boot-2")     # the machine booted again
    vmhost.choose_accel(IMG, str(tmp_path))
    assert len(probes) == 2


class FakeRun:
    def __init__(self, stdout=b"", stderr=b"", timeout=False):
        self.stdout, self.stderr, self.timeout, self.argv = stdout, stderr, timeout, None

    def __call__(self, argv, **kw):
        self.argv = argv
        if self.timeout:
            raise subprocess.TimeoutExpired(argv, kw.get("timeout"), output=self.stdout)
        return subprocess.CompletedProcess(argv, 0, self.stdout, self.stderr)


@pytest.mark.parametrize("fake, want", [
    (FakeRun(stdout=b"Linux version 6.1\n...\nKernel panic - not syncing: VFS"), "kvm"),
    (FakeRun(stderr=b"KVM internal error. Suberror: 1\n"), "tcg"),
    (FakeRun(timeout=True), "tcg"),              # nothing printed: the vCPU never ran
])
def test_the_kvm_probe_boots_a_kernel_and_falls_back_to_tcg(monkeypatch, fake, want):
    monkeypatch.setattr(vmhost.os, "access", lambda path, mode: True)
    monkeypatch.setattr(vmhost.subprocess, "run", fake)
    accel, why = vmhost._probe(IMG, None)
    assert accel == want, why
    assert fake.argv[fake.argv.index("-accel") + 1] == "kvm" and "-no-reboot" in fake.argv


def test_no_dev_kvm_means_tcg_without_a_probe(monkeypatch):
    monkeypatch.setattr(vmhost.os, "access", lambda path, mode: False)
    monkeypatch.setattr(vmhost.subprocess, "run", lambda *a, **k: pytest.fail("probed"))
    assert vmhost._probe(IMG, None) == ("tcg", "no /dev/kvm")


def test_the_boot_wait_names_the_host_and_the_console_when_time_runs_out(monkeypatch):
    now = [0.0]
    monkeypatch.setattr(vmhost, "sshd_answers", lambda h, timeout: False)
    monkeypatch.setattr(vmhost, "running", lambda h: True)
    monkeypatch.setattr(vmhost, "console_tail", lambda h: "Begin: Mounting root file system")
    heard = []
    with pytest.raises(SwarmsmithError) as e:
        vmhost.wait_ssh(HOST, lambda host, msg: heard.append(msg), deadline=60,
                        clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    assert e.value.host == "vmu-worker-1" and "within 60s" in str(e.value)
    assert "Mounting root" in str(e.value)
    assert heard[:2] == ["booting (5s)", "booting (10s)"]


def test_the_boot_wait_stops_at_once_when_qemu_exits(monkeypatch):
    monkeypatch.setattr(vmhost, "sshd_answers", lambda h, timeout: False)
    monkeypatch.setattr(vmhost, "running", lambda h: False)
    monkeypatch.setattr(vmhost, "console_tail", lambda h: "Kernel panic")
    with pytest.raises(SwarmsmithError, match="stopped while booting.*Kernel panic"):
        vmhost.wait_ssh(HOST, clock=lambda: 0.0, sleep=lambda s: None)


@pytest.mark.parametrize("lab, path, words", [
    ({"vm": "yes"}, "lab.vm", "expected true or false"),
    ({"vm": True, "image": "debian-12"}, "lab.image", "boot their own Debian 12 disk"),
    ({"engine_preinstalled": True}, "lab.engine_preinstalled", "VM lab hosts only"),
    ({"vm": True, "engine_preinstalled": "all"}, "lab.engine_preinstalled",
     "true, false or a list of host names"),
    ({"vm": True, "engine_preinstalled": ["x-worker-9"]}, "lab.engine_preinstalled[0]",
     "x-worker-9 is no host of this cluster (x-manager-1)"),
])
def test_cluster_file_vm_keys_are_checked(lab, path, words):
    with pytest.raises(InputError) as e:
        clusterfile.validate({"name": "x", "lab": lab}, "c.yml")
    assert str(e.value).startswith(f"c.yml: {path}: ") and words in str(e.value), str(e.value)
    assert e.value.exit_code == 2


def test_cluster_file_vm_keys_reach_the_provider():
    from provision.hosts.lab.provider import LabProvider
    cf = clusterfile.validate({"name": "x", "workers": 1, "lab": {
        "vm": True, "engine_preinstalled": ["x-manager-1"]}}, "c.yml")
    p = LabProvider(cf.name, cf.provider_settings)
    assert p.vm is True and p.engine_preinstalled == ["x-manager-1"]


def test_lab_up_engine_preinstalled_without_vm_is_a_flag_error():
    from tests.conftest import run_cli
    p = run_cli("lab", "up", "--name", "vmu", "--engine-preinstalled", timeout=60)
    assert p.returncode == 2 and "--engine-preinstalled" in p.stderr and "--vm" in p.stderr
    assert "Traceback" not in p.stderr


def test_a_bad_accel_setting_is_refused_before_anything_is_built(monkeypatch):
    from provision.hosts.lab import lab as labmod
    monkeypatch.setenv("SWARMSMITH_VM_ACCEL", "fast")
    monkeypatch.setattr(labmod.preflight, "check", lambda vm=False: None)
    monkeypatch.setattr(labmod.vmimage, "ensure", lambda *a: pytest.fail("built"))
    with pytest.raises(InputError, match="SWARMSMITH_VM_ACCEL"):
        labmod.Lab("vmu").up(["vmu-1"], vm=True)
