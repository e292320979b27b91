"""`deploy --push-images [--push-from SOURCE]` (or the cluster file's `images: {push_missing: true}`):
images the plan's image check finds missing on nodes are pushed there over SSH
(provision/images/push.py) and the deploy plans again, instead of stopping.

SOURCE: by default the local engine (DOCKER_HOST); else a `docker save` archive or an image file
(provision/images/debian.py: built, or taken from the cache).
"""
from __future__ import annotations

import os
from typing import Callable

from provision.base.errors import InputError

LOCAL_ENGINE = "local"


def source_of(push_from: str | None, push_images: bool, cluster_path: str | None) -> str | None:
    """What to push from: the options, else the cluster file's setting, else None."""
    if push_from:
        return push_from
    if push_images:
        return LOCAL_ENGINE
    if not cluster_path or not os.path.isfile(cluster_path):
        return None          # an engine handed in by a caller: no cluster file to ask
    from provision.base.clusters import load_cluster
    return LOCAL_ENGINE if load_cluster(cluster_path).push_missing_images else None


def check_source(source: str | None) -> None:
    """Offline: a named archive or image file must exist (exit 2 before any connection)."""
    if source and source != LOCAL_ENGINE and not os.path.isfile(source):
        raise InputError("no such file", file=source, path="--push-from")


def push_missing(missing: dict, source: str, cluster_path: str, *,
                 say: Callable[[str], None] | None = None, on_progress=None) -> list[str]:
    """Push the images of `missing` ({image: {hostname}}) to those nodes; returns changes.
    `say(line)` gets what is being done, `on_progress` the per-node byte counts
    (TransferProgress events); both optional."""
    from provision.engine_api.sessions import inventory_hosts, session_for
    from provision.images.archive import read_images
    from provision.images.push import push_archive

    images = sorted(missing)
    say = say or (lambda _m: None)
    saved, cached = None, False
    try:
        if source == LOCAL_ENGINE:
            from provision.images.local_engine import NoLocalEngineError, save
            say(f"saving {' '.join(images)} from the local engine")
            try:
                archive = saved = save(images)
            except NoLocalEngineError as e:
                # the deploy's own way to name another source, beside the generic one
                e.message = (f"{e.message}; or have the deploy push from an archive or an "
                             "image file: `swarmsmith deploy --push-from IMAGE.tar|IMAGES.yml "
                             "...` (images: {push_missing: true} and --push-images push from "
                             "the local engine)")
                e.args = (e.message,)
                raise
        elif source.endswith((".yml", ".yaml")):
            from provision.images.debian import build
            archive = build(source, on_progress=lambda event: say(event.message)).archive
            cached = True
        else:
            archive = source
        have = {t for i in read_images(archive) for t in i.tags}
        lacking = [i for i in images if _full(i) not in have]
        if lacking:
            raise InputError(f"{', '.join(lacking)} not in it (it has: "
                             f"{', '.join(sorted(have)) or 'no tagged image'})",
                             file=archive, path="--push-from")
        from provision.engine_api.access import for_cluster
        all_hosts = inventory_hosts(cluster_path)
        names = for_cluster(cluster_path)
        hostnames = set().union(*missing.values())
        # the check names nodes by hostname; the inventory by the cluster file's names
        wanted = {names.host_name(n, {h.name for h in all_hosts}) or n for n in hostnames}
        hosts = [h for h in all_hosts if h.name in wanted]
        if not hosts:
            raise InputError(f"nodes {', '.join(sorted(wanted))} are not in the inventory",
                             path="--push-images")
        say(f"pushing {', '.join(images)} to {', '.join(h.name for h in hosts)}")
        result = push_archive(archive, hosts, session_for, on_progress=on_progress,
                              keep_compressed=cached)
        return result.changes
    finally:
        if saved:
            os.unlink(saved)


def _full(image: str) -> str:
    """`name` -> `name:latest`, as archives list tags."""
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last or "@" in last else f"{image}:latest"
