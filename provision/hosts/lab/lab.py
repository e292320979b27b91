"""A named lab: its bridges, its hosts, its state file. `up` is idempotent and repairs."""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from ...base.errors import InputError, SwarmsmithError
from ...base.hosts import Host
from ...base.localrun import ok, run
from ...remote.ssh import fingerprint  # noqa: F401  (re-exported: lab ls prints it)
from . import aptproxy, capacity, hostns, image as images, preflight, vmhost, vmimage
from .bridge import ensure_bridge
from .layout import MAX_HOSTS, MAX_INDEX, ROOT, HostLayout, LabLayout, valid_name

MACHINE_MARKER = os.path.join(ROOT, ".created-var-lib-docker")


@contextmanager
def machine_lock():
    """Serialises lab changes on this machine (index allocation, shared mount points)."""
    os.makedirs(ROOT, exist_ok=True)
    with open(os.path.join(ROOT, ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def list_labs() -> list[str]:
    if not os.path.isdir(ROOT):
        return []
    return sorted(d for d in os.listdir(ROOT)
                  if os.path.isfile(os.path.join(ROOT, d, "lab.json")))


class Lab:
    def __init__(self, name: str):
        if not valid_name(name):
            raise InputError(f"invalid lab name {name!r}: lowercase letters, digits and '-', "
                             "starting with a letter, at most 24 characters", path="lab name")
        self.name = name
        self.state: dict | None = None
        self.layout: LabLayout | None = None
        self._load()

    # --- state ------------------------------------------------------------------------
    def _path(self) -> str:
        return os.path.join(ROOT, self.name, "lab.json")

    def _load(self) -> None:
        try:
            with open(self._path()) as f:
                self.state = json.load(f)
            self.layout = self._layout()
        except FileNotFoundError:
            self.state, self.layout = None, None

    def _layout(self) -> LabLayout:
        name = self.state.get("image", images.DEFAULT)
        root = images.IMAGES[name].path if name != images.DEFAULT else None
        return LabLayout(self.name, self.state["index"], root, vm=bool(self.state.get("vm")))

    @property
    def image(self) -> str:
        return (self.state or {}).get("image", images.DEFAULT)

    @property
    def vm(self) -> bool:
        return bool((self.state or {}).get("vm"))

    @property
    def accel(self) -> str | None:
        """"kvm" or "tcg" for a lab of VMs, None for namespace hosts."""
        return (self.state or {}).get("vm", {}).get("accel")

    def _save(self) -> None:
        tmp = self._path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.state, f, indent=2)
        os.replace(tmp, self._path())

    @property
    def exists(self) -> bool:
        return self.state is not None

    def _allocate_index(self) -> int:
        used = set()
        for other in list_labs():
            with open(os.path.join(ROOT, other, "lab.json")) as f:
                used.add(json.load(f)["index"])
        for i in range(1, MAX_INDEX + 1):
            # an index is also taken if a bridge of that number exists (another tool, a crash)
            if i not in used and not ok(["ip", "link", "show", f"swsm{i}pub"]):
                return i
        raise SwarmsmithError("no free lab subnet left (255 labs on this machine)")

    def host_layouts(self) -> list[HostLayout]:
        return [self.layout.host(h["slot"], h["name"]) for h in self.state["hosts"]]

    # --- up ---------------------------------------------------------------------------
    def up(self, names: list[str], progress=None, image: str | None = None,
           vm: bool | None = None, engine_preinstalled: bool | list[str] = False
           ) -> tuple[list[Host], list[str]]:
        """`image` and `vm` None keep the lab's (the defaults for a new lab). `vm`: hosts are
        QEMU guests; `engine_preinstalled` (True, or the host names) boots those from the base
        disk with Docker's engine on it, the others get a fresh Debian, as a cloud gives."""
        vm = self.vm if vm is None else vm
        preflight.check(vm=vm)
        changes: list[str] = []
        image = image or self.image
        if self.exists and vm != self.vm:
            kind = "VM" if self.vm else "namespace"
            raise InputError(f"lab {self.name} was made with {kind} hosts: remove it first "
                             f"(swarmsmith lab down --name {self.name})", path="lab.vm")
        if vm and image != images.DEFAULT:
            raise InputError("VM lab hosts boot their own disk: lab.image does not apply "
                             "to them", path="lab.image")
        if vm:
            vmhost.forced_accel()       # checked before anything is built
        if image not in images.NAMES:
            raise InputError(f"unknown lab image {image!r} (known: {', '.join(images.NAMES)})",
                             path="lab.image")
        if self.exists and image != self.image:
            raise InputError(f"lab {self.name} was made with image {self.image}, not {image}: "
                             f"remove it first (swarmsmith lab down --name {self.name})",
                             path="lab.image")
        self._check_capacity(names, vm)
        # built outside the machine lock (half a minute), under the image cache's own lock
        images.ensure(image, progress)
        vm_image = vmimage.ensure(progress) if vm else None
        accel = (self.accel or vmhost.choose_accel(vm_image, images.CACHE, progress)[0]) \
            if vm else None
        with machine_lock():
            if not self.exists:
                os.makedirs(os.path.join(ROOT, self.name), mode=0o700, exist_ok=True)
                self.state = {"name": self.name, "index": self._allocate_index(), "hosts": []}
                if image != images.DEFAULT:
                    self.state["image"] = image
                if vm:
                    self.state["vm"] = {"accel": accel}
                self.layout = self._layout()
                self._save()
                changes.append(f"lab {self.name}: created (subnets {self.layout.public_gateway}/24,"
                               f" {self.layout.private_gateway}/24"
                               + (f", image {image})" if image != images.DEFAULT else "")
                               + (f", QEMU VMs under {accel.upper()})" if vm else ")"))
            self._machine_setup(changes)
            self._lab_setup(changes)
            if self.layout.image_root or vm:
                change = aptproxy.ensure(self.layout)
                if change:
                    changes.append(change)
            known = {h["name"]: h["slot"] for h in self.state["hosts"]}
            for name in names:
                if name not in known:
                    slot = next(s for s in range(1, MAX_HOSTS + 1) if s not in known.values())
                    if slot > MAX_HOSTS:
                        raise InputError(f"a lab holds at most {MAX_HOSTS} hosts")
                    known[name] = slot
                    entry = {"name": name, "slot": slot}
                    if vm:
                        entry["engine"] = engine_preinstalled is True or \
                            name in (engine_preinstalled or ())
                    self.state["hosts"].append(entry)
            self._save()
            changes += capacity.size_neighbour_table(self._machine_hosts())
        wanted = [self.layout.host(known[n], n) for n in names]
        ensure = self._ensure_host
        if vm:
            engine = {h["name"]: h.get("engine", False) for h in self.state["hosts"]}
            ensure = lambda h, p: self._ensure_vm(h, p, vm_image, engine[h.name])  # noqa: E731
        with ThreadPoolExecutor(max_workers=min(16, len(wanted) or 1)) as pool:
            for change in pool.map(lambda h: ensure(h, progress), wanted):
                if change:
                    changes.append(change)
        return [self.host_record(h) for h in wanted], changes

    def _machine_hosts(self, adding: int = 0) -> int:
        """Hosts of every lab on this machine (they share its kernel's tables), plus `adding`."""
        total = adding
        for other in list_labs():
            if other == self.name and self.state is not None:
                total += len(self.state["hosts"])
                continue
            try:
                with open(os.path.join(ROOT, other, "lab.json")) as f:
                    total += len(json.load(f).get("hosts", []))
            except (OSError, ValueError):
                continue
        return total

    def _check_capacity(self, names: list[str], vm: bool = False) -> None:
        """Before anything is made: a lab this machine cannot hold is refused with the numbers."""
        have = {h["name"] for h in (self.state or {}).get("hosts", [])}
        new = len([n for n in dict.fromkeys(names) if n not in have])
        if len(have | set(names)) > MAX_HOSTS:
            raise InputError(f"a lab holds at most {MAX_HOSTS} hosts", path="lab nodes")
        capacity.check(new, self._machine_hosts(adding=new),
                       mb_per_host=capacity.MB_PER_VM if vm else capacity.MB_PER_HOST)

    def _machine_setup(self, changes: list[str]) -> None:
        if not os.path.isdir("/var/lib/docker"):
            # a mount point for hosts' private /var/lib/docker; removed with the last lab
            os.makedirs("/var/lib/docker")
            open(MACHINE_MARKER, "w").close()

    def _lab_setup(self, changes: list[str]) -> None:
        L = self.layout
        os.makedirs(L.ns_dir, exist_ok=True)
        if not hostns._is_mountpoint(L.ns_dir):
            # unshare --mount=FILE refuses to bind onto a shared mount
            run(["mount", "--bind", L.ns_dir, L.ns_dir])
            run(["mount", "--make-private", L.ns_dir])
        if not os.path.exists(L.key_path):
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"swarmsmith-lab-{self.name}",
                 "-f", L.key_path])
        for bridge, gw in ((L.public_bridge, L.public_gateway), (L.private_bridge, L.private_gateway)):
            if ensure_bridge(bridge, f"{gw}/24"):
                changes.append(f"lab {self.name}: bridge {bridge} created")
            # br_netfilter passes bridged frames through FORWARD, whose policy Docker sets to DROP
            rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
            if not ok(["iptables", "-C", *rule]):
                run(["iptables", "-I", *rule])

    def _ensure_host(self, h: HostLayout, progress) -> str | None:
        if hostns.healthy(h):
            return None
        repaired = os.path.isdir(h.dir)
        if repaired:
            hostns.dismantle(h, keep_data=True)
        with open(self.layout.key_path + ".pub") as f:
            hostns.prepare_files(h, f.read())
        hostns.create_network(h)
        hostns.create_namespaces(h)
        hostns.start_sshd(h)
        if progress:
            progress(h.name, "ready")
        return f"host {h.name}: {'repaired' if repaired else 'created'} ({h.public_address}, {h.private_address})"

    def _ensure_vm(self, h: HostLayout, progress, img, engine: bool) -> str | None:
        """A VM that runs is left alone, also while it reboots (its SSH is waited for, not
        taken as a reason to start a second QEMU on its disk); one that does not is started
        on its own disk (kept) or created from the base disk."""
        if vmhost.healthy(h):
            vmhost.wait_ssh(h, progress)
            return None
        existed = os.path.exists(vmhost.disk(h))
        vmhost.dismantle(h, keep_data=True)
        with open(self.layout.key_path + ".pub") as f:
            vmhost.prepare(h, f.read(), img.disk(engine))
        vmhost.create_taps(h)
        vmhost.start(h, img, self.accel)
        if progress:
            progress(h.name, f"VM started ({self.accel}), booting")
        seconds = vmhost.wait_ssh(h, progress)
        if progress:
            progress(h.name, f"SSH answered after {seconds:.0f}s")
        what = "started again on its disk" if existed else \
            "created (VM, " + ("engine preinstalled" if engine else "no engine") + ")"
        return f"host {h.name}: {what} ({h.public_address}, {h.private_address})"

    # --- records ----------------------------------------------------------------------
    def host_record(self, h: HostLayout) -> Host:
        # a VM is a machine of its own: the engine's defaults fit it
        defaults = {} if self.layout.vm else {"storage-driver": "overlay2",
                                               "cgroup-parent": h.cgroup_parent}
        host = Host(name=h.name, public_address=h.public_address, private_address=h.private_address,
                    user="root", key_path=self.layout.key_path, host_key=hostns.host_key_line(h),
                    engine_defaults=defaults)
        if h.own_root or self.layout.vm:
            # no route out: packages come through the lab's proxy unless the cluster file says
            host.apt_proxy = f"http://{hostns.APT_PROXY_NAME}:{aptproxy.PORT}"
        return host

    def hosts(self) -> list[Host]:
        if not self.exists:
            return []
        return [self.host_record(h) for h in self.host_layouts() if os.path.isdir(h.dir)]

    # --- down -------------------------------------------------------------------------
    def remove_hosts(self, names: list[str]) -> list[str]:
        changes = []
        targets = [h for h in self.host_layouts() if h.name in names]
        dismantle = vmhost.dismantle if self.layout.vm else hostns.dismantle
        with ThreadPoolExecutor(max_workers=min(16, len(targets) or 1)) as pool:
            list(pool.map(lambda h: dismantle(h, keep_data=False), targets))
        with machine_lock():
            self.state["hosts"] = [h for h in self.state["hosts"] if h["name"] not in names]
            self._save()
        changes += [f"host {h.name}: removed" for h in targets]
        return changes

    def down(self) -> list[str]:
        preflight.check()
        if not self.exists:
            return []
        changes = self.remove_hosts([h["name"] for h in self.state["hosts"]])
        L = self.layout
        with machine_lock():
            change = aptproxy.stop(L)
            if change:
                changes.append(change)
            for bridge in (L.public_bridge, L.private_bridge):
                rule = ["FORWARD", "-i", bridge, "-o", bridge, "-j", "ACCEPT"]
                while ok(["iptables", "-C", *rule]):
                    run(["iptables", "-D", *rule])
                if ok(["ip", "link", "show", bridge]):
                    run(["ip", "link", "del", bridge])
            while hostns._is_mountpoint(L.ns_dir):
                run(["umount", "-l", L.ns_dir], check=False)
            shutil.rmtree(L.dir)
            changes.append(f"lab {self.name}: removed")
            self.state, self.layout = None, None
            if not list_labs():
                self._machine_cleanup()
        return changes

    def _machine_cleanup(self) -> None:
        if os.path.exists(MACHINE_MARKER):
            try:
                os.rmdir("/var/lib/docker")
            except OSError:
                pass
            os.unlink(MACHINE_MARKER)
        for d in (ROOT, os.path.dirname(ROOT)):
            lock = os.path.join(d, ".lock")
            if os.path.exists(lock):
                os.unlink(lock)
            try:
                os.rmdir(d)
            except OSError:
                break
