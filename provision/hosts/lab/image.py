"""Lab host images: root filesystems that lab hosts boot from instead of sharing the machine's.

`default` is no image: hosts share the machine's /usr (and its docker.io), fast to create.
`debian-12` is a minimal Debian 12 built once from Debian's packages with mmdebstrap (sshd,
apt, iproute2; no Docker), cached under the machine's swarmsmith folder and shared read-only by
every host as the lower layer of its own overlayfs root.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

from ...base.cache import cache_lock
from ...base.errors import SwarmsmithError
from .layout import ROOT

CACHE = os.environ.get("SWARMSMITH_IMAGE_CACHE", os.path.join(os.path.dirname(ROOT), "images"))
DEFAULT = "default"


@dataclass(frozen=True)
class Recipe:
    name: str
    suite: str
    packages: tuple[str, ...]
    version: int            # bump when the recipe changes: a new folder, old hosts keep theirs

    @property
    def path(self) -> str:
        return os.path.join(CACHE, f"{self.name}.v{self.version}")


IMAGES = {
    "debian-12": Recipe("debian-12", "bookworm", ("openssh-server", "iproute2", "procps", "mount"), 1),
}
NAMES = (DEFAULT, *IMAGES)

# Services are not started by package installs (as in Debian's container images): the engine
# step starts the engine itself, the same way on every kind of host.
POLICY_RC_D = "#!/bin/sh\n# written by swarmsmith lab: package installs do not start services\nexit 101\n"
# Debian's init script raises limits this machine does not let root raise: keep going.
DOCKER_DEFAULTS = ('# written by swarmsmith lab: the init script\'s ulimit calls fail here\n'
                   'ulimit() { command ulimit "$@" 2>/dev/null || true; }\n')


class ImageError(SwarmsmithError):
    pass


def debian_mirror() -> str:
    """The Debian mirror this machine's own apt sources name (the one it can reach)."""
    if os.environ.get("SWARMSMITH_DEBIAN_MIRROR"):
        return os.environ["SWARMSMITH_DEBIAN_MIRROR"].rstrip("/")
    files = ["/etc/apt/sources.list", *glob.glob("/etc/apt/sources.list.d/*")]
    for path in files:
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            continue
        for m in re.finditer(r"(https?://\S+?/debian)/?(\s|$)", text):
            if not text[max(0, m.start() - 2):m.start()].startswith("#"):
                return m.group(1)
    return "http://deb.debian.org/debian"


def sources(mirror: str, suite: str) -> list[str]:
    base = mirror.rsplit("/", 1)[0]
    return [f"deb {mirror} {suite} main", f"deb {mirror} {suite}-updates main",
            f"deb {base}/debian-security {suite}-security main"]


def build_command(recipe: Recipe, out: str, mirror: str) -> list[str]:
    return ["mmdebstrap", "--variant=apt", "--include=" + ",".join(recipe.packages),
            "--skip=output/dev", recipe.suite, out, *sources(mirror, recipe.suite)]


def ready(name: str) -> bool:
    return name == DEFAULT or os.path.isfile(os.path.join(IMAGES[name].path, ".swarmsmith-image"))


def ensure(name: str, progress=None) -> str | None:
    """The root filesystem folder of image `name`, built if missing; None for the default.
    Progress: `progress(what, message)` at the start, every few seconds and at the end."""
    if name == DEFAULT:
        return None
    recipe = IMAGES[name]
    if ready(name):
        return recipe.path
    with cache_lock(CACHE):
        if ready(name):        # another run built it while we waited
            return recipe.path
        _build(recipe, progress)
    return recipe.path


def _build(recipe: Recipe, progress) -> None:
    if not shutil.which("mmdebstrap"):
        raise ImageError("lab image debian-12 needs mmdebstrap (apt-get install -y mmdebstrap, "
                         "or run scripts/setup.sh)")
    tmp = recipe.path + ".building"
    shutil.rmtree(tmp, ignore_errors=True)      # a killed build's leftovers
    what = f"image {recipe.name}"
    cmd = build_command(recipe, tmp, debian_mirror())
    if progress:
        progress(what, f"building from Debian packages ({' '.join(cmd[:3])} ...)")
    t0 = time.monotonic()
    done = threading.Event()

    def tick():
        while not done.wait(5):
            if progress:
                progress(what, f"still building ({time.monotonic() - t0:.0f}s)")
    threading.Thread(target=tick, daemon=True).start()
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    finally:
        done.set()
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ImageError(f"building lab image {recipe.name} failed (mmdebstrap exit "
                         f"{proc.returncode}): {tail}")
    _adapt(tmp)
    os.rename(tmp, recipe.path)
    if progress:
        progress(what, f"built in {time.monotonic() - t0:.1f}s")


def _write(path: str, text: str, mode: int = 0o644) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def _adapt(root: str) -> None:
    """What a lab host needs beyond the packages."""
    for key in glob.glob(os.path.join(root, "etc/ssh/ssh_host_*")):
        os.unlink(key)          # shared by every host otherwise; each host gets its own
    _write(os.path.join(root, "usr/sbin/policy-rc.d"), POLICY_RC_D, 0o755)
    _write(os.path.join(root, "etc/default/docker"), DOCKER_DEFAULTS)
    for f in ("etc/hosts", "etc/resolv.conf"):      # bind mount targets
        p = os.path.join(root, f)
        if os.path.islink(p) or not os.path.exists(p):
            if os.path.islink(p):
                os.unlink(p)
            _write(p, "")
    for d in ("var/lib/docker", "run", "proc", "sys", "dev"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    _write(os.path.join(root, ".swarmsmith-image"), "built by swarmsmith lab\n")
