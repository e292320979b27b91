"""Watching a rollout: a docker-stack-wait-style polling loop against swarmsmith's watcher.

The same update (3 replicas, a new environment value, the same update_config)
is applied and watched both ways, in the same run, on one lab cluster (`rb1`, or --name):

- baseline: `swarmsmith deploy --detach` applies the update, then a shell loop on
  the manager polls the way docker-stack-wait does it: per service, in series,
  `docker service inspect` for UpdateStatus.State and `docker service ls` for the
  replica count, sleeping --interval seconds between polls, until the state is no
  longer updating and running == desired.  If the manager's docker CLI can wait by
  itself (`docker stack deploy --detach=false`, CLI 26 and later) that is used
  instead.
- swarmsmith: `swarmsmith deploy --json` (apply, then its own watch); the time is
  the watch's (report.seconds), requests per second are report.api_calls over it.

The polling loop is timed from "update applied" to "the loop says done", like
swarmsmith's watch.  `docker stack deploy --detach=false` cannot be split, so it
is compared with swarmsmith's whole deploy (process start to exit) as well.
Prints the times, the ratios, and whether each was right (the update had
completed when it said so).  Needs root; makes and removes the cluster.

    python bench/watch.py [--rounds 3] [--interval 5] [--name rb1] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

CLUSTER = "rb1"
STACK = "bw"
COMPOSE = """version: "3.8"
services:
  web:
    image: swarmsmith/busybox:1
    command: ["sleep", "100000"]
    environment: {{RELEASE: "{release}"}}
    deploy:
      replicas: 3
      endpoint_mode: dnsrr
      update_config: {{parallelism: 1, order: start-first, monitor: 2s, failure_action: rollback}}
"""

# docker-stack-wait's way: services in series, inspect + ls per poll, fixed sleep
POLL_LOOP = r"""
interval=$1; shift
calls=0
start=$(date +%s.%N)
for svc in "$@"; do
  while :; do
    state=$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$svc")
    calls=$((calls+1))
    case "$state" in
      updating|rollback_started) sleep "$interval"; continue ;;
    esac
    reps=$(docker service ls --filter "name=$svc" --format '{{.Replicas}}')
    calls=$((calls+1))
    cur=${reps%%/*}; want=${reps#*/}; want=${want%% *}
    [ -n "$cur" ] && [ "$cur" = "$want" ] && break
    sleep "$interval"
  done
