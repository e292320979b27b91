"""Wall time of `swarmsmith up` on lab hosts: cold 1+2 and 1+5 nodes, 1+5 with concurrency 1,
and the no-op re-run of 1+2; ratios against each other and against the Ansible peers' figures
(7.1 s cold, 5.9 s no-op for 1+2). Cold = lab hosts created, engines started, swarm formed, all
in the timed call. In-process (provision.bootstrap.up), so interpreter start-up is not counted;
each cluster is brought down after its run, whatever happens. Needs root.

    python bench/bootstrap.py [--repeat N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stacks.api import UpOptions, down, up  # noqa: E402

ANSIBLE_COLD, ANSIBLE_NOOP = 7.1, 5.9


def cluster_file(folder: str, name: str, workers: int) -> str:
    path = os.path.join(folder, "swarmsmith.yml")
    with open(path, "w") as f:
        f.write(f"name: {name}\nprovider: lab\nmanagers: 1\nworkers: {workers}\n")
    return path


def timed_up(path: str, concurrency: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    result = up(path, UpOptions(concurrency=concurrency)).to_json()
    return time.perf_counter() - t0, result


def run(name: str, workers: int, concurrency: int, noop: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as d:
        path = cluster_file(d, name, workers)
        try:
            cold, result = timed_up(path, concurrency)
            assert len(result["nodes"]) == 1 + workers and result["changes"], result
            out = {"cold": cold}
            if noop:
                out["noop"], again = timed_up(path, concurrency)
                assert again["changes"] == [], again["changes"]
            return out
        finally:
            down(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=1, help="runs per figure (median reported)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/bootstrap.py needs root (lab hosts)", file=sys.stderr)
        return 2

    cases = [("1+2", "bb3", 2, 16, True), ("1+5", "bb6", 5, 16, False),
             ("1+5 concurrency 1", "bb6", 5, 1, False)]
    figures: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for label, name, workers, conc, noop in cases:
            r = run(name, workers, conc, noop)
            figures.setdefault(f"{label} cold", []).append(r["cold"])
            if "noop" in r:
                figures.setdefault("1+2 no-op", []).append(r["noop"])
            print(f"  {label}: cold {r['cold']:.2f} s"
                  + (f", no-op {r['noop']:.2f} s" if "noop" in r else ""), file=sys.stderr)

    med = {k: statistics.median(v) for k, v in figures.items()}
    print(f"swarmsmith up on lab hosts (median of {args.repeat}):")
    for k in ("1+2 cold", "1+5 cold", "1+5 concurrency 1 cold", "1+2 no-op"):
        print(f"  {k:<24} {med[k]:6.2f} s")
    print("ratios:")
    print(f"  1+5 / 1+2 cold                {med['1+5 cold'] / med['1+2 cold']:5.2f}x")
    print(f"  1+5 concurrency 1 / 16        {med['1+5 concurrency 1 cold'] / med['1+5 cold']:5.2f}x")
    print(f"  1+2 cold / Ansible (7.1 s)    {med['1+2 cold'] / ANSIBLE_COLD:5.2f}x")
    print(f"  1+2 no-op / Ansible (5.9 s)   {med['1+2 no-op'] / ANSIBLE_NOOP:5.2f}x")
    # the lab shares this machine's cores: figures taken under load are not comparable
    print("load average (1/5/15 min) at the end: %.2f %.2f %.2f on %d cores"
          % (*os.getloadavg(), os.cpu_count()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
