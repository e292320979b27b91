"""Cold `up` on fresh hosts (lab image debian-12, engine.install distro), 1 manager + 2 workers,
split into phases: image build, host start, engine install (apt proxy, daemon.json, docker.io,
start) and swarm (init, joins). Twice: the first run with an empty image cache and an empty
package cache (both in a temporary folder, so the machine's own caches are neither used nor
disturbed), the second with both caches filled by the first; ratios second/first. In-process
(interpreter start-up not counted); the cluster is brought down after each run. Needs root.

    python bench/install.py [--keep-caches DIR]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
NAME = "frb"
CLUSTER = f"""\
name: {NAME}
managers: 1
workers: 2
lab: {{image: debian-12}}
engine: {{install: distro}}
"""


def use_caches(folder: str) -> None:
    """Point the image and package caches at `folder` (read when the modules are imported)."""
    os.environ["SWARMSMITH_IMAGE_CACHE"] = os.path.join(folder, "images")
    os.environ["SWARMSMITH_APT_CACHE"] = os.path.join(folder, "apt-cache")


def one_run(folder: str) -> dict:
    from provision import bootstrap
    from provision.hosts.lab import image
    from provision.hosts.lab.lab import Lab

    events: list[tuple[float, str, str]] = []

    class Recorder(bootstrap.Progress):
        def __call__(self, host, msg):
            events.append((time.perf_counter(), host, msg))

    path = os.path.join(folder, "swarmsmith.yml")
    with open(path, "w") as f:
        f.write(CLUSTER)
    hosts = [f"{NAME}-manager-1", f"{NAME}-worker-1", f"{NAME}-worker-2"]
    saved = bootstrap.Progress
    bootstrap.Progress = Recorder
    try:
        t0 = time.perf_counter()
        image.ensure("debian-12")
        t1 = time.perf_counter()
        Lab(NAME).up(hosts, image="debian-12")
        t2 = time.perf_counter()
        result = bootstrap.up(path, bootstrap.Options(quiet=True))
        t3 = time.perf_counter()
        assert len(result["nodes"]) == 3, result
        assert sum("engine installed" in c for c in result["changes"]) == 3, result["changes"]
        started = [t for t, _, msg in events if msg.startswith("engine started")]
        assert len(started) == 3, events
        return {"image build": t1 - t0, "host start": t2 - t1,
                "engine install": max(started) - t2, "swarm": t3 - max(started),
                "total": t3 - t0}
    finally:
        bootstrap.Progress = saved
        bootstrap.down(path, bootstrap.Options())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-caches", metavar="DIR", default=None,
                    help="use (and keep) this cache folder instead of a temporary one")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/install.py needs root (lab hosts)", file=sys.stderr)
        return 2
    caches = args.keep_caches or tempfile.mkdtemp(prefix="swarmsmith-bench-caches-")
    use_caches(caches)
    try:
        runs = []
        for label in ("first", "cached"):
            with tempfile.TemporaryDirectory(prefix="bench-install-") as d:
                print(f"run {label} ...", file=sys.stderr, flush=True)
                runs.append(one_run(d))
        first, cached = runs
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print(f"cold `up` of 1+2 fresh hosts (debian-12, docker.io from Debian); "
              f"load average {load}")
        print(f"{'phase':<16} {'first run':>10} {'cached':>10} {'cached/first':>13}")
        for phase in first:
            ratio = cached[phase] / first[phase] if first[phase] > 0 else float("nan")
            print(f"{phase:<16} {first[phase]:>9.1f}s {cached[phase]:>9.1f}s {ratio:>13.2f}")
        return 0
    finally:
        if not args.keep_caches:
            shutil.rmtree(caches, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
