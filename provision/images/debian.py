"""Container images built here from Debian packages, without a Docker engine or a registry.

An image file (YAML) names a Debian suite, the packages of one shared base layer and the
images on top of it:

    suite: bookworm
    packages: [python3-flask, redis-server]
    images:
      example/api:1:
        files: {app/main.py: /app/api/main.py}    # local path (beside the file) -> image path
        workdir: /app
        env: {VERSION: "1.0"}
        cmd: [python3, -m, flask, run]
        expose: [3894]

The base layer is a root filesystem from mmdebstrap (the machine's apt sources), cached by
the suite and package list; each image adds one small layer with its files. The result is a
`docker save` archive (provision/images/archive.py) with fixed timestamps, cached by its
inputs: building again reuses it and gives the same image IDs, so `images push` sends
nothing to nodes that have them.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import yaml

from ..base.cache import cache_lock
from ..base.errors import InputError, SwarmsmithError
from ..base.progress import Notice, ProgressCallback, emit, lines_to
from .archive import ArchiveImage, ImageConfig, read_images, write_archive

CACHE_DIR = os.environ.get("SWARMSMITH_IMAGE_CACHE", "/var/cache/swarmsmith/images")
RECIPE_VERSION = 1          # bump when the way layers are made changes
# documentation, manuals and translations are not needed in a container
EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*", "/usr/share/locale/*",
            "/usr/share/lintian/*")
TAG_RE = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$")
PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
IMAGE_KEYS = {"files", "workdir", "env", "cmd", "entrypoint", "expose", "labels", "user"}



class BuildError(SwarmsmithError):
    pass


@dataclass
class ImageFile:
    path: str
    suite: str
    packages: list[str]
    images: dict[str, dict] = field(default_factory=dict)

    @property
    def dir(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))


def load(path: str) -> ImageFile:
    """Parse and check an image file; every error names the file and key (InputError)."""
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)
    except OSError as e:
        raise InputError(f"cannot read: {e.strerror}", file=path) from None
    except yaml.YAMLError as e:
        raise InputError(f"not valid YAML: {str(e).splitlines()[0]}", file=path) from None
    if not isinstance(doc, dict):
        raise InputError("expected a mapping with suite, packages, images", file=path)
    for k in doc:
        if k not in ("suite", "packages", "images"):
            raise InputError("unknown key (allowed: images, packages, suite)", file=path, path=k)
    suite = doc.get("suite", "bookworm")
    if not isinstance(suite, str) or not PKG_RE.match(suite):
        raise InputError(f"expected a Debian suite name, got {suite!r}", file=path, path="suite")
    pkgs = doc.get("packages") or []
    if not isinstance(pkgs, list) or not all(isinstance(p, str) and PKG_RE.match(p) for p in pkgs):
        raise InputError("expected a list of Debian package names", file=path, path="packages")
    images = doc.get("images")
    if not isinstance(images, dict) or not images:
        raise InputError("expected a mapping of image tags to settings", file=path, path="images")
    out = ImageFile(path, suite, sorted(set(pkgs)))
    for tag, spec in images.items():
        where = f"images.{tag}"
        if not isinstance(tag, str) or not TAG_RE.match(tag):
            raise InputError("expected name:tag (lowercase name)", file=path, path=where)
        spec = spec or {}
        if not isinstance(spec, dict):
            raise InputError("expected a mapping", file=path, path=where)
        for k in spec:
            if k not in IMAGE_KEYS:
                raise InputError(f"unknown key (allowed: {', '.join(sorted(IMAGE_KEYS))})",
                                 file=path, path=f"{where}.{k}")
        for k in ("cmd", "entrypoint", "expose"):
            v = spec.get(k, [])
            if not isinstance(v, list) or not all(isinstance(x, (str, int)) for x in v):
                raise InputError("expected a list", file=path, path=f"{where}.{k}")
        for k in ("files", "env", "labels"):
            v = spec.get(k, {})
            if not isinstance(v, dict) or not all(isinstance(x, (str, int, float))
                                                   for x in v.values()):
                raise InputError("expected a mapping of strings", file=path, path=f"{where}.{k}")
        for src, dst in (spec.get("files") or {}).items():
            if not os.path.isfile(os.path.join(out.dir, src)):
                raise InputError(f"no such file {os.path.join(out.dir, src)}", file=path,
                                 path=f"{where}.files.{src}")
            if not str(dst).startswith("/"):
                raise InputError("expected an absolute path in the image", file=path,
                                 path=f"{where}.files.{src}")
        out.images[tag] = spec
    return out


# --- the base layer --------------------------------------------------------------------

def base_key(f: ImageFile) -> str:
    data = json.dumps([RECIPE_VERSION, f.suite, f.packages, EXCLUDES]).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def mmdebstrap_command(f: ImageFile, out: str) -> list[str]:
    return ["mmdebstrap", "--variant=apt", "--mode=root", "--format=tar", "--skip=output/dev",
            "--include=" + ",".join(f.packages),
            *[f"--dpkgopt=path-exclude={p}" for p in EXCLUDES],
            "--customize-hook=rm -rf \"$1\"/var/cache/apt/archives/*.deb "
            "\"$1\"/var/lib/apt/lists/*_Packages",
            f.suite, out]


def build_base(f: ImageFile, cache: str = CACHE_DIR, on_progress: ProgressCallback | None = None,
               clock=time.monotonic) -> str:
    """The base layer tar (cached); built with mmdebstrap when missing."""
    path = os.path.join(cache, f"debian-{f.suite}-{base_key(f)}.rootfs.tar")
    if os.path.isfile(path):
        return path
    with cache_lock(cache):
        if os.path.isfile(path):
            return path
        if not shutil.which("mmdebstrap"):
            raise BuildError("building images from Debian packages needs mmdebstrap "
                             "(apt-get install -y mmdebstrap, or run scripts/setup.sh)")
        tmp = path + ".building"
        cmd = mmdebstrap_command(f, tmp)
        say = lines_to(on_progress)
        say(f"building the base layer: mmdebstrap {f.suite} with {', '.join(f.packages)}")
        t0, last = clock(), [""]
        done = threading.Event()

        def tick():
            while not done.wait(5):
                say(f"  still building ({clock() - t0:.0f} s): {last[0][:100]}")
        threading.Thread(target=tick, daemon=True).start()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        tail: list[str] = []
        try:
            for line in proc.stdout:
                line = line.rstrip()
                if line:
                    last[0] = line
                    tail = (tail + [line])[-8:]
            rc = proc.wait()
        finally:
            done.set()
            if proc.poll() is None:
                proc.kill()
        if rc != 0:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise BuildError(f"mmdebstrap exited {rc}:\n  " + "\n  ".join(tail))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        say(f"base layer built in {clock() - t0:.1f} s ({os.path.getsize(path) / 1e6:.0f} MB)")
    return path


# --- image layers and the archive --------------------------------------------------------

def _tarinfo(name: str, kind: bytes, mode: int, size: int = 0) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type, ti.mode, ti.size, ti.mtime = kind, mode, size, 0
    ti.uid = ti.gid = 0
    ti.uname = ti.gname = "root"
    return ti


def files_layer(f: ImageFile, files: dict, out: str) -> None:
    """A layer tar with `files` ({local: image path}) and their parent folders."""
    entries = {}
    for src, dst in files.items():
        with open(os.path.join(f.dir, src), "rb") as fh:
            entries[str(dst).lstrip("/")] = fh.read()
    dirs = sorted({"/".join(p.split("/")[:i]) for p in entries for i in range(1, p.count("/") + 1)})
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for d in dirs:
            tar.addfile(_tarinfo(d, tarfile.DIRTYPE, 0o755))
        for name, data in sorted(entries.items()):
            tar.addfile(_tarinfo(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))


def _config(tag: str, spec: dict, layers: list[str]) -> ImageConfig:
    env = [f"{k}={v}" for k, v in (spec.get("env") or {}).items()]
    path = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    return ImageConfig(tag, layers, cmd=[str(c) for c in spec.get("cmd") or []],
                       entrypoint=[str(c) for c in spec.get("entrypoint") or []],
                       env=[path, *env], workdir=spec.get("workdir") or "",
                       exposed_ports=[f"{p}/tcp" if "/" not in str(p) else str(p)
                                      for p in spec.get("expose") or []],
                       labels={k: str(v) for k, v in (spec.get("labels") or {}).items()},
                       user=str(spec.get("user") or ""))


def archive_key(f: ImageFile) -> str:
    h = hashlib.sha256(base_key(f).encode())
    for tag, spec in sorted(f.images.items()):
        h.update(json.dumps([tag, spec], sort_keys=True, default=str).encode())
        for src in sorted(spec.get("files") or {}):
            with open(os.path.join(f.dir, src), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()[:16]


@dataclass
class Built:
    archive: str
    images: list[ArchiveImage]
    cached: bool
    seconds: float

    def to_dict(self) -> dict:
        return {"archive": self.archive, "cached": self.cached, "seconds": round(self.seconds, 1),
                "images": [{"id": i.id, "tags": list(i.tags)} for i in self.images]}


def build(path: str, cache: str = CACHE_DIR, on_progress: ProgressCallback | None = None,
          clock=time.monotonic) -> Built:
    """The `docker save` archive for the image file at `path` (built or from the cache).
    Progress: Notice events (the base layer's build, the archive written)."""
    t0 = clock()
    f = load(path)
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"{os.path.basename(f.dir)}-{stem}"          # examples/tutorial/images.yml
    out = os.path.join(cache, f"{name}-{archive_key(f)}.images.tar")
    if os.path.isfile(out):
        return Built(out, read_images(out), True, clock() - t0)
    base = build_base(f, cache, on_progress, clock)
    layer_dir = out + ".layers"
    os.makedirs(layer_dir, exist_ok=True)
    try:
        configs = []
        for i, (tag, spec) in enumerate(sorted(f.images.items())):
            layers = [base]
            if spec.get("files"):
                lp = os.path.join(layer_dir, f"{i}.tar")
                files_layer(f, spec["files"], lp)
                layers.append(lp)
            configs.append(_config(tag, spec, layers))
        emit(on_progress, Notice(f"writing {os.path.basename(out)} ({len(configs)} images)"))
        images = write_archive(out, configs)
    finally:
        shutil.rmtree(layer_dir, ignore_errors=True)
    return Built(out, images, False, clock() - t0)
