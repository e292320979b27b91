"""Stack deploy figures on a lab cluster `pb1` (1 manager + 2 workers), per stack size (1, 20
and 50 services by default: busybox, dnsrr, replicas 1): plan, apply, deploy-to-converged and a
no-op redeploy, with `swarmsmith` as a user runs it (a new process each time: start-up, SSH to
the manager, image check over SSH to the nodes), and the 20.10 `docker stack deploy` of the same
file on the manager as the baseline (timed on the manager: no SSH set-up in its figure; 20.10
has no --detach=false, so converged = deployed, then polled until every task runs, the same
poll for both). The two take turns going first, each after a few seconds of calm. Needs root;
brings the cluster down at the end.

    python bench/deploy.py [--rounds 3] [--services 1 20 50] [--name pb1]
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DOCKER = "/usr/bin/docker"
SETTLE = 3.0    # seconds of calm before each measured deploy: the last removal's tasks stop


def stack_file(n: int) -> str:
    out = ['version: "3.9"', "services:"]
    for i in range(1, n + 1):
        out += [f"  s{i:02d}:", "    image: swarmsmith/busybox:1",
                '    command: ["sleep", "1000000"]',
                "    deploy:", "      replicas: 1", "      endpoint_mode: dnsrr"]
    return "\n".join(out) + "\n"


def swarmsmith(*args: str) -> float:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), *args],
                       capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    dt = time.monotonic() - t0
    if p.returncode != 0:
        raise SystemExit(f"swarmsmith {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return dt


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--services", type=int, nargs="+", default=[1, 20, 50])
    ap.add_argument("--name", default="pb1", help="lab/cluster name")
    opts = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/deploy.py needs root (lab hosts)")
    from provision.remote.command import Command
    from provision.engine_api.access import connect

    name = opts.name
    folder = tempfile.mkdtemp(prefix=f"swarmsmith-{name}-", dir="/tmp")  # /tmp: seen by lab hosts
    cluster = os.path.join(folder, "swarmsmith.yml")
    with open(cluster, "w") as f:
        f.write(f"name: {name}\nprovider: lab\nmanagers: 1\nworkers: 2\n")
    composes = {}
    for n in opts.services:
        composes[n] = os.path.join(folder, f"stack{n}.yml")
        with open(composes[n], "w") as f:
            f.write(stack_file(n))
    rows: dict[tuple, list[float]] = {}
    session = None
    try:
        t0 = time.monotonic()
        swarmsmith("up", cluster)
        swarmsmith("image-load", cluster)
        print(f"cluster {name} up with the image: {time.monotonic() - t0:.1f} s", flush=True)
        session = connect(cluster, shared=True).session

        def on_manager(script: str) -> float:
            t = time.monotonic()
            r = session.run(Command.shell(script), check=False, timeout=600)
            dt = time.monotonic() - t
            if r.exit_status != 0:
                raise SystemExit(f"manager: {script} -> {r.exit_status}\n{r.stdout}{r.stderr}")
            return dt

        def settle(stack: str, t_start: float, services: int, deadline: float = 300) -> float:
            """Seconds from t_start until every service of the stack runs its replica."""
            fmt = "{{.Replicas}}"
            while True:
                r = session.run(Command.shell(
                    f"{DOCKER} service ls --filter label=com.docker.stack.namespace={stack} "
                    f"--format '{fmt}'"), check=False)
                reps = r.stdout.split()
                if len(reps) == services and all(x == "1/1" for x in reps):
                    return time.monotonic() - t_start
                if time.monotonic() - t_start > deadline:
                    raise SystemExit(f"stack {stack} did not converge: {reps}")
                time.sleep(0.2)

        def cli_stack_rm(stack: str) -> None:
            # as the lab tests remove CLI stacks: run again past swarm's removal races
            from tests.lab_ssh import remove_cli_stacks
            remove_cli_stacks(lambda script, check=False: session.run(
                Command.shell(script), check=check, timeout=300), [stack], DOCKER)

        def quiet(deadline: float = 300) -> None:
            end = time.monotonic() + deadline
            while session.run(Command.shell(f"{DOCKER} service ls -q")).stdout.strip():
                if time.monotonic() > end:
                    raise SystemExit("services still there after stack rm")
                time.sleep(0.5)

        def add(n: int, key: str, value: float) -> None:
            rows.setdefault((n, key), []).append(value)

        for i in range(1, opts.rounds + 1):
            for n in opts.services:
                compose = composes[n]
                cf = ["--cluster", cluster, "-c", compose]
                ss, cli = f"bs{n}r{i}", f"bc{n}r{i}"
                add(n, "swarmsmith plan (new stack)",
                    swarmsmith("plan", "--cluster", cluster, "-c", compose, ss))

                def ours() -> None:
                    t = time.monotonic()
                    add(n, "swarmsmith deploy (to converged)", swarmsmith("deploy", *cf, ss))
                    add(n, "  converged, polled as for the CLI", settle(ss, t, n))
                    add(n, "swarmsmith deploy (no-op redeploy)", swarmsmith("deploy", *cf, ss))

                def theirs() -> None:
                    t = time.monotonic()
                    add(n, "docker stack deploy (new stack)", on_manager(
                        f"{DOCKER} stack deploy --resolve-image never -c {shlex.quote(compose)} "
                        f"{cli}"))
                    add(n, "docker stack deploy -> converged", settle(cli, t, n))
                    add(n, "docker stack deploy (redeploy, same file)", on_manager(
                        f"{DOCKER} stack deploy --resolve-image never -c {shlex.quote(compose)} "
                        f"{cli}"))
                # turn about: the second of a pair starts beside the first one's running tasks
                for measure in ((ours, theirs) if i % 2 else (theirs, ours)):
                    time.sleep(SETTLE)
                    measure()
                swarmsmith("rm", "--cluster", cluster, ss)
                cli_stack_rm(cli)
                quiet()
                print(f"round {i}, {n} service(s) done", flush=True)
        print()
        print(f"stack deploy on 1+2 lab nodes, {opts.rounds} rounds (median, min .. max, seconds)")
        med = {k: statistics.median(v) for k, v in rows.items()}
        for n in opts.services:
            print(f"{n} service(s):")
            for (m, k), v in rows.items():
                if m == n:
                    print(f"  {k:<45} {med[(n, k)]:6.2f}   ({min(v):.2f} .. {max(v):.2f})")
        print("ratios, swarmsmith / docker stack deploy (medians):")
        for n in opts.services:
            conv = med[(n, "swarmsmith deploy (to converged)")] / med[(n, "docker stack deploy -> converged")]
            redo = med[(n, "swarmsmith deploy (no-op redeploy)")] / \
                med[(n, "docker stack deploy (redeploy, same file)")]
            print(f"  {n:>3} service(s): deploy-to-converged {conv:5.2f}x   redeploy {redo:5.2f}x"
                  + ("   (target <= 1.0: " + ("met" if conv <= 1.0 else "NOT met") + ")"
                     if n >= 20 else ""))
        print("  (the CLI's redeploy updates all services; swarmsmith's updates none)")
        print("load average (1/5/15 min) at the end: %.2f %.2f %.2f on %d cores"
              % (*os.getloadavg(), os.cpu_count()))
    finally:
        if session is not None:
            session.close()
        p = subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), "down", cluster],
                           capture_output=True, text=True, timeout=900)
        print(f"cluster {name} down: exit {p.returncode}", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
