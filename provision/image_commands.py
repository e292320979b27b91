"""CLI commands for images: `images push` and `images build`. Registered by cli.py; heavy
imports happen inside the commands."""
from __future__ import annotations

import json
import os
import sys
import time

from .errors import InputError

NODE_GROUPS = ("all", "managers", "workers")


def _cluster_path(args) -> str:
    from inventory.clusterfile import find
    return find(getattr(args, "cluster", None))


def select_hosts(hosts: list, wanted: list[str]) -> list:
    """`--nodes all|managers|workers|NAME…` over the inventory's hosts (in inventory order)."""
    wanted = wanted or ["all"]
    names = {h.name for h in hosts}
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


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


class ProgressPrinter:
    """Per-node lines on stderr, at most one per node per second, plus the last one."""

    def __init__(self, out=sys.stderr, clock=time.monotonic, every: float = 1.0):
        self.out, self.clock, self.every = out, clock, every
        self.last: dict[str, float] = {}
        self.start: dict[str, float] = {}

    def __call__(self, host: str, phase: str, done: int, total: int) -> None:
        now = self.clock()
        key = host or phase
        self.start.setdefault(key, now)
        final = phase == "done" or (phase == "compress" and done >= total)
        if phase == "send" and done == 0:      # the start: nothing to show yet
            self.start[key] = now
            self.last[key] = now
            return
        if not final and now - self.last.get(key, -1e9) < self.every:
            return
        self.last[key] = now
        secs = max(now - self.start[key], 1e-6)
        if phase == "compress":
            print(f"  compressing the archive: {_mb(done)} / {_mb(total)}", file=self.out)
        elif phase == "send":
            print(f"  {host}: sending {_mb(done)} / {_mb(total)}  {done / secs / 1e6:.1f} MB/s",
                  file=self.out)
        elif phase == "done":
            print(f"  {host}: {_mb(done)} sent, loaded and checked in {secs:.1f} s "
                  f"({done / secs / 1e6:.1f} MB/s)", file=self.out)
        self.out.flush()


def cmd_images_push(args) -> int:
    from .dockerapi import inventory_hosts, session_for
    from .image_archive import read_images
    from .image_push import push_archive

    if bool(args.file) == bool(args.images):
        raise InputError("images push: give IMAGE names (from the local engine) or --file "
                         "ARCHIVE.tar (from docker save), not both or neither")
    if args.file:
        read_images(args.file)        # a bad archive fails before any host is contacted
    path = _cluster_path(args)
    hosts = select_hosts(inventory_hosts(path), args.nodes)
    saved = None
    try:
        if args.images:
            from .local_engine import save
            if not args.json:
                print(f"saving {' '.join(args.images)} from the local engine", file=sys.stderr)
            saved = save(args.images)
        archive = args.file or saved
        progress = None if args.json else ProgressPrinter()
        result = push_archive(archive, hosts, session_for, progress=progress,
                              compress_wire=not args.no_compress)
    finally:
        if saved:
            os.unlink(saved)
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    _print_push(result)
    return 0


def cmd_images_build(args) -> int:
    """Build images from Debian packages (provision/debian_images.py), optionally push them."""
    from .debian_images import build, load
    load(args.file)                       # bad input fails before anything is built
    say = (lambda m: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    built = build(args.file, progress=say)
    report = {"build": built.to_dict()}
    if not args.json:
        how = "from the cache" if built.cached else f"built in {built.seconds:.1f} s"
        print(f"{os.path.basename(args.file)}: {len(built.images)} images {how}: {built.archive}")
        for i in built.images:
            print(f"  {', '.join(i.tags)}  {i.id[:19]}")
    if args.push:
        from .dockerapi import inventory_hosts, session_for
        from .image_push import push_archive
        hosts = select_hosts(inventory_hosts(_cluster_path(args)), args.nodes)
        result = push_archive(built.archive, hosts, session_for, keep_compressed=True,
                              progress=None if args.json else ProgressPrinter())
        report["push"] = result.to_dict()
        if not args.json:
            _print_push(result)
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


def _print_push(result) -> None:
    names = ", ".join(t for i in result.images for t in i.tags) or "images"
    changes = result.changes
    print(f"{names}: " + (f"{len(changes)} changes" if changes else "no changes "
                          "(every node has the same image IDs)"))
    for n in result.nodes:
        if n.action == "present":
            print(f"  = {n.host}: already there")
        elif n.action == "tagged":
            print(f"  ~ {n.host}: tagged (image already there)")
        else:
            rate = n.bytes_sent / n.seconds / 1e6 if n.seconds else 0
            print(f"  ~ {n.host}: loaded, {_mb(n.bytes_sent)} sent in {n.seconds:.1f} s "
                  f"({rate:.1f} MB/s)")


def add_commands(sub) -> None:
    images = sub.add_parser("images", help="put images on the nodes without a registry")
    isub = images.add_subparsers(dest="images_command", metavar="IMAGES_COMMAND")
    isub.required = True
    push = isub.add_parser("push", help="send images from the local engine (or a docker save "
                           "archive) to the nodes over SSH; nodes that have them are skipped")
    push.add_argument("images", nargs="*", metavar="IMAGE",
                      help="image names or IDs in the local engine (DOCKER_HOST)")
    push.add_argument("--file", metavar="ARCHIVE.tar", help="a `docker save` archive instead")
    push.add_argument("--nodes", nargs="+", metavar="NODE", default=["all"],
                      help="all (default), managers, workers, or node names (after the IMAGEs)")
    push.add_argument("--cluster", metavar="FILE", help="cluster file")
    push.add_argument("--no-compress", action="store_true",
                      help="send the archive as it is (default: gzip on the wire)")
    push.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    push.set_defaults(func=cmd_images_push)

    build = isub.add_parser("build", help="build images from Debian packages (mmdebstrap, no "
                            "engine needed; cached), optionally push them to the nodes")
    build.add_argument("file", metavar="IMAGES.yml", help="image file (see "
                       "examples/tutorial/images.yml)")
    build.add_argument("--push", action="store_true", help="push the images to the nodes")
    build.add_argument("--nodes", nargs="+", metavar="NODE", default=["all"],
                       help="with --push: all (default), managers, workers, or node names")
    build.add_argument("--cluster", metavar="FILE", help="cluster file (with --push)")
    build.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    build.set_defaults(func=cmd_images_build)
