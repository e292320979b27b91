"""What running from a folder with no local state costs: `status`, a no-op `deploy` and a no-op
`up` from a fresh folder (a static cluster file with pinned host keys, nothing else) against the
same commands from the folder that ran `up` (its `.swarmsmith/` cache), on lab stb (1 manager +
1 worker). Medians of N runs each, interleaved, and the fresh/cached ratio. Needs root; removes
its lab.

    python bench/fresh_folder.py [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from provision.hosts.lab.lab import Lab  # noqa: E402

LAB = "stb"
STACK = ("services:\n  app:\n    image: swarmsmith/busybox:1\n"
         "    command: [\"sh\", \"-c\", \"sleep 100000\"]\n    deploy: {replicas: 1}\n")


def cluster_file(hosts, pins: bool) -> str:
    lines = [f"name: {LAB}", "provider: static", f"ssh: {{key: {hosts[0].key_path}}}",
             "engine: {install: never, daemon: {storage-driver: overlay2}}", "static:", "  hosts:"]
    for h, role in zip(hosts, ("manager", "worker")):
        pin = f', host_key: "{h.host_key}"' if pins else ""
        lines.append(f"    - {{name: {h.name}, address: {h.public_address}, "
                     f"private_address: {h.private_address}, role: {role}{pin}}}")
    return "\n".join(lines) + "\n"


def run(cwd: str, *args: str) -> float:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, os.path.join(ROOT, "cli.py"), *args], cwd=cwd,
                       capture_output=True, text=True, stdin=subprocess.DEVNULL)
    took = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"swarmsmith {' '.join(args)} in {cwd}: exit {p.returncode}\n{p.stderr}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    n = ap.parse_args().runs
    lab = Lab(LAB)
    tmp = tempfile.mkdtemp(prefix="swarmsmith-bench-")
    try:
        hosts, _ = lab.up([f"{LAB}-1", f"{LAB}-2"])
        cached, fresh = os.path.join(tmp, "cached"), os.path.join(tmp, "fresh")
        for d, pins in ((cached, False), (fresh, True)):
            os.makedirs(d)
            with open(os.path.join(d, "swarmsmith.yml"), "w") as f:
                f.write(cluster_file(hosts, pins))
            with open(os.path.join(d, "stack.yml"), "w") as f:
                f.write(STACK)
        run(cached, "up")
        run(cached, "image-load")
        run(cached, "deploy", "-c", "stack.yml", "app")
        commands = {"status": ("status",), "deploy (no-op)": ("deploy", "-c", "stack.yml", "app"),
                    "up (no-op)": ("up",)}
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        print(f"{'command':<16} {'cached s':>9} {'fresh s':>8} {'fresh/cached':>13}")
        for label, args in commands.items():
            times: dict[str, list[float]] = {"cached": [], "fresh": []}
            for _ in range(n):
                times["cached"].append(run(cached, *args))
                times["fresh"].append(run(fresh, *args))
                if label == "up (no-op)":       # `up` writes its cache: keep the folder fresh
                    shutil.rmtree(os.path.join(fresh, ".swarmsmith"), ignore_errors=True)
            c, f = statistics.median(times["cached"]), statistics.median(times["fresh"])
            print(f"{label:<16} {c:9.2f} {f:8.2f} {f / c:13.2f}")
        print(f"load average after: {os.getloadavg()[0]:.1f} (2 cores shared; figures move with it)")
    finally:
        Lab(LAB).down()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
