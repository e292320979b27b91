"""Requests and wall time to provision 10 and 30 droplets on the DigitalOcean emulator.

No SSH (the emulator's default host factory hands out documentation addresses); droplets turn
active after a simulated delay. The last line is
    droplets=N requests=R create_requests=C seconds=S
for the 30-droplet run. Usage: python bench/digitalocean.py [--delay 3] [--poll 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

# This file is named like the library: drop bench/ from the path so `import digitalocean` finds
# python-digitalocean, and put the repository root there instead.
_here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
sys.path.insert(0, os.path.dirname(_here))

from provision.digitalocean import DigitalOceanProvider  # noqa: E402
from provision.hosts import WantedHost  # noqa: E402
from tests.do_emulator import DOEmulator  # noqa: E402
from tests.do_emulator.testing import write_public_key  # noqa: E402

TOKEN = "bench-token-not-a-secret"


def run(droplets: int, delay: float, poll: float, key_dir: str) -> dict:
    managers = 3 if droplets >= 3 else 1
    wanted = ([WantedHost(f"bench-manager-{i}", "manager") for i in range(1, managers + 1)]
              + [WantedHost(f"bench-worker-{i}", "worker")
                 for i in range(1, droplets - managers + 1)])
    with DOEmulator(TOKEN, activation_delay=delay) as emu:
        provider = DigitalOceanProvider(
            "bench", {"region": "fra1", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64",
                      "ssh_key": write_public_key(key_dir), "poll_interval": poll,
                      "wait_timeout": 600},
            None, env={"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_END_POINT": emu.url},
            ssh_check=None)
        start = time.monotonic()
        hosts, _ = provider.ensure(wanted)
        seconds = time.monotonic() - start
        assert len(hosts) == droplets and all(h.public_address for h in hosts)
        return {"droplets": droplets, "requests": emu.total_requests(),
                "create_requests": emu.count("POST", "/v2/droplets"),
                "list_polls": emu.list_polls("swarmsmith:bench"), "seconds": seconds,
                "by_path": sorted(emu.counts.items())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=3.0, help="simulated activation delay (s)")
    ap.add_argument("--poll", type=float, default=1.0, help="poll interval (s)")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as key_dir:
        for n in (10, 30):
            r = run(n, args.delay, args.poll, key_dir)
            results.append(r)
            print(f"--- {n} droplets, activation delay {args.delay:g}s, poll every {args.poll:g}s")
            for (method, path), count in r["by_path"]:
                print(f"  {count:4d}  {method} {path}")
            print(f"  {r['requests']} requests ({r['requests'] / n:.2f} per droplet), "
                  f"{r['create_requests']} create requests, {r['list_polls']} tagged list calls, "
                  f"{r['seconds']:.2f}s")
    last = results[-1]
    print(f"droplets={last['droplets']} requests={last['requests']} "
          f"create_requests={last['create_requests']} seconds={last['seconds']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
