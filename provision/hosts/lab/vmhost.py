"""Create, check and dismantle one VM lab host: a QEMU guest with its own kernel and systemd,
booted from a copy-on-write overlay of the cached base disk, on the lab's two bridges through
tap devices (no user-mode networking: nothing may reach past the lab), given its name,
addresses and keys by a cloud-init NoCloud seed.

A host's folder holds its overlay (disk.qcow2), its seed (seed.iso), its SSH host key, the
QEMU pid file and the serial console's log (console.log: the first place to look when a VM
does not come up)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

from ...base.errors import InputError, SwarmsmithError
from ...base.localrun import ok, run
from . import vmseed
from .hostns import APT_PROXY_NAME, sshd_answers
from .layout import HostLayout
from .vmimage import VmImage

MEMORY_MB = 1536        # dockerd, containerd and a few small tasks; the page cache is the rest
BOOT_SECONDS = 600      # first boot to SSH: 35 s alone under TCG here, minutes on busy cores
ACCELS = ("kvm", "tcg")


def disk(h: HostLayout) -> str:
    return os.path.join(h.dir, "disk.qcow2")


def seed(h: HostLayout) -> str:
    return os.path.join(h.dir, "seed.iso")


def pid_file(h: HostLayout) -> str:
    return os.path.join(h.dir, "qemu.pid")


def console_log(h: HostLayout) -> str:
    return os.path.join(h.dir, "console.log")


def macs(h: HostLayout) -> tuple[str, str]:
    # fixed per host and interface, as for the namespace lab's veths: a VM started again keeps
    # its MACs, so its neighbours' ARP entries stay right
    return tuple(f"02:73:{h.lab.index:02x}:{h.slot:02x}:00:{n:02x}" for n in (1, 2))


def cpu_args(accel: str) -> list[str]:
    if accel == "kvm":
        return ["-accel", "kvm", "-cpu", "host"]
    return ["-accel", "tcg", "-cpu", "max"]


def qemu_command(h: HostLayout, img: VmImage, accel: str, memory_mb: int = MEMORY_MB) -> list[str]:
    pub_mac, prv_mac = macs(h)
    return [
        "qemu-system-x86_64", "-name", f"swarmsmith-{h.lab.name}-{h.name}", *cpu_args(accel),
        "-smp", "1", "-m", str(memory_mb), "-nodefaults", "-no-user-config",
        "-display", "none", "-monitor", "none", "-serial", f"file:{console_log(h)}",
        # no boot loader: the base image's kernel and initrd directly; net.ifnames=0 keeps
        # the NICs eth0 (public) and eth1 (private), in the order of the devices below
        "-kernel", img.kernel, "-initrd", img.initrd,
        "-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 panic=10",
        "-drive", f"file={disk(h)},format=qcow2,if=virtio",
        "-drive", f"file={seed(h)},format=raw,if=virtio,readonly=on",
        "-netdev", f"tap,id=pub,ifname={h.veth_public},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=pub,mac={pub_mac}",
        "-netdev", f"tap,id=prv,ifname={h.veth_private},script=no,downscript=no",
        "-device", f"virtio-net-pci,netdev=prv,mac={prv_mac}",
        "-daemonize", "-pidfile", pid_file(h),
    ]


def overlay_command(h: HostLayout, base: str) -> list[str]:
    # copy on write: creating a VM copies nothing; the base stays read-only
    return ["qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "raw", disk(h)]


def seed_files(h: HostLayout, authorized_key: str) -> dict[str, str]:
    with open(os.path.join(h.dir, "etc-ssh", "ssh_host_ed25519_key")) as f:
        host_key = f.read()
    with open(os.path.join(h.dir, "etc-ssh", "ssh_host_ed25519_key.pub")) as f:
        host_key_pub = f.read()
    pub_mac, prv_mac = macs(h)
    return {
        "meta-data": vmseed.meta_data(f"swarmsmith-{h.lab.name}-{h.slot}", h.name),
        "user-data": vmseed.user_data(
            authorized_key, host_key, host_key_pub,
            [f"{h.private_address}\t{h.name}", f"{h.lab.public_gateway}\t{APT_PROXY_NAME}"]),
        "network-config": vmseed.network_config([
            ("eth0", pub_mac, f"{h.public_address}/24"),
            ("eth1", prv_mac, f"{h.private_address}/24")]),
    }


def prepare(h: HostLayout, authorized_key: str, base: str) -> None:
    """Host key, overlay and seed; an existing overlay (the VM's disk) is kept."""
    etc_ssh = os.path.join(h.dir, "etc-ssh")
    os.makedirs(etc_ssh, mode=0o700, exist_ok=True)
    key = os.path.join(etc_ssh, "ssh_host_ed25519_key")
    if not os.path.exists(key):
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", h.name, "-f", key])
    if not os.path.exists(disk(h)):
        run(overlay_command(h, base))
    vmseed.write_iso(seed(h), seed_files(h, authorized_key))


def create_taps(h: HostLayout) -> None:
    for tap, bridge in ((h.veth_public, h.lab.public_bridge),
                        (h.veth_private, h.lab.private_bridge)):
        if not ok(["ip", "link", "show", tap]):
            run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"])
        run(["ip", "link", "set", tap, "master", bridge, "up"])


def pid(h: HostLayout) -> int | None:
    """The VM's QEMU process, or None (no pid file, or it names another program)."""
    try:
        with open(pid_file(h)) as f:
            n = int(f.read().strip())
        with open(f"/proc/{n}/cmdline", "rb") as f:
            cmdline = f.read()
        if b"qemu-system" in cmdline and disk(h).encode() in cmdline:
            return n
    except (OSError, ValueError):
        pass
    return None


def running(h: HostLayout) -> bool:
    return pid(h) is not None


def start(h: HostLayout, img: VmImage, accel: str) -> None:
    if os.path.exists(pid_file(h)):
        os.unlink(pid_file(h))
    proc = subprocess.run(qemu_command(h, img, accel), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, start_new_session=True)
    if proc.returncode != 0 or not running(h):
        raise SwarmsmithError(f"QEMU did not start ({accel}): "
                              f"{(proc.stderr or proc.stdout).strip()[-300:]}", host=h.name)


def wait_ssh(h: HostLayout, progress=None, deadline: float = BOOT_SECONDS,
             clock=time.monotonic, sleep=time.sleep) -> float:
    """Seconds until the VM's sshd answered; a named error (with the console's last lines)
    when its QEMU exits or the deadline passes."""
    t0 = clock()
    said = t0
    while not sshd_answers(h, timeout=2.0):
        now = clock()
        if not running(h):
            raise SwarmsmithError(f"the VM stopped while booting; console: {console_tail(h)}",
                                  host=h.name)
        if now - t0 > deadline:
            raise SwarmsmithError(f"no SSH answer on {h.public_address}:22 within "
                                  f"{deadline:.0f}s of booting; console: {console_tail(h)}",
                                  host=h.name)
        if progress and now - said >= 5:
            said = now
            progress(h.name, f"booting ({now - t0:.0f}s)")
        sleep(1)
    return clock() - t0


def console_tail(h: HostLayout, lines: int = 3) -> str:
    try:
        with open(console_log(h), "rb") as f:
            f.seek(max(0, os.path.getsize(console_log(h)) - 4000))
            text = f.read().decode(errors="replace")
    except OSError:
        return "(no console log)"
    return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def healthy(h: HostLayout) -> bool:
    """The VM runs, on its taps. Not whether it answers: a VM rebooting is healthy, and
    starting a second QEMU on its disk would be the harm."""
    return running(h) and all(ok(["ip", "link", "show", t])
                              for t in (h.veth_public, h.veth_private))


def stop(h: HostLayout, deadline: float = 10.0) -> None:
    n = pid(h)
    if n is None:
        return
    # the disk is thrown away or kept as it is; a guest shutdown would cost a minute here
    os.kill(n, signal.SIGTERM)
    end = time.monotonic() + deadline
    while os.path.exists(f"/proc/{n}"):
        if time.monotonic() > end:
            os.kill(n, signal.SIGKILL)
            end += deadline
        time.sleep(0.05)
        try:
            with open(f"/proc/{n}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except OSError:
            break


def dismantle(h: HostLayout, keep_data: bool) -> None:
    """Stop the VM and remove its taps; with keep_data its disk and keys stay for a restart."""
    stop(h)
    for tap in (h.veth_public, h.veth_private):
        if ok(["ip", "link", "show", tap]):
            run(["ip", "link", "del", tap], check=False)
    if os.path.exists(pid_file(h)):
        os.unlink(pid_file(h))
    if not keep_data and os.path.isdir(h.dir):
        shutil.rmtree(h.dir)


# --- KVM or TCG -------------------------------------------------------------------------

def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


PROBE_SECONDS = 20


def probe_command(img: VmImage) -> list[str]:
    # the kernel alone, with no root: a kernel that runs prints its way to "Kernel panic"
    # in about a second under KVM, and -no-reboot then ends QEMU; a broken KVM prints nothing
    return ["qemu-system-x86_64", *cpu_args("kvm"), "-smp", "1", "-m", "256", "-nodefaults",
            "-no-user-config", "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-kernel", img.kernel, "-append", "console=ttyS0 panic=-1", "-no-reboot"]


def forced_accel() -> str:
    """SWARMSMITH_VM_ACCEL ("kvm", "tcg"), "" when unset; anything else is bad input."""
    forced = os.environ.get("SWARMSMITH_VM_ACCEL", "")
    if forced and forced not in ACCELS:
        raise InputError(f"SWARMSMITH_VM_ACCEL must be kvm or tcg, got {forced!r}",
                         path="SWARMSMITH_VM_ACCEL")
    return forced


def choose_accel(img: VmImage, cache_dir: str, progress=None) -> tuple[str, str]:
    """("kvm" or "tcg", why). SWARMSMITH_VM_ACCEL decides when set; else a boot probe under
    KVM, remembered until this machine boots again."""
    forced = forced_accel()
    if forced:
        return forced, "SWARMSMITH_VM_ACCEL"
    memo = os.path.join(cache_dir, "vm-accel.json")
    try:
        with open(memo) as f:
            known = json.load(f)
        if known.get("boot_id") == _boot_id() and known.get("accel") in ACCELS:
            return known["accel"], known.get("why", "")
    except (OSError, ValueError):
        pass
    accel, why = _probe(img, progress)
    os.makedirs(cache_dir, exist_ok=True)
    with open(memo + ".tmp", "w") as f:
        json.dump({"boot_id": _boot_id(), "accel": accel, "why": why}, f)
    os.replace(memo + ".tmp", memo)
    return accel, why


def _probe(img: VmImage, progress) -> tuple[str, str]:
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "no /dev/kvm"
    if progress:
        progress("vm", f"probing KVM (a kernel boot, at most {PROBE_SECONDS} s)")
    try:
        proc = subprocess.run(probe_command(img), stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=PROBE_SECONDS)
        out = proc.stdout.decode(errors="replace")
        err = proc.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace")
        err = "no kernel output" if not out else "the kernel did not finish booting"
        return "tcg", f"KVM boot probe: {err} within {PROBE_SECONDS} s"
    if "Kernel panic" in out and "KVM internal error" not in err:
        return "kvm", "KVM boot probe passed"
    reason = (err.strip().splitlines() or ["no kernel output"])[0][:120]
    return "tcg", f"KVM boot probe failed: {reason}"
