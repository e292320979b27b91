"""The base disk of VM lab hosts: a Debian 12 with its own kernel, systemd, sshd and cloud-init,
built once from Debian's packages on this machine (natively: minutes faster than installing
inside an emulated guest) and cached. Every VM boots a copy-on-write overlay of it.

Two disks come from one build: `engine` with Debian's docker.io preinstalled (enabled under
systemd, as a cloud's Docker image has it), and `plain` without it, where `up` installs the
engine itself the way it does on a fresh cloud VM.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

from ...base.cache import cache_lock
from ...base.errors import SwarmsmithError
from .image import CACHE, debian_mirror, sources

VERSION = 2         # bump when the recipe changes: a new folder; running VMs keep their base
SUITE = "bookworm"
# dbus: systemctl asks logind through it before a reboot ("Failed to connect to bus" without)
PACKAGES = ("systemd-sysv", "dbus", "linux-image-cloud-amd64", "openssh-server", "iproute2",
            "ifupdown", "udev", "kmod", "ca-certificates", "curl", "procps", "iptables",
            "cloud-init",
            # a real kernel enforces AppArmor: without the package every container fails
            # ("docker-default profile could not be loaded"); docker.io only recommends it
            "apparmor", "docker.io")
# what the plain disk leaves out: docker.io and the packages only it pulled in
ENGINE_PACKAGES = ("docker.io", "containerd", "runc", "tini")
DISK_SIZE = "8G"        # sparse; the guest's file system, images and containers included

CLOUD_CFG = """\
# written by swarmsmith: lab VMs get their seed from a NoCloud disk (label cidata) only;
# probing other clouds' metadata addresses would only wait for time-outs
datasource_list: [NoCloud]
# only the modules a lab VM's seed uses: each one costs seconds in an emulated guest, and some
# fail on a minimal system (locale: no locales package)
cloud_init_modules: [migrator, seed_random, bootcmd, write-files, set_hostname, update_hostname,
  update_etc_hosts, users-groups, ssh]
cloud_config_modules: [runcmd]
cloud_final_modules: [scripts-per-once, scripts-per-boot, scripts-per-instance, scripts-user,
  final-message]
"""
FSTAB = "/dev/vda / ext4 defaults,errors=remount-ro 0 1\n"


class VmImageError(SwarmsmithError):
    pass


@dataclass(frozen=True)
class VmImage:
    dir: str

    @property
    def kernel(self) -> str:
        return os.path.join(self.dir, "vmlinuz")

    @property
    def initrd(self) -> str:
        return os.path.join(self.dir, "initrd.img")

    def disk(self, engine: bool) -> str:
        return os.path.join(self.dir, "engine.raw" if engine else "plain.raw")

    @property
    def ready(self) -> bool:
        return os.path.isfile(os.path.join(self.dir, ".swarmsmith-image"))


def image() -> VmImage:
    return VmImage(os.path.join(CACHE, f"vm-debian-12.v{VERSION}"))


def build_command(out: str, mirror: str) -> list[str]:
    return ["mmdebstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
            "--skip=output/dev", SUITE, out, *sources(mirror, SUITE)]


def mkfs_command(root: str, disk: str) -> list[str]:
    # the disk is filled from the folder: no loop device, no mount
    return ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", root, disk]


def ensure(progress=None) -> VmImage:
    """The base image, built when missing (under the image cache's lock, so two labs made at
    once build it once). `progress(what, message)` hears the steps, and a tick every 5 s."""
    img = image()
    if img.ready:
        return img
    with cache_lock(CACHE):
        if not img.ready:
            _build(img, progress)
    return img


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise VmImageError(f"building the VM base image: {what} failed (exit "
                           f"{proc.returncode}): {tail}")


def _build(img: VmImage, progress) -> None:
    missing = [c for c in ("mmdebstrap", "mkfs.ext4") if not shutil.which(c)]
    if missing:
        raise VmImageError(f"the VM base image needs {' and '.join(missing)} (apt-get install -y "
                           "mmdebstrap e2fsprogs, or run scripts/setup.sh)")
    tmp = img.dir + ".building"
    shutil.rmtree(tmp, ignore_errors=True)      # a killed build's leftovers
    os.makedirs(tmp)
    root = os.path.join(tmp, "root")
    what = "vm image debian-12"
    t0 = time.monotonic()
    done = threading.Event()

    def say(msg):
        if progress:
            progress(what, msg)

    def tick():
        while not done.wait(5):
            say(f"still building ({time.monotonic() - t0:.0f}s)")
    threading.Thread(target=tick, daemon=True).start()
    try:
        say("building from Debian packages (mmdebstrap, about a minute)")
        _run(build_command(root, debian_mirror()), "mmdebstrap")
        _adapt(root, tmp)
        say("writing the disk with the engine")
        _run(["truncate", "-s", DISK_SIZE, os.path.join(tmp, "engine.raw")], "truncate")
        _run(mkfs_command(root, os.path.join(tmp, "engine.raw")), "mkfs.ext4")
        say("writing the disk without the engine")
        # dpkg's own scripts stop nothing here: nothing runs in the folder
        _run(["chroot", root, "dpkg", "--purge", *ENGINE_PACKAGES], "dpkg --purge")
        _run(["truncate", "-s", DISK_SIZE, os.path.join(tmp, "plain.raw")], "truncate")
        _run(mkfs_command(root, os.path.join(tmp, "plain.raw")), "mkfs.ext4")
        shutil.rmtree(root)
        with open(os.path.join(tmp, ".swarmsmith-image"), "w") as f:
            f.write("built by swarmsmith lab\n")
        os.rename(tmp, img.dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        done.set()
    say(f"built in {time.monotonic() - t0:.1f}s")


def _write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _adapt(root: str, out: str) -> None:
    """What a VM needs beyond the packages; the kernel and initrd are copied out, since QEMU
    boots them directly (no boot loader on the disk)."""
    for key in glob.glob(os.path.join(root, "etc/ssh/ssh_host_*")):
        os.unlink(key)          # every VM would share them; each gets its own from its seed
    _write(os.path.join(root, "etc/cloud/cloud.cfg.d/90-swarmsmith.cfg"), CLOUD_CFG)
    _write(os.path.join(root, "etc/fstab"), FSTAB)
    # an empty machine-id: systemd makes a new one on each VM's first boot
    _write(os.path.join(root, "etc/machine-id"), "")
    for kind, dest in (("vmlinuz", "vmlinuz"), ("initrd.img", "initrd.img")):
        found = sorted(glob.glob(os.path.join(root, "boot", f"{kind}-*")))
        if not found:
            raise VmImageError(f"building the VM base image: no /boot/{kind}-* in the root")
        shutil.copyfile(found[-1], os.path.join(out, dest))
