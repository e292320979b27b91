"""The agent's image (`swarmsmith agent install`), built here like `images build` does
(provision/images/debian.py): a Debian base layer from mmdebstrap with git, ssh and python3 and
the Debian packages of swarmsmith's dependencies, and one layer with swarmsmith's own code and
the wheels Debian has no recent enough package for (docker: bookworm has 5.0, swarmsmith needs
7.1), downloaded from PyPI once with pip, checked against a pinned sha256 and cached.

The tag is derived from everything in the image, so a changed swarmsmith gives a new tag and
`agent install` updates the service; the same code gives the same image ID, which `images push`
then sends to no manager that has it. No registry is involved.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from dataclasses import dataclass

import yaml

from .archive import file_sha256
from .debian import CACHE_DIR, Built, BuildError, build

NAME = "swarmsmith/agent"
SUITE = "bookworm"
# git and ssh for the repository; python3 and Debian's packages of swarmsmith's dependencies
# (paramiko and fabric are for SSH to hosts, which the agent never opens)
PACKAGES = ("ca-certificates", "git", "openssh-client", "python3", "python3-requests",
            "python3-yaml")
# (distribution, version, file, sha256) of what Debian's bookworm packages too old
WHEELS = (("docker", "7.1.0", "docker-7.1.0-py3-none-any.whl",
           "c96b93b7f0a746f9e77d325bcfb87422a3d8bd4f03136ae8a85b37f1898d5fc0"),)
HOME = "/opt/swarmsmith"
CODE_DIRS = ("inventory", "provision", "stacks")


def source_root() -> str:
    """The checkout's top folder (where cli.py and the packages are): provision's parent."""
    import provision
    return os.path.dirname(os.path.dirname(os.path.abspath(provision.__file__)))


def code_files(root: str | None = None) -> dict[str, str]:
    """swarmsmith's own modules: local path -> path in the image."""
    root = root or source_root()
    out = {os.path.join(root, "cli.py"): f"{HOME}/cli.py"}
    for top in CODE_DIRS:
        for folder, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for f in sorted(files):
                if f.endswith(".py"):
                    src = os.path.join(folder, f)
                    out[src] = f"{HOME}/{os.path.relpath(src, root)}"
    return out


def wheel_files(cache: str = CACHE_DIR, download=None) -> dict[str, str]:
    """The pinned wheels, downloaded once (pip) and unpacked into the cache: local path -> path
    in the image (under HOME/lib, which is on the image's PYTHONPATH)."""
    out = {}
    folder = os.path.join(cache, "agent-wheels")
    os.makedirs(folder, exist_ok=True)
    for dist, version, filename, sha in WHEELS:
        wheel = os.path.join(folder, filename)
        if not os.path.isfile(wheel) or file_sha256(wheel) != sha:
            (download or _pip_download)(f"{dist}=={version}", folder)
            if not os.path.isfile(wheel):
                raise BuildError(f"pip download {dist}=={version} gave no {filename}")
        if file_sha256(wheel) != sha:
            os.unlink(wheel)
            raise BuildError(f"{filename}: sha256 differs from the pinned one (download again)")
        unpacked = os.path.join(folder, f"{filename}.d")
        if not os.path.isdir(unpacked):
            with zipfile.ZipFile(wheel) as z:
                z.extractall(unpacked + ".tmp")
            os.replace(unpacked + ".tmp", unpacked)
        for sub, _dirs, files in os.walk(unpacked):
            for f in files:
                src = os.path.join(sub, f)
                out[src] = f"{HOME}/lib/{os.path.relpath(src, unpacked)}"
    return out


def _pip_download(requirement: str, folder: str) -> None:
    import sys
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", folder, requirement]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BuildError(f"pip download {requirement} (for the agent's image) exited "
                         f"{proc.returncode}: {tail[0][:300]}")


def tag_for(files: dict[str, str]) -> str:
    """name:tag, the tag a digest of the packages, the wheels and the code."""
    h = hashlib.sha256(repr((SUITE, sorted(PACKAGES), WHEELS)).encode())
    for src, dst in sorted(files.items(), key=lambda kv: kv[1]):
        h.update(dst.encode() + b"\0")
        with open(src, "rb") as f:
            h.update(f.read())
    return f"{NAME}:{h.hexdigest()[:12]}"


@dataclass
class AgentImage:
    tag: str
    built: Built


def build_agent_image(cache: str = CACHE_DIR, on_progress=None, download=None) -> AgentImage:
    """The agent's image as a `docker save` archive in the cache (built or reused)."""
    files = {**code_files(), **wheel_files(cache, download)}
    tag = tag_for(files)
    folder = os.path.join(cache, "agent")
    os.makedirs(folder, exist_ok=True)
    image_file = os.path.join(folder, "agent-image.yml")
    doc = {"suite": SUITE, "packages": sorted(PACKAGES), "images": {tag: {
        "files": files, "workdir": HOME,
        "env": {"PYTHONPATH": f"{HOME}:{HOME}/lib", "PYTHONUNBUFFERED": "1",
                "PYTHONDONTWRITEBYTECODE": "1"},
        "cmd": ["python3", f"{HOME}/cli.py", "agent", "run"],
        "labels": {"com.swarmsmith.agent": "1"}}}}
    tmp = image_file + f".{os.getpid()}"
    with open(tmp, "w") as f:
        yaml.safe_dump(doc, f, sort_keys=True)
    os.replace(tmp, image_file)
    image = AgentImage(tag, build(image_file, cache, on_progress))
    prune(cache, image.built.archive)
    return image


ARCHIVE_PREFIX = "agent-agent-image-"      # what build() names the archives of agent-image.yml


def prune(cache: str, current: str, keep: int = 2) -> list[str]:
    """Each new swarmsmith gives a new agent image, a full archive (base layer included) in the
    cache: keep `current` and the newest others up to `keep`, with their compressed copies."""
    try:
        names = os.listdir(cache)
    except OSError:
        return []
    archives = sorted((os.path.join(cache, n) for n in names
                       if n.startswith(ARCHIVE_PREFIX) and n.endswith(".images.tar")),
                      key=os.path.getmtime, reverse=True)
    kept = [current] + [a for a in archives if a != current][:max(0, keep - 1)]
    removed = []
    for a in archives:
        if a in kept:
            continue
        for path in (a, a + ".gz"):
            try:
                os.unlink(path)
                removed.append(path)
            except FileNotFoundError:
                pass
    return removed
