"""Put images on swarm nodes without a registry: a `docker save` archive, sent over each
node's SSH connection to `docker load`, all nodes at once.

Per node, facts first: one command asks the node for the image ID behind every tag in the
archive and whether it has each image ID at all. A node whose tags already name the same
IDs is left alone (nothing sent); a node that has the IDs under other tags only gets
`docker tag`; every other node gets the archive. The archive is gzip-compressed once
(`docker load` reads gzip itself) and the same bytes stream to all nodes in parallel.
After loading, the tags are asked again and must name the archive's IDs.
"""
from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from ..remote import docker_cli
from ..remote.command import Command
from ..base.errors import InputError, RemoteCommandError
from ..base.progress import Notice, ProgressCallback, TransferProgress, emit
from .archive import ArchiveImage, read_images

PRESENT, TAG, LOAD = "present", "tagged", "loaded"
PROBE = docker_cli.IMAGE_IDS_PROBE

# (host, phase, bytes done, bytes total): phase is "compress", "send" or "done"
Transfers = Callable[[str, str, int, int], None]


@dataclass
class NodeResult:
    host: str
    action: str                 # present | tagged | loaded
    bytes_sent: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        rate = self.bytes_sent / self.seconds if self.seconds > 0 else 0.0
        return {"host": self.host, "action": self.action, "bytes_sent": self.bytes_sent,
                "seconds": round(self.seconds, 3), "bytes_per_second": round(rate)}


@dataclass
class PushResult:
    images: list[ArchiveImage]
    nodes: list[NodeResult] = field(default_factory=list)
    archive_bytes: int = 0
    wire_bytes: int = 0          # the compressed size sent to each loading node

    @property
    def changes(self) -> list[str]:
        tags = ", ".join(t for i in self.images for t in i.tags) or \
            ", ".join(i.id[:19] for i in self.images)
        return [f"{n.host}: {n.action} {tags}" for n in self.nodes if n.action != PRESENT]

    def to_dict(self) -> dict:
        return {"images": [{"id": i.id, "tags": list(i.tags)} for i in self.images],
                "archive_bytes": self.archive_bytes, "wire_bytes": self.wire_bytes,
                "nodes": [n.to_dict() for n in self.nodes], "changes": self.changes}


def probe_command(images: list[ArchiveImage]) -> Command:
    refs = [t for i in images for t in i.tags] + [i.id for i in images]
    return Command.of("sh", "-c", PROBE, "sh", *refs, description="look up image IDs")


def parse_probe(text: str) -> dict[str, str | None]:
    """{reference: image ID or None} from the probe's "REF ID|-" lines."""
    out: dict[str, str | None] = {}
    for line in text.splitlines():
        ref, _, got = line.strip().rpartition(" ")
        if ref:
            out[ref] = got if got.startswith("sha256:") else None
    return out


def decide(images: list[ArchiveImage], seen: dict[str, str | None]) -> str:
    """PRESENT when every tag already names its image, TAG when only tags are missing
    (the IDs are there), LOAD otherwise."""
    if all(seen.get(t) == i.id for i in images for t in i.tags) and \
            all(seen.get(i.id) == i.id for i in images):
        return PRESENT
    if all(seen.get(i.id) == i.id for i in images):
        return TAG
    return LOAD


def mismatches(images: list[ArchiveImage], seen: dict[str, str | None]) -> list[str]:
    bad = [f"{t} is {seen.get(t) or 'missing'}, expected {i.id}"
           for i in images for t in i.tags if seen.get(t) != i.id]
    bad += [f"{i.id} is missing" for i in images if not i.tags and seen.get(i.id) != i.id]
    return bad


def is_gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def compress(path: str, out_dir: str, progress: Transfers | None = None) -> str:
    """A gzip copy of the archive (level 1: fast; image layers are often compressed already)."""
    total = os.path.getsize(path)
    fd, out = tempfile.mkstemp(prefix=".push-", suffix=".tar.gz", dir=out_dir)
    done = 0
    try:
        with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1,
                                                       mtime=0) as gz, open(path, "rb") as src:
            for chunk in iter(lambda: src.read(1 << 20), b""):
                gz.write(chunk)
                done += len(chunk)
                if progress:
                    progress("", "compress", done, total)
    except BaseException:
        os.unlink(out)
        raise
    return out


