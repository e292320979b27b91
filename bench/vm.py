"""VM lab hosts, a cold `up` of one fresh VM (`lab: {vm: true}`, engine.install distro), split
into phases: base image build, VM boot to SSH, engine install (docker.io through the lab's apt
proxy, started by systemd) and swarm formed; and whether QEMU runs under KVM or TCG. Twice: the
first run with an empty image cache and an empty package cache (in a temporary folder, so the
machine's own caches are neither used nor disturbed), the second with both filled by the first.
The VM is brought down after each run. Needs root.

    python bench/vm.py [--keep-caches DIR]

When another lab already runs the machine's apt proxy, that proxy (and its package cache)
serves this bench too: the first run's install is then not cold.
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
from install import use_caches  # noqa: E402  (bench/install.py: the same temporary caches)
NAME = "vmb"
CLUSTER = f"""\
name: {NAME}
managers: 1
lab: {{vm: true}}
engine: {{install: distro}}
"""


def one_run(folder: str) -> tuple[dict, str]:
    from provision import bootstrap
    from provision.hosts.lab import vmimage
    from provision.hosts.lab.lab import Lab

    from provision.base.progress import HostProgress

    events: list[tuple[float, str, str]] = []

    def record(event):
        if isinstance(event, HostProgress):
            events.append((time.perf_counter(), event.host, event.message))

    path = os.path.join(folder, "swarmsmith.yml")
    with open(path, "w") as f:
        f.write(CLUSTER)
    host = f"{NAME}-manager-1"
    try:
        t0 = time.perf_counter()
        vmimage.ensure()
        t1 = time.perf_counter()
        Lab(NAME).up([host], vm=True)
        t2 = time.perf_counter()
        accel = Lab(NAME).accel
        result = bootstrap.up(path, on_progress=record)
        t3 = time.perf_counter()
        assert [c for c in result.changes if "engine installed" in c], result.changes
        # the package starts the engine under systemd: its install ends when it is in
        answered = [t for t, _, msg in events if msg.startswith(("engine installed",
                                                                 "engine answers"))]
        assert answered, events
        return {"base image build": t1 - t0, "VM boot to SSH": t2 - t1,
                "engine install": answered[-1] - t2, "swarm formed": t3 - answered[-1],
                "total": t3 - t0}, accel
    finally:
        bootstrap.down(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep-caches", metavar="DIR", default=None,
                    help="use (and keep) this cache folder instead of a temporary one")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/vm.py needs root (lab hosts)", file=sys.stderr)
        return 2
    caches = args.keep_caches or tempfile.mkdtemp(prefix="swarmsmith-bench-caches-")
    use_caches(caches)
    try:
        runs, accel = [], ""
        for label in ("first", "cached"):
            with tempfile.TemporaryDirectory(prefix="bench-vm-") as d:
                print(f"run {label} ...", file=sys.stderr, flush=True)
                phases, accel = one_run(d)
                runs.append(phases)
        first, cached = runs
        with open("/proc/loadavg") as f:
            load = f.read().split()[0]
        print(f"cold `up` of 1 VM lab host (Debian 12, docker.io from Debian) under "
              f"{accel.upper()}; {os.cpu_count()} cores, load average {load}")
        print(f"{'phase':<18} {'first run':>10} {'cached':>10}")
        for phase in first:
            print(f"{phase:<18} {first[phase]:>9.1f}s {cached[phase]:>9.1f}s")
        return 0
    finally:
        if not args.keep_caches:
            shutil.rmtree(caches, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
