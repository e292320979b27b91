"""Requests and simulated seconds to provision 30 and 500 droplets on the DigitalOcean emulator.

The emulator runs with its defaults, which are the API's: new droplets listed only 10 s after
their create, 250 requests a minute (429 with retry-after beyond), 5,000 an hour, 10 SSH key
listings a minute; the account's droplet limit is raised to fit the run (as one must ask
DigitalOcean to). Droplets turn active `--delay` seconds after their create (DigitalOcean's
examples show about 45 s); the provider runs with its own defaults (poll every 5 s). Time is
simulated: the provider's sleeps, its request pacing and the emulator's clock are one fake
clock, so a run takes a second of real time and the seconds printed are what a real account
would take at the least. No SSH (the emulator hands out documentation addresses).

Each size runs once as is, and 30 droplets once more with the answer to the first create lost
(the droplets are made, the answer is a 500). The last lines are
    droplets=N requests=R create_requests=C simulated_seconds=S
one per run (the lost-answer run prefixed `lost answer: `).
Usage: python bench/digitalocean.py [--delay 45] [--poll 5] [--sizes 30,500]
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

from provision.hosts.digitalocean import DigitalOceanProvider  # noqa: E402
from provision.base.hosts import WantedHost  # noqa: E402
from tests.do_emulator import DOEmulator  # noqa: E402
from tests.do_emulator.server import REALISTIC_LIST_LAG  # noqa: E402
from tests.fakes.clock import FakeClock  # noqa: E402
from tests.do_emulator.testing import write_public_key  # noqa: E402

TOKEN = "bench-token-not-a-secret"


def run(droplets: int, delay: float, poll: float, key_dir: str, lost: bool = False) -> dict:
    managers = 3 if droplets >= 3 else 1
    wanted = ([WantedHost(f"bench-manager-{i}", "manager") for i in range(1, managers + 1)]
              + [WantedHost(f"bench-worker-{i}", "worker")
                 for i in range(1, droplets - managers + 1)])
    ft = FakeClock(start=1_800_000_000.0)
    with DOEmulator(TOKEN, clock=ft.clock, wall_clock=ft.clock, activation_delay=delay,
                    droplet_limit=droplets + 10) as emu:
        if lost:
            emu.fail_next_create(created=10)
        provider = DigitalOceanProvider(
            "bench", {"region": "fra1", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64",
                      "ssh_key": write_public_key(key_dir), "poll_interval": poll},
            None, env={"DIGITALOCEAN_TOKEN": TOKEN, "DIGITALOCEAN_END_POINT": emu.url},
            clock=ft.clock, sleep=ft.sleep, wall_clock=ft.clock, ssh_check=None)
        start, real = ft.clock(), time.monotonic()
        hosts, _ = provider.ensure(wanted)
        simulated, real = ft.clock() - start, time.monotonic() - real
        assert len(hosts) == droplets and all(h.public_address for h in hosts)
        made = emu.droplets(lagged=False)
        assert len(made) == droplets == len({d["name"] for d in made})
        return {"droplets": droplets, "requests": emu.total_requests(),
                "create_requests": emu.count("POST", "/v2/droplets"),
                "list_calls": emu.count("GET", "/v2/droplets"), "simulated": simulated,
                "real": real, "refused": sum(1 for *_, status in emu.log if status == 429),
                "by_path": sorted(emu.counts.items())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--delay", type=float, default=45.0, help="activation delay (simulated s)")
    ap.add_argument("--poll", type=float, default=5.0, help="poll interval (simulated s)")
    ap.add_argument("--sizes", default="30,500", help="droplet counts, comma-separated")
    args = ap.parse_args(argv)
    sizes = [int(n) for n in args.sizes.split(",")]
    summary = []
    with tempfile.TemporaryDirectory() as key_dir:
        for n, lost in [(n, False) for n in sizes] + [(sizes[0], True)]:
            r = run(n, args.delay, args.poll, key_dir, lost=lost)
            print(f"--- {n} droplets{', the first create answer lost' if lost else ''}: "
                  f"active after {args.delay:g}s, poll every {args.poll:g}s, list lag "
                  f"{REALISTIC_LIST_LAG:g}s, 250/min, 5000/h")
            for (method, path), count in r["by_path"]:
                print(f"  {count:5d}  {method} {path}")
            print(f"  {r['requests']} requests ({r['requests'] / n:.2f} per droplet), "
                  f"{r['create_requests']} create requests, {r['list_calls']} list requests, "
                  f"{r['refused']} refused (429); {r['simulated']:.1f} simulated seconds "
                  f"({r['real']:.2f}s real)")
            summary.append(f"{'lost answer: ' if lost else ''}droplets={n} "
                           f"requests={r['requests']} create_requests={r['create_requests']} "
                           f"simulated_seconds={r['simulated']:.1f}")
    print("\n".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
