"""Day-two commands on one lab cluster `runb` (1 manager + 1 worker), in the same run:

- logs --follow: how long after a container writes a line it is printed, by
  `swarmsmith logs --follow` and by `docker service logs --follow` run on the manager over SSH
  (the baseline); median and max over --lines lines each, and the ratio of the medians.
  Lines carry the container's /proc/uptime (the lab hosts share this machine's clock).
- node drain: seconds until `swarmsmith node drain` reports the worker empty and its task
  running on the manager, against `docker node update --availability drain` followed by a
  shell loop polling `docker service ps` every 0.5 s until every task swarm wants runs on the
  manager.
- backup: seconds the manager's engine was stopped, and the whole command.

Needs root; makes and removes the cluster.   python bench/runbooks.py [--lines 30] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

NAME = "runb"
STACK = """services:
  tick:
    image: swarmsmith/busybox:1
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do echo tick $$(cut -d' ' -f1 /proc/uptime); sleep 0.2; done"]
    deploy: {replicas: 2, placement: {max_replicas_per_node: 2}}
"""


def sw(d, *args, check=True, timeout=600):
    p = subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=d,
                       capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise SystemExit(f"swarmsmith {' '.join(args)}: exit {p.returncode}\n{p.stderr}")
    return p


def lags(argv: list[str], n: int) -> list[float]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            bufsize=1)
    start = time.clock_gettime(time.CLOCK_BOOTTIME)
    out: list[float] = []

    def read():
        for line in proc.stdout:
            now = time.clock_gettime(time.CLOCK_BOOTTIME)
            try:
                made = float(line.rsplit(" ", 1)[1])
            except (IndexError, ValueError):
                continue
            if made >= start:
                out.append(now - made)
            if len(out) >= n:
                return

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(120)
    proc.terminate()
    proc.wait(10)
    if not out:
        raise SystemExit(f"no new lines from {' '.join(argv[-4:])}: {proc.stderr.read()[-500:]}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=30)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    from provision.hosts.lab.lab import Lab
    d = tempfile.mkdtemp(prefix="runb-")
    with open(os.path.join(d, "swarmsmith.yml"), "w") as f:
        f.write(f"name: {NAME}\nprovider: lab\nmanagers: 1\nworkers: 1\n")
    with open(os.path.join(d, "stack.yml"), "w") as f:
        f.write(STACK)
    try:
        sw(d, "up")
        sw(d, "image-load")
        sw(d, "deploy", "-c", "stack.yml", "b")
        hosts = {h.name: h for h in Lab(NAME).hosts()}
        m = hosts[f"{NAME}-manager-1"]
        ssh = ["ssh", "-i", m.key_path, "-o", "StrictHostKeyChecking=no", "-o",
               "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"root@{m.public_address}"]
        ours = lags([sys.executable, os.path.join(REPO, "cli.py"), "logs", "--cluster",
                     os.path.join(d, "swarmsmith.yml"), "--follow", "--tail", "0", "b_tick"],
                    a.lines)
        base = lags(ssh + ["docker service logs --follow --tail 0 --raw b_tick"], a.lines)
        mo, mb = statistics.median(ours), statistics.median(base)
        print(f"logs --follow lag, {a.lines} lines: swarmsmith median {mo * 1000:.0f} ms "
              f"(max {max(ours) * 1000:.0f} ms); docker service logs over ssh median "
              f"{mb * 1000:.0f} ms (max {max(base) * 1000:.0f} ms); ratio {mo / mb:.2f}")

        worker = f"{NAME}-worker-1"
        t0 = time.monotonic()
        r = json.loads(sw(d, "node", "drain", worker, "--json").stdout)
        ours = time.monotonic() - t0
        sw(d, "node", "activate", worker)
        sw(d, "deploy", "-c", "stack.yml", "b")          # no-op; tasks stay where they are
        subprocess.run(ssh + ["docker service update --force -q b_tick >/dev/null"], check=True)
        on_worker = subprocess.run(ssh + [f"docker node ps {worker} --filter desired-state=running -q"],
                                   capture_output=True, text=True).stdout.split()
        # the same end as swarmsmith's: nothing runs on the worker any more, and every task
        # swarm wants runs on the manager
        loop = (f"docker node update --availability drain {worker} >/dev/null; "
                f"while docker node ps {worker} --format '{{{{.CurrentState}}}}' | grep -q '^Running' "
                "|| docker service ps b_tick --filter desired-state=running "
                "--format '{{.Node}} {{.CurrentState}}' "
                f"| grep -v '^{NAME}-manager-1 Running' | grep -q .; do sleep 0.5; done")
        t0 = time.monotonic()
        subprocess.run(ssh + [loop], check=True)
        base = time.monotonic() - t0
        print(f"node drain: swarmsmith {ours:.1f} s (moved {', '.join(r['moved']) or 'none'}); "
              f"docker node update + polling loop {base:.1f} s ({len(on_worker)} task(s) on the "
              f"worker before); ratio {ours / base:.2f}")
        subprocess.run(ssh + [f"docker node update --availability active {worker} >/dev/null"],
                       check=True)

        r = json.loads(sw(d, "backup", "--out", d, "--json").stdout)
        print(f"backup (1 manager): engine stopped {r['engine_stopped_seconds']:.1f} s, "
              f"{r['seconds']:.1f} s in all, {r['manifest']['payload_bytes']} bytes of state")
    finally:
        if not a.keep:
            sw(d, "down", check=False)


if __name__ == "__main__":
    main()
