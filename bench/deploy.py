"""Stack deploy figures on a lab cluster `pb1` (1 manager + 2 workers): plan and apply of a
20-service stack (busybox, dnsrr, replicas 1) and a no-op redeploy, with `swarmsmith` as a
user runs it (a new process each time: start-up, SSH to the manager, image check over SSH
to the nodes), and the 20.10 `docker stack deploy` of the same file on the manager as the
baseline (timed on the manager: no SSH set-up in its figure).  Needs root; brings the
cluster down at the end.

    python bench/deploy.py [--rounds 3] [--services 20]
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
    ap.add_argument("--services", type=int, default=20)
    opts = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench/deploy.py needs root (lab hosts)")
    from provision.command import Command
    from provision.dockerapi import manager_session

    folder = tempfile.mkdtemp(prefix="swarmsmith-pb1-", dir="/tmp")  # /tmp: seen by lab hosts
    cluster = os.path.join(folder, "swarmsmith.yml")
    with open(cluster, "w") as f:
        f.write("name: pb1\nprovider: lab\nmanagers: 1\nworkers: 2\n")
    compose = os.path.join(folder, "stack.yml")
    with open(compose, "w") as f:
        f.write(stack_file(opts.services))
    rows: dict[str, list[float]] = {}
    session = None
    try:
        t0 = time.monotonic()
        swarmsmith("up", cluster)
        swarmsmith("image-load", cluster)
        print(f"cluster pb1 up with the image: {time.monotonic() - t0:.1f} s", flush=True)
        session = manager_session(cluster)

        def on_manager(script: str) -> float:
            t = time.monotonic()
            r = session.run(Command.shell(script), check=False, timeout=600)
            dt = time.monotonic() - t
            if r.exit_status != 0:
                raise SystemExit(f"manager: {script} -> {r.exit_status}\n{r.stdout}{r.stderr}")
            return dt

        def settle(stack: str, t_start: float, deadline: float = 300) -> float:
            """Seconds from t_start until every service of the stack runs its replica."""
            fmt = "{{.Replicas}}"
            while True:
                r = session.run(Command.shell(
                    f"{DOCKER} service ls --filter label=com.docker.stack.namespace={stack} "
                    f"--format '{fmt}'"), check=False)
                reps = r.stdout.split()
                if len(reps) == opts.services and all(x == "1/1" for x in reps):
                    return time.monotonic() - t_start
                if time.monotonic() - t_start > deadline:
                    raise SystemExit(f"stack {stack} did not converge: {reps}")
                time.sleep(0.2)

        def quiet(deadline: float = 300) -> None:
            end = time.monotonic() + deadline
            while session.run(Command.shell(f"{DOCKER} service ls -q")).stdout.strip():
                if time.monotonic() > end:
                    raise SystemExit("services still there after stack rm")
                time.sleep(0.5)

        def add(key: str, value: float) -> None:
            rows.setdefault(key, []).append(value)

        cf = ["--cluster", cluster, "-c", compose]
        for i in range(1, opts.rounds + 1):
            ss, cli = f"bs{i}", f"bc{i}"
            add("swarmsmith plan (new stack)",
                swarmsmith("plan", "--cluster", cluster, "-c", compose, ss))
            t = time.monotonic()
            add("swarmsmith deploy --detach (plan + apply)", swarmsmith("deploy", "--detach", *cf, ss))
            add("swarmsmith deploy -> all tasks running", settle(ss, t))
            add("swarmsmith deploy (no-op redeploy)", swarmsmith("deploy", "--detach", *cf, ss))
            t = time.monotonic()
            add("docker stack deploy (new stack)", on_manager(
                f"{DOCKER} stack deploy --resolve-image never -c {shlex.quote(compose)} {cli}"))
            add("docker stack deploy -> all tasks running", settle(cli, t))
            add("docker stack deploy (redeploy, same file)", on_manager(
                f"{DOCKER} stack deploy --resolve-image never -c {shlex.quote(compose)} {cli}"))
            on_manager(f"{DOCKER} stack rm {ss} {cli} >/dev/null")
            quiet()
            print(f"round {i} done", flush=True)
        print()
        print(f"{opts.services}-service stack, {opts.rounds} rounds (median, min .. max, seconds)")
        med = {k: statistics.median(v) for k, v in rows.items()}
        for k, v in rows.items():
            print(f"  {k:<45} {med[k]:6.2f}   ({min(v):.2f} .. {max(v):.2f})")
        print()
        print("  ratio deploy, swarmsmith / docker stack deploy:   "
              f"{med['swarmsmith deploy --detach (plan + apply)'] / med['docker stack deploy (new stack)']:.2f}")
        print("  ratio redeploy, swarmsmith / docker stack deploy: "
              f"{med['swarmsmith deploy (no-op redeploy)'] / med['docker stack deploy (redeploy, same file)']:.2f}")
        print("  (the CLI's redeploy updates all services; swarmsmith's updates none)")
    finally:
        if session is not None:
            session.close()
        p = subprocess.run([sys.executable, os.path.join(REPO, "cli.py"), "down", cluster],
                           capture_output=True, text=True, timeout=900)
        print(f"cluster pb1 down: exit {p.returncode}", flush=True)
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