done
end=$(date +%s.%N)
final=$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$@")
echo "$start $end $calls ${final:-none}"
"""


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def must(p: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if p.returncode != 0:
        raise SystemExit(f"{what} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


class Bench:
    def __init__(self, workdir: str, interval: float, name: str = CLUSTER):
        self.dir, self.interval, self.name = workdir, interval, name
        self.cluster = os.path.join(workdir, "swarmsmith.yml")
        self.compose = os.path.join(workdir, "stack.yml")
        self.release = 0

    def up(self) -> None:
        with open(self.cluster, "w") as f:
            f.write(f"name: {self.name}\nprovider: lab\nmanagers: 1\nworkers: 2\n")
        must(cli("up", self.cluster), "swarmsmith up")
        must(cli("image-load", self.cluster), "swarmsmith image-load")
        from provision.engine_api.sessions import inventory_hosts
        self.manager = inventory_hosts(self.cluster, "manager")[0]

    def ssh(self, command: str) -> str:
        from tests.lab_ssh import ssh_exec
        rc, out, err = ssh_exec(self.manager, command, timeout=600)
        if rc != 0:
            raise SystemExit(f"manager: {command[:60]!r} -> {rc}: {err}")
        return out

    def next_file(self) -> str:
        self.release += 1
        with open(self.compose, "w") as f:
            f.write(COMPOSE.format(release=self.release))
        return self.compose

    def deploy(self, *extra: str) -> dict:
        p = must(cli("deploy", "--cluster", self.cluster, "-c", self.next_file(), "--json",
                     *extra, STACK), "swarmsmith deploy")
        return json.loads(p.stdout)

    def cli_waits(self) -> bool:
        v = self.ssh("docker version -f '{{.Client.Version}}'").strip()
        try:
            return int(v.split(".")[0]) >= 26
        except ValueError:
            return False

    def baseline(self, native: bool) -> dict:
        if native:   # the CLI waits by itself (in series, no timeout)
            f = self.next_file()
            t0 = time.monotonic()
            self.ssh(f"docker stack deploy --detach=false -c {f} {STACK} >/dev/null")
            secs = time.monotonic() - t0
            final = self.ssh(f"docker service inspect -f '{{{{.UpdateStatus.State}}}}' "
                             f"{STACK}_web").strip()
            return {"how": "docker stack deploy --detach=false", "seconds": secs,
                    "calls": None, "final": final}
        self.deploy("--detach")
        script = os.path.join(self.dir, "poll.sh")
        with open(script, "w") as f:
            f.write(POLL_LOOP)
        start, end, calls, final = self.ssh(
            f"sh {script} {self.interval:g} {STACK}_web").split()
        return {"how": f"polling loop (docker-stack-wait style, every {self.interval:g} s)",
                "seconds": float(end) - float(start), "calls": int(calls), "final": final}

    def swarmsmith(self) -> dict:
        t0 = time.monotonic()
        w = self.deploy()["watch"]
        wall = time.monotonic() - t0
        svc = w["services"][0]
        return {"seconds": w["seconds"], "wall": wall, "calls": w["api_calls"],
                "polls": w["polls"], "final": svc["update_state"], "outcome": svc["outcome"]}

    def down(self) -> None:
        must(cli("down", self.cluster, timeout=900), "swarmsmith down")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--interval", type=float, default=5.0,
                    help="the polling loop's sleep (docker-stack-wait's -s)")
    ap.add_argument("--name", default=CLUSTER,
                    help="the lab cluster's name (two benches at once need two names)")
    ap.add_argument("--keep", action="store_true", help="leave the cluster up")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/watch.py needs root (lab hosts)")
    work = tempfile.mkdtemp(prefix="swsm-bench-watch-")
    b = Bench(work, args.interval, args.name)
    rows = []
    try:
        b.up()
        b.deploy()                          # the service, first version
        native = b.cli_waits()
        for _ in range(args.rounds):
            row = {"poll": b.baseline(False), "swarmsmith": b.swarmsmith()}
            if native:
                row["native"] = b.baseline(True)
            rows.append(row)
    finally:
        if not args.keep:
            b.down()
    def med(key, field):
        vals = [r[key][field] for r in rows if key in r]
        return statistics.median(vals) if vals else None

    poll, mine, wall, native_s = (med("poll", "seconds"), med("swarmsmith", "seconds"),
                                  med("swarmsmith", "wall"), med("native", "seconds"))
    rps = statistics.median(r["swarmsmith"]["calls"] / max(r["swarmsmith"]["seconds"], 1e-9)
                            for r in rows)
    summary = {"rounds": rows, "poll_loop_s": poll, "swarmsmith_watch_s": mine,
               "swarmsmith_deploy_wall_s": wall, "stack_deploy_detach_false_s": native_s,
               "ratio_poll_to_watch": poll / mine if mine else None,
               "ratio_native_to_deploy": native_s / wall if native_s and wall else None,
               "swarmsmith_requests_per_s": rps}
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
        return 0
    print(f"update: 3 replicas, new env, parallelism 1, start-first, monitor 2s "
          f"({args.rounds} rounds, medians)")
    for i, r in enumerate(rows, 1):
        pl, sw = r["poll"], r["swarmsmith"]
        line = (f"  round {i}: poll loop {pl['seconds']:.2f} s ({pl['calls']} CLI calls, "
                f"update {pl['final']} at exit) | swarmsmith watch {sw['seconds']:.2f} s, "
                f"deploy {sw['wall']:.2f} s ({sw['calls']} API calls in {sw['polls']} polls, "
                f"update {sw['final']})")
        if "native" in r:
            line += (f" | stack deploy --detach=false {r['native']['seconds']:.2f} s "
                     f"(update {r['native']['final']} at exit)")
        print(line)
    print(f"polling loop (docker-stack-wait style, every {args.interval:g} s): {poll:.2f} s")
    print(f"swarmsmith watch: {mine:.2f} s   ratio loop/swarmsmith: {poll / mine:.2f}")
    if native_s is not None:
        print(f"docker stack deploy --detach=false (apply + wait): {native_s:.2f} s; "
              f"swarmsmith deploy (apply + watch): {wall:.2f} s   ratio: {native_s / wall:.2f}")
    else:
        print("docker stack deploy --detach=false: not supported by the manager's CLI")
    print(f"swarmsmith API requests per second during the watch: {rps:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
