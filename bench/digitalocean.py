"""Requests and wall time to provision 10 and 30 droplets on the DigitalOcean emulator.

No SSH (the emulator's default host factory hands out documentation addresses); droplets turn
active after a simulated delay. Each size runs twice: on a prompt emulator, then on one that is
as slow as the real API (new droplets listed only after two poll intervals, DigitalOcean's
250-a-minute burst limit with retry-after and 5,000-an-hour budget). The last two lines are
    droplets=N requests=R create_requests=C seconds=S
    slow: droplets=N requests=R create_requests=C seconds=S list_lag=L
for the 30-droplet runs. Usage: python bench/digitalocean.py [--delay 3] [--poll 1]
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


def run(droplets: int, delay: float, poll: float, key_dir: str, slow: bool = False) -> dict:
    managers = 3 if droplets >= 3 else 1
    wanted = ([WantedHost(f"bench-manager-{i}", "manager") for i in range(1, managers + 1)]
              + [WantedHost(f"bench-worker-{i}", "worker")
                 for i in range(1, droplets - managers + 1)])
    limits = {"list_lag": 2 * poll, "per_minute_limit": 250, "hourly_limit": 5000} if slow else {}
    with DOEmulator(TOKEN, activation_delay=delay, **limits) as emu:
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
                "refused": sum(1 for *_, status in emu.log if status == 429),
                "by_path": sorted(emu.counts.items())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=3.0, help="simulated activation delay (s)")
    ap.add_argument("--poll", type=float, default=1.0, help="poll interval (s)")
    args = ap.parse_args(argv)
    last = {}
    with tempfile.TemporaryDirectory() as key_dir:
        for n in (10, 30):
            for slow in (False, True):
                r = run(n, args.delay, args.poll, key_dir, slow=slow)
                last[slow] = r
                mode = (f"as slow as the real API (list lag {2 * args.poll:g}s, 250/min, "
                        "5000/h)" if slow else "prompt emulator")
                print(f"--- {n} droplets, activation delay {args.delay:g}s, poll every "
                      f"{args.poll:g}s, {mode}")
                for (method, path), count in r["by_path"]:
                    print(f"  {count:4d}  {method} {path}")
                print(f"  {r['requests']} requests ({r['requests'] / n:.2f} per droplet), "
                      f"{r['create_requests']} create requests, {r['list_polls']} tagged list "
                      f"calls, {r['refused']} refused (429), {r['seconds']:.2f}s")
    plain, slow = last[False], last[True]
    print(f"slow/prompt: requests x{slow['requests'] / plain['requests']:.2f}, "
          f"seconds x{slow['seconds'] / plain['seconds']:.2f}")
    print(f"droplets={plain['droplets']} requests={plain['requests']} "
          f"create_requests={plain['create_requests']} seconds={plain['seconds']:.2f}")
    print(f"slow: droplets={slow['droplets']} requests={slow['requests']} "
          f"create_requests={slow['create_requests']} seconds={slow['seconds']:.2f} "
          f"list_lag={2 * args.poll:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
