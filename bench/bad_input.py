"""Refusing a cluster file with huge numbers: time and peak memory of `clusterfile.load`, against
the smallest valid file loaded in the same process (the baseline).

A count that fails validation must never size anything: `managers: 99999999999999999999999`
once built a list of host names until the kernel killed the process.
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from inventory import clusterfile                      # noqa: E402
from provision.base.errors import InputError                 # noqa: E402

CASES = {
    "valid (baseline)": "name: b\nmanagers: 1\nworkers: 2\nlabels: {all: {a: b}}\n",
    "managers: 10**23": "name: b\nmanagers: 99999999999999999999999\nlabels: {all: {a: b}}\n",
    "workers: 2000000": "name: b\nworkers: 2000000\nlabels: {all: {a: b}}\n",
    "port: 10**30": "name: b\nssh: {port: 1000000000000000000000000000000}\n",
}


def measure(path: str, runs: int = 50) -> tuple[float, int]:
    times = []
    tracemalloc.start()
    for _ in range(runs):
        t0 = time.perf_counter()
        try:
            clusterfile.load(path)
        except InputError:
            pass
        times.append(time.perf_counter() - t0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(times), peak


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        results = {}
        for name, text in CASES.items():
            path = os.path.join(d, "c.yml")
            with open(path, "w") as f:
                f.write(text)
            results[name] = measure(path)
    base_t, base_m = results["valid (baseline)"]
    print(f"{'case':<20} {'median ms':>10} {'peak KiB':>9} {'time x':>7} {'mem x':>6}")
    for name, (t, m) in results.items():
        print(f"{name:<20} {t * 1000:>10.3f} {m / 1024:>9.0f} {t / base_t:>7.2f} "
              f"{m / base_m:>6.2f}")


if __name__ == "__main__":
    main()
