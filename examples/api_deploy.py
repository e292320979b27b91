#!/usr/bin/env python3
"""Bootstrap a lab cluster and deploy a stack through swarmsmith's library API (docs/api.md).

    sudo examples/api_deploy.py --dir /tmp/apiex                 # up, load the test image, deploy
    sudo examples/api_deploy.py --dir /tmp/apiex --release bad   # an update whose tasks exit 1
    sudo examples/api_deploy.py --dir /tmp/apiex --down          # remove the lab hosts

It inspects the result objects (plan counts, applied steps, the outcome of every service) and
exits with the deploy's exit code when an outcome is not a success: 10 failed, 11 rolled back,
12 timed out (see `swarmsmith --help`). Progress events go to stderr; a JSON summary to stdout.
Needs root (lab hosts are network namespaces on this machine).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from provision.base.errors import SwarmsmithError  # noqa: E402
from stacks import api  # noqa: E402
from stacks import events  # noqa: E402

STACK = """version: "3.8"
services:
  web:
    image: swarmsmith/busybox:1
    command: {command}
    deploy:
      replicas: 2
      endpoint_mode: dnsrr
      update_config: {{parallelism: 1, failure_action: rollback, monitor: 5s}}
"""
RELEASES = {
    "good": '["sh", "-c", "echo release 1 ready; exec sleep 100000"]',
    "good2": '["sh", "-c", "echo release 2 ready; exec sleep 100000"]',
    "bad": '["sh", "-c", "echo fatal: DB_URL missing; exit 1"]',
}


def show_progress(event) -> None:
    """The on_progress callback: one line per event on stderr (a script may log instead)."""
    if isinstance(event, events.HostProgress):
        line = f"{event.host}: {event.message}"
    elif isinstance(event, events.StepDone):
        line = f"applied: {event.text}"
    elif isinstance(event, events.PlanReady):
        c = event.plan.counts()
        line = f"plan: {c['create']} to create, {c['update']} to update, {c['remove']} to remove"
    elif isinstance(event, events.WatchProgress):
        line = "watch: " + ", ".join(f"{s.name} {s.progress_text()}"
                                     + (f" (waiting for {s.waiting})" if s.waiting else "")
                                     for s in event.report.services)
    elif isinstance(event, (events.OperationWarning, events.Notice)):
        line = f"note: {event.message}"
    else:
        return
    print(line, file=sys.stderr, flush=True)


def cluster_file(folder: str, name: str) -> str:
    path = os.path.join(folder, "swarmsmith.yml")
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(f"name: {name}\nprovider: lab\nmanagers: 1\nworkers: 0\n")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True, help="folder for the cluster file and its state")
    ap.add_argument("--name", default="apiex", help="cluster (and lab) name")
    ap.add_argument("--stack", default="apiweb")
    ap.add_argument("--release", choices=sorted(RELEASES), default="good")
    ap.add_argument("--timeout", type=float, default=180)
    ap.add_argument("--down", action="store_true", help="remove the cluster's lab hosts")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    path = cluster_file(args.dir, args.name)

    try:
        if args.down:
            gone = api.down(path)
            print(json.dumps({"down": gone.to_dict()}))
            return 0

        cluster = api.up(path, api.UpOptions(), on_progress=show_progress)
        print(json.dumps({"up": {"cluster": cluster.cluster, "changes": len(cluster.changes),
                                 "nodes": [n["name"] for n in cluster.nodes]}}))

        from provision.images.busybox import load_on_cluster      # nothing can be pulled in the lab
        load_on_cluster(path)

        compose = os.path.join(args.dir, "stack.yml")
        with open(compose, "w") as f:
            f.write(STACK.format(command=RELEASES[args.release]))
        result = api.deploy(args.stack, [compose],
                            api.DeployOptions(cluster_file=path, timeout=args.timeout),
                            on_progress=show_progress)
    except SwarmsmithError as e:            # bad input 2, unreachable 3, locked 4, failed 1
        print(f"api_deploy: {e}", file=sys.stderr)
        return e.exit_code

    summary = {"stack": result.stack, "planned": result.plan.counts(),
               "applied": result.applied.done, "outcomes": result.outcomes,
               "exit_code": result.exit_code}
    if result.watch is not None:
        summary["reasons"] = {s.name: s.reason for s in result.watch.services if s.reason}
    print(json.dumps({"deploy": summary}))
    if result.exit_code != 0:
        failed = {n: o for n, o in result.outcomes.items() if o not in ("converged", "done")}
        print(f"api_deploy: stack {result.stack} did not converge: {failed}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