def push_archive(path: str, hosts: list, session_for, *,
                 on_progress: ProgressCallback | None = None, compress_wire: bool = True,
                 concurrency: int = 16, keep_compressed: bool = False,
                 clock=time.monotonic) -> PushResult:
    """Push the archive at `path` to `hosts` (provision.base.hosts.Host); `session_for(host)` gives
    an SSH session (provision.remote.ssh.Session). Raises GroupError naming every failed host.
    Progress: TransferProgress events (compressing, then per node).
    `keep_compressed`: the archive never changes (a cached build), so its gzip copy is kept
    beside it as `<path>.gz` and reused by the next push."""
    from ..remote.parallel import each
    progress = None if on_progress is None else \
        (lambda *transfer: on_progress(TransferProgress(*transfer)))

    images = read_images(path)
    result = PushResult(images, archive_bytes=os.path.getsize(path))
    sessions = {h.name: session_for(h) for h in hosts}
    try:
        def probe(host) -> dict:
            r = sessions[host.name].run(probe_command(images), timeout=120)
            return parse_probe(r.stdout)

        seen = each(probe, hosts, concurrency=concurrency)
        todo = {h.name: decide(images, seen[h.name]) for h in hosts}
        wire, tmpdir = path, None
        if LOAD in todo.values() and compress_wire and not is_gzip(path):
            if keep_compressed:
                wire = path + ".gz"
                if not os.path.isfile(wire):
                    tmp = compress(path, os.path.dirname(os.path.abspath(path)), progress)
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, wire)
            else:
                tmpdir = tempfile.mkdtemp(prefix="swarmsmith-push-")
                wire = compress(path, tmpdir, progress)
        result.wire_bytes = os.path.getsize(wire) if LOAD in todo.values() else 0
        lock = threading.Lock()

        def apply(host) -> NodeResult:
            action, t0 = todo[host.name], clock()
            s = sessions[host.name]
            if action == PRESENT:
                return NodeResult(host.name, PRESENT)
            sent = 0
            if action == TAG:
                for i in images:
                    for t in i.tags:
                        s.run(docker_cli.image_tag(i.id, t))
            else:
                total = result.wire_bytes
                if progress:             # the rate is measured from here
                    with lock:
                        progress(host.name, "send", 0, total)

                def on_sent(n: int) -> None:
                    nonlocal sent
                    sent = n
                    if progress:
                        with lock:
                            progress(host.name, "send", n, total)
                with open(wire, "rb") as f:
                    r = s.run(docker_cli.IMAGE_LOAD,
                              check=False, timeout=1800, source=f, on_sent=on_sent)
                if r.exit_status != 0:
                    raise RemoteCommandError("docker load failed", host=host.name,
                                             command=docker_cli.IMAGE_LOAD.masked(),
                                             exit_status=r.exit_status,
                                             output=r.stdout + r.stderr)
            after = parse_probe(s.run(probe_command(images), timeout=120).stdout)
            bad = mismatches(images, after)
            if bad:
                raise RemoteCommandError("after loading, the node's images differ from the "
                                         "archive's: " + "; ".join(bad), host=host.name,
                                         command="docker image inspect", exit_status=0)
            res = NodeResult(host.name, action, sent, clock() - t0)
            if progress and action == LOAD:
                with lock:
                    progress(host.name, "done", sent, result.wire_bytes)
            return res

        try:
            done = each(apply, hosts, concurrency=concurrency)
        finally:
            if tmpdir:
                shutil.rmtree(tmpdir, ignore_errors=True)
        result.nodes = [done[h.name] for h in hosts]
        return result
    finally:
        for s in sessions.values():
            s.close()


# --- to a cluster's nodes -------------------------------------------------------------

NODE_GROUPS = ("all", "managers", "workers")


def select_hosts(hosts: list, wanted: list[str], node_names=None) -> list:
    """`--nodes all|managers|workers|NAME…` over the inventory's hosts (in inventory order); a
    node may be named by the cluster file's name, or with `node_names`
    (node_names.NodeNames) by its hostname or node ID."""
    wanted = wanted or ["all"]
    names = {h.name for h in hosts}
    if node_names is not None:
        wanted = [w if w in NODE_GROUPS else (node_names.host_name(w, names) or w)
                  for w in wanted]
    unknown = [w for w in wanted if w not in NODE_GROUPS and w not in names]
    if unknown:
        raise InputError(f"--nodes: no node named {', '.join(unknown)} in the inventory "
                         f"(nodes: {', '.join(sorted(names))}; or all, managers, workers)")
    pick = set()
    for w in wanted:
        if w == "all":
            pick |= names
        elif w in ("managers", "workers"):
            pick |= {h.name for h in hosts if h.role == w[:-1]}
        else:
            pick.add(w)
    return [h for h in hosts if h.name in pick]


def push_to_cluster(cluster_path: str, *, archive: str | None = None, images: list[str] = (),
                    nodes: list[str] = ("all",), on_progress: ProgressCallback | None = None,
                    compress_wire: bool = True, keep_compressed: bool = False) -> PushResult:
    """Push a `docker save` archive, or the named images of the local engine (saved to a
    temporary archive, removed after), to the cluster's nodes picked by `nodes` (select_hosts).
    Progress: a Notice for what is done before the push starts (the save), then
    TransferProgress events."""
    from ..engine_api.sessions import inventory_hosts, session_for
    all_hosts = inventory_hosts(cluster_path)
    named = None
    if any(n not in NODE_GROUPS and n not in {h.name for h in all_hosts} for n in nodes):
        from ..engine_api.access import for_cluster
        named = for_cluster(cluster_path)
    hosts = select_hosts(all_hosts, list(nodes), named)
    saved = None
    try:
        if images:
            from .local_engine import save
            emit(on_progress, Notice(f"saving {' '.join(images)} from the local engine"))
            saved = save(list(images))
        return push_archive(archive or saved, hosts, session_for, on_progress=on_progress,
                            compress_wire=compress_wire, keep_compressed=keep_compressed)
    finally:
        if saved:
            os.unlink(saved)
