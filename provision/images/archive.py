"""`docker save` archives: what images one holds, and writing one from root filesystem layers.

An archive's `manifest.json` lists each image's config file and tags. The image ID is the
sha256 of the config file, whatever the layout: Docker up to 24 names the config
`<hex>.json`, Docker 25+ writes an OCI layout and names it `blobs/sha256/<hex>`. Reading
the ID from the name (and checking it against the bytes) lets `images push` compare
archive and nodes without an engine here.

`write_archive` builds the legacy layout (what `docker load` of every supported engine
accepts) from uncompressed layer tars and a container config, with fixed timestamps, so
the same layers and config always give the same image ID: a rebuilt example image is
recognised as already present on the nodes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass, field

from ..base.errors import InputError

FIXED_CREATED = "2000-01-01T00:00:00Z"


@dataclass(frozen=True)
class ArchiveImage:
    id: str                      # "sha256:<hex>"
    tags: tuple[str, ...]        # "name:tag" as the archive names them


def _config_hex(name: str) -> str:
    base = name.rsplit("/", 1)[-1]
    return base[:-5] if base.endswith(".json") else base


def read_images(path: str) -> list[ArchiveImage]:
    """The images in a `docker save` archive; InputError naming the file when it is not one."""
    try:
        with tarfile.open(path, "r:*") as tar:
            try:
                member = tar.getmember("manifest.json")
            except KeyError:
                raise InputError("not a `docker save` archive (no manifest.json)",
                                 file=path) from None
            manifest = json.load(tar.extractfile(member))
            out = []
            for i, entry in enumerate(manifest if isinstance(manifest, list) else []):
                cfg = entry.get("Config") if isinstance(entry, dict) else None
                if not isinstance(cfg, str):
                    raise InputError(f"manifest.json[{i}].Config: missing", file=path)
                hexid = _config_hex(cfg)
                try:
                    data = tar.extractfile(tar.getmember(cfg)).read()
                except (KeyError, AttributeError):
                    raise InputError(f"manifest.json[{i}].Config: {cfg} is not in the archive",
                                     file=path) from None
                if hashlib.sha256(data).hexdigest() != hexid:
                    raise InputError(f"manifest.json[{i}].Config: {cfg} does not match its "
                                     "digest (archive damaged?)", file=path)
                tags = tuple(t for t in entry.get("RepoTags") or [] if isinstance(t, str))
                out.append(ArchiveImage(f"sha256:{hexid}", tags))
    except (tarfile.TarError, OSError, EOFError, ValueError) as e:
        if isinstance(e, FileNotFoundError):
            raise InputError("no such file", file=path) from None
        raise InputError(f"not a readable `docker save` archive: {e}", file=path) from None
    if not out:
        raise InputError("manifest.json names no image", file=path)
    return out


# --- writing ---------------------------------------------------------------------------

@dataclass
class ImageConfig:
    tag: str                                     # "swarmsmith/dummy-api:1"
    layers: list[str]                            # uncompressed layer tar paths, base first
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    workdir: str = ""
    exposed_ports: list[str] = field(default_factory=list)    # "3894/tcp"
    labels: dict = field(default_factory=dict)
    user: str = ""


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_json(img: ImageConfig, diff_ids: list[str]) -> bytes:
    cfg = {"Env": img.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
           "Cmd": img.cmd or None, "Entrypoint": img.entrypoint or None,
           "WorkingDir": img.workdir, "Labels": img.labels or None, "User": img.user,
           "ExposedPorts": {p: {} for p in img.exposed_ports} or None}
    doc = {"architecture": "amd64", "os": "linux", "created": FIXED_CREATED,
           "config": {k: v for k, v in cfg.items() if v is not None},
           "rootfs": {"type": "layers", "diff_ids": [f"sha256:{d}" for d in diff_ids]},
           "history": [{"created": FIXED_CREATED, "created_by": "swarmsmith"}
                       for _ in diff_ids]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
    tar.addfile(ti, io.BytesIO(data))


def write_archive(out_path: str, images: list[ImageConfig]) -> list[ArchiveImage]:
    """Write a `docker save` archive holding `images` (shared layers stored once)."""
    digests: dict[str, str] = {}
    for img in images:
        for layer in img.layers:
            if layer not in digests:
                digests[layer] = file_sha256(layer)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".archive-", dir=os.path.dirname(os.path.abspath(out_path)))
    os.close(fd)
    result, manifest = [], []
    try:
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
            for layer, d in sorted(digests.items(), key=lambda kv: kv[1]):
                ti = tar.gettarinfo(layer, arcname=f"{d}/layer.tar")
                ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname, ti.mode = 0, 0, 0, "", "", 0o644
                with open(layer, "rb") as f:
                    tar.addfile(ti, f)
            for img in images:
                diff_ids = [digests[l] for l in img.layers]
                cfg = config_json(img, diff_ids)
                hexid = hashlib.sha256(cfg).hexdigest()
                _add_bytes(tar, f"{hexid}.json", cfg)
                manifest.append({"Config": f"{hexid}.json", "RepoTags": [img.tag],
                                 "Layers": [f"{d}/layer.tar" for d in diff_ids]})
                result.append(ArchiveImage(f"sha256:{hexid}", (img.tag,)))
            _add_bytes(tar, "manifest.json", json.dumps(manifest).encode())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return result
