"""Start-up time of `swarmsmith --help` (target <= 0.15 s): the console script, 10 runs.

Prints the median, and which heavy libraries the CLI loaded (must be none: docker, paramiko
and python-digitalocean together cost ~0.5 s and are imported inside the commands).
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time


def script() -> list[str]:
    here = os.path.join(os.path.dirname(sys.executable), "swarmsmith")
    if os.path.exists(here):
        return [here]
    found = shutil.which("swarmsmith")
    return [found] if found else [sys.executable, "-c", "import cli, sys; sys.exit(cli.main())"]


def main() -> None:
    cmd = script() + ["--help"]
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t0)
    base = []
    for _ in range(10):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        base.append(time.perf_counter() - t0)
    heavy = subprocess.run(
        [sys.executable, "-c", "import sys, cli; cli.build_parser(); print(','.join(m for m in "
         "('docker','paramiko','fabric','digitalocean','requests','rich','yaml') if m in sys.modules))"],
        capture_output=True, text=True, check=True).stdout.strip()
    med, bmed = statistics.median(times), statistics.median(base)
    print(f"swarmsmith --help: median {med:.3f} s over 10 runs ({' '.join(cmd[:1])})")
    print(f"bare python start: median {bmed:.3f} s; the CLI adds {med - bmed:.3f} s")
    print(f"heavy modules loaded by the parser: {heavy or 'none'}")
    print(f"target 0.150 s: {'met' if med <= 0.15 else 'missed'}")


if __name__ == "__main__":
    main()
