"""A tiny image for tests and demos, and a way to put it on hosts.

The image is a rootfs tarball made from Debian's busybox-static: /bin/busybox plus one
symlink per applet, built here with tarfile (no registry, no network). Every tar header is
fixed (mtime, owner, order), so the same busybox binary always gives the same bytes and the
same content hash. `load_image` streams the tarball to a host and runs `docker import` there,
labelled with that hash, and skips the import when the host already has an image of that
name with the same label.

The transport is a function handed in: load_on_cluster gives it the SSH executor's sessions
(host keys checked against what pins them).
"""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from typing import BinaryIO, Callable

from ..base.errors import RemoteCommandError
from ..remote import docker_cli
from ..base.hosts import Host
from .archive import file_sha256

BUSYBOX = "/usr/bin/busybox"
IMAGE_NAME = "swarmsmith/busybox:1"
CONTENT_LABEL = "io.swarmsmith.content"
CACHE_DIR = os.environ.get("SWARMSMITH_IMAGE_CACHE", "/var/cache/swarmsmith/images")
FIXED_MTIME = 946684800          # 2000-01-01: any constant keeps the tarball reproducible
DIRS = {"bin": 0o755, "etc": 0o755, "root": 0o700, "tmp": 0o1777, "var": 0o755,
        "proc": 0o555, "sys": 0o555, "dev": 0o755}


def applets(busybox: str = BUSYBOX) -> list[str]:
    out = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout
    # `--list` names busybox itself: a symlink by that name would replace the binary
    return sorted({a for a in out.split() if a and "/" not in a and a != "busybox"})


def _info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.linkname = kind, mode, size, link
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = FIXED_MTIME, 0, 0, "root", "root"
    return ti


def write_rootfs_tar(out: BinaryIO, busybox: str = BUSYBOX) -> None:
    """Write the rootfs tar (uncompressed: gzip would add its own timestamp) to `out`."""
    with open(busybox, "rb") as f:
        binary = f.read()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for d in sorted(DIRS):
            tar.addfile(_info(d, tarfile.DIRTYPE, DIRS[d]))
        tar.addfile(_info("bin/busybox", tarfile.REGTYPE, 0o755, len(binary)), io.BytesIO(binary))
        for a in applets(busybox):
            tar.addfile(_info(f"bin/{a}", tarfile.SYMTYPE, 0o777, link="busybox"))
        passwd = b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"
        group = b"root:x:0:\nnogroup:x:65534:\n"
        for name, data in (("etc/passwd", passwd), ("etc/group", group)):
            tar.addfile(_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))


@dataclass(frozen=True)
class ImageTar:
    path: str
    sha256: str          # of the tar bytes; stable for a given busybox binary


def build_busybox_tar(cache_dir: str = CACHE_DIR, busybox: str = BUSYBOX) -> ImageTar:
    """Build (or reuse) the tarball in `cache_dir`, named after its content hash."""
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".busybox-", suffix=".tar", dir=cache_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            write_rootfs_tar(f, busybox)
        os.chmod(tmp, 0o644)
        digest = file_sha256(tmp)
        final = os.path.join(cache_dir, f"busybox-{digest[:16]}.tar")
        if os.path.exists(final) and file_sha256(final) == digest:
            os.unlink(tmp)
        else:
            os.replace(tmp, final)
        return ImageTar(final, digest)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# --- transport: (host, command, stdin) -> (exit status, stdout, stderr) -----------------

Transport = Callable[[Host, str, "BinaryIO | None"], "tuple[int, str, str]"]


def image_content(host: Host, name: str, transport: Transport) -> str | None:
    """The content label of image `name` on the host, "" if unlabelled, None if absent."""
    rc, out, _ = transport(host, docker_cli.image_label(name, CONTENT_LABEL), None)
    if rc != 0:
        return None
    value = out.strip()
    return "" if value == "<no value>" else value


def load_image(host: Host, tar_path: str, name: str = IMAGE_NAME, *,
               transport: Transport, sha256: str | None = None) -> bool:
    """Import the rootfs tarball as `name` on the host unless an image of that name with the
    same content is already there. True when it imported, False when it had nothing to do."""
    digest = sha256 or file_sha256(tar_path)
    if image_content(host, name, transport) == digest:
        return False
    changes = ["CMD [\"/bin/sh\"]", "ENV PATH=/bin", f"LABEL {CONTENT_LABEL}={digest}"]
    cmd = docker_cli.image_import(name, changes)
    with open(tar_path, "rb") as f:
        rc, out, err = transport(host, cmd, f)
    if rc != 0:
        raise RemoteCommandError("docker import failed", host=host.name, command=cmd,
                                 exit_status=rc, output=out + err)
    if image_content(host, name, transport) != digest:
        raise RemoteCommandError("imported image does not carry the expected content label",
                                 host=host.name, command=cmd, exit_status=rc, output=out + err)
    return True


@dataclass
class ImageLoadResult:
    image: str
    changes: list

    def to_dict(self) -> dict:
        return {"image": self.image, "changes": self.changes}


def load_on_cluster(cluster_file: str, name: str | None = None, *,
                    accept_new_host_keys: bool = False) -> ImageLoadResult:
    """Put the busybox test image on every node of the cluster, through the SSH executor
    (host keys checked against what pins them); nodes that have it are skipped."""
    from ..engine_api.access import access
    from ..remote.command import Command
    from ..engine_api.sessions import session_for
    from ..remote.parallel import each

    hosts = access(cluster_file, accept_new_host_keys).hosts()
    tar = build_busybox_tar()
    name = name or IMAGE_NAME

    def load(host):
        s = session_for(host, cluster_file)
        try:
            def transport(_host, command, stdin):
                r = s.run(Command.shell(command, stdin=stdin.read() if stdin else None), check=False)
                return r.exit_status, r.stdout, r.stderr
            return load_image(host, tar.path, name, transport=transport, sha256=tar.sha256)
        finally:
            s.close()

    done = each(load, hosts)
    return ImageLoadResult(name, [f"{h}: imported {name}"
                                  for h, imported in sorted(done.items()) if imported])
